// Istio's standard metrics with Istio's label names and Envoy's default buckets, plus meshgate's own,
// on a private prom-client Registry. Label sets are cached per (direction, destination, code, flags,
// grpc-status) so the per-request cost is a map look-up and four observations.

import fs from 'node:fs';
import path from 'node:path';
import client from 'prom-client';
import type { Dict } from '../config/types';
import type { PeerWorkload } from './peer-metadata';
import type { TlsIdentities } from '../tls/identities';

type MetricModule = (registry: client.Registry, config: { eventLoopMonitoringPrecision: number }) => void;

/** The prom-client process metrics that cost the process more than a scrape does: each off unless asked for. */
export interface ProcessMetricOptions {
  /** `nodejs_gc_duration_seconds` (`--gc-metrics`). */
  readonly gc?: boolean;
  /** The event-loop delay histogram's `nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds` (`--loop-delay-metrics`). */
  readonly loopDelay?: boolean;
}

/** How often prom-client's event-loop delay histogram samples the loop (its default). */
const LOOP_DELAY_RESOLUTION_MS = 10;

/**
 * prom-client's process metrics, each module collectDefaultMetrics runs (its own list), two of them
 * only when asked, since they cost the process while nobody scrapes:
 * - the garbage-collection histogram observes every collection through a PerformanceObserver, and
 *   that hook costs the requests in flight during a collection: at 1000 req/s p99 went from
 *   0.35-0.44 ms without it to 0.53-0.68 ms with it (12 paired runs; with a no-op observer
 *   0.47-0.65), and ~5 % of the CPU;
 * - the event-loop delay histogram samples the loop on a 10 ms timer: 100 wake-ups a second, which
 *   on this VM cost an idle gateway ~0.003 vCPU and 2-11 % of the CPU at 1000 req/s (medians of
 *   paired runs). Without it, `nodejs_eventloop_lag_seconds` is still there, measured when scraped
 *   (loopLagAtScrape).
 * (docs/benchmarks.md, "Where a request's CPU goes at 1000 req/s" and "An idle gateway sleeps".)
 * prom-client offers no way to leave one out, so the modules are loaded by name
 * (test/unit/telemetry/process-metrics.test.ts keeps the list and the names in step with it).
 */
export function processMetrics(r: client.Registry, opts: ProcessMetricOptions = {}): void {
  for (const name of client.collectDefaultMetrics.metricsList) {
    if (name === 'gc' && !opts.gc) continue;
    if (name === 'eventLoopLag' && !opts.loopDelay) {
      loopLagAtScrape(r);
      continue;
    }
    (require(`prom-client/lib/metrics/${name}`) as MetricModule)(r, { eventLoopMonitoringPrecision: LOOP_DELAY_RESOLUTION_MS });
  }
}

/**
 * `nodejs_eventloop_lag_seconds` without a timer of its own: how long a callback queued when the
 * scrape comes waits for the event loop, measured before the scrape is answered.
 */
function loopLagAtScrape(r: client.Registry): void {
  new client.Gauge({
    name: 'nodejs_eventloop_lag_seconds', help: 'Lag of event loop in seconds.', registers: [r], aggregator: 'average',
    async collect() {
      const start = process.hrtime.bigint();
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.set(Number(process.hrtime.bigint() - start) / 1e9);
    },
  });
}

/** Envoy's server.state values. */
const ENVOY_SERVER_STATES = { LIVE: 0, DRAINING: 1, PRE_INITIALIZING: 2 } as const;

export interface ServerState {
  readonly state: keyof typeof ENVOY_SERVER_STATES;
  readonly clusters: number;
  readonly listeners: number;
}

/** Envoy's server stats on :15090 (Istio's default inclusion list): name, help, how --workers adds them up. */
const ENVOY_SERVER_GAUGES = [
  ['cluster_manager.active_clusters', 'Clusters in the config in force', 'first'],
  ['listener_manager.total_listeners_active', 'Listeners bound', 'first'],
  ['server.concurrency', 'Processes serving traffic (--workers)', 'sum'],
  ['server.live', '1 once the server is serving its first config', 'first'],
  ['server.memory_allocated', 'Bytes in use: JavaScript heap and buffers', 'sum'],
  ['server.memory_heap_size', 'Bytes the JavaScript heap reserved', 'sum'],
  ['server.state', 'Server state: 0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING', 'first'],
  ['server.uptime', 'Seconds since the server started', 'first'],
] as const;

type EnvoyServerStat = typeof ENVOY_SERVER_GAUGES[number][0];

/** This build's version (package.json at the top of the checkout or image), the `tag` of istio_build. */
const MESHGATE_VERSION: string = packageVersion();

function packageVersion(): string {
  try {
    // dist/src/telemetry/ -> the top: three levels up (the image keeps the same layout).
    return (JSON.parse(fs.readFileSync(path.join(__dirname, '../../../package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Envoy's default histogram buckets (source/common/stats/histogram_impl.cc). */
export const ENVOY_BUCKETS = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
];

export const ISTIO_LABELS = [
  'reporter', 'source_workload', 'source_canonical_service', 'source_canonical_revision', 'source_workload_namespace',
  'source_principal', 'source_app', 'source_version', 'source_cluster', 'destination_workload',
  'destination_workload_namespace', 'destination_principal', 'destination_app', 'destination_version',
  'destination_service', 'destination_canonical_service', 'destination_canonical_revision',
  'destination_service_name', 'destination_service_namespace', 'destination_cluster', 'request_protocol',
  'response_code', 'grpc_response_status', 'response_flags', 'connection_security_policy',
] as const;

export const ISTIO_TCP_LABELS = ISTIO_LABELS.filter((l) => l !== 'response_code' && l !== 'grpc_response_status');

type Labels = Record<(typeof ISTIO_LABELS)[number], string>;
type PeerLabels = Omit<Labels, 'destination_service' | 'destination_service_name' | 'destination_service_namespace' | 'response_code' | 'response_flags' | 'request_protocol' | 'grpc_response_status'>;

/**
 * This proxy's workload: the `source_*` labels of what it sends (a gateway, a sidecar's outbound),
 * the `destination_*` labels of what a sidecar receives (its inbound). The reporter follows each
 * observation's direction.
 */
export interface WorkloadIdentity {
  readonly workload: string;
  readonly namespace: string;
  readonly labels: Dict<string>;
}

/** The clusters of a sidecar's inbound side: what goes through them is reported by the destination. */
export function isInboundCluster(name: string | undefined): boolean {
  return name !== undefined && (name === 'InboundPassthroughCluster' || name.startsWith('inbound|'));
}

export interface DestinationLabels {
  readonly host?: string;
  readonly name?: string;
  readonly namespace?: string;
}

/**
 * The endpoint a request or connection went to, as far as its identity is known: its labels and, for
 * Pods and WorkloadEntries, its workload (Istio's `istio:workload` endpoint metadata). Istio's client
 * side fills destination_workload*, destination_app/version and the canonical labels from it when
 * the destination does not describe itself.
 */
export interface DestinationEndpoint {
  readonly labels: Dict<string>;
  readonly workload?: { readonly name: string; readonly namespace: string } | undefined;
}

/** A peer's labels, and the part of a series key that tells them apart. */
interface PeerEntry {
  readonly peer: PeerLabels;
  readonly key: string;
}

/** The namespace of an identity (`spiffe://<trust domain>/ns/<namespace>/sa/<account>`): what follows the first `/ns/`, as Istio reads it. */
export function spiffeNamespace(san: string): string | undefined {
  const at = san.indexOf('/ns/');
  if (at < 0) return undefined;
  const begin = at + 4;
  const end = san.indexOf('/', begin);
  const ns = end < 0 ? san.slice(begin) : san.slice(begin, end);
  return ns === '' ? undefined : ns;
}

/** A workload's identity labels, named as in both the source_* and destination_* sets. */
interface PeerIdentity {
  readonly workload: string;
  readonly canonical_service: string;
  readonly canonical_revision: string;
  readonly workload_namespace: string;
  readonly principal: string;
  readonly app: string;
  readonly version: string;
  readonly cluster: string;
}

/**
 * Istio's identity of a workload from its name, namespace and labels: the canonical service from
 * `service.istio.io/canonical-name`, `app.kubernetes.io/name` or `app` (else the workload's name),
 * the canonical revision from `service.istio.io/canonical-revision`, `app.kubernetes.io/version` or
 * `version` (else "latest"); app and version from the labels of those names; the cluster as the
 * peer's metadata names it (CLUSTER_ID: `unknown` when it does not), Kubernetes for our endpoints.
 */
export function peerIdentity(workload: string, namespace: string, labels: Dict<string>, cluster = 'Kubernetes'): PeerIdentity {
  const own = (k: string) => (Object.hasOwn(labels, k) ? labels[k] : undefined);
  return {
    workload,
    canonical_service: own('service.istio.io/canonical-name') ?? own('app.kubernetes.io/name') ?? own('app') ?? workload,
    canonical_revision: own('service.istio.io/canonical-revision') ?? own('app.kubernetes.io/version') ?? own('version') ?? 'latest',
    workload_namespace: namespace,
    principal: 'unknown',
    app: own('app') ?? 'unknown',
    version: own('version') ?? 'unknown',
    cluster,
  };
}

export interface HttpObservation {
  readonly destination: DestinationLabels;
  /** The endpoint the request went to (its workload, when known, names the destination workload). */
  readonly endpoint?: DestinationEndpoint | undefined;
  /** A sidecar's inbound request: the caller (its peer metadata), for source_*. */
  readonly source?: PeerWorkload | undefined;
  /** The upstream's answer to the metadata exchange: names the destination before the endpoint does (as Istio's). */
  readonly upstreamPeer?: PeerWorkload | undefined;
  /** A TLS upstream connection's identities: source_principal and destination_principal. */
  readonly upstreamIdentities?: TlsIdentities | undefined;
  /** A sidecar's inbound request over mesh mTLS: the downstream connection's identities (and mutual_tls). */
  readonly downstreamIdentities?: TlsIdentities | undefined;
  readonly responseCode: number;
  readonly responseFlags: string;
  readonly durationMs: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly grpc: boolean;
  /** The response's grpc-status for a gRPC request ('' when there is none, and for other requests). */
  readonly grpcStatus?: string;
  /** A sidecar's inbound request: reporter="destination", this workload in `destination_*`. */
  readonly inbound?: boolean;
}

/** One histogram's state for one label set: per-bucket counts (not cumulative), sum, count. */
interface HistogramState {
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** Everything observed for one label set. */
interface Series {
  readonly labels: Labels;
  requests: number;
  readonly duration: HistogramState;
  readonly requestBytes: HistogramState;
  readonly responseBytes: HistogramState;
}

function histogram(): HistogramState {
  return { counts: new Float64Array(ENVOY_BUCKETS.length + 1), sum: 0, count: 0 };
}

function observe(h: HistogramState, v: number): void {
  let i = 0;
  while (i < ENVOY_BUCKETS.length && v > ENVOY_BUCKETS[i]!) i++;
  h.counts[i]! += 1;
  h.sum += v;
  h.count += 1;
}

/**
 * A metric prom-client's Registry can render, fed from our own accumulators. prom-client's own
 * labelled metrics hash and validate every label on every observation (about a tenth of the
 * gateway's CPU per request); here an observation is a map look-up and a few additions, and the
 * work of formatting happens at scrape time.
 */
function registerSeriesMetric(registry: client.Registry, name: string, help: string, type: 'counter' | 'histogram', values: () => client.MetricValueWithName<string>[]): void {
  const metric = {
    name, help, type, aggregator: 'sum' as const,
    get: async () => ({ name, help, type, aggregator: 'sum' as const, values: values() }),
    reset: () => {},
  };
  registry.registerMetric(metric as unknown as client.Metric<string>);
}

function histogramValues(name: string, series: Iterable<Series>, pick: (s: Series) => HistogramState): client.MetricValueWithName<string>[] {
  const out: client.MetricValueWithName<string>[] = [];
  for (const s of series) {
    const h = pick(s);
    let cumulative = 0;
    ENVOY_BUCKETS.forEach((le, i) => {
      cumulative += h.counts[i]!;
      out.push({ metricName: `${name}_bucket`, labels: { ...s.labels, le }, value: cumulative });
    });
    out.push({ metricName: `${name}_bucket`, labels: { ...s.labels, le: '+Inf' }, value: h.count });
    out.push({ metricName: `${name}_sum`, labels: s.labels, value: h.sum });
    out.push({ metricName: `${name}_count`, labels: s.labels, value: h.count });
  }
  return out;
}

/** One TCP label set's counters, updated in place while connections carry bytes. */
export interface TcpSeries {
  readonly labels: Record<string, string>;
  opened: number;
  closed: number;
  /** Bytes sent to the downstream client. */
  sent: number;
  /** Bytes received from the downstream client. */
  received: number;
}

/** Distinct label sets kept; past this, new sets fold into one `overflow` series (bounded memory). */
const MAX_LABEL_SETS = 10_000;

export class Metrics {
  readonly registry = new client.Registry();
  readonly reloads: client.Counter<'result'>;
  readonly configVersion: client.Gauge;
  readonly listeners: client.Gauge;
  readonly endpoints: client.Gauge<'cluster'>;
  readonly localReplies: client.Counter<'code'>;
  readonly outlierEjections: client.Counter<'cluster' | 'reason'>;
  readonly certificateExpiry: client.Gauge<'gateway' | 'server' | 'source' | 'subject'>;
  readonly rejectedObjects: client.Gauge<'kind' | 'namespace' | 'name'>;
  /** The unknown peer's entries: outbound (reporter source) and inbound (reporter destination). */
  private readonly outbound: PeerEntry;
  private readonly inbound: PeerEntry;
  private readonly series = new Map<string, Series>();
  private readonly tcp = new Map<string, TcpSeries>();
  /** Per endpoint (while its labels and workload stay the same objects): its destination_* labels and series-key part. */
  private readonly endpointPeers = new WeakMap<DestinationEndpoint, PeerEntry & { labels: Dict<string>; workload: DestinationEndpoint['workload'] }>();

  /**
   * `processOpts`: prom-client's process metrics (CPU, memory, handles, event-loop lag, heap), with the
   * costly ones only as asked (processMetrics()); false, none.
   */
  constructor(id: WorkloadIdentity, processOpts: ProcessMetricOptions | false = {}) {
    const r = this.registry;
    const all = () => this.series.values();
    registerSeriesMetric(r, 'istio_requests_total', 'Requests handled, by source and destination', 'counter',
      () => [...all()].map((s) => ({ metricName: 'istio_requests_total', labels: s.labels, value: s.requests })));
    registerSeriesMetric(r, 'istio_request_duration_milliseconds', 'Request duration in milliseconds', 'histogram',
      () => histogramValues('istio_request_duration_milliseconds', all(), (s) => s.duration));
    registerSeriesMetric(r, 'istio_request_bytes', 'Request size in bytes (headers and body)', 'histogram',
      () => histogramValues('istio_request_bytes', all(), (s) => s.requestBytes));
    registerSeriesMetric(r, 'istio_response_bytes', 'Response size in bytes (headers and body)', 'histogram',
      () => histogramValues('istio_response_bytes', all(), (s) => s.responseBytes));
    const tcpAll = () => [...this.tcp.values()];
    const tcpMetric = (name: string, help: string, pick: (t: TcpSeries) => number) =>
      registerSeriesMetric(r, name, help, 'counter', () => tcpAll().map((t) => ({ metricName: name, labels: t.labels, value: pick(t) })));
    tcpMetric('istio_tcp_connections_opened_total', 'TCP connections opened', (t) => t.opened);
    tcpMetric('istio_tcp_connections_closed_total', 'TCP connections closed', (t) => t.closed);
    tcpMetric('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream during TCP connections', (t) => t.sent);
    tcpMetric('istio_tcp_received_bytes_total', 'Bytes received from the downstream during TCP connections', (t) => t.received);
    // With several worker processes (--workers) the primary sums what workers report; what every
    // worker has alike (its config, its listeners) is reported once ('first'), not N times.
    this.reloads = new client.Counter({ name: 'meshgate_config_reloads_total', help: 'Config reloads by result (applied, rejected, unchanged)', labelNames: ['result'], registers: [r], aggregator: 'first' });
    this.configVersion = new client.Gauge({ name: 'meshgate_config_version', help: 'Version of the config snapshot in force', registers: [r], aggregator: 'first' });
    this.listeners = new client.Gauge({ name: 'meshgate_listeners', help: 'Listening sockets', registers: [r], aggregator: 'first' });
    this.endpoints = new client.Gauge({ name: 'meshgate_cluster_endpoints', help: 'Endpoints per cluster', labelNames: ['cluster'], registers: [r], aggregator: 'first' });
    this.localReplies = new client.Counter({ name: 'meshgate_local_replies_total', help: 'Replies the gateway made itself, by status', labelNames: ['code'], registers: [r] });
    this.outlierEjections = new client.Counter({
      name: 'meshgate_outlier_ejections_total', help: 'Endpoints ejected by outlier detection, by cluster and reason', labelNames: ['cluster', 'reason'], registers: [r],
    });
    this.certificateExpiry = new client.Gauge({
      name: 'meshgate_certificate_expiration_timestamp_seconds', help: 'When each certificate a Gateway server serves expires (unix time)',
      labelNames: ['gateway', 'server', 'source', 'subject'], registers: [r], aggregator: 'first',
    });
    this.rejectedObjects = new client.Gauge({
      name: 'meshgate_config_rejected_objects', help: 'Kubernetes objects left out of the config because of their errors (1 per object)',
      labelNames: ['kind', 'namespace', 'name'], registers: [r], aggregator: 'first',
    });
    const losses = () => this.accessLogLosses?.() ?? { dropped: 0, errors: 0 };
    new client.Counter({
      name: 'meshgate_access_log_dropped_lines_total', help: 'Access-log lines dropped because the log file did not keep up (bounded buffer full)', registers: [r],
      collect() { this.reset(); this.inc(losses().dropped); },
    });
    new client.Counter({
      name: 'meshgate_access_log_write_errors_total', help: 'Access-log writes that failed (their lines are lost)', registers: [r],
      collect() { this.reset(); this.inc(losses().errors); },
    });
    // Istio's proxies export `istio_build` (the mesh dashboard's "Istio Component Versions") and
    // Envoy's server, cluster-manager and listener-manager stats on this port (its default
    // inclusion list): runbooks and alerts read envoy_server_live, envoy_server_uptime & co.
    new client.Gauge({
      name: 'istio_build', help: 'Istio component build info', labelNames: ['component', 'tag'], registers: [r], aggregator: 'first',
      collect() { this.set({ component: 'proxy', tag: `meshgate-${MESHGATE_VERSION}` }, 1); },
    });
    const stats = () => this.envoyServerStats();
    for (const [stat, help, aggregator] of ENVOY_SERVER_GAUGES) {
      new client.Gauge({ name: `envoy_${stat.replace(/\./g, '_')}`, help, registers: [r], aggregator, collect() { this.set(stats()[stat]); } });
    }
    if (processOpts) processMetrics(r, processOpts);

    // Principals come from a connection's certificates (withPrincipals); these entries are plaintext's.
    const self = peerIdentity(id.workload, id.namespace, id.labels);
    const unknownPeer: PeerIdentity = {
      workload: 'unknown', canonical_service: 'unknown', canonical_revision: 'latest', workload_namespace: 'unknown',
      principal: 'unknown', app: 'unknown', version: 'unknown', cluster: 'unknown',
    };
    const labelsOf = (reporter: 'source' | 'destination', src: PeerIdentity, dst: PeerIdentity, policy: string): PeerLabels => ({
      reporter,
      source_workload: src.workload,
      source_canonical_service: src.canonical_service,
      source_canonical_revision: src.canonical_revision,
      source_workload_namespace: src.workload_namespace,
      source_principal: src.principal,
      source_app: src.app,
      source_version: src.version,
      source_cluster: src.cluster,
      destination_workload: dst.workload,
      destination_workload_namespace: dst.workload_namespace,
      destination_principal: dst.principal,
      destination_app: dst.app,
      destination_version: dst.version,
      destination_canonical_service: dst.canonical_service,
      destination_canonical_revision: dst.canonical_revision,
      destination_cluster: dst.cluster,
      connection_security_policy: policy,
    });
    // Istio: the client side (sidecar outbound, gateways) reports "source" and cannot tell the
    // connection's security ("unknown"); the server side reports "destination", describing itself
    // as the destination and the peer as far as its connection identifies it: a plaintext caller
    // is "none" and unknown (mesh mTLS adds its principal and mutual_tls, withPrincipals).
    this.outbound = { peer: labelsOf('source', self, unknownPeer, 'unknown'), key: 'out' };
    this.inbound = { peer: labelsOf('destination', unknownPeer, self, 'none'), key: 'in' };
    this.outboundTo = (dst) => labelsOf('source', self, dst, 'unknown');
    this.inboundFrom = (src) => labelsOf('destination', src, self, 'none');
  }

  /** The client side's labels toward a known destination workload. */
  private readonly outboundTo: (dst: PeerIdentity) => PeerLabels;
  /** The server side's labels for a known caller. */
  private readonly inboundFrom: (src: PeerIdentity) => PeerLabels;
  /**
   * Entries per peer that named itself in the metadata exchange (a caller inbound, an answering
   * upstream outbound), by its identity object (kept by the decoder's cache), one map per direction.
   */
  private readonly exchangePeers = { in: new WeakMap<PeerWorkload, PeerEntry>(), out: new WeakMap<PeerWorkload, PeerEntry>() };
  /** Entries with a TLS connection's identities added, per entry and identities object (one per connection, kept by tlsIdentitiesOf). */
  private readonly principalPeers = new WeakMap<PeerEntry, WeakMap<TlsIdentities, PeerEntry>>();

  /**
   * The peer labels of a request or connection, and the part of the series key that tells them
   * apart: outbound, the upstream's answer to the metadata exchange, else the endpoint's workload;
   * inbound, the caller its peer metadata names; else the unknown peer; over TLS, with the
   * connection's principals. Kept per endpoint (while its labels and workload stay the same
   * objects), per exchange peer and per connection's identities: no per-request work once known.
   */
  private peerFor(inbound: boolean, endpoint: DestinationEndpoint | undefined, source: PeerWorkload | undefined,
    upstreamPeer?: PeerWorkload, identities?: TlsIdentities): PeerEntry {
    // Istio's order on the client side: the upstream's own metadata, else the endpoint's workload.
    const entry = inbound
      ? source ? this.exchangePeer('in', source) : this.inbound
      : upstreamPeer ? this.exchangePeer('out', upstreamPeer) : this.endpointPeer(endpoint);
    return identities ? this.withPrincipals(entry, identities, inbound) : entry;
  }

  private exchangePeer(direction: 'in' | 'out', w: PeerWorkload): PeerEntry {
    const cache = this.exchangePeers[direction];
    let entry = cache.get(w);
    if (!entry) cache.set(w, entry = this.peerEntry(direction, peerIdentity(w.workload, w.namespace, w.labels, w.cluster ?? 'unknown')));
    return entry;
  }

  private endpointPeer(endpoint: DestinationEndpoint | undefined): PeerEntry {
    const w = endpoint?.workload;
    if (!endpoint || !w) return this.outbound;
    const cached = this.endpointPeers.get(endpoint);
    if (cached && cached.labels === endpoint.labels && cached.workload === w) return cached;
    const entry = { labels: endpoint.labels, workload: w, ...this.peerEntry('out', peerIdentity(w.name, w.namespace, endpoint.labels)) };
    this.endpointPeers.set(endpoint, entry);
    return entry;
  }

  /**
   * Over TLS, as Istio's istio_stats: on the client side source_principal is our certificate's first
   * URI SAN and destination_principal the upstream's (whose SPIFFE namespace names
   * destination_workload_namespace), the policy unknown; on a sidecar's inbound side (mesh mTLS)
   * source_principal is the caller's and destination_principal ours, the caller's SPIFFE namespace
   * names source_workload_namespace, and the policy is mutual_tls when both certificates name one.
   * Kept per peer entry and identity pair (a few per mesh peer).
   */
  private withPrincipals(entry: PeerEntry, t: TlsIdentities, inbound: boolean): PeerEntry {
    let byIdentities = this.principalPeers.get(entry);
    if (!byIdentities) this.principalPeers.set(entry, byIdentities = new WeakMap());
    let out = byIdentities.get(t);
    if (out) return out;
    const local = t.localUriSans[0] ?? 'unknown';
    const remote = t.peerUriSans[0] ?? 'unknown';
    const key = `${entry.key}|${local}|${remote}`;
    const ns = spiffeNamespace(remote);
    const peer: PeerLabels = inbound
      ? {
        ...entry.peer, source_principal: remote, destination_principal: local, ...(ns ? { source_workload_namespace: ns } : {}),
        connection_security_policy: t.localUriSans.length > 0 && t.peerUriSans.length > 0 ? 'mutual_tls' : 'none',
      }
      : { ...entry.peer, source_principal: local, destination_principal: remote, ...(ns ? { destination_workload_namespace: ns } : {}) };
    out = { key, peer };
    byIdentities.set(t, out);
    return out;
  }

  private peerEntry(direction: 'in' | 'out', id: PeerIdentity): PeerEntry {
    return {
      peer: direction === 'out' ? this.outboundTo(id) : this.inboundFrom(id),
      key: `${direction}|${id.workload}|${id.workload_namespace}|${id.canonical_service}|${id.canonical_revision}|${id.app}|${id.version}|${id.cluster}`,
    };
  }

  private readonly startedAt = Date.now();

  /**
   * Envoy's server, cluster-manager and listener-manager stats by Envoy's names: admin `/stats`
   * shows them, and :15090 as envoy_server_live & co. (ENVOY_SERVER_GAUGES).
   */
  envoyServerStats(): Readonly<Record<EnvoyServerStat, number>> {
    const s = this.serverState?.() ?? { state: 'PRE_INITIALIZING', clusters: 0, listeners: 0 };
    const m = process.memoryUsage();
    return {
      'cluster_manager.active_clusters': s.clusters,
      'listener_manager.total_listeners_active': s.listeners,
      'server.concurrency': 1,
      'server.live': s.state === 'LIVE' ? 1 : 0,
      'server.memory_allocated': m.heapUsed + m.external,
      'server.memory_heap_size': m.heapTotal,
      'server.state': ENVOY_SERVER_STATES[s.state],
      'server.uptime': Math.floor((Date.now() - this.startedAt) / 1000),
    };
  }

  /** Set by the app: the server's state and its cluster and listener counts, read at each scrape. */
  serverState: (() => ServerState) | undefined;

  /** Set by the app: the access log's lost lines and failed writes, read at each scrape. */
  accessLogLosses: (() => { dropped: number; errors: number }) | undefined;

  /**
   * The series of the usual request (no response flags, not gRPC) by destination, peer entry and
   * status code: found without building and hashing the string key. A memo in front of `series`
   * (whose entries are never removed); destination and peer objects replaced by a reload fall back
   * to the string key, which finds the same series.
   */
  private readonly plainSeries = new WeakMap<DestinationLabels, WeakMap<PeerEntry, Map<number, Series>>>();

  private seriesFor(o: HttpObservation): Series {
    const d = o.destination;
    const entry = this.peerFor(o.inbound === true, o.endpoint, o.source, o.upstreamPeer, o.inbound ? o.downstreamIdentities : o.upstreamIdentities);
    if (o.grpc || o.responseFlags !== '-') return this.seriesByKey(o, entry);
    let byPeer = this.plainSeries.get(d);
    if (!byPeer) this.plainSeries.set(d, byPeer = new WeakMap());
    let byCode = byPeer.get(entry);
    if (!byCode) byPeer.set(entry, byCode = new Map());
    let s = byCode.get(o.responseCode);
    if (s) return s;
    s = this.seriesByKey(o, entry);
    if (s.labels.response_code !== 'overflow') byCode.set(o.responseCode, s);
    return s;
  }

  private seriesByKey(o: HttpObservation, { peer, key: peerKey }: PeerEntry): Series {
    const d = o.destination;
    const grpcStatus = o.grpc ? o.grpcStatus ?? '' : '';
    let key = `${peerKey}|${d.host ?? ''}|${d.name ?? ''}|${d.namespace ?? ''}|${o.responseCode}|${o.responseFlags}|${o.grpc ? 1 : 0}|${grpcStatus}`;
    let s = this.series.get(key);
    if (s) return s;
    const overflow = this.series.size >= MAX_LABEL_SETS;
    if (overflow) {
      key = 'overflow';
      s = this.series.get(key);
      if (s) return s;
    }
    const all: Labels = {
      ...(overflow ? (o.inbound ? this.inbound : this.outbound).peer : peer),
      destination_service: overflow ? 'overflow' : d.host ?? 'unknown',
      destination_service_name: overflow ? 'overflow' : d.name ?? 'unknown',
      destination_service_namespace: overflow ? 'overflow' : d.namespace ?? 'unknown',
      request_protocol: o.grpc ? 'grpc' : 'http',
      response_code: overflow ? 'overflow' : String(o.responseCode),
      grpc_response_status: overflow ? 'overflow' : grpcStatus,
      response_flags: overflow ? 'overflow' : o.responseFlags,
    };
    // In Istio's emission order (ISTIO_LABELS), as scraped.
    const labels = {} as Labels;
    for (const name of ISTIO_LABELS) labels[name] = all[name];
    s = { labels, requests: 0, duration: histogram(), requestBytes: histogram(), responseBytes: histogram() };
    this.series.set(key, s);
    return s;
  }

  observeHttp(o: HttpObservation): void {
    const s = this.seriesFor(o);
    s.requests += 1;
    observe(s.duration, o.durationMs);
    observe(s.requestBytes, o.requestBytes);
    observe(s.responseBytes, o.responseBytes);
  }

  /**
   * The TCP series for a destination and flags (`-` when none); the caller adds to it as bytes flow,
   * so long-lived connections show their bytes before they close. `inbound`: a sidecar's inbound
   * connection, reported by the destination (this workload).
   */
  tcpSeries(d: DestinationLabels, responseFlags: string, inbound = false, endpoint?: DestinationEndpoint, identities?: TlsIdentities): TcpSeries {
    const { peer, key: peerKey } = this.peerFor(inbound, endpoint, undefined, undefined, identities);
    let key = `${peerKey}|${d.host ?? ''}|${d.name ?? ''}|${d.namespace ?? ''}|${responseFlags}`;
    let t = this.tcp.get(key);
    if (t) return t;
    const overflow = this.tcp.size >= MAX_LABEL_SETS;
    if (overflow) {
      key = 'overflow';
      t = this.tcp.get(key);
      if (t) return t;
    }
    const labels: Record<string, string> = {};
    const all: Record<string, string> = {
      ...(overflow ? (inbound ? this.inbound : this.outbound).peer : peer),
      destination_service: overflow ? 'overflow' : d.host ?? 'unknown',
      destination_service_name: overflow ? 'overflow' : d.name ?? 'unknown',
      destination_service_namespace: overflow ? 'overflow' : d.namespace ?? 'unknown',
      request_protocol: 'tcp',
      response_flags: overflow ? 'overflow' : responseFlags,
    };
    for (const name of ISTIO_TCP_LABELS) labels[name] = all[name] ?? 'unknown';
    t = { labels, opened: 0, closed: 0, sent: 0, received: 0 };
    this.tcp.set(key, t);
    return t;
  }

  async render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
