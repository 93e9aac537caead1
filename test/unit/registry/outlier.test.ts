// Outlier detection over time, with an injected clock: ejection time capped at Envoy's
// max_ejection_time and its multiplier decaying while the endpoint is healthy; the ejections_active
// gauge and an endpoint's ejection across endpoint updates (reloads, DNS refreshes).

import assert from 'node:assert/strict';
import { Cluster } from '../../../src/registry/cluster';
import type { ClusterDef, OutlierPolicy } from '../../../src/config/snapshot';

const SECOND = 1000;

function cluster(outlier: Partial<OutlierPolicy>, clock: { now: number }): Cluster {
  const o: OutlierPolicy = {
    consecutive5xx: 1, consecutiveGateway: 0, consecutiveLocalOrigin: 0, splitLocalOrigin: false,
    intervalMs: 10 * SECOND, baseEjectionMs: 60 * SECOND, maxEjectionPercent: 100, minHealthPercent: 0, ...outlier,
  };
  const def: ClusterDef = {
    name: 'c', host: 'h', port: 80, service: { host: 'h', name: 'h', namespace: 'default' }, protocol: 'HTTP', resolution: 'STATIC', lb: 'ROUND_ROBIN',
    connectTimeoutMs: 1000, endpoints: [], policy: {}, outlier: o,
    breaker: { maxConnections: 4294967295, maxPendingRequests: 4294967295, maxRequests: 4294967295, maxRetries: 4294967295, maxRequestsPerConnection: 0, idleTimeoutMs: 3_600_000 },
  };
  return new Cluster(def, Math.random, () => clock.now);
}
const eps = (...labels: string[]) => labels.map((v, i) => ({ address: `10.0.0.${i + 1}`, port: 80, labels: { v }, weight: 1 }));

describe('outlier detection over time', () => {
  it('ejection time grows by baseEjectionTime per ejection up to max_ejection_time (300 s), no further', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({}, clock);
    c.setEndpoints(eps('a', 'b'));
    const a = c.endpoints[0]!;
    const durations: number[] = [];
    for (let i = 0; i < 8; i++) {
      c.recordOutcome(a, '5xx');
      assert.equal(c.isEjected(a), true);
      durations.push((a.ejectedUntil - clock.now) / SECOND);
      clock.now = a.ejectedUntil; // back, and failing again at once: no healthy interval in between
    }
    assert.deepEqual(durations, [60, 120, 180, 240, 300, 300, 300, 300]);
  });

  it('a base ejection time above 300 s is the cap itself', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({ baseEjectionMs: 600 * SECOND }, clock);
    c.setEndpoints(eps('a', 'b'));
    const a = c.endpoints[0]!;
    const durations: number[] = [];
    for (let i = 0; i < 3; i++) {
      c.recordOutcome(a, '5xx');
      durations.push((a.ejectedUntil - clock.now) / SECOND);
      clock.now = a.ejectedUntil;
    }
    assert.deepEqual(durations, [600, 600, 600]);
  });

  it('each detection interval spent healthy takes one off the multiplier', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({}, clock);
    c.setEndpoints(eps('a', 'b'));
    const a = c.endpoints[0]!;
    for (let i = 0; i < 3; i++) {
      c.recordOutcome(a, '5xx');
      clock.now = a.ejectedUntil;
    }
    // Ejected 3 times in a row (60, 120, 180 s); now healthy for two intervals (20 s) and a bit.
    assert.equal(c.isEjected(a), false);
    clock.now += 2 * 10 * SECOND + 500;
    c.recordOutcome(a, '5xx');
    assert.equal((a.ejectedUntil - clock.now) / SECOND, 120, 'multiplier 3 - 2 + 1 = 2');
    // Healthy long enough, the multiplier is back to nothing: the next ejection is the base time.
    clock.now = a.ejectedUntil + 3600 * SECOND;
    c.recordOutcome(a, '5xx');
    assert.equal((a.ejectedUntil - clock.now) / SECOND, 60);
  });
});

describe('outlier detection across endpoint updates', () => {
  it('an ejected endpoint that leaves no longer counts in ejections_active', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({}, clock);
    c.setEndpoints(eps('a', 'b', 'c'));
    c.recordOutcome(c.endpoints[0]!, '5xx');
    assert.equal(c.stats.get('outlier_detection.ejections_active'), 1);
    c.setEndpoints(eps('a', 'b', 'c').slice(1).map((e, i) => ({ ...e, address: `10.0.0.${i + 2}` })));
    assert.equal(c.endpoints.length, 2);
    assert.equal(c.stats.get('outlier_detection.ejections_active'), 0);
    clock.now += 3600 * SECOND;
    for (const e of c.endpoints) c.isEjected(e);
    assert.equal(c.stats.get('outlier_detection.ejections_active'), 0, 'and its return later takes nothing off');
  });

  it('an endpoint removed while its request ran is not ejected by that request\'s failure', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({}, clock);
    c.setEndpoints(eps('a', 'b'));
    const gone = c.endpoints[0]!;
    c.setEndpoints([{ address: '10.0.0.2', port: 80, labels: { v: 'b' }, weight: 1 }]);
    c.recordOutcome(gone, '5xx');
    assert.equal(c.stats.get('outlier_detection.ejections_active'), 0);
    assert.equal(c.stats.get('outlier_detection.ejections_enforced_total'), 0);
  });

  it('an ejected endpoint updated in place (new labels or weight) stays ejected, and the gauge stays right', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({}, clock);
    c.setEndpoints(eps('a', 'b'));
    c.recordOutcome(c.endpoints[0]!, '5xx');
    const until = c.endpoints[0]!.ejectedUntil;
    c.setEndpoints(eps('a2', 'b'));
    assert.equal(c.endpoints[0]!.labels['v'], 'a2');
    assert.equal(c.isEjected(c.endpoints[0]!), true, 'new labels: still ejected');
    c.setEndpoints(eps('a2', 'b').map((e) => ({ ...e, weight: 5 })));
    assert.equal(c.isEjected(c.endpoints[0]!), true, 'new weight: still ejected');
    assert.equal(c.endpoints[0]!.ejectedUntil, until);
    assert.equal(c.stats.get('outlier_detection.ejections_active'), 1);
    for (let i = 0; i < 10; i++) assert.equal(c.pick()!.address, '10.0.0.2');
    clock.now = until;
    assert.equal(c.isEjected(c.endpoints[0]!), false);
    assert.equal(c.stats.get('outlier_detection.ejections_active'), 0);
  });

  it('a weighted schedule leaves out the ejected endpoint and takes it back, with its weight, on return', () => {
    const clock = { now: 1_000_000 };
    const c = cluster({ maxEjectionPercent: 50 }, clock);
    c.setEndpoints([9, 1, 1].map((weight, i) => ({ address: `10.0.0.${i + 1}`, port: 80, labels: {}, weight })));
    c.recordOutcome(c.endpoints[0]!, '5xx');
    const picks = (n: number) => {
      const counts = new Map<string, number>();
      for (let i = 0; i < n; i++) { const a = c.pick()!.address; counts.set(a, (counts.get(a) ?? 0) + 1); }
      return counts;
    };
    assert.deepEqual([...picks(100)].sort(), [['10.0.0.2', 50], ['10.0.0.3', 50]]);
    clock.now += 60 * SECOND;
    const back = picks(1100);
    assert.ok(Math.abs((back.get('10.0.0.1') ?? 0) - 900) <= 2, JSON.stringify([...back]));
  });
});
