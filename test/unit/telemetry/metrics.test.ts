import assert from 'node:assert/strict';
import { AccessLog, type AccessRecord } from '../../../src/telemetry/access-log';
import { Metrics } from '../../../src/telemetry/metrics';
import { Telemetry, grpcResponseStatus, isGrpcContentType } from '../../../src/telemetry/telemetry';

const IDENTITY = { workload: 'reviews', namespace: 'bookinfo', labels: { app: 'reviews', version: 'v2' } };

/** The label sets of a metric's lines, as objects. */
async function series(m: Metrics, name: string): Promise<Record<string, string>[]> {
  const out: Record<string, string>[] = [];
  for (const line of (await m.render()).split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of line.matchAll(/(\w+)="([^"]*)"/g)) labels[k!] = v!;
    out.push(labels);
  }
  return out;
}

function record(extra: Partial<AccessRecord> = {}): AccessRecord {
  return { startTime: Date.now(), responseCode: 200, responseFlags: [], bytesReceived: 0, bytesSent: 0, durationMs: 1, ...extra };
}

describe('istio standard metrics: reporter and peers', () => {
  it('outbound (gateway, sidecar outbound): reporter="source", this workload in source_*', async () => {
    const m = new Metrics(IDENTITY, false);
    m.observeHttp({ destination: { host: 'ratings.bookinfo.svc.cluster.local', name: 'ratings', namespace: 'bookinfo' }, responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false });
    const [s] = await series(m, 'istio_requests_total');
    assert.equal(s!['reporter'], 'source');
    assert.equal(s!['source_workload'], 'reviews');
    assert.equal(s!['source_workload_namespace'], 'bookinfo');
    assert.equal(s!['source_app'], 'reviews');
    assert.equal(s!['source_version'], 'v2');
    assert.equal(s!['destination_workload'], 'unknown');
    assert.equal(s!['connection_security_policy'], 'unknown');
  });

  it('inbound: reporter="destination", this workload in destination_*, the plaintext peer unknown, policy none', async () => {
    const m = new Metrics(IDENTITY, false);
    m.observeHttp({ destination: { host: 'inbound|9080||', name: 'inbound|9080||' }, responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false, inbound: true });
    const [s] = await series(m, 'istio_requests_total');
    assert.equal(s!['reporter'], 'destination');
    assert.equal(s!['destination_workload'], 'reviews');
    assert.equal(s!['destination_workload_namespace'], 'bookinfo');
    assert.equal(s!['destination_app'], 'reviews');
    assert.equal(s!['destination_version'], 'v2');
    assert.equal(s!['destination_canonical_service'], 'reviews');
    assert.equal(s!['destination_canonical_revision'], 'v2');
    assert.equal(s!['destination_principal'], 'unknown');
    for (const l of ['source_workload', 'source_workload_namespace', 'source_app', 'source_version', 'source_principal', 'source_canonical_service']) {
      assert.equal(s![l], 'unknown', l);
    }
    assert.equal(s!['connection_security_policy'], 'none');
  });

  it('inbound and outbound requests to the same destination are separate series', async () => {
    const m = new Metrics(IDENTITY, false);
    const o = { destination: { host: 'h' }, responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false };
    m.observeHttp(o);
    m.observeHttp({ ...o, inbound: true });
    const all = await series(m, 'istio_requests_total');
    assert.deepEqual(all.map((s) => s['reporter']).sort(), ['destination', 'source']);
  });

  it('TCP: an inbound connection is reported by the destination', async () => {
    const m = new Metrics(IDENTITY, false);
    m.tcpSeries({ host: 'InboundPassthroughCluster', name: 'InboundPassthroughCluster' }, '-', true).opened += 1;
    m.tcpSeries({ host: 'db.svc', name: 'db' }, '-').opened += 1;
    const all = await series(m, 'istio_tcp_connections_opened_total');
    const inbound = all.find((s) => s['destination_service'] === 'InboundPassthroughCluster')!;
    assert.equal(inbound['reporter'], 'destination');
    assert.equal(inbound['destination_workload'], 'reviews');
    assert.equal(inbound['source_workload'], 'unknown');
    assert.equal(inbound['connection_security_policy'], 'none');
    const outbound = all.find((s) => s['destination_service'] === 'db.svc')!;
    assert.equal(outbound['reporter'], 'source');
    assert.equal(outbound['source_workload'], 'reviews');
  });

  it("outbound to an endpoint with a workload: destination_* from it (Istio's istio:workload endpoint metadata), per endpoint identity", async () => {
    const m = new Metrics(IDENTITY, false);
    const endpoint: { labels: Record<string, string>; workload?: { name: string; namespace: string } } = {
      labels: { 'app.kubernetes.io/name': 'ratings-kube', 'app.kubernetes.io/version': '1.2', app: 'ratings', version: 'v1' },
      workload: { name: 'ratings-v1', namespace: 'bookinfo' },
    };
    const d = { host: 'ratings.bookinfo.svc.cluster.local', name: 'ratings', namespace: 'bookinfo' };
    m.observeHttp({ destination: d, endpoint, responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false });
    m.tcpSeries(d, '-', false, endpoint).opened += 1;
    for (const s of [...await series(m, 'istio_requests_total'), ...await series(m, 'istio_tcp_connections_opened_total')]) {
      assert.deepEqual(
        [s['reporter'], s['destination_workload'], s['destination_workload_namespace'], s['destination_canonical_service'], s['destination_canonical_revision'], s['destination_app'], s['destination_version'], s['destination_cluster'], s['source_workload']],
        ['source', 'ratings-v1', 'bookinfo', 'ratings-kube', '1.2', 'ratings', 'v1', 'Kubernetes', 'reviews'],
      );
    }
    // The endpoint's labels change in place (a reload): new series; no workload: unknown again.
    endpoint.labels = { app: 'ratings', version: 'v2' };
    m.observeHttp({ destination: d, endpoint, responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false });
    delete endpoint.workload;
    m.observeHttp({ destination: d, endpoint, responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false });
    const all = await series(m, 'istio_requests_total');
    assert.deepEqual(all.map((s) => `${s['destination_workload']}/${s['destination_canonical_service']}/${s['destination_canonical_revision']}`).sort(),
      ['ratings-v1/ratings-kube/1.2', 'ratings-v1/ratings/v2', 'unknown/unknown/latest']);
  });

  it('Telemetry reports requests through inbound clusters as the destination', async () => {
    const m = new Metrics(IDENTITY, false);
    const t = new Telemetry(new AccessLog(), m);
    t.recordHttp(record({ upstreamCluster: 'inbound|9080||' }), { host: 'inbound|9080||' }, 1, 1);
    t.recordHttp(record({ upstreamCluster: 'InboundPassthroughCluster' }), { host: 'InboundPassthroughCluster' }, 1, 1);
    t.recordHttp(record({ upstreamCluster: 'outbound|80||x' }), { host: 'x' }, 1, 1);
    t.recordHttp(record(), {}, 1, 1, { inbound: true }); // failed before a cluster was chosen
    const by = Object.fromEntries((await series(m, 'istio_requests_total')).map((s) => [s['destination_service'], s['reporter']]));
    assert.deepEqual(by, { 'inbound|9080||': 'destination', InboundPassthroughCluster: 'destination', x: 'source', unknown: 'destination' });
  });
});

describe('istio standard metrics: gRPC', () => {
  it('gRPC is application/grpc or application/grpc+<codec>; gRPC-Web and others are not', () => {
    for (const ct of ['application/grpc', 'application/grpc+proto', 'application/grpc+json']) assert.equal(isGrpcContentType(ct), true, ct);
    for (const ct of ['application/grpc-web', 'application/grpc-web+proto', 'application/grpc-web-text', 'application/grpcx', 'application/json', undefined]) {
      assert.equal(isGrpcContentType(ct), false, String(ct));
    }
  });

  it('request_protocol: grpc-web is "http"', async () => {
    const m = new Metrics(IDENTITY, false);
    const t = new Telemetry(new AccessLog(), m);
    t.recordHttp(record({ requestHeaders: { 'content-type': 'application/grpc-web+proto' } }), { host: 'web' }, 1, 1);
    t.recordHttp(record({ requestHeaders: { 'content-type': 'application/grpc+proto' } }), { host: 'grpc' }, 1, 1, { grpcStatus: '0' });
    const by = Object.fromEntries((await series(m, 'istio_requests_total')).map((s) => [s['destination_service'], s]));
    assert.equal(by['web']!['request_protocol'], 'http');
    assert.equal(by['web']!['grpc_response_status'], '');
    assert.equal(by['grpc']!['request_protocol'], 'grpc');
    assert.equal(by['grpc']!['grpc_response_status'], '0');
  });

  it('grpc_response_status: the grpc-status of gRPC requests, separate series per status; "" for HTTP', async () => {
    const m = new Metrics(IDENTITY, false);
    const t = new Telemetry(new AccessLog(), m);
    const grpc = record({ requestHeaders: { 'content-type': 'application/grpc' } });
    t.recordHttp(grpc, { host: 'g' }, 1, 1, { grpcStatus: '0' });
    t.recordHttp(grpc, { host: 'g' }, 1, 1, { grpcStatus: '5' });
    t.recordHttp(grpc, { host: 'g' }, 1, 1, { grpcStatus: '5' });
    t.recordHttp(record(), { host: 'h' }, 1, 1, { grpcStatus: '5' }); // not a gRPC request
    const lines = (await m.render()).split('\n').filter((l) => l.startsWith('istio_requests_total{'));
    const count = (host: string, status: string) => Number(lines.find((l) => l.includes(`destination_service="${host}"`) && l.includes(`grpc_response_status="${status}"`))?.split(' ').at(-1));
    assert.equal(count('g', '0'), 1);
    assert.equal(count('g', '5'), 2);
    assert.equal(count('h', ''), 1);
  });

  it('without a grpc-status, Envoy infers it from the HTTP status; no response, none', () => {
    assert.equal(grpcResponseStatus(undefined, 503), '14');
    assert.equal(grpcResponseStatus(undefined, 404), '12');
    assert.equal(grpcResponseStatus(undefined, 200), '2');
    assert.equal(grpcResponseStatus(undefined, 0), '');
    assert.equal(grpcResponseStatus('7', 200), '7');
    assert.equal(grpcResponseStatus('99', 200), '-1');
    assert.equal(grpcResponseStatus('x', 200), '-1');
  });
});

describe('istio standard metrics: series lookup', () => {
  /** istio_requests_total's value per response code and flags. */
  async function totals(m: Metrics): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const line of (await m.render()).split('\n')) {
      if (!line.startsWith('istio_requests_total{')) continue;
      const code = /response_code="([^"]*)"/.exec(line)![1]!;
      const flags = /response_flags="([^"]*)"/.exec(line)![1]!;
      const service = /destination_service_name="([^"]*)"/.exec(line)![1]!;
      out[`${service} ${code} ${flags}`] = Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return out;
  }

  it('counts each request once in its series, whether found by the quick path (no flags, not gRPC) or by key, and across a reload', async () => {
    const m = new Metrics(IDENTITY, false);
    const ratings = { host: 'ratings.bookinfo.svc.cluster.local', name: 'ratings', namespace: 'bookinfo' };
    const details = { host: 'details.bookinfo.svc.cluster.local', name: 'details', namespace: 'bookinfo' };
    const observe = (destination: typeof ratings, responseCode: number, responseFlags = '-') =>
      m.observeHttp({ destination, responseCode, responseFlags, durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false });
    for (let i = 0; i < 5; i++) observe(ratings, 200);
    for (let i = 0; i < 3; i++) observe(ratings, 503, 'UF');
    for (let i = 0; i < 2; i++) observe(ratings, 404);
    observe(details, 200);
    // A reload builds new destination objects with the same labels: the same series go on counting.
    const ratingsAgain = { ...ratings };
    for (let i = 0; i < 4; i++) observe(ratingsAgain, 200);
    observe(ratingsAgain, 503, 'UF');
    assert.deepEqual(await totals(m), { 'ratings 200 -': 9, 'ratings 503 UF': 4, 'ratings 404 -': 2, 'details 200 -': 1 });
  });
});
