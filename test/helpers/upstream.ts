// Small helpers for integration tests: the real curl, raw sockets, free ports, polling.

import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';

export interface CurlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run the real curl; never throws on a non-zero exit (the code is in the result). */
export function curl(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile('curl', ['--max-time', String((opts.timeoutMs ?? 15_000) / 1000), ...args], { maxBuffer: 64 * 1024 * 1024, encoding: 'latin1' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

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
