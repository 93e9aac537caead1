// DNS for ServiceEntry endpoints: A (and AAAA when asked for) through node:dns Resolver, refreshed on
// the record TTL (clamped between a floor and a ceiling), every lookup bounded in time, the last good
// answer kept when a refresh fails (retried with back-off) -- per family: a failed A query keeps the
// last good IPv4 addresses even when AAAA answered -- and a change reported only when the set of
// addresses really changes (a reordered answer does not churn connection pools).

import { Resolver } from 'node:dns/promises';
import { isIP } from '../config/names';

export interface DnsOptions {
  /** `host:port` of the DNS servers; default: the system's. */
  readonly servers?: readonly string[];
  /** Per-query timeout and tries (node:dns Resolver). */
  readonly timeoutMs?: number;
  readonly tries?: number;
  /** Hard bound on one lookup, whatever the resolver does. */
  readonly deadlineMs?: number;
  readonly minTtlMs?: number;
  readonly maxTtlMs?: number;
  /**
   * Which records to ask for: `v4` (A only; the default, as Istio's V4_ONLY lookup family for an
   * IPv4 proxy), `v6` (AAAA only) or `both` (A and AAAA, dual stack).
   */
  readonly family?: DnsFamily;
  /** A watcher threw while being told of an answer (it is isolated: the others are told, refreshing goes on). */
  readonly onListenerError?: (name: string, err: unknown) => void;
}

export type DnsFamily = 'v4' | 'v6' | 'both';

export const DNS_FAMILIES: readonly DnsFamily[] = ['v4', 'v6', 'both'];

export interface DnsAnswer {
  readonly addresses: string[];
  readonly ttlMs: number;
  /**
   * Families whose query failed (timeout, SERVFAIL, ...) while the other answered: their addresses
   * are unknown, not absent (a watch keeps that family's last good ones).
   */
  readonly failed?: readonly ('v4' | 'v6')[];
  /** The failed family's error. */
  readonly error?: Error;
}

export interface DnsStats {
  lookups: number;
  failures: number;
  lastError?: string;
  lastSuccess?: number;
}

type Listener = (addresses: readonly string[], info: { ttlMs: number; error?: Error }) => void;

interface Entry {
  addresses?: string[];
  readonly listeners: Set<Listener>;
  timer?: NodeJS.Timeout;
  failures: number;
  readonly stats: DnsStats;
}

const STATIC_NAMES: Readonly<Record<string, string[]>> = { localhost: ['127.0.0.1'] };

export class DnsResolver {
  private readonly resolver: Resolver;
  private readonly entries = new Map<string, Entry>();
  private closed = false;
  readonly opts: Required<Omit<DnsOptions, 'servers' | 'onListenerError'>>;
  private readonly onListenerError: ((name: string, err: unknown) => void) | undefined;

  constructor(opts: DnsOptions = {}) {
    this.opts = {
      timeoutMs: opts.timeoutMs ?? 2000,
      tries: opts.tries ?? 2,
      deadlineMs: opts.deadlineMs ?? 5000,
      minTtlMs: opts.minTtlMs ?? 1000,
      maxTtlMs: opts.maxTtlMs ?? 60_000,
      family: opts.family ?? 'v4',
    };
    this.onListenerError = opts.onListenerError;
    this.resolver = new Resolver({ timeout: this.opts.timeoutMs, tries: this.opts.tries });
    if (opts.servers && opts.servers.length > 0) this.resolver.setServers([...opts.servers]);
  }

  private clampTtl(ttlSeconds: number): number {
    return Math.min(this.opts.maxTtlMs, Math.max(this.opts.minTtlMs, ttlSeconds * 1000));
  }

  /** One lookup, bounded by the deadline. IP literals and localhost need none. */
  async resolveOnce(name: string): Promise<DnsAnswer> {
    if (isIP(name)) return { addresses: [name], ttlMs: this.opts.maxTtlMs };
    const fixed = STATIC_NAMES[name.toLowerCase()];
    if (fixed) return { addresses: [...fixed], ttlMs: this.opts.maxTtlMs };
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`DNS lookup of ${name} took longer than ${this.opts.deadlineMs} ms`), { code: 'ETIMEOUT' })), this.opts.deadlineMs);
      timer.unref();
    });
    deadline.catch(() => {});
    // Each family within the deadline on its own: one that hangs does not lose the other's answer.
    const families: ('v4' | 'v6')[] = this.opts.family === 'both' ? ['v4', 'v6'] : [this.opts.family];
    try {
      const results = await Promise.allSettled(families.map((f) => Promise.race([
        f === 'v4' ? this.resolver.resolve4(name, { ttl: true }) : this.resolver.resolve6(name, { ttl: true }),
        deadline,
      ])));
      const records: { address: string; ttl: number }[] = [];
      const failed: ('v4' | 'v6')[] = [];
      let error: unknown;
      let notFound: unknown;
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') records.push(...r.value);
        else if (isNoData(r.reason)) return;
        else if (isNotFound(r.reason)) notFound ??= r.reason;
        else {
          failed.push(families[i]!);
          error ??= r.reason;
        }
      });
      if (records.length === 0) {
        // Nothing known: a failure (or NXDOMAIN) fails the lookup, and a watch keeps its last good answer.
        if (error !== undefined || notFound !== undefined) throw error ?? notFound;
        return { addresses: [], ttlMs: this.opts.minTtlMs };
      }
      const ttl = Math.min(...records.map((r) => r.ttl));
      const addresses = records.map((r) => r.address);
      return failed.length > 0
        ? { addresses, ttlMs: this.opts.minTtlMs, failed, error: error as Error }
        : { addresses, ttlMs: this.clampTtl(ttl) };
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  private readonly onDemand = new Map<string, { addresses: string[]; expires: number } | Promise<string[]>>();

  /**
   * Resolve a name on demand (resolution NONE at a gateway: the SNI or Host of a request), cached for
   * the record's TTL, concurrent lookups of one name shared, at most 4096 names kept.
   */
  lookup(name: string): Promise<string[]> {
    const key = name.toLowerCase();
    const hit = this.onDemand.get(key);
    if (hit instanceof Promise) return hit;
    if (hit && hit.expires > Date.now()) return Promise.resolve(hit.addresses);
    const pending = this.resolveOnce(key).then((answer) => {
      if (this.onDemand.size >= 4096) this.onDemand.delete(this.onDemand.keys().next().value as string);
      this.onDemand.set(key, { addresses: answer.addresses, expires: Date.now() + answer.ttlMs });
      return answer.addresses;
    }, (err: unknown) => {
      this.onDemand.delete(key);
      throw err;
    });
    this.onDemand.set(key, pending);
    return pending;
  }

  current(name: string): readonly string[] | undefined {
    return this.entries.get(name)?.addresses;
  }

  stats(): Record<string, DnsStats & { addresses?: readonly string[] }> {
    const out: Record<string, DnsStats & { addresses?: readonly string[] }> = {};
    for (const [name, e] of this.entries) out[name] = { ...e.stats, addresses: e.addresses };
    return out;
  }

  /**
   * Follow a name: `onChange` gets the first answer and every change of its addresses. A reordered
   * answer is no change: DNS_ROUND_ROBIN keeps the address it connects to, and no pool churns.
   * Returns an unsubscribe.
   */
  watch(name: string, onChange: Listener): () => void {
    let e = this.entries.get(name);
    if (!e) {
      e = { listeners: new Set(), failures: 0, stats: { lookups: 0, failures: 0 } };
      this.entries.set(name, e);
      void this.refresh(name, e);
    } else if (e.addresses) {
      const known = e.addresses;
      queueMicrotask(() => this.tell(name, onChange, known, { ttlMs: 0 }));
    }
    e.listeners.add(onChange);
    const entry = e;
    return () => {
      entry.listeners.delete(onChange);
      if (entry.listeners.size === 0) {
        if (entry.timer) clearTimeout(entry.timer);
        if (this.entries.get(name) === entry) this.entries.delete(name);
      }
    };
  }

  private async refresh(name: string, e: Entry): Promise<void> {
    if (this.closed || this.entries.get(name) !== e) return;
    e.stats.lookups += 1;
    let ans: DnsAnswer | undefined;
    let err: Error | undefined;
    try {
      ans = await this.resolveOnce(name);
    } catch (caught) {
      err = caught as Error;
    }
    if (this.closed || this.entries.get(name) !== e) return;
    let next: number;
    if (ans) {
      // A family whose query failed keeps its last good addresses; the other's answer is taken.
      let addresses = ans.addresses;
      if (ans.failed && e.addresses) {
        const kept = e.addresses.filter((a) => ans!.failed!.includes(a.includes(':') ? 'v6' : 'v4'));
        addresses = [...new Set([...addresses, ...kept])];
      }
      if (ans.failed) this.noteFailure(e, ans.error);
      else {
        e.failures = 0;
        e.stats.lastSuccess = Date.now();
      }
      const changed = !e.addresses || !sameSet(e.addresses, addresses);
      if (changed) {
        e.addresses = addresses;
        for (const l of [...e.listeners]) this.tell(name, l, addresses, { ttlMs: ans.ttlMs, ...(ans.error ? { error: ans.error } : {}) });
      }
      next = ans.failed ? this.backoff(e) : ans.ttlMs;
    } else {
      this.noteFailure(e, err);
      // Keep the last good answer; tell the listeners (with the addresses they already have).
      for (const l of [...e.listeners]) this.tell(name, l, e.addresses ?? [], { ttlMs: 0, error: err! });
      next = this.backoff(e);
    }
    if (this.closed || this.entries.get(name) !== e) return;
    e.timer = setTimeout(() => void this.refresh(name, e), next);
    e.timer.unref();
  }

  private noteFailure(e: Entry, err: Error | undefined): void {
    e.failures += 1;
    e.stats.failures += 1;
    e.stats.lastError = err?.message ?? 'lookup failed';
  }

  private backoff(e: Entry): number {
    return Math.min(this.opts.maxTtlMs, this.opts.minTtlMs * 2 ** Math.min(Math.max(0, e.failures - 1), 10));
  }

  /** Tell one watcher; one that throws is reported, never taken for a DNS failure nor let stop the refreshes. */
  private tell(name: string, l: Listener, addresses: readonly string[], info: { ttlMs: number; error?: Error }): void {
    try {
      l(addresses, info);
    } catch (err) {
      try {
        this.onListenerError?.(name, err);
      } catch {
        // the reporter's own failure changes nothing
      }
    }
  }

  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) if (e.timer) clearTimeout(e.timer);
    this.entries.clear();
    this.resolver.cancel();
  }
}

/** "The name exists but has no record of this type": not a failure. */
function isNoData(err: unknown): boolean {
  return (err as { code?: string })?.code === 'ENODATA';
}

/** NXDOMAIN: no addresses of this family (with the other family's answer), else a failed lookup. */
function isNotFound(err: unknown): boolean {
  return (err as { code?: string })?.code === 'ENOTFOUND';
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}
