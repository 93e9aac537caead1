// The client side's view of who answered, as Istio's istio_stats takes it: the upstream's answer to
// the metadata exchange first, then the endpoint's workload; over TLS, the certificates' URI SANs as
// source_principal / destination_principal (and the SPIFFE namespace as the destination's).

import assert from 'node:assert/strict';
import { compileTextFormat, type AccessRecord } from '../../../src/telemetry/access-log';
import { Metrics, spiffeNamespace, type HttpObservation } from '../../../src/telemetry/metrics';
import { encodePeerMetadata, peerWorkloadFromHeader, peerWorkloadFromRaw } from '../../../src/telemetry/peer-metadata';
import { uriSans } from '../../../src/tls/identities';

const IDENTITY = { workload: 'productpage-v1', namespace: 'bookinfo', labels: { app: 'productpage', version: 'v1' } };
const SLEEP = 'spiffe://cluster.local/ns/default/sa/sleep';
const EGRESS = 'spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account';

async function series(m: Metrics, name = 'istio_requests_total'): Promise<Record<string, string>[]> {
  const out: Record<string, string>[] = [];
  for (const line of (await m.render()).split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of line.matchAll(/(\w+)="([^"]*)"/g)) labels[k!] = v!;
    out.push({ ...labels, value: line.split(' ').at(-1)! });
  }
  return out;
}

const base: HttpObservation = {
  destination: { host: 'reviews.bookinfo.svc.cluster.local', name: 'reviews', namespace: 'bookinfo' },
  responseCode: 200, responseFlags: '-', durationMs: 1, requestBytes: 1, responseBytes: 1, grpc: false,
};

describe('principals and the exchange\'s answer (client side)', () => {
  it('reads the URI SANs of Node\'s subjectaltname (table)', () => {
    const cases: [string | undefined, string[]][] = [
      [undefined, []],
      ['', []],
      ['DNS:example.com', []],
      [`URI:${SLEEP}`, [SLEEP]],
      [`DNS:a.example, URI:${SLEEP}, IP Address:10.0.0.1`, [SLEEP]],
      [`URI:${SLEEP}, URI:spiffe://other/ns/x/sa/y`, [SLEEP, 'spiffe://other/ns/x/sa/y']],
      ['URI:"spiffe://td/ns/a,b/sa/c", DNS:x', ['spiffe://td/ns/a,b/sa/c']], // Node quotes a value with a comma
      ['DNS:"x, URI:fake", URI:real', ['real']], // a quoted DNS name that looks like a URI entry
      ['URI:"broken', []],
    ];
    for (const [san, want] of cases) assert.deepEqual(uriSans(san), want, String(san));
  });

  it('takes the namespace of an identity as Istio does (table)', () => {
    const cases: [string, string | undefined][] = [
      [SLEEP, 'default'], [EGRESS, 'istio-system'], ['spiffe://td/ns/bookinfo', 'bookinfo'],
      ['spiffe://td/ns//sa/x', undefined], ['spiffe://td/sa/x', undefined], ['', undefined], ['unknown', undefined],
      ['spiffe://a/b/ns/c/sa/d', 'c'],
    ];
    for (const [san, want] of cases) assert.equal(spiffeNamespace(san), want, san);
  });

  it('finds the peer metadata in raw response headers, any case, through the decoder cache', () => {
    const md = encodePeerMetadata({ NAME: 'reviews-v2-abc', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'reviews-v2', LABELS: { app: 'reviews', version: 'v2' } });
    const raw = [Buffer.from('Content-Type'), Buffer.from('text/plain'), Buffer.from('X-Envoy-Peer-Metadata'), Buffer.from(md)];
    const w = peerWorkloadFromRaw(raw);
    assert.deepEqual(w, { workload: 'reviews-v2', namespace: 'bookinfo', labels: { app: 'reviews', version: 'v2' } });
    assert.equal(w, peerWorkloadFromHeader(md), 'the same cached object (metrics key their entries on it)');
    assert.equal(peerWorkloadFromRaw([Buffer.from('x-envoy-peer-metadata-id'), Buffer.from('sidecar~1~a.b~b.svc')]), undefined);
    assert.equal(peerWorkloadFromRaw([Buffer.from('x-envoy-peer-metadata'), Buffer.from('not base64!')]), undefined);
    assert.equal(peerWorkloadFromRaw([Buffer.from('x-envoy-peer-metadata')]), undefined, 'a name without a value');
  });

  it('destination_* from the upstream\'s answer before the endpoint\'s workload', async () => {
    const m = new Metrics(IDENTITY, false);
    const endpoint = { labels: { app: 'reviews', version: 'v1' }, workload: { name: 'reviews-vm', namespace: 'vms' } };
    const answered = peerWorkloadFromHeader(encodePeerMetadata({ NAME: 'p', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'reviews-v3', LABELS: { app: 'reviews', version: 'v3' } }))!;
    m.observeHttp({ ...base, endpoint });
    m.observeHttp({ ...base, endpoint, upstreamPeer: answered });
    m.observeHttp({ ...base, endpoint, upstreamPeer: answered });
    const s = await series(m);
    const byWorkload = Object.fromEntries(s.map((x) => [x['destination_workload'], x]));
    assert.deepEqual(Object.keys(byWorkload).sort(), ['reviews-v3', 'reviews-vm']);
    assert.equal(byWorkload['reviews-v3']!['value'], '2');
    assert.equal(byWorkload['reviews-v3']!['destination_version'], 'v3');
    assert.equal(byWorkload['reviews-v3']!['destination_workload_namespace'], 'bookinfo');
    assert.equal(byWorkload['reviews-vm']!['destination_workload_namespace'], 'vms');
  });

  it('destination_cluster is the CLUSTER_ID the answer names (unknown without one); the endpoint\'s is Kubernetes', async () => {
    const m = new Metrics(IDENTITY, false);
    const east = peerWorkloadFromHeader(encodePeerMetadata({ NAME: 'p', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'ratings-v1', CLUSTER_ID: 'east', LABELS: {} }))!;
    const none = peerWorkloadFromHeader(encodePeerMetadata({ NAME: 'p', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'ratings-v1', LABELS: {} }))!;
    m.observeHttp({ ...base, upstreamPeer: east });
    m.observeHttp({ ...base, upstreamPeer: none });
    m.observeHttp({ ...base, endpoint: { labels: {}, workload: { name: 'ratings-v1', namespace: 'bookinfo' } } });
    const clusters = (await series(m)).map((x) => x['destination_cluster']).sort();
    assert.deepEqual(clusters, ['Kubernetes', 'east', 'unknown'], 'three series, told apart by the cluster');
  });

  it('over TLS: source_principal ours, destination_principal and its namespace the upstream\'s; the policy stays unknown', async () => {
    const m = new Metrics(IDENTITY, false);
    m.observeHttp({ ...base, upstreamIdentities: { localUriSans: [SLEEP], peerUriSans: [EGRESS, 'spiffe://x/ns/y/sa/z'] } });
    m.observeHttp({ ...base, upstreamIdentities: { localUriSans: [], peerUriSans: [EGRESS] } }); // no client certificate (SIMPLE)
    m.observeHttp(base);
    const s = await series(m);
    assert.equal(s.length, 3);
    const mtls = s.find((x) => x['source_principal'] === SLEEP)!;
    assert.equal(mtls['destination_principal'], EGRESS);
    assert.equal(mtls['destination_workload_namespace'], 'istio-system');
    assert.equal(mtls['connection_security_policy'], 'unknown', 'the client side does not tell (Istio)');
    assert.equal(mtls['reporter'], 'source');
    const simple = s.find((x) => x['source_principal'] === 'unknown' && x['destination_principal'] === EGRESS);
    assert.ok(simple);
    const plain = s.find((x) => x['destination_principal'] === 'unknown')!;
    assert.equal(plain['destination_workload_namespace'], 'unknown');
  });

  it('a sidecar\'s inbound side over mesh mTLS: the caller\'s principal and namespace, ours, and mutual_tls', async () => {
    const m = new Metrics(IDENTITY, false);
    const inbound = { ...base, destination: { host: 'inbound|9080||' }, inbound: true };
    m.observeHttp({ ...inbound, downstreamIdentities: { localUriSans: [EGRESS], peerUriSans: [SLEEP] } });
    m.observeHttp(inbound);
    // Upstream identities never name an inbound request's peers.
    m.observeHttp({ ...inbound, upstreamIdentities: { localUriSans: ['spiffe://x/ns/a/sa/b'], peerUriSans: ['spiffe://x/ns/c/sa/d'] } });
    const s = await series(m);
    const mtls = s.filter((x) => x['connection_security_policy'] === 'mutual_tls');
    assert.equal(mtls.length, 1);
    assert.equal(mtls[0]!['reporter'], 'destination');
    assert.equal(mtls[0]!['source_principal'], SLEEP);
    assert.equal(mtls[0]!['source_workload_namespace'], 'default');
    assert.equal(mtls[0]!['destination_principal'], EGRESS);
    const plain = s.filter((x) => x['connection_security_policy'] === 'none');
    assert.equal(plain.length, 1, 'the two plaintext observations are one series');
    assert.equal(plain[0]!['value'], '2');
    assert.equal(plain[0]!['source_principal'], 'unknown');
  });

  it('TCP over TLS: the same principals', async () => {
    const m = new Metrics(IDENTITY, false);
    const t = m.tcpSeries({ host: 'db.example.com' }, '-', false, undefined, { localUriSans: [SLEEP], peerUriSans: [EGRESS] });
    t.opened += 1;
    const [s] = await series(m, 'istio_tcp_connections_opened_total');
    assert.equal(s!['source_principal'], SLEEP);
    assert.equal(s!['destination_principal'], EGRESS);
  });

  it('%UPSTREAM_PEER_URI_SAN% and %UPSTREAM_LOCAL_URI_SAN% (comma-joined, - without TLS)', () => {
    const rec: AccessRecord = { startTime: 0, responseCode: 200, responseFlags: [], bytesReceived: 0, bytesSent: 0, durationMs: 1 };
    const f = compileTextFormat('%UPSTREAM_PEER_URI_SAN% %UPSTREAM_LOCAL_URI_SAN%\n');
    assert.equal(f({ ...rec, upstreamIdentities: { localUriSans: [SLEEP], peerUriSans: [EGRESS, 'spiffe://b'] } }), `${EGRESS},spiffe://b ${SLEEP}\n`);
    assert.equal(f(rec), '- -\n');
  });
});
