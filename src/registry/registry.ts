// The live service registry: one Cluster per compiled ClusterDef, endpoints resolved (static IPs, or
// DNS names refreshed by a NameResolver), and one pool per upstream endpoint and options shared by
// every cluster that reaches it (our HTTP/1.1 or h2c pool; undici's Pool for other TLS).
// `reconcile(snapshot)` is called before a new snapshot is published.

import type { Pool, Dispatcher } from 'undici';
import { isUndiciPool, undici } from '../undici';
import { H2cPool } from './h2c-pool';
import { H1Pool } from './h1-pool';
import type { ClusterDef, EndpointAddress, Snapshot } from '../config/snapshot';
import { isIP } from '../config/names';
import { Cluster, Endpoint as EndpointClass, endpointKey, type Endpoint, type Random } from './cluster';
import { meshConnector, type UpstreamTlsOptions } from '../tls/upstream';

/** What the registry needs of DNS (implemented by serviceentry/dns.ts). */
export interface NameResolver {
  watch(name: string, onChange: (addresses: readonly string[]) => void): () => void;
  current(name: string): readonly string[] | undefined;
  /** One-off resolution (original-destination clusters at a gateway). */
  lookup?(name: string): Promise<readonly string[]>;
}

export interface PoolOptions {
  readonly connectTimeoutMs: number;
  readonly maxConnections?: number;
  /** TLS origination (DestinationRule tls SIMPLE/MUTUAL). */
  readonly tls?: UpstreamTlsOptions;
  /** connectionPool.http.maxRequestsPerConnection (0 = unlimited). */
  readonly maxRequestsPerConnection?: number;
  /** connectionPool.http.idleTimeout. */
  readonly idleTimeoutMs?: number;
  /** connectionPool.tcp.tcpKeepalive: probe idle upstream connections after this long. */
  readonly keepaliveMs?: number;
  /** Source address of upstream connections (inbound sidecar: 127.0.0.6). */
  readonly localAddress?: string;
  /** HTTP/2 upstream: h2c with prior knowledge in plaintext, offered by ALPN over TLS. */
  readonly http2?: boolean;
}

/** Connection counters of one upstream endpoint (shared by every cluster that reaches it). */
export interface ConnectionStats {
  cxTotal: number;
  cxActive: number;
  cxConnectFail: number;
}

/** Pool keys of option objects the proxy reuses (one per cluster definition): built once each. */
const optionsKeys = new WeakMap<PoolOptions, string>();

/** What the proxy needs of a connection pool: undici's Pool, or one of our plain pools (HTTP/1.1, h2c). */
export interface UpstreamPool {
  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean;
  close(): Promise<void>;
  destroy(): Promise<void>;
  on(event: 'connect' | 'disconnect' | 'connectionError', listener: (...args: unknown[]) => void): unknown;
}

interface PoolEntry {
  readonly pool: UpstreamPool;
  readonly endpointKey: string;
  readonly stats: ConnectionStats;
  /** Last time a request took this pool, or the sweep found it busy (Date.now()). */
  lastUsed: number;
  /** Requests handed this pool (ever): a pool no request takes after a reload is one of the old options. */
  uses: number;
}

/** undici's Pool toward an endpoint: TLS upstreams, and plain ones' streamed uploads. */
function undiciPool(endpoint: Endpoint, opts: PoolOptions): Pool {
  return new (undici().Pool)(`${opts.tls ? 'https' : 'http'}://${endpoint.key}`, {
    connections: opts.maxConnections ?? null,
    pipelining: 1,
    connect: opts.tls?.mesh
      ? meshConnector(opts.tls.connect, { timeoutMs: opts.connectTimeoutMs, h2: opts.http2 === true, keepaliveMs: opts.keepaliveMs })
      : {
        timeout: opts.connectTimeoutMs, ...opts.tls?.connect,
        ...(opts.keepaliveMs !== undefined ? { keepAlive: true, keepAliveInitialDelay: opts.keepaliveMs } : {}),
      },
    connectTimeout: opts.connectTimeoutMs,
    keepAliveTimeout: opts.idleTimeoutMs ?? 60_000,
    keepAliveMaxTimeout: Math.max(opts.idleTimeoutMs ?? 0, 3_600_000),
    ...(opts.maxRequestsPerConnection ? { maxRequestsPerClient: opts.maxRequestsPerConnection } : {}),
    ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    ...(opts.http2 ? { allowH2: true } : {}),
    headersTimeout: 0,
    bodyTimeout: 0,
    strictContentLength: true,
  });
}

/** Count a pool's connections in the endpoint's stats (upstream_cx_total, _active, _connect_fail). */
function countConnections<P extends UpstreamPool>(pool: P, stats: ConnectionStats): P {
  pool.on('connect', () => {
    stats.cxTotal += 1;
    stats.cxActive += 1;
  });
  pool.on('disconnect', () => {
    stats.cxActive = Math.max(0, stats.cxActive - 1);
  });
  pool.on('connectionError', () => {
    stats.cxConnectFail += 1;
  });
  return pool;
}

/** Requests a pool carries now (running or waiting for a connection). */
function inFlight(pool: UpstreamPool): number {
  if (pool instanceof H2cPool || pool instanceof H1Pool) return pool.inFlight;
  if (isUndiciPool(pool)) return pool.stats.size;
  return 0;
}

export interface RegistryOptions {
  /**
   * A pool of an endpoint outside every cluster (original destination: PassthroughCluster,
   * inbound|PORT||, headless or resolution NONE services) is closed once it has carried nothing
   * for this long (default 60 s), as Envoy's ORIGINAL_DST cluster forgets hosts it has not used; so is
   * a pool no request has taken since a reload changed the cluster options it was built for.
   */
  readonly adHocIdleMs?: number;
  /** At most this many such pools stay open (default 1024): beyond it the least recently used idle ones close. */
  readonly maxIdleAdHocPools?: number;
}

const DEFAULT_AD_HOC_IDLE_MS = 60_000;
const DEFAULT_MAX_IDLE_AD_HOC_POOLS = 1024;

export interface RegistryEvents {
  onEndpointsChanged?(cluster: Cluster): void;
  onEjection?(cluster: Cluster, endpoint: Endpoint, reason: string): void;
}

export class Registry {
  private clusters = new Map<string, Cluster>();
  private readonly pools = new Map<string, PoolEntry>();
  private readonly connStats = new Map<string, ConnectionStats>();
  private readonly dnsWatches = new Map<string, { unsubscribe: () => void; clusters: Set<string> }>();
  /** Endpoint keys of every cluster's endpoints (pools of those leave when their endpoint does). */
  private liveKeys = new Set<string>();
  /** Pools of endpoints outside every cluster, least recently used first: closed when idle. */
  private readonly adHoc = new Map<string, PoolEntry>();
  /**
   * After a reload changed a cluster, the pools of live endpoints, with their use count then: one
   * that no request takes for adHocIdleMs was built for options no cluster has any more (a
   * DestinationRule connectionPool edit) and is closed, instead of holding its connections for good.
   */
  private readonly stale = new Map<string, { entry: PoolEntry; uses: number; since: number }>();
  /** When each connection-stats entry was last asked for (entries of endpoints gone are pruned). */
  private readonly connTouched = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly adHocIdleMs: number;
  private readonly maxIdleAdHocPools: number;

  constructor(
    private readonly resolver: NameResolver | undefined,
    private readonly random: Random = Math.random,
    private readonly events: RegistryEvents = {},
    options: RegistryOptions = {},
  ) {
    this.adHocIdleMs = options.adHocIdleMs ?? DEFAULT_AD_HOC_IDLE_MS;
    this.maxIdleAdHocPools = options.maxIdleAdHocPools ?? DEFAULT_MAX_IDLE_AD_HOC_POOLS;
  }

  get(name: string): Cluster | undefined {
    return this.clusters.get(name);
  }

  private readonly dynamic = new Map<string, Endpoint>();
  private readonly passthroughClusters = new Map<string, Cluster>();

  /**
   * Original-destination clusters of a sidecar: PassthroughCluster (outbound allow_any),
   * `inbound|PORT||` and InboundPassthroughCluster (inbound). No endpoints of their own: each
   * connection goes where it was going.
   */
  private passthroughConnectTimeoutMs = 10_000;

  /** `inbound|PORT||` -> the Service its metrics name (Istio's inbound cluster metadata). */
  private inboundServices = new Map<string, ClusterDef['service']>();

  private passthroughService(name: string): ClusterDef['service'] {
    return this.inboundServices.get(name) ?? { host: name, name, namespace: 'unknown' };
  }

  passthrough(name = 'PassthroughCluster'): Cluster {
    let c = this.passthroughClusters.get(name);
    if (!c) {
      c = new Cluster({
        name, host: name, port: 0, protocol: '', resolution: 'NONE', lb: 'RANDOM',
        service: this.passthroughService(name),
        connectTimeoutMs: this.passthroughConnectTimeoutMs, endpoints: [], policy: {},
        breaker: { maxConnections: 4294967295, maxPendingRequests: 4294967295, maxRequests: 4294967295, maxRetries: 4294967295, maxRequestsPerConnection: 0, idleTimeoutMs: 3_600_000 },
      }, this.random);
      this.passthroughClusters.set(name, c);
    }
    return c;
  }

  /** A kept endpoint object for an address and port outside every cluster (original destinations). */
  endpointFor(address: string, port: number): Endpoint {
    const key = `${address}|${port}`;
    let e = this.dynamic.get(key);
    if (!e) {
      if (this.dynamic.size >= 4096) this.dynamic.delete(this.dynamic.keys().next().value as string);
      e = new EndpointClass(address, port, {}, 1);
      this.dynamic.set(key, e);
    }
    return e;
  }


  /** `host` (an IP or a name, resolved now) on `port`: per-port capture's passthrough. */
  async resolveEndpoint(host: string, port: number): Promise<Endpoint | undefined> {
    if (!host || !this.resolver?.lookup) return undefined;
    const addresses = isIP(host) ? [host] : await this.resolver.lookup(host);
    if (addresses.length === 0) return undefined;
    return this.endpointFor(addresses[Math.floor(this.random() * addresses.length)]!, port);
  }

  all(): Cluster[] {
    return [...this.clusters.values()];
  }

  /** Bring the live clusters in line with a snapshot (before it is published). */
  reconcile(snapshot: Snapshot): void {
    // Passthrough clusters connect within the mesh connectTimeout, as Istio's PassthroughCluster does.
    if (snapshot.mesh.connectTimeoutMs !== this.passthroughConnectTimeoutMs) {
      this.passthroughConnectTimeoutMs = snapshot.mesh.connectTimeoutMs;
      this.passthroughClusters.clear();
    }
    this.inboundServices = new Map();
    for (const l of snapshot.listeners.values()) {
      for (const [port, p] of l.inbound?.ports ?? []) this.inboundServices.set(`inbound|${port}||`, p.service);
    }
    for (const [name, c] of this.passthroughClusters) {
      const service = this.passthroughService(name);
      if (JSON.stringify(service) !== JSON.stringify(c.def.service)) c.def = { ...c.def, service };
    }
    const next = new Map<string, Cluster>();
    let changed = false;
    for (const def of snapshot.clusters.values()) {
      let cluster = this.clusters.get(def.name);
      if (cluster && JSON.stringify(cluster.def) === JSON.stringify(def)) {
        next.set(def.name, cluster);
        continue;
      }
      changed = true;
      if (cluster) cluster.def = def;
      else {
        const c = new Cluster(def, this.random);
        c.onEject = (e, reason) => this.events.onEjection?.(c, e, reason);
        cluster = c;
      }
      next.set(def.name, cluster);
      this.resolveEndpoints(cluster);
    }
    const removed = [...this.clusters.keys()].filter((k) => !next.has(k));
    this.clusters = next;
    for (const name of removed) this.unwatchCluster(name);
    this.releaseUnusedPools();
    if (changed) this.watchForStalePools();
  }

  private watchForStalePools(): void {
    const now = Date.now();
    for (const [key, entry] of this.pools) {
      if (this.liveKeys.has(entry.endpointKey)) this.stale.set(key, { entry, uses: entry.uses, since: now });
    }
    this.startSweep();
  }

  /** Pools and connection-stats entries held now (diagnostics, tests). */
  sizes(): { pools: number; adHocPools: number; connectionStats: number; dnsWatches: number } {
    return { pools: this.pools.size, adHocPools: this.adHoc.size, connectionStats: this.connStats.size, dnsWatches: this.dnsWatches.size };
  }

  private resolveEndpoints(cluster: Cluster): void {
    const def = cluster.def;
    const names = new Set(def.endpoints.filter((e) => !isIP(e.address)).map((e) => e.address));
    for (const [name, w] of this.dnsWatches) {
      if (names.has(name) || !w.clusters.delete(def.name) || w.clusters.size > 0) continue;
      // No cluster uses the name any more: stop resolving it.
      w.unsubscribe();
      this.dnsWatches.delete(name);
    }
    for (const name of names) this.watchName(name, def.name);
    cluster.setEndpoints(this.expand(def));
    this.events.onEndpointsChanged?.(cluster);
  }

  /** Static endpoints as they are; DNS endpoints become one endpoint per resolved address. */
  private expand(def: ClusterDef): EndpointAddress[] {
    const out: EndpointAddress[] = [];
    for (const e of def.endpoints) {
      if (isIP(e.address)) {
        out.push(e);
        continue;
      }
      const addrs = this.resolver?.current(e.address) ?? [];
      const use = def.resolution === 'DNS_ROUND_ROBIN' ? addrs.slice(0, 1) : addrs;
      for (const a of use) out.push({ ...e, address: a });
    }
    return out;
  }

  private watchName(name: string, clusterName: string): void {
    if (!this.resolver) return;
    const existing = this.dnsWatches.get(name);
    if (existing) {
      existing.clusters.add(clusterName);
      return;
    }
    const entry = { clusters: new Set([clusterName]), unsubscribe: () => {} };
    this.dnsWatches.set(name, entry);
    entry.unsubscribe = this.resolver.watch(name, () => {
      let changed = false;
      for (const c of entry.clusters) {
        const cluster = this.clusters.get(c);
        if (!cluster) continue;
        const next = this.expand(cluster.def);
        // A failed refresh reports the addresses already known: nothing to do.
        if (sameEndpoints(cluster.endpoints, next)) continue;
        cluster.setEndpoints(next);
        this.events.onEndpointsChanged?.(cluster);
        changed = true;
      }
      if (changed) this.releaseUnusedPools();
    });
  }

  private unwatchCluster(clusterName: string): void {
    for (const [name, w] of this.dnsWatches) {
      w.clusters.delete(clusterName);
      if (w.clusters.size === 0) {
        w.unsubscribe();
        this.dnsWatches.delete(name);
      }
    }
  }

  /** The connection pool for an endpoint with these options (shared across clusters). */
  pool(endpoint: Endpoint, opts: PoolOptions): UpstreamPool {
    let optionsKey = optionsKeys.get(opts);
    if (optionsKey === undefined) {
      optionsKey = `${opts.connectTimeoutMs}/${opts.maxConnections ?? ''}/${opts.tls?.key ?? ''}/${opts.maxRequestsPerConnection ?? 0}/${opts.idleTimeoutMs ?? ''}/${opts.keepaliveMs ?? ''}/${opts.localAddress ?? ''}/${opts.http2 ? 'h2' : ''}`;
      optionsKeys.set(opts, optionsKey);
    }
    const key = `${endpoint.key}/${optionsKey}`;
    let entry = this.pools.get(key);
    if (entry) entry.uses += 1;
    else {
      // h2c (prior knowledge) on our HTTP/2 client (h2c-pool.ts); plain HTTP/1.1 on ours (h1-pool.ts, its
      // streamed uploads on undici); TLS, with ALPN, on undici.
      const stats = this.connectionStats(endpoint.key);
      // What both of our pools take (plaintext: no TLS options).
      const plain = {
        host: endpoint.address, port: endpoint.port, connectTimeoutMs: opts.connectTimeoutMs, idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
        ...(opts.maxRequestsPerConnection ? { maxRequestsPerConnection: opts.maxRequestsPerConnection } : {}),
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        ...(opts.keepaliveMs !== undefined ? { keepaliveMs: opts.keepaliveMs } : {}),
      };
      // ISTIO_MUTUAL with HTTP/2 (the sidecar -> egress gateway hop of istio.io's tasks) on our HTTP/2
      // client over mesh mTLS: a mesh peer always speaks h2 there; other TLS keeps undici's ALPN fallback.
      const meshH2 = opts.tls?.mesh === true && opts.http2 === true;
      const pool: UpstreamPool = meshH2 ? new H2cPool({ ...plain, tls: opts.tls!.connect })
        : opts.tls ? undiciPool(endpoint, opts) : opts.http2 ? new H2cPool(plain) : new H1Pool({
        ...plain,
        ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
        streamingPool: () => countConnections(undiciPool(endpoint, opts), stats),
      });
      countConnections(pool, stats);
      entry = { pool, endpointKey: endpoint.key, stats, lastUsed: 0, uses: 1 };
      this.pools.set(key, entry);
      if (!this.liveKeys.has(endpoint.key)) {
        this.adHoc.set(key, entry);
        this.trimAdHoc(key);
        this.startSweep();
      }
    }
    if (!this.liveKeys.has(endpoint.key)) {
      // Most recently used last: the least recently used idle ones are closed first.
      entry.lastUsed = Date.now();
      this.adHoc.delete(key);
      this.adHoc.set(key, entry);
    }
    return entry.pool;
  }

  /** Connection counters for an endpoint `ip:port`, created on first use. */
  connectionStats(endpointKey: string): ConnectionStats {
    let s = this.connStats.get(endpointKey);
    if (!s) this.connStats.set(endpointKey, s = { cxTotal: 0, cxActive: 0, cxConnectFail: 0 });
    if (!this.liveKeys.has(endpointKey)) {
      this.connTouched.set(endpointKey, Date.now());
      this.startSweep();
    }
    return s;
  }

  /**
   * After the clusters' endpoints changed: close the pools of endpoints that left (close() lets
   * in-flight requests finish; new ones go to the new pools). Pools of endpoints outside every
   * cluster (original destinations) are not touched: they close when idle.
   */
  private releaseUnusedPools(): void {
    const live = new Set<string>();
    for (const c of this.clusters.values()) for (const e of c.endpoints) live.add(e.key);
    for (const [key, entry] of this.pools) {
      if (live.has(entry.endpointKey)) {
        this.adHoc.delete(key);
        continue;
      }
      if (this.liveKeys.has(entry.endpointKey)) this.dropPool(key, entry);
    }
    for (const key of this.liveKeys) if (!live.has(key) && this.connStats.has(key)) this.connTouched.set(key, Date.now());
    this.liveKeys = live;
    this.startSweep();
  }

  private dropPool(key: string, entry: PoolEntry): void {
    this.pools.delete(key);
    this.adHoc.delete(key);
    this.stale.delete(key);
    entry.pool.close().catch(() => {});
  }

  /**
   * Over the cap, close the least recently used ad-hoc pools that are idle (busy ones stay, and the
   * one about to be used): one pass from the oldest, so a new destination costs little.
   */
  private trimAdHoc(taken: string): void {
    if (this.adHoc.size <= this.maxIdleAdHocPools) return;
    for (const [key, entry] of this.adHoc) {
      if (this.adHoc.size <= this.maxIdleAdHocPools) break;
      if (key === taken || inFlight(entry.pool) > 0) continue;
      this.dropPool(key, entry);
    }
  }

  private startSweep(): void {
    if (this.sweepTimer || this.stopped) return;
    if (this.adHoc.size === 0 && this.connTouched.size === 0 && this.stale.size === 0) return;
    const every = Math.max(10, Math.min(5_000, Math.floor(this.adHocIdleMs / 2)));
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
  }

  /** Close ad-hoc pools idle for adHocIdleMs; forget connection counters nothing holds any more. */
  private sweep(): void {
    const now = Date.now();
    for (const [key, entry] of [...this.adHoc]) {
      if (now - entry.lastUsed < this.adHocIdleMs) continue;
      if (inFlight(entry.pool) > 0) entry.lastUsed = now; // idle counts from when it is seen idle
      else this.dropPool(key, entry);
    }
    for (const [key, s] of [...this.stale]) {
      if (this.pools.get(key) !== s.entry || s.entry.uses !== s.uses) this.stale.delete(key); // in use: current
      else if (now - s.since >= this.adHocIdleMs && inFlight(s.entry.pool) === 0) this.dropPool(key, s.entry);
    }
    const pooled = new Set<string>();
    for (const entry of this.pools.values()) pooled.add(entry.endpointKey);
    for (const [key, touched] of this.connTouched) {
      const s = this.connStats.get(key);
      if (this.liveKeys.has(key) || !s) {
        this.connTouched.delete(key);
        continue;
      }
      if (pooled.has(key) || s.cxActive > 0 || now - touched < this.adHocIdleMs) continue;
      this.connStats.delete(key);
      this.connTouched.delete(key);
    }
    if (this.adHoc.size === 0 && this.connTouched.size === 0 && this.stale.size === 0) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  }

  private closing: UpstreamPool[] = [];
  private stopped = false;

  async close(): Promise<void> {
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.adHoc.clear();
    this.stale.clear();
    for (const w of this.dnsWatches.values()) w.unsubscribe();
    this.dnsWatches.clear();
    this.closing = [...this.pools.values()].map((e) => e.pool);
    this.pools.clear();
    await Promise.all(this.closing.map((p) => p.close().catch(() => {})));
  }

  /** Force-close every pool (after the drain deadline). */
  async destroy(): Promise<void> {
    const all = [...this.closing, ...[...this.pools.values()].map((e) => e.pool)];
    this.pools.clear();
    this.adHoc.clear();
    await Promise.all(all.map((p) => p.destroy().catch(() => {})));
  }
}

/** The same endpoints (address and port), whatever their order? */
function sameEndpoints(current: readonly Endpoint[], next: readonly EndpointAddress[]): boolean {
  if (current.length !== next.length) return false;
  const keys = new Set(current.map((e) => e.key));
  return next.every((n) => keys.has(endpointKey(n.address, n.port)));
}
