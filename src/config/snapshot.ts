// The compiled, frozen configuration the data path reads. Built by compile.ts (pure), published by
// store.ts (the only place that swaps it). Plain data, except the precompiled regex objects held
// inside matchers (immutable in use; `re` keys are dropped from the admin config dump).

import type {
  Dict, HTTPRedirect, Headers, LoadBalancerSettings, ConnectionPoolSettings, OutlierDetection, ClientTLSSettings,
  Resolution, ServerTLSSettings,
} from './types';
import type { ServiceDef, WorkloadRef } from '../serviceentry/services';
import type { ServerCredentialSource, UpstreamTls } from '../tls/secrets';

export interface Origin {
  /** `Kind namespace/name` */
  readonly resource: string;
  readonly file: string;
  readonly line: number;
  readonly path: string;
}

/** A compiled StringMatch; `re` is a full-match RE2 program. */
export interface StringMatcher {
  readonly kind: 'exact' | 'prefix' | 'regex' | 'present';
  readonly value: string;
  readonly re?: { matches(input: string): boolean };
}

export interface HeaderMatcher {
  readonly name: string; // lower-case
  readonly match: StringMatcher;
}

export interface CompiledMatch {
  readonly name?: string;
  readonly uri?: StringMatcher;
  readonly ignoreUriCase: boolean;
  readonly scheme?: StringMatcher;
  readonly method?: StringMatcher;
  readonly authority?: StringMatcher;
  readonly headers: readonly HeaderMatcher[];
  readonly withoutHeaders: readonly HeaderMatcher[];
  readonly queryParams: readonly HeaderMatcher[];
}

export interface CompiledDestination {
  readonly cluster: string;
  readonly host: string;
  readonly port: number;
  readonly subset?: string;
  readonly weight: number;
  readonly headers?: Headers;
}

export type RouteAction =
  | { readonly type: 'route'; readonly destinations: readonly CompiledDestination[]; readonly totalWeight: number }
  | { readonly type: 'redirect'; readonly redirect: HTTPRedirect }
  | { readonly type: 'direct'; readonly status: number; readonly body: string }
  /** Sidecar allow_any: to the connection's original destination (PassthroughCluster). */
  | { readonly type: 'passthrough' };

export interface RetryPolicy {
  readonly attempts: number;
  readonly perTryTimeoutMs: number; // 0 = the route timeout
  readonly retryOn: readonly string[];
  readonly retriableStatusCodes: readonly number[];
}

/** VirtualService `fault`, with percentages as fractions in [0, 1]. */
export interface CompiledFault {
  readonly delayMs?: number;
  readonly delayFraction: number;
  readonly abortStatus?: number;
  /** gRPC status code number, for gRPC requests. */
  readonly abortGrpc?: number;
  readonly abortFraction: number;
}

/** VirtualService `rewrite`, with the part of the path it replaces known at compile time. */
export interface CompiledRewrite {
  readonly uri?: string;
  /** What `uri` replaces: the matched prefix, or the whole path (exact and regex matches); '/' without a uri match. */
  readonly replaces?: { readonly kind: 'prefix' | 'exact'; readonly value: string };
  readonly regex?: { readonly pattern: string; readonly rewrite: string; readonly re?: { replaceAll(input: string, replacement: string): string } };
  readonly authority?: string;
}

export interface CompiledMirror {
  readonly cluster: string;
  readonly host: string;
  readonly fraction: number;
}

export interface CompiledCors {
  readonly allowOrigins: readonly StringMatcher[];
  readonly allowMethods?: string;
  readonly allowHeaders?: string;
  readonly exposeHeaders?: string;
  readonly maxAgeSeconds?: number;
  readonly allowCredentials: boolean;
  /** unmatchedPreflights IGNORE: a preflight from an origin not allowed is answered here, without CORS headers. */
  readonly ignoreUnmatchedPreflights?: boolean;
}

export interface CompiledRoute {
  readonly name: string;
  /** null matches every request. */
  readonly match: CompiledMatch | null;
  readonly action: RouteAction;
  readonly timeoutMs: number; // 0 = none (Istio default)
  readonly retry: RetryPolicy;
  readonly headers?: Headers;
  readonly rewrite?: CompiledRewrite;
  readonly fault?: CompiledFault;
  readonly mirrors?: readonly CompiledMirror[];
  readonly cors?: CompiledCors;
  readonly origin: Origin;
}

export interface VirtualHost {
  /** `host:port` as Istio names gateway vhosts. */
  readonly name: string;
  readonly domain: string;
  readonly routes: readonly CompiledRoute[];
  /** From a server with `tls.httpsRedirect`: every request gets 301 to https (Envoy `require_tls`). */
  readonly requireTls?: boolean;
}

/** Vhosts looked up as Envoy does: exact, then the longest `*.suffix`, then `*`. */
export interface RouteTable {
  readonly name: string; // `http.8080`
  readonly exact: ReadonlyMap<string, VirtualHost>;
  /** Wildcard vhosts by suffix (`.example.com`), longest suffix first. */
  readonly suffixes: readonly (readonly [string, VirtualHost])[];
  readonly any?: VirtualHost;
}

export interface CompiledServer {
  readonly gateway: string; // ns/name
  readonly portNumber: number; // Gateway server port.number (the Service port)
  readonly portName: string;
  readonly protocol: string;
  readonly hosts: readonly string[];
  readonly tls?: ServerTLSSettings;
  readonly origin: Origin;
}

/**
 * How a listen port reads its connections: `HTTP` plaintext HTTP/1.1 and h2c; `TCP` opaque bytes
 * routed by VirtualService `tcp`; `TLS` starts with a ClientHello whose SNI picks a filter chain
 * (passthrough, or termination followed by HTTP or TCP routing).
 */
export type ListenerFamily = 'HTTP' | 'TCP' | 'TLS' | 'CAPTURE' | 'INBOUND';

/** Sidecar inbound (virtualInbound, 15006): the ports the proxy's own Services expose. */
export interface InboundDef {
  /**
   * By (target) port: whether it speaks HTTP, and the Service the port's metrics name as
   * destination_service (the first, by namespace and name, of those exposing it). Other ports are
   * InboundPassthroughCluster.
   */
  readonly ports: ReadonlyMap<number, { readonly http: boolean; readonly service: ClusterDef['service'] }>;
  /**
   * With a mesh identity (`--mesh-certs`): mesh peers' mTLS is terminated here (Istio's inbound
   * filter chain for ISTIO_MUTUAL clients, PERMISSIVE: plaintext and other TLS still pass).
   */
  readonly mtls?: ServerCredentialSource;
}

/** Sidecar mode: how the capture listener (virtualOutbound, 15001) routes what it captures. */
export interface OutboundDef {
  /** HTTP route tables by original destination port (mesh VirtualServices, registry services, catch-all). */
  readonly http: ReadonlyMap<number, RouteTable>;
  /** The catch-all for a port without a table: allow_any (PassthroughCluster) or block_all. */
  readonly fallbackHttp: RouteTable;
  /** TLS by SNI on a port: registry hosts with TLS/HTTPS ports and mesh `tls` routes. */
  readonly tls: ReadonlyMap<number, readonly FilterChain[]>;
  /** TCP by original destination `address|port` (ServiceEntry addresses, Service clusterIP): a cluster. */
  readonly tcp: ReadonlyMap<string, string>;
  /** Per-port capture (no original address): TCP ports that exactly one service owns, to its cluster. */
  readonly tcpByPort: ReadonlyMap<number, string>;
  /** Ports whose services speak HTTP: no sniffing needed there (addresses no service claims). */
  readonly httpPorts: ReadonlySet<number>;
  /** Ports every service on which declares an opaque protocol (TCP, MONGO, ...): proxied at once, unsniffed. */
  readonly tcpPorts: ReadonlySet<number>;
  /** Known destinations by `ip|port` (ServiceEntry addresses, /32 included; Service clusterIP): Istio's per-VIP listeners. */
  readonly vips: ReadonlyMap<string, OutboundDestination>;
  /** ServiceEntry CIDR `addresses` on their ports, longest prefix first (tried after `vips`). */
  readonly cidrs: readonly OutboundCidr[];
  readonly policy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
}

/** One service port reached at a known address: how its connections are read and where they go. */
export interface OutboundDestination {
  readonly host: string;
  readonly port: number;
  /**
   * `HTTP` parsed at once (h2c or HTTP/1), `TCP` proxied at once whatever the bytes, `TLS` by
   * ClientHello (chains, else the service), `AUTO` (no declared protocol) sniffed.
   */
  readonly protocol: 'HTTP' | 'TCP' | 'TLS' | 'AUTO';
  /** Opaque bytes: the mesh VirtualService `tcp` routes for the host (first admitting wins), then the service's cluster. */
  readonly tcpRoutes: readonly L4Route[];
  /** TLS: mesh `tls` routes for the host by SNI, then a chain without names (any SNI, or none) to the service's cluster. */
  readonly chains: readonly FilterChain[];
}

/** A ServiceEntry CIDR address on one of its ports. */
export interface OutboundCidr {
  readonly subnet: SubnetSet;
  readonly prefix: number;
  readonly port: number;
  readonly destination: OutboundDestination;
}

/** A set of CIDR blocks, precompiled; empty matches every address. */
export interface SubnetSet {
  readonly cidrs: readonly string[];
  readonly re?: { check(address: string): boolean };
}

/** A VirtualService `tcp` route, or one `tls` match: its destination is chosen once per connection. */
export interface L4Route {
  /** `<namespace>.<virtualservice>.<index>` (admin and logs). */
  readonly name: string;
  readonly destinationSubnets: SubnetSet;
  readonly destinations: readonly CompiledDestination[];
  readonly totalWeight: number;
  readonly origin: Origin;
}

/** What a TLS listener does with a connection once its ClientHello picked this chain. */
export type ChainAction =
  | { readonly type: 'passthrough'; readonly route: L4Route }
  | {
    readonly type: 'terminate';
    readonly server: CompiledServer;
    /** Certificate, key and client CA, from a Secret or files. */
    readonly credentials: ServerCredentialSource;
    /** HTTPS: HTTP routing of this server's hosts. TLS (SIMPLE/MUTUAL): TCP routes. */
    readonly protocol: 'HTTP' | 'TCP';
    readonly routes?: RouteTable;
    readonly tcpRoutes?: readonly L4Route[];
  };

/** Envoy's filter chain match, reduced to what Istio gateways use: SNI and destination address. */
export interface FilterChain {
  readonly name: string;
  /** Lower-case exact names or `*.suffix`; empty matches every SNI and none. */
  readonly serverNames: readonly string[];
  readonly destinationSubnets: SubnetSet;
  readonly action: ChainAction;
}

export interface ListenerDef {
  /** `0.0.0.0_8080` */
  readonly name: string;
  readonly bind: string;
  readonly port: number;
  readonly family: ListenerFamily;
  readonly servers: readonly CompiledServer[];
  /** HTTP listeners. */
  readonly routes?: RouteTable;
  /** TCP listeners: the first route whose destinationSubnets admit the connection wins. */
  readonly tcpRoutes?: readonly L4Route[];
  /** TLS listeners, in config order (the matcher picks the most specific). */
  readonly chains?: readonly FilterChain[];
  /** The sidecar's capture listener. */
  readonly outbound?: OutboundDef;
  /**
   * Per-port capture (the fallback without SO_ORIGINAL_DST): the application port this listener
   * stands for; the original address is unknown (passthrough resolves the Host or SNI).
   */
  readonly fallbackPort?: number;
  /** The sidecar's inbound capture listener. */
  readonly inbound?: InboundDef;
}

export interface EndpointAddress {
  /** IP, or a DNS name the registry resolves. */
  readonly address: string;
  readonly port: number;
  readonly labels: Dict<string>;
  readonly weight: number;
  /** The Pod's controller or the WorkloadEntry behind the endpoint, for metrics (absent when unknown). */
  readonly workload?: WorkloadRef;
}

export type LbPolicy = 'LEAST_REQUEST' | 'ROUND_ROBIN' | 'RANDOM' | 'PASSTHROUGH' | 'RING_HASH';

/** DestinationRule consistentHash: where the hash key comes from, and the ring size. */
export interface HashPolicy {
  readonly header?: string; // lower-case
  readonly cookie?: { readonly name: string; readonly path?: string; readonly ttlSeconds?: number };
  readonly sourceIp?: boolean;
  readonly queryParameter?: string;
  readonly ringSize: number;
}

export interface ClusterPolicy {
  readonly loadBalancer?: LoadBalancerSettings;
  readonly connectionPool?: ConnectionPoolSettings;
  readonly outlierDetection?: OutlierDetection;
  readonly tls?: ClientTLSSettings;
}

/** DestinationRule connectionPool as Envoy's circuit breakers (Istio's defaults: effectively unlimited). */
export interface CircuitBreakerLimits {
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
  readonly maxRetries: number;
  /** 0 = unlimited. */
  readonly maxRequestsPerConnection: number;
  /** Upstream connection idle timeout (http.idleTimeout; Envoy's default 1 h). */
  readonly idleTimeoutMs: number;
}

/** DestinationRule outlierDetection; thresholds of 0 are off. */
export interface OutlierPolicy {
  readonly consecutive5xx: number;
  readonly consecutiveGateway: number;
  readonly consecutiveLocalOrigin: number;
  readonly splitLocalOrigin: boolean;
  readonly intervalMs: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionPercent: number;
  readonly minHealthPercent: number;
}

export interface ClusterDef {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly subset?: string;
  readonly service: { readonly host: string; readonly name: string; readonly namespace: string };
  /** A mesh service (Kubernetes Service, MESH_INTERNAL ServiceEntry): its workloads get this proxy's peer metadata. */
  readonly meshInternal?: true;
  readonly protocol: string;
  readonly resolution: Resolution;
  readonly lb: LbPolicy;
  readonly hash?: HashPolicy;
  readonly connectTimeoutMs: number;
  readonly breaker: CircuitBreakerLimits;
  /** connectionPool.tcp.tcpKeepalive.time (Istio's default when the block is present: the OS's, 2 h). */
  readonly keepaliveMs?: number;
  readonly outlier?: OutlierPolicy;
  /** DestinationRule connectionPool.tcp.idleTimeout, when set (else the proxy default, 1 h). */
  readonly idleTimeoutMs?: number;
  readonly endpoints: readonly EndpointAddress[];
  readonly policy: ClusterPolicy;
  /**
   * An original-destination cluster (resolution NONE without endpoints, or a headless Service): a
   * sidecar goes to the address the application dialled; otherwise the endpoints are load balanced,
   * and without endpoints the request's own host (SNI, or Host without its port) is resolved and
   * reached on this port.
   */
  readonly originalDstPort?: number;
  /** DestinationRule tls SIMPLE/MUTUAL/ISTIO_MUTUAL: originate TLS to the endpoints. */
  readonly upstreamTls?: UpstreamTls;
  /**
   * HTTP requests go upstream over HTTP/2, as Envoy's cluster with http2_protocol_options: the port's
   * protocol is HTTP2/GRPC/GRPC-WEB (ServiceEntry protocol, Service port name `http2-*`/`grpc-*` or
   * appProtocol), or connectionPool.http.h2UpgradePolicy is UPGRADE. h2c with prior knowledge in
   * plaintext, ALPN h2 over TLS.
   */
  readonly http2?: boolean;
  /** Where the DestinationRule that shaped it came from, if any. */
  readonly destinationRule?: string;
}

export interface MeshSettings {
  readonly accessLogFile: string;
  readonly accessLogEncoding: 'TEXT' | 'JSON';
  readonly accessLogFormat: string;
  readonly connectTimeoutMs: number;
  readonly outboundPolicy: 'REGISTRY_ONLY' | 'ALLOW_ANY' | 'ALLOW_ANY_DYNAMIC_DNS';
  readonly dnsRefreshRateMs: number;
  /** How long a captured or inbound connection may take to show its protocol (mesh protocolDetectionTimeout; 1 s when unset or 0). */
  readonly protocolDetectionMs: number;
  readonly defaultRetry: RetryPolicy;
  /** Mirrors keep the Host as is (Istio 1.28+: DISABLE_SHADOW_HOST_SUFFIX, here in defaultConfig.proxyMetadata). */
  readonly disableShadowHostSuffix: boolean;
}

export interface Snapshot {
  readonly version: number;
  readonly createdAt: string;
  readonly mesh: MeshSettings;
  /** By bind port. */
  readonly listeners: ReadonlyMap<number, ListenerDef>;
  readonly clusters: ReadonlyMap<string, ClusterDef>;
  readonly services: ReadonlyMap<string, ServiceDef>;
  /** Hash of the inputs, to skip no-op reloads. */
  readonly fingerprint: string;
  readonly resourceCount: number;
}
