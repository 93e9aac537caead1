// ResourceSet -> Snapshot. Pure: no I/O, no clocks except the timestamp passed in. All the expensive
// work (host intersection, regex compilation, DestinationRule merging) happens here, once per config
// change, so the per-request path only does map look-ups and precompiled matching.

import { createHash } from 'node:crypto';
import { BlockList } from 'node:net';
import { RE2JS } from 're2js';
import type {
  Dict, DestinationRuleResource, GatewayResource, HTTPMatchRequest, HTTPRoute, ResourceSet, StringMatch,
  TrafficPolicy, VirtualServiceResource, Resource, SourcePos,
} from './types';
import type {
  CircuitBreakerLimits, ClusterDef, ClusterPolicy, CompiledDestination, HashPolicy, OutlierPolicy, CompiledMatch, CompiledRoute, CompiledServer, FilterChain, HeaderMatcher,
  L4Route, LbPolicy, ListenerDef, ListenerFamily, MeshSettings, Origin, OutboundCidr, OutboundDestination, RetryPolicy, RouteAction, RouteTable, Snapshot,
  StringMatcher, SubnetSet, VirtualHost,
} from './snapshot';
import {
  clusterName, gatewayKey, hostMatches, intersectHosts, isIP, MAX_TIMER_MS, parseDuration, parseGatewayRef, parseServerHost, resolveHost,
} from './names';
import { within } from './compile-error';
import { positionOf } from './validate';
import { buildServices, portEndpoints, protocolFromPortName, subsetMatches, type ServiceDef } from '../serviceentry/services';
import type { FallbackPort } from '../sidecar/fallback';
import { serverCredentials, upstreamTls, type MeshCertFiles, type ServerCredentialSource } from '../tls/secrets';

/** Who this gateway is: which Gateways select it and how server ports map to listen ports. */
export interface GatewayIdentity {
  readonly labels: Dict<string>;
  readonly namespace: string;
  /** Explicit `--port-map` overrides: Gateway server port -> listen port. */
  readonly portMap: ReadonlyMap<number, number>;
  readonly bind: string;
  /** Sidecar mode: one capture listener on this port instead of Gateway listeners. */
  readonly capturePort?: number;
  /** Sidecar mode: the inbound capture listener (15006), when inbound traffic is captured too. */
  readonly inboundPort?: number;
  /** Sidecar mode without SO_ORIGINAL_DST: one capture listener per application port instead of one for all. */
  readonly fallback?: readonly FallbackPort[];
  /** The mesh identity (`--mesh-certs`): ISTIO_MUTUAL servers and DestinationRules use it. */
  readonly meshCerts?: MeshCertFiles;
}

export interface CompileNote {
  readonly severity: 'warning' | 'info';
  readonly resource: string;
  readonly message: string;
  /** Where in the resource's file (a field's position), when known; printed as config issues are (formatNote). */
  readonly at?: SourcePos;
  /** The field the note is about (`spec.servers[0].tls.credentialName`), with `at`. */
  readonly path?: string;
}

export interface CompileResult {
  readonly snapshot: Snapshot;
  readonly notes: readonly CompileNote[];
}

const HTTP_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB']);

export const DEFAULT_RETRY_ON = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'];

function originOf(r: Resource, path: string): Origin {
  const pos = r.positions.get(path) ?? r.source;
  return { resource: `${r.kind} ${r.metadata.namespace}/${r.metadata.name}`, file: pos.file, line: pos.line, path };
}

/**
 * A duration for a timer: Node's timers take at most MAX_TIMER_MS and fire after 1 ms when given
 * more, so a longer one (a `timeout: 720h`, valid in Istio) is capped there, as good as never.
 */
function timerMs(text: string | undefined): number | undefined {
  const d = text === undefined ? undefined : parseDuration(text);
  return d === undefined ? undefined : Math.min(d, MAX_TIMER_MS);
}

function ms(text: string | undefined, fallback: number): number {
  return timerMs(text) ?? fallback;
}

// ------------------------------------------------------------------ mesh

/** How long protocol detection waits for a client's first bytes unless the mesh config says otherwise. */
export const DEFAULT_PROTOCOL_DETECTION_MS = 1000;

export function compileMesh(set: ResourceSet): MeshSettings {
  const m = set.mesh;
  const retry = m.defaultHttpRetryPolicy;
  return {
    accessLogFile: m.accessLogFile ?? '',
    accessLogEncoding: m.accessLogEncoding === 'JSON' ? 'JSON' : 'TEXT',
    accessLogFormat: m.accessLogFormat ?? '',
    connectTimeoutMs: ms(m.connectTimeout, 10_000),
    outboundPolicy: m.outboundTrafficPolicy?.mode ?? 'ALLOW_ANY',
    dnsRefreshRateMs: ms(m.dnsRefreshRate, 60_000),
    // Istio's 0 (its default) means "no timeout": a connection that shows nothing would wait for ever;
    // meshgate keeps its 1 s then (a validation warning says so).
    protocolDetectionMs: ms(m.protocolDetectionTimeout, 0) > 0 ? ms(m.protocolDetectionTimeout, 0) : DEFAULT_PROTOCOL_DETECTION_MS,
    disableShadowHostSuffix: String((m.defaultConfig?.['proxyMetadata'] as Dict<unknown> | undefined)?.['DISABLE_SHADOW_HOST_SUFFIX'] ?? '').toLowerCase() === 'true',
    defaultRetry: compileRetry(retry, {
      attempts: 2, perTryTimeoutMs: 0, retryOn: DEFAULT_RETRY_ON, retriableStatusCodes: [],
    }),
  };
}

function compileRetry(r: HTTPRoute['retries'], fallback: RetryPolicy): RetryPolicy {
  if (!r) return fallback;
  const retryOn: string[] = [];
  const codes: number[] = [];
  for (const part of (r.retryOn ?? fallback.retryOn.join(',')).split(',')) {
    const p = part.trim();
    if (!p) continue;
    if (/^\d{3}$/.test(p)) codes.push(Number(p));
    else retryOn.push(p);
  }
  if (codes.length > 0 && !retryOn.includes('retriable-status-codes')) retryOn.push('retriable-status-codes');
  return {
    attempts: r.attempts ?? fallback.attempts,
    perTryTimeoutMs: ms(r.perTryTimeout, 0),
    retryOn,
    retriableStatusCodes: codes,
  };
}

// ------------------------------------------------------------------ matchers

function stringMatcher(m: StringMatch | undefined, ignoreCase = false): StringMatcher | undefined {
  if (!m) return undefined;
  if (m.exact !== undefined) return { kind: 'exact', value: ignoreCase ? m.exact.toLowerCase() : m.exact };
  if (m.prefix !== undefined) return { kind: 'prefix', value: ignoreCase ? m.prefix.toLowerCase() : m.prefix };
  if (m.regex !== undefined) {
    if (m.regex === '*') return { kind: 'present', value: '' };
    // ignoreUriCase does not reach regexes: Envoy ignores case_sensitive for safe_regex, and Istio adds no (?i).
    const re = RE2JS.compile(m.regex);
    return { kind: 'regex', value: m.regex, re };
  }
  return { kind: 'present', value: '' };
}

function headerMatchers(map: Dict<StringMatch> | undefined): HeaderMatcher[] {
  if (!map) return [];
  return Object.keys(map).map((name) => ({ name: name.toLowerCase(), match: stringMatcher(map[name]) ?? { kind: 'present', value: '' } }));
}

function compileMatch(m: HTTPMatchRequest): CompiledMatch {
  const ignore = m.ignoreUriCase === true;
  return {
    name: m.name,
    uri: stringMatcher(m.uri, ignore),
    ignoreUriCase: ignore,
    scheme: stringMatcher(m.scheme),
    method: stringMatcher(m.method),
    authority: stringMatcher(m.authority),
    headers: headerMatchers(m.headers),
    withoutHeaders: headerMatchers(m.withoutHeaders),
    queryParams: headerMatchers(m.queryParams),
  };
}

function isCatchAll(r: CompiledRoute): boolean {
  const m = r.match;
  if (!m) return true;
  const uriAll = !m.uri || (m.uri.kind === 'prefix' && m.uri.value === '/') || (m.uri.kind === 'regex' && m.uri.value === '.*');
  return uriAll && !m.scheme && !m.method && !m.authority && m.headers.length === 0 && m.withoutHeaders.length === 0 && m.queryParams.length === 0;
}

// ------------------------------------------------------------------ routes

interface RouteContext {
  readonly vs: VirtualServiceResource;
  readonly gateway: string; // ns/name
  readonly serverPort: number;
  readonly services: ReadonlyMap<string, ServiceDef>;
  readonly mesh: MeshSettings;
  /** This proxy's labels and namespace: what match `sourceLabels` and `sourceNamespace` select. */
  readonly proxy: { readonly labels: Dict<string>; readonly namespace: string };
}

function destinationPort(host: string, explicit: number | undefined, ctx: RouteContext): number {
  if (explicit !== undefined) return explicit;
  const svc = ctx.services.get(host);
  if (svc && svc.ports.length === 1) return svc.ports[0]!.number;
  return ctx.serverPort;
}

function compileAction(route: HTTPRoute, ctx: RouteContext): RouteAction {
  if (route.redirect) return { type: 'redirect', redirect: route.redirect };
  if (route.directResponse) {
    const b = route.directResponse.body;
    const body = b?.string ?? (b?.bytes ? Buffer.from(b.bytes, 'base64').toString('latin1') : '');
    return { type: 'direct', status: route.directResponse.status, body };
  }
  const ns = ctx.vs.metadata.namespace;
  let dests = (route.route ?? []).map((d) => {
    const host = resolveHost(d.destination.host, ns);
    const port = destinationPort(host, d.destination.port?.number, ctx);
    return {
      cluster: clusterName(port, d.destination.subset, host),
      host,
      port,
      subset: d.destination.subset,
      weight: d.weight ?? 0,
      headers: d.headers,
    };
  });
  if (dests.length === 1) dests = [{ ...dests[0]!, weight: 100 }];
  else dests = dests.filter((d) => d.weight > 0);
  const totalWeight = dests.reduce((s, d) => s + d.weight, 0);
  return { type: 'route', destinations: dests, totalWeight };
}

/** Istio's default route name for unnamed routes: `<namespace>.<virtualservice>.<index>`. */
function routeName(route: HTTPRoute, index: number, match: HTTPMatchRequest | undefined, vs: VirtualServiceResource): string {
  const base = route.name ?? `${vs.metadata.namespace}.${vs.metadata.name}.${index}`;
  return match?.name ? `${base}.${match.name}` : base;
}

/** Does a match block apply to this gateway and server port (Istio filters these when building)? */
function matchApplies(m: HTTPMatchRequest, ctx: RouteContext): boolean {
  if (m.port !== undefined && m.port !== ctx.serverPort) return false;
  return sourceApplies(m, ctx.vs, ctx.gateway, ctx.proxy);
}

/**
 * Istio's source match (sourceMatchHTTP / sourceMatchTCP): a block naming `gateways` applies to those
 * gateways (its source labels are not looked at); one that does not applies to this proxy when its
 * `sourceLabels` are among the proxy's labels and its `sourceNamespace`, if any, is the proxy's.
 */
function sourceApplies(
  m: { readonly gateways?: readonly string[]; readonly sourceLabels?: Dict<string>; readonly sourceNamespace?: string },
  vs: VirtualServiceResource, gateway: string, proxy: { readonly labels: Dict<string>; readonly namespace: string },
): boolean {
  if (m.gateways && m.gateways.length > 0) return m.gateways.some((g) => gatewayKey(parseGatewayRef(g, vs.metadata.namespace)) === gateway);
  return labelsSelect(m.sourceLabels, proxy.labels) && (!m.sourceNamespace || m.sourceNamespace === proxy.namespace);
}

function compileHttpRoutes(ctx: RouteContext): CompiledRoute[] {
  const out: CompiledRoute[] = [];
  const http = ctx.vs.spec.http ?? [];
  http.forEach((route, index) => {
    const path = `spec.http[${index}]`;
    const base = {
      action: compileAction(route, ctx),
      timeoutMs: ms(route.timeout, 0),
      retry: compileRetry(route.retries, ctx.mesh.defaultRetry),
      headers: route.headers,
      fault: compileFault(route.fault),
      mirrors: mirrorsOf(route, ctx),
      cors: compileCors(route.corsPolicy),
      origin: originOf(ctx.vs, path),
    };
    const matches = route.match ?? [];
    if (matches.length === 0) {
      out.push({ ...base, name: routeName(route, index, undefined, ctx.vs), match: null, rewrite: compileRewrite(route.rewrite, undefined) });
      return;
    }
    for (const m of matches) {
      if (!matchApplies(m, ctx)) continue;
      const match = compileMatch(m);
      out.push({ ...base, name: routeName(route, index, m, ctx.vs), match, rewrite: compileRewrite(route.rewrite, match) });
    }
  });
  return out;
}

/**
 * Istio percentages: `percentage.value` (0-100, fractional), else the legacy integer `percent`, else
 * `absent` (mirrors: 100; fault delay and abort: 0, "if left unspecified, no request will be delayed/aborted").
 */
function fraction(p: { value?: number } | undefined, legacy: number | undefined, absent: number): number {
  const v = p?.value ?? legacy ?? absent;
  return Math.min(1, Math.max(0, v / 100));
}

const GRPC_CODES: Readonly<Record<string, number>> = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
};

/** A gRPC status name (own keys only: not `toString`), else its number 1..16, else UNKNOWN (2). */
function grpcCode(status: string): number {
  if (Object.hasOwn(GRPC_CODES, status)) return GRPC_CODES[status]!;
  const n = Number(status);
  return Number.isInteger(n) && n >= 1 && n <= 16 ? n : 2;
}

function compileFault(f: HTTPRoute['fault']): CompiledRoute['fault'] {
  if (!f || (!f.delay && !f.abort)) return undefined;
  const delayMs = timerMs(f.delay?.fixedDelay);
  const grpc = f.abort?.grpcStatus;
  return {
    ...(delayMs !== undefined ? { delayMs } : {}),
    delayFraction: f.delay ? fraction(f.delay.percentage, f.delay.percent, 0) : 0,
    ...(f.abort?.httpStatus !== undefined ? { abortStatus: f.abort.httpStatus } : {}),
    ...(grpc !== undefined ? { abortGrpc: grpcCode(grpc) } : {}),
    abortFraction: f.abort ? fraction(f.abort.percentage, undefined, 0) : 0,
  };
}

/** What `rewrite.uri` replaces: Envoy's prefix_rewrite on the matched prefix, or the exact path. */
function compileRewrite(r: HTTPRoute['rewrite'], match: CompiledMatch | undefined): CompiledRoute['rewrite'] {
  if (!r) return undefined;
  const uri = match?.uri;
  // A regex-matched route's rewrite.uri replaces the whole path (Envoy's prefix_rewrite on a regex route).
  const replaces = uri?.kind === 'exact' || uri?.kind === 'regex' ? { kind: 'exact' as const, value: uri.value }
    : { kind: 'prefix' as const, value: uri?.kind === 'prefix' ? uri.value : '/' };
  const rx = r.uriRegexRewrite;
  return {
    ...(r.uri !== undefined ? { uri: r.uri, replaces } : {}),
    ...(rx ? { regex: { pattern: rx.match, rewrite: rx.rewrite, re: regexRewriter(rx.match) } } : {}),
    ...(r.authority !== undefined ? { authority: r.authority } : {}),
  };
}

/**
 * Envoy's regex_rewrite: every match in the path replaced, `\\N` naming capture groups (RE2 style).
 * re2js takes `$N`, so literal `$` is escaped and `\\N` translated.
 */
function regexRewriter(pattern: string): { replaceAll(input: string, replacement: string): string } {
  const re = RE2JS.compile(pattern);
  return {
    replaceAll: (input, replacement) => re.matcher(input).replaceAll(replacement.replace(/\$/g, '$$$$').replace(/\\(\d)/g, '$$$1')),
  };
}

function compileCors(c: HTTPRoute['corsPolicy']): CompiledRoute['cors'] {
  if (!c) return undefined;
  const origins = [...(c.allowOrigins ?? []).map((m) => stringMatcher(m)), ...(c.allowOrigin ?? []).map((o) => stringMatcher({ exact: o }))]
    .filter((m): m is StringMatcher => m !== undefined);
  const maxAge = c.maxAge !== undefined ? parseDuration(c.maxAge) : undefined;
  return {
    allowOrigins: origins,
    ...(c.allowMethods?.length ? { allowMethods: c.allowMethods.join(',') } : {}),
    ...(c.allowHeaders?.length ? { allowHeaders: c.allowHeaders.join(',') } : {}),
    ...(c.exposeHeaders?.length ? { exposeHeaders: c.exposeHeaders.join(',') } : {}),
    ...(maxAge !== undefined ? { maxAgeSeconds: Math.floor(maxAge / 1000) } : {}),
    allowCredentials: c.allowCredentials === true,
    ...(c.unmatchedPreflights === 'IGNORE' ? { ignoreUnmatchedPreflights: true } : {}),
  };
}

function mirrorsOf(route: HTTPRoute, ctx: RouteContext): CompiledRoute['mirrors'] {
  const ns = ctx.vs.metadata.namespace;
  const list: { destination: HTTPRoute['mirror'] & object; fraction: number }[] = (route.mirrors ?? []).map((m) => ({ destination: m.destination, fraction: fraction(m.percentage, undefined, 100) }));
  if (route.mirror) {
    const legacy = route.mirror_percent ?? route.mirrorPercent;
    list.unshift({ destination: route.mirror, fraction: fraction(route.mirrorPercentage, legacy, 100) });
  }
  if (list.length === 0) return undefined;
  return list.map((m) => {
    const host = resolveHost(m.destination.host, ns);
    const port = destinationPort(host, m.destination.port?.number, ctx);
    return { cluster: clusterName(port, m.destination.subset, host), host, fraction: m.fraction };
  });
}

// ------------------------------------------------------------------ gateways -> listeners

function selects(gw: GatewayResource, labels: Dict<string>): boolean {
  const sel = gw.spec.selector;
  if (!sel) return true;
  return Object.keys(sel).every((k) => labels[k] === sel[k]);
}

/** Which kind of listener a Gateway server needs, and what it does with a connection. */
export type ServerKind = 'http' | 'https-terminate' | 'tls-terminate' | 'tls-passthrough' | 'tcp';

export function serverKind(protocol: string, tlsMode: string | undefined): ServerKind | undefined {
  const p = protocol.toUpperCase();
  if (HTTP_PROTOCOLS.has(p)) return 'http';
  if (p === 'HTTPS' || p === 'TLS') {
    if (tlsMode === 'PASSTHROUGH') return 'tls-passthrough';
    if (tlsMode === undefined || tlsMode === 'SIMPLE' || tlsMode === 'MUTUAL' || tlsMode === 'OPTIONAL_MUTUAL' || tlsMode === 'ISTIO_MUTUAL') {
      return p === 'HTTPS' ? 'https-terminate' : 'tls-terminate';
    }
    return undefined; // AUTO_PASSTHROUGH: multi-network SNI-encoded routing, not served
  }
  if (['TCP', 'MONGO', 'MYSQL', 'REDIS'].includes(p)) return 'tcp';
  return undefined;
}

function familyOfKind(kind: ServerKind): ListenerFamily {
  return kind === 'http' ? 'HTTP' : kind === 'tcp' ? 'TCP' : 'TLS';
}

/** Istio binds the Service targetPort of a Service selecting this gateway; else the number itself. */
function listenPort(serverPort: number, set: ResourceSet, id: GatewayIdentity): number {
  const explicit = id.portMap.get(serverPort);
  if (explicit !== undefined) return explicit;
  for (const svc of set.services) {
    const sel = svc.spec.selector;
    if (!sel || Object.keys(sel).length === 0) continue;
    if (!Object.keys(sel).every((k) => id.labels[k] === sel[k])) continue;
    const p = (svc.spec.ports ?? []).find((x) => x.port === serverPort);
    if (p && typeof p.targetPort === 'number') return p.targetPort;
    if (p) return serverPort;
  }
  return serverPort;
}

function vsBoundTo(vs: VirtualServiceResource, gateway: string): boolean {
  const ns = vs.metadata.namespace;
  const gws = vs.spec.gateways ?? ['mesh'];
  return gws.some((g) => gatewayKey(parseGatewayRef(g, ns)) === gateway);
}

/** Istio `exportTo`: absent or `*` is everywhere, `.` the resource's own namespace, else the listed ones. */
export function visibleIn(exportTo: readonly string[] | undefined, ownNamespace: string, namespace: string): boolean {
  if (!exportTo || exportTo.length === 0) return true;
  return exportTo.some((e) => e === '*' || (e === '.' && ownNamespace === namespace) || e === namespace);
}

/**
 * VirtualService `exportTo` is checked against the namespace of the proxy (this process's
 * `--namespace`), as Istio's VirtualServicesForGateway(proxyNamespace, ...) does, not against the
 * Gateway resource's namespace; DestinationRules and services are filtered the same way.
 */
function vsVisibleTo(vs: VirtualServiceResource, proxyNamespace: string): boolean {
  return visibleIn(vs.spec.exportTo, vs.metadata.namespace, proxyNamespace);
}

function serverAdmitsNamespace(serverHostNs: string, vsNs: string, gwNs: string): boolean {
  return serverHostNs === '*' || (serverHostNs === '.' ? vsNs === gwNs : serverHostNs === vsNs);
}

/** Routes collected for one domain, and which VirtualServices contributed them. */
interface VhostAcc { readonly routes: CompiledRoute[]; readonly contributors: Set<string>; requireTls?: boolean }

function buildRouteTable(port: number, vhosts: Map<string, VhostAcc>, serverPortOf: Map<string, number>, name = `http.${port}`): RouteTable {
  const exact = new Map<string, VirtualHost>();
  const suffixes: [string, VirtualHost][] = [];
  let any: VirtualHost | undefined;
  for (const [domain, v] of vhosts) {
    let routes = v.routes;
    if (v.contributors.size > 1) routes = [...routes.filter((r) => !isCatchAll(r)), ...routes.filter(isCatchAll)];
    const vh: VirtualHost = { name: `${domain}:${serverPortOf.get(domain) ?? port}`, domain, routes, ...(v.requireTls ? { requireTls: true } : {}) };
    if (domain === '*') any = vh;
    else if (domain.startsWith('*.')) suffixes.push([domain.slice(1), vh]);
    else exact.set(domain, vh);
  }
  suffixes.sort((a, b) => b[0].length - a[0].length);
  return { name, exact, suffixes, any };
}

/** Precompile CIDR blocks (validated earlier; an unparsable one is skipped). */
export function subnetSet(cidrs: readonly string[] | undefined): SubnetSet {
  if (!cidrs || cidrs.length === 0) return { cidrs: [] };
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr = '', bits] = c.split('/');
    const type = addr.includes(':') ? 'ipv6' : 'ipv4';
    const prefix = bits === undefined ? (type === 'ipv6' ? 128 : 32) : Number(bits);
    try {
      list.addSubnet(addr, prefix, type);
    } catch {
      // reported by validation
    }
  }
  return { cidrs: [...cidrs], re: { check: (address: string) => checkAddress(list, address) } };
}

function checkAddress(list: BlockList, address: string): boolean {
  const v4 = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  return list.check(v4, v4.includes(':') ? 'ipv6' : 'ipv4');
}

/** Everything one Gateway server contributes, with what its route compilation needs. */
interface ServerContext {
  readonly gw: GatewayResource;
  readonly gwKey: string;
  readonly server: CompiledServer;
  readonly vss: readonly VirtualServiceResource[];
  readonly services: ReadonlyMap<string, ServiceDef>;
  readonly mesh: MeshSettings;
  /** The namespace this proxy runs in (GatewayIdentity.namespace): what `exportTo` is checked against. */
  readonly proxyNamespace: string;
  /** This proxy's labels (`--labels`): what match `sourceLabels` select. */
  readonly proxyLabels: Dict<string>;
}

/** VirtualServices bound to the server's Gateway and visible to it, with their hosts the server admits. */
function boundVirtualServices(sc: ServerContext): { vs: VirtualServiceResource; domains: string[] }[] {
  const out: { vs: VirtualServiceResource; domains: string[] }[] = [];
  for (const vs of sc.vss) {
    within(vs, 'spec.hosts', () => {
      if (!vsBoundTo(vs, sc.gwKey) || !vsVisibleTo(vs, sc.proxyNamespace)) return;
      const vsHosts = (vs.spec.hosts ?? []).map((h) => resolveHost(h, vs.metadata.namespace));
      const domains: string[] = [];
      for (const sh of sc.server.hosts.map(parseServerHost)) {
        if (!serverAdmitsNamespace(sh.namespace, vs.metadata.namespace, sc.gw.metadata.namespace)) continue;
        for (const vh of vsHosts) {
          const d = intersectHosts(sh.host, vh);
          if (d !== undefined && !domains.includes(d)) domains.push(d);
        }
      }
      if (domains.length > 0) out.push({ vs, domains });
    });
  }
  return out;
}

/** Add the server's HTTP routes to vhosts (one per intersected domain). Returns how many were bound. */
function collectHttpVhosts(sc: ServerContext, vhosts: Map<string, VhostAcc>, serverPortOf: Map<string, number>): number {
  let bound = 0;
  for (const { vs, domains } of boundVirtualServices(sc)) {
    if (!vs.spec.http || vs.spec.http.length === 0) continue;
    const ctx: RouteContext = { vs, gateway: sc.gwKey, serverPort: sc.server.portNumber, services: sc.services, mesh: sc.mesh, proxy: { labels: sc.proxyLabels, namespace: sc.proxyNamespace } };
    const routes = within(vs, 'spec.http', () => compileHttpRoutes(ctx));
    const vsKey = `${vs.metadata.namespace}/${vs.metadata.name}`;
    for (const domain of domains) {
      let slot = vhosts.get(domain);
      if (!slot) vhosts.set(domain, slot = { routes: [], contributors: new Set() });
      if (!slot.contributors.has(vsKey)) {
        slot.routes.push(...routes);
        slot.contributors.add(vsKey);
      }
      serverPortOf.set(domain, sc.server.portNumber);
      bound += 1;
    }
  }
  // httpsRedirect: every host of the server answers 301 to https, with or without a VirtualService.
  if (sc.server.tls?.httpsRedirect) {
    for (const sh of sc.server.hosts.map(parseServerHost)) {
      let slot = vhosts.get(sh.host);
      if (!slot) vhosts.set(sh.host, slot = { routes: [], contributors: new Set() });
      slot.requireTls = true;
      serverPortOf.set(sh.host, sc.server.portNumber);
    }
  }
  return bound;
}

function compileL4Destinations(route: { route?: readonly { destination: { host: string; subset?: string; port?: { number?: number } }; weight?: number }[] }, ctx: RouteContext): { destinations: CompiledDestination[]; totalWeight: number } {
  const action = compileAction({ route: route.route?.map((d) => ({ destination: d.destination, weight: d.weight })) }, ctx);
  return action.type === 'route' ? { destinations: [...action.destinations], totalWeight: action.totalWeight } : { destinations: [], totalWeight: 0 };
}

/**
 * Does an L4 match block apply to this gateway and server port? (destinationSubnets is per
 * connection.) At a gateway, Istio looks at the port and `gateways` only; at a sidecar (matchTCP /
 * matchTLS) `gateways`, `sourceLabels` and `sourceNamespace` must all hold.
 */
function l4MatchApplies(m: { port?: number; gateways?: readonly string[]; sourceLabels?: Dict<string>; sourceNamespace?: string }, vs: VirtualServiceResource, sc: ServerContext): boolean {
  if (m.port !== undefined && m.port !== sc.server.portNumber) return false;
  if (m.gateways && m.gateways.length > 0 && !m.gateways.some((g) => gatewayKey(parseGatewayRef(g, vs.metadata.namespace)) === sc.gwKey)) return false;
  if (sc.gwKey !== 'mesh') return true;
  return labelsSelect(m.sourceLabels, sc.proxyLabels) && (!m.sourceNamespace || m.sourceNamespace === sc.proxyNamespace);
}

/** VirtualService `tcp` routes for a TCP (or TLS-terminating) server, in order; each match block is one route. */
function compileTcpRoutes(sc: ServerContext): L4Route[] {
  const out: L4Route[] = [];
  for (const { vs } of boundVirtualServices(sc)) {
    const ctx: RouteContext = { vs, gateway: sc.gwKey, serverPort: sc.server.portNumber, services: sc.services, mesh: sc.mesh, proxy: { labels: sc.proxyLabels, namespace: sc.proxyNamespace } };
    (vs.spec.tcp ?? []).forEach((route, index) => within(vs, `spec.tcp[${index}]`, () => {
      const { destinations, totalWeight } = compileL4Destinations(route, ctx);
      const base = { name: `${vs.metadata.namespace}.${vs.metadata.name}.${index}`, destinations, totalWeight, origin: originOf(vs, `spec.tcp[${index}]`) };
      const matches = route.match ?? [];
      if (matches.length === 0) out.push({ ...base, destinationSubnets: subnetSet(undefined) });
      for (const m of matches) {
        if (l4MatchApplies(m, vs, sc)) out.push({ ...base, destinationSubnets: subnetSet(m.destinationSubnets) });
      }
    }));
  }
  return out;
}

/** SNI names a server admits: its hosts (no namespace part); `*` means every name, and no SNI. */
function serverNamesOf(hosts: readonly string[]): string[] {
  const names = hosts.map((h) => parseServerHost(h).host);
  return names.includes('*') ? [] : [...new Set(names)];
}

/** One filter chain per `tls[].match` block of the bound VirtualServices (Istio's passthrough layout). */
function compilePassthroughChains(sc: ServerContext): FilterChain[] {
  const out: FilterChain[] = [];
  const serverHosts = sc.server.hosts.map((h) => parseServerHost(h).host);
  for (const { vs } of boundVirtualServices(sc)) {
    const ctx: RouteContext = { vs, gateway: sc.gwKey, serverPort: sc.server.portNumber, services: sc.services, mesh: sc.mesh, proxy: { labels: sc.proxyLabels, namespace: sc.proxyNamespace } };
    (vs.spec.tls ?? []).forEach((route, index) => within(vs, `spec.tls[${index}]`, () => {
      const { destinations, totalWeight } = compileL4Destinations(route, ctx);
      route.match.forEach((m, mi) => {
        if (!l4MatchApplies(m, vs, sc)) return;
        const names = new Set<string>();
        let any = false;
        // An SNI is the DNS name the client sends: short names are not expanded as route hosts are.
        for (const sni of m.sniHosts.map((h) => h.toLowerCase())) {
          for (const sh of serverHosts) {
            const d = intersectHosts(sh, sni);
            if (d === '*') any = true;
            else if (d !== undefined) names.add(d);
          }
        }
        if (!any && names.size === 0) return;
        const subnets = subnetSet(m.destinationSubnets);
        const l4: L4Route = {
          name: `${vs.metadata.namespace}.${vs.metadata.name}.${index}`, destinationSubnets: subnets, destinations, totalWeight,
          origin: originOf(vs, `spec.tls[${index}].match[${mi}]`),
        };
        out.push({ name: `${l4.name}.${mi}`, serverNames: any ? [] : [...names], destinationSubnets: subnets, action: { type: 'passthrough', route: l4 } });
      });
    }));
  }
  return out;
}

/** HTTPS termination: a chain for the server's hosts with its own route table (Istio's `https.<port>...` RDS). */
function httpsChain(sc: ServerContext, port: number, credentials: ServerCredentialSource): FilterChain {
  const vhosts = new Map<string, VhostAcc>();
  const serverPortOf = new Map<string, number>();
  collectHttpVhosts(sc, vhosts, serverPortOf);
  const { gw, server } = sc;
  const routes = buildRouteTable(port, vhosts, serverPortOf, `https.${server.portNumber}.${server.portName}.${gw.metadata.name}.${gw.metadata.namespace}`);
  return {
    name: routes.name, serverNames: serverNamesOf(server.hosts), destinationSubnets: subnetSet(undefined),
    action: { type: 'terminate', server, credentials, protocol: 'HTTP', routes },
  };
}

/** TLS termination followed by the VirtualService `tcp` routes. */
function tlsTerminateChain(sc: ServerContext, credentials: ServerCredentialSource): FilterChain {
  const { gw, server } = sc;
  return {
    name: `tls.${server.portNumber}.${server.portName}.${gw.metadata.name}.${gw.metadata.namespace}`,
    serverNames: serverNamesOf(server.hosts), destinationSubnets: subnetSet(undefined),
    action: { type: 'terminate', server, credentials, protocol: 'TCP', tcpRoutes: compileTcpRoutes(sc) },
  };
}

function compileListeners(
  set: ResourceSet, id: GatewayIdentity, services: ReadonlyMap<string, ServiceDef>, mesh: MeshSettings,
  notes: CompileNote[],
): Map<number, ListenerDef> {
  const gateways = [...set.gateways].sort((a, b) => a.order - b.order).filter((g) => selects(g, id.labels));
  const vss = [...set.virtualServices].sort((a, b) => a.order - b.order);
  interface Acc {
    family: ListenerFamily;
    servers: CompiledServer[];
    vhosts: Map<string, VhostAcc>;
    serverPortOf: Map<string, number>;
    tcpRoutes: L4Route[];
    chains: FilterChain[];
  }
  const byPort = new Map<number, Acc>();

  for (const gw of gateways) {
    const gwKey = `${gw.metadata.namespace}/${gw.metadata.name}`;
    gw.spec.servers.forEach((server, si) => within(gw, `spec.servers[${si}]`, () => {
      let kind = serverKind(server.port.protocol, server.tls?.mode);
      const where = `Gateway ${gwKey}`;
      if (kind && server.tls?.mode === 'ISTIO_MUTUAL' && !id.meshCerts) {
        // No mesh identity: serve it in plaintext so the sidecars' (equally plaintext) hop still works.
        kind = kind === 'https-terminate' ? 'http' : 'tcp';
        notes.push({ severity: 'warning', resource: where, message: `servers[${si}]: tls.mode ISTIO_MUTUAL without mesh certificates (meshgate run --mesh-certs DIR): served in plaintext` });
      }
      if (!kind) {
        const what = server.tls?.mode ? `protocol ${server.port.protocol} with tls.mode ${server.tls.mode}` : `protocol ${server.port.protocol}`;
        notes.push({ severity: 'warning', resource: where, message: `servers[${si}]: ${what} is not supported; server skipped` });
        return;
      }
      const family = familyOfKind(kind);
      const port = listenPort(server.port.number, set, id);
      let acc = byPort.get(port);
      if (!acc) {
        acc = { family, servers: [], vhosts: new Map(), serverPortOf: new Map(), tcpRoutes: [], chains: [] };
        byPort.set(port, acc);
      } else if (acc.family !== family) {
        notes.push({ severity: 'warning', resource: where, message: `servers[${si}]: port ${port} already serves ${acc.family}; a ${family} server cannot share it, server skipped` });
        return;
      }
      const compiled: CompiledServer = {
        gateway: gwKey,
        portNumber: server.port.number,
        portName: server.port.name ?? `${server.port.protocol.toLowerCase()}-${server.port.number}`,
        protocol: server.port.protocol.toUpperCase(),
        hosts: server.hosts,
        tls: server.tls,
        origin: originOf(gw, `spec.servers[${si}]`),
      };
      acc.servers.push(compiled);
      const sc: ServerContext = { gw, gwKey, server: compiled, vss, services, mesh, proxyNamespace: id.namespace, proxyLabels: id.labels };
      const unbound = (what: string) => notes.push({ severity: 'info', resource: where, message: `servers[${si}] (port ${server.port.number}): no VirtualService ${what}` });
      switch (kind) {
        case 'http':
          if (collectHttpVhosts(sc, acc.vhosts, acc.serverPortOf) === 0 && !server.tls?.httpsRedirect) unbound('is bound; requests get 404 NR');
          return;
        case 'tcp': {
          const routes = compileTcpRoutes(sc);
          if (routes.length === 0) unbound('has a tcp route for it; connections are closed (NR)');
          acc.tcpRoutes.push(...routes);
          return;
        }
        case 'tls-passthrough': {
          const chains = compilePassthroughChains(sc);
          if (chains.length === 0) unbound('has a tls route for its hosts; connections are closed (NR filter_chain_not_found)');
          acc.chains.push(...chains);
          return;
        }
        case 'https-terminate':
        case 'tls-terminate': {
          const credentials = serverCredentials(server.tls, set.secrets, id.namespace, id.meshCerts);
          if (credentials.kind === 'missing') {
            // At the field naming the Secret (else at `tls`), as the certificate warnings are.
            const tls = `spec.servers[${si}].tls`;
            const path = server.tls?.credentialName ? `${tls}.credentialName` : server.tls?.credentialNames?.length ? `${tls}.credentialNames[0]` : tls;
            notes.push({
              severity: 'warning', resource: where, at: positionOf(gw, path), path,
              message: `warning: ${credentials.message}; TLS handshakes on port ${server.port.number} for ${server.hosts.join(', ')} will fail`,
            });
          }
          const chain = kind === 'https-terminate' ? httpsChain(sc, port, credentials) : tlsTerminateChain(sc, credentials);
          const action = chain.action;
          if (action.type === 'terminate' && action.routes && action.routes.exact.size + action.routes.suffixes.length === 0 && !action.routes.any) unbound('is bound; requests get 404 NR');
          if (action.type === 'terminate' && action.tcpRoutes?.length === 0) unbound('has a tcp route for it; connections are closed (NR)');
          acc.chains.push(chain);
          return;
        }
      }
    }));
  }

  const out = new Map<number, ListenerDef>();
  for (const [port, acc] of [...byPort].sort((a, b) => a[0] - b[0])) {
    const base = { name: `${id.bind}_${port}`, bind: id.bind, port, family: acc.family, servers: acc.servers };
    if (acc.family === 'HTTP') out.set(port, { ...base, routes: buildRouteTable(port, acc.vhosts, acc.serverPortOf) });
    else if (acc.family === 'TCP') out.set(port, { ...base, tcpRoutes: acc.tcpRoutes });
    else out.set(port, { ...base, chains: dedupeChains(acc.chains, `port ${port}`, notes) });
  }
  return out;
}

/** Two chains with the same SNI names and subnets cannot both be reached: keep the first, say so. */
function dedupeChains(chains: readonly FilterChain[], where: string, notes: CompileNote[]): FilterChain[] {
  const seen = new Map<string, FilterChain>();
  for (const c of chains) {
    const key = `${[...c.serverNames].sort().join(',')}|${c.destinationSubnets.cidrs.join(',')}`;
    const first = seen.get(key);
    if (first) {
      notes.push({ severity: 'warning', resource: where, message: `filter chain ${c.name} matches the same SNI names (${c.serverNames.join(', ') || '*'}) as ${first.name}; only ${first.name} is used` });
      continue;
    }
    seen.set(key, c);
  }
  return [...seen.values()];
}

// ------------------------------------------------------------------ sidecar (capture listener)

const TLS_SERVICE_PROTOCOLS = new Set(['TLS', 'HTTPS']);

/** Istio's short names for a service in the sidecar's own namespace: `name`, `name.ns`, `name.ns.svc`. */
function shortNames(host: string, namespace: string): string[] {
  const m = /^([^.]+)\.([^.]+)\.svc\.cluster\.local$/.exec(host);
  if (!m || m[2] !== namespace) return [];
  return [m[1]!, `${m[1]}.${m[2]}`, `${m[1]}.${m[2]}.svc`];
}

/**
 * Sidecar inbound: the target ports of the Services that select this proxy (its namespace's Services
 * whose selector its labels match, as Kubernetes selects pods).
 */
function inboundListener(set: ResourceSet, id: GatewayIdentity, port: number): ListenerDef {
  const ports = new Map<number, { http: boolean; service: ClusterDef['service'] }>();
  const selecting = set.services
    .filter((svc) => {
      const sel = svc.spec.selector;
      return svc.metadata.namespace === id.namespace && sel && Object.keys(sel).length > 0 && Object.keys(sel).every((k) => id.labels[k] === sel[k]);
    })
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const svc of selecting) {
    const { name, namespace } = svc.metadata;
    for (const p of svc.spec.ports ?? []) {
      const target = typeof p.targetPort === 'number' ? p.targetPort : p.port;
      const http = HTTP_PROTOCOLS.has(protocolFromPortName(p)); // the port name's prefix or appProtocol, as outbound
      const known = ports.get(target);
      // The first Service names the port in metrics; any that declares HTTP makes it HTTP.
      ports.set(target, { http: http || (known?.http ?? false), service: known?.service ?? { host: `${name}.${namespace}.svc.cluster.local`, name, namespace } });
    }
  }
  const mtls = id.meshCerts ? { mtls: { kind: 'files' as const, ...id.meshCerts } } : {};
  return { name: 'virtualInbound', bind: id.bind, port, family: 'INBOUND', servers: [], inbound: { ports, ...mtls } };
}

/** A single-address CIDR (`a.b.c.d/32`, `x::y/128`) as its address; anything else unchanged. */
function hostCidrAddress(a: string): string {
  const m = /^(.+)\/(\d+)$/.exec(a);
  if (!m || !isIP(m[1]!)) return a;
  return Number(m[2]) === (m[1]!.includes(':') ? 128 : 32) ? m[1]! : a;
}

/** A service's virtual IPs: ServiceEntry `addresses` (single IPs, /32 and /128 too) and a Kubernetes Service's clusterIP. */
function vipsOf(svc: ServiceDef, set: ResourceSet): string[] {
  const kube = set.services.find((k) => `${k.metadata.name}.${k.metadata.namespace}.svc.cluster.local` === svc.host);
  return [...new Set([...svc.addresses.map(hostCidrAddress), kube?.spec.clusterIP ?? ''].filter((a) => isIP(a)))];
}

/** A ServiceEntry's CIDR `addresses` wider than one address, with their prefix lengths. */
function cidrsOf(svc: ServiceDef): { cidr: string; prefix: number }[] {
  const out: { cidr: string; prefix: number }[] = [];
  for (const a of svc.addresses.map(hostCidrAddress)) {
    const m = /^(.+)\/(\d+)$/.exec(a);
    if (!m || !isIP(m[1]!)) continue;
    const prefix = Number(m[2]);
    if (prefix >= 0 && prefix <= (m[1]!.includes(':') ? 128 : 32)) out.push({ cidr: a, prefix });
  }
  return out;
}

/** How the capture listener reads a service port's connections, from the declared protocol. */
function outboundProtocol(protocol: string): OutboundDestination['protocol'] {
  if (HTTP_PROTOCOLS.has(protocol)) return 'HTTP';
  if (TLS_SERVICE_PROTOCOLS.has(protocol)) return 'TLS';
  return protocol === '' ? 'AUTO' : 'TCP';
}

/**
 * One service port at a known address (Istio's per-VIP outbound listener): opaque bytes take the mesh
 * VirtualService `tcp` routes for the host, TLS its `tls` routes by SNI; what those leave (and any
 * other SNI, or none) goes to the service's own cluster.
 */
function outboundDestination(svc: ServiceDef, port: number, protocol: string, base: Omit<ServerContext, 'server'>, origin: Origin): OutboundDestination {
  const kind = outboundProtocol(protocol);
  const server: CompiledServer = { gateway: 'mesh', portNumber: port, portName: `outbound-${port}`, protocol: 'TCP', hosts: [svc.host], origin };
  const sc: ServerContext = { ...base, server };
  const cluster = clusterName(port, undefined, svc.host);
  const service: L4Route = {
    name: cluster, destinationSubnets: subnetSet(undefined), origin,
    destinations: [{ cluster, host: svc.host, port, weight: 100 }], totalWeight: 100,
  };
  const tcpRoutes = kind === 'HTTP' ? [] : [...compileTcpRoutes(sc), service];
  const chains: FilterChain[] = kind === 'TLS' || kind === 'AUTO'
    ? [...compilePassthroughChains(sc), { name: `${port}|${svc.host}`, serverNames: [], destinationSubnets: subnetSet(undefined), action: { type: 'passthrough', route: { ...service, name: svc.host } } }]
    : [];
  return { host: svc.host, port, protocol: kind, tcpRoutes, chains };
}

/**
 * Sidecar outbound (Istio's virtualOutbound and per-port listeners, folded into one): per port, HTTP
 * routes from VirtualServices bound to `mesh` and a default route for every registry service on the
 * port; TLS chains by SNI; TCP by service address; a catch-all by the mesh outboundTrafficPolicy.
 */
/**
 * The Sidecar resource that applies to this proxy: one in its namespace whose workloadSelector matches
 * its labels, else the namespace's default (no selector), else the root namespace's (istio-system).
 */
export function sidecarFor(set: ResourceSet, id: GatewayIdentity): ResourceSet['sidecars'][number] | undefined {
  const inNs = set.sidecars.filter((s) => s.metadata.namespace === id.namespace).sort((a, b) => a.order - b.order);
  const selected = inNs.find((s) => {
    const sel = s.spec.workloadSelector?.labels;
    return sel && Object.keys(sel).length > 0 && Object.keys(sel).every((k) => id.labels[k] === sel[k]);
  });
  return selected
    ?? inNs.find((s) => !s.spec.workloadSelector?.labels)
    ?? set.sidecars.find((s) => s.metadata.namespace === 'istio-system' && !s.spec.workloadSelector?.labels);
}

/** Does a Sidecar `egress.hosts` entry (`ns/host`: `*`, `.`, `~` or a name; host `*`, exact or `*.suffix`) admit a service? */
export function egressAdmits(entry: string, svc: ServiceDef, ownNamespace: string): boolean {
  const slash = entry.indexOf('/');
  const ns = slash < 0 ? '*' : entry.slice(0, slash);
  const host = slash < 0 ? entry : entry.slice(slash + 1);
  if (ns === '~') return false;
  if (ns !== '*' && (ns === '.' ? ownNamespace : ns) !== svc.namespace) return false;
  return hostMatches(host.toLowerCase(), svc.host);
}

function captureListener(set: ResourceSet, id: GatewayIdentity, port: number, allServices: ReadonlyMap<string, ServiceDef>, mesh: MeshSettings): ListenerDef {
  // A Sidecar resource narrows what this proxy sees (egress.hosts) and may set its own outbound policy.
  const sidecar = sidecarFor(set, id);
  const egressHosts = sidecar?.spec.egress?.flatMap((e) => e.hosts);
  const services = egressHosts && egressHosts.length > 0
    ? new Map([...allServices].filter(([, svc]) => egressHosts.some((h) => egressAdmits(h, svc, id.namespace))))
    : allServices;
  const allowAny = (sidecar?.spec.outboundTrafficPolicy?.mode ?? mesh.outboundPolicy) !== 'REGISTRY_ONLY';
  const retry = mesh.defaultRetry;
  const origin: Origin = { resource: 'MeshConfig istio-system/istio', file: '', line: 0, path: 'outboundTrafficPolicy' };
  const catchAll: CompiledRoute = allowAny
    ? { name: 'allow_any', match: null, action: { type: 'passthrough' }, timeoutMs: 0, retry: { ...retry, attempts: 0 }, origin }
    : { name: 'block_all', match: null, action: { type: 'direct', status: 502, body: '' }, timeoutMs: 0, retry, origin };
  const withCatchAll = (vhosts: Map<string, VhostAcc>) => vhosts.set('*', { routes: [catchAll], contributors: new Set(['mesh']) });
  const pseudoGateway = { metadata: { name: 'mesh', namespace: id.namespace } } as unknown as GatewayResource;
  const vss = [...set.virtualServices].sort((a, b) => a.order - b.order);
  const ports = new Set<number>();
  for (const svc of services.values()) for (const p of svc.ports) ports.add(p.number);
  const http = new Map<number, RouteTable>();
  const tls = new Map<number, FilterChain[]>();
  const httpPorts = new Set<number>();
  for (const p of [...ports].sort((a, b) => a - b)) {
    const server: CompiledServer = { gateway: 'mesh', portNumber: p, portName: `outbound-${p}`, protocol: 'HTTP', hosts: ['*'], origin };
    const sc: ServerContext = { gw: pseudoGateway, gwKey: 'mesh', server, vss, services, mesh, proxyNamespace: id.namespace, proxyLabels: id.labels };
    const onPort = [...services.values()].filter((svc) => svc.ports.some((sp) => sp.number === p));
    const httpish = onPort.filter((svc) => { const sp = svc.ports.find((x) => x.number === p)!; return HTTP_PROTOCOLS.has(sp.protocol) || sp.protocol === ''; });
    if (httpish.length > 0) {
      if (httpish.some((svc) => HTTP_PROTOCOLS.has(svc.ports.find((x) => x.number === p)!.protocol))) httpPorts.add(p);
      const vhosts = new Map<string, VhostAcc>();
      const serverPortOf = new Map<string, number>();
      collectHttpVhosts(sc, vhosts, serverPortOf);
      if (egressHosts && egressHosts.length > 0) {
        // VirtualService hosts outside the Sidecar's egress hosts are not visible either.
        for (const domain of [...vhosts.keys()]) {
          if (!egressHosts.some((h) => hostMatches((h.includes('/') ? h.slice(h.indexOf('/') + 1) : h).toLowerCase(), domain))) vhosts.delete(domain);
        }
      }
      for (const svc of httpish) {
        if (svc.host === '*' || vhosts.has(svc.host)) continue; // *.suffix hosts are suffix domains
        const route: CompiledRoute = {
          name: 'default', match: null, timeoutMs: 0, retry, origin,
          action: { type: 'route', destinations: [{ cluster: clusterName(p, undefined, svc.host), host: svc.host, port: p, weight: 100 }], totalWeight: 100 },
        };
        vhosts.set(svc.host, { routes: [route], contributors: new Set(['default']) });
      }
      for (const [domain, acc] of [...vhosts]) for (const alias of shortNames(domain, id.namespace)) if (!vhosts.has(alias)) vhosts.set(alias, acc);
      // A request to a service's VIP (ClusterIP, ServiceEntry addresses) carries the IP as its Host.
      for (const svc of httpish) for (const vip of vipsOf(svc, set)) { const acc = vhosts.get(svc.host); if (acc && !vhosts.has(vip)) vhosts.set(vip, acc); }
      withCatchAll(vhosts);
      http.set(p, buildRouteTable(p, vhosts, serverPortOf, String(p)));
    }
    const chains = compilePassthroughChains(sc);
    for (const svc of onPort) {
      const sp = svc.ports.find((x) => x.number === p)!;
      if (!TLS_SERVICE_PROTOCOLS.has(sp.protocol) || chains.some((c) => c.serverNames.includes(svc.host))) continue;
      const route: L4Route = {
        name: svc.host, destinationSubnets: subnetSet(undefined), origin,
        destinations: [{ cluster: clusterName(p, undefined, svc.host), host: svc.host, port: p, weight: 100 }], totalWeight: 100,
      };
      chains.push({ name: `${p}|${svc.host}`, serverNames: [svc.host], destinationSubnets: subnetSet(undefined), action: { type: 'passthrough', route } });
    }
    if (chains.length > 0) tls.set(p, chains);
  }
  const tcp = new Map<string, string>();
  for (const svc of services.values()) {
    for (const vip of vipsOf(svc, set)) for (const sp of svc.ports) tcp.set(`${vip}|${sp.number}`, clusterName(sp.number, undefined, svc.host));
  }
  const owners = new Map<number, Set<string>>();
  for (const svc of services.values()) {
    for (const sp of svc.ports) {
      if (HTTP_PROTOCOLS.has(sp.protocol) || TLS_SERVICE_PROTOCOLS.has(sp.protocol)) continue;
      let set = owners.get(sp.number);
      if (!set) owners.set(sp.number, set = new Set());
      set.add(clusterName(sp.number, undefined, svc.host));
    }
  }
  const tcpByPort = new Map([...owners].filter(([, c]) => c.size === 1).map(([p, c]) => [p, [...c][0]!]));
  // Per destination address: exact VIPs (the first service to claim an address and port keeps it), then CIDRs.
  const base: Omit<ServerContext, 'server'> = { gw: pseudoGateway, gwKey: 'mesh', vss, services, mesh, proxyNamespace: id.namespace, proxyLabels: id.labels };
  const vips = new Map<string, OutboundDestination>();
  const cidrs: OutboundCidr[] = [];
  for (const svc of services.values()) {
    const vipList = vipsOf(svc, set);
    const cidrList = cidrsOf(svc);
    if (vipList.length + cidrList.length === 0) continue;
    for (const sp of svc.ports) {
      const dest = outboundDestination(svc, sp.number, sp.protocol, base, origin);
      for (const vip of vipList) if (!vips.has(`${vip}|${sp.number}`)) vips.set(`${vip}|${sp.number}`, dest);
      for (const c of cidrList) cidrs.push({ subnet: subnetSet([c.cidr]), prefix: c.prefix, port: sp.number, destination: dest });
    }
  }
  cidrs.sort((a, b) => b.prefix - a.prefix);
  // Ports where every service says an opaque protocol (and no mesh `tls` route listens): never sniffed.
  const tcpPorts = new Set([...ports].filter((p) => !http.has(p) && !tls.has(p)
    && [...services.values()].every((svc) => svc.ports.every((sp) => sp.number !== p || outboundProtocol(sp.protocol) === 'TCP'))));
  const fallback = withCatchAll(new Map());
  return {
    name: 'virtualOutbound', bind: id.bind, port, family: 'CAPTURE', servers: [],
    outbound: {
      http, fallbackHttp: buildRouteTable(port, fallback, new Map(), 'outbound-catch-all'), tls, tcp, tcpByPort, httpPorts,
      tcpPorts, vips, cidrs,
      policy: allowAny ? 'ALLOW_ANY' : 'REGISTRY_ONLY',
    },
  };
}

/** The sidecar's capture listeners: one on the capture port, or (per-port fallback) one per application port. */
function captureListeners(set: ResourceSet, id: GatewayIdentity, capturePort: number, services: ReadonlyMap<string, ServiceDef>, mesh: MeshSettings): Map<number, ListenerDef> {
  const capture = captureListener(set, id, capturePort, services, mesh);
  if (!id.fallback || id.fallback.length === 0) return new Map([[capturePort, capture]]);
  return new Map(id.fallback.map((f) => [f.listen, { ...capture, name: `outbound_${f.app}`, port: f.listen, fallbackPort: f.app }]));
}

// ------------------------------------------------------------------ clusters

/** Istio's config root namespace: its DestinationRules apply mesh-wide, after the proxy's and the service's own. */
export const ROOT_NAMESPACE = 'istio-system';

/**
 * The DestinationRule for a host. With `namespaces`, as Istio's PushContext.destinationRule orders
 * them: the rules in the proxy's namespace first, then those in the service's namespace, then those
 * in the root namespace (a proxy in the root namespace, as the gateways in istio-system, looks in the
 * service's namespace first); within the first namespace that has one, exact host beats wildcard,
 * longer wildcard beats shorter, and the oldest wins ties. Rules in any other namespace apply to no
 * one else, as in Istio. Without `namespaces`, the most specific over all `drs`.
 */
export function destinationRuleFor(
  host: string, drs: readonly DestinationRuleResource[], namespaces?: { readonly proxy: string; readonly service: string }, proxyLabels: Dict<string> = {},
): DestinationRuleResource | undefined {
  if (!namespaces) return mostSpecificRules(host, drs)[0];
  const { proxy, service } = namespaces;
  const inNs = (ns: string) => drs.filter((d) => d.metadata.namespace === ns);
  // Rules with a workloadSelector are private to their namespace (Istio forces them so).
  const local = (d: DestinationRuleResource) => d.spec.workloadSelector !== undefined || (d.spec.exportTo?.length === 1 && d.spec.exportTo[0] === '.');
  const shared = (d: DestinationRuleResource) => !local(d);
  // Istio's PushContext.destinationRule: the proxy's namespace (for a proxy in the root namespace,
  // the rules private to it, so a mesh-wide *.local rule there does not hide a service's own), then
  // the service's namespace, then the root namespace.
  const steps = proxy === ROOT_NAMESPACE
    ? [inNs(ROOT_NAMESPACE).filter(local), inNs(service).filter(shared), inNs(ROOT_NAMESPACE).filter(shared)]
    : [inNs(proxy), inNs(service).filter(shared), inNs(ROOT_NAMESPACE).filter(shared)];
  for (const step of steps) {
    const rules = mostSpecificRules(host, step);
    if (rules.length === 0) continue;
    // Istio's SidecarScope.DestinationRule among the rules for that host: one that selects this
    // proxy, else one for every proxy, else none (a rule for other workloads hides the levels below).
    return rules.find((d) => d.spec.workloadSelector && d.metadata.namespace === proxy && labelsSelect(d.spec.workloadSelector.matchLabels, proxyLabels))
      ?? rules.find((d) => !d.spec.workloadSelector);
  }
  return undefined;
}

/** Are these labels (a selector's) all among `labels`? An empty selector selects everything. */
function labelsSelect(matchLabels: Dict<string> | undefined, labels: Dict<string>): boolean {
  return Object.entries(matchLabels ?? {}).every(([k, v]) => Object.hasOwn(labels, k) && labels[k] === v);
}

/** The rules for the most specific host that matches (exact, else the longest wildcard), oldest first. */
function mostSpecificRules(host: string, drs: readonly DestinationRuleResource[]): DestinationRuleResource[] {
  let best: DestinationRuleResource[] = [];
  let bestScore = -1;
  for (const dr of drs) {
    const h = resolveHost(dr.spec.host, dr.metadata.namespace);
    if (!hostMatches(h, host)) continue;
    const score = h === host ? 1_000_000 : h.length;
    if (score > bestScore) {
      best = [dr];
      bestScore = score;
    } else if (score === bestScore) best.push(dr);
  }
  return best.sort((a, b) => a.order - b.order);
}

/**
 * Istio's MergeTrafficPolicy: `over` (a subset's policy, or the top-level one over nothing) replaces
 * `base` field by field; then the first of `over`'s portLevelSettings for this port replaces all four
 * fields wholesale, each one even when the port-level entry leaves it unset (defaults apply then, not
 * the value above: "port level policies do not inherit").
 */
function mergePolicy(base: ClusterPolicy, over: TrafficPolicy | undefined, port: number): ClusterPolicy {
  if (!over) return base;
  const pl = over.portLevelSettings?.find((p) => p.port?.number === port);
  if (pl) return { loadBalancer: pl.loadBalancer, connectionPool: pl.connectionPool, outlierDetection: pl.outlierDetection, tls: pl.tls };
  return {
    loadBalancer: over.loadBalancer ?? base.loadBalancer,
    connectionPool: over.connectionPool ?? base.connectionPool,
    outlierDetection: over.outlierDetection ?? base.outlierDetection,
    tls: over.tls ?? base.tls,
  };
}

/** Where the tls block mergePolicy takes for a port comes from: the subset's, else the rule's; port-level first. */
function tlsPolicyPath(top: TrafficPolicy | undefined, subset: TrafficPolicy | undefined, subsetPath: string | undefined, port: number): string | undefined {
  const within = (policy: TrafficPolicy | undefined, base: string): string | undefined | null => {
    if (!policy) return null;
    const j = policy.portLevelSettings?.findIndex((p) => p.port?.number === port) ?? -1;
    if (j >= 0) return policy.portLevelSettings![j]!.tls ? `${base}.portLevelSettings[${j}].tls` : undefined;
    return policy.tls ? `${base}.tls` : null;
  };
  const fromSubset = subsetPath ? within(subset, subsetPath) : null;
  if (fromSubset !== null) return fromSubset;
  return within(top, 'spec.trafficPolicy') ?? undefined;
}

const UNLIMITED = 4294967295;

function breakerOf(policy: ClusterPolicy): CircuitBreakerLimits {
  const tcp = policy.connectionPool?.tcp;
  const http = policy.connectionPool?.http;
  return {
    maxConnections: tcp?.maxConnections ?? UNLIMITED,
    maxPendingRequests: http?.http1MaxPendingRequests ?? UNLIMITED,
    maxRequests: http?.http2MaxRequests ?? UNLIMITED,
    maxRetries: http?.maxRetries ?? UNLIMITED,
    maxRequestsPerConnection: http?.maxRequestsPerConnection ?? 0,
    idleTimeoutMs: ms(http?.idleTimeout, 3_600_000),
  };
}

/** Istio's outlier defaults: 5 consecutive 5xx, 10 s interval, 30 s base ejection, 10 % max ejected, 0 % min health. */
function outlierOf(policy: ClusterPolicy): OutlierPolicy | undefined {
  const o = policy.outlierDetection;
  if (!o) return undefined;
  return {
    consecutive5xx: o.consecutive5xxErrors ?? o.consecutiveErrors ?? 5,
    consecutiveGateway: o.consecutiveGatewayErrors ?? 0,
    consecutiveLocalOrigin: o.splitExternalLocalOriginErrors ? o.consecutiveLocalOriginFailures ?? 5 : 0,
    splitLocalOrigin: o.splitExternalLocalOriginErrors === true,
    intervalMs: ms(o.interval, 10_000),
    baseEjectionMs: ms(o.baseEjectionTime, 30_000),
    maxEjectionPercent: o.maxEjectionPercent ?? 10,
    minHealthPercent: o.minHealthPercent ?? 0,
  };
}

function hashOf(policy: ClusterPolicy): HashPolicy | undefined {
  const h = policy.loadBalancer?.consistentHash;
  if (!h) return undefined;
  const ttl = h.httpCookie?.ttl !== undefined ? parseDuration(h.httpCookie.ttl) : undefined;
  return {
    ...(h.httpHeaderName ? { header: h.httpHeaderName.toLowerCase() } : {}),
    ...(h.httpCookie ? { cookie: { name: h.httpCookie.name, ...(h.httpCookie.path ? { path: h.httpCookie.path } : {}), ...(ttl !== undefined ? { ttlSeconds: Math.floor(ttl / 1000) } : {}) } } : {}),
    ...(h.useSourceIp ? { sourceIp: true } : {}),
    ...(h.httpQueryParameterName ? { queryParameter: h.httpQueryParameterName } : {}),
    ringSize: Math.min(8_388_608, h.ringHash?.minimumRingSize ?? h.minimumRingSize ?? 1024),
  };
}

const H2_PROTOCOLS = new Set(['HTTP2', 'GRPC', 'GRPC-WEB']);

/** Envoy speaks HTTP/2 to a cluster whose port is HTTP2/gRPC, or an HTTP port the DestinationRule upgrades. */
export function upstreamHttp2(protocol: string, policy: ClusterPolicy): boolean {
  if (H2_PROTOCOLS.has(protocol)) return true;
  return protocol === 'HTTP' && policy.connectionPool?.http?.h2UpgradePolicy === 'UPGRADE';
}

function lbOf(policy: ClusterPolicy): LbPolicy {
  if (policy.loadBalancer?.consistentHash) return 'RING_HASH';
  switch (policy.loadBalancer?.simple) {
    case 'ROUND_ROBIN': return 'ROUND_ROBIN';
    case 'RANDOM': return 'RANDOM';
    case 'PASSTHROUGH': return 'PASSTHROUGH';
    default: return 'LEAST_REQUEST';
  }
}

function compileClusters(
  set: ResourceSet, services: ReadonlyMap<string, ServiceDef>, mesh: MeshSettings, proxyNamespace: string, notes: CompileNote[], meshCerts?: MeshCertFiles,
  proxyLabels: Dict<string> = {},
): Map<string, ClusterDef> {
  const out = new Map<string, ClusterDef>();
  // DestinationRules this proxy may see (exportTo honoured against the gateway's own namespace);
  // destinationRuleFor picks among them as Istio does, workload selectors included.
  const visibleRules = set.destinationRules.filter((d) => visibleIn(d.spec.exportTo, d.metadata.namespace, proxyNamespace));
  for (const svc of services.values()) {
    const dr = destinationRuleFor(svc.host, visibleRules, { proxy: proxyNamespace, service: svc.namespace }, proxyLabels);
    if (dr) within(dr, 'spec', () => addClusters(svc, dr));
    else addClusters(svc, undefined);
  }
  return out;

  function addClusters(svc: ServiceDef, dr: DestinationRuleResource | undefined): void {
    const subsets: { name?: string; labels?: Dict<string>; policy?: TrafficPolicy; path?: string }[] = [{}];
    (dr?.spec.subsets ?? []).forEach((s, i) => subsets.push({ name: s.name, labels: s.labels, policy: s.trafficPolicy, path: `spec.subsets[${i}].trafficPolicy` }));
    for (const port of svc.ports) {
      const top = mergePolicy({}, dr?.spec.trafficPolicy, port.number);
      for (const sub of subsets) {
        const policy = mergePolicy(top, sub.policy, port.number);
        // An endpoint is in a port's cluster only if it serves that port (an EndpointSlice lists it).
        const endpoints = portEndpoints(svc, port).filter((e) => subsetMatches(sub.labels, e.labels));
        const name = clusterName(port.number, sub.name, svc.host);
        const tls = upstreamTls(policy.tls, set.secrets, proxyNamespace, meshCerts, `outbound_.${port.number}_.${sub.name ?? ''}_.${svc.host}`);
        if (tls instanceof Error && dr) {
          // At the tls block in force for this port and subset (its credentialName when it names one).
          const at = tlsPolicyPath(dr.spec.trafficPolicy, sub.policy, sub.path, port.number);
          const path = at && policy.tls?.credentialName ? `${at}.credentialName` : at;
          notes.push({
            severity: 'warning', resource: `DestinationRule ${dr.metadata.namespace}/${dr.metadata.name}`, message: `cluster ${name}: ${tls.message}`,
            ...(path ? { path, at: positionOf(dr, path) } : {}),
          });
        }
        out.set(name, {
          name,
          host: svc.host,
          port: port.number,
          subset: sub.name,
          service: { host: svc.host, name: svc.name, namespace: svc.namespace },
          ...(svc.location === 'MESH_INTERNAL' ? { meshInternal: true as const } : {}),
          protocol: port.protocol,
          resolution: svc.resolution,
          lb: lbOf(policy),
          ...(hashOf(policy) ? { hash: hashOf(policy) } : {}),
          connectTimeoutMs: ms(policy.connectionPool?.tcp?.connectTimeout, mesh.connectTimeoutMs),
          breaker: breakerOf(policy),
          ...((svc.resolution === 'NONE' && endpoints.length === 0 && svc.endpoints.length === 0) || svc.headless ? { originalDstPort: port.targetPort ?? port.number } : {}),
          ...(policy.connectionPool?.tcp?.tcpKeepalive ? { keepaliveMs: ms(policy.connectionPool.tcp.tcpKeepalive.time, 7_200_000) } : {}),
          ...(outlierOf(policy) ? { outlier: outlierOf(policy) } : {}),
          ...(policy.connectionPool?.tcp?.idleTimeout !== undefined ? { idleTimeoutMs: ms(policy.connectionPool.tcp.idleTimeout, 0) } : {}),
          endpoints,
          policy,
          ...(tls && !(tls instanceof Error) ? { upstreamTls: tls } : {}),
          // Over mesh mTLS, ALPN settles the protocol (h2 between two meshgates, as Envoy's istio-h2).
          ...(upstreamHttp2(port.protocol, policy) || (tls && !(tls instanceof Error) && tls.mode === 'ISTIO_MUTUAL') ? { http2: true } : {}),
          destinationRule: dr ? `DestinationRule ${dr.metadata.namespace}/${dr.metadata.name}` : undefined,
        });
      }
    }
  }
}

// ------------------------------------------------------------------ entry point

export function fingerprintOf(set: ResourceSet, id: GatewayIdentity): string {
  const strip = (r: Resource) => [r.kind, r.apiVersion, r.metadata, r.spec];
  const all = [
    set.gateways, set.virtualServices, set.destinationRules, set.serviceEntries, set.workloadEntries,
    set.sidecars, set.services, set.secrets,
  ].flatMap((list) => (list as readonly Resource[]).map(strip));
  return createHash('sha256').update(JSON.stringify([all, set.mesh, set.kubernetesServices ?? [], id.labels, id.namespace, [...id.portMap], id.bind])).digest('hex');
}

/**
 * The services this proxy may see: a ServiceEntry's `exportTo`, a Service's
 * `networking.istio.io/exportTo` annotation (`.` its own namespace, `*` everywhere, else the listed
 * namespaces), against the proxy's namespace, as istiod filters them. A hidden service a
 * VirtualService routes to gets a warning: Istio is silent there and its routes answer 503 NC.
 */
function exportedServices(all: ReadonlyMap<string, ServiceDef>, set: ResourceSet, proxyNamespace: string, notes: CompileNote[]): Map<string, ServiceDef> {
  const out = new Map<string, ServiceDef>();
  const hidden: ServiceDef[] = [];
  for (const [host, svc] of all) {
    if (visibleIn(svc.exportTo, svc.namespace, proxyNamespace)) out.set(host, svc);
    else hidden.push(svc);
  }
  if (hidden.length === 0) return out;
  const routed = new Set<string>();
  for (const vs of set.virtualServices) {
    for (const r of [...(vs.spec.http ?? []), ...(vs.spec.tcp ?? []), ...(vs.spec.tls ?? [])]) {
      for (const d of r.route ?? []) routed.add(resolveHost(d.destination.host, vs.metadata.namespace));
    }
  }
  for (const svc of hidden) {
    if (!routed.has(svc.host)) continue;
    notes.push({
      severity: 'warning', resource: svc.definedBy,
      message: `${svc.host} is exported to ${svc.exportTo.join(', ')} only, not to ${proxyNamespace} where this proxy runs: routes to it answer 503 NC`,
    });
  }
  return out;
}

export function compile(set: ResourceSet, id: GatewayIdentity, version: number, now = new Date()): CompileResult {
  const notes: CompileNote[] = [];
  const mesh = compileMesh(set);
  const services = exportedServices(buildServices(set), set, id.namespace, notes);
  const listeners = id.capturePort !== undefined
    ? captureListeners(set, id, id.capturePort, services, mesh)
    : compileListeners(set, id, services, mesh, notes);
  if (id.capturePort !== undefined && id.inboundPort !== undefined) listeners.set(id.inboundPort, inboundListener(set, id, id.inboundPort));
  const clusters = compileClusters(set, services, mesh, id.namespace, notes, id.meshCerts, id.labels);
  // Every object read, ConfigMaps (the mesh config) included: the count `meshgate validate` prints.
  const resourceCount = set.gateways.length + set.virtualServices.length + set.destinationRules.length
    + set.serviceEntries.length + set.workloadEntries.length + set.sidecars.length + set.services.length + set.secrets.length
    + set.configMaps.length;
  const snapshot: Snapshot = {
    version,
    createdAt: now.toISOString(),
    mesh,
    listeners,
    clusters,
    services,
    fingerprint: fingerprintOf(set, id),
    resourceCount,
  };
  return { snapshot, notes };
}
