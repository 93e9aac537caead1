// A meshgate in front of two egress meshgates over HTTP/2 (h2c, the Service port named http2, as
// the sidecar -> istio-egressgateway hop): one egress gateway drains (SIGTERM path, App.stop) while
// requests flow. Its GOAWAY moves new streams to the other, streams in flight finish, and no client
// sees an error (Istio users see 503s here when a gateway pod restarts).

import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';
import { startGateway, type TestGateway } from '../helpers/gateway';

const egressYaml = (upstreamPort: number) => `${httpGatewayYaml()}${loopbackServiceEntryYaml('site', 'site.internal', 80, 'HTTP', upstreamPort)}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: site, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: site.internal}}]}]
`;

const frontYaml = (a: number, b: number) => `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egress, namespace: default}
spec:
  hosts: [egress.internal]
  ports: [{number: 80, name: http2, protocol: HTTP2}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http2: ${a}}}, {address: 127.0.0.1, ports: {http2: ${b}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: egress, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: egress.internal}}]}]
`;

describe('HTTP/2 between meshgates: an egress gateway drains under load without a failed request', function () {
  this.timeout(30_000);
  let upstream: http.Server;
  let a: TestGateway;
  let b: TestGateway;
  let front: TestGateway;
  let aStopped = false;

  before(async () => {
    // Each answer takes 80 ms, so requests are in flight on the draining gateway when it stops.
    upstream = http.createServer((req, res) => {
      req.resume();
      setTimeout(() => res.end(`ok ${req.headers['x-forwarded-for'] ?? ''}`), 80);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const up = (upstream.address() as AddressInfo).port;
    a = await startGateway({ 'site.yaml': egressYaml(up) }, { opts: { drainMs: 3000 } });
    b = await startGateway({ 'site.yaml': egressYaml(up) });
    front = await startGateway({ 'egress.yaml': frontYaml(a.port(80), b.port(80)) });
  });

  after(async () => {
    await front?.stop();
    if (!aStopped) await a?.stop();
    await b?.stop();
    await new Promise((r) => upstream?.close(r));
  });

  it('every request through the front gateway succeeds while one egress gateway drains; both served', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const results: { status: number; error?: string }[] = [];
    const get = () => new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: front.port(80), path: '/', agent, headers: { host: 'app.example.com' } }, (res) => {
        res.resume();
        res.on('end', () => { results.push({ status: res.statusCode ?? 0 }); resolve(); });
        res.on('error', (err) => { results.push({ status: 0, error: err.message }); resolve(); });
      });
      req.on('error', (err) => { results.push({ status: 0, error: err.message }); resolve(); });
    });
    const deadline = Date.now() + 2500;
    const loop = async () => { while (Date.now() < deadline) await get(); };
    const loops = Array.from({ length: 12 }, loop);
    await new Promise((r) => setTimeout(r, 700));
    const aLinesBefore = (await a.waitForLines(1)).length;
    const stopping = a.stop().then(() => { aStopped = true; });
    await Promise.all(loops);
    await stopping;
    agent.destroy();
    const failed = results.filter((r) => r.status !== 200);
    assert.ok(results.length > 100, `only ${results.length} requests ran`);
    assert.deepEqual(failed, [], `${failed.length} of ${results.length} failed`);
    assert.ok(aLinesBefore > 0, 'the draining gateway served requests before it stopped');
    assert.ok(b.accessLines().length > 0 || (await b.waitForLines(1)).length > 0, 'the other gateway took over');
  });
});
