// Sidecar benchmarks (BENCH_ONLY=sidecar; root, ip, iptables and the SO_ORIGINAL_DST addon), in two
// network namespaces the bench makes and removes: a "pod" (10.9.8.1) with the load generator, meshgate
// --mode sidecar behind `meshgate iptables` and, for comparison, meshgate in gateway mode; an
// "external" namespace (10.9.8.2) with the upstream and an egress gateway.
//
//   sidecar-cpu   closed loop, 16 connections: CPU per request of the sidecar (SO_ORIGINAL_DST +
//                 routing by Host) against the gateway path (same route, same upstream)
//                 target: sidecar <= 2x the gateway
//   sidecar-egw   Istio's shape, 1000 req/s constant rate, 16 connections, 1 KiB: direct (the load as
//                 uid 1337, not captured) against sidecar -> egress gateway -> upstream, with h2c
//                 between them, and again with ISTIO_MUTUAL (mTLS and HTTP/2, as istio.io's egress
//                 tasks set it up; mesh identities from `meshgate certs --mesh`)
//                 target: adds < 2 ms p99 over direct
//
// The load generator runs as uid 0 (captured) or 1337 (not captured); the sidecar and the gateway on
// core 1; load, upstream and the egress gateway (a pod of its own) on core 0.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { LoadResult } from './loadgen';
import { NODE_FLAGS } from '../src/v8-tuning';
import { cpuSeconds, medianBy, runLoad, start, type Proc } from './procs';
import { httpGatewayYaml } from '../src/sample/configs';
import { writeMeshCertificates } from '../src/tls/dev-certs';

const POD = `mgbpod${process.pid}`;
const EXT = `mgbext${process.pid}`;
const POD_IP = '10.9.8.1';
const EXT_IP = '10.9.8.2';
const UP_PORT = 8000;

export interface SidecarRow {
  readonly workload: string;
  readonly target: string;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly cpuUsPerReq?: number;
  readonly vcpu?: number;
  readonly errors: number;
}

export interface SidecarBenchOptions {
  readonly dir: string;
  readonly root: string;
  readonly seconds: number;
  readonly proxyCore: number;
  readonly loadCore: number;
  /** bench/rategen.c compiled, for the constant-rate runs (else the Node generator). */
  readonly rategen?: string;
}

/** What the sidecar bench needs that this machine lacks (empty when it can run). */
export function missingForSidecarBench(root: string): string[] {
  const have = (c: string) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;
  return [
    process.getuid?.() === 0 ? '' : 'root',
    ...['ip', 'iptables-restore', 'setpriv', 'taskset'].filter((c) => !have(c)),
    fs.existsSync(path.join(root, 'native/origdst/build/Release/origdst.node')) ? '' : 'the SO_ORIGINAL_DST addon',
  ].filter(Boolean);
}

const mesh = (dir: string) => `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: ${dir}/access.log
---
`;

/** `NAME.bench` through the egress gateway's Service port: the sidecar's half (mesh) and the gateway's. */
const throughEgress = (name: string, port: number) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${name}.bench]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: ${port}}}}]
  - match: [{gateways: [istio-egressgateway]}]
    route: [{destination: {host: ${name}.bench, port: {number: ${UP_PORT}}}}]
---
`;

/** The upstream as a registry service; `egw.bench` (h2c) and `egwtls.bench` (ISTIO_MUTUAL) through the egress gateway. */
const CONFIG = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: up, namespace: default}
spec:
  hosts: [bench, egw.bench, egwtls.bench]
  ports: [{number: ${UP_PORT}, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: ${EXT_IP}}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: http2-mtls, port: 8443, targetPort: 8443}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: egress-pod, namespace: istio-system}
spec: {address: ${EXT_IP}, labels: {istio: egressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [egw.bench]}
  - {port: {number: 8443, name: https, protocol: HTTPS}, hosts: [egwtls.bench], tls: {mode: ISTIO_MUTUAL}}
---
${httpGatewayYaml()}${throughEgress('egw', 80)}${throughEgress('egwtls', 8443)}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress-mtls, namespace: default}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: ISTIO_MUTUAL, sni: egwtls.bench}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gw, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: bench, port: {number: ${UP_PORT}}}}]}]
`;

function sh(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
}

function asUid(uid: number | undefined): string[] {
  return uid === undefined ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
}

export async function runSidecarBench(o: SidecarBenchOptions): Promise<{ rows: SidecarRow[]; notes: string[] }> {
  const rows: SidecarRow[] = [];
  const notes: string[] = [];
  const main = path.join(o.root, 'dist/src/main.js');
  const loadgenJs = path.join(o.root, 'dist/bench/loadgen.js');
  const cfg = path.join(o.dir, 'sidecar-config');
  fs.mkdirSync(cfg, { recursive: true, mode: 0o777 });
  fs.chmodSync(o.dir, 0o777);
  fs.writeFileSync(path.join(cfg, 'mesh.yaml'), mesh(cfg));
  fs.writeFileSync(path.join(cfg, 'routes.yaml'), CONFIG);
  // Mesh identities for the ISTIO_MUTUAL hop, from one mesh CA (meshgate certs --mesh).
  const meshDir = path.join(o.dir, 'sidecar-mesh');
  const identity = async (name: string, id: string) => {
    await writeMeshCertificates({ out: path.join(meshDir, name), caDir: path.join(meshDir, 'ca'), identity: id, dnsNames: [], caName: 'bench mesh CA', days: 1, newCa: false });
    for (const f of fs.readdirSync(path.join(meshDir, name))) fs.chmodSync(path.join(meshDir, name, f), 0o644); // read by uid 1337
    return path.join(meshDir, name);
  };
  const sidecarCerts = await identity('sidecar', 'spiffe://cluster.local/ns/default/sa/sleep');
  const egressCerts = await identity('egress', 'spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account');
  fs.chmodSync(meshDir, 0o755);
  const procs: Proc[] = [];
  const inNs = (ns: string, uid: number | undefined, args: string[], core: number, env: NodeJS.ProcessEnv = {}) => {
    const p = start('ip', ['netns', 'exec', ns, ...asUid(uid), ...args], { core, env });
    procs.push(p);
    return p;
  };
  const load = (uid: number | undefined, port: number, target: string, host: string, args: string[], seconds: number): LoadResult => {
    const r = spawnSync('taskset', ['-c', String(o.loadCore), 'ip', 'netns', 'exec', POD, ...asUid(uid), process.execPath, loadgenJs, args[0]!, String(port), ...args.slice(1)], {
      encoding: 'utf8', timeout: (seconds + 30) * 1000, env: { ...process.env, BENCH_TARGET: target, BENCH_HOST: host },
    });
    try {
      return JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as LoadResult;
    } catch {
      throw new Error(`load generator failed in ${POD}: ${r.stderr}`);
    }
  };
  const measure = (workload: string, target: string, proc: Proc | undefined, run: (s: number) => LoadResult): SidecarRow => {
    run(2); // warm-up (JIT, connection pools)
    const cpu0 = proc ? cpuSeconds(proc.pid) : 0;
    const t0 = Date.now();
    const r = run(o.seconds);
    const wall = (Date.now() - t0) / 1000;
    const cpu = proc ? cpuSeconds(proc.pid) - cpu0 : 0;
    return {
      workload, target, rps: r.rps, p50: r.p50, p99: r.p99, errors: r.errors,
      ...(proc && r.requests > 0 ? { cpuUsPerReq: (cpu * 1e6) / r.requests, vcpu: cpu / wall } : {}),
    };
  };
  try {
    sh(['ip', 'netns', 'add', POD]);
    sh(['ip', 'netns', 'add', EXT]);
    sh(['ip', 'link', 'add', 'bpod0', 'netns', POD, 'type', 'veth', 'peer', 'name', 'bext0', 'netns', EXT]);
    for (const [ns, dev, addr] of [[POD, 'bpod0', `${POD_IP}/24`], [EXT, 'bext0', `${EXT_IP}/24`]] as const) {
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      sh(['ip', '-n', ns, 'addr', 'add', addr, 'dev', dev]);
      sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    }
    inNs(EXT, undefined, [process.execPath, path.join(o.root, 'dist/bench/upstream.js'), String(UP_PORT), '1024', EXT_IP], o.loadCore);
    // The egress gateway is another pod: it gets the other core (with the light C load generator and
    // the upstream), not a share of the sidecar's.
    const egress = inNs(EXT, undefined, [process.execPath, ...NODE_FLAGS, main, 'run', '--config', cfg, '--labels', 'istio=egressgateway', '--port-map', '80=8080',
      '--bind', EXT_IP, '--mesh-certs', egressCerts, '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--no-watch', '--log-level', 'warn'], o.loadCore);
    sh(['ip', 'netns', 'exec', POD, process.execPath, main, 'iptables', '--apply']);
    const sidecar = inNs(POD, 1337, [process.execPath, ...NODE_FLAGS, main, 'run', '--mode', 'sidecar', '--namespace', 'default', '--config', cfg, '--mesh-certs', sidecarCerts,
      '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--no-watch', '--log-level', 'warn'], o.proxyCore);
    const gateway = inNs(POD, 1337, [process.execPath, ...NODE_FLAGS, main, 'run', '--config', cfg, '--port-map', '80=8090', '--bind', '127.0.0.1',
      '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--no-watch', '--log-level', 'warn'], o.proxyCore);
    // Ready when each path answers.
    const deadline = Date.now() + 20_000;
    for (const [uid, port, target, host] of [[1337, UP_PORT, EXT_IP, 'bench'], [0, UP_PORT, EXT_IP, 'bench'], [1337, 8090, '127.0.0.1', 'bench'], [0, UP_PORT, EXT_IP, 'egw.bench'], [0, UP_PORT, EXT_IP, 'egwtls.bench']] as const) {
      for (;;) {
        const r = load(uid, port, target, host, ['closed', '1', '0.2'], 1);
        if (r.requests > 0 && r.errors === 0) break;
        if (Date.now() > deadline) throw new Error(`sidecar bench: ${host} via ${target}:${port} (uid ${uid}) never answered`);
        await new Promise((res) => setTimeout(res, 250));
      }
    }
    const closed = (uid: number, port: number, target: string, host: string) => (s: number) => load(uid, port, target, host, ['closed', '16', String(s)], s);
    const gw = measure('sidecar-cpu', 'gateway', gateway, closed(1337, 8090, '127.0.0.1', 'bench'));
    const sc = measure('sidecar-cpu', 'sidecar', sidecar, closed(0, UP_PORT, EXT_IP, 'bench'));
    rows.push(gw, sc);
    if (gw.cpuUsPerReq && sc.cpuUsPerReq) notes.push(`sidecar-cpu: the sidecar uses ${(sc.cpuUsPerReq / gw.cpuUsPerReq).toFixed(2)}x the gateway's CPU per request (target <= 2x)`);
    const rate = (uid: number, host: string) => (s: number) => o.rategen
      ? runLoad(['taskset', '-c', String(o.loadCore), 'ip', 'netns', 'exec', POD, ...asUid(uid), o.rategen, EXT_IP, String(UP_PORT), '16', String(s), '1000', host], s)
      : load(uid, UP_PORT, EXT_IP, host, ['open', '16', String(s), '1000'], s);
    // Three rounds, alternating which goes first; the median round by p99 of each.
    const directRuns: SidecarRow[] = [];
    const bothRuns: SidecarRow[] = [];
    const mtlsRuns: SidecarRow[] = [];
    for (let round = 0; round < 3; round++) {
      const d = () => directRuns.push(measure('sidecar-egw', 'direct', undefined, rate(1337, 'bench')));
      const b = () => bothRuns.push(measure('sidecar-egw', 'sidecar+egress', sidecar, rate(0, 'egw.bench')));
      // The same hop as istio.io's egress tasks set it up: ISTIO_MUTUAL (mTLS, HTTP/2 by ALPN).
      const m = () => mtlsRuns.push(measure('sidecar-egw', 'same, mTLS', sidecar, rate(0, 'egwtls.bench')));
      if (round % 2 === 0) { d(); b(); m(); } else { m(); b(); d(); }
    }
    const direct = medianBy(directRuns, (r) => r.p99);
    const both = medianBy(bothRuns, (r) => r.p99);
    const mtls = medianBy(mtlsRuns, (r) => r.p99);
    const rounds = (runs: SidecarRow[]) => runs.map((r) => r.p99.toFixed(2)).join(' ');
    notes.push(`sidecar-egw: p99 of each round, direct ${rounds(directRuns)} ms, sidecar+egress ${rounds(bothRuns)} ms, over mTLS ${rounds(mtlsRuns)} ms${o.rategen ? ' (rategen)' : ' (Node generator: gcc missing)'}`);
    const egressCpu = cpuSeconds(egress.pid);
    rows.push(direct, both, mtls);
    notes.push(`sidecar-egw: sidecar + egress gateway add ${(both.p99 - direct.p99).toFixed(2)} ms p99 over direct at 1000 req/s, ${(mtls.p99 - direct.p99).toFixed(2)} ms over mTLS (target < 2 ms; Istio publishes about 2.7-2.9 ms for two proxies, with mTLS); egress gateway used ${egressCpu.toFixed(1)} CPU s in all`);
  } finally {
    for (const p of procs) await p.stop();
    spawnSync('ip', ['netns', 'del', POD]);
    spawnSync('ip', ['netns', 'del', EXT]);
  }
  return { rows, notes };
}

export function sidecarTable(rows: readonly SidecarRow[]): string {
  if (rows.length === 0) return '';
  const f = (n: number | undefined, d = 2) => (n === undefined ? '-' : n.toFixed(d));
  const lines = ['', ['workload'.padEnd(12), 'target'.padEnd(16), 'req/s'.padStart(9), 'p50 ms'.padStart(8), 'p99 ms'.padStart(8), 'CPU us/req'.padStart(11), 'vCPU'.padStart(6), 'errors'.padStart(7)].join(' ')];
  for (const r of rows) {
    lines.push([r.workload.padEnd(12), r.target.padEnd(16), f(r.rps, 0).padStart(9), f(r.p50).padStart(8), f(r.p99).padStart(8), f(r.cpuUsPerReq, 1).padStart(11), f(r.vcpu, 3).padStart(6), String(r.errors).padStart(7)].join(' '));
  }
  return lines.join('\n') + '\n';
}
