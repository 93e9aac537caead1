// Istio's naming rules, as pure functions: host short names, wildcard hosts, gateway references,
// `ns/host` server hosts, and Go/protobuf duration strings.

export const DEFAULT_DOMAIN_SUFFIX = 'cluster.local';

/**
 * Resolve a host as Istio does (`ResolveShortnameToFQDN`): a name without a dot is a Kubernetes
 * short name in the resource's namespace; anything with a dot (or a wildcard, or `*`) is taken as is.
 * Hosts are compared lower-cased.
 */
export function resolveHost(host: string, namespace: string, domainSuffix = DEFAULT_DOMAIN_SUFFIX): string {
  const h = host.trim().toLowerCase();
  if (h === '*' || h.includes('.') || h.startsWith('*')) return h;
  if (isIP(h)) return h;
  return `${h}.${namespace}.svc.${domainSuffix}`;
}

export function isIP(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s) || (s.includes(':') && /^[0-9a-f:.]+$/i.test(s));
}

export function isWildcard(host: string): boolean {
  return host === '*' || host.startsWith('*.');
}

/**
 * Does `pattern` (exact, `*.suffix` or `*`) match the concrete or wildcard `host`?
 * `*.example.com` matches `a.example.com` and `a.b.example.com` and `*.a.example.com`, not `example.com`.
 */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1); // ".example.com"
    if (host === '*') return false;
    if (host.startsWith('*.')) return host.slice(1).endsWith(suffix);
    return host.endsWith(suffix) && host.length > suffix.length;
  }
  return pattern === host;
}

/** Istio's host intersection: either side may be a wildcard. Returns the narrower host, or undefined. */
export function intersectHosts(a: string, b: string): string | undefined {
  if (hostMatches(a, b)) return b;
  if (hostMatches(b, a)) return a;
  return undefined;
}

export interface GatewayRef {
  readonly namespace: string;
  readonly name: string;
}

/** The reserved gateway name meaning "every sidecar". */
export const MESH_GATEWAY = 'mesh';

/**
 * `name`, `ns/name` or `./name` in a VirtualService `gateways` list (also match-level `gateways`), as
 * Istio's resolveGatewayName reads it: `.` and a bare name are the VirtualService's own namespace;
 * `mesh` stays `mesh` (namespace '').
 */
export function parseGatewayRef(ref: string, vsNamespace: string): GatewayRef {
  if (ref === MESH_GATEWAY) return { namespace: '', name: MESH_GATEWAY };
  const slash = ref.indexOf('/');
  if (slash >= 0) {
    const ns = ref.slice(0, slash);
    return { namespace: ns === '.' ? vsNamespace : ns, name: ref.slice(slash + 1) };
  }
  // Istio also accepts the `name.namespace` FQDN-ish form for gateways
  const dot = ref.indexOf('.');
  if (dot >= 0) return { namespace: ref.slice(dot + 1).split('.')[0] ?? vsNamespace, name: ref.slice(0, dot) };
  return { namespace: vsNamespace, name: ref };
}

export function gatewayKey(ref: GatewayRef): string {
  return ref.name === MESH_GATEWAY && ref.namespace === '' ? MESH_GATEWAY : `${ref.namespace}/${ref.name}`;
}

export interface ServerHost {
  /** `*` any namespace, `.` the gateway's own namespace, else a namespace name. */
  readonly namespace: string;
  readonly host: string;
}

/** A Gateway server host: `host`, `ns/host`, `./host`, `*\/host`. */
export function parseServerHost(spec: string): ServerHost {
  const slash = spec.indexOf('/');
  if (slash < 0) return { namespace: '*', host: spec.toLowerCase() };
  return { namespace: spec.slice(0, slash), host: spec.slice(slash + 1).toLowerCase() };
}

/** Istio cluster name: `outbound|<port>|<subset>|<host>`. */
export function clusterName(port: number, subset: string | undefined, host: string): string {
  return `outbound|${port}|${subset ?? ''}|${host}`;
}

/** Strip the port from a Host / :authority value and lower-case it (IPv6 literals keep their brackets). */
export function hostWithoutPort(authority: string): string {
  let h = authority;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    h = end > 0 ? h.slice(0, end + 1) : h;
  } else {
    const colon = h.lastIndexOf(':');
    if (colon >= 0 && h.indexOf(':') === colon) h = h.slice(0, colon);
  }
  return h.toLowerCase();
}

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** The longest delay Node's timers take (about 24.8 days): given more, they fire after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Go's time.Duration is int64 nanoseconds: ParseDuration refuses anything longer (about 2562047h). */
export const MAX_DURATION_MS = 9_223_372_036_854.775807;

/**
 * Parse a duration as Istio accepts it (Go `time.ParseDuration` style, which includes the protobuf
 * JSON form `1.5s`): `10s`, `0.5s`, `3m`, `1h30m`, `250ms`. Returns milliseconds, or undefined when
 * the string is not a duration (or, as in Go, overflows int64 nanoseconds).
 */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let any = false;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * (DURATION_UNITS[m[2]!] ?? NaN);
    pos = re.lastIndex;
    any = true;
  }
  return any && total <= MAX_DURATION_MS ? total : undefined;
}
