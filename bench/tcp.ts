// The TCP and TLS workloads of `npm run bench`, with the shared harness's C load tool (benchtool,
// compiled here): one connection's throughput, new connections per second, TLS-passthrough
// handshakes per second, each for direct, meshgate (with and without its access log, and with two
// workers), the minimal Node peer and HAProxy (when installed) in one run; and meshgate's memory per
// idle connection.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { cores, cpuSeconds, freePort, medianBy, peakRssMiB, resetPeak, rotatedRounds, start, which, type Proc } from './procs';
import { NODE_FLAGS } from '../src/v8-tuning';
import { loopbackServiceEntryYaml, singleRouteYaml } from '../src/sample/configs';
import { makeCa, makeLeaf } from '../src/tls/certs';

export interface TcpRow {
  readonly workload: string;
  readonly target: string;
  /** MB/s (tcp-thru) or connections/s (tcp-cps, tls-hs). */
  readonly rate: number;
  readonly unit: string;
  readonly p99Ms?: number;
  readonly cpuPercent?: number;
  readonly rssMiB?: number;
  readonly errors: number;
  /** Every round's rate, sorted (the row is the median round). */
  readonly spread?: number[];
}

export interface TcpBenchOptions {
  readonly dir: string;
  readonly root: string;
  readonly seconds: number;
  readonly proxyCore: number;
  readonly loadCore: number;
  readonly thruBytes: number;
  readonly idleConnections: number;
  /** Rounds of tcp-thru and tcp-cps, the targets' order rotated each round. */
  readonly rounds: number;
}

const SNI = 'bench.test';

async function waitTcp(port: number, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

function benchtool(tool: string, core: number, args: string[], seconds: number): Record<string, number> {
  const r = spawnSync('taskset', ['-c', String(core), tool, ...args], { encoding: 'utf8', timeout: (seconds + 60) * 1000 });
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, number>;
  } catch {
    throw new Error(`benchtool ${args[0]} failed: ${r.stderr || line}`);
  }
}

/** meshgate on the proxy core; with `workers` > 1 unpinned (its workers may use every core). */
function meshgate(o: TcpBenchOptions, name: string, yaml: string, listen: number, workers = 1): Proc {
  const dir = path.join(o.dir, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'bench.yaml'), yaml);
  return start(process.execPath, [...NODE_FLAGS, path.join(o.root, 'dist/src/main.js'), 'run', '--config', dir, '--port-map', `80=${listen},443=${listen}`,
    '--bind', '127.0.0.1', '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--no-watch', '--log-level', 'warn',
    '--workers', String(workers)], { core: workers > 1 ? undefined : o.proxyCore });
}

function passthroughYaml(upstreamPort: number, accessLogFile: string): string {
  return `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: ${accessLogFile}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [${SNI}], tls: {mode: PASSTHROUGH}}]
---
${loopbackServiceEntryYaml('up', SNI, 443, 'TLS', upstreamPort)}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: up, namespace: default}
spec:
  hosts: [${SNI}]
  gateways: [gw]
  tls: [{match: [{port: 443, sniHosts: [${SNI}]}], route: [{destination: {host: ${SNI}, port: {number: 443}}}]}]
`;
}

async function nginxTls(o: TcpBenchOptions, port: number): Promise<Proc | undefined> {
  const nginx = which('nginx');
  if (!nginx) return undefined;
  const ca = await makeCa({ commonName: 'bench CA', days: 2 });
  const leaf = await makeLeaf(ca, { commonName: SNI, names: [SNI], days: 2, usage: 'server' });
  fs.writeFileSync(path.join(o.dir, 'tls.crt'), leaf.cert);
  fs.writeFileSync(path.join(o.dir, 'tls.key'), leaf.key);
  const conf = path.join(o.dir, 'nginx-tls.conf');
  fs.writeFileSync(conf, `worker_processes 1;
daemon off;
pid ${o.dir}/nginx-tls.pid;
error_log ${o.dir}/nginx-tls.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  ssl_session_cache off;
  ssl_session_tickets off;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${o.dir}/tls.crt;
    ssl_certificate_key ${o.dir}/tls.key;
    location / { default_type text/plain; return 200 "ok"; }
  }
}
`);
  const p = start(nginx, ['-c', conf, '-p', o.dir], { core: o.loadCore });
  await waitTcp(port);
  return p;
}

/** HAProxy as a plain TCP proxy, one thread on the proxy core (as `shared/bench` runs it), when installed. */
async function haproxyTcp(o: TcpBenchOptions, port: number, upstreamPort: number): Promise<Proc | undefined> {
  const haproxy = which('haproxy');
  if (!haproxy) return undefined;
  const conf = path.join(o.dir, 'haproxy-tcp.cfg');
  fs.writeFileSync(conf, `global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  maxconn 9000
frontend tcp_in
  bind 127.0.0.1:${port}
  default_backend up_tcp
backend up_tcp
  server s1 127.0.0.1:${upstreamPort}
`);
  const p = start(haproxy, ['-db', '-f', conf], { core: o.proxyCore });
  try {
    await waitTcp(port);
    return p;
  } catch {
    await p.stop(); // a peer that does not start costs its own row, not the run
    return undefined;
  }
}

/** Run `fn` while measuring a proxy's CPU (% of one core) and peak RSS. */
function withUsage<T>(proc: Proc | undefined, fn: () => T): { result: T; cpuPercent?: number; rssMiB?: number } {
  if (!proc) return { result: fn() };
  resetPeak(proc.pid);
  const c0 = cpuSeconds(proc.pid);
  const t0 = Date.now();
  const result = fn();
  const wall = (Date.now() - t0) / 1000;
  return { result, cpuPercent: ((cpuSeconds(proc.pid) - c0) / wall) * 100, rssMiB: peakRssMiB(proc.pid) };
}

/** Memory per idle connection: open N connections through the proxy, read its RSS before and after. */
async function idleKiBPerConnection(proc: Proc, port: number, n: number): Promise<number> {
  const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8'))![1]);
  global.gc?.();
  await new Promise((r) => setTimeout(r, 500));
  const before = rss();
  const socks: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    socks.push(s);
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 2000));
  const after = rss();
  for (const s of socks) s.destroy();
  return (after - before) / n;
}

export async function runTcpBench(o: TcpBenchOptions): Promise<{ rows: TcpRow[]; notes: string[] }> {
  const rows: TcpRow[] = [];
  const notes: string[] = [];
  const source = path.resolve(o.root, '../shared/bench/lib/benchtool.c');
  if (!fs.existsSync(source) || !which('gcc')) return { rows, notes: ['tcp workloads skipped: ../shared/bench/lib/benchtool.c or gcc missing'] };
  const tool = path.join(o.dir, 'benchtool');
  const cc = spawnSync('gcc', ['-O2', '-o', tool, source, '-lssl', '-lcrypto', '-lpthread'], { encoding: 'utf8' });
  if (cc.status !== 0) return { rows, notes: [`tcp workloads skipped: benchtool does not compile (${cc.stderr.trim().split('\n')[0]}); apt-get install libssl-dev`] };

  const upPort = await freePort();
  const up = start(tool, ['server', String(upPort)], { core: o.loadCore });
  await waitTcp(upPort);
  const mgPort = await freePort();
  const mg = meshgate(o, 'tcp', singleRouteYaml({ upstreamPort: upPort, protocol: 'TCP', accessLogFile: path.join(o.dir, 'tcp-access.log') }), mgPort);
  await waitTcp(mgPort);
  // The same without an access log, Istio's default (meshConfig.accessLogFile is empty unless set).
  const quietPort = await freePort();
  const quiet = meshgate(o, 'tcp-nolog', singleRouteYaml({ upstreamPort: upPort, protocol: 'TCP' }), quietPort);
  await waitTcp(quietPort);
  const targets: { name: string; port: number; proc?: Proc }[] = [
    { name: 'direct', port: upPort }, { name: 'meshgate', port: mgPort, proc: mg }, { name: 'meshgate-nolog', port: quietPort, proc: quiet },
  ];
  const pipeJs = path.resolve(o.root, '../shared/bench/lib/node/tcp-pipe.js');
  if (fs.existsSync(pipeJs)) {
    const p = await freePort();
    const pipe = start(process.execPath, [pipeJs], { core: o.proxyCore, env: { LISTEN: `127.0.0.1:${p}`, UP_TCP: `127.0.0.1:${upPort}` } });
    await waitTcp(p);
    targets.push({ name: 'node-pipe', port: p, proc: pipe });
  }
  const haPort = await freePort();
  const ha = await haproxyTcp(o, haPort, upPort);
  if (ha) targets.push({ name: 'haproxy', port: haPort, proc: ha });
  if (cores > 1) {
    // Every core: two workers sharing the port, not pinned (the load generator shares core 0).
    const p = await freePort();
    const multi = meshgate(o, 'tcp-2w', singleRouteYaml({ upstreamPort: upPort, protocol: 'TCP', accessLogFile: path.join(o.dir, 'tcp-2w-access.log') }), p, 2);
    await waitTcp(p);
    targets.push({ name: 'meshgate-2w', port: p, proc: multi });
  }
  // Rounds with the order rotated: a connections/s run leaves tens of thousands of sockets in
  // TIME_WAIT for a minute, which slow the next target's connect(); no target always follows direct.
  for (const t of targets) benchtool(tool, o.loadCore, ['cps', '127.0.0.1', String(t.port), '50', '2'], 2); // warm-up
  const runs = rotatedRounds(targets, o.rounds, (t): TcpRow[] => {
    const thru = withUsage(t.proc, () => benchtool(tool, o.loadCore, ['thru', '127.0.0.1', String(t.port), String(o.thruBytes)], 60));
    const cps = withUsage(t.proc, () => benchtool(tool, o.loadCore, ['cps', '127.0.0.1', String(t.port), '50', String(o.seconds)], o.seconds));
    return [
      { workload: 'tcp-thru', target: t.name, rate: thru.result['MBps'] ?? 0, unit: 'MB/s', cpuPercent: thru.cpuPercent, rssMiB: thru.rssMiB, errors: 0 },
      { workload: 'tcp-cps', target: t.name, rate: cps.result['rate'] ?? 0, unit: 'conn/s', p99Ms: (cps.result['p99_us'] ?? 0) / 1000, cpuPercent: cps.cpuPercent, rssMiB: cps.rssMiB, errors: cps.result['errors'] ?? 0 },
    ];
  });
  // Per workload and target, the median round, with every round's rate.
  for (const w of [0, 1]) {
    for (const t of targets) {
      const list = runs.get(t.name)!.map((pair) => pair[w]!);
      rows.push({ ...medianBy(list, (x) => x.rate), spread: list.map((x) => Math.round(x.rate)).sort((a, b) => a - b) });
    }
  }
  if (o.rounds > 1) notes.push(`tcp-thru, tcp-cps: median of ${o.rounds} rounds (order rotated each round); every round's rate in results JSON`);
  for (const t of targets) await t.proc?.stop();
  // A fresh process, so the heap grown by the load above does not hide the connections' cost.
  const idlePort = await freePort();
  const idle = meshgate(o, 'tcp-idle', singleRouteYaml({ upstreamPort: upPort, protocol: 'TCP' }), idlePort);
  await waitTcp(idlePort);
  const kib = await idleKiBPerConnection(idle, idlePort, o.idleConnections);
  notes.push(`tcp idle: ${o.idleConnections} idle connections through meshgate (both sides open) cost ${kib.toFixed(1)} KiB each (RSS after - before, fresh process)`);
  await idle.stop();
  await up.stop();

  // ---------------------------------------------------------------- TLS passthrough handshakes
  const tlsUpPort = await freePort();
  const tlsUp = await nginxTls(o, tlsUpPort);
  if (!tlsUp) return { rows, notes: [...notes, 'tls-hs skipped: nginx is not installed'] };
  const ptPort = await freePort();
  const pt = meshgate(o, 'tls', passthroughYaml(tlsUpPort, path.join(o.dir, 'tls-access.log')), ptPort);
  await waitTcp(ptPort);
  const tlsTargets: { name: string; port: number; proc?: Proc }[] = [{ name: 'direct', port: tlsUpPort }, { name: 'meshgate', port: ptPort, proc: pt }];
  const sniJs = path.resolve(o.root, '../shared/bench/lib/node/sni-proxy.js');
  if (fs.existsSync(sniJs)) {
    const p = await freePort();
    const peer = start(process.execPath, [sniJs], { core: o.proxyCore, env: { LISTEN: `127.0.0.1:${p}`, SNI_ROUTES: `${SNI}=127.0.0.1:${tlsUpPort}` } });
    await waitTcp(p);
    tlsTargets.push({ name: 'node-sni-proxy', port: p, proc: peer });
  }
  for (const t of tlsTargets) {
    benchtool(tool, o.loadCore, ['tls', '127.0.0.1', String(t.port), SNI, '32', '2'], 2);
    const hs = withUsage(t.proc, () => benchtool(tool, o.loadCore, ['tls', '127.0.0.1', String(t.port), SNI, '32', String(o.seconds)], o.seconds));
    rows.push({ workload: 'tls-hs', target: t.name, rate: hs.result['rate'] ?? 0, unit: 'conn/s', p99Ms: (hs.result['p99_us'] ?? 0) / 1000, cpuPercent: hs.cpuPercent, rssMiB: hs.rssMiB, errors: hs.result['errors'] ?? 0 });
  }
  for (const t of tlsTargets) await t.proc?.stop();
  await tlsUp.stop();
  return { rows, notes };
}

export function tcpTable(rows: readonly TcpRow[]): string {
  const lines: string[] = [];
  for (const workload of [...new Set(rows.map((r) => r.workload))]) {
    const set = rows.filter((r) => r.workload === workload);
    const direct = set.find((r) => r.target === 'direct');
    lines.push(`\n${workload}`);
    lines.push(['target'.padEnd(16), 'rate'.padStart(10), 'unit'.padEnd(7), 'x direct'.padStart(9), 'p99 ms'.padStart(8), 'proxy CPU%'.padStart(11), 'peak RSS MiB'.padStart(13), 'errors'.padStart(7), '  rounds'].join(' '));
    for (const r of set) {
      lines.push([r.target.padEnd(16), r.rate.toFixed(0).padStart(10), r.unit.padEnd(7), (direct ? (r.rate / direct.rate).toFixed(2) : '-').padStart(9),
        (r.p99Ms !== undefined ? r.p99Ms.toFixed(2) : '-').padStart(8), (r.cpuPercent !== undefined ? r.cpuPercent.toFixed(0) : '-').padStart(11),
        (r.rssMiB !== undefined ? r.rssMiB.toFixed(1) : '-').padStart(13), String(r.errors).padStart(7), `  ${r.spread?.join(' ') ?? ''}`].join(' '));
    }
  }
  return lines.join('\n') + '\n';
}
