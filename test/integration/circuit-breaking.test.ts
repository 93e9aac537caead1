// DestinationRule connectionPool and outlierDetection through the real gateway: the istio.io
// circuit-breaking walkthrough (maxConnections 1, pending 1, one request per connection), Envoy's
// counters on /stats, and an endpoint ejected by outlier detection and returned after its time.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { httpGet, waitFor, withHttpbin } from '../helpers/upstream';
import { httpGatewayYaml } from '../../src/sample/configs';
import type { HttpbinServer } from '../../src/sample/httpbin';
import { workloadEntry } from '../helpers/yaml';

/** fortio-like: `clients` keep-alive connections, each sending `n` requests one after another. */
async function load(port: number, hostHeader: string, path: string, clients: number, n: number): Promise<{ codes: number[]; overloaded: number; bodies: Set<string> }> {
  const codes: number[] = [];
  const bodies = new Set<string>();
  let overloaded = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < n; i++) {
      await new Promise<void>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path, agent, headers: { host: hostHeader } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => { body += c; });
          res.on('end', () => {
            codes.push(res.statusCode ?? 0);
            if (res.statusCode === 503) bodies.add(body);
            if (res.headers['x-envoy-overloaded'] === 'true') overloaded += 1;
            resolve();
          });
        }).on('error', reject);
      });
    }
    agent.destroy();
  }));
  return { codes, overloaded, bodies };
}

describe('circuit breaking and outlier detection', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let httpbin: HttpbinServer;
  let good: HttpbinServer;
  let bad: http.Server;

  before(async () => {
    httpbin = await withHttpbin('httpbin');
    good = await withHttpbin('good');
    bad = http.createServer((_req, res) => res.writeHead(503).end('bad'));
    await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r));
    gw = await startGateway({
      'httpbin.yaml': `apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
${workloadEntry('httpbin-1', { http: httpbin.port }, { app: 'httpbin' })}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection:
      consecutiveErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
`,
      'flaky.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: flaky, namespace: default}
spec:
  hosts: [flaky.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${good.port}}}
  - {address: 127.0.0.1, ports: {http: ${(bad.address() as net.AddressInfo).port}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: default}
spec:
  host: flaky.internal
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}
---
`,
      'routes.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: default}
spec:
  hosts: [httpbin.example.com, flaky.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {exact: flaky.example.com}}]
    route: [{destination: {host: flaky.internal}}]
  - route: [{destination: {host: httpbin, port: {number: 8000}}}]
`,
    });
  });
  after(async () => {
    await gw?.stop();
    await httpbin?.close();
    await good?.close();
    bad?.close();
  });

  it('the walkthrough: 2 clients x 20 mostly pass, 3 x 30 overflow often (503 UO, x-envoy-overloaded)', async () => {
    const port = gw.port(80);
    const two = await load(port, 'httpbin.example.com', '/get', 2, 20);
    const ok2 = two.codes.filter((c) => c === 200).length;
    assert.ok(ok2 >= 32, `2 x 20: ${ok2} of 40 passed`);
    const three = await load(port, 'httpbin.example.com', '/get', 3, 30);
    const over = three.codes.filter((c) => c === 503).length;
    assert.ok(over >= 10, `3 x 30: only ${over} of 90 overflowed`);
    assert.equal(three.overloaded, over, 'every overflow reply carries x-envoy-overloaded: true');
    assert.deepEqual([...three.bodies], ['upstream connect error or disconnect/reset before headers. reset reason: overflow']);
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => / 503 UO upstream_reset_before_response_started\{overflow\} /.test(l)); }, { timeoutMs: 3000 });
  });

  it('/stats | grep httpbin | grep pending reads as in the walkthrough', async () => {
    const stats = (await httpGet(gw.app.ports.admin, '/stats')).body;
    const pending = stats.split('\n').filter((l) => l.includes('httpbin') && l.includes('pending'));
    const names = pending.map((l) => l.replace(/^cluster\.outbound\|8000\|\|httpbin\.default\.svc\.cluster\.local\./, '').replace(/: \d+$/, ''));
    assert.deepEqual(names, [
      'circuit_breakers.default.rq_pending_open', 'circuit_breakers.high.rq_pending_open', 'upstream_rq_pending_active',
      'upstream_rq_pending_failure_eject', 'upstream_rq_pending_overflow', 'upstream_rq_pending_total',
    ]);
    const overflow = Number(/upstream_rq_pending_overflow: (\d+)/.exec(stats)![1]);
    assert.ok(overflow >= 10, `upstream_rq_pending_overflow: ${overflow}`);
    assert.ok(Number(/httpbin\.default\.svc\.cluster\.local\.upstream_rq_pending_total: (\d+)/.exec(stats)![1]) > 0);
  });

  it('outlier detection ejects the failing endpoint, shows it in /clusters, and lets it back after baseEjectionTime', async () => {
    const port = gw.port(80);
    const badKey = `127.0.0.1:${(bad.address() as net.AddressInfo).port}`;
    // Round robin: the bad endpoint answers every other request until its second consecutive 503.
    await load(port, 'flaky.example.com', '/get', 1, 6);
    const clusters = (await httpGet(gw.app.ports.admin, '/clusters')).body;
    assert.ok(clusters.includes(`outbound|80||flaky.internal::${badKey}::health_flags::/failed_outlier_check`), clusters);
    const ejected = await load(port, 'flaky.example.com', '/get', 1, 10);
    assert.deepEqual([...new Set(ejected.codes)], [200], 'only the healthy endpoint serves while the other is ejected');
    const metrics = await gw.app.metrics.render();
    assert.match(metrics, /meshgate_outlier_ejections_total\{cluster="outbound\|80\|\|flaky\.internal",reason="consecutive_5xx"\} 1/);
    // After baseEjectionTime (1 s) it is back, fails again, and is ejected for twice as long.
    await new Promise((r) => setTimeout(r, 1100));
    const back = await load(port, 'flaky.example.com', '/get', 1, 6);
    assert.ok(back.codes.includes(503), 'the returned endpoint gets traffic again');
    const stats = (await httpGet(gw.app.ports.admin, '/stats')).body;
    assert.match(stats, /flaky\.internal\.outlier_detection\.ejections_enforced_total: 2/);
    assert.match(stats, /flaky\.internal\.outlier_detection\.ejections_active: 1/);
  });
});
