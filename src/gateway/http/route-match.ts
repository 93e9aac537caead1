// The routing decision for one HTTP request: pure functions over a compiled route table.
// Envoy semantics: virtual host by :authority (port ignored, case-insensitive; exact, then the
// longest `*.suffix`, then `*`), then the first route whose match block fits.

import type {
  CompiledDestination, CompiledMatch, CompiledRoute, HeaderMatcher, RouteTable, Snapshot, StringMatcher, VirtualHost,
} from '../../config/snapshot';
import { hostWithoutPort } from '../../config/names';
import { selectChain } from '../tcp/match';

/** What routing reads of a request. `headers` are lower-case names as Node gives them. */
export interface RouteInput {
  readonly authority: string;
  /** Path with query string, as on the request line. */
  readonly path: string;
  readonly method: string;
  readonly scheme: 'http' | 'https';
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

export function findVirtualHost(table: RouteTable, authority: string): VirtualHost | undefined {
  const host = hostWithoutPort(authority);
  const exact = table.exact.get(host);
  if (exact) return exact;
  for (const [suffix, vh] of table.suffixes) {
    if (host.length > suffix.length && host.endsWith(suffix)) return vh;
  }
  return table.any;
}

export function stringMatches(m: StringMatcher, value: string | undefined): boolean {
  if (value === undefined) return false;
  switch (m.kind) {
    case 'present': return true;
    case 'exact': return value === m.value;
    case 'prefix': return value.startsWith(m.value);
    case 'regex': return m.re!.matches(value);
  }
}

function headerValue(headers: RouteInput['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

function headersMatch(list: readonly HeaderMatcher[], get: (name: string) => string | undefined): boolean {
  for (const h of list) if (!stringMatches(h.match, get(h.name))) return false;
  return true;
}

/**
 * Istio `withoutHeaders`: the request must NOT match. A missing header counts as the empty string for
 * exact/prefix/regex (Envoy's treat_missing_header_as_empty); an empty matcher means "present", so a
 * missing header passes it.
 */
function withoutHeadersMatch(list: readonly HeaderMatcher[], get: (name: string) => string | undefined): boolean {
  for (const h of list) {
    const v = get(h.name);
    if (stringMatches(h.match, h.match.kind === 'present' ? v : v ?? '')) return false;
  }
  return true;
}

export function splitPath(path: string): { pathname: string; query: string } {
  const q = path.indexOf('?');
  return q < 0 ? { pathname: path, query: '' } : { pathname: path.slice(0, q), query: path.slice(q + 1) };
}

/** A query parameter's value as sent: Envoy matches `queryParams` on the undecoded query string. */
function queryValue(query: string, name: string): string | undefined {
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    if (k === name) return eq < 0 ? '' : part.slice(eq + 1);
  }
  return undefined;
}

export function matchBlock(m: CompiledMatch, req: RouteInput, pathname: string, query: string): boolean {
  if (m.uri && !stringMatches(m.uri, m.ignoreUriCase && m.uri.kind !== 'regex' ? pathname.toLowerCase() : pathname)) return false;
  if (m.method && !stringMatches(m.method, req.method)) return false;
  if (m.scheme && !stringMatches(m.scheme, req.scheme)) return false;
  if (m.authority && !stringMatches(m.authority, req.authority)) return false;
  const get = (name: string) => headerValue(req.headers, name);
  if (m.headers.length > 0 && !headersMatch(m.headers, get)) return false;
  if (m.withoutHeaders.length > 0 && !withoutHeadersMatch(m.withoutHeaders, get)) return false;
  if (m.queryParams.length > 0 && !headersMatch(m.queryParams, (n) => queryValue(query, n))) return false;
  return true;
}

export function matchRoute(vh: VirtualHost, req: RouteInput): CompiledRoute | undefined {
  const { pathname, query } = splitPath(req.path);
  for (const route of vh.routes) {
    if (route.match === null || matchBlock(route.match, req, pathname, query)) return route;
  }
  return undefined;
}

/** A route, or (plain HTTP to a vhost of an `httpsRedirect` server) a redirect to https. */
export type RouteDecision =
  | { readonly vhost: VirtualHost; readonly route: CompiledRoute; readonly requireTls?: undefined }
  | { readonly vhost: VirtualHost; readonly route?: undefined; readonly requireTls: true };

/** The whole decision: virtual host, then route. undefined = no route (404 NR). */
export function decide(table: RouteTable | undefined, req: RouteInput): RouteDecision | undefined {
  if (!table) return undefined;
  const vhost = findVirtualHost(table, req.authority);
  if (!vhost) return undefined;
  if (vhost.requireTls && req.scheme === 'http') return { vhost, requireTls: true };
  const route = matchRoute(vhost, req);
  return route ? { vhost, route } : undefined;
}

/** Where HTTP requests enter: a listen port, and for terminated TLS the filter chain that took them. */
export interface HttpEntry {
  readonly port: number;
  readonly scheme: 'http' | 'https';
  /** FilterChain name on TLS listeners. */
  readonly chain?: string;
  /** Sidecar: the capture listener's port; `port` is then the original destination's. */
  readonly capturePort?: number;
  /** Sidecar inbound: every request goes to the application, through this cluster (`inbound|PORT||`). */
  readonly inboundCluster?: string;
}

const ANY_ORIGIN = { resource: 'sidecar inbound', file: '', line: 0, path: '' };

/** Inbound: one route, `default`, to the original destination. */
const INBOUND_TABLE: RouteTable = {
  name: 'inbound', exact: new Map(), suffixes: [],
  any: {
    name: 'inbound|*', domain: '*',
    routes: [{ name: 'default', match: null, action: { type: 'passthrough' }, timeoutMs: 0, retry: { attempts: 0, perTryTimeoutMs: 0, retryOn: [], retriableStatusCodes: [] }, origin: ANY_ORIGIN }],
  },
};

/** What a terminated TLS connection offers for choosing its filter chain again. */
export interface ChainKeys {
  readonly sni?: string | undefined;
  readonly localAddress: string;
}

/**
 * The route table in force for an entry in this snapshot. A connection whose filter chain a reload
 * removed or renamed (its Gateway server's port name changed, say) is served by the chain its SNI
 * selects now, as a new connection would be, rather than answered 404 until the client reconnects.
 */
export function routeTableFor(snapshot: Snapshot, entry: HttpEntry, conn?: ChainKeys): RouteTable | undefined {
  if (entry.inboundCluster !== undefined) return INBOUND_TABLE;
  if (entry.capturePort !== undefined) {
    const out = snapshot.listeners.get(entry.capturePort)?.outbound;
    return out ? out.http.get(entry.port) ?? out.fallbackHttp : undefined;
  }
  const listener = snapshot.listeners.get(entry.port);
  if (!listener) return undefined;
  if (entry.chain === undefined) return listener.routes;
  for (const c of listener.chains ?? []) {
    if (c.name === entry.chain && c.action.type === 'terminate') return c.action.routes;
  }
  if (!conn) return undefined;
  const now = selectChain(listener.chains, conn.sni, conn.localAddress);
  return now?.action.type === 'terminate' ? now.action.routes : undefined;
}

/** Weighted pick: `rand` is uniform in [0, 1). */
export function pickDestination(dests: readonly CompiledDestination[], totalWeight: number, rand: number): CompiledDestination | undefined {
  if (dests.length <= 1) return dests[0];
  let x = rand * totalWeight;
  for (const d of dests) {
    if (x < d.weight) return d;
    x -= d.weight;
  }
  return dests[dests.length - 1];
}
