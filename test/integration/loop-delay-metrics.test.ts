// An idle gateway sleeps: by default no timer wakes it, neither prom-client's event-loop delay
// histogram (it samples the loop every 10 ms) nor the access log's flush (armed only when a line
// waits); --loop-delay-metrics exports that histogram, and its wake-ups with it.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnMeshgate } from '../helpers/gateway';
import { freePort, httpGet, waitFor } from '../helpers/upstream';
import { singleRouteYaml } from '../../src/sample/configs';

/** The main thread's voluntary context switches: each is the event loop going to sleep once. */
function sleeps(pid: number): number {
  return Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

describe('Event-loop delay metrics (--loop-delay-metrics)', function () {
  this.timeout(60_000);
  let dir: string;
  const children: ChildProcess[] = [];

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-loopdelay-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: 9, protocol: 'TCP', accessLogFile: path.join(dir, 'access.log') }));
  });
  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** An idle gateway's metrics page, and how often its event loop slept over 2 s. */
  async function idleGateway(extra: string[]): Promise<{ body: string; sleepsPerSecond: number }> {
    const metrics = await freePort();
    const status = await freePort();
    const child = spawnMeshgate(dir, await freePort(), ['--metrics-port', String(metrics), '--status-port', String(status), ...extra], 'ignore');
    children.push(child);
    await waitFor(async () => (await httpGet(status, '/healthz/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });
    const body = (await httpGet(metrics, '/stats/prometheus')).body;
    await new Promise((r) => setTimeout(r, 500)); // past the scrape
    const before = sleeps(child.pid!);
    await new Promise((r) => setTimeout(r, 2000));
    const sleepsPerSecond = (sleeps(child.pid!) - before) / 2;
    child.kill('SIGKILL');
    return { body, sleepsPerSecond };
  }

  it('by default exports the lag measured at the scrape, no histogram, and the idle loop wakes rarely', async () => {
    const { body, sleepsPerSecond } = await idleGateway([]);
    assert.match(body, /^nodejs_eventloop_lag_seconds \d/m);
    assert.doesNotMatch(body, /^# TYPE nodejs_eventloop_lag_p99_seconds /m);
    // None seen here; the histogram would be 100 a second, a flush every 250 ms 4.
    assert.ok(sleepsPerSecond <= 2, `${sleepsPerSecond} wake-ups a second`);
  });

  it('with --loop-delay-metrics exports the histogram, sampled every 10 ms', async () => {
    const { body, sleepsPerSecond } = await idleGateway(['--loop-delay-metrics']);
    for (const g of ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99']) assert.match(body, new RegExp(`^# TYPE nodejs_eventloop_lag_${g}_seconds gauge$`, 'm'));
    assert.match(body, /^nodejs_eventloop_lag_seconds \d/m);
    assert.ok(sleepsPerSecond > 60, `${sleepsPerSecond} wake-ups a second`);
  });
});
