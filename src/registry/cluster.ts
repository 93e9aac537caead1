// A cluster's live state: its resolved endpoints, load-balancer cursor, and Envoy-style counters.
// Built from a ClusterDef (plain data); updated in place when only its endpoints change, so
// counters and in-flight accounting survive reloads and DNS refreshes.

import type { ClusterDef, EndpointAddress, LbPolicy } from '../config/snapshot';
import type { WorkloadRef } from '../serviceentry/services';
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
  /**
   * Envoy's ejection-time multiplier: one more for each ejection (while base x multiplier stays
   * within max_ejection_time), one less for each detection interval the endpoint spends healthy.
   */
  ejections = 0;
  ejectedUntil = 0;
  /** When the endpoint last came back from an ejection (the multiplier's decay counts from there). */
  healthySince = 0;
  /**
   * Labels and weight change in place when a reload or DNS refresh keeps the endpoint (same
   * address and port), as Envoy updates a host's metadata and weight: its counters and ejection stay.
   */
  constructor(
    readonly address: string,
    readonly port: number,
    public labels: Dict<string>,
    public weight: number,
    /** The Pod's controller or WorkloadEntry behind it (metrics' destination_workload), when known. */
    public workload?: WorkloadRef,
  ) {
    this.key = endpointKey(address, port);
  }

  /** `ip:port` as Envoy logs %UPSTREAM_HOST%. */
  get hostPort(): string {
    return this.key;
  }
}

/** `ip:port`, `[v6]:port`: an endpoint's identity. */
export function endpointKey(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
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

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a over `text`'s UTF-16 code units, from state `h`. */
function fnv(h: number, text: string): number {
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}

/** murmur3's fmix, so that similar keys spread over the ring. */
function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit FNV-1a, finalised: the ring's hash, for keys and points alike. */
export function hash32(text: string): number {
  return finish(fnv(FNV_OFFSET, text));
}

/**
 * hash32(`${key}_${j}`) for j = 0 .. count-1 into `out` from `at`, without building the strings: the
 * prefix's state is computed once and each j's decimal digits continue it (a ring of millions of
 * points is built in a fraction of the time).
 */
function pointHashes(key: string, count: number, out: Uint32Array, at: number): void {
  const base = fnv(FNV_OFFSET, `${key}_`);
  const digits = [0]; // j's decimal digits, least significant first
  for (let j = 0; j < count; j++) {
    let h = base;
    for (let d = digits.length - 1; d >= 0; d--) {
      h ^= 48 + digits[d]!;
      h = Math.imul(h, FNV_PRIME);
    }
    out[at + j] = finish(h);
    let k = 0;
    while (k < digits.length && ++digits[k]! === 10) digits[k++] = 0;
    if (k === digits.length) digits.push(1);
  }
}

/** Sort `keys` ascending, carrying `values` along; stable (two 16-bit LSD radix passes). */
function radixSortPairs(keys: Uint32Array, values: Uint32Array): void {
  const n = keys.length;
  let k: Uint32Array = keys;
  let v: Uint32Array = values;
  let k2: Uint32Array = new Uint32Array(n);
  let v2: Uint32Array = new Uint32Array(n);
  const counts = new Uint32Array(65536);
  for (const shift of [0, 16]) {
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[(k[i]! >>> shift) & 0xffff]! += 1;
    let sum = 0;
    for (let b = 0; b < 65536; b++) {
      const c = counts[b]!;
      counts[b] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const dst = counts[(k[i]! >>> shift) & 0xffff]!++;
      k2[dst] = k[i]!;
      v2[dst] = v[i]!;
    }
    [k, k2] = [k2, k];
    [v, v2] = [v2, v];
  }
  // Two passes: the sorted data is back in the arrays given.
}

/** A consistent-hash ring: sorted points, each owned by an endpoint (an index into `endpoints`). */
interface Ring {
  readonly points: Uint32Array;
  readonly owners: Uint32Array;
  readonly endpoints: readonly Endpoint[];
}

/** Envoy's ring_hash maximum_ring_size default (Istio sets none). */
export const MAX_RING_SIZE = 8 * 1024 * 1024;

/** An endpoint's load-balancing weight (a weight of 0 or none counts as 1, as Envoy's minimum). */
function weightOf(e: Endpoint): number {
  return e.weight >= 1 ? e.weight : 1;
}

/**
 * Envoy's ring sizing (ring_hash_lb.cc): weights normalized to sum 1; the ring is scaled so that the
 * lightest endpoint gets a whole number of points with at least `minRingSize` points in all,
 * `scale = min(ceil(minNormalized * minRingSize) / minNormalized, maxRingSize)`, and each endpoint
 * gets about `normalizedWeight * scale` points (running sums, as Envoy, so the total is ceil(scale)).
 * The ring's size follows the weights' ratio, never their magnitude: 1:10000 makes ~10^4 points.
 */
export function buildRing(endpoints: readonly Endpoint[], minRingSize: number, maxRingSize = MAX_RING_SIZE): Ring {
  const n = endpoints.length;
  let sum = 0;
  let min = Infinity;
  for (const e of endpoints) {
    const w = weightOf(e);
    sum += w;
    if (w < min) min = w;
  }
  const minNormalized = min / sum;
  const scale = Math.min(Math.ceil(minNormalized * Math.max(1, minRingSize)) / minNormalized, maxRingSize);
  const capacity = Math.ceil(scale) + n + 1;
  const hashes = new Uint32Array(capacity);
  const owning = new Uint32Array(capacity);
  let count = 0;
  let current = 0;
  let target = 0;
  for (let i = 0; i < n; i++) {
    const e = endpoints[i]!;
    target += (scale * weightOf(e)) / sum;
    const take = Math.max(0, Math.min(Math.ceil(target - current), capacity - count));
    pointHashes(e.key, take, hashes, count);
    owning.fill(i, count, count + take);
    count += take;
    current += take;
  }
  // Sorted by hash; equal hashes keep the endpoints' order.
  const points = hashes.slice(0, count);
  const owners = owning.slice(0, count);
  radixSortPairs(points, owners);
  return { points, owners, endpoints };
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
  return ring.endpoints[ring.owners[lo === pts.length ? 0 : lo]!];
}

/**
 * Earliest-deadline-first schedule (Envoy's EdfScheduler): each endpoint's next deadline is the
 * schedule's time plus 1/weight, the earliest goes next, ties in the order they were queued. A weight
 * w endpoint is picked w times as often as a weight 1 one, interleaved.
 */
class EdfSchedule {
  private heap: { e: Endpoint; deadline: number; order: number }[] = [];
  private time = 0;
  private order = 0;

  constructor(endpoints: readonly Endpoint[], weight: (e: Endpoint) => number) {
    for (const e of endpoints) this.push(e, 1 / weight(e));
  }

  /** The next endpoint; it is queued again with the weight it has now. */
  pick(weight: (e: Endpoint) => number): Endpoint {
    const top = this.pop();
    this.time = top.deadline;
    this.push(top.e, this.time + 1 / weight(top.e));
    return top.e;
  }

  private before(a: { deadline: number; order: number }, b: { deadline: number; order: number }): boolean {
    return a.deadline < b.deadline || (a.deadline === b.deadline && a.order < b.order);
  }

  private push(e: Endpoint, deadline: number): void {
    const h = this.heap;
    const item = { e, deadline, order: this.order++ };
    let i = h.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(item, h[parent]!)) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = item;
  }

  private pop(): { e: Endpoint; deadline: number; order: number } {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const c = r < h.length && this.before(h[r]!, h[l]!) ? r : l;
        if (!this.before(h[c]!, last)) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

/** Envoy's default max_ejection_time (Istio sets none): an ejection never lasts longer, unless the base time is longer. */
export const DEFAULT_MAX_EJECTION_MS = 300_000;

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
    e.healthySince = e.ejectedUntil;
    e.ejectedUntil = 0;
    this.healthVersion += 1;
    if (this.members.has(e)) this.stats.inc('outlier_detection.ejections_active', -1);
    return false;
  }

  /** Outlier detection: count the attempt's outcome against its endpoint; eject at a threshold. */
  recordOutcome(e: Endpoint, outcome: AttemptOutcome): void {
    const o = this.def.outlier;
    // An endpoint a reload or DNS refresh removed (its request was still running) is no longer watched.
    if (!o || !this.members.has(e)) return;
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

  /**
   * Eject as Envoy does: for base_ejection_time x the multiplier, capped at max_ejection_time
   * (300 s, or the base time when that is longer). The multiplier grows by one per ejection while
   * the product stays within the cap, and shrinks by one per detection interval spent healthy.
   */
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
    const now = this.now();
    if (e.ejections > 0 && o.intervalMs > 0) {
      e.ejections = Math.max(0, e.ejections - Math.floor(Math.max(0, now - e.healthySince) / o.intervalMs));
    }
    const cap = Math.max(DEFAULT_MAX_EJECTION_MS, o.baseEjectionMs);
    if (o.baseEjectionMs * (e.ejections + 1) <= cap) e.ejections += 1;
    e.ejectedUntil = now + Math.min(o.baseEjectionMs * e.ejections, cap);
    this.healthVersion += 1;
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

  /**
   * Replace the endpoint list. An endpoint that stays (same address and port) keeps its live object,
   * with its counters, in-flight count and ejection; new labels or weight are updated in place. One
   * that leaves stops counting as ejected.
   */
  setEndpoints(next: readonly EndpointAddress[]): void {
    const old = new Map(this.endpoints.map((e) => [e.key, e]));
    this.endpoints = next.map((n) => {
      const kept = old.get(endpointKey(n.address, n.port));
      if (!kept) return new Endpoint(n.address, n.port, n.labels, n.weight, n.workload);
      kept.labels = n.labels;
      kept.weight = n.weight;
      kept.workload = n.workload;
      return kept;
    });
    this.members = new Set(this.endpoints);
    this.healthVersion += 1;
    let ejected = 0;
    for (const e of old.values()) {
      if (this.members.has(e) || e.ejectedUntil === 0) continue;
      e.healthySince = 0;
      e.ejectedUntil = 0;
      e.ejections = 0;
    }
    for (const e of this.endpoints) if (e.ejectedUntil !== 0) ejected += 1;
    this.stats.set('outlier_detection.ejections_active', ejected);
    this.stats.set('membership_total', this.endpoints.length);
    this.stats.set('membership_healthy', this.endpoints.length);
  }

  /** The live endpoint objects, for membership checks. */
  private members = new Set<Endpoint>();
  /** Changes whenever the set of healthy endpoints may have (names the lists schedules were built for). */
  private healthVersion = 0;

  private ring: { readonly of: readonly Endpoint[] | string; readonly ring: Ring } | undefined;
  /** The weighted schedule of the endpoints it was built for (ROUND_ROBIN, LEAST_REQUEST). */
  private schedule: { readonly of: readonly Endpoint[] | string; readonly equal: boolean; edf?: EdfSchedule } | undefined;

  /**
   * Choose an endpoint, avoiding those already tried when another exists (Envoy's previous-hosts
   * retry predicate). With equal weights ROUND_ROBIN is a cursor and LEAST_REQUEST "power of two
   * choices"; with unequal weights both follow an EDF schedule (LEAST_REQUEST's weights divided by
   * active requests + 1). RANDOM is uniform, as Envoy's random load balancer (it ignores weights).
   */
  pick(tried?: ReadonlySet<Endpoint>, hashKey?: string): Endpoint | undefined {
    const all = this.endpoints;
    let list = all;
    if (list.length === 0) return undefined;
    if (this.def.outlier) {
      const healthy = list.filter((e) => !this.isEjected(e));
      // Below minHealthPercent healthy, ejections are ignored (Envoy's panic threshold, as Istio sets it).
      if (healthy.length < list.length && (healthy.length / list.length) * 100 >= this.def.outlier.minHealthPercent) list = healthy;
      if (list.length === 0) return undefined;
    }
    // Schedules and rings are kept for the list they were built for: the endpoint array itself, or
    // (some ejected) the healthy ones of this version of the ejections.
    const of = (): readonly Endpoint[] | string => (list === all ? all : `healthy/${this.healthVersion}`);
    if (this.def.lb === 'RING_HASH' && hashKey !== undefined && list.length > 1) {
      // Consistent hash: the same key reaches the same endpoint while the set stays; Istio sets no
      // previous-hosts predicate with it, so a retry goes to the same endpoint too.
      const key = of();
      if (this.ring?.of !== key) this.ring = { of: key, ring: buildRing(list, this.def.hash?.ringSize ?? 1024) };
      return ringLookup(this.ring.ring, hash32(hashKey));
    }
    if (list.length === 1) return list[0];
    let e = this.choose(list, of);
    if (tried && tried.size > 0 && tried.has(e)) {
      // Envoy picks again (host_selection_retry_max_attempts: 5 in Istio); then any untried one.
      for (let i = 0; i < 4 && tried.has(e); i++) e = this.choose(list, of);
      if (tried.has(e)) {
        const fresh = list.filter((x) => !tried.has(x));
        if (fresh.length > 0) e = fresh[Math.floor(this.random() * fresh.length)]!;
      }
    }
    return e;
  }

  private choose(list: readonly Endpoint[], of: () => readonly Endpoint[] | string): Endpoint {
    if (this.def.lb === 'RANDOM') return list[Math.floor(this.random() * list.length)]!;
    const lr = this.def.lb !== 'ROUND_ROBIN';
    const key = of();
    let s = this.schedule;
    if (s?.of !== key) {
      const w = weightOf(list[0]!);
      s = this.schedule = { of: key, equal: list.every((x) => weightOf(x) === w) };
    }
    if (!s.equal) {
      // Envoy builds the schedule afresh when the hosts change, starting it a random number of
      // picks in, so that proxies do not all start on the same endpoint.
      const weight = lr ? (x: Endpoint) => weightOf(x) / (x.active + 1) : weightOf;
      if (!s.edf) {
        s.edf = new EdfSchedule(list, weight);
        for (let i = Math.floor(this.random() * list.length); i > 0; i--) s.edf.pick(weight);
      }
      return s.edf.pick(weight);
    }
    if (!lr) {
      const e = list[this.rrCursor % list.length]!;
      this.rrCursor = (this.rrCursor + 1) % 1_000_000_007;
      return e;
    }
    const i = Math.floor(this.random() * list.length);
    let j = Math.floor(this.random() * (list.length - 1));
    if (j >= i) j += 1;
    const a = list[i]!;
    const b = list[j]!;
    return b.active < a.active ? b : a;
  }
}
