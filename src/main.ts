// Command line: `meshgate run`, `meshgate validate`, `meshgate help`. Thin: parses flags and
// environment, then calls into the modules.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { App } from './app';
import { DNS_FAMILIES, type DnsFamily } from './serviceentry/dns';
import { DEFAULT_IMAGE, kubeInject as inject } from './inject/inject';
import { plural, validatePaths, validationReport } from './config/format';
import { loadPaths } from './config/load';
import { checkForValidate, overlay } from './config/pipeline';
import type { Resource } from './config/types';
import type { KubeObject } from './kube/reflector';
import { listClusterOnce, referencedSecrets } from './sources/kubernetes';
import { MAX_TIMER_MS, parseDuration } from './config/names';
import { gatewayNamespace, resolveConnection } from './kube/connection';
import { startSampleBackends } from './sample';
import { fallbackPorts, type FallbackPort } from './sidecar/fallback';
import { captureAvailable } from './sidecar/original-dst';
import { MESH_CERT_NAMES, type MeshCertFiles } from './tls/secrets';
import { followLogLevel, offerMetrics, PROMETHEUS_ANNOTATIONS_ENV, runPrimary, shareLogLevel, shareReadiness, workerIndex } from './workers';
import { lowerHelperThreads, parseHelperNice } from './helper-threads';
import { tuneV8 } from './v8-tuning';
import { asError } from './errors';

interface FlagSpec {
  readonly name: string;
  readonly env?: string;
  readonly help: string;
  readonly def?: string;
  readonly multiple?: boolean;
  readonly boolean?: boolean;
  readonly short?: string;
}

/** How `run` and `validate` reach the Kubernetes API. */
const KUBE_FLAGS: readonly FlagSpec[] = [
  { name: 'kubeconfig', env: 'KUBECONFIG', help: 'kubernetes source: a kubeconfig file, or several separated by colons merged as kubectl merges them (the current context); empty: in-cluster, from the service account', def: '' },
  { name: 'watch-namespace', env: 'MESHGATE_WATCH_NAMESPACE', help: 'kubernetes source: namespaces to watch, comma-separated (default: all); Secrets are read from --namespace, the mesh config from istio-system', def: '' },
];
const NAMESPACE_FLAG: FlagSpec = {
  name: 'namespace', env: 'MESHGATE_NAMESPACE', def: '',
  help: "the gateway's namespace, where its credentialName Secrets are (default istio-system; in a pod with --source kubernetes, the service account's namespace)",
};

const RUN_FLAGS: readonly FlagSpec[] = [
  { name: 'config', env: 'MESHGATE_CONFIG', help: 'YAML file or directory (recursive); repeatable; env: comma-separated (the files source)', multiple: true },
  { name: 'source', env: 'MESHGATE_SOURCE', help: 'where the config comes from: files (--config) or kubernetes (list and watch the API)', def: 'files' },
  ...KUBE_FLAGS,
  { name: 'labels', env: 'MESHGATE_LABELS', help: "this gateway's labels, matched by Gateway selector", def: 'istio=ingressgateway' },
  NAMESPACE_FLAG,
  { name: 'port-map', env: 'MESHGATE_PORT_MAP', help: 'listen port per Gateway server port, e.g. 80=8080,443=8443', def: '' },
  { name: 'mode', env: 'MESHGATE_MODE', help: "gateway (Gateway listeners) or sidecar (capture listener for iptables-redirected traffic)", def: 'gateway' },
  { name: 'capture-port', env: 'MESHGATE_CAPTURE_PORT', help: 'sidecar mode: the capture listener (iptables REDIRECT target)', def: '15001' },
  { name: 'inbound-port', env: 'MESHGATE_INBOUND_PORT', help: "sidecar mode: the inbound capture listener (with `meshgate iptables --include-inbound-ports`); empty for none", def: '' },
  { name: 'fallback-ports', env: 'MESHGATE_FALLBACK_PORTS', help: 'sidecar mode without the SO_ORIGINAL_DST addon: capture only these application ports, each on its own listener (--fallback-base + index); the same list as `meshgate iptables --fallback-ports`', def: '' },
  { name: 'fallback-base', env: 'MESHGATE_FALLBACK_BASE', help: 'first listener port of the per-port capture', def: '15100' },
  { name: 'bind', env: 'MESHGATE_BIND', help: "address the listeners bind (default 0.0.0.0; '::' in sidecar mode)", def: '' },
  { name: 'admin-port', env: 'MESHGATE_ADMIN_PORT', help: 'admin port on 127.0.0.1 (0 = pick a free port)', def: '15000' },
  { name: 'status-port', env: 'MESHGATE_STATUS_PORT', help: 'health port, /healthz/ready (0 = pick)', def: '15021' },
  { name: 'metrics-port', env: 'MESHGATE_METRICS_PORT', help: 'Prometheus port, /stats/prometheus (0 = pick)', def: '15090' },
  { name: 'agent-port', env: 'MESHGATE_AGENT_PORT', help: "Istio's agent port: /stats/prometheus with the application's own metrics merged in (from ISTIO_PROMETHEUS_ANNOTATIONS, as kube-inject sets it), /quitquitquit (0 = pick)", def: '15020' },
  { name: 'log-level', env: 'MESHGATE_LOG_LEVEL', help: 'trace, debug, info, warn, error', def: 'info' },
  { name: 'dns-server', env: 'MESHGATE_DNS_SERVER', help: 'DNS server(s) for ServiceEntry resolution, host:port[,host:port] (default: system)', def: '' },
  { name: 'dns-family', env: 'MESHGATE_DNS_FAMILY', help: "address records ServiceEntry DNS asks for: v4 (A only, as Istio's V4_ONLY for an IPv4 proxy), v6 (AAAA only), both (A and AAAA, dual stack)", def: 'v4' },
  { name: 'server-name', env: 'MESHGATE_SERVER_NAME', help: "value of the server header on every response (default istio-envoy; envoy in sidecar mode, as Istio's outbound sidecar)", def: '' },
  { name: 'mesh-certs', env: 'MESHGATE_MESH_CERTS', help: "directory with this proxy's mesh identity for ISTIO_MUTUAL (cert-chain.pem, key.pem, root-cert.pem, as `meshgate certs --mesh` writes them)", def: '' },
  { name: 'tcp-idle-timeout', env: 'MESHGATE_TCP_IDLE_TIMEOUT', help: 'close TCP/TLS-passthrough connections idle this long (Envoy duration: 1h, 90s, 500ms; 0 = never)', def: '1h' },
  { name: 'drain-seconds', env: 'MESHGATE_DRAIN_SECONDS', help: 'on SIGTERM, how long in-flight work may take', def: '20' },
  { name: 'no-watch', env: 'MESHGATE_NO_WATCH', help: 'do not watch the config files (SIGHUP still reloads)', boolean: true },
  { name: 'no-http1-lane', env: 'MESHGATE_NO_HTTP1_LANE', help: "serve every HTTP/1 request with node:http (by default plain HTTP/1.1 requests with no body, or a small one that came with the head, take a leaner path; the answers are the same)", boolean: true },
  { name: 'no-direct-reads', env: 'MESHGATE_NO_DIRECT_READS', help: "read client connections through node's streams (by default plain ones, and terminated TLS ones after their handshake, skip that machinery once a start-up check proves it works on this node: ~9 % less CPU at 1000 req/s)", boolean: true },
  { name: 'gc-metrics', env: 'MESHGATE_GC_METRICS', help: "export nodejs_gc_duration_seconds (it hooks every garbage collection, which costs the requests in flight then: at 1000 req/s ~0.2 ms more p99 and ~5 % more CPU)", boolean: true },
  { name: 'loop-delay-metrics', env: 'MESHGATE_LOOP_DELAY_METRICS', help: "export the event-loop delay histogram (nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds; nodejs_eventloop_lag_seconds is always there): it samples the loop every 10 ms, 100 wake-ups a second, ~0.003 vCPU on an idle gateway and a few % more CPU at 1000 req/s", boolean: true },
  { name: 'workers', env: 'MESHGATE_WORKERS', help: "gateway processes sharing the listen ports (node:cluster); 'auto' = one per core", def: '1' },
  { name: 'helper-nice', env: 'MESHGATE_HELPER_NICE', help: "nice value for the runtime's helper threads (garbage collector, compiler, file and DNS pool) so they yield the core to the event loop (Linux; 0 leaves them)", def: '10' },
  { name: 'with-sample-backends', env: 'MESHGATE_SAMPLE_BACKENDS', help: 'also start the sample httpbin, helloworld and tcp-echo backends the default config routes to', boolean: true },
];

const CERTS_FLAGS: readonly FlagSpec[] = [
  { name: 'out', help: 'directory to write ca.crt, ca.key, server.crt, server.key, [client.crt, client.key], secret.yaml', def: '' },
  { name: 'server', help: 'server certificate names, comma-separated DNS names or IPs (e.g. httpbin.example.com)', def: '' },
  { name: 'client', help: 'also make a client certificate with this name (for MUTUAL)', def: '' },
  { name: 'ca-name', help: 'common name of the development CA', def: 'meshgate development CA' },
  { name: 'days', help: 'validity in days', def: '365' },
  { name: 'secret-name', help: 'name of the kubernetes.io/tls Secret in secret.yaml (a Gateway credentialName)', def: 'meshgate-credential' },
  { name: 'secret-namespace', help: "namespace of that Secret (the gateway's namespace)", def: 'istio-system' },
  { name: 'new-ca', help: 'make a new CA even if --out already holds one', boolean: true },
  { name: 'mesh', help: "make a mesh identity instead (for run --mesh-certs): root-cert.pem, cert-chain.pem, key.pem", boolean: true },
  { name: 'identity', help: 'with --mesh: the SPIFFE identity of the proxy', def: 'spiffe://cluster.local/ns/default/sa/default' },
  { name: 'ca-dir', help: 'with --mesh: directory holding the mesh CA (ca.crt, ca.key; made there if missing), shared by every proxy of the mesh; default --out', def: '' },
];

const IPTABLES_FLAGS: readonly FlagSpec[] = [
  { name: 'apply', help: 'install the rules (iptables-restore --noflush) instead of printing them', boolean: true },
  { name: 'cleanup', help: 'remove the rules and chains', boolean: true },
  { name: 'ipv6', help: 'also for IPv6 (ip6tables)', boolean: true },
  { name: 'proxy-port', help: 'outbound capture port', def: '15001' },
  { name: 'inbound-port', help: 'inbound capture port', def: '15006' },
  { name: 'proxy-uid', help: "the proxy's uid: its own traffic is never captured", def: '1337' },
  { name: 'proxy-gid', help: "the proxy's gid (default: the uid)", def: '' },
  { name: 'include-outbound-cidrs', help: "CIDRs to capture, comma-separated, or '*'", def: '*' },
  { name: 'exclude-outbound-cidrs', help: 'CIDRs never captured', def: '' },
  { name: 'exclude-outbound-ports', help: 'destination ports never captured', def: '' },
  { name: 'include-inbound-ports', help: "inbound ports to capture, '*' for all, empty for no inbound capture", def: '' },
  { name: 'exclude-inbound-ports', help: "with '*': inbound ports left alone", def: '15090,15021,15020' },
  { name: 'fallback-ports', help: 'per-port capture (no SO_ORIGINAL_DST addon): redirect only these ports, each to --fallback-base + index; the same list as `meshgate run --fallback-ports`', def: '' },
  { name: 'fallback-base', help: 'first listener port of the per-port capture', def: '15100' },
];

const KUBE_INJECT_FLAGS: readonly FlagSpec[] = [
  { name: 'filename', short: 'f', help: "Kubernetes YAML to inject, multi-document ('-' for stdin)", def: '' },
  { name: 'output', short: 'o', help: 'write the result to this file instead of stdout', def: '' },
  { name: 'image', env: 'MESHGATE_IMAGE', help: 'meshgate image for the sidecar and its init container', def: DEFAULT_IMAGE },
  { name: 'image-pull-policy', help: 'imagePullPolicy of both containers', def: 'IfNotPresent' },
  { name: 'native-sidecar', help: 'the proxy as an init container with restartPolicy Always (Kubernetes 1.29+); always so for Job and CronJob', boolean: true },
];

const VALIDATE_FLAGS: readonly FlagSpec[] = [
  { name: 'config', env: 'MESHGATE_CONFIG', help: 'YAML file or directory (recursive); repeatable; with --source kubernetes, applied over the cluster\'s objects (a file\'s object replaces the one of the same kind, namespace and name)', multiple: true },
  { name: 'source', env: 'MESHGATE_SOURCE', help: 'files (--config), or kubernetes: the config in the cluster\'s API, as `run --source kubernetes` reads it', def: 'files' },
  ...KUBE_FLAGS,
  NAMESPACE_FLAG,
  { name: 'timeout', env: 'MESHGATE_VALIDATE_TIMEOUT', help: 'kubernetes source: how long listing may take (Envoy duration: 30s, 1m)', def: '30s' },
];

/** Every command's --help: the flag column is as wide as its longest flag plus two spaces (30 at least). */
function usage(command: string, summary: string, flags: readonly FlagSpec[]): string {
  const rows: [string, string][] = flags.map((f) => {
    const def = f.def ? ` (default ${f.def})` : '';
    return [`  ${f.short ? `-${f.short}, ` : ''}--${f.name}${f.boolean ? '' : ' VALUE'}`, `${f.help}${def}${f.env ? `; env ${f.env}` : ''}`];
  });
  rows.push(['  --help', 'this text']);
  const width = Math.max(30, ...rows.map(([flag]) => flag.length + 2));
  const lines = [`usage: meshgate ${command} [flags]`, '', summary, '', 'flags:', ...rows.map(([flag, text]) => flag.padEnd(width) + text)];
  return lines.join('\n') + '\n';
}

const TOP_HELP = `usage: meshgate <command> [flags]

An Istio-compatible gateway: reads Gateway, VirtualService, DestinationRule, ServiceEntry and
WorkloadEntry YAML and serves them as istio-ingressgateway / istio-egressgateway would.

commands:
  run          run the gateway on a config (files or directories, or the Kubernetes API; watched and hot-reloaded)
  validate     check a config (files, or the cluster's) as run would load it; exit 1 on errors
  certs        make a development CA and server/client certificates, and a Secret for credentialName
  iptables     print, apply or remove the sidecar capture rules (as istio-iptables)
  kube-inject  add the meshgate sidecar to Kubernetes workload YAML (as istioctl kube-inject)
  help         this text

Each command takes --help.
`;

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(argv: string[], flags: readonly FlagSpec[]): Values {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean' } };
  for (const f of flags) options[f.name] = { type: f.boolean ? 'boolean' : 'string', multiple: f.multiple === true, ...(f.short ? { short: f.short } : {}) };
  const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  const out = { ...values } as Values;
  for (const f of flags) {
    if (out[f.name] !== undefined) continue;
    const env = f.env ? process.env[f.env] : undefined;
    if (env !== undefined && env !== '') out[f.name] = f.boolean ? env !== '0' && env !== 'false' : f.multiple ? env.split(',') : env;
    else if (f.def !== undefined) out[f.name] = f.def;
  }
  if (positionals.length > 0 && flags.some((f) => f.name === 'config')) {
    out['config'] = [...((out['config'] as string[] | undefined) ?? []), ...positionals];
  }
  return out;
}

export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(',')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`--labels: "${p}" is not key=value`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

export function parsePortMap(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const part of text.split(',')) {
    const p = part.trim();
    if (!p) continue;
    const m = /^(\d+)=(\d+)$/.exec(p);
    if (!m || Number(m[1]) > 65535 || Number(m[2]) > 65535) throw new Error(`--port-map: "${p}" is not PORT=LISTENPORT`);
    out.set(Number(m[1]), Number(m[2]));
  }
  return out;
}

function workerCount(v: unknown): number {
  const text = String(v ?? '1');
  const n = text === 'auto' ? os.availableParallelism() : Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new Error(`--workers: "${text}" is not a number of processes or 'auto'`);
  return n;
}

function duration(v: unknown, name: string): number {
  const text = String(v);
  const n = parseDuration(text);
  if (n === undefined) throw new Error(`--${name}: "${text}" is not a duration such as 1h, 90s or 500ms`);
  // A timer takes at most 2^31-1 ms (24.8 days); a longer one would fire at once.
  if (n > MAX_TIMER_MS) throw new Error(`--${name}: "${text}" is longer than ${MAX_TIMER_MS / 86_400_000 | 0} days`);
  return n;
}

function port(v: unknown, name: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name}: "${String(v)}" is not a port`);
  return n;
}

/** The files of `--mesh-certs DIR`; a missing one is a start-up error, not a silent plaintext mesh. */
function meshCertFiles(dir: string): MeshCertFiles {
  const files = {
    cert: path.join(dir, MESH_CERT_NAMES.cert), key: path.join(dir, MESH_CERT_NAMES.key), ca: path.join(dir, MESH_CERT_NAMES.ca),
  };
  for (const f of Object.values(files)) if (!fs.existsSync(f)) throw new Error(`--mesh-certs: ${f} does not exist (make it with meshgate certs --mesh --out ${dir})`);
  return files;
}

async function run(argv: string[]): Promise<number> {
  const v = parse(argv, RUN_FLAGS);
  if (v['help']) {
    process.stdout.write(usage('run', 'Run the gateway. SIGHUP reloads, SIGTERM drains and exits 0.', RUN_FLAGS));
    return 0;
  }
  tuneV8();
  const configPaths = (v['config'] as string[] | undefined) ?? [];
  const source = String(v['source']);
  if (source !== 'files' && source !== 'kubernetes') throw new Error(`--source: "${source}" is not files or kubernetes`);
  if (source === 'files' && configPaths.length === 0) throw new Error('run: --config PATH is required (or --source kubernetes)');
  const kubernetes = source === 'kubernetes'
    ? { connection: resolveConnection(String(v['kubeconfig'] ?? '') || undefined), watchNamespaces: list(v['watch-namespace']) }
    : undefined;
  const mode = String(v['mode']);
  if (mode !== 'gateway' && mode !== 'sidecar') throw new Error(`--mode: "${mode}" is not gateway or sidecar`);
  const sidecar = mode === 'sidecar';
  const workers = workerCount(v['workers']);
  const index = workerIndex();
  const helperNice = parseHelperNice(String(v['helper-nice']));
  if (workers > 1 && index === undefined) {
    const samples = v['with-sample-backends'] ? await startSampleBackends() : undefined;
    const log = pino({ level: String(v['log-level']), base: { component: 'meshgate', role: 'primary' } }, pino.destination(2));
    if (samples) for (const line of samples.describe()) log.info(line);
    await runPrimary({
      workers, metricsPort: port(v['metrics-port'], 'metrics-port'), agentPort: port(v['agent-port'], 'agent-port'),
      prometheusAnnotations: process.env[PROMETHEUS_ANNOTATIONS_ENV], drainMs: Number(v['drain-seconds']) * 1000, log,
      onStopped: async () => {
        await samples?.close();
        log.info('stopped');
        process.exit(0);
      },
    });
    return -1;
  }
  const samples = v['with-sample-backends'] && index === undefined ? await startSampleBackends() : undefined;
  const dns = String(v['dns-server'] ?? '');
  const dnsFamily = String(v['dns-family'] || 'v4') as DnsFamily;
  if (!DNS_FAMILIES.includes(dnsFamily)) throw new Error(`--dns-family: "${dnsFamily}" is not v4, v6 or both`);
  const app = new App({
    ...(index !== undefined ? {
      serve: { admin: index === 0, status: index === 0, metrics: false, agent: false },
      onLogLevel: shareLogLevel,
      onReadyChange: shareReadiness,
      logger: pino({ level: String(v['log-level']), base: { component: 'meshgate', worker: index } }, pino.destination(2)),
    } : {}),
    configPaths,
    ...(kubernetes ? { kubernetes } : {}),
    labels: parseLabels(String(v['labels'])),
    namespace: gatewayNamespace(String(v['namespace'] ?? ''), kubernetes && !String(v['kubeconfig'] ?? '') ? kubernetes.connection : undefined),
    portMap: parsePortMap(String(v['port-map'] ?? '')),
    bind: String(v['bind'] || (sidecar ? '::' : '0.0.0.0')),
    ...(sidecar ? { capturePort: port(v['capture-port'], 'capture-port') } : {}),
    ...(sidecar && v['inbound-port'] ? { inboundPort: port(v['inbound-port'], 'inbound-port') } : {}),
    ...(sidecar && v['fallback-ports'] ? { fallback: fallbackFlag(v) } : {}),
    adminPort: port(v['admin-port'], 'admin-port'),
    statusPort: port(v['status-port'], 'status-port'),
    metricsPort: port(v['metrics-port'], 'metrics-port'),
    agentPort: port(v['agent-port'], 'agent-port'),
    ...(process.env[PROMETHEUS_ANNOTATIONS_ENV] ? { prometheusAnnotations: process.env[PROMETHEUS_ANNOTATIONS_ENV] } : {}),
    // /quitquitquit ends the process as SIGTERM does (with --workers: every worker, through the primary).
    onQuit: () => process.kill(index !== undefined ? process.ppid : process.pid, 'SIGTERM'),
    logLevel: String(v['log-level']),
    serverName: String(v['server-name'] || (sidecar ? 'envoy' : 'istio-envoy')),
    dnsServers: dns ? dns.split(',') : undefined,
    dnsFamily,
    drainMs: Number(v['drain-seconds']) * 1000,
    tcpIdleTimeoutMs: duration(v['tcp-idle-timeout'], 'tcp-idle-timeout'),
    ...(v['mesh-certs'] ? { meshCerts: meshCertFiles(String(v['mesh-certs'])) } : {}),
    watch: !v['no-watch'],
    ...(v['no-http1-lane'] ? { limits: { http1Lane: false } } : {}),
    directReads: !v['no-direct-reads'],
    processMetrics: { gc: v['gc-metrics'] === true, loopDelay: v['loop-delay-metrics'] === true },
  });
  if (samples) for (const line of samples.describe()) app.log.info(line);
  lowerHelperThreads(helperNice, (o) => app.log.debug({ lowered: o.lowered, failed: o.failed, nice: helperNice }, 'helper threads reniced'));
  if (sidecar && !v['fallback-ports'] && !captureAvailable()) {
    app.log.error('sidecar mode: the SO_ORIGINAL_DST addon is not built, so captured connections cannot be routed; rebuild it (npm install with python3, make, g++) or use per-port capture (--fallback-ports, with the same list for meshgate iptables)');
  }
  if (index !== undefined) {
    offerMetrics(app.metrics.registry);
    followLogLevel((level) => { app.log.level = level; });
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info(`${signal}: draining (deadline ${v['drain-seconds']} s)`);
    void app.stop().then(async () => {
      await samples?.close();
      app.log.info('stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('uncaughtException', (err) => app.log.error({ err }, 'uncaught exception (kept running)'));
  process.on('unhandledRejection', (err) => app.log.error({ err }, 'unhandled rejection (kept running)'));
  // Signals are handled before the first config: the Kubernetes source may wait long for its first
  // sync. A SIGHUP meanwhile (whose default action would end the process) reloads once started.
  let started = false;
  let hupWhileStarting = false;
  process.on('SIGHUP', () => {
    if (!started) hupWhileStarting = true;
    else void app.reload('SIGHUP');
  });
  const first = await app.start();
  started = true;
  if (first.result === 'rejected') app.log.warn('the first config was rejected: serving nothing until a valid config is loaded');
  if (hupWhileStarting) void app.reload('SIGHUP');
  return -1; // keep running
}

async function validate(argv: string[]): Promise<number> {
  const v = parse(argv, VALIDATE_FLAGS);
  if (v['help']) {
    process.stdout.write(usage('validate', 'Check a config as run would load and compile it: files (--config), or the cluster\'s (--source kubernetes) with --config files applied over it. Prints file:line:col: Kind namespace/name: field.path: message per problem; exit 1 on errors, 0 when clean or warnings only, 2 when the config cannot be read.', VALIDATE_FLAGS));
    return 0;
  }
  const paths = (v['config'] as string[] | undefined) ?? [];
  const source = String(v['source']);
  if (source !== 'files' && source !== 'kubernetes') throw new Error(`--source: "${source}" is not files or kubernetes`);
  if (source === 'files') {
    if (paths.length === 0) throw new Error('validate: --config PATH is required (or --source kubernetes)');
    const { output, exitCode } = await validatePaths(paths, String(v['namespace'] || 'istio-system'));
    process.stdout.write(output);
    return exitCode;
  }
  // The cluster's config, with the local files applied over it: "what would the gateways make of
  // the cluster after `kubectl apply -f` of these?"
  const kubeconfig = String(v['kubeconfig'] ?? '') || undefined;
  const connection = resolveConnection(kubeconfig);
  const namespace = gatewayNamespace(String(v['namespace'] ?? ''), kubeconfig ? undefined : connection);
  const files = paths.length > 0 ? await loadPaths(paths) : { resources: [], issues: [], infos: [], skipped: [], files: [] };
  const log = pino({ level: 'warn', base: { component: 'meshgate' } }, pino.destination(2));
  const cluster = await listClusterOnce(
    { connection, watchNamespaces: list(v['watch-namespace']), namespace, log },
    duration(v['timeout'], 'timeout'), secretsNamedBy(files.resources),
  );
  const loaded = checkForValidate(overlay(cluster, files), namespace, true);
  const where = `in the cluster (${connection.server})${files.files.length > 0 ? ` and ${plural(files.files.length, 'file')}` : ''}`;
  const { output, exitCode } = validationReport(loaded, where);
  process.stdout.write(output);
  return exitCode;
}

/** The Secrets the Gateways and DestinationRules among these resources name (credentialName). */
function secretsNamedBy(resources: readonly Resource[]): Set<string> {
  const of = (kind: string) => resources.filter((r) => r.kind === kind).map((r): KubeObject => ({ spec: r.spec }));
  return referencedSecrets(of('Gateway'), of('DestinationRule'));
}

async function certs(argv: string[]): Promise<number> {
  const v = parse(argv, CERTS_FLAGS);
  if (v['help']) {
    process.stdout.write(usage('certs', 'Make a development CA (kept and reused in --out) and certificates signed by it, plus secret.yaml to put in the config as a Gateway credentialName. For development and tests only.', CERTS_FLAGS));
    return 0;
  }
  const out = String(v['out'] ?? '');
  const names = String(v['server'] ?? '').split(',').map((n) => n.trim()).filter(Boolean);
  if (!out) throw new Error('certs: --out DIR is required');
  const days = Number(v['days']);
  if (!Number.isInteger(days) || days < 1) throw new Error(`certs: --days "${String(v['days'])}" is not a positive number of days`);
  const { writeDevCertificates, writeMeshCertificates } = await import('./tls/dev-certs'); // @peculiar/x509 only for this command
  let written: string[];
  if (v['mesh']) {
    const identity = String(v['identity']);
    if (!/^spiffe:\/\/[^/]+\/.+/.test(identity)) throw new Error(`certs: --identity "${identity}" is not a spiffe://TRUST-DOMAIN/PATH URI`);
    written = await writeMeshCertificates({
      out, caDir: String(v['ca-dir'] || out), identity, dnsNames: names, caName: String(v['ca-name']), days, newCa: v['new-ca'] === true,
    });
  } else {
    if (names.length === 0) throw new Error('certs: --server NAME[,NAME...] is required');
    written = await writeDevCertificates({
      out, serverNames: names, clientName: String(v['client'] ?? '') || undefined, caName: String(v['ca-name']), days,
      secretName: String(v['secret-name']), secretNamespace: String(v['secret-namespace']), newCa: v['new-ca'] === true,
    });
  }
  process.stdout.write(written.map((f) => `wrote ${f}`).join('\n') + '\n');
  return 0;
}

/** --fallback-ports and --fallback-base, as run and iptables both read them. */
function fallbackFlag(v: Record<string, unknown>): FallbackPort[] {
  const f = fallbackPorts(ports(v['fallback-ports'], 'fallback-ports'), port(v['fallback-base'], 'fallback-base'));
  if (f instanceof Error) throw new Error(`--fallback-ports: ${f.message}`);
  return f;
}

function list(v: unknown): string[] {
  return String(v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
}

function ports(v: unknown, name: string): number[] {
  return list(v).map((x) => port(x, name));
}

async function iptables(argv: string[]): Promise<number> {
  const v = parse(argv, IPTABLES_FLAGS);
  if (v['help']) {
    process.stdout.write(usage('iptables', 'The nat rules of a sidecar (REDIRECT mode, as istio-iptables installs them): outbound TCP to the capture port except the proxy\'s own uid/gid and loopback. Prints them; --apply installs, --cleanup removes. Needs root (NET_ADMIN) to apply.', IPTABLES_FLAGS));
    return 0;
  }
  const { DEFAULT_CAPTURE, applyRules, natRules, removeRules } = await import('./sidecar/iptables');
  const uid = Number(v['proxy-uid']);
  const gid = v['proxy-gid'] ? Number(v['proxy-gid']) : uid;
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid < 0 || gid < 0) throw new Error('iptables: --proxy-uid/--proxy-gid must be numbers');
  const include = String(v['include-outbound-cidrs']);
  const inbound = String(v['include-inbound-ports']);
  const rules = {
    ...DEFAULT_CAPTURE,
    proxyPort: port(v['proxy-port'], 'proxy-port'),
    inboundPort: port(v['inbound-port'], 'inbound-port'),
    uid, gid,
    includeOutboundCidrs: include === '*' ? '*' as const : list(include),
    excludeOutboundCidrs: list(v['exclude-outbound-cidrs']),
    excludeOutboundPorts: ports(v['exclude-outbound-ports'], 'exclude-outbound-ports'),
    includeInboundPorts: inbound === '*' ? '*' as const : inbound === '' ? '' as const : ports(inbound, 'include-inbound-ports'),
    excludeInboundPorts: ports(v['exclude-inbound-ports'], 'exclude-inbound-ports'),
    ...(v['fallback-ports'] ? { fallback: fallbackFlag(v) } : {}),
  };
  const ipv6 = v['ipv6'] === true;
  if (v['cleanup']) {
    removeRules(ipv6);
    return 0;
  }
  if (!v['apply']) {
    process.stdout.write(natRules(rules, 4) + (ipv6 ? natRules(rules, 6) : ''));
    return 0;
  }
  const r = applyRules(rules, ipv6);
  if (!r.ok) process.stderr.write(`meshgate iptables: ${r.output.trim()}\n`);
  return r.ok ? 0 : 1;
}

async function kubeInject(argv: string[]): Promise<number> {
  const v = parse(argv, KUBE_INJECT_FLAGS);
  if (v['help']) {
    process.stdout.write(usage('kube-inject', "Print Kubernetes YAML with the meshgate sidecar added to every pod template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob): a container istio-proxy (meshgate run --mode sidecar --source kubernetes, uid 1337) and an init container istio-init (meshgate iptables --apply). Other documents pass through unchanged; already injected templates and those with sidecar.istio.io/inject: \"false\" are left alone.", KUBE_INJECT_FLAGS));
    return 0;
  }
  const file = String(v['filename'] ?? '');
  if (!file) throw new Error("kube-inject: -f FILE is required ('-' for stdin)");
  const r = inject(fs.readFileSync(file === '-' ? 0 : file, 'utf8'), {
    image: String(v['image']), imagePullPolicy: String(v['image-pull-policy']), nativeSidecar: v['native-sidecar'] === true,
  });
  for (const o of r.objects) if (!o.injected) process.stderr.write(`meshgate kube-inject: ${o.object}: not injected (${o.reason})\n`);
  for (const w of r.warnings) process.stderr.write(`meshgate kube-inject: warning: ${w}\n`);
  if (v['output']) fs.writeFileSync(String(v['output']), r.text);
  else process.stdout.write(r.text);
  return 0;
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  let code: number;
  try {
    switch (command) {
      case 'run': code = await run(rest); break;
      case 'validate': code = await validate(rest); break;
      case 'certs': code = await certs(rest); break;
      case 'iptables': code = await iptables(rest); break;
      case 'kube-inject': code = await kubeInject(rest); break;
      case undefined: case 'help': case '--help': case '-h':
        process.stdout.write(TOP_HELP);
        code = 0;
        break;
      default:
        process.stderr.write(`meshgate: unknown command "${command}"\n\n${TOP_HELP}`);
        code = 2;
    }
  } catch (err) {
    process.stderr.write(`meshgate: ${asError(err).message}\n`);
    code = 2;
  }
  if (code >= 0) process.exitCode = code;
}

if (require.main === module) void main(process.argv.slice(2));
