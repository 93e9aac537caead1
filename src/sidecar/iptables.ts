// `meshgate iptables`: the nat rules istio-iptables installs for a sidecar (REDIRECT mode), as an
// iptables-restore document (pure), plus applying and removing them. Outbound TCP goes to the
// capture port (15001) except the proxy's own traffic (uid/gid 1337) and loopback; inbound capture
// to 15006 is optional. With --fallback-ports, only those ports are redirected, each to its own
// listener (per-port capture, for builds without the SO_ORIGINAL_DST addon).

import { spawnSync } from 'node:child_process';
import type { FallbackPort } from './fallback';

export interface CaptureRules {
  readonly proxyPort: number;
  readonly inboundPort: number;
  readonly uid: number;
  readonly gid: number;
  /** '*' for everything, else CIDRs that are redirected (the rest goes out directly). */
  readonly includeOutboundCidrs: readonly string[] | '*';
  readonly excludeOutboundCidrs: readonly string[];
  readonly excludeOutboundPorts: readonly number[];
  /** Inbound capture: '' none, '*' every port, else the ports to capture. */
  readonly includeInboundPorts: readonly number[] | '*' | '';
  readonly excludeInboundPorts: readonly number[];
  /** Per-port capture without SO_ORIGINAL_DST: only these ports, each to its own listener. */
  readonly fallback?: readonly FallbackPort[];
}

export const DEFAULT_CAPTURE: CaptureRules = {
  proxyPort: 15001,
  inboundPort: 15006,
  uid: 1337,
  gid: 1337,
  includeOutboundCidrs: '*',
  excludeOutboundCidrs: [],
  excludeOutboundPorts: [],
  includeInboundPorts: '*',
  excludeInboundPorts: [15090, 15021, 15020],
};

const CHAINS = ['ISTIO_INBOUND', 'ISTIO_REDIRECT', 'ISTIO_IN_REDIRECT', 'ISTIO_OUTPUT'] as const;
const TUNNEL_PORT = 15008;

/** The nat table as `iptables-restore --noflush` reads it (istio-iptables' order), for IPv4 or IPv6. */
export function natRules(r: CaptureRules, family: 4 | 6): string {
  const localhost = family === 4 ? '127.0.0.1/32' : '::1/128';
  const inboundPassthrough = family === 4 ? '127.0.0.6/32' : '::6/128';
  const lines = ['*nat', ...CHAINS.map((c) => `-N ${c}`)];
  const inbound = r.includeInboundPorts !== '';
  lines.push(
    `-A ISTIO_INBOUND -p tcp --dport ${TUNNEL_PORT} -j RETURN`,
    ...(r.fallback && r.fallback.length > 0
      ? r.fallback.map((f) => `-A ISTIO_REDIRECT -p tcp --dport ${f.app} -j REDIRECT --to-ports ${f.listen}`)
      : [`-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports ${r.proxyPort}`]),
    `-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${r.inboundPort}`,
  );
  if (inbound) {
    lines.push('-A PREROUTING -p tcp -j ISTIO_INBOUND');
    if (r.includeInboundPorts === '*') {
      for (const p of r.excludeInboundPorts) lines.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j RETURN`);
      lines.push('-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT');
    } else {
      for (const p of r.includeInboundPorts) lines.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j ISTIO_IN_REDIRECT`);
    }
  }
  lines.push('-A OUTPUT -j ISTIO_OUTPUT');
  for (const p of r.excludeOutboundPorts) lines.push(`-A ISTIO_OUTPUT -p tcp --dport ${p} -j RETURN`);
  lines.push(`-A ISTIO_OUTPUT -o lo -s ${inboundPassthrough} -j RETURN`);
  for (const [opt, id] of [['--uid-owner', r.uid], ['--gid-owner', r.gid]] as const) {
    // The proxy calling its own pod (app -> proxy -> proxy -> app) goes through the inbound listener,
    // so only when there is one: without inbound capture nothing listens on the inbound port.
    if (inbound) lines.push(`-A ISTIO_OUTPUT -o lo ! -d ${localhost} -p tcp ! --dport ${TUNNEL_PORT} -m owner ${opt} ${id} -j ISTIO_IN_REDIRECT`);
    lines.push(
      `-A ISTIO_OUTPUT -o lo -m owner ! ${opt} ${id} -j RETURN`,
      `-A ISTIO_OUTPUT -m owner ${opt} ${id} -j RETURN`,
    );
  }
  lines.push(`-A ISTIO_OUTPUT -d ${localhost} -j RETURN`);
  for (const cidr of r.excludeOutboundCidrs.filter((c) => c.includes(':') === (family === 6))) lines.push(`-A ISTIO_OUTPUT -d ${cidr} -j RETURN`);
  if (r.includeOutboundCidrs === '*') lines.push('-A ISTIO_OUTPUT -j ISTIO_REDIRECT');
  else for (const cidr of r.includeOutboundCidrs.filter((c) => c.includes(':') === (family === 6))) lines.push(`-A ISTIO_OUTPUT -d ${cidr} -j ISTIO_REDIRECT`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The commands that remove the rules again (each may fail harmlessly when already gone). */
export function cleanupCommands(): string[][] {
  return [
    ['-t', 'nat', '-D', 'PREROUTING', '-p', 'tcp', '-j', 'ISTIO_INBOUND'],
    ['-t', 'nat', '-D', 'OUTPUT', '-j', 'ISTIO_OUTPUT'],
    ...CHAINS.map((c) => ['-t', 'nat', '-F', c]),
    ...CHAINS.map((c) => ['-t', 'nat', '-X', c]),
  ];
}

export interface ApplyResult {
  readonly ok: boolean;
  readonly output: string;
}

/** Apply (iptables-restore --noflush) for IPv4 and, when asked, IPv6. */
export function applyRules(r: CaptureRules, ipv6: boolean): ApplyResult {
  let output = '';
  for (const [family, tool] of [[4, 'iptables-restore'], ...(ipv6 ? [[6, 'ip6tables-restore']] : [])] as [4 | 6, string][]) {
    const res = spawnSync(tool, ['--noflush'], { input: natRules(r, family), encoding: 'utf8' });
    output += `${res.stdout ?? ''}${res.stderr ?? ''}`;
    if (res.error) return { ok: false, output: `${output}${tool}: ${res.error.message}` };
    if (res.status !== 0) return { ok: false, output };
  }
  if (ipv6) {
    // The inbound side reaches the application from ::6 over IPv6 (127.0.0.6 over IPv4 is local
    // already): give it to lo, as istio-iptables does. Already there is fine.
    const res = spawnSync('ip', ['-6', 'addr', 'add', '::6/128', 'dev', 'lo'], { encoding: 'utf8' });
    if (res.error || (res.status !== 0 && !/exists/i.test(res.stderr ?? ''))) {
      return { ok: false, output: `${output}ip -6 addr add ::6/128 dev lo: ${res.error?.message ?? res.stderr}` };
    }
  }
  return { ok: true, output };
}

export function removeRules(ipv6: boolean): void {
  for (const tool of ['iptables', ...(ipv6 ? ['ip6tables'] : [])]) {
    for (const args of cleanupCommands()) spawnSync(tool, args, { stdio: 'ignore' });
  }
}
