// The live service registry: one Cluster per compiled ClusterDef, endpoints resolved (static IPs, or
// DNS names refreshed by a NameResolver), and one undici Pool per upstream endpoint shared by every
// cluster that reaches it. `reconcile(snapshot)` is called before a new snapshot is published.

import { Pool, type Dispatcher } from 'undici';
import { H2cPool } from './h2c-pool';
import type { ClusterDef, EndpointAddress, Snapshot } from '../config/snapshot';
import { isIP } from '../config/names';
import { Cluster, Endpoint as EndpointClass, type Endpoint, type Random } from './cluster';
import type { UpstreamTlsOptions } from '../tls/upstream';

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

/** What the proxy needs of a connection pool: undici's Pool, or our h2c pool on node:http2. */
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
}

export interface RegistryEvents {
  onEndpointsChanged?(cluster: Cluster): void;
  onEjection?(cluster: Cluster, endpoint: Endpoint, reason: string): void;
}

export class Registry {
  private clusters = new Map<string, Cluster>();
  private readonly pools = new Map<string, PoolEntry>();
  private readonly connStats = new Map<string, ConnectionStats>();
  private readonly dnsWatches = new Map<string, { unsubscribe: () => void; clusters: Set<string> }>();

  constructor(
    private readonly resolver: NameResolver | undefined,
    private readonly random: Random = Math.random,
    private readonly events: RegistryEvents = {},
  ) {}

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

  passthrough(name = 'PassthroughCluster'): Cluster {
    let c = this.passthroughClusters.get(name);
    if (!c) {
      c = new Cluster({
        name, host: name, port: 0, protocol: '', resolution: 'NONE', lb: 'RANDOM',
        service: { host: name, name, namespace: 'unknown' },
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
    const next = new Map<string, Cluster>();
    for (const def of snapshot.clusters.values()) {
      let cluster = this.clusters.get(def.name);
      if (cluster && JSON.stringify(cluster.def) === JSON.stringify(def)) {
        next.set(def.name, cluster);
        continue;
      }
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
  }

  private resolveEndpoints(cluster: Cluster): void {
    const def = cluster.def;
    const names = new Set(def.endpoints.filter((e) => !isIP(e.address)).map((e) => e.address));
    for (const [name, w] of this.dnsWatches) if (!names.has(name)) w.clusters.delete(def.name);
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
      for (const c of entry.clusters) {
        const cluster = this.clusters.get(c);
        if (!cluster) continue;
        cluster.setEndpoints(this.expand(cluster.def));
        this.events.onEndpointsChanged?.(cluster);
      }
      this.releaseUnusedPools();
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
    if (!entry) {
      // h2c (prior knowledge) on node:http2 (h2c-pool.ts); HTTP/1.1, and TLS with ALPN, on undici.
      const pool: UpstreamPool = opts.http2 && !opts.tls ? new H2cPool({
        host: endpoint.address, port: endpoint.port, connectTimeoutMs: opts.connectTimeoutMs, idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
        ...(opts.maxRequestsPerConnection ? { maxRequestsPerConnection: opts.maxRequestsPerConnection } : {}),
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        ...(opts.keepaliveMs !== undefined ? { keepaliveMs: opts.keepaliveMs } : {}),
      }) : new Pool(`${opts.tls ? 'https' : 'http'}://${endpoint.key}`, {
        connections: opts.maxConnections ?? null,
        pipelining: 1,
        connect: {
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
      const stats = this.connectionStats(endpoint.key);
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
      entry = { pool, endpointKey: endpoint.key, stats };
      this.pools.set(key, entry);
    }
    return entry.pool;
  }

  /** Connection counters for an endpoint `ip:port`, created on first use. */
  connectionStats(endpointKey: string): ConnectionStats {
    let s = this.connStats.get(endpointKey);
    if (!s) this.connStats.set(endpointKey, s = { cxTotal: 0, cxActive: 0, cxConnectFail: 0 });
    return s;
  }

  private releaseUnusedPools(): void {
    const live = new Set<string>();
    for (const c of this.clusters.values()) for (const e of c.endpoints) live.add(e.key);
    for (const [key, entry] of this.pools) {
      if (live.has(entry.endpointKey)) continue;
      this.pools.delete(key);
      // close() lets in-flight requests finish; new ones go to the new pools.
      entry.pool.close().catch(() => {});
    }
  }

  private closing: UpstreamPool[] = [];

  async close(): Promise<void> {
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
    await Promise.all(all.map((p) => p.destroy().catch(() => {})));
  }
}
