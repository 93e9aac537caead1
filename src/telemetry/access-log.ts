// Istio's access log: the default TEXT format field for field, Istio's JSON keys when the mesh config
// says JSON, or a user `accessLogFormat` with Envoy %OPERATORS%. Formats are compiled once into a
// list of small functions; lines are written in batches by a LineWriter (line-writer.ts).

import fs from 'node:fs';
import path from 'node:path';
import { LineWriter } from './line-writer';

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
  requestHeaders?: Readonly<Record<string, string | string[] | undefined>>;
  responseHeaders?: Readonly<Record<string, string | string[] | number | undefined>>;
  authority?: string;
  upstreamHost?: string;
  upstreamCluster?: string;
  upstreamLocalAddress?: string;
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

/** One operator: returns the value, or undefined for "absent" (rendered `-` in TEXT, null in JSON). */
type Getter = (r: AccessRecord) => string | number | undefined;

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
    case 'x-envoy-original-path': return header(r.requestHeaders, name);
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

const SIMPLE: Readonly<Record<string, Getter>> = {
  START_TIME: (r) => startTime(r.startTime),
  PROTOCOL: (r) => r.protocol,
  RESPONSE_CODE: (r) => r.responseCode,
  RESPONSE_FLAGS: (r) => (r.responseFlags.length > 0 ? r.responseFlags.join(',') : undefined),
  RESPONSE_CODE_DETAILS: (r) => r.responseCodeDetails,
  CONNECTION_TERMINATION_DETAILS: (r) => r.connectionTerminationDetails,
  UPSTREAM_TRANSPORT_FAILURE_REASON: (r) => r.upstreamTransportFailureReason,
  BYTES_RECEIVED: (r) => r.bytesReceived,
  BYTES_SENT: (r) => r.bytesSent,
  DURATION: (r) => r.durationMs,
  UPSTREAM_HOST: (r) => r.upstreamHost,
  UPSTREAM_CLUSTER: (r) => r.upstreamCluster,
  UPSTREAM_CLUSTER_RAW: (r) => r.upstreamCluster,
  UPSTREAM_LOCAL_ADDRESS: (r) => r.upstreamLocalAddress,
  DOWNSTREAM_LOCAL_ADDRESS: (r) => r.downstreamLocalAddress,
  DOWNSTREAM_REMOTE_ADDRESS: (r) => r.downstreamRemoteAddress,
  DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT: (r) => r.downstreamRemoteAddress?.replace(/:\d+$/, ''),
  REQUESTED_SERVER_NAME: (r) => r.requestedServerName,
  ROUTE_NAME: (r) => r.routeName,
};

/** Compile one `%OPERATOR%` (without the percent signs). Unknown operators render as `-`. */
export function compileOperator(op: string): Getter {
  const m = /^(REQ|RESP)\(([^)]+)\)(?::\d+)?$/.exec(op);
  if (m) {
    const [main, alt] = m[2]!.toLowerCase().split('?') as [string, string | undefined];
    if (m[1] === 'RESP') return (r) => header(r.responseHeaders, main) ?? (alt ? header(r.responseHeaders, alt) : undefined);
    return (r) => requestValue(r, main) ?? (alt ? requestValue(r, alt) : undefined);
  }
  return SIMPLE[op] ?? (() => undefined);
}

/** Compile a TEXT format into a function producing the line. */
export function compileTextFormat(format: string): (r: AccessRecord) => string {
  const parts: (string | Getter)[] = [];
  const re = /%([A-Z_]+(?:\([^)]*\))?(?::\d+)?)%/g;
  let last = 0;
  for (let m = re.exec(format); m; m = re.exec(format)) {
    if (m.index > last) parts.push(format.slice(last, m.index));
    parts.push(compileOperator(m[1]!));
    last = re.lastIndex;
  }
  if (last < format.length) parts.push(format.slice(last));
  return (r) => {
    let out = '';
    for (const p of parts) {
      if (typeof p === 'string') out += p;
      else {
        const v = p(r);
        out += v === undefined || v === '' ? '-' : String(v);
      }
    }
    return out;
  };
}

export function compileJsonFormat(fields: readonly (readonly [string, string])[]): (r: AccessRecord) => string {
  const getters = fields.map(([k, op]) => [k, compileOperator(op.replace(/^%|%$/g, ''))] as const);
  return (r) => {
    const obj: Record<string, string | number | null> = {};
    for (const [k, g] of getters) {
      const v = g(r);
      obj[k] = v === undefined || v === '' ? null : v;
    }
    return JSON.stringify(obj) + '\n';
  };
}

export interface AccessLogSettings {
  readonly file: string; // '' disables
  readonly encoding: 'TEXT' | 'JSON';
  readonly format: string; // '' = Istio's default
}

/** Parse a user JSON format (`{"key": "%OP%"}`); undefined when it is not such an object. */
function parseJsonFormat(format: string): [string, string][] | undefined {
  try {
    const obj = JSON.parse(format) as unknown;
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return undefined;
    return Object.entries(obj as Record<string, unknown>).map(([k, v]) => [k, String(v)]);
  } catch {
    return undefined;
  }
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

export class AccessLog {
  private format: ((r: AccessRecord) => string) | undefined;
  private out: LineWriter | undefined;
  private key = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(settings?: AccessLogSettings) {
    if (settings) this.configure(settings);
  }

  /** Apply new mesh settings; reopens the file only when it changed. */
  configure(s: AccessLogSettings): void {
    const key = JSON.stringify(s);
    if (key === this.key) return;
    const oldFile = this.key ? (JSON.parse(this.key) as AccessLogSettings).file : undefined;
    this.key = key;
    this.format = s.file ? formatterFor(s) : undefined;
    if (oldFile !== s.file) {
      this.closeOut();
      if (s.file) {
        const fd = s.file === '/dev/stdout' ? 1 : s.file === '/dev/stderr' ? 2 : openAppend(s.file);
        if (fd === undefined) return; // cannot be opened: no access log
        // Lines are buffered (a write per line costs a thread-pool hop and ~1 ms of latency at low
        // load) and written when 8 KiB are waiting or every 250 ms, whichever comes first.
        const out = new LineWriter(fd);
        this.out = out;
        this.timer = setInterval(() => out.flush(), 250);
        this.timer.unref();
      }
    }
  }

  get enabled(): boolean {
    return this.format !== undefined;
  }

  /** Losses of access-log files no longer written (a mesh config change of accessLogFile). */
  private readonly lostBefore = { dropped: 0, errors: 0 };

  /** Lines dropped because the file did not keep up, and failed writes, since start (counters). */
  get losses(): { dropped: number; errors: number } {
    return { dropped: this.lostBefore.dropped + (this.out?.dropped ?? 0), errors: this.lostBefore.errors + (this.out?.errors ?? 0) };
  }

  write(r: AccessRecord): void {
    if (!this.format || !this.out) return;
    this.out.write(this.format(r));
  }

  /** Start writing what is waiting now (asynchronous; tests poll the file). */
  flush(): void {
    this.out?.flush();
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
    if (this.timer) clearInterval(this.timer);
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
