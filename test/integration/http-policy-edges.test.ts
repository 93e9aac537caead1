// Routed requests at the edges of their policies, as Envoy handles them: a mirror that never
// answers is cut at the route timeout; unusable TLS material does not use up the circuit breaker;
// a fault delays, then aborts; the CORS filter's headers replace the upstream's; status retries
// that run out are flagged URX; a regex route's rewrite.uri replaces the whole path.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl, listenLoopback, portOf } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';

describe('routed requests at the edges of their policies', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  let bin: HttpbinServer;
  let silent: net.Server;
  const silentOpen = new Set<net.Socket>();
  let corsUp: http.Server;
  const url = (p: string) => `http://127.0.0.1:${gw.port(80)}${p}`;

  before(async () => {
    bin = await startHttpbin({ name: 'bin' });
    // Reads each request and never answers; `silentOpen` holds the connections a request came on.
    silent = net.createServer((c) => {
      c.on('data', () => silentOpen.add(c));
      c.on('error', () => {});
      c.on('close', () => silentOpen.delete(c));
    });
    corsUp = http.createServer((_req, res) => res.writeHead(200, { 'access-control-allow-origin': '*', 'content-length': 2 }).end('ok'));
    await Promise.all([silent, corsUp].map(listenLoopback));
    gw = await startGateway({
      'routes.yaml': `${httpGatewayYaml()}${loopbackServiceEntryYaml('bin', 'bin.internal', 80, 'HTTP', bin.port)}${loopbackServiceEntryYaml('silent', 'silent.internal', 80, 'HTTP', portOf(silent))}${loopbackServiceEntryYaml('cors', 'cors.internal', 80, 'HTTP', portOf(corsUp))}${loopbackServiceEntryYaml('badtls', 'badtls.internal', 80, 'HTTP', bin.port)}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: badtls, namespace: default}
spec:
  host: badtls.internal
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /nonexistent/ca.pem}
    connectionPool: {http: {http2MaxRequests: 2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edges, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /anything/mirrored}}]
    timeout: 1s
    mirror: {host: silent.internal}
    route: [{destination: {host: bin.internal}}]
  - match: [{uri: {prefix: /anything/slowup}}]
    timeout: 1s
    route: [{destination: {host: bin.internal}}]
  - match: [{uri: {prefix: /badtls}}]
    route: [{destination: {host: badtls.internal}}]
  - match: [{uri: {prefix: /corsfail}}]
    corsPolicy: {allowOrigins: [{exact: "https://ok.example.com"}]}
    headers: {response: {set: {x-resp: "yes"}}}
    route: [{destination: {host: badtls.internal}}]
  - match: [{uri: {prefix: /fault}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}, abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: bin.internal}}]
  - match: [{uri: {prefix: /cors}}]
    corsPolicy: {allowOrigins: [{exact: "https://ok.example.com"}]}
    route: [{destination: {host: cors.internal}}]
  - match: [{uri: {prefix: /status}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: bin.internal}}]
  - match: [{uri: {regex: "/re/[a-z]+"}}]
    rewrite: {uri: /anything/fixed}
    route: [{destination: {host: bin.internal}}]
`,
    });
  });
  after(async () => {
    await gw?.stop();
    await bin?.close();
    for (const c of silentOpen) c.destroy();
    silent?.close();
    corsUp?.close();
  });

  it('a mirror that never answers is cut at the route timeout', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', url('/anything/mirrored')])).stdout, '200');
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(silentOpen.size > 0, 'the mirrored requests arrived and wait');
    const deadline = Date.now() + 5000;
    while (silentOpen.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(silentOpen.size, 0, 'every connection holding a mirrored request was closed');
  });

  it('the route timeout starts once the request is sent: a slow 200 KiB upload is not cut', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port(80), path: '/anything/slowup', method: 'POST', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      let sent = 0;
      const next = () => {
        if (sent === 10) return void req.end();
        sent += 1;
        req.write(Buffer.alloc(20 * 1024, sent));
        setTimeout(next, 150); // 10 x 20 KiB over 1.5 s, longer than the 1 s route timeout
      };
      next();
    });
    assert.equal(status, 200);
  });

  it('unusable TLS material answers 503 UF every time, never 503 UO (no circuit-breaker slot kept)', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await curl(['-s', '-i', url('/badtls')]);
      assert.match(r.stdout, /^HTTP\/1\.1 503 /);
      assert.doesNotMatch(r.stdout, /x-envoy-overloaded/);
    }
  });

  it('a fault with delay and abort delays, then aborts (DI,FI)', async () => {
    const t0 = Date.now();
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', url('/fault')]);
    assert.equal(r.stdout, '418');
    assert.ok(Date.now() - t0 >= 280, `answered after ${Date.now() - t0} ms`);
    await gw.waitForLine(/"GET \/fault HTTP\/1\.1" 418 DI,FI /);
  });

  it('the CORS filter\'s allow-origin replaces the upstream\'s own', async () => {
    const r = await curl(['-s', '-i', '-H', 'Origin: https://ok.example.com', url('/cors')]);
    const values = r.stdout.split('\r\n').filter((l) => /^access-control-allow-origin:/i.test(l));
    assert.deepEqual(values, ['access-control-allow-origin: https://ok.example.com']);
  });

  it('a reply the gateway makes for a routed request gets the route\'s response headers and CORS', async () => {
    const r = await curl(['-s', '-i', '-H', 'Origin: https://ok.example.com', url('/corsfail')]);
    assert.match(r.stdout, /^HTTP\/1\.1 503 /);
    assert.match(r.stdout, /\r\nx-resp: yes\r\n/);
    assert.match(r.stdout, /\r\naccess-control-allow-origin: https:\/\/ok\.example\.com\r\n/);
  });

  it('a retriable status after the last retry is passed on flagged URX', async () => {
    const before = bin.requests.length;
    assert.equal((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', url('/status/503')])).stdout, '503');
    assert.equal(bin.requests.length - before, 3, 'the first attempt and two retries');
    await gw.waitForLine(/"GET \/status\/503 HTTP\/1\.1" 503 URX via_upstream /);
  });

  it('rewrite.uri on a regex-matched route replaces the whole path', async () => {
    assert.equal((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', url('/re/abc?q=1')])).stdout, '200');
    assert.equal(bin.requests.at(-1)!.url, '/anything/fixed?q=1');
  });
});
