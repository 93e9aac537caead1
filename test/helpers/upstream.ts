// Small helpers for integration tests: the real curl, raw sockets, free ports, polling.

import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';

export interface CurlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Run the real curl binary with `--max-time` (and a kill timer a little later as a backstop). Never
 * throws: a non-zero exit, a kill or a missing binary come back as a non-zero code with stderr.
 * stdout is latin1, so one character is one byte of the response body.
 */
export function curl(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<CurlResult> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  return new Promise((resolve) => {
    const options = { timeout: timeoutMs + 2_000, maxBuffer: 64 * 1024 * 1024, encoding: 'latin1' as const };
    execFile('curl', ['--max-time', String(timeoutMs / 1000), ...args], options, (err, stdout, stderr) => {
      if (!err) return resolve({ code: 0, stdout, stderr });
      const code = typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      resolve({ code, stdout, stderr: stderr || err.message });
    });
  });
}

/** A started httpbin on 127.0.0.1, port 0; nothing global is registered, the caller closes it. */
export function withHttpbin(name = 'httpbin'): Promise<HttpbinServer> {
  return startHttpbin({ host: '127.0.0.1', port: 0, name });
}

/** Write raw bytes, return everything read until the server closes or the timeout passes. */
export function rawHttp(port: number, request: string | Buffer, opts: { timeoutMs: number; host?: string }): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(port, opts.host ?? '127.0.0.1');
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(done, opts.timeoutMs);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', done);
    sock.on('close', done);
  });
}

/** Ports this test process has handed out: the kernel may offer a just-closed port again. */
const handedOut = new Set<number>();

/**
 * A port that was free a moment ago on 127.0.0.1 (another process may still take it), never one this
 * process handed out before: two calls in a row can otherwise get the same port (a gateway's second
 * listener then fails to bind and its traffic lands on the first).
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port: p } = s.address() as net.AddressInfo;
        s.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no fresh free port after 100 tries');
}

/** Poll until the predicate holds; rejects after timeoutMs. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, opts: { timeoutMs: number; intervalMs?: number }): Promise<void> {
  const end = Date.now() + opts.timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > end) throw new Error(`condition not met within ${opts.timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

/** GET with any headers (Host included, which fetch() refuses to set); the body is read fully. */
export function httpGet(port: number, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.setTimeout(15_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** Listen on a free loopback port (127.0.0.1:0). */
export function listenLoopback(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
}

/** The port a listening server got. */
export function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}
