import assert from 'node:assert/strict';
import { decodePeerMetadata, encodePeerMetadata, ownPeerHeaders, peerWorkloadFromHeader, peerWorkloadOf } from '../../../src/telemetry/peer-metadata';
import { mulberry32 } from '../../helpers/random';

/** Protobuf by hand: a length-delimited field (lengths under 128 here). */
const ld = (field: number, bytes: number[]): number[] => [(field << 3) | 2, bytes.length, ...bytes];
const str = (s: string): number[] => [...Buffer.from(s)];
/** One Struct entry: key -> Value{string_value} or Value{struct_value}. */
const entry = (key: string, value: number[]): number[] => ld(1, [...ld(1, str(key)), ...ld(2, value)]);

describe('Istio peer metadata (x-envoy-peer-metadata)', () => {
  it('reads a google.protobuf.Struct built by hand from the wire format (strings and a nested LABELS struct)', () => {
    const labels = [...entry('app', ld(3, str('ratings'))), ...entry('version', ld(3, str('v1')))];
    const bytes = [...entry('LABELS', ld(5, labels)), ...entry('NAMESPACE', ld(3, str('bookinfo'))), ...entry('WORKLOAD_NAME', ld(3, str('ratings-v1')))];
    const value = Buffer.from(bytes).toString('base64');
    assert.deepEqual(decodePeerMetadata(value), { LABELS: { app: 'ratings', version: 'v1' }, NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'ratings-v1' });
    // Written the same way: map entries sorted by key, as protobuf's deterministic serialization.
    assert.equal(encodePeerMetadata({ WORKLOAD_NAME: 'ratings-v1', NAMESPACE: 'bookinfo', LABELS: { version: 'v1', app: 'ratings' } }), value);
    assert.deepEqual(peerWorkloadOf(decodePeerMetadata(value)), { workload: 'ratings-v1', namespace: 'bookinfo', labels: { app: 'ratings', version: 'v1' } });
  });

  it('skips the value kinds the exchange does not use (numbers, booleans, lists) and keeps the rest', () => {
    const number = [(2 << 3) | 1, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]; // Value.number_value = 1.0 (fixed64)
    const bool = [(4 << 3) | 0, 1]; // Value.bool_value = true (varint)
    const list = ld(6, ld(1, ld(3, str('x')))); // Value.list_value
    const bytes = [...entry('N', number), ...entry('B', bool), ...entry('L', list), ...entry('NAME', ld(3, str('p')))];
    assert.deepEqual(decodePeerMetadata(Buffer.from(bytes).toString('base64')), { NAME: 'p' });
  });

  it("this proxy's headers: Istio's fields, and a node id router~IP~pod.ns~ns.svc.cluster.local", () => {
    const h = ownPeerHeaders({ sidecar: false, ip: '10.0.0.7', name: 'gw-abc', namespace: 'istio-system', workload: 'istio-ingressgateway', labels: { istio: 'ingressgateway' } });
    assert.equal(h.id, 'router~10.0.0.7~gw-abc.istio-system~istio-system.svc.cluster.local');
    assert.deepEqual(decodePeerMetadata(h.metadata), {
      CLUSTER_ID: 'Kubernetes', LABELS: { istio: 'ingressgateway' }, MESH_ID: 'cluster.local', NAME: 'gw-abc', NAMESPACE: 'istio-system', WORKLOAD_NAME: 'istio-ingressgateway',
    });
    assert.match(ownPeerHeaders({ sidecar: true, ip: '10.0.0.8', name: 'p', namespace: 'ns', workload: 'w', labels: {} }).id, /^sidecar~/);
  });

  it('no workload without a name and a namespace; the decoded identity is remembered per header value', () => {
    assert.equal(peerWorkloadOf(decodePeerMetadata(encodePeerMetadata({ NAMESPACE: 'ns' }))), undefined);
    assert.equal(peerWorkloadOf(decodePeerMetadata(encodePeerMetadata({ NAME: 'pod-1', NAMESPACE: 'ns' })))?.workload, 'pod-1', 'NAME when WORKLOAD_NAME is absent');
    const v = encodePeerMetadata({ WORKLOAD_NAME: 'w', NAMESPACE: 'ns' });
    assert.equal(peerWorkloadFromHeader(v), peerWorkloadFromHeader(v), 'the same object: metrics key their label sets on it');
    assert.equal(peerWorkloadFromHeader(['a', 'b']), undefined);
  });

  it('keys such as __proto__ and constructor are plain data', () => {
    const md = decodePeerMetadata(Buffer.from([...entry('__proto__', ld(3, str('x'))), ...entry('LABELS', ld(5, entry('constructor', ld(3, str('y')))))]).toString('base64'));
    assert.ok(md);
    assert.equal(Object.getPrototypeOf(md), Object.prototype);
    assert.equal(Object.getOwnPropertyDescriptor(md, '__proto__')?.value, 'x');
    assert.equal((md['LABELS'] as Record<string, string>)['constructor'], 'y');
    assert.equal(({} as Record<string, unknown>)['x'], undefined, 'no prototype was touched');
  });

  it('malformed values are no metadata, never an exception (4000 random, truncated and mutated inputs)', () => {
    const rand = mulberry32(0x5eed);
    const good = Buffer.from(encodePeerMetadata({ WORKLOAD_NAME: 'reviews-v3', NAMESPACE: 'default', LABELS: { app: 'reviews', version: 'v3' } }), 'base64');
    const inputs: string[] = ['', '!!!', 'a'.repeat(20_000), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).toString('base64')];
    // Structs nested far deeper than LABELS: read only two levels down.
    let deep = ld(3, str('leaf'));
    for (let i = 0; i < 40; i++) deep = ld(5, entry('k', deep));
    inputs.push(Buffer.from(entry('D', deep)).toString('base64'));
    for (let i = 0; i < 4000; i++) {
      const b = Buffer.from(good);
      const kind = i % 3;
      if (kind === 0) inputs.push(b.subarray(0, Math.floor(rand() * b.length)).toString('base64'));
      else if (kind === 1) {
        for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
        inputs.push(b.toString('base64'));
      } else inputs.push(Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256))).toString('base64'));
    }
    let decoded = 0;
    for (const v of inputs) {
      const md = decodePeerMetadata(v);
      if (md) decoded += 1;
      peerWorkloadOf(md); // never throws either
    }
    assert.ok(decoded > 100 && decoded < inputs.length, `${decoded} of ${inputs.length} decoded: some mutations stay valid, most truncations do not`);
  });
});
