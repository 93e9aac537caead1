// A cluster's live policies, with a fixed random source and clock: load balancers' distributions,
// the consistent-hash ring, circuit-breaker admission, outlier ejection and return.

import assert from 'node:assert/strict';
import { Cluster } from '../../../src/registry/cluster';
import { clusterDef, seeded } from '../../helpers/cluster';
import type { OutlierPolicy } from '../../../src/config/snapshot';
import { hashKeyOf } from '../../../src/gateway/http/policy';

const def = clusterDef;
const eps = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `10.0.0.${i + 1}`, port: 80, labels: {}, weight: 1 }));

describe('cluster policies', () => {
  it('RANDOM spreads 4000 picks evenly over 4 endpoints (each 1000 +- 150)', () => {
    const c = new Cluster(def('RANDOM'), seeded(7));
    c.setEndpoints(eps(4));
    const counts = new Map<string, number>();
    for (let i = 0; i < 4000; i++) { const a = c.pick()!.address; counts.set(a, (counts.get(a) ?? 0) + 1); }
    for (const n of counts.values()) assert.ok(n >= 850 && n <= 1150, JSON.stringify([...counts]));
  });

  it('LEAST_REQUEST (two random choices) avoids the busy endpoint', () => {
    const c = new Cluster(def('LEAST_REQUEST'), seeded(11));
    c.setEndpoints(eps(4));
    c.endpoints[0]!.active = 50;
    let busy = 0;
    for (let i = 0; i < 4000; i++) if (c.pick() === c.endpoints[0]) busy += 1;
    assert.equal(busy, 0, 'it is never the lesser of two');
  });

  it("RING_HASH: a key always reaches the same endpoint, keys spread, and removing an endpoint moves its keys and few others (Envoy's ring sizing)", () => {
    const c = new Cluster(def('RING_HASH', { hash: { header: 'x-user', ringSize: 1024 } }), seeded(3));
    c.setEndpoints(eps(4));
    const owner = new Map<string, string>();
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const key = `user-${i}`;
      const a = c.pick(undefined, key)!.address;
      assert.equal(c.pick(new Set([c.endpoints[0]!]), key)!.address, a, 'retries keep the key on its endpoint');
      owner.set(key, a);
      counts.set(a, (counts.get(a) ?? 0) + 1);
    }
    for (const n of counts.values()) assert.ok(n >= 300 && n <= 700, JSON.stringify([...counts]));
    c.setEndpoints(eps(3)); // 10.0.0.4 leaves
    // As Envoy sizes the ring (at least minimumRingSize points over the endpoints there are), the
    // three left get more points each, which take some keys from one another too (~13 % here).
    let stayed = 0;
    let others = 0;
    for (const [key, a] of owner) {
      const now = c.pick(undefined, key)!.address;
      if (a === '10.0.0.4') assert.notEqual(now, '10.0.0.4', key);
      else {
        others += 1;
        if (now === a) stayed += 1;
      }
    }
    assert.ok(stayed / others >= 0.8, `${stayed} of ${others} keys stayed`);
  });

  it('hash keys: header, cookie (made when absent with a ttl), source IP, query parameter', () => {
    const fresh = () => 'abc123';
    assert.deepEqual(hashKeyOf({ header: 'x-user', ringSize: 1024 }, { 'x-user': 'jason' }, '10.1.1.1', '/', fresh), { key: 'jason' });
    assert.deepEqual(hashKeyOf({ header: 'x-user', ringSize: 1024 }, {}, '10.1.1.1', '/', fresh), {});
    assert.deepEqual(hashKeyOf({ cookie: { name: 'user', ttlSeconds: 60 }, ringSize: 1024 }, { cookie: 'a=1; user="u-9"' }, '', '/', fresh), { key: 'u-9' });
    assert.deepEqual(hashKeyOf({ cookie: { name: 'user', path: '/', ttlSeconds: 60 }, ringSize: 1024 }, {}, '', '/', fresh), { key: 'abc123', setCookie: 'user="abc123"; Max-Age=60; Path=/; HttpOnly' });
    assert.deepEqual(hashKeyOf({ cookie: { name: 'user' }, ringSize: 1024 }, {}, '', '/', fresh), {});
    assert.deepEqual(hashKeyOf({ sourceIp: true, ringSize: 1024 }, {}, '10.1.1.1', '/', fresh), { key: '10.1.1.1' });
    assert.deepEqual(hashKeyOf({ queryParameter: 'id', ringSize: 1024 }, {}, '', '/p?x=1&id=42', fresh), { key: '42' });
  });

  it('circuit breakers: running, then pending, then overflow; released requests make room', () => {
    const c = new Cluster(def('ROUND_ROBIN', { breaker: { maxConnections: 1, maxPendingRequests: 1, maxRequests: 4294967295, maxRetries: 1, maxRequestsPerConnection: 1, idleTimeoutMs: 1000 } }));
    c.setEndpoints(eps(1));
    assert.deepEqual([c.admit(), c.admit(), c.admit()], ['ok', 'pending', 'overflow']);
    assert.equal(c.stats.get('upstream_rq_pending_overflow'), 1);
    assert.equal(c.stats.get('upstream_rq_pending_total'), 1);
    assert.equal(new Map(c.breakerGauges()).get('upstream_rq_pending_active'), 1);
    assert.equal(new Map(c.breakerGauges()).get('circuit_breakers.default.rq_pending_open'), 1);
    c.release();
    assert.equal(c.admit(), 'pending');
    assert.equal(c.admitRetry(), true);
    assert.equal(c.admitRetry(), false);
    assert.equal(c.stats.get('upstream_rq_retry_overflow'), 1);
  });

  it('outlier detection: ejects at the threshold, honours maxEjectionPercent, returns after a growing time', () => {
    let now = 1_000_000;
    const outlier: OutlierPolicy = { consecutive5xx: 2, consecutiveGateway: 0, consecutiveLocalOrigin: 0, splitLocalOrigin: false, intervalMs: 1000, baseEjectionMs: 1000, maxEjectionPercent: 30, minHealthPercent: 0 };
    const c = new Cluster(def('ROUND_ROBIN', { outlier }), Math.random, () => now);
    c.setEndpoints(eps(3));
    const [a, b] = c.endpoints;
    c.recordOutcome(a!, '5xx');
    c.recordOutcome(a!, 'success');
    c.recordOutcome(a!, '5xx');
    assert.equal(c.isEjected(a!), false, 'a success in between resets the count');
    c.recordOutcome(a!, 'local-origin');
    assert.equal(c.isEjected(a!), true, 'local-origin failures count as 5xx unless split');
    c.recordOutcome(b!, 'gateway-error');
    c.recordOutcome(b!, '5xx');
    assert.equal(c.isEjected(b!), false, 'with one of three out (33 %), maxEjectionPercent 30 allows no other');
    assert.equal(c.stats.get('outlier_detection.ejections_overflow'), 1);
    for (let i = 0; i < 6; i++) assert.notEqual(c.pick(), a, 'an ejected endpoint gets no traffic');
    now += 1001;
    assert.equal(c.isEjected(a!), false, 'back after baseEjectionTime');
    c.recordOutcome(a!, '5xx');
    c.recordOutcome(a!, '5xx');
    now += 1500;
    assert.equal(c.isEjected(a!), true, 'the second ejection lasts twice as long');
    now += 600;
    assert.equal(c.isEjected(a!), false);
    assert.equal(c.stats.get('outlier_detection.ejections_enforced_total'), 2);
  });
});
