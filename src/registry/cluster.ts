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

export class Cluster {
  def: ClusterDef;
  endpoints: readonly Endpoint[] = [];
  readonly stats = new Counters();
  private rrCursor = 0;

  constructor(def: ClusterDef, private readonly random: Random = Math.random) {
    this.def = def;
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
  pick(tried?: ReadonlySet<Endpoint>): Endpoint | undefined {
    let list = this.endpoints;
    if (list.length === 0) return undefined;
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
