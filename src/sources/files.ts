// Watches the config files and directories. A cheap signature (path, size, mtime, inode of every
// YAML file under the configured paths) is taken every `intervalMs`; fs.watch events only make the
// next look come sooner. Polling keeps working through editors' atomic renames and Kubernetes
// ConfigMap symlink swaps, where plain fs.watch loses track.

import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';

const CONFIG_FILE = /\.(ya?ml|json)$/i;

/**
 * Collect the config files under `p`. Names starting with `.` are skipped, which covers a ConfigMap
 * mounted as a directory: kubelet writes `..<timestamp>/gw.yaml`, points `..data` at it and links
 * `gw.yaml -> ..data/gw.yaml`, so only the top-level links are read. A file met twice (through
 * symbolic links, or named by two of the given paths) is read once: `seen` holds real paths.
 */
function walk(p: string, out: string[], seen: Set<string>, depth = 0): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return;
  }
  if (st.isFile()) {
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch {
      real = p;
    }
    if (seen.has(real)) return;
    seen.add(real);
    out.push(p);
    return;
  }
  if (!st.isDirectory() || depth > 32) return;
  let names: string[];
  try {
    names = fs.readdirSync(p);
  } catch {
    return;
  }
  for (const n of names.sort()) {
    if (n.startsWith('.')) continue;
    const child = path.join(p, n);
    if (CONFIG_FILE.test(n) || isDir(child)) walk(child, out, seen, depth + 1);
  }
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Every config file under the given files and directories, in a stable order. */
export function listConfigFiles(paths: readonly string[]): string[] {
  const files: string[] = [];
  const seen = new Set<string>();
  for (const p of paths) walk(p, files, seen);
  return files;
}

export function signatureOf(paths: readonly string[]): string {
  return listConfigFiles(paths).map((f) => {
    try {
      const st = fs.statSync(f);
      return `${f}:${st.size}:${st.mtimeMs}:${st.ino}`;
    } catch {
      return `${f}:gone`;
    }
  }).join('\n');
}

export class FileWatcher {
  private timer: NodeJS.Timeout | undefined;
  private signature = '';
  private watchers: fs.FSWatcher[] = [];
  private soon: NodeJS.Timeout | undefined;

  constructor(
    private readonly paths: readonly string[],
    private readonly onChange: () => void,
    private readonly log: Logger,
    private readonly intervalMs = 500,
  ) {}

  start(): void {
    this.signature = signatureOf(this.paths);
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
    for (const p of this.paths) {
      try {
        const w = fs.watch(p, { persistent: false, recursive: isDir(p) }, () => this.checkSoon());
        w.on('error', () => {});
        this.watchers.push(w);
      } catch (err) {
        this.log.debug({ path: p, err: (err as Error).message }, 'fs.watch unavailable; polling only');
      }
    }
  }

  private checkSoon(): void {
    if (this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      this.check();
    }, 100);
    this.soon.unref();
  }

  private check(): void {
    const next = signatureOf(this.paths);
    if (next === this.signature) return;
    this.signature = next;
    this.onChange();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}
