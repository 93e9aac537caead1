// ResourceSet -> Snapshot. Pure: no I/O, no clocks except the timestamp passed in. All the expensive
// work (host intersection, regex compilation, DestinationRule merging) happens here, once per config
// change, so the per-request path only does map look-ups and precompiled matching.

import { createHash } from 'node:crypto';
import { RE2JS } from 're2js';
import type {
  Dict, DestinationRuleResource, GatewayResource, HTTPMatchRequest, HTTPRoute, ResourceSet, StringMatch,
  TrafficPolicy, VirtualServiceResource, Resource,
} from './types';
import type {
  ClusterDef, ClusterPolicy, CompiledMatch, CompiledRoute, CompiledServer, HeaderMatcher, LbPolicy, ListenerDef,
  ListenerFamily, MeshSettings, Origin, RetryPolicy, RouteAction, RouteTable, Snapshot, StringMatcher, VirtualHost,
} from './snapshot';
import {
  clusterName, gatewayKey, hostMatches, intersectHosts, parseDuration, parseGatewayRef, parseServerHost, resolveHost,
} from './names';
import { buildServices, endpointPort, subsetMatches, type ServiceDef } from '../serviceentry/services';

/** Who this gateway is: which Gateways select it and how server ports map to listen ports. */
export interface GatewayIdentity {
  readonly labels: Dict<string>;
  readonly namespace: string;
  /** Explicit `--port-map` overrides: Gateway server port -> listen port. */
  readonly portMap: ReadonlyMap<number, number>;
  readonly bind: string;
}

export interface CompileNote {
  readonly severity: 'warning' | 'info';
  readonly resource: string;
  readonly message: string;
}

export interface CompileResult {
  readonly snapshot: Snapshot;
  readonly notes: readonly CompileNote[];
}

const HTTP_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB']);
const TLS_PROTOCOLS = new Set(['HTTPS', 'TLS']);

export const DEFAULT_RETRY_ON = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'];

function originOf(r: Resource, path: string): Origin {
  const pos = r.positions.get(path) ?? r.source;
  return { resource: `${r.kind} ${r.metadata.namespace}/${r.metadata.name}`, file: pos.file, line: pos.line, path };
}

function ms(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  return parseDuration(text) ?? fallback;
}

// ------------------------------------------------------------------ mesh

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
    const re = RE2JS.compile(m.regex, ignoreCase ? RE2JS.CASE_INSENSITIVE : 0);
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
  if (m.gateways && m.gateways.length > 0) {
    const ns = ctx.vs.metadata.namespace;
    if (!m.gateways.some((g) => gatewayKey(parseGatewayRef(g, ns)) === ctx.gateway)) return false;
  }
  return true;
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
      rewrite: route.rewrite,
      fault: route.fault,
      mirrors: mirrorsOf(route, ctx),
      cors: route.corsPolicy,
      origin: originOf(ctx.vs, path),
    };
    const matches = route.match ?? [];
    if (matches.length === 0) {
      out.push({ ...base, name: routeName(route, index, undefined, ctx.vs), match: null });
      return;
    }
    for (const m of matches) {
      if (!matchApplies(m, ctx)) continue;
      out.push({ ...base, name: routeName(route, index, m, ctx.vs), match: compileMatch(m) });
    }
  });
  return out;
}

function mirrorsOf(route: HTTPRoute, ctx: RouteContext): CompiledRoute['mirrors'] {
  const ns = ctx.vs.metadata.namespace;
  const list = [...(route.mirrors ?? [])];
  if (route.mirror) {
    const legacy = route.mirror_percent ?? route.mirrorPercent;
    const percentage = route.mirrorPercentage ?? (legacy !== undefined ? { value: legacy } : undefined);
    list.unshift({ destination: route.mirror, percentage });
  }
  if (list.length === 0) return undefined;
  return list.map((m) => ({ ...m, destination: { ...m.destination, host: resolveHost(m.destination.host, ns) } }));
}

// ------------------------------------------------------------------ gateways -> listeners

function selects(gw: GatewayResource, labels: Dict<string>): boolean {
  const sel = gw.spec.selector;
  if (!sel) return true;
  return Object.keys(sel).every((k) => labels[k] === sel[k]);
}

function familyOf(protocol: string, tlsMode: string | undefined): ListenerFamily | undefined {
  const p = protocol.toUpperCase();
  if (HTTP_PROTOCOLS.has(p)) return 'HTTP';
  if (p === 'HTTPS' && tlsMode !== 'PASSTHROUGH' && tlsMode !== 'AUTO_PASSTHROUGH') return 'HTTP';
  if (TLS_PROTOCOLS.has(p)) return 'TLS';
  if (['TCP', 'MONGO', 'MYSQL', 'REDIS'].includes(p)) return 'TCP';
  return undefined;
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

function vsVisibleTo(vs: VirtualServiceResource, gwNamespace: string): boolean {
  return visibleIn(vs.spec.exportTo, vs.metadata.namespace, gwNamespace);
}

function serverAdmitsNamespace(serverHostNs: string, vsNs: string, gwNs: string): boolean {
  return serverHostNs === '*' || (serverHostNs === '.' ? vsNs === gwNs : serverHostNs === vsNs);
}

/** Routes collected for one domain, and which VirtualServices contributed them. */
interface VhostAcc { readonly routes: CompiledRoute[]; readonly contributors: Set<string> }

function buildRouteTable(port: number, vhosts: Map<string, VhostAcc>, serverPortOf: Map<string, number>): RouteTable {
  const exact = new Map<string, VirtualHost>();
  const suffixes: [string, VirtualHost][] = [];
  let any: VirtualHost | undefined;
  for (const [domain, v] of vhosts) {
    let routes = v.routes;
    if (v.contributors.size > 1) routes = [...routes.filter((r) => !isCatchAll(r)), ...routes.filter(isCatchAll)];
    const vh: VirtualHost = { name: `${domain}:${serverPortOf.get(domain) ?? port}`, domain, routes };
    if (domain === '*') any = vh;
    else if (domain.startsWith('*.')) suffixes.push([domain.slice(1), vh]);
    else exact.set(domain, vh);
  }
  suffixes.sort((a, b) => b[0].length - a[0].length);
  return { name: `http.${port}`, exact, suffixes, any };
}

function compileListeners(
  set: ResourceSet, id: GatewayIdentity, services: ReadonlyMap<string, ServiceDef>, mesh: MeshSettings,
  notes: CompileNote[],
): Map<number, ListenerDef> {
  const gateways = [...set.gateways].sort((a, b) => a.order - b.order).filter((g) => selects(g, id.labels));
  const vss = [...set.virtualServices].sort((a, b) => a.order - b.order);
  interface Acc { family: ListenerFamily; servers: CompiledServer[]; vhosts: Map<string, VhostAcc>; serverPortOf: Map<string, number> }
  const byPort = new Map<number, Acc>();

  for (const gw of gateways) {
    const gwKey = `${gw.metadata.namespace}/${gw.metadata.name}`;
    gw.spec.servers.forEach((server, si) => {
      const family = familyOf(server.port.protocol, server.tls?.mode);
      const where = `Gateway ${gwKey}`;
      if (!family) {
        notes.push({ severity: 'warning', resource: where, message: `servers[${si}]: protocol ${server.port.protocol} is not supported; server skipped` });
        return;
      }
      const port = listenPort(server.port.number, set, id);
      let acc = byPort.get(port);
      if (!acc) {
        acc = { family, servers: [], vhosts: new Map(), serverPortOf: new Map() };
        byPort.set(port, acc);
      } else if (acc.family !== family) {
        notes.push({ severity: 'warning', resource: where, message: `servers[${si}]: port ${port} already serves ${acc.family}; a ${family} server cannot share it, server skipped` });
        return;
      }
      acc.servers.push({
        gateway: gwKey,
        portNumber: server.port.number,
        portName: server.port.name ?? `${server.port.protocol.toLowerCase()}-${server.port.number}`,
        protocol: server.port.protocol.toUpperCase(),
        hosts: server.hosts,
        tls: server.tls,
        origin: originOf(gw, `spec.servers[${si}]`),
      });
      if (family !== 'HTTP') return;
      let bound = 0;
      for (const vs of vss) {
        if (!vsBoundTo(vs, gwKey) || !vsVisibleTo(vs, gw.metadata.namespace)) continue;
        const ctx: RouteContext = { vs, gateway: gwKey, serverPort: server.port.number, services, mesh };
        let routes: CompiledRoute[] | undefined;
        const vsHosts = (vs.spec.hosts ?? []).map((h) => resolveHost(h, vs.metadata.namespace));
        for (const sh of server.hosts.map(parseServerHost)) {
          if (!serverAdmitsNamespace(sh.namespace, vs.metadata.namespace, gw.metadata.namespace)) continue;
          for (const vh of vsHosts) {
            const domain = intersectHosts(sh.host, vh);
            if (domain === undefined) continue;
            routes ??= compileHttpRoutes(ctx);
            let slot = acc.vhosts.get(domain);
            if (!slot) acc.vhosts.set(domain, slot = { routes: [], contributors: new Set() });
            const vsKey = `${vs.metadata.namespace}/${vs.metadata.name}`;
            if (!slot.contributors.has(vsKey)) {
              slot.routes.push(...routes);
              slot.contributors.add(vsKey);
            }
            acc.serverPortOf.set(domain, server.port.number);
            bound += 1;
          }
        }
      }
      if (bound === 0) {
        notes.push({ severity: 'info', resource: where, message: `servers[${si}] (port ${server.port.number}): no VirtualService is bound; requests get 404 NR` });
      }
    });
  }

  const out = new Map<number, ListenerDef>();
  for (const [port, acc] of [...byPort].sort((a, b) => a[0] - b[0])) {
    out.set(port, {
      name: `${id.bind}_${port}`,
      bind: id.bind,
      port,
      family: acc.family,
      servers: acc.servers,
      routes: acc.family === 'HTTP' ? buildRouteTable(port, acc.vhosts, acc.serverPortOf) : undefined,
    });
  }
  return out;
}

// ------------------------------------------------------------------ clusters

/** The DestinationRule for a host: exact host beats wildcard, longer wildcard beats shorter, older wins ties. */
export function destinationRuleFor(host: string, drs: readonly DestinationRuleResource[]): DestinationRuleResource | undefined {
  let best: DestinationRuleResource | undefined;
  let bestScore = -1;
  for (const dr of drs) {
    const h = resolveHost(dr.spec.host, dr.metadata.namespace);
    if (!hostMatches(h, host)) continue;
    const score = h === host ? 1_000_000 : h.length;
    if (score > bestScore || (score === bestScore && best && dr.order < best.order)) {
      best = dr;
      bestScore = score;
    }
  }
  return best;
}

/** Istio merges traffic policies per block: the later (more specific) block replaces a whole field. */
function mergePolicy(base: ClusterPolicy, over: TrafficPolicy | undefined, port: number): ClusterPolicy {
  if (!over) return base;
  const merged: ClusterPolicy = {
    loadBalancer: over.loadBalancer ?? base.loadBalancer,
    connectionPool: over.connectionPool ?? base.connectionPool,
    outlierDetection: over.outlierDetection ?? base.outlierDetection,
    tls: over.tls ?? base.tls,
  };
  const pl = over.portLevelSettings?.find((p) => p.port?.number === port);
  if (!pl) return merged;
  return {
    loadBalancer: pl.loadBalancer ?? merged.loadBalancer,
    connectionPool: pl.connectionPool ?? merged.connectionPool,
    outlierDetection: pl.outlierDetection ?? merged.outlierDetection,
    tls: pl.tls ?? merged.tls,
  };
}

function lbOf(policy: ClusterPolicy): LbPolicy {
  switch (policy.loadBalancer?.simple) {
    case 'ROUND_ROBIN': return 'ROUND_ROBIN';
    case 'RANDOM': return 'RANDOM';
    case 'PASSTHROUGH': return 'PASSTHROUGH';
    default: return 'LEAST_REQUEST';
  }
}

function compileClusters(set: ResourceSet, services: ReadonlyMap<string, ServiceDef>, mesh: MeshSettings, proxyNamespace: string): Map<string, ClusterDef> {
  const out = new Map<string, ClusterDef>();
  // DestinationRules this proxy may see (exportTo honoured against the gateway's own namespace).
  const visibleRules = set.destinationRules.filter((d) => visibleIn(d.spec.exportTo, d.metadata.namespace, proxyNamespace));
  for (const svc of services.values()) {
    const dr = destinationRuleFor(svc.host, visibleRules);
    const subsets: { name?: string; labels?: Dict<string>; policy?: TrafficPolicy }[] = [{}];
    for (const s of dr?.spec.subsets ?? []) subsets.push({ name: s.name, labels: s.labels, policy: s.trafficPolicy });
    for (const port of svc.ports) {
      const top = mergePolicy({}, dr?.spec.trafficPolicy, port.number);
      for (const sub of subsets) {
        const policy = mergePolicy(top, sub.policy, port.number);
        const endpoints = svc.endpoints
          .filter((e) => subsetMatches(sub.labels, e.labels))
          .map((e) => ({ address: e.address, port: endpointPort(e, port), labels: e.labels, weight: e.weight }));
        const name = clusterName(port.number, sub.name, svc.host);
        out.set(name, {
          name,
          host: svc.host,
          port: port.number,
          subset: sub.name,
          service: { host: svc.host, name: svc.name, namespace: svc.namespace },
          protocol: port.protocol,
          resolution: svc.resolution,
          lb: lbOf(policy),
          connectTimeoutMs: ms(policy.connectionPool?.tcp?.connectTimeout, mesh.connectTimeoutMs),
          endpoints,
          policy,
          destinationRule: dr ? `DestinationRule ${dr.metadata.namespace}/${dr.metadata.name}` : undefined,
        });
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------ entry point

export function fingerprintOf(set: ResourceSet, id: GatewayIdentity): string {
  const strip = (r: Resource) => [r.kind, r.apiVersion, r.metadata, r.spec];
  const all = [
    set.gateways, set.virtualServices, set.destinationRules, set.serviceEntries, set.workloadEntries,
    set.sidecars, set.services, set.secrets,
  ].flatMap((list) => (list as readonly Resource[]).map(strip));
  return createHash('sha256').update(JSON.stringify([all, set.mesh, id.labels, id.namespace, [...id.portMap], id.bind])).digest('hex');
}

export function compile(set: ResourceSet, id: GatewayIdentity, version: number, now = new Date()): CompileResult {
  const notes: CompileNote[] = [];
  const mesh = compileMesh(set);
  const services = buildServices(set);
  const listeners = compileListeners(set, id, services, mesh, notes);
  const clusters = compileClusters(set, services, mesh, id.namespace);
  const resourceCount = set.gateways.length + set.virtualServices.length + set.destinationRules.length
    + set.serviceEntries.length + set.workloadEntries.length + set.sidecars.length + set.services.length + set.secrets.length;
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
