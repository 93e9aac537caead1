// Child processes for the bench: started in their own process group, pinned to a core when taskset
// exists, measured from /proc (CPU time, peak RSS), and stopped by PID only.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import type { LoadResult } from './loadgen';

const TICKS = 100; // USER_HZ on Linux


export const hasTaskset = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' }).status === 0;
export const cores = (() => {
  try {
    return fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter((l) => l.startsWith('processor')).length;
  } catch {
    return 1;
  }
})();

export function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

const started = new Set<ChildProcess>();

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  output(): string;
  stop(): Promise<void>;
}

/** Start a command pinned to `core` (when possible) in its own process group. */
export function start(cmd: string, args: string[], opts: { core?: number; env?: NodeJS.ProcessEnv } = {}): Proc {
  const argv = hasTaskset && opts.core !== undefined && opts.core < cores ? ['taskset', '-c', String(opts.core), cmd, ...args] : [cmd, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  started.add(child);
  let out = '';
  const keep = (c: Buffer) => { out = (out + c.toString()).slice(-20_000); };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.on('exit', () => started.delete(child));
  return {
    child,
    pid: child.pid!,
    output: () => out,
    stop: () => stopProc(child),
  };
}

function stopProc(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
      resolve();
    }, 3000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    try { process.kill(-child.pid!, 'SIGTERM'); } catch { resolve(); }
  });
}

/** Stop everything this bench started (on exit or error). */
export async function stopAll(): Promise<void> {
  await Promise.all([...started].map(stopProc));
}

/** The processes of a process group (the proxy and its workers, e.g. nginx's). */
function groupPids(pgid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** CPU seconds (user + system) of every process in the group of `pid`. */
export function cpuSeconds(pid: number): number {
  let total = 0;
  for (const p of groupPids(pid)) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / TICKS;
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

/** Reset the peak RSS mark (VmHWM) so the next reading covers only what follows. */
export function resetPeak(pid: number): void {
  for (const p of groupPids(pid)) {
    try {
      fs.writeFileSync(`/proc/${p}/clear_refs`, '5');
    } catch {
      // not permitted here: the peak then covers the process lifetime
    }
  }
}

/** Sum of the peak RSS of the group's processes. */
export function peakRssMiB(pid: number): number {
  let total = 0;
  for (const p of groupPids(pid)) {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) total += Number(m[1]) / 1024;
    } catch {
      // exited meanwhile
    }
  }
  return total;
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

/** Wait until `http://127.0.0.1:port/` (`https://` when `secure`, any certificate) answers 200 (the proxy is routing), bounded. */
export async function waitHttp(port: number, { secure = false, timeoutMs = 15_000 }: { readonly secure?: boolean; readonly timeoutMs?: number } = {}): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = secure ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect(port, '127.0.0.1');
      s.setTimeout(1000, () => { s.destroy(); resolve(false); });
      s.on('error', () => resolve(false));
      s.on(secure ? 'secureConnect' : 'connect', () => s.write('GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n'));
      let data = '';
      s.on('data', (c) => { data += c.toString(); });
      s.on('close', () => resolve(/^HTTP\/1\.1 200/.test(data)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answered 200 on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/**
 * Compile bench/rategen.c (the constant-rate HTTP generator) into `dir`; undefined without gcc or
 * when it does not compile (the bench then falls back to the Node generator and says so).
 */
export function buildRategen(root: string, dir: string): string | undefined {
  if (!which('gcc')) return undefined;
  const out = path.join(dir, 'rategen');
  const r = spawnSync('gcc', ['-O2', '-o', out, path.join(root, 'bench/rategen.c')], { encoding: 'utf8' });
  return r.status === 0 ? out : undefined;
}

/** Run a load generator (argv, already pinned and placed) that prints one LoadResult JSON line. */
export function runLoad(argv: string[], seconds: number, env: NodeJS.ProcessEnv = process.env): LoadResult {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: (seconds + 30) * 1000, env });
  try {
    return JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as LoadResult;
  } catch {
    throw new Error(`load generator failed (${argv.join(' ')}): ${r.stderr}`);
  }
}

/** The median run by `key` (the middle one of an odd count, the upper middle of an even one). */
/** Every target once per round, the order rotated each round (no target always first); each target's runs. */
export function rotatedRounds<T extends { readonly name: string }, R>(targets: readonly T[], rounds: number, one: (t: T, round: number) => R): Map<string, R[]> {
  const byTarget = new Map<string, R[]>(targets.map((t) => [t.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(i + round) % targets.length]!;
      byTarget.get(t.name)!.push(one(t, round));
    }
  }
  return byTarget;
}

export function medianBy<T>(runs: readonly T[], key: (run: T) => number): T {
  return [...runs].sort((a, b) => key(a) - key(b))[Math.floor(runs.length / 2)]!;
}
