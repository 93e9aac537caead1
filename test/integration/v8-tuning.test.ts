// The V8 settings `meshgate run` applies (src/v8-tuning.ts), seen from outside through the admin
// /memory endpoint: after a few thousand proxied requests V8's peak malloc stays small, where
// TurboFan recompiling undici's llhttp parser would have taken ~35 MiB for a moment.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawnMeshgate } from '../helpers/gateway';
import { freePort, httpGet, waitFor, withHttpbin } from '../helpers/upstream';
import type { HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

const MiB = 1024 * 1024;

describe('V8 settings of a running gateway (admin /memory)', function () {
  this.timeout(60_000);
  let dir: string;
  let upstream: HttpbinServer;
  let child: ChildProcess | undefined;

  before(async () => {
    upstream = await withHttpbin('v8-tuning');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-v8-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: upstream.port }));
  });
  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await upstream?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers /memory with Envoy\'s fields; 4000 requests later V8 has not malloced more than 16 MiB at any moment', async () => {
    const port = await freePort();
    const admin = await freePort();
    child = spawnMeshgate(dir, port, ['--admin-port', String(admin)], 'ignore');
    await waitFor(async () => (await httpGet(admin, '/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });

    // 8 keep-alive loops of 500 requests each through the gateway (bounded in count; ~2 s).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const one = () => new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/get', agent, headers: { host: 'httpbin.example.com' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      }).on('error', reject);
    });
    const statuses = new Map<number, number>();
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 500; i++) {
        const s = await one();
        statuses.set(s, (statuses.get(s) ?? 0) + 1);
      }
    }));
    agent.destroy();
    assert.deepEqual([...statuses], [[200, 4000]]);
    // Tier-up compiles run in the background a moment after the code got hot.
    await new Promise((r) => setTimeout(r, 1500));

    const res = await httpGet(admin, '/memory');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json');
    const m = JSON.parse(res.body) as Record<string, string> & { v8: Record<string, string> };
    for (const k of ['allocated', 'heap_size', 'pageheap_unmapped', 'pageheap_free', 'total_thread_cache', 'total_physical_bytes']) {
      assert.match(m[k]!, /^\d+$/, `${k}: ${m[k]}`);
    }
    assert.ok(Number(m.total_physical_bytes) > 20 * MiB && Number(m.total_physical_bytes) < 1024 * MiB, m.total_physical_bytes);
    assert.ok(Number(m.allocated) > Number(m.heap_size) / 4, JSON.stringify(m));
    const peak = Number(m.v8.peak_malloced_memory);
    assert.ok(peak > 0 && peak < 16 * MiB, `V8 peak malloc ${(peak / MiB).toFixed(1)} MiB (TurboFan recompiled llhttp?)`);
  });
});
