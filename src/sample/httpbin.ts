// A small httpbin-like server: the sample backend `npm start` runs next to the gateway, the upstream
// of the integration tests, and a stand-in for the bookinfo services. Paths follow httpbin: /get,
// /anything, /headers, /ip, /status/N (or a weighted choice, /status/200:0.9,500:0.1), /delay/N,
// /bytes/N and /stream-bytes/N (N at most 4 GiB, else 400), /drip (numbytes at most 10 MiB),
// /response-headers?k=v, /post|put|patch|delete, plus /echo (streams the body back), /ws (upgrade,
// then raw echo; an Upgrade request anywhere else is served as the plain HTTP/1.1 request it also is)
// and failure modes for tests: /reset (socket destroyed, no response) and /garbage (an invalid HTTP
// response). JSON answers show the first X-Forwarded-For entry as `origin` and X-Forwarded-Proto's
// scheme in `url`, as httpbin does behind a proxy.

import http from 'node:http';
import { createHash } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  /** Request body bytes read so far (final once the body has ended). */
  bodyLength: number;
  readonly time: number;
  /** The client's port, as this server saw it (the proxy's %UPSTREAM_LOCAL_ADDRESS%). */
  readonly remotePort: number | undefined;
}

export interface HttpbinServer {
  readonly port: number;
  readonly host: string;
  readonly url: string;
  readonly name: string;
  readonly requests: RecordedRequest[];
  readonly server: http.Server;
  close(): Promise<void>;
}

export interface HttpbinOptions {
  readonly port?: number;
  readonly host?: string;
  /** Returned in the x-served-by header, the JSON answers and the HTML pages (e.g. 'reviews-v1'). */
  readonly name?: string;
  /** Picks among the codes of /status/200,500 (a number in [0, 1), as Math.random, the default). */
  readonly random?: () => number;
  /** Given one gunicorn-style access-log line per request (`127.0.0.1 - - [...] "GET /headers HTTP/1.1" 200 ...`); none by default. */
  readonly accessLog?: (line: string) => void;
}

const MAX_RECORDED = 10_000;
/** /bytes and /stream-bytes stream with backpressure, so memory never limits them; this bounds the work. */
const MAX_BYTES = 4 * 1024 ** 3;
/** /drip's limit, httpbin's (a larger numbytes is cut to it). */
const MAX_DRIP_BYTES = 10 * 1024 * 1024;
const MAX_DELAY_S = 10;
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** httpbin's extra headers for /status/N. */
const REDIRECT_LOCATION = '/redirect/1';
const FAKE_REALM = 'Basic realm="Fake Realm"';
/** Headers /response-headers refuses to set: they would break the framing of its own answer. */
const FRAMING_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'trailer', 'te']);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const TEAPOT = `
    -=[ teapot ]=-

       _...._
     .'  _ _ \`.
    | ."\` ^ \`". _,
    \\_;\`"---"\`|//
      |       ;/
      \\_     _/
        \`"""\`
`;

/** Byte k of every generated body (/bytes, /stream-bytes) is k % 251. */
export function patternByte(offset: number): number {
  return offset % 251;
}

// A multiple of 251 long, so consecutive copies continue the pattern without a seam.
const PATTERN = Buffer.from(Array.from({ length: 251 * 256 }, (_, i) => patternByte(i)));

/** httpbin prints header names capitalised (`X-Request-Id`). */
function canonical(name: string): string {
  return name.split('-').map((p) => (p ? p[0]!.toUpperCase() + p.slice(1) : p)).join('-');
}

function headersJson(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) out[canonical(k)] = Array.isArray(v) ? v.join(',') : v;
  return out;
}

/** The request target as a URL; a target starting with '/' is always a path (`//x` names no host). */
function parseTarget(target: string | undefined): URL | undefined {
  const t = target ?? '/';
  try {
    return new URL(t.startsWith('/') ? `http://localhost${t}` : t);
  } catch {
    return undefined;
  }
}

/** The first entry of a comma-separated header such as X-Forwarded-For, '' when absent. */
function firstEntry(value: string | string[] | undefined): string {
  const v = Array.isArray(value) ? value[0] : value;
  return (v ?? '').split(',')[0]!.trim();
}

function peerAddress(req: http.IncomingMessage): string {
  return (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
}

/** The client as httpbin names it: the first X-Forwarded-For entry, else the peer's address. */
function origin(req: http.IncomingMessage): string {
  return firstEntry(req.headers['x-forwarded-for']) || peerAddress(req);
}

/** X-Forwarded-Proto's scheme when it names one, else http. */
function scheme(req: http.IncomingMessage): string {
  const proto = firstEntry(req.headers['x-forwarded-proto']).toLowerCase();
  return /^[a-z][a-z0-9+.-]*$/.test(proto) ? proto : 'http';
}

/** Query pairs as httpbin shows them: a repeated key is a list of its values, a single value a string. */
function queryObject(params: URLSearchParams): Record<string, string | string[]> {
  const all = new Map<string, string[]>();
  for (const [k, v] of params) {
    const values = all.get(k);
    if (values) values.push(v);
    else all.set(k, [v]);
  }
  return Object.fromEntries([...all].map(([k, values]) => [k, values.length === 1 ? values[0]! : values]));
}

function echoInfo(req: http.IncomingMessage, url: URL, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    args: queryObject(url.searchParams),
    headers: headersJson(req),
    method: req.method,
    origin: origin(req),
    url: `${scheme(req)}://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`,
    ...extra,
  };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

function text(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function page(name: string, title: string): string {
  return `<!DOCTYPE html>\n<html><head><title>${title}</title></head><body><h1>${name}</h1><p>${title}</p></body></html>\n`;
}

/** A response to HEAD, and a 204 or 304, has no body: nothing is written for it. */
function bodiless(req: http.IncomingMessage, status: number): boolean {
  return req.method === 'HEAD' || status === 204 || status === 304;
}

/** Read the body while hashing it: never buffers, whatever the size. */
function hashBody(req: http.IncomingMessage, done: (body: { length: number; sha256: string }) => void): void {
  const hash = createHash('sha256');
  let length = 0;
  req.on('data', (c: Buffer) => {
    length += c.length;
    hash.update(c);
  });
  req.on('end', () => done({ length, sha256: hash.digest('hex') }));
}

/** Write n pattern bytes with backpressure; stops early if the client goes away. */
function writePattern(res: http.ServerResponse, n: number): void {
  let left = n;
  const pump = (): void => {
    while (left > 0 && !res.destroyed) {
      const size = Math.min(left, PATTERN.length);
      left -= size;
      if (!res.write(size === PATTERN.length ? PATTERN : PATTERN.subarray(0, size))) return void res.once('drain', pump);
    }
    if (!res.destroyed) res.end();
  };
  pump();
}

/** A non-negative number from a path segment or query value, clamped to max; NaN when absent or invalid. */
function amount(v: string | null | undefined, max: number): number {
  if (v === null || v === undefined || v === '') return NaN;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? Math.min(n, max) : NaN;
}

/** httpbin's /drip: numbytes bytes of '*' spread over duration seconds, after delay seconds. A client
 * that does not read is not buffered for: the next piece waits for the previous one to drain. */
function drip(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
  const param = (key: string, fallback: number, max: number): number => {
    const n = amount(url.searchParams.get(key), max);
    return Number.isNaN(n) ? fallback : n;
  };
  const numbytes = Math.floor(param('numbytes', 10, MAX_DRIP_BYTES));
  const duration = param('duration', 2, 60);
  const delay = param('delay', 0, MAX_DELAY_S);
  const code = param('code', 200, 599);
  const status = Number.isInteger(code) && code >= 200 ? code : 200;
  const noBody = bodiless(req, status);
  const ticks = noBody ? 0 : Math.min(numbytes, 1000);
  let sent = 0;
  let tick = 0;
  let timer: NodeJS.Timeout | undefined;
  res.on('close', () => clearTimeout(timer));
  const next = (): void => void (timer = setTimeout(step, (duration * 1000) / ticks));
  const step = (): void => {
    tick++;
    const upTo = Math.floor((numbytes * tick) / ticks);
    const flushed = res.write(Buffer.alloc(upTo - sent, '*'));
    sent = upTo;
    if (tick === ticks) return void res.end();
    if (flushed) next();
    else res.once('drain', next); // never fires once the client is gone: nothing more is scheduled
  };
  timer = setTimeout(() => {
    const length = status === 204 || status === 304 ? {} : { 'content-length': numbytes };
    res.writeHead(status, { 'content-type': 'application/octet-stream', ...length });
    if (ticks === 0) return void res.end();
    next();
  }, delay * 1000);
}

/** /status/CODES as httpbin: one code, or `code[:weight]` entries separated by commas, picked at random
 * by weight (1 when not given). undefined when the list is invalid or all its weights are zero. */
function pickStatus(spec: string, random: () => number): number | undefined {
  const choices: { code: number; weight: number }[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d{3})(?::(\d+(?:\.\d*)?|\.\d+))?$/.exec(part.trim());
    const code = Number(m?.[1]);
    // 1xx are interim answers in HTTP/1.1, not something a handler can finish a request with.
    if (!m || code < 200 || code > 599) return undefined;
    choices.push({ code, weight: m[2] === undefined ? 1 : Number(m[2]) });
  }
  const total = choices.reduce((sum, c) => sum + c.weight, 0);
  if (!(total > 0 && Number.isFinite(total))) return undefined;
  let x = random() * total;
  for (const c of choices) {
    if (x < c.weight) return c.code;
    x -= c.weight;
  }
  return choices.findLast((c) => c.weight > 0)!.code; // x rounded up to total
}

/** Answer /status/N with httpbin's extra headers (Location, WWW-Authenticate, ...) and teapot. */
function status(res: http.ServerResponse, code: number): void {
  if (code === 418) {
    res.setHeader('x-more-info', 'http://tools.ietf.org/html/rfc2324');
    return text(res, 418, TEAPOT);
  }
  if (code === 204 || code === 304) return void res.writeHead(code).end(); // no body, so no content-length
  const headers: http.OutgoingHttpHeaders = { 'content-length': 0 };
  if ([301, 302, 303, 305, 307].includes(code)) headers['location'] = REDIRECT_LOCATION;
  if (code === 401) headers['www-authenticate'] = FAKE_REALM;
  if (code === 407) headers['proxy-authenticate'] = FAKE_REALM;
  res.writeHead(code, headers);
  res.end();
}

/** httpbin's /response-headers: every query pair becomes a response header, and the JSON body lists them. */
function responseHeaders(res: http.ServerResponse, url: URL): void {
  const pairs = queryObject(url.searchParams);
  try {
    for (const [name, value] of Object.entries(pairs)) {
      if (FRAMING_HEADERS.has(name.toLowerCase())) throw new Error(`${name} cannot be set`);
      http.validateHeaderName(name);
      for (const v of [value].flat()) http.validateHeaderValue(name, v);
    }
  } catch {
    return text(res, 400, 'invalid response header\n');
  }
  const payload = JSON.stringify(pairs, null, 2) + '\n';
  res.setHeader('content-type', 'application/json'); // a content-type pair replaces it
  for (const [name, value] of Object.entries(pairs)) res.setHeader(name, value);
  res.setHeader('content-length', Buffer.byteLength(payload));
  res.writeHead(200);
  res.end(payload);
}

interface Context {
  readonly name: string;
  readonly random: () => number;
}

function handle({ name, random }: Context, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = parseTarget(req.url);
  if (!url) return text(res, 400, 'invalid request target\n');
  const [head, arg] = url.pathname.split('/').filter(Boolean);
  switch (head) {
    case undefined:
      return text(res, 200, page(name, `${name} sample service`), 'text/html; charset=utf-8');
    case 'productpage':
    case 'static':
    case 'login':
    case 'logout':
    case 'api':
    case 'reviews':
    case 'ratings':
    case 'details':
      return text(res, 200, page(name, url.pathname), 'text/html; charset=utf-8');
    case 'hello':
      return text(res, 200, `Hello version: ${name}\n`);
    case 'get':
      return json(res, 200, echoInfo(req, url, { name }));
    case 'anything':
    case 'post':
    case 'put':
    case 'patch':
    case 'delete':
      return hashBody(req, (data) => json(res, 200, echoInfo(req, url, { name, data })));
    case 'headers':
      return json(res, 200, { headers: headersJson(req) });
    case 'ip':
      return json(res, 200, { origin: origin(req) });
    case 'status': {
      const code = pickStatus(arg ?? '', random);
      return code === undefined ? text(res, 400, 'invalid status code\n') : status(res, code);
    }
    case 'response-headers':
      return responseHeaders(res, url);
    case 'delay': {
      const seconds = amount(arg, MAX_DELAY_S);
      if (Number.isNaN(seconds)) return text(res, 400, 'invalid delay\n');
      const timer = setTimeout(() => json(res, 200, echoInfo(req, url, { name })), seconds * 1000);
      res.on('close', () => clearTimeout(timer)); // the client went away: stop waiting
      return;
    }
    case 'bytes':
    case 'stream-bytes': {
      const n = Math.floor(amount(arg, Infinity));
      if (Number.isNaN(n) || n > MAX_BYTES) return text(res, 400, `invalid byte count (at most ${MAX_BYTES})\n`);
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(head === 'bytes' ? { 'content-length': n } : {}) });
      // HEAD: write() would accept every piece at once, without ever pushing back
      return bodiless(req, 200) ? void res.end() : writePattern(res, n);
    }
    case 'drip':
      return drip(req, res, url);
    case 'echo': {
      const length = req.headers['content-length'];
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream', ...(length !== undefined ? { 'content-length': length } : {}) });
      req.pipe(res); // pipe keeps the backpressure: the client's upload slows down to its download
      return;
    }
    case 'reset':
      return void req.socket.destroy();
    case 'garbage':
      return void req.socket.end('HTTP/1.1 abc\r\n\r\n');
    default:
      return text(res, 404, 'not found\n');
  }
}

/** WebSocket-style upgrade on /ws: 101 with the computed accept key, then every byte is echoed. Returns the status. */
function websocketEcho(name: string, req: http.IncomingMessage, socket: Duplex, head: Buffer): number {
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || key === '') return refuse(name, socket, 400, 'Bad Request');
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nx-served-by: ${name}\r\n\r\n`);
  if (head.length > 0) socket.write(head);
  socket.pipe(socket);
  return 101;
}

function refuse(name: string, socket: Duplex, code: number, reason: string): number {
  socket.end(`HTTP/1.1 ${code} ${reason}\r\nx-served-by: ${name}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  return code;
}

/**
 * An Upgrade this server does not take (h2c, or a WebSocket anywhere but /ws) is served as the plain
 * HTTP/1.1 request it also is, as servers that ignore Upgrade do. node:http has already handed the
 * socket over, so the request head is given back to it without the `upgrade` token in Connection
 * (which also keeps it from coming back here), followed by the bytes already read after the head,
 * and the socket is injected into the server again: body, keep-alive and pipelining work as usual.
 */
function serveAsPlainHttp(server: http.Server, req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const [name, value] = [req.rawHeaders[i]!, req.rawHeaders[i + 1]!];
    if (name.toLowerCase() !== 'connection') {
      lines.push(`${name}: ${value}`);
      continue;
    }
    const tokens = value.split(',').map((t) => t.trim()).filter((t) => t !== '' && t.toLowerCase() !== 'upgrade');
    if (tokens.length > 0) lines.push(`${name}: ${tokens.join(', ')}`);
  }
  socket.unshift(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), head]));
  server.emit('connection', socket);
}

/** gunicorn's default access-log line: `peer - - [time] "request line" status bytes "referer" "user agent"`. */
function accessLine(req: http.IncomingMessage, status: string, bytes: string, now = new Date()): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  const time = `${two(now.getUTCDate())}/${MONTHS[now.getUTCMonth()]}/${now.getUTCFullYear()}:${two(now.getUTCHours())}:${two(now.getUTCMinutes())}:${two(now.getUTCSeconds())} +0000`;
  const quoted = (v: string | undefined): string => `"${(v ?? '-').replace(/[\\"\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}"`;
  const line = `${req.method} ${req.url} HTTP/${req.httpVersion}`;
  return `${peerAddress(req)} - - [${time}] ${quoted(line)} ${status} ${bytes} ${quoted(req.headers.referer)} ${quoted(req.headers['user-agent'])}`;
}

export async function startHttpbin(opts: HttpbinOptions = {}): Promise<HttpbinServer> {
  const ctx: Context = { name: opts.name ?? 'httpbin', random: opts.random ?? Math.random };
  const { name } = ctx;
  const host = opts.host ?? '127.0.0.1';
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>(); // upgraded sockets too, which closeAllConnections() does not know
  const record = (req: http.IncomingMessage): RecordedRequest => {
    const r: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyLength: 0, time: Date.now(), remotePort: req.socket.remotePort };
    requests.push(r);
    if (requests.length > MAX_RECORDED) requests.splice(0, requests.length - MAX_RECORDED / 2);
    return r;
  };
  // Answers a connection has not finished yet, and what waits for the last of them: an upgrade behind
  // pipelined requests must not write to the socket (or inject it again) while their answers own it.
  const busy = new WeakMap<object, { unfinished: number; whenIdle?: () => void }>();
  const log = (req: http.IncomingMessage, status: string, bytes: string): void => {
    try {
      opts.accessLog?.(accessLine(req, status, bytes));
    } catch {
      // the embedder's logger failing is no reason to fail the request
    }
  };

  const server = http.createServer((req, res) => {
    const r = record(req);
    const b = busy.get(req.socket) ?? { unfinished: 0 };
    busy.set(req.socket, b);
    b.unfinished++;
    res.once('close', () => {
      if (--b.unfinished > 0 || !b.whenIdle) return;
      const next = b.whenIdle;
      b.whenIdle = undefined;
      next();
    });
    req.on('data', (c: Buffer) => void (r.bodyLength += c.length));
    req.on('error', () => {});
    res.on('error', () => {});
    if (opts.accessLog) res.once('close', () => log(req, res.headersSent ? String(res.statusCode) : '-', String(res.getHeader('content-length') ?? '-')));
    res.setHeader('x-served-by', name);
    try {
      handle(ctx, req, res);
    } catch {
      res.destroy();
    }
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s: Socket) => {
    if (sockets.has(s)) return; // injected again by serveAsPlainHttp: already watched
    sockets.add(s);
    s.on('error', () => {}); // stays through an upgrade, when node:http drops its own handler
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket: Duplex) => socket.destroy());
  const upgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (socket.destroyed) return;
    const url = parseTarget(req.url);
    if (url && url.pathname !== '/ws') return serveAsPlainHttp(server, req, socket, head);
    record(req);
    const code = url ? websocketEcho(name, req, socket, head) : refuse(name, socket, 400, 'Bad Request');
    if (opts.accessLog) log(req, String(code), '-');
  };
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const b = busy.get(socket);
    if (b && b.unfinished > 0) b.whenIdle = () => upgrade(req, socket, head);
    else upgrade(req, socket, head);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      server.on('error', () => {});
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    host,
    name,
    requests,
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
