// Istio's client side names the destination workload from the endpoint it picked (the EDS endpoint's
// `istio:workload` metadata) when the destination has no sidecar to say who it is: a gateway's
// istio_requests_total for a WorkloadEntry (or a Pod) carries destination_workload,
// destination_app/version and the canonical labels; a ServiceEntry's inline endpoint stays unknown.
// Without this every workload table of Istio's mesh dashboard collapses into one `unknown` row.

import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { httpGet } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { httpGatewayYaml } from '../../src/sample/configs';
import { decodePeerMetadata, encodePeerMetadata } from '../../src/telemetry/peer-metadata';

function config(v1: number, v2: number, external: number): string {
  return `${httpGatewayYaml()}apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm-1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: ${v1}}
  labels: {app: reviews, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm-2, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: ${v2}}
  labels: {app: reviews, version: v2, service.istio.io/workload-name: reviews-v2, service.istio.io/canonical-name: reviews-canonical}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [external.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${external}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings-mesh, namespace: default}
spec:
  hosts: [ratings.mesh.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${external}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{headers: {x-version: {exact: v1}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{headers: {x-version: {exact: mesh}}}]
    route: [{destination: {host: ratings.mesh.internal}}]
  - route: [{destination: {host: external.example.com}}]
`;
}

/** The labels of every istio_requests_total series, with its value. */
async function requestSeries(gw: TestGateway): Promise<{ labels: Record<string, string>; value: number }[]> {
  const text = (await httpGet(gw.app.ports.metrics, '/stats/prometheus')).body;
  return text.split('\n').filter((l) => l.startsWith('istio_requests_total{')).map((l) => {
    const labels: Record<string, string> = {};
    for (const m of l.matchAll(/(\w+)="([^"]*)"/g)) labels[m[1]!] = m[2]!;
    return { labels, value: Number(l.split(' ').at(-1)) };
  });
}

describe('destination workload from the endpoint (reporter="source")', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  const backends: HttpbinServer[] = [];

  before(async () => {
    for (const name of ['v1', 'v2', 'external']) backends.push(await startHttpbin({ name }));
    gw = await startGateway({ 'routes.yaml': config(backends[0]!.port, backends[1]!.port, backends[2]!.port) });
  });
  after(async () => {
    await gw?.stop();
    for (const b of backends) await b.close();
  });

  it("a WorkloadEntry's name (or its service.istio.io/workload-name), namespace, app, version and canonical labels", async () => {
    for (let i = 0; i < 3; i++) {
      assert.equal((await httpGet(gw.port(80), '/get', { 'x-version': 'v1' })).status, 200);
      assert.equal((await httpGet(gw.port(80), '/get', { 'x-version': 'v2' })).status, 200);
    }
    const series = await requestSeries(gw);
    const v1 = series.find((s) => s.labels['destination_version'] === 'v1');
    const v2 = series.find((s) => s.labels['destination_version'] === 'v2');
    assert.ok(v1 && v2, JSON.stringify(series.map((s) => s.labels)));
    assert.equal(v1.value, 3);
    assert.deepEqual(
      [v1.labels['reporter'], v1.labels['destination_workload'], v1.labels['destination_workload_namespace'], v1.labels['destination_app'],
        v1.labels['destination_canonical_service'], v1.labels['destination_canonical_revision'], v1.labels['destination_cluster'],
        v1.labels['destination_service'], v1.labels['source_workload']],
      ['source', 'reviews-vm-1', 'default', 'reviews', 'reviews', 'v1', 'Kubernetes', 'reviews.default.svc.cluster.local', 'istio-ingressgateway'],
    );
    assert.equal(v2.value, 3);
    assert.deepEqual(
      [v2.labels['destination_workload'], v2.labels['destination_canonical_service'], v2.labels['destination_canonical_revision']],
      ['reviews-v2', 'reviews-canonical', 'v2'],
    );
  });

  it("Istio's metadata exchange: a mesh service gets the gateway's x-envoy-peer-metadata (so an Istio sidecar there names it); a MESH_EXTERNAL one does not", async () => {
    const echoed = async (headers: Record<string, string>) => {
      const r = await httpGet(gw.port(80), '/headers', headers);
      assert.equal(r.status, 200);
      const h = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
      return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
    };
    const mesh = await echoed({ 'x-version': 'v1' });
    const md = decodePeerMetadata(mesh['x-envoy-peer-metadata']);
    assert.ok(md, JSON.stringify(mesh));
    assert.equal(md['WORKLOAD_NAME'], 'istio-ingressgateway');
    assert.equal(md['NAMESPACE'], 'istio-system');
    assert.equal(md['CLUSTER_ID'], 'Kubernetes');
    assert.deepEqual(md['LABELS'], { app: 'istio-ingressgateway', istio: 'ingressgateway' });
    assert.match(mesh['x-envoy-peer-metadata-id']!, /^router~[\d.]+~[^~]+\.istio-system~istio-system\.svc\.cluster\.local$/);
    // A client's own copy never passes the edge; an external service gets none at all.
    const external = await echoed({ host: 'external.example.com', 'x-envoy-peer-metadata': mesh['x-envoy-peer-metadata']! });
    assert.equal(external['x-envoy-peer-metadata'], undefined);
    assert.equal(external['x-envoy-peer-metadata-id'], undefined);
  });

  it("the exchange's answer: a mesh service's sidecar naming itself in its response is the destination workload; the client never sees the headers", async () => {
    const md = encodePeerMetadata({
      CLUSTER_ID: 'Kubernetes', NAME: 'ratings-v1-7dc98c7588-x2b4n', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'ratings-v1',
      LABELS: { app: 'ratings', version: 'v1', 'service.istio.io/canonical-name': 'ratings' },
    });
    const q = new URLSearchParams({ 'x-envoy-peer-metadata': md, 'x-envoy-peer-metadata-id': 'sidecar~10.1.2.3~ratings-v1-7dc98c7588-x2b4n.bookinfo~bookinfo.svc.cluster.local' });
    for (let i = 0; i < 2; i++) {
      const r = await httpGet(gw.port(80), `/response-headers?${q}`, { 'x-version': 'mesh' });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-envoy-peer-metadata'], undefined);
      assert.equal(r.headers['x-envoy-peer-metadata-id'], undefined);
    }
    const s = (await requestSeries(gw)).find((x) => x.labels['destination_service'] === 'ratings.mesh.internal');
    assert.ok(s, JSON.stringify((await requestSeries(gw)).map((x) => x.labels)));
    assert.equal(s.value, 2);
    assert.deepEqual(
      [s.labels['destination_workload'], s.labels['destination_workload_namespace'], s.labels['destination_app'], s.labels['destination_version'],
        s.labels['destination_canonical_service'], s.labels['destination_canonical_revision']],
      ['ratings-v1', 'bookinfo', 'ratings', 'v1', 'ratings', 'v1'],
    );
    // A MESH_EXTERNAL service's answer is not read (the exchange is not offered there).
    assert.equal((await httpGet(gw.port(80), `/response-headers?${q}`, { host: 'external.example.com' })).status, 200);
    const ext = (await requestSeries(gw)).find((x) => x.labels['destination_service'] === 'external.example.com');
    assert.equal(ext?.labels['destination_workload'], 'unknown');
  });

  it("a ServiceEntry's own endpoint names no workload: unknown, as Istio's", async () => {
    assert.equal((await httpGet(gw.port(80), '/get', { host: 'external.example.com' })).status, 200);
    const external = (await requestSeries(gw)).find((s) => s.labels['destination_service'] === 'external.example.com');
    assert.ok(external);
    assert.equal(external.labels['destination_workload'], 'unknown');
    assert.equal(external.labels['destination_workload_namespace'], 'unknown');
    assert.equal(external.labels['destination_app'], 'unknown');
    assert.equal(external.labels['destination_canonical_service'], 'unknown');
  });
});
