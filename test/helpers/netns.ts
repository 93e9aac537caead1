// What the network-namespace tests need of the machine: root, ip, iptables, setpriv, nc, curl and the
// SO_ORIGINAL_DST addon. They are skipped with a message naming what is missing, never silently.

import { execFileSync } from 'node:child_process';
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
