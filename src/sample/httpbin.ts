// A small httpbin-like server: the sample backend `npm start` runs next to the gateway, and the
// upstream of the integration tests. Paths follow httpbin: /get, /anything, /headers, /ip,
// /status/N, /delay/N, /bytes/N, /stream-bytes/N, /post, /echo, plus failure modes for tests:
// /reset (socket destroyed, no response) and /garbage (an invalid HTTP response).

import http from 'node:http';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly time: number;
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

/** httpbin prints header names capitalised (`X-Request-Id`). */
function canonical(name: string): string {
  return name.split('-').map((p) => (p ? p[0]!.toUpperCase() + p.slice(1) : p)).join('-');
}

function headersJson(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) out[canonical(k)] = Array.isArray(v) ? v.join(',') : v;
  return out;
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function echoInfo(req: http.IncomingMessage, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const u = new URL(req.url ?? '/', 'http://x');
  return {
    args: Object.fromEntries(u.searchParams),
    headers: headersJson(req),
    method: req.method,
    origin: req.socket.remoteAddress?.replace(/^::ffff:/, ''),
    url: `http://${req.headers.host ?? 'localhost'}${req.url}`,
    ...extra,
  };
}

/** Read the body while hashing it: never buffers, whatever the size. */
function hashBody(req: http.IncomingMessage, done: (info: { length: number; sha256: string }) => void): void {
  const h = createHash('sha256');
  let length = 0;
  req.on('data', (c: Buffer) => {
    length += c.length;
    h.update(c);
  });
  req.on('end', () => done({ length, sha256: h.digest('hex') }));
}

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

function handle(name: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  const parts = url.pathname.split('/').filter(Boolean);
  const [head, arg] = parts;
  res.setHeader('x-served-by', name);
  switch (head) {
    case undefined:
      return html(res, `<html><body><h1>${name}</h1></body></html>\n`);
    case 'productpage':
    case 'static':
    case 'login':
    case 'logout':
    case 'api':
    case 'reviews':
    case 'split':
      return html(res, `<html><body><h1>${name}</h1><p>${url.pathname}</p></body></html>\n`);
    case 'hello':
      res.writeHead(200, { 'content-type': 'text/plain' });
      return void res.end(`Hello version: ${name}\n`);
    case 'get':
      return json(res, 200, echoInfo(req));
    case 'anything':
      return hashBody(req, (b) => json(res, 200, echoInfo(req, { data: { length: b.length, sha256: b.sha256 } })));
    case 'post':
    case 'put':
    case 'patch':
    case 'delete':
      return hashBody(req, (b) => json(res, 200, echoInfo(req, { data: { length: b.length, sha256: b.sha256 } })));
    case 'headers':
      return json(res, 200, { headers: headersJson(req) });
    case 'ip':
      return json(res, 200, { origin: req.socket.remoteAddress?.replace(/^::ffff:/, '') });
    case 'status': {
      const code = Number(arg);
      if (!Number.isInteger(code) || code < 100 || code > 599) return json(res, 400, { error: 'bad status' });
      if (code === 418) {
        res.writeHead(418, { 'x-more-info': 'http://tools.ietf.org/html/rfc2324', 'content-type': 'text/plain' });
        return void res.end(TEAPOT);
      }
      res.writeHead(code, { 'content-type': 'text/plain', 'content-length': 0 });
      return void res.end();
    }
    case 'delay': {
      const seconds = Math.min(10, Math.max(0, Number(arg) || 0));
      const t = setTimeout(() => json(res, 200, echoInfo(req)), seconds * 1000);
      res.on('close', () => clearTimeout(t));
      return;
    }
    case 'bytes': {
      const n = Math.min(100 * 1024 * 1024, Math.max(0, Number(arg) || 0));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
      return void res.end(pattern(n));
    }
    case 'stream-bytes': {
      let left = Math.max(0, Number(arg) || 0);
      const chunk = pattern(64 * 1024);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const pump = (): void => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    case 'echo': {
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream' };
      if (req.headers['content-length'] !== undefined) headers['content-length'] = req.headers['content-length'];
      res.writeHead(200, headers);
      req.pipe(res);
      return;
    }
    case 'reset':
      return void req.socket.destroy();
    case 'garbage':
      req.socket.end('HTTP/1.1 abc\r\n\r\n');
      return;
    default:
      res.writeHead(404, { 'content-type': 'text/plain' });
      return void res.end('not found\n');
  }
}

function html(res: http.ServerResponse, body: string): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export async function startHttpbin(opts: { port?: number; host?: string; name?: string } = {}): Promise<HttpbinServer> {
  const name = opts.name ?? 'httpbin';
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, time: Date.now() });
    if (requests.length > 10_000) requests.splice(0, 5_000);
    req.on('error', () => {});
    res.on('error', () => {});
    try {
      handle(name, req, res);
    } catch {
      res.destroy();
    }
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s) => s.on('error', () => {}));
  server.on('clientError', (_err, socket) => socket.destroy());
  // WebSocket-style upgrade on /ws: 101 with the computed accept key, then echo raw bytes.
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, time: Date.now() });
    if (!req.url?.startsWith('/ws')) return void socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    const key = String(req.headers['sec-websocket-key'] ?? '');
    const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nx-served-by: ${name}\r\n\r\n`);
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port, host, name, requests, server, url: `http://${host}:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
