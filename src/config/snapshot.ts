// The compiled, frozen configuration the data path reads. Built by compile.ts (pure), published by
// store.ts (the only place that swaps it). Plain data, except the precompiled regex objects held
// inside matchers (immutable in use; `re` keys are dropped from the admin config dump).

import type {
  CorsPolicy, Dict, HTTPFaultInjection, HTTPMirrorPolicy, HTTPRedirect, HTTPRewrite, Headers, LoadBalancerSettings,
  ConnectionPoolSettings, OutlierDetection, ClientTLSSettings, Resolution, ServerTLSSettings,
} from './types';
import type { ServiceDef } from '../serviceentry/services';

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
  | { readonly type: 'direct'; readonly status: number; readonly body: string };

export interface RetryPolicy {
  readonly attempts: number;
  readonly perTryTimeoutMs: number; // 0 = the route timeout
  readonly retryOn: readonly string[];
  readonly retriableStatusCodes: readonly number[];
}

export interface CompiledRoute {
  readonly name: string;
  /** null matches every request. */
  readonly match: CompiledMatch | null;
  readonly action: RouteAction;
  readonly timeoutMs: number; // 0 = none (Istio default)
  readonly retry: RetryPolicy;
  readonly headers?: Headers;
  readonly rewrite?: HTTPRewrite;
  readonly fault?: HTTPFaultInjection;
  readonly mirrors?: readonly HTTPMirrorPolicy[];
  readonly cors?: CorsPolicy;
  readonly origin: Origin;
}

export interface VirtualHost {
  /** `host:port` as Istio names gateway vhosts. */
  readonly name: string;
  readonly domain: string;
  readonly routes: readonly CompiledRoute[];
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

export type ListenerFamily = 'HTTP' | 'TCP' | 'TLS';

export interface ListenerDef {
  /** `0.0.0.0_8080` */
  readonly name: string;
  readonly bind: string;
  readonly port: number;
  readonly family: ListenerFamily;
  readonly servers: readonly CompiledServer[];
  readonly routes?: RouteTable;
}

export interface EndpointAddress {
  /** IP, or a DNS name the registry resolves. */
  readonly address: string;
  readonly port: number;
  readonly labels: Dict<string>;
  readonly weight: number;
}

export type LbPolicy = 'LEAST_REQUEST' | 'ROUND_ROBIN' | 'RANDOM' | 'PASSTHROUGH';

export interface ClusterPolicy {
  readonly loadBalancer?: LoadBalancerSettings;
  readonly connectionPool?: ConnectionPoolSettings;
  readonly outlierDetection?: OutlierDetection;
  readonly tls?: ClientTLSSettings;
}

export interface ClusterDef {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly subset?: string;
  readonly service: { readonly host: string; readonly name: string; readonly namespace: string };
  readonly protocol: string;
  readonly resolution: Resolution;
  readonly lb: LbPolicy;
  readonly connectTimeoutMs: number;
  readonly endpoints: readonly EndpointAddress[];
  readonly policy: ClusterPolicy;
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
  readonly defaultRetry: RetryPolicy;
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
