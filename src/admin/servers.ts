// Admin (127.0.0.1:15000, Envoy-style), status (:15021 /healthz/ready) and metrics
// (:15090 /stats/prometheus) servers. Read-only views over the store, registry and telemetry.

import http from 'node:http';
import v8 from 'node:v8';
import type { AddressInfo } from 'node:net';
import { RE2JS } from 're2js';
import type { ConfigStore } from '../config/store';
import type { Registry } from '../registry/registry';
import type { Metrics } from '../telemetry/metrics';
import type { ListenerManager } from '../gateway/listener-manager';

export interface AdminState {
  readonly store: ConfigStore;
  readonly registry: Registry;
  readonly metrics: Metrics;
  readonly listeners: ListenerManager;
  /** True once the first config is applied and its listeners are bound. */
  ready(): boolean;
  /** Counters of the gateway itself (reloads, ...), shown in /stats. */
  serverStats(): Record<string, number>;
  /** Extra sections for the config dump (resource origins, last reload outcome). */
  dumpExtras(): Record<string, unknown>;
  /** Envoy's /logging: this process's loggers and their levels. */
  readonly logging: LogLevels;
  /** Envoy's /healthcheck/fail and /healthcheck/ok: fail (or pass again) the readiness checks, keep serving. */
  failHealthChecks(fail: boolean): void;
  /** Envoy's /quitquitquit: drain and exit. Absent where the process is not the gateway's own (in-process tests). */
  readonly quit?: (() => void) | undefined;
}

/** Loggers by name, with Envoy's level names (trace debug info warning error critical off). */
export interface LogLevels {
  levels(): Readonly<Record<string, EnvoyLevel>>;
  /** Set one logger, or every logger when `name` is undefined. */
  set(name: string | undefined, level: EnvoyLevel): void;
}

export const ENVOY_LEVELS = ['trace', 'debug', 'info', 'warning', 'error', 'critical', 'off'] as const;
export type EnvoyLevel = (typeof ENVOY_LEVELS)[number];
const PINO_OF: Record<EnvoyLevel, string> = { trace: 'trace', debug: 'debug', info: 'info', warning: 'warn', error: 'error', critical: 'fatal', off: 'silent' };

/** pino's level name for an Envoy level (warning -> warn, critical -> fatal, off -> silent). */
export function pinoLevel(level: EnvoyLevel): string {
  return PINO_OF[level];
}

/** Envoy's level name for a pino level. */
export function envoyLevel(pino: string): EnvoyLevel {
  return (Object.keys(PINO_OF) as EnvoyLevel[]).find((k) => PINO_OF[k] === pino) ?? 'info';
}

function isEnvoyLevel(v: string): v is EnvoyLevel {
  return (ENVOY_LEVELS as readonly string[]).includes(v);
}

const LOGGING_USAGE = [
  'usage: /logging?<name>=<level> (change single level)',
  '/logging?paths=name1:level1,name2:level2,... (change multiple levels)',
  '/logging?level=<level> (change all levels)',
  `levels: ${ENVOY_LEVELS.join(' ')}`,
  '',
].join('\n');

/**
 * Envoy's POST /logging: no query lists the loggers; `level=L` sets all, `NAME=L` one,
 * `paths=NAME:L,...` several. A name this process does not have (Envoy's `http`, `router`, ...) or a
 * level Envoy does not know changes nothing and answers 404 with the usage, as Envoy does.
 */
export function applyLogging(logging: LogLevels, query: URLSearchParams): { status: number; body: string } {
  const list = () => `active loggers:\n${Object.entries(logging.levels()).sort(([a], [b]) => a.localeCompare(b)).map(([n, l]) => `  ${n}: ${l}\n`).join('')}`;
  const entries = [...query.entries()].filter(([, v]) => v !== ''); // Envoy ignores empty values
  if (entries.length === 0) return { status: 200, body: list() };
  const changes: [string | undefined, string][] = [];
  if (entries.length !== 1) return { status: 404, body: LOGGING_USAGE + list() };
  const [key, value] = entries[0]!;
  if (key === 'level') changes.push([undefined, value]);
  else if (key === 'paths') for (const part of value.split(',')) {
    const at = part.lastIndexOf(':');
    changes.push([part.slice(0, at < 0 ? part.length : at), at < 0 ? '' : part.slice(at + 1)]);
  }
  else changes.push([key, value]);
  const known = logging.levels();
  const ok = changes.every(([name, level]) => isEnvoyLevel(level) && (name === undefined || Object.hasOwn(known, name)));
  if (!ok) return { status: 404, body: LOGGING_USAGE + list() };
  for (const [name, level] of changes) logging.set(name, level as EnvoyLevel);
  return { status: 200, body: list() };
}

/** JSON for the config dump: Maps become objects, precompiled regexes are dropped, private keys redacted (as Envoy does). */
export function dumpJson(value: unknown): string {
  return JSON.stringify(value, function (this: unknown, key, v) {
    if (key === 're') return undefined;
    if (key === 'key' && typeof v === 'string' && (this as { kind?: string }).kind === 'secret') return '[redacted]';
    if (v instanceof Map) return Object.fromEntries(v);
    return v;
  }, 2);
}

export function configDump(state: AdminState): unknown {
  const s = state.store.current;
  return {
    version: s.version,
    createdAt: s.createdAt,
    fingerprint: s.fingerprint,
    mesh: s.mesh,
    listeners: [...s.listeners.values()],
    clusters: [...s.clusters.values()],
    services: [...s.services.values()],
    ...state.dumpExtras(),
  };
}

/** Envoy's /clusters text: `cluster::ip:port::stat::value` per endpoint. */
export function clustersText(state: AdminState): string {
  const lines: string[] = [];
  for (const c of state.registry.all()) {
    lines.push(`${c.name}::default_priority::max_connections::${c.def.policy.connectionPool?.tcp?.maxConnections ?? 4294967295}`);
    lines.push(`${c.name}::added_via_api::true`);
    for (const e of c.endpoints) {
      const cx = state.registry.connectionStats(e.key);
      const p = `${c.name}::${e.hostPort}`;
      lines.push(`${p}::cx_active::${cx.cxActive}`, `${p}::cx_connect_fail::${cx.cxConnectFail}`, `${p}::cx_total::${cx.cxTotal}`,
        `${p}::rq_active::${e.active}`, `${p}::rq_error::${e.rqError}`, `${p}::rq_total::${e.rqTotal}`,
        `${p}::health_flags::${c.isEjected(e) ? '/failed_outlier_check' : 'healthy'}`, `${p}::weight::${e.weight}`);
    }
  }
  return lines.join('\n') + '\n';
}

export function clustersJson(state: AdminState): unknown {
  return {
    cluster_statuses: state.registry.all().map((c) => ({
      name: c.name,
      lb_policy: c.def.lb,
      destination_rule: c.def.destinationRule,
      host_statuses: c.endpoints.map((e) => ({
        address: e.hostPort, labels: e.labels, weight: e.weight, health: c.isEjected(e) ? 'FAILED_OUTLIER_CHECK' : 'HEALTHY',
        ejections: e.ejections, ejected_until: e.ejectedUntil ? new Date(e.ejectedUntil).toISOString() : undefined,
        stats: { rq_active: e.active, rq_total: e.rqTotal, ...state.registry.connectionStats(e.key) },
      })),
    })),
  };
}

/** One stat of `/stats`: its Envoy name, and for a cluster's stats the cluster and the stat's own name. */
export interface Stat {
  readonly name: string;
  readonly value: number;
  readonly cluster?: { readonly name: string; readonly stat: string };
}

/** Every stat `/stats` shows, sorted by name (gauges computed now). */
export function statEntries(state: AdminState): Stat[] {
  const out: Stat[] = [];
  for (const c of state.registry.all()) {
    let active = 0;
    for (const e of c.endpoints) active += e.active;
    c.stats.set('upstream_rq_active', active);
    for (const [k, v] of c.breakerGauges()) c.stats.set(k, v);
    for (const [k, v] of c.stats.entries()) out.push({ name: `cluster.${c.name}.${k}`, value: v, cluster: { name: c.name, stat: k } });
  }
  for (const [k, v] of Object.entries(state.serverStats())) out.push({ name: k, value: v });
  for (const [k, v] of Object.entries(state.metrics.envoyServerStats())) out.push({ name: k, value: v });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function statsText(state: AdminState, filter?: StatFilter): string {
  return statEntries(state).filter((s) => !filter || filter(s.name)).map((s) => `${s.name}: ${s.value}`).join('\n') + '\n';
}

/** Envoy's `/stats?format=json`: `{"stats": [{"name", "value"}]}`. */
export function statsJson(state: AdminState, filter?: StatFilter): { stats: { name: string; value: number }[] } {
  return { stats: statEntries(state).filter((s) => !filter || filter(s.name)).map((s) => ({ name: s.name, value: s.value })) };
}

/** Cluster stats Envoy keeps as gauges (the rest are counters). */
function isGaugeStat(stat: string): boolean {
  return stat.startsWith('circuit_breakers.') || stat.endsWith('_active') || stat.startsWith('membership_');
}

const promLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/**
 * The clusters' stats in Envoy's Prometheus form (admin `/stats/prometheus`): `envoy_cluster_<stat>`
 * with the cluster in `cluster_name`, and Envoy's tag extraction for status codes
 * (`upstream_rq_200` -> `envoy_cluster_upstream_rq{response_code="200"}`, `upstream_rq_2xx` ->
 * `{response_code_class="2xx"}`). Server, cluster-manager and listener-manager gauges come from the
 * metrics registry (as on :15090), not from here.
 */
export function clusterStatsPrometheus(stats: readonly Stat[]): string {
  const families = new Map<string, { type: string; lines: string[] }>();
  for (const s of stats) {
    if (!s.cluster) continue;
    let stat = s.cluster.stat;
    let tag = '';
    const code = /^(upstream_rq)_(\d{3})$/.exec(stat);
    const cls = /^(upstream_rq)_([1-5]xx)$/.exec(stat);
    if (code) [stat, tag] = [code[1]!, `response_code="${code[2]}",`];
    else if (cls) [stat, tag] = [cls[1]!, `response_code_class="${cls[2]}",`];
    const name = `envoy_cluster_${stat.replace(/[^a-zA-Z0-9_]/g, '_')}`;
    let family = families.get(name);
    if (!family) families.set(name, family = { type: isGaugeStat(s.cluster.stat) ? 'gauge' : 'counter', lines: [] });
    family.lines.push(`${name}{${tag}cluster_name="${promLabel(s.cluster.name)}"} ${s.value}`);
  }
  let out = '';
  for (const [name, f] of [...families].sort(([a], [b]) => (a < b ? -1 : 1))) out += `# TYPE ${name} ${f.type}\n${f.lines.join('\n')}\n`;
  return out;
}

/** Admin `/stats/prometheus`: the metrics registry (istio_*, envoy_server_*, ...) and every cluster's stats. */
async function adminPrometheus(state: AdminState): Promise<string> {
  const registry = await state.metrics.render();
  return `${registry}${registry.endsWith('\n') ? '' : '\n'}${clusterStatsPrometheus(statEntries(state))}`;
}

/** A plain answer with its length, as Envoy's admin writes them. */
export function send(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=UTF-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), server: 'envoy' });
  res.end(body);
}

/** Does a stat's name pass `/stats?filter=`? */
export type StatFilter = (name: string) => boolean;

/**
 * Envoy's `/stats?filter=`: an RE2 pattern searched for in each stat's name (not its value), so
 * `^server\.live$` names one stat. RE2 runs in linear time: no pattern can stall the gateway, as a
 * backtracking JavaScript RegExp such as `(.|.)*!` would. An invalid pattern matches nothing.
 */
export function statFilter(text: string | null): StatFilter | undefined {
  if (!text) return undefined;
  try {
    const re = RE2JS.compile(text);
    return (name) => re.matcher(name).find();
  } catch {
    return () => false;
  }
}

/**
 * Envoy's /memory (admin.v3.Memory, uint64 fields as JSON strings) from V8's and the process's own
 * figures: allocated is what the JS heap uses plus memory outside it (buffers), heap_size the JS heap
 * reserved, pageheap_free the reserved part not in use, total_physical_bytes the resident set. V8's
 * malloc figures (compilers, parsers) follow under `v8`.
 */
export function memoryJson(): Record<string, string | Record<string, string>> {
  const m = process.memoryUsage();
  const h = v8.getHeapStatistics();
  return {
    allocated: String(m.heapUsed + m.external),
    heap_size: String(m.heapTotal),
    pageheap_unmapped: '0',
    pageheap_free: String(Math.max(0, m.heapTotal - m.heapUsed)),
    total_thread_cache: '0',
    total_physical_bytes: String(m.rss),
    v8: {
      malloced_memory: String(h.malloced_memory),
      peak_malloced_memory: String(h.peak_malloced_memory),
      heap_size_limit: String(h.heap_size_limit),
    },
  };
}

/** Envoy's server state: LIVE, DRAINING (stopping, or /healthcheck/fail), PRE_INITIALIZING. */
function serverState(state: AdminState): string {
  return state.metrics.serverState?.().state ?? (state.ready() ? 'LIVE' : 'PRE_INITIALIZING');
}

/** Admin paths that change the server: POST only, as Envoy's. */
const MUTATING = new Set(['/logging', '/healthcheck/fail', '/healthcheck/ok', '/quitquitquit']);
const ADMIN_PATHS = ['/config_dump', '/clusters', '/stats', '/stats/prometheus', '/listeners', '/memory', '/ready', '/server_info', ...MUTATING];

export function adminHandler(state: AdminState): http.RequestListener {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const json = url.searchParams.get('format') === 'json';
    const prometheus = () => void adminPrometheus(state).then((t) => send(res, 200, t, state.metrics.contentType), () => send(res, 500, 'metrics failed'));
    if (MUTATING.has(url.pathname) && req.method !== 'POST') return send(res, 405, `Method ${req.method ?? ''} not allowed, POST required.`);
    switch (url.pathname) {
      case '/config_dump': return send(res, 200, dumpJson(configDump(state)), 'application/json');
      case '/clusters': return json ? send(res, 200, dumpJson(clustersJson(state)), 'application/json') : send(res, 200, clustersText(state));
      case '/stats': {
        const filter = statFilter(url.searchParams.get('filter'));
        if (json) return send(res, 200, JSON.stringify(statsJson(state, filter), null, 2), 'application/json');
        if (url.searchParams.get('format') === 'prometheus') return prometheus();
        return send(res, 200, statsText(state, filter));
      }
      case '/stats/prometheus': return prometheus();
      case '/listeners': {
        const ls = state.listeners.listeners();
        if (json) return send(res, 200, dumpJson(ls), 'application/json');
        return send(res, 200, ls.map((l) => `${l.name}::${l.bind}:${l.port}`).join('\n') + '\n');
      }
      case '/ready': {
        const st = serverState(state);
        return send(res, st === 'LIVE' ? 200 : 503, `${st}\n`);
      }
      case '/memory': return send(res, 200, dumpJson(memoryJson()), 'application/json');
      case '/server_info': return send(res, 200, dumpJson({ state: serverState(state), version: state.store.current.version }), 'application/json');
      case '/logging': {
        const r = applyLogging(state.logging, url.searchParams);
        return send(res, r.status, r.body);
      }
      case '/healthcheck/fail':
      case '/healthcheck/ok':
        state.failHealthChecks(url.pathname === '/healthcheck/fail');
        return send(res, 200, 'OK\n');
      case '/quitquitquit': {
        const quit = state.quit;
        if (!quit) return send(res, 501, 'this process is not ended from its admin port\n');
        res.once('finish', quit);
        return send(res, 200, 'OK\n');
      }
      case '/': return send(res, 200, ADMIN_PATHS.join('\n') + '\n');
      default: return send(res, 404, 'not found\n');
    }
  };
}

export function statusHandler(state: AdminState): http.RequestListener {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz/ready') return state.ready() ? send(res, 200, '') : send(res, 503, 'not ready: config not applied or listeners not bound\n');
    if (path === '/healthz/live' || path === '/app-health/live') return send(res, 200, '');
    return send(res, 404, 'not found\n');
  };
}

/** What a Prometheus endpoint serves: the rendered text and its content type. */
export type MetricsSource = () => Promise<{ readonly text: string; readonly contentType: string }>;

/** The metrics port's handler (`/stats/prometheus`, `/metrics`): this process's registry, or with --workers every worker's. */
export function metricsHandler(source: MetricsSource): http.RequestListener {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/stats/prometheus' && path !== '/metrics') return send(res, 404, 'not found\n');
    source().then(({ text, contentType }) => send(res, 200, text, contentType), (err: Error) => send(res, 500, `metrics failed: ${err.message}\n`));
  };
}

/** Listen and resolve the bound port (port 0 picks a free one). */
export function listenHttp(handler: http.RequestListener, port: number, host: string): Promise<{ server: http.Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = http.createServer(handler);
    server.on('connection', (s) => s.on('error', () => {}));
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      server.on('error', () => {});
      resolve({ server, port: (server.address() as AddressInfo).port });
    });
  });
}
