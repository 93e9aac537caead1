// Istio's access log: the default TEXT format field for field, Istio's JSON keys when the mesh config
// says JSON, or a user `accessLogFormat` with Envoy %OPERATORS%. Formats are compiled once into a
// list of small functions; lines are written in batches by a LineWriter (line-writer.ts).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LineWriter } from './line-writer';
import type { TlsIdentities } from '../tls/identities';

/** Everything an access-log line can show about one request or connection. */
export interface AccessRecord {
  startTime: number; // epoch ms
  method?: string;
  path?: string; // original path, before rewrites
  protocol?: string; // HTTP/1.1, HTTP/2; undefined for TCP
  responseCode: number;
  responseFlags: string[];
  responseCodeDetails?: string;
  connectionTerminationDetails?: string;
  upstreamTransportFailureReason?: string;
  bytesReceived: number;
  bytesSent: number;
  durationMs: number;
  upstreamServiceTimeMs?: number;
  /** ms from the start to the first byte of the upstream response (%RESPONSE_DURATION%), when recorded. */
  responseDurationMs?: number;
  requestHeaders?: Readonly<Record<string, string | string[] | undefined>>;
  responseHeaders?: Readonly<Record<string, string | string[] | number | undefined>>;
  authority?: string;
  upstreamHost?: string;
  upstreamCluster?: string;
  upstreamLocalAddress?: string;
  /** The upstream connection's certificate identities, when it was TLS. */
  upstreamIdentities?: TlsIdentities;
  /** The downstream connection's, when this proxy terminated its TLS. */
  downstreamIdentities?: TlsIdentities;
  downstreamLocalAddress?: string;
  downstreamRemoteAddress?: string;
  requestedServerName?: string;
  routeName?: string;
}

export const ISTIO_TEXT_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% '
  + '%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% '
  + '%BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
  + '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
  + '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n';

/** Istio's JSON keys (EnvoyJSONLogFormatIstio), in Istio's order. */
export const ISTIO_JSON_FORMAT: readonly (readonly [string, string])[] = [
  ['start_time', '%START_TIME%'],
  ['route_name', '%ROUTE_NAME%'],
  ['method', '%REQ(:METHOD)%'],
  ['path', '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%'],
  ['protocol', '%PROTOCOL%'],
  ['response_code', '%RESPONSE_CODE%'],
  ['response_flags', '%RESPONSE_FLAGS%'],
  ['response_code_details', '%RESPONSE_CODE_DETAILS%'],
  ['connection_termination_details', '%CONNECTION_TERMINATION_DETAILS%'],
  ['bytes_received', '%BYTES_RECEIVED%'],
  ['bytes_sent', '%BYTES_SENT%'],
  ['duration', '%DURATION%'],
  ['upstream_service_time', '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%'],
  ['x_forwarded_for', '%REQ(X-FORWARDED-FOR)%'],
  ['user_agent', '%REQ(USER-AGENT)%'],
  ['request_id', '%REQ(X-REQUEST-ID)%'],
  ['authority', '%REQ(:AUTHORITY)%'],
  ['upstream_host', '%UPSTREAM_HOST%'],
  ['upstream_cluster', '%UPSTREAM_CLUSTER_RAW%'],
  ['upstream_local_address', '%UPSTREAM_LOCAL_ADDRESS%'],
  ['downstream_local_address', '%DOWNSTREAM_LOCAL_ADDRESS%'],
  ['downstream_remote_address', '%DOWNSTREAM_REMOTE_ADDRESS%'],
  ['requested_server_name', '%REQUESTED_SERVER_NAME%'],
  ['upstream_transport_failure_reason', '%UPSTREAM_TRANSPORT_FAILURE_REASON%'],
];

/** One operator's value, or undefined for "absent" (rendered `-` in TEXT, null for a lone operator in JSON). */
type Value = string | number | undefined;
type Getter = (r: AccessRecord) => Value;

function header(map: AccessRecord['requestHeaders'] | AccessRecord['responseHeaders'], name: string): string | undefined {
  const v = map?.[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(',') : String(v);
}

function requestValue(r: AccessRecord, name: string): string | undefined {
  switch (name) {
    case ':method': return r.method;
    case ':path': return r.path;
    case ':authority': return r.authority;
    default: return header(r.requestHeaders, name);
  }
}

/** Formatting a date costs more than a request's routing: reuse it within the same millisecond. */
let lastStart = -1;
let lastStartText = '';
function startTime(ms: number): string {
  if (ms !== lastStart) {
    lastStart = ms;
    lastStartText = new Date(ms).toISOString();
  }
  return lastStartText;
}

// ------------------------------------------------------------------ START_TIME(format)

const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n));
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/** Fractional seconds to `digits` places (the clock has millisecond precision: the rest are zeros). */
const fraction = (ms: number, digits: number) => String(((ms % 1000) + 1000) % 1000).padStart(3, '0').padEnd(9, '0').slice(0, digits);

/** The strftime specifiers meshgate renders (always in UTC, as Envoy's START_TIME). */
const STRFTIME: Readonly<Record<string, (d: Date, ms: number) => string>> = {
  Y: (d) => String(d.getUTCFullYear()).padStart(4, '0'),
  y: (d) => pad2(d.getUTCFullYear() % 100),
  m: (d) => pad2(d.getUTCMonth() + 1),
  d: (d) => pad2(d.getUTCDate()),
  e: (d) => String(d.getUTCDate()).padStart(2, ' '),
  H: (d) => pad2(d.getUTCHours()),
  M: (d) => pad2(d.getUTCMinutes()),
  S: (d) => pad2(d.getUTCSeconds()),
  z: () => '+0000',
  Z: () => 'UTC',
  s: (_d, ms) => String(Math.floor(ms / 1000)),
  F: (d) => `${String(d.getUTCFullYear()).padStart(4, '0')}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`,
  T: (d) => `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`,
  a: (d) => DAYS[d.getUTCDay()]!,
  b: (d) => MONTHS[d.getUTCMonth()]!,
  '%': () => '%',
};
const STRFTIME_LIST = '%Y %m %d %H %M %S %z %s %f %1f..%9f %E1S..%E9S %F %T %y %e %a %b %Z %%';

/** Compile `%START_TIME(fmt)%`'s fmt; specifiers meshgate does not know are reported and kept as text. */
function compileStartTime(fmt: string, problems: string[]): (ms: number) => string {
  type Part = string | ((d: Date, ms: number) => string);
  const parts: Part[] = [];
  for (let i = 0; i < fmt.length;) {
    const pct = fmt.indexOf('%', i);
    if (pct < 0 || pct === fmt.length - 1) {
      parts.push(fmt.slice(i));
      break;
    }
    if (pct > i) parts.push(fmt.slice(i, pct));
    const rest = fmt.slice(pct + 1);
    let m: RegExpExecArray | null;
    if ((m = /^([1-9])?f/.exec(rest))) {
      const digits = m[1] ? Number(m[1]) : 9;
      parts.push((_d, ms) => fraction(ms, digits));
    } else if ((m = /^E([1-9])S/.exec(rest))) {
      const digits = Number(m[1]);
      parts.push((d, ms) => `${pad2(d.getUTCSeconds())}.${fraction(ms, digits)}`);
    } else if ((m = /^./s.exec(rest)) && STRFTIME[m[0]]) {
      parts.push(STRFTIME[m[0]]!);
    } else {
      m = /^./s.exec(rest)!;
      problems.push(`START_TIME: %${m[0]} is not supported (meshgate renders ${STRFTIME_LIST})`);
      parts.push(`%${m[0]}`);
    }
    i = pct + 1 + m[0].length;
  }
  let last = NaN;
  let lastText = '';
  return (ms) => {
    if (ms !== last) {
      const d = new Date(ms);
      let out = '';
      for (const p of parts) out += typeof p === 'string' ? p : p(d, ms);
      last = ms;
      lastText = out;
    }
    return lastText;
  };
}

// ------------------------------------------------------------------ addresses

/** `ip:port` or `[ipv6]:port` split; a bare IPv6 address has no port. */
function splitAddress(a: string | undefined): { host: string; port: number | undefined } | undefined {
  if (!a) return undefined;
  if (a.startsWith('[')) {
    const end = a.indexOf(']');
    if (end > 0) {
      const port = a.startsWith(':', end + 1) ? Number(a.slice(end + 2)) : undefined;
      return { host: a.slice(1, end), port: port !== undefined && Number.isInteger(port) ? port : undefined };
    }
  }
  const colon = a.lastIndexOf(':');
  if (colon > 0 && a.indexOf(':') === colon && /^\d+$/.test(a.slice(colon + 1))) return { host: a.slice(0, colon), port: Number(a.slice(colon + 1)) };
  return { host: a, port: undefined };
}

/** `X_ADDRESS`, `X_ADDRESS_WITHOUT_PORT` and `X_PORT` for one address of the record. */
function addressOperators(prefix: string, get: (r: AccessRecord) => string | undefined): Record<string, Spec> {
  return {
    [`${prefix}_ADDRESS`]: { make: () => get },
    [`${prefix}_ADDRESS_WITHOUT_PORT`]: { make: () => (r) => splitAddress(get(r))?.host },
    [`${prefix}_PORT`]: { make: () => (r) => splitAddress(get(r))?.port },
  };
}

// ------------------------------------------------------------------ operators

interface Spec {
  /** Whether `(...)` is taken: never (default), required, or optional. */
  readonly params?: 'required' | 'optional';
  /** Whether `:N` (cut the value to N characters) is allowed. */
  readonly length?: boolean;
  /** The getter for the parameter, pushing problems with it; absent: an Envoy operator meshgate does not record. */
  readonly make?: (arg: string | undefined, problems: string[]) => Getter;
}

/** `X?Y` header alternatives, lower-cased: the first present wins. */
function headerAlternatives(arg: string, problems: string[]): [string, string | undefined] {
  const names = arg.toLowerCase().split('?');
  if (names.length > 2) problems.push(`more than one alternative header in "${arg}"`);
  return [names[0]!, names[1]];
}

function requestHeader(arg: string | undefined, problems: string[]): (r: AccessRecord) => string | undefined {
  const [main, alt] = headerAlternatives(arg ?? '', problems);
  return alt ? (r) => requestValue(r, main) ?? requestValue(r, alt) : (r) => requestValue(r, main);
}

const field = (get: Getter): Spec => ({ make: () => get });
const joinedOrUndefined = (list: readonly string[] | undefined): string | undefined => (list && list.length > 0 ? list.join(',') : undefined);

const OPERATORS: Readonly<Record<string, Spec>> = {
  START_TIME: {
    params: 'optional',
    make: (fmt, problems) => {
      if (!fmt) return (r) => startTime(r.startTime);
      const f = compileStartTime(fmt, problems);
      return (r) => f(r.startTime);
    },
  },
  REQ: { params: 'required', length: true, make: requestHeader },
  REQ_WITHOUT_QUERY: {
    params: 'required', length: true,
    make: (arg, problems) => {
      const get = requestHeader(arg, problems);
      return (r) => {
        const v = get(r);
        const q = v === undefined ? -1 : v.indexOf('?');
        return q < 0 ? v : v!.slice(0, q);
      };
    },
  },
  RESP: {
    params: 'required', length: true,
    make: (arg, problems) => {
      const [main, alt] = headerAlternatives(arg ?? '', problems);
      return (r) => header(r.responseHeaders, main) ?? (alt ? header(r.responseHeaders, alt) : undefined);
    },
  },
  QUERY_PARAM: {
    params: 'required', length: true,
    make: (name) => (r) => {
      const q = r.path?.indexOf('?') ?? -1;
      return q < 0 ? undefined : new URLSearchParams(r.path!.slice(q + 1)).get(name!) ?? undefined;
    },
  },
  // Read once, when the format is compiled (as Envoy).
  ENVIRONMENT: { params: 'required', length: true, make: (name) => { const v = process.env[name!]; return () => v; } },
  HOSTNAME: { make: () => { const h = os.hostname(); return () => h; } },
  PROTOCOL: field((r) => r.protocol),
  RESPONSE_CODE: field((r) => r.responseCode),
  // Envoy writes "-" for no flags, in JSON too (a string, not null).
  RESPONSE_FLAGS: field((r) => (r.responseFlags.length > 0 ? r.responseFlags.join(',') : '-')),
  RESPONSE_CODE_DETAILS: field((r) => r.responseCodeDetails),
  CONNECTION_TERMINATION_DETAILS: field((r) => r.connectionTerminationDetails),
  UPSTREAM_TRANSPORT_FAILURE_REASON: field((r) => r.upstreamTransportFailureReason),
  BYTES_RECEIVED: field((r) => r.bytesReceived),
  BYTES_SENT: field((r) => r.bytesSent),
  DURATION: field((r) => r.durationMs),
  RESPONSE_DURATION: field((r) => r.responseDurationMs),
  UPSTREAM_HOST: field((r) => r.upstreamHost),
  UPSTREAM_CLUSTER: field((r) => r.upstreamCluster),
  UPSTREAM_CLUSTER_RAW: field((r) => r.upstreamCluster),
  REQUESTED_SERVER_NAME: field((r) => r.requestedServerName),
  ROUTE_NAME: field((r) => r.routeName),
  // A TLS upstream connection's certificates (mesh mTLS: the SPIFFE identities), Envoy's comma-joined list.
  UPSTREAM_PEER_URI_SAN: field((r) => joinedOrUndefined(r.upstreamIdentities?.peerUriSans)),
  UPSTREAM_LOCAL_URI_SAN: field((r) => joinedOrUndefined(r.upstreamIdentities?.localUriSans)),
  DOWNSTREAM_PEER_URI_SAN: field((r) => joinedOrUndefined(r.downstreamIdentities?.peerUriSans)),
  DOWNSTREAM_LOCAL_URI_SAN: field((r) => joinedOrUndefined(r.downstreamIdentities?.localUriSans)),
  ...addressOperators('UPSTREAM_REMOTE', (r) => r.upstreamHost),
  ...addressOperators('UPSTREAM_LOCAL', (r) => r.upstreamLocalAddress),
  ...addressOperators('DOWNSTREAM_LOCAL', (r) => r.downstreamLocalAddress),
  ...addressOperators('DOWNSTREAM_REMOTE', (r) => r.downstreamRemoteAddress),
  // The record's remote address is the peer of the socket: the direct one.
  ...addressOperators('DOWNSTREAM_DIRECT_REMOTE', (r) => r.downstreamRemoteAddress),
};

/** Envoy operators meshgate does not record: accepted (a warning), always `-`. */
const UNRECORDED: Readonly<Record<string, Spec>> = (() => {
  const out: Record<string, Spec> = {};
  const plain = [
    'REQUEST_DURATION', 'REQUEST_TX_DURATION', 'RESPONSE_TX_DURATION', 'DOWNSTREAM_HANDSHAKE_DURATION', 'ROUNDTRIP_DURATION',
    'UPSTREAM_CONNECTION_POOL_READY_DURATION', 'UPSTREAM_PROTOCOL', 'UPSTREAM_REQUEST_ATTEMPT_COUNT', 'CONNECTION_ID',
    'UPSTREAM_CONNECTION_ID', 'STREAM_ID', 'RESPONSE_FLAGS_LONG', 'CUSTOM_FLAGS', 'VIRTUAL_CLUSTER_NAME', 'TRACE_ID',
    'GRPC_STATUS_NUMBER', 'LOCAL_REPLY_BODY', 'ACCESS_LOG_TYPE', 'DOWNSTREAM_TRANSPORT_FAILURE_REASON',
    'UPSTREAM_HOST_NAME', 'UPSTREAM_HOST_NAME_WITHOUT_PORT', 'UPSTREAM_LOCAL_CLOSE_REASON', 'UPSTREAM_DETECTED_CLOSE_TYPE',
    'DOWNSTREAM_DETECTED_CLOSE_TYPE', 'REQUEST_HEADERS_BYTES', 'RESPONSE_HEADERS_BYTES', 'RESPONSE_TRAILERS_BYTES',
    'UPSTREAM_WIRE_BYTES_SENT', 'UPSTREAM_WIRE_BYTES_RECEIVED', 'UPSTREAM_HEADER_BYTES_SENT', 'UPSTREAM_HEADER_BYTES_RECEIVED',
    'DOWNSTREAM_WIRE_BYTES_SENT', 'DOWNSTREAM_WIRE_BYTES_RECEIVED', 'DOWNSTREAM_HEADER_BYTES_SENT', 'DOWNSTREAM_HEADER_BYTES_RECEIVED',
    'DOWNSTREAM_LOCAL_ADDRESS_ENDPOINT_ID', 'DOWNSTREAM_DIRECT_LOCAL_ADDRESS', 'DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT',
    'DOWNSTREAM_DIRECT_LOCAL_PORT', 'UPSTREAM_TLS_CIPHER', 'UPSTREAM_TLS_VERSION', 'UPSTREAM_TLS_SESSION_ID',
    'UPSTREAM_PEER_ISSUER', 'UPSTREAM_PEER_CERT', 'UPSTREAM_PEER_SUBJECT', 'UPSTREAM_PEER_DNS_SAN',
    'UPSTREAM_PEER_IP_SAN', 'UPSTREAM_PEER_CERT_V_START', 'UPSTREAM_PEER_CERT_V_END',
    'UPSTREAM_LOCAL_DNS_SAN', 'UPSTREAM_LOCAL_IP_SAN', 'UPSTREAM_LOCAL_SUBJECT', 'DOWNSTREAM_TLS_CIPHER', 'DOWNSTREAM_TLS_VERSION',
    'DOWNSTREAM_TLS_SESSION_ID', 'DOWNSTREAM_PEER_ISSUER', 'DOWNSTREAM_PEER_CERT', 'DOWNSTREAM_PEER_SUBJECT',
    'DOWNSTREAM_PEER_DNS_SAN', 'DOWNSTREAM_PEER_IP_SAN', 'DOWNSTREAM_PEER_EMAIL_SAN',
    'DOWNSTREAM_PEER_OTHERNAME_SAN', 'DOWNSTREAM_PEER_FINGERPRINT_256', 'DOWNSTREAM_PEER_FINGERPRINT_1', 'DOWNSTREAM_PEER_SERIAL',
    'DOWNSTREAM_PEER_CERT_V_START', 'DOWNSTREAM_PEER_CERT_V_END', 'DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256',
    'DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1', 'DOWNSTREAM_PEER_CHAIN_SERIALS', 'DOWNSTREAM_LOCAL_DNS_SAN',
    'DOWNSTREAM_LOCAL_IP_SAN', 'DOWNSTREAM_LOCAL_EMAIL_SAN', 'DOWNSTREAM_LOCAL_OTHERNAME_SAN', 'DOWNSTREAM_LOCAL_SUBJECT',
  ];
  for (const n of plain) out[n] = {};
  for (const n of ['GRPC_STATUS', 'START_TIME_LOCAL', 'EMIT_TIME', 'EMIT_TIME_LOCAL', 'PATH', 'UNIQUE_ID']) out[n] = { params: 'optional' };
  for (const n of ['TRAILER', 'DYNAMIC_METADATA', 'CLUSTER_METADATA', 'UPSTREAM_METADATA', 'FILTER_STATE', 'UPSTREAM_FILTER_STATE', 'METADATA', 'CEL']) {
    out[n] = { params: 'required', length: true };
  }
  return out;
})();

/** One `%NAME(arg):len%` found in a format. */
interface OperatorToken {
  readonly text: string;
  readonly pos: number;
  readonly name: string;
  readonly arg: string | undefined;
  readonly len: number | undefined;
}

const OPERATOR = /%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::(\d+))?%/y;

/**
 * Split a format into text and operators, as Envoy parses it: `%%` is a percent sign, and a `%` that
 * starts no `%NAME(arg):len%` is a problem (kept as text when compiling anyway).
 */
function tokenize(format: string, problems: string[]): (string | OperatorToken)[] {
  const out: (string | OperatorToken)[] = [];
  let text = '';
  for (let i = 0; i < format.length;) {
    const pct = format.indexOf('%', i);
    if (pct < 0) {
      text += format.slice(i);
      break;
    }
    text += format.slice(i, pct);
    if (format[pct + 1] === '%') {
      text += '%';
      i = pct + 2;
      continue;
    }
    OPERATOR.lastIndex = pct;
    const m = OPERATOR.exec(format);
    if (!m) {
      problems.push(`"%" at position ${pct} does not start an operator (write %% for a percent sign)`);
      text += '%';
      i = pct + 1;
      continue;
    }
    if (text) out.push(text);
    text = '';
    out.push({ text: m[0], pos: pct, name: m[1]!, arg: m[2], len: m[3] === undefined ? undefined : Number(m[3]) });
    i = OPERATOR.lastIndex;
  }
  if (text) out.push(text);
  return out;
}

/** The getter of one operator; problems (Envoy would reject the format) and warnings are pushed. */
function resolve(op: OperatorToken, errors: string[], warnings: string[]): Getter {
  const absent: Getter = () => undefined;
  const spec = OPERATORS[op.name] ?? UNRECORDED[op.name];
  if (!spec) {
    // Envoy rejects an operator it does not know; meshgate's list of Envoy's operators may lag a new
    // Envoy's, so a name it does not know is a warning (and logs `-`), never the whole config refused.
    warnings.push(`unknown operator ${op.text} at position ${op.pos}: logged as -`);
    return absent;
  }
  const before = errors.length;
  if (op.arg !== undefined && !spec.params) errors.push(`${op.text} takes no parameter`);
  if (!op.arg && spec.params === 'required') errors.push(`${op.text} needs a ${op.name.startsWith('REQ') || op.name === 'RESP' || op.name === 'TRAILER' ? 'header name' : 'parameter'}: %${op.name}(...)%`);
  if (op.len !== undefined && !spec.length) errors.push(`${op.text} does not allow a length (only REQ, RESP, REQ_WITHOUT_QUERY, ENVIRONMENT and the like do)`);
  if (errors.length > before) return absent;
  if (!spec.make) {
    warnings.push(`${op.text} is an Envoy operator meshgate does not record: it is always "-"`);
    return absent;
  }
  const problems: string[] = [];
  const get = spec.make(op.arg, problems);
  for (const p of problems) errors.push(`${op.text}: ${p}`);
  const len = op.len;
  if (len === undefined) return get;
  return (r) => {
    const v = get(r);
    return typeof v === 'string' ? v.slice(0, len) : v;
  };
}

/** Compile one `%OPERATOR%` (without the percent signs). Unknown operators render as absent. */
export function compileOperator(op: string): Getter {
  const tokens = tokenize(`%${op}%`, []);
  const t = tokens[0];
  return tokens.length === 1 && typeof t === 'object' ? resolve(t, [], []) : () => undefined;
}

type Part = string | Getter;

function compileParts(format: string, errors: string[], warnings: string[]): Part[] {
  return tokenize(format, errors).map((t) => (typeof t === 'string' ? t : resolve(t, errors, warnings)));
}

function renderText(parts: readonly Part[], r: AccessRecord): string {
  let out = '';
  for (const p of parts) {
    if (typeof p === 'string') out += p;
    else {
      const v = p(r);
      out += v === undefined || v === '' ? '-' : String(v);
    }
  }
  return out;
}

/**
 * Compile a TEXT format into a function producing the line. Problems `checkFormat` reports are
 * rendered as best it can (an unknown operator as `-`); the mesh config is checked before it gets here.
 */
export function compileTextFormat(format: string): (r: AccessRecord) => string {
  const parts = compileParts(format, [], []);
  return (r) => renderText(parts, r);
}

type JsonOut = string | number | boolean | null | JsonOut[] | { [k: string]: JsonOut };

/**
 * One value of a JSON template, as Envoy: a lone operator keeps its type (a number stays a number,
 * absent is null); text with operators is filled in as TEXT (absent is `-`); plain text is itself;
 * objects and lists are compiled inside; other JSON values are constants.
 */
function compileJsonValue(v: unknown, path: string, errors: string[], warnings: string[]): (r: AccessRecord) => JsonOut {
  if (typeof v === 'string') {
    const e: string[] = [];
    const w: string[] = [];
    const parts = compileParts(v, e, w);
    const at = path ? `${path}: ` : '';
    errors.push(...e.map((m) => at + m));
    warnings.push(...w.map((m) => at + m));
    if (parts.length === 0) return () => '';
    if (parts.length === 1) {
      const p = parts[0]!;
      if (typeof p === 'string') return () => p;
      return (r) => {
        const x = p(r);
        return x === undefined || x === '' ? null : x;
      };
    }
    return (r) => renderText(parts, r);
  }
  if (Array.isArray(v)) {
    const items = v.map((x, i) => compileJsonValue(x, `${path}[${i}]`, errors, warnings));
    return (r) => items.map((f) => f(r));
  }
  if (v && typeof v === 'object') {
    const entries = Object.entries(v).map(([k, x]) => [k, compileJsonValue(x, path ? `${path}.${k}` : k, errors, warnings)] as const);
    return (r) => {
      const obj: { [k: string]: JsonOut } = {};
      for (const [k, f] of entries) obj[k] = f(r);
      return obj;
    };
  }
  const c = (v === undefined ? null : v) as JsonOut;
  return () => c;
}

/** Compile a JSON format: keys to values (`%OPERATOR%`, text with operators, text, nested objects). */
export function compileJsonFormat(fields: readonly (readonly [string, unknown])[]): (r: AccessRecord) => string {
  const f = compileJsonValue(Object.fromEntries(fields), '', [], []);
  return (r) => JSON.stringify(f(r)) + '\n';
}

export interface AccessLogSettings {
  readonly file: string; // '' disables
  readonly encoding: 'TEXT' | 'JSON';
  readonly format: string; // '' = Istio's default
}

/** Parse a user JSON format (`{"key": "%OP%"}`); undefined when it is not such an object. */
function parseJsonFormat(format: string): [string, unknown][] | undefined {
  try {
    const obj = JSON.parse(format) as unknown;
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return undefined;
    return Object.entries(obj as Record<string, unknown>);
  } catch {
    return undefined;
  }
}

/**
 * What is wrong with a mesh config `accessLogFormat` for an `accessLogEncoding`: `errors` are what
 * Envoy rejects the format for (a stray `%`, a missing or extra parameter, a
 * length where none is allowed) and what meshgate cannot render (a START_TIME specifier); `warnings`
 * are operators meshgate does not know or does not record (always `-`), and a JSON encoding with a
 * format that is not a JSON object (Istio then uses its default JSON keys).
 */
export function inspectFormat(format: string, encoding: 'TEXT' | 'JSON' = 'TEXT'): { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  if (!format) return { errors, warnings };
  if (encoding === 'JSON') {
    const fields = parseJsonFormat(format);
    if (!fields) warnings.push('with accessLogEncoding JSON the format must be a JSON object of key to operator; Istio\'s default JSON format is used');
    else compileJsonValue(Object.fromEntries(fields), '', errors, warnings);
  } else {
    compileParts(format, errors, warnings);
  }
  return { errors, warnings };
}

/** The problems Envoy (or meshgate's renderer) would reject `format` for; empty when it is good. */
export function checkFormat(format: string, encoding: 'TEXT' | 'JSON' = 'TEXT'): string[] {
  return inspectFormat(format, encoding).errors;
}

export function formatterFor(s: AccessLogSettings): (r: AccessRecord) => string {
  if (s.encoding === 'JSON') return compileJsonFormat((s.format && parseJsonFormat(s.format)) || ISTIO_JSON_FORMAT);
  if (!s.format) return compileTextFormat(ISTIO_TEXT_FORMAT);
  return compileTextFormat(s.format.endsWith('\n') ? s.format : s.format + '\n');
}

/** Open a file for appending (its directory made if needed); undefined when it cannot be. */
function openAppend(file: string): number | undefined {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    return fs.openSync(file, 'a');
  } catch {
    return undefined;
  }
}

/**
 * Records whose lines are made together. Made one at a time, between requests, a line cost ~8 µs
 * of CPU at 1000 req/s (the formatter's code and data were out of the cache by the next request),
 * against ~1 µs in a run of them: ~15 % of a proxied request at that rate (docs/benchmarks.md,
 * "Where a request's CPU goes at 1000 req/s"). A batch waits at most until the next flush (every
 * 250 ms), so records are not held across more than one young-generation collection at that rate.
 */
const FORMAT_BATCH = 64;

/**
 * How long a line may wait before it is written: the first record logged after a flush arms a timer
 * that long. No timer runs while nothing is logged, so an idle proxy is not woken for nothing.
 */
const FLUSH_MS = 250;

export class AccessLog {
  private format: ((r: AccessRecord) => string) | undefined;
  private out: LineWriter | undefined;
  private key = '';
  private timer: NodeJS.Timeout | undefined;
  /** Records written whose lines are not made yet (see FORMAT_BATCH). */
  private pending: AccessRecord[] = [];

  constructor(settings?: AccessLogSettings) {
    if (settings) this.configure(settings);
  }

  /** Apply new mesh settings; reopens the file only when it changed. */
  configure(s: AccessLogSettings): void {
    const key = JSON.stringify(s);
    if (key === this.key) return;
    this.formatPending(); // in the format, and to the file, they were logged under
    const oldFile = this.key ? (JSON.parse(this.key) as AccessLogSettings).file : undefined;
    this.key = key;
    this.format = s.file ? formatterFor(s) : undefined;
    if (oldFile !== s.file) {
      this.closeOut();
      if (s.file) {
        const fd = s.file === '/dev/stdout' ? 1 : s.file === '/dev/stderr' ? 2 : openAppend(s.file);
        if (fd === undefined) return; // cannot be opened: no access log
        // Lines are buffered (a write per line costs a thread-pool hop and ~1 ms of latency at low
        // load) and written when a 64 KiB batch is full or FLUSH_MS after the first of them.
        this.out = new LineWriter(fd);
      }
    }
  }

  /** Lines will be written: a format and an open file (write() drops records otherwise). */
  get enabled(): boolean {
    return this.format !== undefined && this.out !== undefined;
  }

  /** Losses of access-log files no longer written (a mesh config change of accessLogFile). */
  private readonly lostBefore = { dropped: 0, errors: 0 };

  /** Lines dropped because the file did not keep up, and failed writes, since start (counters). */
  get losses(): { dropped: number; errors: number } {
    return { dropped: this.lostBefore.dropped + (this.out?.dropped ?? 0), errors: this.lostBefore.errors + (this.out?.errors ?? 0) };
  }

  /** Log a record. It must not change after this: its line is made later, with others (FORMAT_BATCH). */
  write(r: AccessRecord): void {
    if (!this.format || !this.out) return;
    this.pending.push(r);
    if (this.pending.length >= FORMAT_BATCH) this.formatPending();
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Start writing what is waiting now (asynchronous; tests poll the file). */
  flush(): void {
    this.formatPending();
    this.out?.flush();
  }

  /** The lines of the records waiting, into the writer, in the order they were logged. */
  private formatPending(): void {
    const records = this.pending;
    if (records.length === 0) return;
    this.pending = [];
    const { format, out } = this;
    if (!format || !out) return;
    for (const r of records) {
      try {
        out.write(format(r));
      } catch {
        // A formatter bug costs its own line, never the lines around it.
      }
    }
  }

  /**
   * Everything logged so far written, then the file closed. Gives up waiting after `timeoutMs` (a
   * stdout pipe nobody reads must not hold the process at exit); resolves whether it all got out.
   */
  async close(timeoutMs = 5000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      this.closeOut().then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
    clearTimeout(timer);
    return done;
  }

  private closeOut(): Promise<void> {
    this.formatPending();
    clearTimeout(this.timer);
    this.timer = undefined;
    const out = this.out;
    this.out = undefined;
    if (!out) return Promise.resolve();
    this.lostBefore.dropped += out.dropped;
    const errorsSoFar = out.errors;
    this.lostBefore.errors += errorsSoFar;
    return out.close().then(() => {
      this.lostBefore.errors += out.errors - errorsSoFar; // a write still in flight may yet fail
      if (out.fd > 2) fs.close(out.fd, () => {});
    });
  }
}
