// VirtualService traffic policy through the real gateway: fault abort and delay (with percentages),
// rewrites, header operations, CORS, mirroring (-shadow host, never slowing the main request), and
// retries that resend a small request body.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl, freePort, portOf, waitFor, withHttpbin } from '../helpers/upstream';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';
import type { HttpbinServer } from '../../src/sample/httpbin';

describe('traffic policy: faults, rewrites, headers, CORS, mirrors, retries', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let main: HttpbinServer;
  let shadow: HttpbinServer;
  let flaky: http.Server;
  let silent: net.Server;
  const flakyBodies: string[] = [];
  let flakyCalls = 0;

  before(async () => {
    main = await withHttpbin('main');
    shadow = await withHttpbin('shadow');
    // Answers 503 to every other request, and records each body it receives.
    flaky = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => { body += c; });
      req.on('end', () => {
        flakyCalls += 1;
        flakyBodies.push(body);
        res.writeHead(flakyCalls % 2 === 1 ? 503 : 200, { 'x-attempt': String(req.headers['x-envoy-attempt-count']) }).end(`got ${body.length}`);
      });
    });
    silent = net.createServer((s) => s.on('error', () => {})); // accepts, never answers
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const dead = await freePort();
    gw = await startGateway({
      'upstreams.yaml': loopbackServiceEntryYaml('main', 'main.internal', 80, 'HTTP', main.port)
        + loopbackServiceEntryYaml('shadow', 'shadow.internal', 80, 'HTTP', shadow.port)
        + loopbackServiceEntryYaml('flaky', 'flaky.internal', 80, 'HTTP', portOf(flaky))
        + loopbackServiceEntryYaml('silent', 'silent.internal', 80, 'HTTP', portOf(silent))
        + loopbackServiceEntryYaml('dead', 'dead.internal', 80, 'HTTP', dead),
      'routes.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: policy, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - name: jason-abort
    match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {percentage: {value: 100.0}, httpStatus: 500}}
    route: [{destination: {host: main.internal}}]
  - name: half-abort
    match: [{uri: {prefix: /half}}]
    fault: {abort: {percentage: {value: 50}, httpStatus: 503}}
    route: [{destination: {host: main.internal}}]
  - name: delay
    match: [{uri: {prefix: /slow}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: main.internal}}]
  - name: rewrite
    match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /anything/, authority: internal.example.com}
    route: [{destination: {host: main.internal}}]
  - name: headers
    match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-set: "1"}, add: {x-added: "a"}, remove: [x-drop]}
      response: {set: {x-resp: "r"}, remove: [x-served-by]}
    route: [{destination: {host: main.internal}, headers: {request: {set: {x-dest: "d"}}}}]
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy: {allowOrigins: [{exact: "https://ok.example.com"}], allowMethods: [POST, GET], maxAge: 1h, exposeHeaders: [x-served-by]}
    route: [{destination: {host: main.internal}}]
  - name: mirror
    match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: main.internal}}]
    mirror: {host: shadow.internal}
    mirrorPercentage: {value: 100}
  - name: bad-mirrors
    match: [{uri: {prefix: /bad-mirrors}}]
    route: [{destination: {host: main.internal}}]
    mirrors: [{destination: {host: silent.internal}}, {destination: {host: dead.internal}}]
  - name: moved
    match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 308}
  - name: teapot
    match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - name: retry
    match: [{uri: {prefix: /retry}}]
    retries: {attempts: 2, retryOn: "5xx"}
    route: [{destination: {host: flaky.internal}}]
`,
    });
  });
  after(async () => {
    await gw?.stop();
    await main?.close();
    await shadow?.close();
    flaky?.close();
    silent?.close();
  });

  const url = (p: string) => `http://127.0.0.1:${gw.port(80)}${p}`;
  const host = ['-H', 'Host: app.example.com'];

  it('fault abort for end-user jason: 500 "fault filter abort", FI in the log; others reach the upstream', async () => {
    const jason = await curl(['-s', '-i', ...host, '-H', 'end-user: jason', url('/status/200')]);
    assert.match(jason.stdout, /^HTTP\/1\.1 500 Internal Server Error\r\n[\s\S]*\r\n\r\nfault filter abort$/);
    const other = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...host, '-H', 'end-user: mary', url('/headers')]);
    assert.equal(other.stdout, '200', 'anyone else goes on to the later routes and the upstream');
    await gw.waitForLine(/"GET \/status\/200 HTTP\/1\.1" 500 FI fault_filter_abort .* jason-abort$/);
  });

  it('fault abort at 50 %: about half of 200 requests (accepted 72..128)', async () => {
    let aborted = 0;
    for (let batch = 0; batch < 10; batch++) {
      const codes = await Promise.all(Array.from({ length: 20 }, () => curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...host, url('/half')])));
      aborted += codes.filter((c) => c.stdout === '503').length;
    }
    assert.ok(aborted >= 72 && aborted <= 128, `${aborted} of 200 aborted`);
  });

  it('fault delay: the request waits, then goes on; DI in the log', async () => {
    const t0 = Date.now();
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...host, url('/slow')]);
    assert.equal(r.stdout, '404'); // httpbin has no /slow: the point is that it got there
    assert.ok(Date.now() - t0 >= 290, `took ${Date.now() - t0} ms`);
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => l.includes('"GET /slow HTTP/1.1" 404 DI via_upstream')); }, { timeoutMs: 3000 });
  });

  it('rewrite: prefix and authority; the log keeps the original path', async () => {
    const r = await curl(['-s', ...host, url('/api/v1/users?id=7')]);
    const body = JSON.parse(r.stdout) as { url: string; headers: Record<string, string> };
    assert.equal(body.url, 'http://internal.example.com/anything/users?id=7');
    assert.equal(body.headers['X-Envoy-Original-Path'], '/api/v1/users?id=7');
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => l.includes('"GET /api/v1/users?id=7 HTTP/1.1" 200')); }, { timeoutMs: 3000 });
  });

  it('header operations at route and destination level, request and response', async () => {
    const r = await curl(['-s', '-i', ...host, '-H', 'x-drop: gone', '-H', 'x-added: first', url('/headers')]);
    const [head, body] = r.stdout.split('\r\n\r\n');
    const echoed = (JSON.parse(body!) as { headers: Record<string, string> }).headers;
    assert.equal(echoed['X-Set'], '1');
    assert.equal(echoed['X-Dest'], 'd');
    assert.equal(echoed['X-Added'], 'first, a');
    assert.equal(echoed['X-Drop'], undefined);
    assert.match(head!, /\r\nx-resp: r/);
    assert.doesNotMatch(head!, /x-served-by/i);
  });

  it('CORS: an allowed preflight is answered by the gateway; the actual response carries the origin', async () => {
    const before = main.requests.length;
    const pre = await curl(['-s', '-i', '-X', 'OPTIONS', ...host, '-H', 'Origin: https://ok.example.com', '-H', 'Access-Control-Request-Method: POST', url('/cors')]);
    assert.match(pre.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(pre.stdout, /\r\naccess-control-allow-origin: https:\/\/ok\.example\.com\r\n/);
    assert.match(pre.stdout, /\r\naccess-control-allow-methods: POST,GET\r\n/);
    assert.match(pre.stdout, /\r\naccess-control-max-age: 3600\r\n/);
    assert.equal(main.requests.length, before, 'the preflight never reached the upstream');
    const denied = await curl(['-s', '-i', '-X', 'OPTIONS', ...host, '-H', 'Origin: https://evil.example.com', '-H', 'Access-Control-Request-Method: POST', url('/cors')]);
    assert.doesNotMatch(denied.stdout, /access-control-allow-origin/);
    const actual = await curl(['-s', '-i', ...host, '-H', 'Origin: https://ok.example.com', url('/cors')]);
    assert.match(actual.stdout, /\r\naccess-control-allow-origin: https:\/\/ok\.example\.com\r\n/);
    assert.match(actual.stdout, /\r\naccess-control-expose-headers: x-served-by\r\n/);
  });

  it('mirror: a copy reaches the mirror with the -shadow host; the main response is the main upstream\'s', async () => {
    const before = shadow.requests.length;
    const r = await curl(['-s', '-i', ...host, url('/mirrored?x=1')]);
    assert.match(r.stdout, /\r\nx-served-by: main\r\n/);
    await waitFor(() => shadow.requests.length > before, { timeoutMs: 3000 });
    const copy = shadow.requests.at(-1)!;
    assert.equal(copy.url, '/mirrored?x=1');
    assert.equal(copy.headers.host, 'app.example.com-shadow');
  });

  it('a mirror that never answers or refuses never slows or fails the main request', async () => {
    const t0 = Date.now();
    const codes = await Promise.all(Array.from({ length: 5 }, () => curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...host, url('/bad-mirrors')])));
    assert.deepEqual(codes.map((c) => c.stdout), ['404', '404', '404', '404', '404']);
    assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  });

  it('redirect and directResponse are answered by the gateway', async () => {
    const moved = await curl(['-s', '-i', ...host, url('/old?q=1')]);
    assert.match(moved.stdout, /^HTTP\/1\.1 308 Permanent Redirect\r\n/);
    assert.match(moved.stdout, /\r\nlocation: http:\/\/new\.example\.com\/new\?q=1\r\n/);
    const tea = await curl(['-s', '-i', ...host, url('/teapot')]);
    assert.match(tea.stdout, /^HTTP\/1\.1 418 I'm a Teapot\r\n[\s\S]*\r\n\r\nshort and stout$/);
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => /"GET \/teapot HTTP\/1\.1" 418 - direct_response /.test(l)); }, { timeoutMs: 3000 });
  });

  it('retries resend a small request body; a large streamed one is not retried', async () => {
    flakyCalls = 0;
    flakyBodies.length = 0;
    const small = 'b'.repeat(10_000);
    const r = await curl(['-s', '-i', ...host, '--data-binary', small, url('/retry')]);
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*x-attempt: 2\r\n[\s\S]*got 10000$/);
    assert.deepEqual(flakyBodies.map((b) => b.length), [10_000, 10_000]);
    flakyCalls = 0;
    flakyBodies.length = 0;
    const big = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port(80), path: '/retry', method: 'POST', headers: { host: 'app.example.com', 'content-length': 200_000 } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(Buffer.alloc(200_000, 'c'));
    });
    assert.equal(big, 503, 'a 200 kB body streamed upstream is not retried');
    assert.equal(flakyBodies.filter((b) => b.length === 200_000).length, 1);
  });
});
