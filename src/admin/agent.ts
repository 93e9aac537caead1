// The agent port (:15020), as Istio's pilot-agent serves it next to Envoy:
// - `/stats/prometheus` (and `/metrics`): Istio's metrics merging. The injector points the pod's prometheus.io
//   annotations here and keeps the application's own in ISTIO_PROMETHEUS_ANNOTATIONS; one scrape
//   returns the agent's scrape counters, the proxy's istio_* and envoy_* metrics, then the
//   application's metrics (last: an OpenMetrics answer ends with `# EOF`). A failed application
//   scrape never fails the answer: it is logged and counted (istio_agent_scrape_failures_total).
// - `/healthz/ready`, as the status port.
// - `/quitquitquit` (POST, from loopback only): drain and exit, so a Job's last step can end its
//   sidecar (`curl -X POST localhost:15020/quitquitquit`).

import http from 'node:http';
import { send, type MetricsSource } from './servers';
import { asError } from '../errors';

/** Where the application's metrics are (ISTIO_PROMETHEUS_ANNOTATIONS: the pod's own prometheus.io annotations). */
export interface AppScrapeTarget {
  readonly port: string;
  readonly path: string;
}

/** Istio caps each application answer at 10 MiB (1.31): a larger one is dropped and counted as a failure. */
export const APP_METRICS_MAX_BYTES = 10 * 1024 * 1024;
/** Without Prometheus's X-Prometheus-Scrape-Timeout-Seconds, the application gets this long (Prometheus's default timeout). */
export const APP_SCRAPE_TIMEOUT_MS = 10_000;

/**
 * ISTIO_PROMETHEUS_ANNOTATIONS as the injector writes it (`{"scrape":"true","path":"/metrics","port":"8080"}`):
 * path defaults to /metrics and port to 80, as in Istio; a port equal to the agent's own would scrape
 * itself in a loop and is refused. Undefined when the variable is unset or empty.
 */
export function appScrapeTarget(value: string | undefined, agentPort: number): AppScrapeTarget | Error | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    return new Error(`ISTIO_PROMETHEUS_ANNOTATIONS: not JSON (${asError(err).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return new Error('ISTIO_PROMETHEUS_ANNOTATIONS: not a JSON object');
  const field = (k: string): string | Error => {
    const v = (parsed as Record<string, unknown>)[k];
    if (v === undefined || v === null) return '';
    return typeof v === 'string' ? v : new Error(`ISTIO_PROMETHEUS_ANNOTATIONS: ${k} is not a string`);
  };
  const port = field('port');
  const path = field('path');
  const scrape = field('scrape');
  if (port instanceof Error) return port;
  if (path instanceof Error) return path;
  if (scrape === 'false') return undefined; // as Istio's agent: the application asked not to be scraped
  const p = port === '' ? '80' : port;
  const n = Number(p);
  if (!/^\d+$/.test(p) || n < 1 || n > 65535) return new Error(`ISTIO_PROMETHEUS_ANNOTATIONS: port "${p}" is not a port`);
  if (n === agentPort) {
    return new Error(`ISTIO_PROMETHEUS_ANNOTATIONS: the application's port ${n} is the agent's own (a scrape would loop); is the pod annotated prometheus.io/port=${n} before injection, or injected twice?`);
  }
  const q = path === '' ? '/metrics' : path.startsWith('/') ? path : `/${path}`;
  return { port: String(n), path: q };
}

/**
 * ISTIO_PROMETHEUS_ANNOTATIONS for the agent port: the application to merge, or none. A value that
 * cannot be used is logged (and nothing merged), as is the target taken.
 */
export function mergedApplication(value: string | undefined, agentPort: number, log: { error(msg: string): void; info(msg: string): void }): AppScrapeTarget | undefined {
  const t = appScrapeTarget(value, agentPort);
  if (t instanceof Error) {
    log.error(`${t.message}: the application's metrics are not merged`);
    return undefined;
  }
  if (t) log.info(`agent: merging the application's metrics from localhost:${t.port}${t.path}`);
  return t;
}

export interface AgentState {
  /** This proxy's metrics: the same as the metrics port serves. */
  readonly render: MetricsSource;
  ready(): boolean;
  /** Drain and exit (SIGTERM to the process that owns the listeners); absent where the process is not ours to end. */
  readonly quit?: (() => void) | undefined;
  readonly app?: AppScrapeTarget | undefined;
  readonly log: { warn(obj: object, msg: string): void; info(msg: string): void };
}

/** Headers Prometheus sends that the application should see (format and time budget), as Istio passes them on. */
const FORWARDED = ['accept', 'user-agent', 'x-prometheus-scrape-timeout-seconds'] as const;

interface Scraped {
  readonly body: Buffer;
  readonly contentType: string;
}

/** GET the application's metrics: 200 only, at most `maxBytes`, within `timeoutMs`. */
export function scrapeApp(target: AppScrapeTarget, headers: http.IncomingHttpHeaders, timeoutMs: number, maxBytes = APP_METRICS_MAX_BYTES): Promise<Scraped> {
  return new Promise((resolve, reject) => {
    const out: Record<string, string> = {};
    for (const h of FORWARDED) {
      const v = headers[h];
      if (typeof v === 'string') out[h] = v;
    }
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(err);
    };
    const url = `http://localhost:${target.port}${target.path}`;
    const req = http.get({ host: 'localhost', port: Number(target.port), path: target.path, headers: out, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return fail(new Error(`error scraping ${url}, status code: ${res.statusCode}`));
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) return fail(new Error(`error scraping ${url}: more than ${maxBytes} bytes`));
        chunks.push(c);
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ body: Buffer.concat(chunks), contentType: String(res.headers['content-type'] ?? '') });
      });
      res.on('error', (err) => fail(new Error(`error scraping ${url}: ${err.message}`)));
    });
    req.on('error', (err) => fail(new Error(`error scraping ${url}: ${err.message}`)));
    const timer = setTimeout(() => fail(new Error(`error scraping ${url}: no complete answer within ${timeoutMs} ms`)), timeoutMs);
  });
}

/** Prometheus's scrape budget (`X-Prometheus-Scrape-Timeout-Seconds`), else the default; never above it. */
export function scrapeTimeoutMs(header: string | string[] | undefined): number {
  const s = typeof header === 'string' ? Number(header) : NaN;
  return Number.isFinite(s) && s > 0 ? Math.min(APP_SCRAPE_TIMEOUT_MS, Math.ceil(s * 1000)) : APP_SCRAPE_TIMEOUT_MS;
}

/** Is this an OpenMetrics answer (whose content type the merged answer then takes, as Istio's)? */
function isOpenMetrics(contentType: string): boolean {
  return contentType.split(';')[0]!.trim().toLowerCase() === 'application/openmetrics-text';
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || a.startsWith('127.');
}

export function agentHandler(state: AgentState): http.RequestListener {
  const counts = { scrapes: 0, envoy: 0, application: 0 };
  const agentMetrics = () => [
    '# HELP istio_agent_scrapes_total The total number of scrapes.',
    '# TYPE istio_agent_scrapes_total counter',
    `istio_agent_scrapes_total ${counts.scrapes}`,
    '# HELP istio_agent_scrape_failures_total The total number of failed scrapes.',
    '# TYPE istio_agent_scrape_failures_total counter',
    `istio_agent_scrape_failures_total{type="envoy"} ${counts.envoy}`,
    ...(state.app ? [`istio_agent_scrape_failures_total{type="application"} ${counts.application}`] : []),
    '',
  ].join('\n');

  const stats = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    counts.scrapes += 1;
    const app = state.app;
    const [own, scraped] = await Promise.all([
      state.render().catch((err: Error) => {
        counts.envoy += 1;
        state.log.warn({ err: err.message }, 'agent: rendering this proxy\'s metrics failed');
        return undefined;
      }),
      app ? scrapeApp(app, req.headers, scrapeTimeoutMs(req.headers['x-prometheus-scrape-timeout-seconds'])).catch((err: Error) => {
        counts.application += 1;
        state.log.warn({ err: err.message }, 'agent: failed scraping application metrics');
        return undefined;
      }) : undefined,
    ]);
    const parts: (string | Buffer)[] = [agentMetrics()];
    if (own) parts.push(own.text.endsWith('\n') || own.text === '' ? own.text : `${own.text}\n`);
    if (scraped) parts.push(scraped.body);
    const type = scraped && isOpenMetrics(scraped.contentType) ? scraped.contentType : own?.contentType ?? 'text/plain; version=0.0.4; charset=utf-8';
    const body = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
    res.writeHead(200, { 'content-type': type, 'content-length': body.length });
    res.end(body);
  };

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/stats/prometheus':
      case '/metrics': // Istio's agent serves both
        void stats(req, res).catch(() => { if (!res.headersSent) send(res, 500, 'metrics failed\n'); else res.destroy(); });
        return;
      case '/healthz/ready':
        return state.ready() ? send(res, 200, '') : send(res, 503, 'not ready\n');
      case '/quitquitquit':
        if (!isLoopback(req.socket.remoteAddress)) return send(res, 403, 'Only requests from localhost are allowed\n');
        if (req.method !== 'POST') return send(res, 405, 'Method Not Allowed\n');
        if (!state.quit) return send(res, 501, 'this process is not ended from its agent port\n');
        send(res, 200, 'OK');
        state.log.info('handling /quitquitquit: draining and exiting');
        res.once('finish', state.quit);
        return;
      default:
        return send(res, 404, 'not found\n');
    }
  };
}
