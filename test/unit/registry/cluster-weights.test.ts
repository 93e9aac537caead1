// Endpoint weights in the load balancers (ServiceEntry / WorkloadEntry `weight`), and the
// consistent-hash ring sized as Envoy sizes it (minimumRingSize, capped, by the weights' ratio).

import assert from 'node:assert/strict';
import { Cluster, buildRing, hash32, type Endpoint } from '../../../src/registry/cluster';
import { clusterDef, seeded } from '../../helpers/cluster';

const def = clusterDef;
const weighted = (...weights: number[]) => weights.map((weight, i) => ({ address: `10.0.0.${i + 1}`, port: 80, labels: {}, weight }));
function count(c: Cluster, n: number, pick: (i: number) => string | undefined = () => c.pick()?.address): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const a = pick(i) ?? 'none';
    out.set(a, (out.get(a) ?? 0) + 1);
  }
  return out;
}

describe('endpoint weights', () => {
  it('ROUND_ROBIN with weights 9:1 is a weighted round robin: exactly 9 in 10, interleaved', () => {
    const c = new Cluster(def('ROUND_ROBIN'), seeded(5));
    c.setEndpoints(weighted(9, 1));
    const picks = Array.from({ length: 1000 }, () => c.pick()!.address);
    const light = picks.filter((a) => a === '10.0.0.2').length;
    assert.ok(light >= 99 && light <= 101, `weight 1 of 10 got ${light} of 1000`);
    // An EDF schedule spreads the light endpoint's turns: one in every run of 10 consecutive picks.
    for (let i = 0; i + 10 <= picks.length; i += 10) {
      const n = picks.slice(i, i + 10).filter((a) => a === '10.0.0.2').length;
      assert.ok(n >= 0 && n <= 2, `picks ${i}..${i + 9}: ${n} light`);
    }
  });

  it('ROUND_ROBIN with equal weights stays a plain rotation', () => {
    const c = new Cluster(def('ROUND_ROBIN'), seeded(5));
    c.setEndpoints(weighted(3, 3, 3));
    assert.deepEqual(Array.from({ length: 6 }, () => c.pick()!.address), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2', '10.0.0.3']);
  });

  it('LEAST_REQUEST with weights 9:1 and idle endpoints: 90 % +- 2 % over 10000 picks', () => {
    const c = new Cluster(def('LEAST_REQUEST'), seeded(9));
    c.setEndpoints(weighted(9, 1));
    const heavy = count(c, 10_000).get('10.0.0.1') ?? 0;
    assert.ok(heavy >= 8800 && heavy <= 9200, `weight 9 of 10 got ${heavy} of 10000`);
  });

  it('LEAST_REQUEST with unequal weights divides each weight by active requests + 1 (9 with 8 active weighs as 1)', () => {
    const c = new Cluster(def('LEAST_REQUEST'), seeded(13));
    c.setEndpoints(weighted(9, 1));
    c.endpoints[0]!.active = 8;
    const heavy = count(c, 10_000).get('10.0.0.1') ?? 0;
    assert.ok(heavy >= 4500 && heavy <= 5500, `9/(8+1) against 1/(0+1) got ${heavy} of 10000`);
  });

  it('a retry avoids the endpoint it tried, however heavy', () => {
    for (const lb of ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM'] as const) {
      const c = new Cluster(def(lb), seeded(17));
      c.setEndpoints(weighted(99, 1));
      const tried = new Set([c.endpoints[0]!]);
      for (let i = 0; i < 200; i++) assert.equal(c.pick(tried)!.address, '10.0.0.2', lb);
    }
  });

  it("RANDOM ignores weights, as Envoy's random load balancer does (50 % +- 3 % over 10000 picks)", () => {
    const c = new Cluster(def('RANDOM'), seeded(21));
    c.setEndpoints(weighted(9, 1));
    const heavy = count(c, 10_000).get('10.0.0.1') ?? 0;
    assert.ok(heavy >= 4700 && heavy <= 5300, `got ${heavy} of 10000`);
  });

  it('a weight changed by a reload takes effect', () => {
    const c = new Cluster(def('ROUND_ROBIN'), seeded(5));
    c.setEndpoints(weighted(1, 1));
    c.pick();
    c.setEndpoints(weighted(1, 4));
    const light = count(c, 1000).get('10.0.0.1') ?? 0;
    assert.ok(light >= 198 && light <= 202, `weight 1 of 5 got ${light} of 1000`);
  });
});

describe('RING_HASH ring size', () => {
  const keys = (c: Cluster, n: number) => count(c, n, (i) => c.pick(undefined, `user-${i}`)?.address);

  it('weights 1:10000 build a ring of about 10^4 points at once and split by weight', () => {
    const c = new Cluster(def('RING_HASH', { hash: { header: 'x-user', ringSize: 1024 } }), seeded(3));
    c.setEndpoints(weighted(1, 10_000));
    const t0 = performance.now();
    c.pick(undefined, 'first');
    const ms = performance.now() - t0;
    assert.ok(ms < 400, `building the ring took ${ms.toFixed(0)} ms`);
    const counts = keys(c, 20_000);
    // The light endpoint owns one point in ~10001: its share is ~0.01 %; far more than 0.5 % is wrong.
    assert.ok((counts.get('10.0.0.1') ?? 0) <= 100, JSON.stringify([...counts]));
  });

  it("the ring's points are hash32 of `<endpoint>_<n>`, sorted, each with its owner (past 10, 100, 1000 points)", () => {
    const eps = [{ key: '10.0.0.1|80', weight: 1 }, { key: '[fd00::2]|8080', weight: 3 }] as unknown as Endpoint[];
    const ring = buildRing(eps, 1500);
    const want = eps.flatMap((e, i) => Array.from({ length: i === 0 ? 375 : 1125 }, (_, j) => ({ h: hash32(`${e.key}_${j}`), i })))
      .sort((a, b) => a.h - b.h || a.i - b.i);
    assert.equal(ring.points.length, want.length);
    assert.deepEqual([...ring.points], want.map((w) => w.h));
    assert.deepEqual([...ring.owners], want.map((w) => w.i));
  });

  it('weights 1:3 split the keys 25 % : 75 % (+- 5 %)', () => {
    const c = new Cluster(def('RING_HASH', { hash: { header: 'x-user', ringSize: 1024 } }), seeded(3));
    c.setEndpoints(weighted(1, 3));
    const light = keys(c, 20_000).get('10.0.0.1') ?? 0;
    assert.ok(light >= 4000 && light <= 6000, `weight 1 of 4 got ${light} of 20000 keys`);
  });

  it('extreme weights stay within the maximum ring size instead of growing with the weight', () => {
    const c = new Cluster(def('RING_HASH', { hash: { header: 'x-user', ringSize: 1024 } }), seeded(3));
    c.setEndpoints(weighted(1, 200_000, 200_000));
    const t0 = performance.now();
    c.pick(undefined, 'first');
    const ms = performance.now() - t0;
    assert.ok(ms < 3000, `building the ring took ${ms.toFixed(0)} ms`);
    const counts = keys(c, 20_000);
    const b = counts.get('10.0.0.2') ?? 0;
    assert.ok(b >= 8000 && b <= 12000 && (counts.get('10.0.0.1') ?? 0) <= 100, JSON.stringify([...counts]));
  });
});
