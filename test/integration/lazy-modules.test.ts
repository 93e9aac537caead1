// Libraries a gateway may never need are loaded on first use (src/undici.ts, src/tls/inspect.ts):
// a gateway routing plain HTTP/1.1 never loads undici or @peculiar/x509. Seen from outside: the
// real CLI runs with a preload that writes, at exit, every module it loaded.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnMeshgate } from '../helpers/gateway';
import { curl, freePort, httpGet, waitFor, withHttpbin } from '../helpers/upstream';
import type { HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

describe('libraries loaded on first use', function () {
  this.timeout(60_000);
  let dir: string;
  let upstream: HttpbinServer;

  before(async () => {
    upstream = await withHttpbin('lazy-modules');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-lazy-'));
    fs.mkdirSync(path.join(dir, 'config'));
    fs.writeFileSync(path.join(dir, 'config', 'c.yaml'), singleRouteYaml({ upstreamPort: upstream.port }));
    fs.writeFileSync(path.join(dir, 'preload.js'),
      "process.on('exit', () => require('fs').writeFileSync(process.env.MODULES_OUT, JSON.stringify(Object.keys(require.cache))));\n");
    fs.writeFileSync(path.join(dir, 'upload.bin'), Buffer.alloc(256 * 1024, 'x'));
  });
  after(async () => {
    await upstream?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Run the gateway, send `requests` through it, stop it with SIGTERM: the modules it had loaded. */
  async function modulesAfter(requests: (port: number) => Promise<void>): Promise<string[]> {
    const port = await freePort();
    const admin = await freePort();
    const out = path.join(dir, `modules-${port}.json`);
    const child = spawnMeshgate(path.join(dir, 'config'), port, ['--admin-port', String(admin)], 'ignore',
      ['env', `NODE_OPTIONS=--require ${path.join(dir, 'preload.js')}`, `MODULES_OUT=${out}`]);
    try {
      await waitFor(async () => (await httpGet(admin, '/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });
      await requests(port);
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    }
    return JSON.parse(fs.readFileSync(out, 'utf8')) as string[];
  }
  const loads = (modules: string[], pkg: string) => modules.some((m) => m.includes(`${path.sep}node_modules${path.sep}${pkg}${path.sep}`));

  it('plain HTTP/1.1 requests load neither undici nor @peculiar/x509', async () => {
    const modules = await modulesAfter(async (port) => {
      for (let i = 0; i < 3; i++) {
        const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'host: upstream.internal', `http://127.0.0.1:${port}/get`]);
        assert.equal(r.stdout, '200');
      }
    });
    assert.ok(loads(modules, 'yaml'), 'the preload saw the gateway\'s modules');
    assert.ok(!loads(modules, 'undici'), 'undici was loaded');
    assert.ok(!loads(modules, path.join('@peculiar', 'x509')), '@peculiar/x509 was loaded');
  });

  it('a streamed upload loads undici, for its pool', async () => {
    const modules = await modulesAfter(async (port) => {
      const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'host: upstream.internal', '-H', 'expect:',
        '--data-binary', `@${path.join(dir, 'upload.bin')}`, `http://127.0.0.1:${port}/post`]);
      assert.equal(r.stdout, '200');
    });
    assert.ok(loads(modules, 'undici'), 'undici was not loaded');
  });
});
