// A cluster's live state: its resolved endpoints, load-balancer cursor, and Envoy-style counters.
// Built from a ClusterDef (plain data); updated in place when only its endpoints change, so
// counters and in-flight accounting survive reloads and DNS refreshes.

import type { ClusterDef, LbPolicy } from '../config/snapshot';
import type { Dict } from '../config/types';

export class Endpoint {
  readonly key: string;
  /** Requests in flight on this endpoint (LEAST_REQUEST reads it). */
  active = 0;
  rqTotal = 0;
  rqError = 0;
  /** Outlier detection: consecutive failures of each kind, and the ejection state. */
  consecutive5xx = 0;
  consecutiveGateway = 0;
  consecutiveLocal = 0;
  ejections = 0;
  ejectedUntil = 0;
  constructor(
    readonly address: string,
    readonly port: number,
    readonly labels: Dict<string>,
    readonly weight: number,
  ) {
    this.key = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  }

  /** `ip:port` as Envoy logs %UPSTREAM_HOST%. */
  get hostPort(): string {
    return this.key;
  }
}

/** Counters named as Envoy's `cluster.<name>.<stat>` (the part after the cluster name). */
export class Counters {
  private readonly values = new Map<string, number>();
  inc(name: string, by = 1): void {
    this.values.set(name, (this.values.get(name) ?? 0) + by);
  }
  set(name: string, value: number): void {
    this.values.set(name, value);
  }
  get(name: string): number {
    return this.values.get(name) ?? 0;
  }
  entries(): [string, number][] {
    return [...this.values].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }
}

export type Random = () => number;

/** 32-bit FNV-1a: the ring's hash, for keys and points alike. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Finalise (murmur3 fmix) so that similar keys spread over the ring.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A consistent-hash ring: sorted points, each owned by an endpoint. */
interface Ring {
  readonly points: Uint32Array;
  readonly owners: Endpoint[];
}

/**
 * Points per endpoint are fixed by the ring size alone (not by how many endpoints there are), so
 * an endpoint leaving moves only the keys it owned.
 */
function buildRing(endpoints: readonly Endpoint[], size: number): Ring {
  const perEndpoint = Math.max(64, Math.ceil(size / 8));
  const pairs: [number, Endpoint][] = [];
  for (const e of endpoints) for (let i = 0; i < perEndpoint * Math.max(1, e.weight); i++) pairs.push([hash32(`${e.key}_${i}`), e]);
  pairs.sort((a, b) => a[0] - b[0]);
  return { points: Uint32Array.from(pairs.map((p) => p[0])), owners: pairs.map((p) => p[1]) };
}

function ringLookup(ring: Ring, h: number): Endpoint | undefined {
  const pts = ring.points;
  if (pts.length === 0) return undefined;
  let lo = 0;
  let hi = pts.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pts[mid]! < h) lo = mid + 1;
    else hi = mid;
  }
  return ring.owners[lo === pts.length ? 0 : lo];
}

/** How an upstream attempt ended, as outlier detection sorts it. */
export type AttemptOutcome = 'success' | '5xx' | 'gateway-error' | 'local-origin';

/** Admission of one upstream request by the cluster's circuit breakers. */
export type Admission = 'ok' | 'pending' | 'overflow';

/** Counters every cluster shows, as Envoy's do, even before anything happened. */
const ZERO_STATS = [
  'upstream_rq_pending_overflow', 'upstream_rq_pending_total', 'upstream_rq_pending_failure_eject', 'upstream_cx_overflow',
  'upstream_rq_retry_overflow', 'outlier_detection.ejections_active', 'outlier_detection.ejections_enforced_total',
  'outlier_detection.ejections_overflow',
];

export class Cluster {
  def: ClusterDef;
  endpoints: readonly Endpoint[] = [];
  readonly stats = new Counters();
  private rrCursor = 0;

  /** Upstream requests admitted and not yet finished (running + pending). */
  inFlight = 0;
  /** Retries in progress (connectionPool.http.maxRetries). */
  retriesActive = 0;
  /** Called when outlier detection ejects an endpoint (metrics). */
  onEject: ((e: Endpoint, reason: string) => void) | undefined;

  constructor(def: ClusterDef, private readonly random: Random = Math.random, private readonly now: () => number = Date.now) {
    this.def = def;
    for (const name of ZERO_STATS) this.stats.set(name, 0);
  }

  /** Requests that can run at once: one per connection (HTTP/1.1), connections per endpoint. */
  private capacity(): number {
    return this.def.breaker.maxConnections * Math.max(1, this.endpoints.length);
  }

  /**
   * Envoy's circuit breakers for one upstream request: beyond max_requests, or with the pending
   * queue (requests waiting for a connection) full, it overflows (503 UO); else it runs or waits.
   */
  admit(): Admission {
    const b = this.def.breaker;
    const cap = this.capacity();
    if (this.inFlight >= b.maxRequests || (this.inFlight >= cap && this.inFlight - cap >= b.maxPendingRequests)) {
      this.stats.inc('upstream_rq_pending_overflow');
      if (this.inFlight >= cap) this.stats.inc('upstream_cx_overflow');
      return 'overflow';
    }
    this.inFlight += 1;
    if (this.inFlight > cap) {
      this.stats.inc('upstream_rq_pending_total');
      return 'pending';
    }
    return 'ok';
  }

  release(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
  }

  /** May another retry start (connectionPool.http.maxRetries)? Counts it when it may. */
  admitRetry(): boolean {
    if (this.retriesActive >= this.def.breaker.maxRetries) {
      this.stats.inc('upstream_rq_retry_overflow');
      return false;
    }
    this.retriesActive += 1;
    return true;
  }

  releaseRetry(): void {
    this.retriesActive = Math.max(0, this.retriesActive - 1);
  }

  /** Gauges Envoy reports for the breakers (`/stats`), computed when asked. */
  breakerGauges(): [string, number][] {
    const b = this.def.breaker;
    const cap = this.capacity();
    const pending = Math.max(0, this.inFlight - cap);
    const out: [string, number][] = [['upstream_rq_pending_active', pending]];
    for (const priority of ['default', 'high']) {
      const open = priority === 'default';
      out.push(
        [`circuit_breakers.${priority}.cx_open`, open && this.inFlight >= cap ? 1 : 0],
        [`circuit_breakers.${priority}.cx_pool_open`, 0],
        [`circuit_breakers.${priority}.rq_pending_open`, open && pending >= b.maxPendingRequests ? 1 : 0],
        [`circuit_breakers.${priority}.rq_open`, open && this.inFlight >= b.maxRequests ? 1 : 0],
        [`circuit_breakers.${priority}.rq_retry_open`, open && this.retriesActive >= b.maxRetries ? 1 : 0],
      );
    }
    return out;
  }

  /** Is the endpoint out of the pool now? Ejections end lazily once their time has passed. */
  isEjected(e: Endpoint): boolean {
    if (e.ejectedUntil === 0) return false;
    if (this.now() < e.ejectedUntil) return true;
    e.ejectedUntil = 0;
    this.stats.inc('outlier_detection.ejections_active', -1);
    return false;
  }

  /** Outlier detection: count the attempt's outcome against its endpoint; eject at a threshold. */
  recordOutcome(e: Endpoint, outcome: AttemptOutcome): void {
    const o = this.def.outlier;
    if (!o) return;
    if (outcome === 'success') {
      e.consecutive5xx = e.consecutiveGateway = e.consecutiveLocal = 0;
      return;
    }
    // Local-origin failures (connect, reset, timeout) count as 5xx and gateway errors unless split.
    if (outcome === 'local-origin' && o.splitLocalOrigin) {
      e.consecutiveLocal += 1;
      if (o.consecutiveLocalOrigin > 0 && e.consecutiveLocal >= o.consecutiveLocalOrigin) this.eject(e, 'consecutive_local_origin_failure');
      return;
    }
    e.consecutive5xx += 1;
    if (outcome !== '5xx') e.consecutiveGateway += 1;
    if (o.consecutiveGateway > 0 && e.consecutiveGateway >= o.consecutiveGateway) this.eject(e, 'consecutive_gateway_failure');
    else if (o.consecutive5xx > 0 && e.consecutive5xx >= o.consecutive5xx) this.eject(e, 'consecutive_5xx');
  }

  private eject(e: Endpoint, reason: string): void {
    const o = this.def.outlier!;
    e.consecutive5xx = e.consecutiveGateway = e.consecutiveLocal = 0;
    if (this.isEjected(e)) return;
    this.stats.inc(`outlier_detection.ejections_detected_${reason}`);
    const ejected = this.endpoints.filter((x) => this.isEjected(x)).length;
    if ((ejected / this.endpoints.length) * 100 >= o.maxEjectionPercent) {
      this.stats.inc('outlier_detection.ejections_overflow');
      return;
    }
    e.ejections += 1;
    e.ejectedUntil = this.now() + o.baseEjectionMs * e.ejections; // grows with each ejection
    this.stats.inc('outlier_detection.ejections_active');
    this.stats.inc('outlier_detection.ejections_enforced_total');
    this.stats.inc(`outlier_detection.ejections_enforced_${reason}`);
    this.onEject?.(e, reason);
  }

  get name(): string {
    return this.def.name;
  }

  get lb(): LbPolicy {
    return this.def.lb;
  }

  /** Replace the endpoint list, keeping the live objects (and their counters) of endpoints that stay. */
  setEndpoints(next: readonly { address: string; port: number; labels: Dict<string>; weight: number }[]): void {
    const old = new Map(this.endpoints.map((e) => [e.key, e]));
    this.endpoints = next.map((n) => {
      const e = new Endpoint(n.address, n.port, n.labels, n.weight);
      const kept = old.get(e.key);
      return kept && JSON.stringify(kept.labels) === JSON.stringify(n.labels) && kept.weight === n.weight ? kept : e;
    });
    this.stats.set('membership_total', this.endpoints.length);
    this.stats.set('membership_healthy', this.endpoints.length);
  }

  /**
   * Choose an endpoint, avoiding those already tried when another exists (Envoy's previous-hosts
   * retry predicate). LEAST_REQUEST is "power of two choices"; ROUND_ROBIN a cursor; RANDOM uniform.
   */
  private ring: { readonly of: readonly Endpoint[] | string; readonly ring: Ring } | undefined;

  pick(tried?: ReadonlySet<Endpoint>, hashKey?: string): Endpoint | undefined {
    let list = this.endpoints;
    if (list.length === 0) return undefined;
    if (this.def.outlier) {
      const healthy = list.filter((e) => !this.isEjected(e));
      // Below minHealthPercent healthy, ejections are ignored (Envoy's panic threshold, as Istio sets it).
      if ((healthy.length / list.length) * 100 >= this.def.outlier.minHealthPercent) list = healthy;
      if (list.length === 0) return undefined;
    }
    if (this.def.lb === 'RING_HASH' && hashKey !== undefined && list.length > 1) {
      // Consistent hash: the same key reaches the same endpoint while the set stays; Istio sets no
      // previous-hosts predicate with it, so a retry goes to the same endpoint too.
      const of = list === this.endpoints ? list : list.map((e) => e.key).join(',');
      if (this.ring?.of !== of) this.ring = { of, ring: buildRing(list, this.def.hash?.ringSize ?? 1024) };
      return ringLookup(this.ring.ring, hash32(hashKey));
    }
    if (tried && tried.size > 0 && list.length > 1) {
      const fresh = list.filter((e) => !tried.has(e));
      if (fresh.length > 0) list = fresh;
    }
    if (list.length === 1) return list[0];
    switch (this.def.lb) {
      case 'ROUND_ROBIN': {
        const e = list[this.rrCursor % list.length]!;
        this.rrCursor = (this.rrCursor + 1) % 1_000_000_007;
        return e;
      }
      case 'RANDOM':
        return list[Math.floor(this.random() * list.length)];
      default: {
        const i = Math.floor(this.random() * list.length);
        let j = Math.floor(this.random() * (list.length - 1));
        if (j >= i) j += 1;
        const a = list[i]!;
        const b = list[j]!;
        return b.active < a.active ? b : a;
      }
    }
  }
}
