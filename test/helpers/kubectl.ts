// The machine's kubectl, run so that it cannot reach a network: for offline checks of manifests
// (`kubectl kustomize`, and the typed decoding `kubectl set ... --local` does). Never against a cluster.
//
// /usr/bin/kubectl on this image is the Google Cloud SDK dispatcher: before running anything it asks a
// server for its version (with no kubeconfig, it connects to localhost:8080). The versioned binaries
// beside it (kubectl.1.32, ...) do not connect for these commands. So: a versioned binary when there is
// one, and as root always inside an empty network namespace (`unshare --net`) as well; without either
// guarantee, no kubectl at all.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { have } from './netns';

export interface KubectlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface OfflineKubectl {
  /** The binary and how it is isolated, for test titles and messages. */
  readonly describe: string;
  run(args: readonly string[], input?: string): KubectlResult;
  /** Remove its temporary HOME. */
  close(): void;
}

function which(cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The newest `kubectl.1.N` next to the (resolved) kubectl, if any. */
function versioned(kubectl: string): string | undefined {
  const dir = path.dirname(fs.realpathSync(kubectl));
  const found = fs.readdirSync(dir)
    .map((f) => ({ f, m: /^kubectl\.1\.(\d+)$/.exec(f) }))
    .filter((x) => x.m !== null)
    .sort((a, b) => Number(b.m![1]) - Number(a.m![1]));
  return found[0] ? path.join(dir, found[0].f) : undefined;
}

/** A kubectl that cannot reach a network, or why there is none. */
export function offlineKubectl(): OfflineKubectl | { readonly missing: string } {
  const kubectl = which('kubectl');
  if (!kubectl) return { missing: 'kubectl is not installed' };
  const binary = versioned(kubectl);
  const isolate = process.getuid?.() === 0 && have('unshare');
  if (!binary && !isolate) return { missing: `${kubectl} may be a dispatcher that contacts a server, and without root there is no empty network namespace to run it in` };
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-kubectl-'));
  const env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: home, KUBECONFIG: path.join(home, 'no-kubeconfig') };
  const exe = binary ?? kubectl;
  return {
    describe: `${exe}${isolate ? ' in an empty network namespace' : ''}`,
    run(args, input) {
      const [cmd, argv] = isolate ? ['unshare', ['--net', exe, ...args]] : [exe, [...args]];
      const r = spawnSync(cmd, argv, { env, input, encoding: 'utf8', timeout: 20_000 });
      return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
    },
    close: () => fs.rmSync(home, { recursive: true, force: true }),
  };
}
