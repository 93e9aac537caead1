// `meshgate run --workers N`: N gateway processes (node:cluster) share every listen port, so a
// machine's cores all proxy. The primary only supervises: it forks the workers, replaces one that
// dies, serves the Prometheus endpoint with the workers' metrics added up (counts of the workers
// that died included, see worker-metrics.ts), and passes SIGHUP and SIGTERM on. Worker 0 also
// serves the admin and status ports (its view of config and clusters is the same as every worker's;
// its counters, in /stats and /stats/prometheus there, are its own share of the traffic).
//
// Connections are spread by the kernel (SCHED_NONE: each worker accepts from the shared socket),
// not handed out by the primary, which would make the primary the bottleneck for new connections.

import cluster, { type Worker } from 'node:cluster';
import type http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { listenHttp, metricsHandler, type MetricsSource } from './admin/servers';
import { agentHandler, mergedApplication } from './admin/agent';
import { answerMetrics, WorkerMetrics } from './worker-metrics';

export const WORKER_INDEX_ENV = 'MESHGATE_WORKER_INDEX';
/** Where the application's own metrics are, as Istio's injector writes it (the agent port merges them). */
export const PROMETHEUS_ANNOTATIONS_ENV = 'ISTIO_PROMETHEUS_ANNOTATIONS';
/** A log level change (admin /logging on worker 0), passed through the primary to every worker. */
const LOG_LEVEL = 'meshgate:log-level';
/** A worker's readiness changed (its first config bound, /healthcheck/fail|ok, draining). */
const READY = 'meshgate:ready';

interface LogLevelMessage {
  readonly type: typeof LOG_LEVEL;
  readonly level: string;
}

interface ReadyMessage {
  readonly type: typeof READY;
  readonly ready: boolean;
}

function isLogLevelMessage(m: unknown): m is LogLevelMessage {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === LOG_LEVEL && typeof (m as { level?: unknown }).level === 'string';
}

function isReadyMessage(m: unknown): m is ReadyMessage {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === READY && typeof (m as { ready?: unknown }).ready === 'boolean';
}

function tell(m: LogLevelMessage | ReadyMessage): void {
  if (process.connected) process.send?.(m, undefined, {}, () => {});
}

/** In a worker: tell the primary that this worker's log level changed (it tells the others). */
export function shareLogLevel(level: string): void {
  tell({ type: LOG_LEVEL, level });
}

/** In a worker: tell the primary whether this worker is ready. */
export function shareReadiness(ready: boolean): void {
  tell({ type: READY, ready });
}

/** In a worker: apply log level changes the primary passes on. */
export function followLogLevel(apply: (level: string) => void): void {
  process.on('message', (m: unknown) => { if (isLogLevelMessage(m)) apply(m.level); });
}

/** Set before the first fork: let the kernel spread connections over the workers. */
export function prepareCluster(): void {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
}

export interface PrimaryOptions {
  readonly workers: number;
  readonly metricsPort: number;
  /** The agent port (merged metrics, /quitquitquit), served here with every worker's metrics. */
  readonly agentPort?: number;
  /** ISTIO_PROMETHEUS_ANNOTATIONS: the application's metrics to merge on the agent port. */
  readonly prometheusAnnotations?: string | undefined;
  readonly drainMs: number;
  readonly log: Logger;
  /** Called once every worker has exited after SIGTERM. */
  readonly onStopped: () => Promise<void>;
}

/** A worker that lived this long was not crash-looping: its replacement starts after the shortest wait. */
const STABLE_WORKER_MS = 60_000;

/** Wait before replacing a worker after `quickDeaths` quick deaths in a row: 1 s, 2 s, 4 s ... 30 s. */
export function restartDelayMs(quickDeaths: number): number {
  return Math.min(30_000, 1000 * 2 ** quickDeaths);
}

/** Run as the supervising primary; resolves once the metrics server listens and workers are forked. */
export async function runPrimary(o: PrimaryOptions): Promise<void> {
  prepareCluster();
  const byIndex = new Map<number, Worker>();
  /** Quick deaths in a row per worker index: each doubles the wait before the next start. */
  const failures = new Map<number, number>();
  let stopping = false;
  const workerMetrics = new WorkerMetrics();
  /** Workers that said they are ready (the agent port's /healthz/ready). */
  const readyWorkers = new Set<Worker>();
  /** The log level each worker was last told (or started with), so a worker that missed a change catches up. */
  const levels = new Map<Worker, string>();
  const startLevel = o.log.level;
  const tellLevel = (w: Worker) => {
    if (levels.get(w) === o.log.level || !w.isConnected()) return;
    levels.set(w, o.log.level);
    w.send({ type: LOG_LEVEL, level: o.log.level } satisfies LogLevelMessage, undefined, () => {});
  };
  const fork = (index: number) => {
    const w = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
    const bornAt = Date.now();
    byIndex.set(index, w);
    workerMetrics.add(index, w);
    levels.set(w, startLevel);
    w.on('message', (m: unknown) => {
      if (isReadyMessage(m)) {
        if (m.ready) readyWorkers.add(w);
        else readyWorkers.delete(w);
      } else if (isLogLevelMessage(m)) {
        o.log.level = m.level;
        levels.set(w, m.level);
        for (const other of byIndex.values()) if (workerMetrics.started(other)) tellLevel(other);
      }
      // A worker listens once it has spoken (its first metrics answer): one started, or replaced,
      // after a level change learns it now.
      tellLevel(w);
    });
    w.on('exit', (code, signal) => {
      readyWorkers.delete(w);
      levels.delete(w);
      if (byIndex.get(index) === w) byIndex.delete(index);
      workerMetrics.retire(w);
      if (stopping) return;
      const n = Date.now() - bornAt >= STABLE_WORKER_MS ? 0 : failures.get(index) ?? 0;
      failures.set(index, n + 1);
      const waitMs = restartDelayMs(n);
      o.log.error({ worker: index, pid: w.process.pid, code, signal }, `worker exited; starting a new one in ${waitMs / 1000} s`);
      setTimeout(() => { if (!stopping) fork(index); }, waitMs).unref();
    });
  };
  const servers: http.Server[] = [];
  // The signals are handled before anything is awaited: a SIGHUP while the ports are still being
  // bound would otherwise end the primary (the signal's default action). A worker still starting
  // reads the config as it is anyway, and has no SIGHUP handler yet (the default action would end
  // it): it is left alone.
  process.on('SIGHUP', () => { for (const w of byIndex.values()) if (workerMetrics.started(w)) w.process.kill('SIGHUP'); });
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    o.log.info(`${signal}: draining ${byIndex.size} workers`);
    for (const w of byIndex.values()) w.process.kill('SIGTERM');
    const deadline = setTimeout(() => { for (const w of byIndex.values()) w.process.kill('SIGKILL'); }, o.drainMs + 5000);
    const check = setInterval(() => {
      if (byIndex.size > 0) return;
      clearInterval(check);
      clearTimeout(deadline);
      for (const s of servers) s.close();
      void o.onStopped();
    }, 100);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  for (let i = 0; i < o.workers; i++) fork(i);

  workerMetrics.startSnapshots();
  // Every worker's metrics, added up: the metrics port, and the agent port's own part.
  const all: MetricsSource = () => workerMetrics.refresh().then(() => workerMetrics.render()).then((text) => ({ text, contentType: workerMetrics.contentType }));
  const metrics = await listenHttp(metricsHandler(all), o.metricsPort, '0.0.0.0');
  servers.push(metrics.server);
  let agentPort = 0;
  if (o.agentPort !== undefined) {
    const agent = await listenHttp(agentHandler({
      render: all,
      // Ready while every worker that should run is ready (its config bound, its health checks not failed).
      ready: () => !stopping && byIndex.size === o.workers && [...byIndex.values()].every((w) => readyWorkers.has(w)),
      quit: () => process.kill(process.pid, 'SIGTERM'),
      app: mergedApplication(o.prometheusAnnotations, o.agentPort, o.log),
      log: o.log,
    }), o.agentPort, '0.0.0.0');
    servers.push(agent.server);
    agentPort = agent.port;
  }
  o.log.info({ workers: o.workers, metrics: metrics.port, agent: agentPort }, `primary: ${o.workers} workers, metrics of all workers on :${metrics.port}${o.agentPort !== undefined ? `, agent (merged metrics) on :${agentPort}` : ''}`);
}

/** In a worker: its index (0 serves admin and status), and its metrics offered to the primary. */
export function workerIndex(): number | undefined {
  if (!cluster.isWorker) return undefined;
  return Number(process.env[WORKER_INDEX_ENV] ?? '0');
}

export function offerMetrics(registry: Registry): void {
  answerMetrics(registry);
}
