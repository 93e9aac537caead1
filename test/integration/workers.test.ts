// `meshgate run --workers 2`: two gateway processes share the listen port; the primary adds up their
// metrics, replaces a worker that dies, and on SIGTERM stops them all and exits 0.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawnMeshgate } from '../helpers/gateway';
import { freePort, httpGet, waitFor } from '../helpers/upstream';
import { singleRouteYaml } from '../../src/sample/configs';
import { startTcpEcho, type TcpEchoServer } from '../../src/sample/tcp-echo';

function children(pid: number): number[] {
  try {
    return execFileSync('ps', ['--ppid', String(pid), '-o', 'pid='], { encoding: 'utf8' }).split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return [];
  }
}

function echoOnce(port: number): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => c.end('x\n'));
    c.setEncoding('utf8');
    c.on('data', (d: string) => { out += d; });
    c.on('error', () => {});
    c.on('close', () => resolve(out));
    setTimeout(() => c.destroy(), 5000);
  });
}

describe('meshgate run --workers', function () {
  this.timeout(60_000);
  let echo: TcpEchoServer;
  let child: ChildProcess | undefined;
  let dir: string;

  after(async () => {
    if (child && child.exitCode === null) {
      for (const pid of children(child.pid!)) process.kill(pid, 'SIGKILL');
      child.kill('SIGKILL');
    }
    await echo?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('two workers serve one port; metrics add up; a dead worker is replaced; SIGTERM stops all', async () => {
    echo = await startTcpEcho({ prefix: 'one' });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-workers-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: echo.port, protocol: 'TCP' }));
    const port = await freePort();
    const [admin, status, metrics] = [await freePort(), await freePort(), await freePort()];
    child = spawnMeshgate(dir, port, ['--workers', '2', '--admin-port', String(admin), '--status-port', String(status), '--metrics-port', String(metrics), '--agent-port', '0'], 'ignore');
    await waitFor(async () => (await httpGet(status, '/healthz/ready').catch(() => ({ status: 0 }))).status === 200, { timeoutMs: 15_000 });
    await waitFor(() => children(child!.pid!).length === 2, { timeoutMs: 10_000 });

    const outs = await Promise.all(Array.from({ length: 60 }, () => echoOnce(port)));
    assert.deepEqual(new Set(outs), new Set(['one x\n']));
    // The primary's endpoint adds up every worker's counters.
    const opened = async () => {
      const text = (await httpGet(metrics, '/stats/prometheus')).body;
      return text.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total{')).reduce((s, l) => s + Number(l.split(' ').at(-1)), 0);
    };
    await waitFor(async () => (await opened()) >= 60, { timeoutMs: 5000 });
    assert.equal(await opened(), 60);
    const version = (await httpGet(metrics, '/stats/prometheus')).body.split('\n').find((l) => l.startsWith('meshgate_config_version'));
    assert.equal(version, 'meshgate_config_version 1', 'what every worker has alike is reported once');

    // Kill a worker: the primary starts another, and the port keeps answering meanwhile.
    const [first] = children(child.pid!);
    process.kill(first!, 'SIGKILL');
    assert.equal(await echoOnce(port), 'one x\n');
    await waitFor(() => { const now = children(child!.pid!); return now.length === 2 && !now.includes(first!); }, { timeoutMs: 10_000 });

    const all = [child.pid!, ...children(child.pid!)];
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    assert.equal(code, 0);
    for (const pid of all) assert.throws(() => process.kill(pid, 0), `process ${pid} is gone`);
  });
});
