// `npm run bench`: meshgate against the same upstream reached directly, in one run, reported as
// ratios (the machine is shared and noisy: compare within a run, not across runs).
//
//   http-ka      keep-alive, 50 connections, 600-byte body, as fast as possible (wrk when installed)
//                targets: direct, meshgate, minimal undici proxy (shared/bench peer), nginx proxy
//   istio-setup  Istio's benchmark shape: 1000 req/s constant rate, 16 connections, 1 KiB body;
//                added p99 over direct, vCPU and peak RSS; direct, meshgate, minimal undici proxy, nginx;
//                load from bench/rategen.c (compiled with gcc) or the Node generator
//   istio-setup-1core  the same with the proxies on the load's core (no cross-core wake-ups)
//   https-ka     http-ka over TLS 1.3 to the proxy (plain HTTP behind it): meshgate (a Gateway HTTPS
//                server, SIMPLE) and nginx terminating; wrk only
//
//   tcp-thru, tcp-cps, tls-hs (bench/tcp.ts): one connection's MB/s, new connections/s, TLS
//                passthrough handshakes/s; direct, meshgate, the minimal Node peers; KiB per idle
//                connection
//
//   sidecar-cpu, sidecar-egw (bench/sidecar.ts, in network namespaces; root): the sidecar's CPU per
//                request against the gateway path; sidecar + egress gateway p99 over direct at 1000 req/s
//
// Proxies run on core 1, upstream and load on core 0 (taskset). Env: BENCH_DURATION (s, default 8),
// BENCH_ROUNDS (default 3), BENCH_QUICK=1 (short smoke run), BENCH_ONLY=http,istio,https,tcp,sidecar
// (http includes istio-setup and https-ka), BENCH_OUT.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { buildRategen, medianBy, rotatedRounds, runLoad, cpuSeconds, freePort, peakRssMiB, resetPeak, start, stopAll, waitHttp, which, cores, type Proc } from './procs';
import type { LoadResult } from './loadgen';
import { singleRouteYaml } from '../src/sample/configs';
import { NODE_FLAGS } from '../src/v8-tuning';
import { writeDevCertificates } from '../src/tls/dev-certs';
import { runTcpBench, tcpTable, type TcpRow } from './tcp';
import { missingForSidecarBench, runSidecarBench, sidecarTable, type SidecarRow } from './sidecar';

const QUICK = process.env['BENCH_QUICK'] === '1';
/** Which parts run: `http`, `tcp` (default both). */
const ONLY = new Set((process.env['BENCH_ONLY'] ?? 'http,tcp,sidecar').split(',').map((x) => x.trim()));
const DURATION = Number(process.env['BENCH_DURATION'] ?? (QUICK ? 3 : 8));
const WARMUP = QUICK ? 1 : 2;
const PREWARM = QUICK ? 1 : 3;
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? (QUICK ? 1 : 3));
const ROOT = path.resolve(__dirname, '../..');
const MAIN = path.join(ROOT, 'dist/src/main.js');
const LOADGEN = path.join(ROOT, 'dist/bench/loadgen.js');
const UPSTREAM = path.join(ROOT, 'dist/bench/upstream.js');
const PEER_UNDICI = path.resolve(ROOT, '../shared/bench/lib/node/undici-proxy.js');
const PROXY_CORE = cores > 1 ? 1 : 0;
const LOAD_CORE = 0;

/** A sidecar-bench row plus what the HTTP workloads also report. */
interface Row extends SidecarRow {
  readonly rssMiB?: number;
  /** req/s of each round, when there were several. */
  readonly spread?: number[];
  /** p99 of each round (istio-setup). */
  readonly p99Spread?: number[];
}

function meshgateConfig(dir: string, upstreamPort: number): void {
  // Routing, access log and metrics all on: the configuration the issue asks to measure.
  fs.writeFileSync(path.join(dir, 'bench.yaml'), singleRouteYaml({ upstreamPort, accessLogFile: path.join(dir, 'access.log') }));
}

/** The same route with the traffic-policy issue's load: a pool, outlier detection, retries, header operations. */
function policyConfig(dir: string, upstreamPort: number): string {
  const d = `${dir}-policy`; // beside, not inside: the plain instance loads `dir` recursively
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'bench.yaml'), singleRouteYaml({
    upstreamPort, accessLogFile: path.join(d, 'access.log'),
    routeExtras: 'retries: {attempts: 3, retryOn: "5xx,connect-failure,reset"}, headers: {request: {set: {x-bench: "1"}, remove: [x-unused]}, response: {set: {x-served: gateway}}}',
    trafficPolicy: '{loadBalancer: {simple: LEAST_REQUEST}, connectionPool: {tcp: {maxConnections: 1000}, http: {http1MaxPendingRequests: 1000, maxRetries: 100}}, outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}',
  }));
  return d;
}

function nginxProxyConf(dir: string, listen: number, upstreamPort: number, tls?: ServerPem): string {
  const conf = path.join(dir, tls ? 'nginx-proxy-tls.conf' : 'nginx-proxy.conf');
  fs.writeFileSync(conf, `worker_processes 1;
daemon off;
pid ${dir}/nginx-proxy${tls ? '-tls' : ''}.pid;
error_log ${dir}/nginx-proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:${upstreamPort}; keepalive 256; }
  server {
    listen 127.0.0.1:${listen}${tls ? ` ssl;\n    ssl_certificate ${tls.certFile};\n    ssl_certificate_key ${tls.keyFile}` : ''};
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`);
  return conf;
}

function nginxUpstreamConf(dir: string, port: number, size: number): string {
  const conf = path.join(dir, `nginx-up-${port}.conf`);
  fs.writeFileSync(conf, `worker_processes 1;
daemon off;
pid ${dir}/nginx-up-${port}.pid;
error_log ${dir}/nginx-up-${port}.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${port};
    location / { default_type text/plain; return 200 "${'x'.repeat(size)}"; }
  }
}
`);
  return conf;
}

async function startUpstream(dir: string, size: number): Promise<{ port: number; proc: Proc; kind: string }> {
  const port = await freePort();
  const nginx = which('nginx');
  const proc = nginx
    ? start(nginx, ['-c', nginxUpstreamConf(dir, port, size), '-p', dir], { core: LOAD_CORE })
    : start(process.execPath, [UPSTREAM, String(port), String(size)], { core: LOAD_CORE });
  await waitHttp(port);
  return { port, proc, kind: nginx ? 'nginx' : 'node' };
}

function wrk(port: number, seconds: number, scheme: 'http' | 'https' = 'http'): LoadResult {
  const r = spawnSync('taskset', ['-c', String(LOAD_CORE), 'wrk', '-t1', '-c50', `-d${seconds}s`, '--latency', '-H', 'Host: bench', `${scheme}://127.0.0.1:${port}/`], { encoding: 'utf8', timeout: (seconds + 20) * 1000 });
  const out = r.stdout ?? '';
  const ms = (label: string) => {
    const m = new RegExp(`^\\s+${label}\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
    if (!m) return 0;
    const v = Number(m[1]);
    return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
  };
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((s, x) => s + Number(x), 0) : 0);
  return { requests: total, errors, seconds, rps, p50: ms('50%'), p90: ms('90%'), p99: ms('99%') };
}

interface Target { readonly name: string; readonly port: number; readonly proc?: Proc }

/** A server certificate and key, in files. */
interface ServerPem { readonly certFile: string; readonly keyFile: string }

/** Certificates for the HTTPS workload, as `meshgate certs` writes them (server.crt, server.key). */
async function serverPem(dir: string): Promise<ServerPem> {
  const out = path.join(dir, 'bench-tls');
  await writeDevCertificates({ out, serverNames: ['bench'], caName: 'meshgate bench CA', days: 90, secretName: 'bench', secretNamespace: 'default', newCa: true });
  return { certFile: path.join(out, 'server.crt'), keyFile: path.join(out, 'server.key') };
}

/**
 * A keep-alive workload over `targets` (median of the rotated rounds by req/s, each round's req/s
 * kept); each proxy pre-warmed in its first round.
 */
function keepAliveRows<T extends Target>(workload: string, targets: readonly T[], load: (t: T, seconds: number) => LoadResult): Row[] {
  const byTarget = rotatedRounds(targets, ROUNDS, (t, round) =>
    measure(workload, t.name, t.port, t.proc, (s) => load(t, s), DURATION, round === 0 && t.proc !== undefined));
  return targets.map((t) => {
    const runs = byTarget.get(t.name)!;
    return { ...medianBy(runs, (r) => r.rps), spread: runs.map((r) => Math.round(r.rps)).sort((a, b) => a - b) };
  });
}

/**
 * HTTPS keep-alive: http-ka's load over TLS to meshgate (a Gateway HTTPS server, SIMPLE) and to
 * nginx terminating, plain HTTP from both to the upstream; direct is plain HTTP to the upstream.
 */
async function httpsKa(dir: string, upstreamPort: number, notes: string[]): Promise<Row[]> {
  const pem = await serverPem(dir);
  const config = `${dir}-https`; // beside, not inside: the plain instance loads `dir` recursively
  fs.mkdirSync(config, { recursive: true });
  fs.writeFileSync(path.join(config, 'bench.yaml'), singleRouteYaml({ upstreamPort, accessLogFile: path.join(config, 'access.log'), serverTls: pem }));
  const gwPort = await freePort();
  const targets: (Target & { readonly scheme: 'http' | 'https' })[] = [
    { name: 'direct', port: upstreamPort, scheme: 'http' },
    { name: 'meshgate', port: gwPort, proc: await startMeshgate(config, gwPort, PROXY_CORE, true), scheme: 'https' },
  ];
  const nginx = which('nginx');
  if (nginx) {
    const p = await freePort();
    const nx = start(nginx, ['-c', nginxProxyConf(dir, p, upstreamPort, pem), '-p', dir], { core: PROXY_CORE });
    await waitHttp(p, { secure: true });
    targets.push({ name: 'nginx', port: p, proc: nx, scheme: 'https' });
  }
  const rows = keepAliveRows('https-ka', targets, (t, sec) => wrk(t.port, sec, t.scheme));
  notes.push(`https-ka: TLS from wrk to the proxies (ECDSA P-256 certificate), plain HTTP behind them; x direct is against plain HTTP straight to the upstream; median of ${ROUNDS} rounds`);
  for (const t of targets.slice(1)) await t.proc?.stop();
  fs.rmSync(config, { recursive: true, force: true });
  return rows;
}

/** `meshgate run` on a config, Gateway port 80 (443 for an `https` config) on `port`, pinned to `core` (the proxy core); resolves once it answers. */
async function startMeshgate(config: string, port: number, core = PROXY_CORE, https = false): Promise<Proc> {
  const proc = start(process.execPath, [...NODE_FLAGS, MAIN, 'run', '--config', config, '--port-map', `${https ? 443 : 80}=${port}`, '--bind', '127.0.0.1',
    '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--no-watch', '--log-level', 'warn'], { core });
  await waitHttp(port, { secure: https });
  return proc;
}

/** The peers in front of the upstream on `core` (the proxy core), when present: the minimal undici proxy, nginx. */
async function peerTargets(dir: string, upstreamPort: number, notes?: string[], core = PROXY_CORE): Promise<Target[]> {
  const out: Target[] = [];
  if (fs.existsSync(PEER_UNDICI)) {
    const p = await freePort();
    const peer = start(process.execPath, [PEER_UNDICI], { core, env: { NODE_PATH: path.join(ROOT, 'node_modules'), LISTEN: `127.0.0.1:${p}`, UP_HTTP: `127.0.0.1:${upstreamPort}` } });
    await waitHttp(p);
    out.push({ name: 'undici-minimal', port: p, proc: peer });
  } else notes?.push('minimal undici proxy skipped: ../shared/bench not found');
  const nginx = which('nginx');
  if (nginx) {
    const p = await freePort();
    const nx = start(nginx, ['-c', nginxProxyConf(dir, p, upstreamPort), '-p', dir], { core });
    await waitHttp(p);
    out.push({ name: 'nginx', port: p, proc: nx });
  } else notes?.push('nginx comparison skipped: nginx is not installed');
  return out;
}

function loadgen(args: string[], seconds: number): LoadResult {
  return runLoad(['taskset', '-c', String(LOAD_CORE), process.execPath, LOADGEN, ...args], seconds);
}

/** Istio's load shape: 1000 req/s, 16 connections; rategen when it compiled, else the Node generator. */
function atRate(rategen: string | undefined, port: number, seconds: number): LoadResult {
  return rategen
    ? runLoad(['taskset', '-c', String(LOAD_CORE), rategen, '127.0.0.1', String(port), '16', String(seconds), '1000'], seconds)
    : loadgen(['open', String(port), '16', String(seconds), '1000'], seconds);
}

const useWrk = !!which('wrk') && !!which('taskset');

function blast(port: number, seconds: number): LoadResult {
  return useWrk ? wrk(port, seconds) : loadgen(['closed', String(port), '50', String(seconds)], seconds);
}

/** Pre-warm, warm up, then one measured run with the proxy's CPU and peak RSS. */
function measure(workload: string, target: string, port: number, proc: Proc | undefined, run: (s: number) => LoadResult, seconds: number, prewarm = true): Row {
  if (prewarm) run(PREWARM);
  run(WARMUP);
  if (proc) resetPeak(proc.pid);
  const cpu0 = proc ? cpuSeconds(proc.pid) : 0;
  const t0 = Date.now();
  const r = run(seconds);
  const wall = (Date.now() - t0) / 1000;
  const cpu = proc ? cpuSeconds(proc.pid) - cpu0 : 0;
  return {
    workload, target, rps: r.rps, p50: r.p50, p99: r.p99, errors: r.errors,
    cpuUsPerReq: proc && r.requests > 0 ? (cpu * 1e6) / r.requests : undefined,
    vcpu: proc ? cpu / wall : undefined,
    rssMiB: proc ? peakRssMiB(proc.pid) : undefined,
  };
}

function fmt(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

function table(rows: Row[], notes: string[]): string {
  const lines: string[] = [];
  for (const workload of [...new Set(rows.map((r) => r.workload))]) {
    const set = rows.filter((r) => r.workload === workload);
    const direct = set.find((r) => r.target === 'direct');
    lines.push(`\n${workload}`);
    lines.push(['target'.padEnd(16), 'req/s'.padStart(9), 'x direct'.padStart(9), 'p50 ms'.padStart(8), 'p99 ms'.padStart(8), 'CPU us/req'.padStart(11), 'vCPU'.padStart(6), 'peak RSS MiB'.padStart(13), 'errors'.padStart(7)].join(' '));
    for (const r of set) {
      lines.push([r.target.padEnd(16), fmt(r.rps, 0).padStart(9), fmt(direct ? r.rps / direct.rps : undefined).padStart(9), fmt(r.p50).padStart(8), fmt(r.p99).padStart(8),
        fmt(r.cpuUsPerReq, 1).padStart(11), fmt(r.vcpu, 3).padStart(6), fmt(r.rssMiB, 1).padStart(13), String(r.errors).padStart(7)].join(' '));
    }
  }
  lines.push('', ...notes);
  return lines.join('\n') + '\n';
}

/**
 * Istio's benchmark shape (1000 req/s, 16 connections, 1 KiB) through meshgate and the peers pinned
 * to `core`: the median round by p99 of each target, with notes of what meshgate adds.
 */
async function istioSetup(dir: string, rategen: string | undefined, workload: string, core: number, notes: string[]): Promise<Row[]> {
  const up1k = await startUpstream(dir, 1024);
  meshgateConfig(dir, up1k.port);
  const gwPort = await freePort();
  const gw = await startMeshgate(dir, gwPort, core);
  const targets: Target[] = [{ name: 'direct', port: up1k.port }, { name: 'meshgate', port: gwPort, proc: gw }];
  targets.push(...await peerTargets(dir, up1k.port, undefined, core));
  const byTarget = rotatedRounds(targets, ROUNDS, (t) => measure(workload, t.name, t.port, t.proc, (sec) => atRate(rategen, t.port, sec), DURATION, false));
  const picked = new Map<string, Row>();
  for (const t of targets) {
    const runs = byTarget.get(t.name)!;
    picked.set(t.name, { ...medianBy(runs, (r) => r.p99), p99Spread: runs.map((r) => Number(r.p99.toFixed(2))).sort((a, b) => a - b) });
  }
  const d = picked.get('direct')!;
  for (const [name, r] of picked) {
    if (name === 'direct') continue;
    notes.push(`${workload}: ${name} adds ${fmt(r.p99 - d.p99)} ms p99 over direct, uses ${fmt(r.vcpu, 3)} vCPU (${fmt(r.cpuUsPerReq, 0)} us/request), peak RSS ${fmt(r.rssMiB, 1)} MiB`
      + (name === 'meshgate' ? ' (targets: <= 1 ms, <= 0.05 vCPU, <= 80 MiB; Istio publishes 0.20 vCPU)' : ''));
  }
  notes.push(`${workload}: proxies on core ${core}; median of ${ROUNDS} rounds by p99 (order rotated); every round's p99 in results JSON`);
  for (const t of targets) await t.proc?.stop();
  await up1k.proc.stop();
  return [...picked.values()];
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-bench-'));
  const rows: Row[] = [];
  const tcpRows: TcpRow[] = [];
  const notes: string[] = [];
  // The constant-rate generator of istio-setup and sidecar-egw, compiled once.
  const rategen = ONLY.has('http') || ONLY.has('istio') || ONLY.has('sidecar') ? buildRategen(ROOT, dir) : undefined;
  const onSignal = () => void stopAll().then(() => process.exit(130));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    notes.push(`load: ${useWrk ? 'wrk -t1 -c50' : 'built-in closed-loop generator (install wrk for better figures)'}; ${cores} cores; proxies on core ${PROXY_CORE}, load and upstream on core ${LOAD_CORE}`);

    if (ONLY.has('http')) {
      // ---------------------------------------------------------------- http-ka
      const up = await startUpstream(dir, 600);
      notes.push(`upstream: ${up.kind}, 600-byte body (http-ka), 1 KiB (istio-setup)`);
      const gwPort = await freePort();
      meshgateConfig(dir, up.port);
      const gw = await startMeshgate(dir, gwPort);
      const targets: Target[] = [{ name: 'direct', port: up.port }, { name: 'meshgate', port: gwPort, proc: gw }];
      const policyPort = await freePort();
      targets.push({ name: 'meshgate-policy', port: policyPort, proc: await startMeshgate(policyConfig(dir, up.port), policyPort) });
      targets.push(...await peerTargets(dir, up.port, notes));
      rows.push(...keepAliveRows('http-ka', targets, (t, s) => blast(t.port, s)));
      notes.push(`http-ka: median of ${ROUNDS} rounds (order rotated each round); req/s of every round in results JSON`);
      for (const t of targets) await t.proc?.stop();
      await up.proc.stop();
    }

    if (ONLY.has('http') || ONLY.has('https')) {
      // ---------------------------------------------------------------- https-ka
      if (!useWrk) notes.push('https-ka skipped: it needs wrk');
      else {
        const up = await startUpstream(dir, 600);
        rows.push(...await httpsKa(dir, up.port, notes));
        await up.proc.stop();
      }
    }

    if (ONLY.has('http') || ONLY.has('istio')) {
      notes.push(rategen
        ? 'istio-setup: rategen (bench/rategen.c: timerfd schedule, latency from the due time), 16 connections, 1000 req/s'
        : 'istio-setup: the Node generator (gcc missing: its millisecond timer adds to every p99)');
      rows.push(...await istioSetup(dir, rategen, 'istio-setup', PROXY_CORE, notes));
      // The same with every proxy on the load's core. On this kind of VM a process that wakes another
      // on a different core pays for the wake-up (~25 us each; a proxy makes two per request): that
      // row shows each proxy's own cost without it (docs/benchmarks.md, "Where a request's CPU goes
      // at 1000 req/s").
      if (PROXY_CORE !== LOAD_CORE) rows.push(...await istioSetup(dir, rategen, 'istio-setup-1core', LOAD_CORE, notes));
    }

    let tcpText = '';
    if (ONLY.has('tcp')) {
      const tcp = await runTcpBench({ dir, root: ROOT, seconds: DURATION, proxyCore: PROXY_CORE, loadCore: LOAD_CORE, thruBytes: QUICK ? 512 * 1024 * 1024 : 2 * 1024 * 1024 * 1024, idleConnections: 1000, rounds: ROUNDS });
      tcpText = tcpTable(tcp.rows);
      notes.push(...tcp.notes);
      tcpRows.push(...tcp.rows);
    }

    let sidecarText = '';
    const sidecarRows: SidecarRow[] = [];
    if (ONLY.has('sidecar')) {
      const missing = missingForSidecarBench(ROOT);
      if (missing.length > 0) notes.push(`sidecar bench skipped: missing ${missing.join(', ')}`);
      else {
        const sc = await runSidecarBench({ dir, root: ROOT, seconds: DURATION, proxyCore: PROXY_CORE, loadCore: LOAD_CORE, ...(rategen ? { rategen } : {}) });
        sidecarText = sidecarTable(sc.rows);
        sidecarRows.push(...sc.rows);
        notes.push(...sc.notes);
      }
    }

    const text = table(rows, []) + tcpText + sidecarText + '\n' + notes.join('\n') + '\n';
    process.stdout.write(text);
    const out = process.env['BENCH_OUT'] ?? path.join(os.tmpdir(), 'meshgate-bench');
    fs.mkdirSync(out, { recursive: true });
    const file = path.join(out, `results-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), duration: DURATION, rows, tcpRows, sidecarRows, notes }, null, 2));
    process.stdout.write(`results: ${file}\n`);
  } finally {
    await stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(`${dir}-policy`, { recursive: true, force: true });
  }
}

main().catch(async (err) => {
  process.stderr.write(`bench failed: ${(err as Error).message}\n`);
  await stopAll();
  process.exit(1);
});
