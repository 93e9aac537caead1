// 1 GiB each way through a real meshgate process, checksummed, with the gateway's peak memory read
// from /proc: bodies are streamed with backpressure, never buffered.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitFor, httpGet } from '../helpers/upstream';
import { spawnMeshgate } from '../helpers/gateway';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

const GIB = 1024 * 1024 * 1024;

function peakRssMiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** Upload `total` bytes of a fixed pattern with content-length; resolves the JSON answer and our own sha256. */
function upload(port: number, total: number): Promise<{ answer: { data: { length: number; sha256: string } }; sha256: string }> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(256 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) % 256;
    const hash = createHash('sha256');
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/post', headers: { 'content-length': total } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        try {
          resolve({ answer: JSON.parse(body), sha256: hash.digest('hex') });
        } catch (err) {
          reject(new Error(`status ${res.statusCode}: ${body.slice(0, 200)} (${(err as Error).message})`));
        }
      });
    });
    req.on('error', reject);
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        const piece = n === chunk.length ? chunk : chunk.subarray(0, n);
        hash.update(piece);
        sent += n;
        if (!req.write(piece)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

function download(port: number, total: number): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `/stream-bytes/${total}` }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => { n += c.length; });
      res.on('end', () => resolve(n));
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('large bodies', function () {
  this.timeout(180_000);
  let child: ChildProcess | undefined;
  let up: HttpbinServer;
  let dir: string;

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await up?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('streams 1 GiB up and 1 GiB down byte-exact with flat gateway memory', async () => {
    up = await startHttpbin({ name: 'big' });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-big-'));
    const port = await freePort();
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: up.port }));
    child = spawnMeshgate(dir, port, [], 'ignore');
    await waitFor(async () => (await httpGet(port, '/get').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 10_000 });
    const baseline = peakRssMiB(child.pid!);

    const up1 = await upload(port, GIB);
    assert.equal(up1.answer.data.length, GIB);
    assert.equal(up1.answer.data.sha256, up1.sha256);
    const down = await download(port, GIB);
    assert.equal(down, GIB);

    const peak = peakRssMiB(child.pid!);
    // Streaming keeps the gateway within a few socket buffers of where it started.
    assert.ok(peak - baseline < 96, `gateway peak RSS grew from ${baseline.toFixed(0)} to ${peak.toFixed(0)} MiB`);
  });
});

/** A fixed pattern, `total` bytes, written with backpressure; resolves with its sha256. */
function sendPattern(sock: net.Socket, total: number): Promise<string> {
  return new Promise((resolve) => {
    const chunk = Buffer.alloc(256 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7 + 3) % 251;
    const hash = createHash('sha256');
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
        hash.update(piece);
        sent += piece.length;
        if (!sock.write(piece)) return void sock.once('drain', pump);
      }
      sock.end();
      resolve(hash.digest('hex'));
    };
    pump();
  });
}

/** Hash everything read until the other side's FIN. */
function hashUntilEnd(sock: net.Socket): Promise<{ sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    sock.on('data', (c: Buffer) => {
      hash.update(c);
      bytes += c.length;
    });
    sock.once('end', () => resolve({ sha256: hash.digest('hex'), bytes }));
    sock.once('error', reject);
  });
}

describe('large TCP transfers', function () {
  this.timeout(180_000);
  let child: ChildProcess | undefined;
  let upstream: net.Server;
  let dir: string;

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    upstream?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('proxies 1 GiB each way at once, byte-exact, with flat gateway memory', async () => {
    // The upstream sends 1 GiB while it hashes what it receives; after the client's FIN it sends
    // nothing more, so each side compares its own hash of what it sent with what the other got.
    let received: Promise<{ sha256: string; bytes: number }> | undefined;
    let sentByUpstream: Promise<string> | undefined;
    upstream = net.createServer({ allowHalfOpen: true }, (s) => {
      received = hashUntilEnd(s);
      sentByUpstream = sendPattern(s, GIB);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-bigtcp-'));
    const port = await freePort();
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: (upstream.address() as net.AddressInfo).port, protocol: 'TCP' }));
    child = spawnMeshgate(dir, port, [], 'ignore');
    await waitFor(() => new Promise<boolean>((resolve) => {
      const probe = net.connect(port, '127.0.0.1', () => { probe.destroy(); resolve(true); });
      probe.on('error', () => resolve(false));
    }), { timeoutMs: 10_000 });
    const baseline = peakRssMiB(child.pid!);

    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise<void>((r) => client.once('connect', () => r()));
    const [sentByClient, gotByClient] = await Promise.all([sendPattern(client, GIB), hashUntilEnd(client)]);
    client.destroy();
    const gotByUpstream = await received!;
    assert.equal(gotByUpstream.bytes, GIB);
    assert.equal(gotByUpstream.sha256, sentByClient);
    assert.equal(gotByClient.bytes, GIB);
    assert.equal(gotByClient.sha256, await sentByUpstream!);

    const peak = peakRssMiB(child.pid!);
    assert.ok(peak - baseline < 96, `gateway peak RSS grew from ${baseline.toFixed(0)} to ${peak.toFixed(0)} MiB`);
  });
});
