// Watches the config files and directories. A cheap signature (path, size, mtime, inode of every
// YAML file under the configured paths) is taken every `intervalMs`; fs.watch events only make the
// next look come sooner. Polling keeps working through editors' atomic renames and Kubernetes
// ConfigMap symlink swaps, where plain fs.watch loses track.

import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { asError } from '../errors';

const CONFIG_FILE = /\.(ya?ml|json)$/i;

/** A config file found, and what stat said of it (following links). */
interface Found {
  readonly file: string;
  readonly stat: fs.Stats;
}

/**
 * Collect the config files under `p`, one stat per entry: `p` itself whatever its name, and below it
 * the YAML and JSON files. Names starting with `.` are skipped, which covers a ConfigMap mounted as a
 * directory: kubelet writes `..<timestamp>/gw.yaml`, points `..data` at it and links
 * `gw.yaml -> ..data/gw.yaml`, so only the top-level links are read. A file met twice (through
 * symbolic or hard links, or named by two of the given paths) is read once: `seen` holds device and
 * inode.
 */
function walk(p: string, out: Found[], seen: Set<string>, depth = 0): void {
  const stat = statOf(p);
  if (!stat) return;
  if (stat.isFile()) {
    if (depth > 0 && !CONFIG_FILE.test(p)) return;
    const id = `${stat.dev}:${stat.ino}`;
    if (seen.has(id)) return;
    seen.add(id);
    out.push({ file: p, stat });
    return;
  }
  if (!stat.isDirectory() || depth > 32) return;
  let names: string[];
  try {
    names = fs.readdirSync(p);
  } catch {
    return;
  }
  for (const n of names.sort()) {
    if (!n.startsWith('.')) walk(path.join(p, n), out, seen, depth + 1);
  }
}

/** stat, following links; undefined when it fails (gone, a dangling or looping link, no permission). */
function statOf(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

function isDir(p: string): boolean {
  return statOf(p)?.isDirectory() === true;
}

function findConfigFiles(paths: readonly string[]): Found[] {
  const found: Found[] = [];
  const seen = new Set<string>();
  for (const p of paths) walk(p, found, seen);
  return found;
}

/** Every config file under the given files and directories, in a stable order. */
export function listConfigFiles(paths: readonly string[]): string[] {
  return findConfigFiles(paths).map((f) => f.file);
}

/** What changes when any config file does: each one's path, size, mtime and inode (from the walk's own stat). */
export function signatureOf(paths: readonly string[]): string {
  return findConfigFiles(paths).map(({ file, stat }) => `${file}:${stat.size}:${stat.mtimeMs}:${stat.ino}`).join('\n');
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
        this.log.debug({ path: p, err: asError(err).message }, 'fs.watch unavailable; polling only');
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
