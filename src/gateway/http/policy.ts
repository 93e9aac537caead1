// VirtualService per-route policies as pure functions over compiled config: faults, path and
// authority rewrites, header operations, CORS, the mirror's host. The proxy calls them; the tests
// call them with tables.

import type { HeaderOperations } from '../../config/types';
import type { CompiledCors, CompiledDestination, CompiledFault, CompiledRewrite, CompiledRoute, HashPolicy } from '../../config/snapshot';
import { stringMatches, splitPath } from './route-match';

export interface FaultDecision {
  readonly delayMs?: number;
  readonly abort?: { readonly status: number; readonly grpc?: number };
}

/** Envoy's fault filter: each of delay and abort applies to a `fraction` of requests (`rand` in [0, 1)). */
const NO_FAULT: FaultDecision = {};

export function decideFault(f: CompiledFault | undefined, randDelay: number, randAbort: number): FaultDecision {
  if (!f) return NO_FAULT;
  const delay = f.delayMs !== undefined && randDelay < f.delayFraction ? f.delayMs : undefined;
  const aborts = (f.abortStatus !== undefined || f.abortGrpc !== undefined) && randAbort < f.abortFraction;
  return {
    ...(delay !== undefined ? { delayMs: delay } : {}),
    ...(aborts ? { abort: { status: f.abortStatus ?? 200, ...(f.abortGrpc !== undefined ? { grpc: f.abortGrpc } : {}) } } : {}),
  };
}

/** The upstream path after `rewrite` (query kept); the path itself when nothing changes. */
export function rewritePath(path: string, rw: CompiledRewrite | undefined): string {
  if (!rw || (rw.uri === undefined && !rw.regex)) return path;
  const { pathname, query } = splitPath(path);
  let p = pathname;
  if (rw.uri !== undefined && rw.replaces) {
    if (rw.replaces.kind === 'exact') p = rw.uri;
    else if (p.startsWith(rw.replaces.value)) p = rw.uri + p.slice(rw.replaces.value.length);
    else if (rw.replaces.value.toLowerCase() === p.slice(0, rw.replaces.value.length).toLowerCase()) {
      p = rw.uri + p.slice(rw.replaces.value.length); // ignoreUriCase matches
    }
  }
  if (rw.regex?.re) p = rw.regex.re.replaceAll(p, rw.regex.rewrite);
  return query ? `${p}?${query}` : p;
}

type HeaderMap = Record<string, string | string[]>;

/** Apply VirtualService header operations in Envoy's order: remove, then set (replace), then add (append). */
export function applyHeaderOps(headers: HeaderMap, ops: HeaderOperations | undefined): void {
  if (!ops) return;
  for (const name of ops.remove ?? []) delete headers[name.toLowerCase()];
  for (const [name, value] of Object.entries(ops.set ?? {})) headers[name.toLowerCase()] = value;
  for (const [name, value] of Object.entries(ops.add ?? {})) {
    const key = name.toLowerCase();
    const old = headers[key];
    headers[key] = old === undefined ? value : [...(Array.isArray(old) ? old : [old]), value];
  }
}

/**
 * A routed request on its way upstream (plain requests and upgrades alike): the route's and the
 * destination's request header operations, then the authority and path rewrites, with the original
 * path kept in x-envoy-original-path as Envoy does. Returns the path to send.
 */
export function shapeUpstreamRequest(headers: HeaderMap, route: CompiledRoute, dest: CompiledDestination, url: string): string {
  // One destination: Istio folds its operations into the route's, after them (the destination's win).
  // Several (weighted clusters): Envoy applies the weighted cluster's first, then the route's (the route's win).
  const weighted = route.action.type === 'route' && route.action.destinations.length > 1;
  const [first, second] = weighted ? [dest.headers?.request, route.headers?.request] : [route.headers?.request, dest.headers?.request];
  applyHeaderOps(headers, first);
  applyHeaderOps(headers, second);
  if (route.rewrite?.authority !== undefined) headers['host'] = route.rewrite.authority;
  const path = rewritePath(url, route.rewrite);
  if (path !== url) headers['x-envoy-original-path'] = url;
  return path;
}

/** The same operations on a flat [name, value, ...] list (response headers as written). */
export function applyHeaderOpsFlat(list: string[], ops: HeaderOperations | undefined): string[] {
  if (!ops) return list;
  const remove = new Set([...(ops.remove ?? []), ...Object.keys(ops.set ?? {})].map((n) => n.toLowerCase()));
  const out: string[] = [];
  for (let i = 0; i + 1 < list.length; i += 2) {
    if (!remove.has(list[i]!.toLowerCase())) out.push(list[i]!, list[i + 1]!);
  }
  for (const [name, value] of Object.entries(ops.set ?? {})) out.push(name.toLowerCase(), value);
  for (const [name, value] of Object.entries(ops.add ?? {})) out.push(name.toLowerCase(), value);
  return out;
}

export function corsOriginAllowed(cors: CompiledCors, origin: string | undefined): boolean {
  if (!origin) return false;
  return cors.allowOrigins.some((m) => (m.kind === 'exact' && m.value === '*') || stringMatches(m, origin));
}

/** A CORS preflight the gateway answers itself (Envoy's CORS filter), or undefined to forward it. */
export function corsPreflight(cors: CompiledCors | undefined, method: string, h: Record<string, string | string[] | undefined>): Record<string, string> | undefined {
  if (!cors || method !== 'OPTIONS') return undefined;
  const origin = typeof h['origin'] === 'string' ? h['origin'] : undefined;
  if (!origin || h['access-control-request-method'] === undefined) return undefined;
  // Unmatched preflights are forwarded (Istio's default, FORWARD), or answered without CORS headers (IGNORE).
  if (!corsOriginAllowed(cors, origin)) return cors.ignoreUnmatchedPreflights ? {} : undefined;
  return {
    'access-control-allow-origin': origin,
    ...(cors.allowMethods ? { 'access-control-allow-methods': cors.allowMethods } : {}),
    ...(cors.allowHeaders ? { 'access-control-allow-headers': cors.allowHeaders } : {}),
    ...(cors.maxAgeSeconds !== undefined ? { 'access-control-max-age': String(cors.maxAgeSeconds) } : {}),
    ...(cors.allowCredentials ? { 'access-control-allow-credentials': 'true' } : {}),
  };
}

/** CORS headers added to an actual response for an allowed origin. */
export function corsResponseHeaders(cors: CompiledCors | undefined, origin: string | string[] | undefined): readonly string[] {
  if (!cors || typeof origin !== 'string' || !corsOriginAllowed(cors, origin)) return NO_HEADERS;
  const out = ['access-control-allow-origin', origin];
  if (cors.exposeHeaders) out.push('access-control-expose-headers', cors.exposeHeaders);
  if (cors.allowCredentials) out.push('access-control-allow-credentials', 'true');
  return out;
}

const NO_HEADERS: readonly string[] = [];

/** Envoy's shadow host: `-shadow` appended to the host part (`httpbin:8000` -> `httpbin-shadow:8000`). */
export function shadowHost(authority: string): string {
  const m = /^(\[[^\]]+\]|[^:]+)(:\d+)?$/.exec(authority);
  if (!m) return `${authority}-shadow`;
  return `${m[1]}-shadow${m[2] ?? ''}`;
}

/** The value of one cookie in a Cookie header (or several). */
export function cookieValue(header: string | string[] | undefined, name: string): string | undefined {
  for (const line of Array.isArray(header) ? header : header ? [header] : []) {
    for (const part of line.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
      return part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    }
  }
  return undefined;
}

/**
 * The consistent-hash key of a request, as Envoy's hash policy finds it; when a cookie with a ttl is
 * asked for and absent, a new value is made (`fresh`) and the response sets it (`setCookie`).
 */
export function hashKeyOf(
  policy: HashPolicy | undefined, headers: Record<string, string | string[] | undefined>, remoteAddress: string, path: string, fresh: () => string,
): { key?: string; setCookie?: string } {
  if (!policy) return {};
  if (policy.header) {
    const v = headers[policy.header];
    return v === undefined ? {} : { key: Array.isArray(v) ? v.join(',') : v };
  }
  if (policy.cookie) {
    const v = cookieValue(headers['cookie'], policy.cookie.name);
    if (v !== undefined) return { key: v };
    if (policy.cookie.ttlSeconds === undefined) return {};
    const value = fresh();
    const attrs = [`${policy.cookie.name}="${value}"`, `Max-Age=${policy.cookie.ttlSeconds}`, ...(policy.cookie.path ? [`Path=${policy.cookie.path}`] : []), 'HttpOnly'];
    return { key: value, setCookie: attrs.join('; ') };
  }
  if (policy.sourceIp) return { key: remoteAddress };
  if (policy.queryParameter) {
    const { query } = splitPath(path);
    const v = new URLSearchParams(query).get(policy.queryParameter);
    return v === null ? {} : { key: v };
  }
  return {};
}
