// A small httpbin-like server: the sample backend `npm start` runs next to the gateway, the upstream
// of the integration tests, and a stand-in for the bookinfo services. Paths follow httpbin: /get,
// /anything, /headers, /ip, /status/N, /delay/N, /bytes/N, /stream-bytes/N, /drip, /post|put|patch|
// delete, plus /echo (streams the body back), /ws (upgrade, then raw echo) and failure modes for
// tests: /reset (socket destroyed, no response) and /garbage (an invalid HTTP response).

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
}

const MAX_RECORDED = 10_000;
/** /drip's limit; /bytes and /stream-bytes stream with backpressure, so any size is fine. */
const MAX_DRIP_BYTES = 100 * 1024 * 1024;
const MAX_DELAY_S = 10;
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

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

function origin(req: http.IncomingMessage): string {
  return (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
}

function echoInfo(req: http.IncomingMessage, url: URL, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    args: Object.fromEntries(url.searchParams),
    headers: headersJson(req),
    method: req.method,
    origin: origin(req),
    url: `http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`,
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

/** httpbin's /drip: numbytes bytes of '*' spread over duration seconds, after delay seconds. */
function drip(res: http.ServerResponse, url: URL): void {
  const param = (key: string, fallback: number, max: number): number => {
    const n = amount(url.searchParams.get(key), max);
    return Number.isNaN(n) ? fallback : n;
  };
  const numbytes = Math.floor(param('numbytes', 10, MAX_DRIP_BYTES));
  const duration = param('duration', 2, 60);
  const delay = param('delay', 0, MAX_DELAY_S);
  const code = param('code', 200, 599);
  const status = Number.isInteger(code) && code >= 200 ? code : 200;
  const ticks = Math.min(numbytes, 1000);
  let sent = 0;
  let tick = 0;
  let timer: NodeJS.Timeout | undefined;
  res.on('close', () => clearTimeout(timer));
  const step = (): void => {
    tick++;
    const upTo = Math.floor((numbytes * tick) / ticks);
    res.write(Buffer.alloc(upTo - sent, '*'));
    sent = upTo;
    if (tick < ticks) timer = setTimeout(step, (duration * 1000) / ticks);
    else res.end();
  };
  timer = setTimeout(() => {
    res.writeHead(status, { 'content-type': 'application/octet-stream', 'content-length': numbytes });
    if (ticks === 0) return void res.end();
    timer = setTimeout(step, (duration * 1000) / ticks);
  }, delay * 1000);
}

function handle(name: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://localhost');
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
      const code = Number(arg);
      // 1xx are interim answers in HTTP/1.1, not something a handler can finish a request with.
      if (!Number.isInteger(code) || code < 200 || code > 599) return text(res, 400, 'invalid status code\n');
      if (code === 418) {
        res.setHeader('x-more-info', 'http://tools.ietf.org/html/rfc2324');
        return text(res, 418, TEAPOT);
      }
      res.writeHead(code, { 'content-length': 0 });
      return void res.end();
    }
    case 'delay': {
      const seconds = amount(arg, MAX_DELAY_S);
      if (Number.isNaN(seconds)) return text(res, 400, 'invalid delay\n');
      const timer = setTimeout(() => json(res, 200, echoInfo(req, url, { name })), seconds * 1000);
      res.on('close', () => clearTimeout(timer)); // the client went away: stop waiting
      return;
    }
    case 'bytes':
    case 'stream-bytes': {
      const n = Math.floor(amount(arg, Number.MAX_SAFE_INTEGER));
      if (Number.isNaN(n)) return text(res, 400, 'invalid byte count\n');
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(head === 'bytes' ? { 'content-length': n } : {}) });
      return writePattern(res, n);
    }
    case 'drip':
      return drip(res, url);
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

/** WebSocket-style upgrade on /ws: 101 with the computed accept key, then every byte is echoed. */
function upgrade(name: string, req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  const key = req.headers['sec-websocket-key'];
  const refuse = (status: string): void => void socket.end(`HTTP/1.1 ${status}\r\nx-served-by: ${name}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  if (new URL(req.url ?? '/', 'http://localhost').pathname !== '/ws') return refuse('404 Not Found');
  if (typeof key !== 'string' || key === '') return refuse('400 Bad Request');
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nx-served-by: ${name}\r\n\r\n`);
  if (head.length > 0) socket.write(head);
  socket.pipe(socket);
}

export async function startHttpbin(opts: HttpbinOptions = {}): Promise<HttpbinServer> {
  const name = opts.name ?? 'httpbin';
  const host = opts.host ?? '127.0.0.1';
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>(); // upgraded sockets too, which closeAllConnections() does not know
  const record = (req: http.IncomingMessage): RecordedRequest => {
    const r: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyLength: 0, time: Date.now(), remotePort: req.socket.remotePort };
    requests.push(r);
    if (requests.length > MAX_RECORDED) requests.splice(0, requests.length - MAX_RECORDED / 2);
    return r;
  };

  const server = http.createServer((req, res) => {
    const r = record(req);
    req.on('data', (c: Buffer) => void (r.bodyLength += c.length));
    req.on('error', () => {});
    res.on('error', () => {});
    res.setHeader('x-served-by', name);
    try {
      handle(name, req, res);
    } catch {
      res.destroy();
    }
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket: Duplex) => socket.destroy());
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    record(req);
    upgrade(name, req, socket, head);
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
