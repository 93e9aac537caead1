// `meshgate run --workers 2`: the primary's metrics port adds up the workers' counters. When a worker
// is killed (kill -9) and replaced, what it had counted stays in the sums: no counter goes back
// (Prometheus would take that for a reset), and after the replacement the totals are the requests
// sent. The dead worker's counts are whole here because a scrape came after its last request: in
// general what it counted after the primary's last snapshot (every 2 s) is lost.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawnMeshgate } from '../helpers/gateway';
import { freePort, httpGet, listenLoopback, portOf, waitFor } from '../helpers/upstream';
import { singleRouteYaml } from '../../src/sample/configs';

function children(pid: number): number[] {
  try {
    return execFileSync('ps', ['--ppid', String(pid), '-o', 'pid='], { encoding: 'utf8' }).split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return [];
  }
}

/** The worker index a child of the primary was forked with (its MESHGATE_WORKER_INDEX). */
function workerIndexOf(pid: number): number | undefined {
  try {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const entry = env.find((e) => e.startsWith('MESHGATE_WORKER_INDEX='));
    return entry === undefined ? undefined : Number(entry.split('=')[1]);
  } catch {
    return undefined;
  }
}

/**
 * Whether a process handles SIGHUP yet (Linux: bit 0 of SigCgt). A worker still starting does not,
 * and a SIGHUP passed on by the primary would end it.
 */
function catchesSighup(pid: number): boolean {
  try {
    const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('SigCgt:'));
    return line !== undefined && (BigInt(`0x${line.split(/\s+/)[1]}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** One request on a connection of its own, so the kernel may hand each to either worker. */
function request(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function send(port: number, n: number): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    const statuses = await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => request(port)));
    assert.deepEqual(new Set(statuses), new Set([200]));
  }
}

/** The sum of a metric's samples, over all its label sets (`name{` ... ` value` lines). */
function total(text: string, name: string, labelFilter = ''): number {
  return text.split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(labelFilter))
    .reduce((s, l) => s + Number(l.split(' ').at(-1)), 0);
}

describe('meshgate run --workers: metrics when a worker dies', function () {
  this.timeout(60_000);
  let upstream: http.Server | undefined;
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  const started = new Set<number>();

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      for (const pid of children(child.pid!)) started.add(pid);
      child.kill('SIGKILL');
    }
    for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('kill -9 of a worker: counters and histograms keep what it counted; the totals are the requests sent', async () => {
    upstream = http.createServer((_req, res) => res.end('ok'));
    await listenLoopback(upstream);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-workers-metrics-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: portOf(upstream) }));
    const port = await freePort();
    const [admin, status, metrics] = [await freePort(), await freePort(), await freePort()];
    child = spawnMeshgate(dir, port, ['--workers', '2', '--admin-port', String(admin), '--status-port', String(status), '--metrics-port', String(metrics), '--agent-port', '0'], 'ignore');
    const primary = child.pid!;
    const ready = () => waitFor(async () => (await httpGet(status, '/healthz/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });
    /** Worker index -> pid, once the primary has two workers (and none is `without`). */
    const workers = async (without?: number) => {
      await waitFor(() => {
        const now = children(primary);
        return now.length === 2 && !now.includes(without ?? -1) && now.every((p) => workerIndexOf(p) !== undefined);
      }, { timeoutMs: 10_000 });
      const byIndex = new Map(children(primary).map((p) => [workerIndexOf(p)!, p]));
      for (const pid of byIndex.values()) started.add(pid);
      assert.deepEqual([...byIndex.keys()].sort(), [0, 1]);
      await ready();
      return byIndex;
    };
    const kill = async (pid: number) => {
      process.kill(pid, 'SIGKILL');
      await waitFor(() => !alive(pid), { timeoutMs: 5000 }); // reaped by the primary
    };

    const scrape = async () => (await httpGet(metrics, '/stats/prometheus')).body;
    // Worker 0 serves admin: its /stats/prometheus has its own share of the traffic only.
    const ownOf0 = async () => total((await httpGet(admin, '/stats/prometheus')).body, 'istio_requests_total');
    const seen: number[] = []; // istio_requests_total at every scrape: never lower than before
    const requests = async () => {
      const n = total(await scrape(), 'istio_requests_total');
      seen.push(n);
      return n;
    };
    // Config reloads: every worker counts the same ones, the metric is reported once.
    let hups = 0;
    const reloads = async () => total(await scrape(), 'meshgate_config_reloads_total', 'result="unchanged"');
    const hup = async () => {
      // The primary passes SIGHUP to a worker still starting too, which would end it.
      await waitFor(() => children(primary).every(catchesSighup), { timeoutMs: 10_000 });
      process.kill(primary, 'SIGHUP'); // passed on to every worker
      hups += 1;
      let last = -1;
      await waitFor(async () => (last = await reloads()) === hups, { timeoutMs: 5000 }).catch(() => assert.fail(`config reloads: ${last} after ${hups} SIGHUPs`));
      await new Promise((r) => setTimeout(r, 200)); // every worker done, none coalesces two
    };

    let pids = await workers();
    await hup();
    const N = 40;
    const own0Before = await ownOf0();
    await send(port, N);
    await waitFor(async () => (await requests()) === N, { timeoutMs: 5000 });
    const own0 = (await ownOf0()) - own0Before;
    // Kill a worker that counted some of them.
    const victim = own0 > 0 ? 0 : 1;
    const victimCount = victim === 0 ? own0 : N - own0;
    assert.ok(victimCount > 0, 'the killed worker had counted requests');
    await kill(pids.get(victim)!);
    assert.equal(await requests(), N, `right after the kill: worker ${victim}'s ${victimCount} requests still count`);

    // The replacement starts (1 s later) and serves; the sums stay.
    pids = await workers(pids.get(victim));
    assert.equal(await requests(), N, 'after the replacement');
    await hup();
    const M = 20;
    await send(port, M);
    await waitFor(async () => (await requests()) >= N + M, { timeoutMs: 5000 });
    let text = await scrape();
    assert.equal(total(text, 'istio_requests_total'), N + M);
    assert.equal(total(text, 'istio_request_duration_milliseconds_count'), N + M, 'histogram _count');
    assert.equal(total(text, 'istio_request_duration_milliseconds_bucket', 'le="+Inf"'), N + M, 'histogram +Inf bucket');

    // No scrape between the last requests and the death: the primary's own snapshots (every 2 s) keep
    // the counts. Kill the other index this time if it counted some, so no worker of the start is left.
    const K = 20;
    const own0Mid = await ownOf0();
    await send(port, K);
    await new Promise((r) => setTimeout(r, 5000)); // a snapshot (every 2 s) after the last request
    const k0 = (await ownOf0()) - own0Mid;
    const counted = (i: number) => (i === 0 ? k0 : K - k0) > 0;
    const victim2 = counted(1 - victim) ? 1 - victim : victim;
    await kill(pids.get(victim2)!);
    assert.equal(await requests(), N + M + K, `after the second kill, without a scrape in between (worker ${victim2}, ${victim2 === 0 ? k0 : K - k0} of the last ${K})`);
    assert.equal(await reloads(), hups, 'config reloads never go back either');
    await workers(pids.get(victim2));
    await hup();

    text = await scrape();
    assert.equal(total(text, 'istio_requests_total'), N + M + K);
    assert.equal(total(text, 'istio_request_duration_milliseconds_count'), N + M + K, 'histogram _count');
    assert.equal(total(text, 'istio_request_duration_milliseconds_bucket', 'le="+Inf"'), N + M + K, 'histogram +Inf bucket');
    assert.ok(total(text, 'istio_request_duration_milliseconds_sum') > 0, 'histogram _sum');
    assert.equal(total(text, 'meshgate_config_reloads_total', 'result="unchanged"'), 3);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! >= seen[i - 1]!, `istio_requests_total never goes back: ${seen.join(', ')}`);

    // Stop: SIGTERM to the primary ends every process.
    const all = [primary, ...children(primary)];
    child.kill('SIGTERM');
    const code = await new Promise<number | null | 'late'>((resolve) => {
      if (child!.exitCode !== null) resolve(child!.exitCode);
      child!.once('exit', (c) => resolve(c));
      setTimeout(() => resolve('late'), 15_000).unref();
    });
    assert.equal(code, 0);
    await waitFor(() => all.every((pid) => !alive(pid)), { timeoutMs: 5000 });
  });
});

describe('meshgate run --workers: SIGHUP while workers start', function () {
  this.timeout(60_000);
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  const started = new Set<number>();

  after(() => {
    if (child && child.exitCode === null && child.signalCode === null) {
      for (const pid of children(child.pid!)) started.add(pid);
      child.kill('SIGKILL');
    }
    for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a SIGHUP before a worker handles it does not end the worker (it reads the config anyway)', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-workers-hup-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: 9 }));
    const port = await freePort();
    child = spawnMeshgate(dir, port, ['--workers', '2', '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0'], 'ignore');
    const primary = child.pid!;
    // As soon as both workers exist, and while at least one does not catch SIGHUP yet.
    let pids: number[] = [];
    await waitFor(() => (pids = children(primary)).length === 2, { timeoutMs: 10_000, intervalMs: 5 });
    for (const pid of pids) started.add(pid);
    assert.ok(!pids.every(catchesSighup), 'a worker was still starting (the case under test)');
    process.kill(primary, 'SIGHUP');
    await waitFor(() => pids.every(catchesSighup), { timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(pids.map(alive), [true, true], 'both first workers still run');
    assert.deepEqual(children(primary).sort(), [...pids].sort(), 'no worker was replaced');
  });
});

describe('meshgate run --workers: the agent port, admin /logging and /quitquitquit', function () {
  this.timeout(60_000);
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  let upstream: http.Server | undefined;

  after(() => {
    if (child && child.exitCode === null && child.signalCode === null) {
      for (const pid of children(child.pid!)) if (alive(pid)) process.kill(pid, 'SIGKILL');
      child.kill('SIGKILL');
    }
    upstream?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the primary merges every worker\'s metrics on the agent port; a level set on worker 0 reaches worker 1; /quitquitquit ends them all', async () => {
    upstream = http.createServer((_req, res) => res.end('ok'));
    await listenLoopback(upstream);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-workers-agent-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: portOf(upstream) }));
    const port = await freePort();
    const [admin, status, agent] = [await freePort(), await freePort(), await freePort()];
    child = spawnMeshgate(dir, port, ['--workers', '2', '--admin-port', String(admin), '--status-port', String(status), '--agent-port', String(agent), '--log-level', 'info'], 'pipe');
    const primary = child.pid!;
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.stdout!.resume();
    await waitFor(async () => (await httpGet(status, '/healthz/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });
    await waitFor(async () => (await httpGet(agent, '/healthz/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });

    const N = 30;
    await send(port, N);
    await waitFor(async () => total((await httpGet(agent, '/stats/prometheus')).body, 'istio_requests_total') === N, { timeoutMs: 5000 });
    assert.match((await httpGet(agent, '/stats/prometheus')).body, /^istio_agent_scrapes_total \d+$/m);

    // A reload that changes nothing is logged at debug level only: not seen at info.
    const unchanged = (worker: number) => stderr.split('\n').filter((l) => l.includes('"msg":"config unchanged') && l.includes(`"worker":${worker}`)).length;
    const hup = async () => {
      await waitFor(() => children(primary).every(catchesSighup), { timeoutMs: 10_000 });
      process.kill(primary, 'SIGHUP');
    };
    await hup();
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual([unchanged(0), unchanged(1)], [0, 0]);

    const set = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: admin, method: 'POST', path: '/logging?level=debug' }, (res) => {
        let b = '';
        res.on('data', (c: Buffer) => { b += c.toString(); });
        res.on('end', () => resolve(b));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(set, 'active loggers:\n  meshgate: debug\n');
    await new Promise((r) => setTimeout(r, 300)); // passed on by the primary
    await hup();
    await waitFor(() => unchanged(0) === 1 && unchanged(1) === 1, { timeoutMs: 5000 }).catch(() => assert.fail(`debug lines per worker: ${unchanged(0)}, ${unchanged(1)}`));

    // A worker started after the change (a replacement) takes the level too.
    const old1 = children(primary).find((p) => workerIndexOf(p) === 1)!;
    process.kill(old1, 'SIGKILL');
    await waitFor(() => { const now = children(primary); return now.length === 2 && !now.includes(old1) && now.every((p) => workerIndexOf(p) !== undefined); }, { timeoutMs: 10_000 });
    await waitFor(async () => (await httpGet(agent, '/healthz/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });
    await hup();
    await waitFor(() => unchanged(1) === 2, { timeoutMs: 5000 }).catch(() => assert.fail(`the replacement worker logged no debug line: ${unchanged(1)}`));

    // The agent port is ready only while every worker is: worker 0's /healthcheck/fail takes it out.
    const post = (port: number, p: string) => new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: p }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
      req.on('error', reject);
      req.end();
    });
    const agentReady = async () => (await httpGet(agent, '/healthz/ready')).status;
    assert.equal(await post(admin, '/healthcheck/fail'), 200);
    await waitFor(async () => (await agentReady()) === 503, { timeoutMs: 3000 }).catch(() => assert.fail('the agent port stayed ready'));
    assert.equal(await post(admin, '/healthcheck/ok'), 200);
    await waitFor(async () => (await agentReady()) === 200, { timeoutMs: 3000 }).catch(() => assert.fail('the agent port did not come back'));

    const all = [primary, ...children(primary)];
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    const quit = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: agent, method: 'POST', path: '/quitquitquit' }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
      req.on('error', reject);
      req.end();
    });
    assert.equal(quit, 200);
    assert.equal(await exited, 0);
    await waitFor(() => all.every((pid) => !alive(pid)), { timeoutMs: 5000 });
  });
});
