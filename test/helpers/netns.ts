// What the network-namespace tests need of the machine: root, ip, iptables, setpriv, nc, curl and the
// SO_ORIGINAL_DST addon. They are skipped with a message naming what is missing, never silently.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { captureAvailable } from '../../src/sidecar/original-dst';

export function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Everything a capture test needs that this machine lacks (empty when it can run). */
export function missingForCapture(): string[] {
  return [
    process.getuid?.() === 0 ? '' : 'root',
    ...['ip', 'iptables-restore', 'ip6tables-restore', 'setpriv', 'nc', 'curl'].filter((c) => !have(c)),
    captureAvailable() ? '' : 'the SO_ORIGINAL_DST addon (npm install)',
  ].filter(Boolean);
}

/** A command's outcome inside a namespace. */
export interface NsResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/**
 * Network namespaces a test makes, the veth links between them and the processes it starts there;
 * `destroy()` removes all of it (call it from `after`, it never throws).
 */
export class NetnsWorld {
  private readonly namespaces: string[] = [];
  private readonly procs: ChildProcess[] = [];

  /** A new namespace named `${prefix}${pid}` with loopback up. */
  add(prefix: string): string {
    const ns = `${prefix}${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair between two namespaces, each end with its addresses (CIDR notation), up. */
  link(a: { ns: string; dev: string; addrs: readonly string[] }, b: { ns: string; dev: string; addrs: readonly string[] }): void {
    execFileSync('ip', ['link', 'add', a.dev, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns]);
    for (const end of [a, b]) {
      for (const addr of end.addrs) execFileSync('ip', ['-n', end.ns, 'addr', 'add', addr, 'dev', end.dev]);
      execFileSync('ip', ['-n', end.ns, 'link', 'set', end.dev, 'up']);
    }
  }

  /** Run a command to completion in a namespace (latin1 output, so binary bodies survive). */
  exec(ns: string, args: readonly string[], timeoutMs = 8000): Promise<NsResult> {
    return new Promise((resolve) => {
      const child = execFile('ip', ['netns', 'exec', ns, ...args], { timeout: timeoutMs, encoding: 'latin1' }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout, err: stderr });
      });
      child.stdin?.end();
    });
  }

  /** Start a long-running process in a namespace (stdin writable); it is killed by destroy(). */
  spawn(ns: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.procs.push(child);
    // Keep the pipes flowing so a chatty process never blocks on a full pipe (waitOutput adds its
    // own listener: call it right after spawn, in the same tick).
    child.stdout!.on('data', () => {});
    child.stderr!.resume();
    child.stdin!.on('error', () => {});
    return child;
  }

  /** Wait for a line of a child's stdout to match; the first group (or the whole match). */
  static waitOutput(child: ChildProcess, re: RegExp, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      let seen = '';
      const t = setTimeout(() => reject(new Error(`no output matching ${re} in ${timeoutMs} ms: ${seen.slice(-500)}`)), timeoutMs);
      child.stdout!.on('data', (c: Buffer) => {
        seen += c.toString();
        const m = re.exec(seen);
        if (m) {
          clearTimeout(t);
          resolve(m[1] ?? m[0]);
        }
      });
    });
  }

  destroy(): void {
    for (const p of this.procs) p.kill('SIGKILL');
    for (const ns of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
  }
}

/**
 * A work directory every uid in the namespaces can use (meshgate runs there as 1337 and other
 * users), with `config/` in it for the YAML the test writes.
 */
export function sharedWorkDir(prefix: string): { dir: string; cfg: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o777);
  const cfg = path.join(dir, 'config');
  fs.mkdirSync(cfg, { mode: 0o777 });
  return { dir, cfg };
}

/** Let every uid read what the test wrote at the top of `dir` (keys, certificates, scripts). */
export function shareFiles(dir: string): void {
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o755);
}

/** The access log meshgate writes to `dir`/access.log; '' until it exists. */
export function accessLogIn(dir: string): string {
  try {
    return fs.readFileSync(path.join(dir, 'access.log'), 'utf8');
  } catch {
    return '';
  }
}
