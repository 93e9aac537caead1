// 1 GiB each way through a real meshgate process, checksummed, with the gateway's peak memory read
// from /proc: bodies are streamed with backpressure, never buffered.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
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
