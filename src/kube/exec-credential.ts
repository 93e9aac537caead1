// Bearer tokens from a kubeconfig exec credential plugin, as kubectl gets them: run the command with
// KUBERNETES_EXEC_INFO in its environment, read an ExecCredential from its stdout, keep the token
// until shortly before its expirationTimestamp (or until the API server answers 401), then run the
// plugin again. Concurrent callers share one run. Bounded: a run has a time limit and its output a
// size limit; a failing plugin is an error naming the plugin, its stderr and its installHint.
//
// Only token credentials are taken. A plugin that answers with a client certificate instead would
// need the TLS connection rebuilt on each rotation; that is refused with a clear error.

import { execFile } from 'node:child_process';
import type { ExecPlugin } from './connection';

export interface ExecCredentialOptions {
  /** A run longer than this fails (kubectl has no limit; a hung plugin must not hang the watch). */
  readonly timeoutMs: number;
  /** Renew this long before the expiration the plugin gave. */
  readonly renewBeforeMs: number;
  readonly maxOutputBytes: number;
}

export const DEFAULT_EXEC_OPTIONS: ExecCredentialOptions = { timeoutMs: 30_000, renewBeforeMs: 10_000, maxOutputBytes: 1024 * 1024 };

interface Cached {
  readonly token: string;
  /** Epoch ms; undefined: valid until the API server refuses it. */
  readonly expiresAt?: number;
}

/** The token (and expiry) in a plugin's stdout, or an Error saying what is wrong with it. */
export function parseExecCredential(stdout: string, apiVersion: string): Cached | Error {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout);
  } catch {
    return new Error(`its output is not JSON: ${stdout.slice(0, 120)}`);
  }
  const d = doc as { kind?: unknown; apiVersion?: unknown; status?: { token?: unknown; expirationTimestamp?: unknown; clientCertificateData?: unknown } };
  if (d?.kind !== 'ExecCredential') return new Error(`its output is not an ExecCredential (kind ${JSON.stringify(d?.kind)})`);
  if (d.apiVersion !== apiVersion) return new Error(`it answered apiVersion ${JSON.stringify(d.apiVersion)}, the kubeconfig asked for ${apiVersion}`);
  const token = d.status?.token;
  if (typeof token !== 'string' || token === '') {
    return new Error(d.status?.clientCertificateData !== undefined
      ? 'it returned a client certificate; meshgate takes token credentials from exec plugins only'
      : 'its ExecCredential has no status.token');
  }
  const exp = d.status?.expirationTimestamp;
  if (exp === undefined) return { token };
  const at = typeof exp === 'string' ? Date.parse(exp) : NaN;
  if (!Number.isFinite(at)) return new Error(`status.expirationTimestamp ${JSON.stringify(exp)} is not a time`);
  return { token, expiresAt: at };
}

export class ExecCredentialSource {
  private cached: Cached | undefined;
  private running: Promise<string> | undefined;
  /** Runs so far (for tests and the log). */
  runs = 0;

  constructor(
    private readonly plugin: ExecPlugin,
    private readonly opts: ExecCredentialOptions = DEFAULT_EXEC_OPTIONS,
    private readonly now: () => number = Date.now,
  ) {}

  /** A token valid now, from the cache or a new run of the plugin. */
  token(): Promise<string> {
    const c = this.cached;
    if (c && (c.expiresAt === undefined || c.expiresAt - this.opts.renewBeforeMs > this.now())) return Promise.resolve(c.token);
    this.running ??= this.run().finally(() => { this.running = undefined; });
    return this.running;
  }

  /** The API server refused the token (401): the next call runs the plugin again. */
  invalidate(token: string): void {
    if (this.cached?.token === token) this.cached = undefined;
  }

  private run(): Promise<string> {
    const p = this.plugin;
    this.runs += 1;
    const info = JSON.stringify({ apiVersion: p.apiVersion, kind: 'ExecCredential', spec: { interactive: false } });
    return new Promise((resolve, reject) => {
      execFile(p.command, [...p.args], {
        env: { ...process.env, ...p.env, KUBERNETES_EXEC_INFO: info },
        timeout: this.opts.timeoutMs,
        maxBuffer: this.opts.maxOutputBytes,
        encoding: 'utf8',
        windowsHide: true,
      }, (err, stdout, stderr) => {
        const name = `exec credential plugin ${JSON.stringify([p.command, ...p.args].join(' '))}`;
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          const why = e.code === 'ENOENT' ? 'not found' : e.killed ? `no answer within ${this.opts.timeoutMs} ms` : e.message.split('\n')[0];
          const hint = p.installHint ? `; ${p.installHint.trim()}` : '';
          return reject(new Error(`${name}: ${why}${stderr ? `: ${String(stderr).trim().slice(0, 300)}` : ''}${hint}`));
        }
        const parsed = parseExecCredential(String(stdout), p.apiVersion);
        if (parsed instanceof Error) return reject(new Error(`${name}: ${parsed.message}`));
        this.cached = parsed;
        resolve(parsed.token);
      });
    });
  }
}
