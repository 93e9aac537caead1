// Istio and Kubernetes resources as meshgate reads them: plain readonly data, no methods.
// Field names follow the Istio API (networking.istio.io v1alpha3/v1beta1/v1, same schema).
// Optional fields stay optional here; defaults are applied when the config is compiled.

import type { ServiceDef } from '../serviceentry/services';

export type Dict<T> = { readonly [key: string]: T };

/** Where a resource came from, for messages: `file:line:col`. */
export interface SourcePos {
  readonly file: string;
  readonly line: number; // 1-based
  readonly col: number; // 1-based
}

export interface ObjectMeta {
  readonly name: string;
  readonly namespace: string; // defaulted to "default" by the loader when absent
  readonly labels?: Dict<string>;
  readonly annotations?: Dict<string>;
  readonly creationTimestamp?: string;
}

/** A loaded resource: what the YAML said, plus where each field was. */
export interface Resource<K extends string = string, S = unknown> {
  readonly kind: K;
  readonly apiVersion: string;
  readonly metadata: ObjectMeta;
  readonly spec: S;
  /** Position of the document start. */
  readonly source: SourcePos;
  /** Position of each field by path (`spec.http[0].route[0].destination.host`). */
  readonly positions: ReadonlyMap<string, SourcePos>;
  /** Order in which the loader met the resource (stands in for creationTimestamp when absent). */
  readonly order: number;
}

// ---------------------------------------------------------------- shared pieces

/** Istio StringMatch: exactly one of exact / prefix / regex (RE2, full-string). */
export interface StringMatch {
  readonly exact?: string;
  readonly prefix?: string;
  readonly regex?: string;
}

export interface PortSelector {
  readonly number?: number;
}

export interface Destination {
  readonly host: string;
  readonly subset?: string;
  readonly port?: PortSelector;
}

export interface Percent {
  readonly value?: number;
}

export interface HeaderOperations {
  readonly set?: Dict<string>;
  readonly add?: Dict<string>;
  readonly remove?: readonly string[];
}

export interface Headers {
  readonly request?: HeaderOperations;
  readonly response?: HeaderOperations;
}

// ---------------------------------------------------------------- Gateway

export interface ServerTLSSettings {
  readonly httpsRedirect?: boolean;
  readonly mode?: 'PASSTHROUGH' | 'SIMPLE' | 'MUTUAL' | 'AUTO_PASSTHROUGH' | 'ISTIO_MUTUAL' | 'OPTIONAL_MUTUAL';
  readonly serverCertificate?: string;
  readonly privateKey?: string;
  readonly caCertificates?: string;
  readonly caCrl?: string;
  readonly credentialName?: string;
  readonly credentialNames?: readonly string[];
  readonly subjectAltNames?: readonly string[];
  readonly verifyCertificateSpki?: readonly string[];
  readonly verifyCertificateHash?: readonly string[];
  readonly minProtocolVersion?: TLSProtocol;
  readonly maxProtocolVersion?: TLSProtocol;
  readonly cipherSuites?: readonly string[];
}

export type TLSProtocol = 'TLS_AUTO' | 'TLSV1_0' | 'TLSV1_1' | 'TLSV1_2' | 'TLSV1_3';

export interface GatewayPort {
  readonly number: number;
  readonly protocol: string;
  readonly name?: string;
  readonly targetPort?: number;
}

export interface GatewayServer {
  readonly port: GatewayPort;
  readonly hosts: readonly string[];
  readonly bind?: string;
  readonly defaultEndpoint?: string;
  readonly tls?: ServerTLSSettings;
  readonly name?: string;
}

export interface GatewaySpec {
  readonly selector?: Dict<string>;
  readonly servers: readonly GatewayServer[];
}

// ---------------------------------------------------------------- VirtualService

export interface HTTPMatchRequest {
  readonly name?: string;
  readonly uri?: StringMatch;
  readonly scheme?: StringMatch;
  readonly method?: StringMatch;
  readonly authority?: StringMatch;
  readonly headers?: Dict<StringMatch>;
  readonly port?: number;
  readonly sourceLabels?: Dict<string>;
  readonly gateways?: readonly string[];
  readonly queryParams?: Dict<StringMatch>;
  readonly ignoreUriCase?: boolean;
  readonly withoutHeaders?: Dict<StringMatch>;
  readonly sourceNamespace?: string;
  readonly statPrefix?: string;
}

export interface HTTPRouteDestination {
  readonly destination: Destination;
  readonly weight?: number;
  readonly headers?: Headers;
}

export interface HTTPRedirect {
  readonly uri?: string;
  readonly authority?: string;
  readonly port?: number;
  readonly derivePort?: 'FROM_PROTOCOL_DEFAULT' | 'FROM_REQUEST_PORT';
  readonly scheme?: string;
  readonly redirectCode?: number;
}

export interface HTTPDirectResponse {
  readonly status: number;
  readonly body?: { readonly string?: string; readonly bytes?: string };
}

export interface HTTPRewrite {
  readonly uri?: string;
  readonly authority?: string;
  readonly uriRegexRewrite?: { readonly match: string; readonly rewrite: string };
}

export interface HTTPRetry {
  readonly attempts?: number;
  readonly perTryTimeout?: string;
  readonly retryOn?: string;
  readonly retryRemoteLocalities?: boolean;
  readonly retryIgnorePreviousHosts?: boolean;
  readonly backoff?: string;
}

export interface HTTPFaultInjection {
  readonly delay?: {
    readonly fixedDelay?: string;
    readonly exponentialDelay?: string;
    readonly percentage?: Percent;
    readonly percent?: number;
  };
  readonly abort?: {
    readonly httpStatus?: number;
    readonly grpcStatus?: string;
    readonly http2Error?: string;
    readonly percentage?: Percent;
  };
}

export interface HTTPMirrorPolicy {
  readonly destination: Destination;
  readonly percentage?: Percent;
}

export interface CorsPolicy {
  readonly allowOrigins?: readonly StringMatch[];
  readonly allowOrigin?: readonly string[];
  readonly allowMethods?: readonly string[];
  readonly allowHeaders?: readonly string[];
  readonly exposeHeaders?: readonly string[];
  readonly maxAge?: string;
  readonly allowCredentials?: boolean;
  readonly unmatchedPreflights?: 'UNSPECIFIED' | 'FORWARD' | 'IGNORE';
}

export interface HTTPRoute {
  readonly name?: string;
  readonly match?: readonly HTTPMatchRequest[];
  readonly route?: readonly HTTPRouteDestination[];
  readonly redirect?: HTTPRedirect;
  readonly directResponse?: HTTPDirectResponse;
  readonly delegate?: { readonly name?: string; readonly namespace?: string };
  readonly rewrite?: HTTPRewrite;
  readonly timeout?: string;
  readonly retries?: HTTPRetry;
  readonly fault?: HTTPFaultInjection;
  readonly mirror?: Destination;
  readonly mirrors?: readonly HTTPMirrorPolicy[];
  readonly mirrorPercentage?: Percent;
  readonly mirrorPercent?: number;
  readonly mirror_percent?: number;
  readonly corsPolicy?: CorsPolicy;
  readonly headers?: Headers;
}

export interface L4MatchAttributes {
  readonly destinationSubnets?: readonly string[];
  readonly port?: number;
  readonly sourceLabels?: Dict<string>;
  readonly gateways?: readonly string[];
  readonly sourceNamespace?: string;
  readonly sourceSubnet?: string;
}

export interface TLSMatchAttributes extends L4MatchAttributes {
  readonly sniHosts: readonly string[];
}

export interface RouteDestination {
  readonly destination: Destination;
  readonly weight?: number;
}

export interface TCPRoute {
  readonly match?: readonly L4MatchAttributes[];
  readonly route?: readonly RouteDestination[];
}

export interface TLSRoute {
  readonly match: readonly TLSMatchAttributes[];
  readonly route?: readonly RouteDestination[];
}

export interface VirtualServiceSpec {
  readonly hosts?: readonly string[];
  readonly gateways?: readonly string[];
  readonly http?: readonly HTTPRoute[];
  readonly tls?: readonly TLSRoute[];
  readonly tcp?: readonly TCPRoute[];
  readonly exportTo?: readonly string[];
}

// ---------------------------------------------------------------- DestinationRule

export type SimpleLB = 'UNSPECIFIED' | 'LEAST_CONN' | 'RANDOM' | 'PASSTHROUGH' | 'ROUND_ROBIN' | 'LEAST_REQUEST';

export interface LoadBalancerSettings {
  readonly simple?: SimpleLB;
  readonly consistentHash?: {
    readonly httpHeaderName?: string;
    readonly httpCookie?: { readonly name: string; readonly path?: string; readonly ttl?: string };
    readonly useSourceIp?: boolean;
    readonly httpQueryParameterName?: string;
    readonly ringHash?: { readonly minimumRingSize?: number };
    readonly maglev?: { readonly tableSize?: number };
    readonly minimumRingSize?: number;
  };
  readonly localityLbSetting?: unknown;
  readonly warmupDurationSecs?: string;
  readonly warmup?: unknown;
}

export interface ConnectionPoolSettings {
  readonly tcp?: {
    readonly maxConnections?: number;
    readonly connectTimeout?: string;
    readonly tcpKeepalive?: { readonly probes?: number; readonly time?: string; readonly interval?: string };
    readonly maxConnectionDuration?: string;
    readonly idleTimeout?: string;
  };
  readonly http?: {
    readonly http1MaxPendingRequests?: number;
    readonly http2MaxRequests?: number;
    readonly maxRequestsPerConnection?: number;
    readonly maxRetries?: number;
    readonly idleTimeout?: string;
    readonly h2UpgradePolicy?: 'DEFAULT' | 'DO_NOT_UPGRADE' | 'UPGRADE';
    readonly useClientProtocol?: boolean;
    readonly maxConcurrentStreams?: number;
  };
}

export interface OutlierDetection {
  readonly splitExternalLocalOriginErrors?: boolean;
  readonly consecutiveLocalOriginFailures?: number;
  readonly consecutiveGatewayErrors?: number;
  readonly consecutive5xxErrors?: number;
  readonly consecutiveErrors?: number;
  readonly interval?: string;
  readonly baseEjectionTime?: string;
  readonly maxEjectionPercent?: number;
  readonly minHealthPercent?: number;
}

export interface ClientTLSSettings {
  readonly mode?: 'DISABLE' | 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  readonly clientCertificate?: string;
  readonly privateKey?: string;
  readonly caCertificates?: string;
  readonly credentialName?: string;
  readonly subjectAltNames?: readonly string[];
  readonly sni?: string;
  readonly insecureSkipVerify?: boolean;
  readonly caCrl?: string;
}

export interface PortTrafficPolicy {
  readonly port?: PortSelector;
  readonly loadBalancer?: LoadBalancerSettings;
  readonly connectionPool?: ConnectionPoolSettings;
  readonly outlierDetection?: OutlierDetection;
  readonly tls?: ClientTLSSettings;
}

export interface TrafficPolicy extends Omit<PortTrafficPolicy, 'port'> {
  readonly portLevelSettings?: readonly PortTrafficPolicy[];
  readonly tunnel?: unknown;
  readonly proxyProtocol?: unknown;
  readonly retryBudget?: unknown;
}

export interface Subset {
  readonly name: string;
  readonly labels?: Dict<string>;
  readonly trafficPolicy?: TrafficPolicy;
}

export interface DestinationRuleSpec {
  readonly host: string;
  readonly trafficPolicy?: TrafficPolicy;
  readonly subsets?: readonly Subset[];
  readonly exportTo?: readonly string[];
  readonly workloadSelector?: { readonly matchLabels?: Dict<string> };
}

// ---------------------------------------------------------------- ServiceEntry / WorkloadEntry

export interface ServicePort {
  readonly number: number;
  readonly protocol?: string;
  readonly name?: string;
  readonly targetPort?: number;
}

export interface WorkloadEntrySpec {
  readonly address?: string;
  readonly ports?: Dict<number>;
  readonly labels?: Dict<string>;
  readonly network?: string;
  readonly locality?: string;
  readonly weight?: number;
  readonly serviceAccount?: string;
}

export type Resolution = 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN' | 'DYNAMIC_DNS';

export interface ServiceEntrySpec {
  readonly hosts: readonly string[];
  readonly addresses?: readonly string[];
  readonly ports?: readonly ServicePort[];
  readonly location?: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  readonly resolution?: Resolution;
  readonly endpoints?: readonly WorkloadEntrySpec[];
  readonly workloadSelector?: { readonly labels?: Dict<string> };
  readonly exportTo?: readonly string[];
  readonly subjectAltNames?: readonly string[];
}

// ---------------------------------------------------------------- Sidecar (read now, applied by sidecar mode)

export interface SidecarSpec {
  readonly workloadSelector?: { readonly labels?: Dict<string> };
  readonly ingress?: readonly unknown[];
  readonly egress?: readonly { readonly port?: unknown; readonly bind?: string; readonly captureMode?: string; readonly hosts: readonly string[] }[];
  readonly outboundTrafficPolicy?: { readonly mode?: 'REGISTRY_ONLY' | 'ALLOW_ANY'; readonly egressProxy?: Destination };
  readonly inboundConnectionPool?: unknown;
}

// ---------------------------------------------------------------- Kubernetes core

export interface KubeServicePort {
  readonly name?: string;
  readonly port: number;
  readonly targetPort?: number | string;
  readonly protocol?: string;
  readonly nodePort?: number;
  readonly appProtocol?: string;
}

export interface KubeServiceSpec {
  readonly selector?: Dict<string>;
  readonly ports?: readonly KubeServicePort[];
  readonly type?: string;
  readonly clusterIP?: string;
  readonly externalName?: string;
}

export interface SecretSpec {
  readonly type?: string;
  readonly data?: Dict<string>;
  readonly stringData?: Dict<string>;
}

export interface ConfigMapSpec {
  readonly data?: Dict<string>;
}

// ---------------------------------------------------------------- Mesh config (the `mesh` key of ConfigMap istio-system/istio)

export interface MeshConfig {
  readonly accessLogFile?: string;
  readonly accessLogEncoding?: 'TEXT' | 'JSON';
  readonly accessLogFormat?: string;
  readonly connectTimeout?: string;
  readonly outboundTrafficPolicy?: { readonly mode?: 'REGISTRY_ONLY' | 'ALLOW_ANY' | 'ALLOW_ANY_DYNAMIC_DNS'; readonly egressProxy?: Destination };
  readonly dnsRefreshRate?: string;
  readonly protocolDetectionTimeout?: string;
  readonly enableAutoMtls?: boolean;
  readonly enableTracing?: boolean;
  readonly defaultHttpRetryPolicy?: HTTPRetry;
  readonly defaultConfig?: Dict<unknown>;
  readonly [other: string]: unknown;
}

// ---------------------------------------------------------------- the set the loader produces

export type GatewayResource = Resource<'Gateway', GatewaySpec>;
export type VirtualServiceResource = Resource<'VirtualService', VirtualServiceSpec>;
export type DestinationRuleResource = Resource<'DestinationRule', DestinationRuleSpec>;
export type ServiceEntryResource = Resource<'ServiceEntry', ServiceEntrySpec>;
export type WorkloadEntryResource = Resource<'WorkloadEntry', WorkloadEntrySpec>;
export type SidecarResource = Resource<'Sidecar', SidecarSpec>;
export type ServiceResource = Resource<'Service', KubeServiceSpec>;
/** For Secrets and ConfigMaps `spec` carries the top-level `type`/`data`/`stringData`. */
export type SecretResource = Resource<'Secret', SecretSpec>;
export type ConfigMapResource = Resource<'ConfigMap', ConfigMapSpec>;

export interface ResourceSet {
  readonly gateways: readonly GatewayResource[];
  readonly virtualServices: readonly VirtualServiceResource[];
  readonly destinationRules: readonly DestinationRuleResource[];
  readonly serviceEntries: readonly ServiceEntryResource[];
  readonly workloadEntries: readonly WorkloadEntryResource[];
  readonly sidecars: readonly SidecarResource[];
  readonly services: readonly ServiceResource[];
  readonly secrets: readonly SecretResource[];
  readonly configMaps: readonly ConfigMapResource[];
  /** Parsed from ConfigMap istio-system/istio `data.mesh`, or {} when absent. */
  readonly mesh: MeshConfig;
  /** Position of the mesh config for messages (undefined when absent). */
  readonly meshSource?: SourcePos;
  /**
   * Registry services from the Kubernetes API source (Services with their ready EndpointSlice
   * endpoints and Pod labels, built by src/kube/registry.ts); they take the place of what `services`
   * would give for the same host. Absent for the file source.
   */
  readonly kubernetesServices?: readonly ServiceDef[];
}

export type Severity = 'error' | 'warning';

/** One problem found in the config; printed as `file:line:col: Kind namespace/name: field.path: message`. */
export interface ConfigIssue {
  readonly severity: Severity;
  readonly file: string;
  readonly line: number;
  readonly col: number;
  readonly kind: string; // "" when the problem is not inside a resource (YAML syntax)
  readonly namespace: string;
  readonly name: string;
  readonly path: string; // "" when the problem concerns the whole resource
  readonly message: string;
}
