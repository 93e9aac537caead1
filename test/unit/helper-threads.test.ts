// Helper threads yield the core to the event loop: every thread but the main one gets the nice value,
// in a child process of its own (so this test runner's threads are left alone) and in a running
// meshgate (default 10; --helper-nice 0 leaves them).

import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseHelperNice } from '../../src/helper-threads';
import { spawnMeshgate } from '../helpers/gateway';
import { freePort, waitFor } from '../helpers/upstream';
import { singleRouteYaml } from '../../src/sample/configs';

const MODULE = path.resolve(__dirname, '../../src/helper-threads.js');
const linux = process.platform === 'linux';

/** The nice value of each thread of `pid`: [tid, nice][]. */
function threadNice(pid: number | 'self'): [number, number][] {
  const dir = `/proc/${pid}/task`;
  return fs.readdirSync(dir).map((t) => {
    const stat = fs.readFileSync(path.join(dir, t, 'stat'), 'utf8');
    return [Number(t), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])] as [number, number];
  });
}

/** Run niceHelperThreads(nice) in a fresh node process; its outcome and its threads' nice values after. */
function inChild(nice: number): Promise<{ outcome: { lowered: number; failed: number }; pid: number; threads: [number, number][] }> {
  const script = `
    const fs = require('fs');
    const outcome = require(${JSON.stringify(MODULE)}).niceHelperThreads(${nice});
    const threads = fs.readdirSync('/proc/self/task').map((t) => {
      const s = fs.readFileSync('/proc/self/task/' + t + '/stat', 'utf8');
      return [Number(t), Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[16])];
    });
    process.stdout.write(JSON.stringify({ outcome, pid: process.pid, threads }));`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout))));
  });
}

describe('helper threads', () => {
  it('parses --helper-nice: 0-19 only', () => {
    assert.equal(parseHelperNice('10'), 10);
    assert.equal(parseHelperNice('0'), 0);
    assert.equal(parseHelperNice('19'), 19);
    for (const bad of ['20', '-1', '2.5', 'low', '']) assert.throws(() => parseHelperNice(bad), /--helper-nice/, bad);
  });

  (linux ? it : it.skip)('raises every thread but the main one to the nice value', async () => {
    const r = await inChild(7);
    const main = r.threads.find(([tid]) => tid === r.pid);
    const helpers = r.threads.filter(([tid]) => tid !== r.pid);
    assert.ok(main, 'the main thread is listed');
    assert.equal(main[1], 0, 'the main thread keeps its priority');
    assert.ok(helpers.length >= 1, 'node has helper threads');
    assert.deepEqual(helpers.map(([, n]) => n), helpers.map(() => 7));
    assert.equal(r.outcome.lowered, helpers.length);
    assert.equal(r.outcome.failed, 0);
  });

  (linux ? it : it.skip)('with nice 0 changes nothing', async () => {
    const r = await inChild(0);
    assert.deepEqual(r.outcome, { lowered: 0, failed: 0 });
    assert.ok(r.threads.every(([, n]) => n === 0), JSON.stringify(r.threads));
  });

  describe('in a running gateway', function () {
    this.timeout(30_000);
    const children: ChildProcess[] = [];
    let dir: string;
    before(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-nice-'));
      fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: 9 }));
    });
    after(() => {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    });

    (linux ? it : it.skip)('lowers its helpers to 10 by default, and leaves them with --helper-nice 0', async () => {
      const portB = await freePort();
      const a = spawnMeshgate(dir, await freePort(), [], 'ignore');
      const b = spawnMeshgate(dir, portB, ['--helper-nice', '0'], 'ignore');
      children.push(a, b);
      const helpersOf = (pid: number) => threadNice(pid).filter(([tid]) => tid !== pid);
      await waitFor(() => { const h = helpersOf(a.pid!); return h.length > 0 && h.every(([, n]) => n === 10); }, { timeoutMs: 15_000 });
      assert.ok(threadNice(a.pid!).some(([tid, n]) => tid === a.pid && n === 0), 'the event loop keeps nice 0');
      // b listens (it is past the point where a lowered its helpers), and a second later they are still 0.
      await waitFor(() => new Promise<boolean>((resolve) => {
        const s = net.connect(portB, '127.0.0.1', () => { s.destroy(); resolve(true); });
        s.on('error', () => resolve(false));
      }), { timeoutMs: 15_000 });
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(helpersOf(b.pid!).every(([, n]) => n === 0), JSON.stringify(threadNice(b.pid!)));
    });
  });
});
