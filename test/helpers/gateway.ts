// Start the real gateway in-process on a temp config directory, with free ports and the access log
// written to a file the test can read. Everything it starts is stopped by `stop()`.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { App, type AppOptions } from '../../src/app';
import { freePort, waitFor } from './upstream';
import { NODE_FLAGS } from '../../src/v8-tuning';

export interface TestGateway {
  readonly app: App;
  readonly dir: string;
  /** The listen port for a Gateway server port (from the port map). */
  port(serverPort: number): number;
  readonly accessLogPath: string;
  accessLines(): string[];
  /** Wait until the access log has at least n lines. */
  waitForLines(n: number, timeoutMs?: number): Promise<string[]>;
  /** Wait until an access-log line matches (lines are written asynchronously); returns it. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  write(name: string, text: string): void;
  stop(): Promise<void>;
}

export function meshConfigYaml(accessLogPath: string, extra = ''): string {
  return `apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: ${accessLogPath}
${extra.split('\n').filter(Boolean).map((l) => `    ${l}`).join('\n')}
`;
}

export interface StartOptions {
  /** Gateway server ports to map to free listen ports. */
  readonly serverPorts?: readonly number[];
  readonly mesh?: string;
  readonly opts?: Partial<AppOptions>;
}

export async function startGateway(files: Record<string, string>, o: StartOptions = {}): Promise<TestGateway> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-test-'));
  const accessLogPath = path.join(dir, 'access.log');
  const write = (name: string, text: string) => {
    const tmp = path.join(dir, `.${name}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(dir, name));
  };
  write('mesh.yaml', meshConfigYaml(accessLogPath, o.mesh));
  for (const [name, text] of Object.entries(files)) write(name, text);
  // A port freePort() handed out is free only until something binds it: another server of this
  // process listening on port 0 may take it first. A gateway that could not bind one of its ports is
  // started again on fresh ones, instead of leaving the test to talk to whoever holds the port.
  let portMap = new Map<number, number>();
  let app: App | undefined;
  for (let attempt = 1; app === undefined; attempt++) {
    portMap = new Map();
    for (const p of o.serverPorts ?? [80]) portMap.set(p, await freePort());
    const candidate = new App({
      configPaths: [dir],
      labels: { istio: 'ingressgateway' },
      namespace: 'istio-system',
      portMap,
      bind: '127.0.0.1',
      adminPort: 0,
      statusPort: 0,
      metricsPort: 0,
      logLevel: 'warn',
      serverName: 'istio-envoy',
      drainMs: 2000,
      watch: true,
      logger: pino({ level: process.env['MESHGATE_TEST_LOG'] ?? 'silent' }),
      ...o.opts,
    });
    const outcome = await candidate.start();
    const taken = outcome.errors.filter((e) => [...portMap.values()].some((port) => e.startsWith(`listener port ${port}:`)));
    if (taken.length === 0) app = candidate;
    else if (attempt < 3) await candidate.stop();
    else throw new Error(`test gateway: cannot listen: ${taken.join('; ')}`);
  }
  const accessLines = () => {
    try {
      return fs.readFileSync(accessLogPath, 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };
  return {
    app,
    dir,
    accessLogPath,
    port: (p) => portMap.get(p) ?? p,
    accessLines,
    async waitForLines(n, timeoutMs = 3000) {
      await waitFor(() => {
        app.accessLog.flush();
        return accessLines().length >= n;
      }, { timeoutMs, intervalMs: 20 });
      return accessLines();
    },
    async waitForLine(re, timeoutMs = 3000) {
      let found: string | undefined;
      try {
        await waitFor(() => {
          app.accessLog.flush();
          found = accessLines().find((l) => re.test(l));
          return found !== undefined;
        }, { timeoutMs, intervalMs: 20 });
      } catch {
        throw new Error(`no access-log line matches ${re} within ${timeoutMs} ms; lines:\n${accessLines().join('\n')}`);
      }
      return found!;
    },
    write,
    async stop() {
      await app.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The meshgate binary, run as users run it. */
export const MESHGATE_BIN = path.resolve(__dirname, '../../../bin/meshgate');

/** Run a meshgate command to completion: exit code and output; `input` is written to its stdin. */
export function runMeshgate(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [...NODE_FLAGS, MESHGATE_BIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Start `meshgate run` as a child process on a config dir, port 80 mapped to `port`, free admin ports. */
export function spawnMeshgate(dir: string, port: number, extra: string[] = [], stdio: 'ignore' | 'pipe' = 'pipe', prefix: readonly string[] = []): ChildProcess {
  const args = [process.execPath, ...NODE_FLAGS, MESHGATE_BIN, 'run', '--config', dir, '--port-map', `80=${port}`, '--bind', '127.0.0.1',
    '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--no-watch', ...extra];
  // `prefix` runs it under another command (e.g. `taskset -c 0` to give it one core).
  const [cmd, ...rest] = [...prefix, ...args];
  return spawn(cmd!, rest, { stdio: ['ignore', stdio, stdio] });
}
