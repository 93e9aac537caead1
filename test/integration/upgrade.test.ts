// HTTP Upgrade (WebSocket) tunnels through the gateway: nothing lost when one side closes while the
// other is still reading, half-close passed through, the route's rewrites and header operations and
// the DestinationRule's TLS applied, resets and failures reported. A raw upstream on loopback answers
// 101 and then does what each test asks.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { makeCa, makeLeaf } from '../helpers/certs';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl, freePort, rawHttp } from '../helpers/upstream';
import { seededBytes, sha256 } from '../helpers/bytes';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';

const HEAD = (path: string, extraHeaders = '') => `GET ${path} HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`;
const SWITCHING = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';

/**
 * The upstream: reads the upgrade head, answers 101, then by path:
 * - /burst: sends `burst` and closes at once (FIN then close, without waiting for the client);
 * - /halfclose: collects what the client sends until its FIN, then sends it back reversed and closes;
 * - /reset: resets the connection after the 101;
 * - /hold: keeps the connection open after the 101, notes how it ended (`held`), answers a FIN with one;
 * - anything else: sends back the request head it received, after a first line `tls` or `plain`.
 */
const BURST = 48 * 1024 * 1024;
/** How each /hold connection ended at the upstream: 'ECONNRESET', 'end', ... */
const held: string[] = [];
function rawUpstream(burst: Buffer, secure?: { cert: string; key: string }): Promise<{ port: number; server: net.Server }> {
  const onConnection = (s: net.Socket) => {
    s.on('error', () => {});
    let head = Buffer.alloc(0);
    const onHead = (c: Buffer) => {
      head = Buffer.concat([head, c]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onHead);
      const path = head.subarray(0, end).toString('latin1').split(' ')[1];
      const rest = head.subarray(end + 4);
      s.write(SWITCHING);
      if (path === '/burst') {
        s.end(burst);
      } else if (path === '/halfclose') {
        const got: Buffer[] = [rest];
        s.on('data', (d: Buffer) => got.push(d));
        s.once('end', () => s.end(Buffer.from(Buffer.concat(got)).reverse()));
      } else if (path === '/reset') {
        setTimeout(() => s.resetAndDestroy(), 50);
      } else if (path === '/hold') {
        s.on('error', (err: NodeJS.ErrnoException) => held.push(err.code ?? err.message));
        s.on('end', () => {
          held.push('end');
          s.end();
        });
      } else {
        s.end(`${secure ? 'tls' : 'plain'}\n${head.subarray(0, end).toString('latin1')}`); // what arrived, for the test to read
      }
    };
    s.on('data', onHead);
  };
  const server = secure
    ? tls.createServer({ ...secure, allowHalfOpen: true }, onConnection)
    : net.createServer({ allowHalfOpen: true }, onConnection);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as net.AddressInfo).port, server })));
}

/** Connect, send the upgrade head (and `send`), optionally half-close; resolve with everything read until the gateway closes. */
function tunnel(port: number, path: string, o: { send?: Buffer; halfClose?: boolean; pauseMs?: number; stallEvery?: number; extraHeaders?: string } = {}): Promise<Buffer> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    let size = 0;
    let nextStall = o.stallEvery ?? Infinity;
    sock.on('data', (c: Buffer) => {
      got.push(c);
      size += c.length;
      if (size < nextStall) return;
      // A reader that keeps stalling: the gateway's buffers toward it are full whenever the upstream finishes.
      nextStall += o.stallEvery!;
      sock.pause();
      setTimeout(() => sock.resume(), 30);
    });
    sock.on('end', () => sock.end());
    sock.on('error', () => {}); // a reset ends the read like a close: the test reads what arrived
    sock.on('close', () => resolve(Buffer.concat(got)));
    sock.once('connect', () => {
      sock.write(HEAD(path, o.extraHeaders));
      if (o.send) sock.write(o.send);
      if (o.halfClose) sock.end();
      if (o.pauseMs) {
        // A slow reader: everything the upstream sent waits in buffers while it has already closed.
        sock.pause();
        setTimeout(() => sock.resume(), o.pauseMs);
      }
    });
  });
}

/** Open a tunnel to `path` and wait for the 101; then `act` on the socket. Resolves with how the client's socket ended. */
function tunnelEnding(port: number, path: string, act: (sock: net.Socket) => void): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let ending = 'close';
    sock.on('error', (err: NodeJS.ErrnoException) => { ending = err.code ?? err.message; });
    sock.on('close', () => resolve(ending));
    sock.once('connect', () => sock.write(HEAD(path)));
    sock.once('data', () => act(sock));
  });
}

function afterHead(data: Buffer): Buffer {
  const end = data.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no response head in ${JSON.stringify(data.subarray(0, 200).toString('latin1'))}`);
  assert.match(data.subarray(0, end).toString('latin1'), /^HTTP\/1\.1 101 /);
  return data.subarray(end + 4);
}

describe('HTTP Upgrade tunnels', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let upstream: { port: number; server: net.Server };
  let secureUpstream: { port: number; server: net.Server };
  let deadPort: number;
  let silent: net.Server;
  // An HTTP/1.1 server that ignores Upgrade: it answers like any request and keeps the connection.
  let plain: http.Server;
  const plainSeen: { url: string; upgrade: string | undefined }[] = [];
  const silentSockets = new Set<net.Socket>();
  let dir: string;
  let burst: Buffer;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-upgrade-'));
    const ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'ws-tls', ['ws-tls.internal']);
    burst = seededBytes(BURST, 7);
    upstream = await rawUpstream(burst);
    secureUpstream = await rawUpstream(burst, { cert: leaf.cert, key: leaf.key });
    deadPort = await freePort();
    plain = http.createServer((req, res) => {
      plainSeen.push({ url: req.url ?? '', upgrade: req.headers.upgrade });
      res.end(`plain ${req.url}`);
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    // Takes the connection and never answers: a TLS upstream that never finishes its handshake.
    silent = net.createServer((c) => { silentSockets.add(c); c.on('error', () => {}); c.on('close', () => silentSockets.delete(c)); });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    gw = await startGateway({
      'routes.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ws, namespace: default}
spec:
  hosts: [ws.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /dead}}]
    route: [{destination: {host: dead.internal}}]
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: ws-inside.example.com}
    headers: {request: {set: {x-route: rewritten}, remove: [x-drop]}, response: {set: {x-route-response: yes}}}
    route: [{destination: {host: ws.internal}, headers: {request: {add: {x-destination: ws}}}}]
  - match: [{uri: {prefix: /tls}}]
    route: [{destination: {host: ws-tls.internal}}]
  - match: [{uri: {prefix: /plain}}]
    route: [{destination: {host: plain.internal}}]
  - match: [{uri: {prefix: /silent}}]
    route: [{destination: {host: silent.internal}}]
  - route: [{destination: {host: ws.internal}}]
---
${['ws-tls', 'silent'].map((name) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: default}
spec:
  host: ${name}.internal
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: ${ca.certFile}}
---
`).join('')}${loopbackServiceEntryYaml('ws', 'ws.internal', 80, 'HTTP', upstream.port)}${loopbackServiceEntryYaml('ws-tls', 'ws-tls.internal', 80, 'HTTP', secureUpstream.port)}${loopbackServiceEntryYaml('dead', 'dead.internal', 80, 'HTTP', deadPort)}${loopbackServiceEntryYaml('silent', 'silent.internal', 80, 'HTTP', (silent.address() as net.AddressInfo).port)}${loopbackServiceEntryYaml('plain', 'plain.internal', 80, 'HTTP', (plain.address() as net.AddressInfo).port)}`,
    });
  });

  after(async () => {
    await gw?.stop();
    upstream?.server.close();
    secureUpstream?.server.close();
    for (const c of silentSockets) c.destroy();
    silent?.close();
    plain?.closeAllConnections();
    plain?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an upstream that sends 48 MiB and closes at once loses nothing to a slow client', async () => {
    const expected = sha256(burst);
    for (const slow of [{}, { pauseMs: 400 }, { stallEvery: 1024 * 1024 }]) {
      const body = afterHead(await tunnel(gw.port(80), '/burst', slow));
      assert.equal(body.length, BURST, `${JSON.stringify(slow)}: ${body.length} of ${BURST} bytes arrived`);
      assert.equal(sha256(body), expected);
    }
    const line = await gw.waitForLine(/"GET \/burst HTTP\/1\.1" 101 /);
    assert.match(line, new RegExp(` 0 ${BURST} `), `the access log counts the tunnelled bytes, as Envoy does: ${line}`);
  });

  it('a client that half-closes still receives the whole reply', async () => {
    const sent = seededBytes(3 * 1024 * 1024 + 17, 11);
    const body = afterHead(await tunnel(gw.port(80), '/halfclose', { send: sent, halfClose: true, pauseMs: 300 }));
    assert.equal(body.length, sent.length);
    assert.equal(sha256(body), sha256(Buffer.from(sent).reverse()));
  });

  it('the upgrade request gets the route\'s rewrite and header operations', async () => {
    const all = await tunnel(gw.port(80), '/old/chat?room=1', { extraHeaders: 'x-drop: me\r\n' });
    assert.match(all.subarray(0, all.indexOf('\r\n\r\n')).toString('latin1'), /\r\nx-route-response: yes(\r\n|$)/, 'the 101 gets the route\'s response header operations');
    const seen = afterHead(all).toString('latin1');
    assert.match(seen, /^plain\nGET \/new\/chat\?room=1 HTTP\/1\.1\r\n/);
    assert.match(seen, /\r\nhost: ws-inside\.example\.com\r\n/i);
    assert.match(seen, /\r\nx-route: rewritten\r\n/i);
    assert.match(seen, /\r\nx-destination: ws\r\n/i);
    assert.match(seen, /\r\nx-envoy-original-path: \/old\/chat\?room=1\r\n/i);
    assert.doesNotMatch(seen, /x-drop/i);
  });

  it('a DestinationRule with tls SIMPLE originates TLS for the upgrade too', async () => {
    const seen = afterHead(await tunnel(gw.port(80), '/tls/socket')).toString('latin1');
    assert.match(seen, /^tls\nGET \/tls\/socket HTTP\/1\.1\r\n/);
    await gw.waitForLine(/"GET \/tls\/socket HTTP\/1\.1" 101 .* outbound\|80\|\|ws-tls\.internal /);
  });

  it('an upstream reset reaches the client as a reset and is logged with UC', async () => {
    assert.equal(await tunnelEnding(gw.port(80), '/reset', () => {}), 'ECONNRESET');
    const line = await gw.waitForLine(/"GET \/reset HTTP\/1\.1" 101 /);
    assert.match(line, / 101 UC /);
  });

  it('a client reset reaches the upstream as a reset; a client close as a close', async () => {
    const before = held.length;
    await tunnelEnding(gw.port(80), '/hold', (sock) => sock.resetAndDestroy());
    await tunnelEnding(gw.port(80), '/hold', (sock) => sock.end());
    const deadline = Date.now() + 5000;
    while (held.length < before + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(held.slice(before), ['ECONNRESET', 'end']);
  });

  it('a client that resets while the upstream is still connecting is logged DC', async () => {
    // (A FIN is a half-close: the tunnel still opens and passes it on, as after the 101.)
    const sock = net.connect({ port: gw.port(80), host: '127.0.0.1' });
    sock.on('error', () => {});
    sock.once('connect', () => {
      sock.write(HEAD('/silent/x'));
      setTimeout(() => sock.resetAndDestroy(), 200);
    });
    const line = await gw.waitForLine(/"GET \/silent\/x HTTP\/1\.1" 0 DC /);
    assert.match(line, /downstream_remote_disconnect/);
  });

  it('an upstream that does not switch: its answer reaches the client, then the connection closes (nothing more goes upstream unrouted)', async () => {
    const before = plainSeen.length;
    const out = await rawHttp(gw.port(80), `${HEAD('/plain/a')}GET /secret HTTP/1.1\r\nHost: unrouted.example.org\r\n\r\n`, { timeoutMs: 3000 });
    assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(out, /\r\nserver: istio-envoy\r\n/);
    assert.match(out, /\r\nconnection: close\r\n/);
    assert.ok(out.endsWith('plain /plain/a'), out);
    assert.deepEqual(plainSeen.slice(before).map((r) => r.url), ['/plain/a']);
    await gw.waitForLine(/"GET \/plain\/a HTTP\/1\.1" 200 - via_upstream /);
  });

  it('Upgrade: h2c is served as the HTTP/1.1 request it also is, and the connection stays HTTP', async () => {
    const before = plainSeen.length;
    const h2c = 'GET /plain/h2c HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n';
    const next = 'GET /plain/secret HTTP/1.1\r\nHost: unrouted.example.org\r\nx-envoy-internal: true\r\nConnection: close\r\n\r\n';
    const out = await rawHttp(gw.port(80), h2c + next, { timeoutMs: 3000 });
    const answers = out.split(/(?=HTTP\/1\.1 )/);
    assert.equal(answers.length, 2, out);
    assert.match(answers[0]!, /^HTTP\/1\.1 200 OK\r\n[^]*\r\nserver: istio-envoy\r\n[^]*plain \/plain\/h2c$/);
    assert.match(answers[1]!, /^HTTP\/1\.1 404 /, 'the second request is routed like any other: no route for its host');
    assert.deepEqual(plainSeen.slice(before), [{ url: '/plain/h2c', upgrade: undefined }]);
    // curl --http2 on plain http asks for exactly this upgrade.
    const r = await curl(['-s', '-i', '--http2', '-H', 'Host: ws.example.com', `http://127.0.0.1:${gw.port(80)}/plain/curl`]);
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n[^]*\r\nserver: istio-envoy\r\n/);
  });

  it('an upgrade with an invalid Host is refused with 400, as a plain request is (never sent upstream)', async () => {
    const before = plainSeen.length;
    const out = await rawHttp(gw.port(80), 'GET /plain/x HTTP/1.1\r\nHost: ws.example.com@evil\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n', { timeoutMs: 3000 });
    assert.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.equal(plainSeen.length, before);
  });

  it('any other upgrade: 403 upgrade_failed', async () => {
    const out = await rawHttp(gw.port(80), 'GET /plain/x HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n', { timeoutMs: 3000 });
    assert.match(out, /^HTTP\/1\.1 403 Forbidden\r\n/);
    await gw.waitForLine(/"GET \/plain\/x HTTP\/1\.1" 403 - upgrade_failed /);
  });

  it('an upstream that refuses the connection: 503 UF, the connection closed', async () => {
    assert.match((await tunnel(gw.port(80), '/dead')).toString('latin1'), /^HTTP\/1\.1 503 /);
    await gw.waitForLine(/"GET \/dead HTTP\/1\.1" 503 UF /);
  });
});
