// The HTTP/1.1 lane changes nothing a client, an upstream or the access log can see: the same
// pipelined requests through a gateway with the lane and one without (node:http for every
// request) give the same bytes back, the same requests upstream and the same access-log lines,
// once dates, request ids, timings and ports are masked. The requests span what the lane serves
// itself (GET, HEAD, POST with and without a small body, Connection: close) and what it hands over
// mid-connection (a chunked body).

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { meshConfigYaml, spawnMeshgate, startGateway, type TestGateway } from '../helpers/gateway';
import { freePort, listenLoopback, portOf, rawHttp, waitFor } from '../helpers/upstream';
import { switchedSockets } from '../../src/gateway/direct-reads';
import { httpGatewayYaml, loopbackServiceEntryYaml, singleRouteYaml } from '../../src/sample/configs';

const H = 'Host: app.example.com\r\n';

/** Requests written in one go on one connection; the last closes it. */
const PIPELINE = [
  `GET /plain?q=1 HTTP/1.1\r\n${H}User-Agent: lane-test\r\nX-Request-Id: fixed-id-1\r\n\r\n`,
  `HEAD /plain HTTP/1.1\r\n${H}\r\n`,
  `GET /chunked HTTP/1.1\r\n${H}TE: trailers\r\n\r\n`,
  `GET /nocontent HTTP/1.1\r\n${H}\r\n`,
  `POST /plain HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`,
  `GET /redirect HTTP/1.1\r\n${H}\r\n`,
  `GET /direct HTTP/1.1\r\n${H}\r\n`,
  `GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n`,
  `GET /plain HTTP/1.1\r\n${H}Connection: x-private\r\nX-Private: drop me\r\nX-Envoy-Foo: edge strips it\r\n\r\n`,
  `GET /upstream-close HTTP/1.1\r\n${H}\r\n`,
  `POST /plain HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`,
  // From here node:http has the connection (a chunked body) if the lane served the requests above.
  `POST /plain HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n`,
  `GET /plain HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
].join('');

function mask(text: string): string {
  return text
    .replace(/date: [^\r\n]+/gi, 'date: D')
    .replace(/x-envoy-upstream-service-time: \d+/g, 'x-envoy-upstream-service-time: S')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/g, 'UUID')
    .replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:P')
    .replace(/^\[[^\]]+\]/gm, '[T]')
    .replace(/(" -?\d+ -?\d+) \d+ (\d+|-) "/g, (_m, bytes: string, up: string) => `${bytes} D ${up === '-' ? '-' : 'S'} "`);
}

describe('HTTP/1.1 lane: the same answers as node:http', () => {
  const seen: string[] = [];
  const upstream = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => {
      const headers = req.rawHeaders.map((v, i) => (i % 2 === 0 ? v : `${v}\r\n`)).join(': ').replace(/\r\n: /g, '\r\n');
      seen.push(mask(`${req.method} ${req.url}\r\n${headers}${body}`));
      if (req.url === '/chunked') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-sum' });
        res.write('part one, ');
        res.addTrailers({ 'x-sum': '42' });
        res.end('part two');
      } else if (req.url === '/nocontent') {
        res.writeHead(204, { 'x-kind': 'empty' }).end();
      } else if (req.url === '/upstream-close') {
        res.writeHead(200, { connection: 'close', 'content-length': '6', 'x-upstream': 'closing' }).end('closed');
      } else {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5', 'x-multi': ['a', 'b'], 'set-cookie': ['c=1', 'd=2'] }).end('plain');
      }
    });
  });
  const gateways: TestGateway[] = [];

  before(async () => {
    await listenLoopback(upstream);
    const files = {
      'gw.yaml': `${httpGatewayYaml()}${loopbackServiceEntryYaml('app', 'app.internal', 80, 'HTTP', portOf(upstream))}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {exact: /redirect}}]
    redirect: {uri: /elsewhere}
  - match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - route: [{destination: {host: app.internal}}]
    headers: {response: {add: {x-route: lane-test}}}
`,
    };
    gateways.push(
      await startGateway(files),
      await startGateway(files, { opts: { limits: { http1Lane: false } } }),
      await startGateway(files, { opts: { directReads: false } }),
    );
  });
  after(async () => {
    for (const g of gateways) await g.stop();
    upstream.close();
  });

  it('client bytes, upstream requests and access-log lines match, request for request', async () => {
    const runs: { answer: string; upstream: string[]; log: string[]; switched: number }[] = [];
    for (const g of gateways) {
      seen.length = 0;
      const before = switchedSockets();
      const answer = await rawHttp(g.port(80), PIPELINE, { timeoutMs: 5000 });
      const log = await g.waitForLines(13);
      runs.push({ answer: mask(answer), upstream: [...seen], log: log.map(mask), switched: switchedSockets() - before });
    }
    const [lane, node, streams] = runs as [typeof runs[0], typeof runs[0], typeof runs[0]];
    // The lane read the connection directly (direct-reads.ts) until the hand-over, then node:http
    // read it through the stream; with directReads off it read 'data' events: the same bytes out.
    assert.deepEqual(runs.map((r) => r.switched), [1, 0, 0]);
    assert.equal(streams.answer, lane.answer);
    assert.deepEqual(streams.log, lane.log);
    assert.deepEqual(streams.upstream, lane.upstream);
    assert.equal(lane.answer.split('HTTP/1.1 ').length - 1, 13, `thirteen answers: ${lane.answer}`);
    assert.equal(lane.answer, node.answer);
    assert.deepEqual([...lane.upstream].sort(), [...node.upstream].sort()); // (node's pipelining reorders them)
    // The same lines; node:http starts pipelined requests at once (local replies are logged before the
    // proxied ones ahead of them), the lane one after another, as Envoy does: compared as sets.
    assert.deepEqual([...lane.log].sort(), [...node.log].sort());
    // ...which shows the lane served the first eleven: their lines are in request order (the last two
    // are node's, after the hand-over).
    const order = (log: string[]) => log.slice(0, 11).map((l) => /"(\S+ \S+) HTTP/.exec(l)?.[1]).join(', ');
    assert.equal(order(lane.log), 'GET /plain?q=1, HEAD /plain, GET /chunked, GET /nocontent, POST /plain, GET /redirect, GET /direct, GET /, GET /plain, GET /upstream-close, POST /plain');
    assert.notEqual(order(node.log), order(lane.log));
    // The comparison has teeth: the answers carry what each case is about.
    for (const want of ['HTTP/1.1 204 No Content', 'HTTP/1.1 301 Moved Permanently', 'HTTP/1.1 418 ', 'HTTP/1.1 404 Not Found', 'x-sum: 42', 'connection: close', 'set-cookie: d=2']) {
      assert.ok(lane.answer.includes(want), `${want} in ${lane.answer}`);
    }
    assert.ok(!lane.answer.toLowerCase().includes('keep-alive'), 'no Connection: keep-alive / Keep-Alive on HTTP/1.1 (Envoy sends none)');
    assert.ok(lane.upstream.some((r) => r.startsWith('POST /plain') && r.endsWith('hello')), 'the lane\'s body reached the upstream');
    assert.ok(lane.upstream.some((r) => r.startsWith('POST /plain') && r.endsWith('chunked')), 'the body after the hand-over reached the upstream');
    assert.ok(!lane.upstream.join('').includes('X-Private') && !lane.upstream.join('').includes('X-Envoy-Foo'));
  });
});

describe('HTTP/1.1 lane: meshgate run --no-http1-lane', () => {
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  const slow = http.createServer((_req, res) => setTimeout(() => res.writeHead(200, { 'content-length': '4' }).end('slow'), 150));
  after(() => {
    child?.kill('SIGKILL');
    slow.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('gives node:http every request: a pipelined local reply is answered (and logged) before the slow request ahead of it', async () => {
    await listenLoopback(slow);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-lane-'));
    const log = path.join(dir, 'access.log');
    fs.writeFileSync(path.join(dir, 'mesh.yaml'), meshConfigYaml(log));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: portOf(slow), prefix: '/slow' }));
    const port = await freePort();
    child = spawnMeshgate(dir, port, ['--no-http1-lane']);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
    await waitFor(() => /config version 1 applied/.test(stderr), { timeoutMs: 10_000 });
    const answer = await rawHttp(port, 'GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /none HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', { timeoutMs: 5000 });
    assert.match(answer, /^HTTP\/1\.1 200 OK[\s\S]*slowHTTP\/1\.1 404 Not Found/, 'answers in request order, as always');
    // The lane would start /none only after /slow's answer; node:http starts both at once.
    await waitFor(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length === 2, { timeoutMs: 5000 });
    const paths = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => /"GET (\S+)/.exec(l)?.[1]);
    assert.deepEqual(paths, ['/none', '/slow']);
  });
});
