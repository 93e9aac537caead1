// Istio's standard metrics with Istio's label names and Envoy's default buckets, plus meshgate's own,
// on a private prom-client Registry. Label sets are cached per (destination, code, flags) so the
// per-request cost is a map look-up and four observations.

import client from 'prom-client';
import type { Dict } from '../config/types';

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

/** This proxy, as the `source_*` labels describe it. */
export interface WorkloadIdentity {
  readonly workload: string;
  readonly namespace: string;
  readonly labels: Dict<string>;
  readonly reporter: 'source' | 'destination';
}

export interface DestinationLabels {
  readonly host?: string;
  readonly name?: string;
  readonly namespace?: string;
}

export interface HttpObservation {
  readonly destination: DestinationLabels;
  readonly responseCode: number;
  readonly responseFlags: string;
  readonly durationMs: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly grpc: boolean;
}

interface HttpChildren {
  readonly requests: client.Counter.Internal;
  readonly duration: client.Histogram.Internal<string>;
  readonly reqBytes: client.Histogram.Internal<string>;
  readonly respBytes: client.Histogram.Internal<string>;
}

const MAX_CACHED_LABEL_SETS = 10_000;

export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<string>;
  private readonly duration: client.Histogram<string>;
  private readonly requestBytes: client.Histogram<string>;
  private readonly responseBytes: client.Histogram<string>;
  readonly reloads: client.Counter<'result'>;
  readonly configVersion: client.Gauge;
  readonly listeners: client.Gauge;
  readonly endpoints: client.Gauge<'cluster'>;
  readonly localReplies: client.Counter<'code'>;
  private readonly source: Omit<Labels, 'destination_service' | 'destination_service_name' | 'destination_service_namespace' | 'response_code' | 'response_flags' | 'request_protocol' | 'grpc_response_status'>;
  private readonly cache = new Map<string, HttpChildren>();

  constructor(id: WorkloadIdentity, withProcessMetrics = true) {
    const r = this.registry;
    this.requests = new client.Counter({ name: 'istio_requests_total', help: 'Requests handled, by source and destination', labelNames: ISTIO_LABELS, registers: [r] });
    this.duration = new client.Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', labelNames: ISTIO_LABELS, buckets: ENVOY_BUCKETS, registers: [r] });
    this.requestBytes = new client.Histogram({ name: 'istio_request_bytes', help: 'Request size in bytes (headers and body)', labelNames: ISTIO_LABELS, buckets: ENVOY_BUCKETS, registers: [r] });
    this.responseBytes = new client.Histogram({ name: 'istio_response_bytes', help: 'Response size in bytes (headers and body)', labelNames: ISTIO_LABELS, buckets: ENVOY_BUCKETS, registers: [r] });
    this.reloads = new client.Counter({ name: 'meshgate_config_reloads_total', help: 'Config reloads by result (applied, rejected, unchanged)', labelNames: ['result'], registers: [r] });
    this.configVersion = new client.Gauge({ name: 'meshgate_config_version', help: 'Version of the config snapshot in force', registers: [r] });
    this.listeners = new client.Gauge({ name: 'meshgate_listeners', help: 'Listening sockets', registers: [r] });
    this.endpoints = new client.Gauge({ name: 'meshgate_cluster_endpoints', help: 'Endpoints per cluster', labelNames: ['cluster'], registers: [r] });
    this.localReplies = new client.Counter({ name: 'meshgate_local_replies_total', help: 'Replies the gateway made itself, by status', labelNames: ['code'], registers: [r] });
    if (withProcessMetrics) client.collectDefaultMetrics({ register: r });

    const l = id.labels;
    const app = l['app'] ?? id.workload;
    this.source = {
      reporter: id.reporter,
      source_workload: id.workload,
      source_canonical_service: l['service.istio.io/canonical-name'] ?? app,
      source_canonical_revision: l['service.istio.io/canonical-revision'] ?? l['version'] ?? 'latest',
      source_workload_namespace: id.namespace,
      source_principal: 'unknown',
      source_app: app,
      source_version: l['version'] ?? 'unknown',
      source_cluster: 'Kubernetes',
      destination_workload: 'unknown',
      destination_workload_namespace: 'unknown',
      destination_principal: 'unknown',
      destination_app: 'unknown',
      destination_version: 'unknown',
      destination_canonical_service: 'unknown',
      destination_canonical_revision: 'latest',
      destination_cluster: 'unknown',
      connection_security_policy: 'unknown',
    };
  }

  private children(o: HttpObservation): HttpChildren {
    const d = o.destination;
    const key = `${d.host ?? ''}|${d.name ?? ''}|${d.namespace ?? ''}|${o.responseCode}|${o.responseFlags}|${o.grpc ? 1 : 0}`;
    let c = this.cache.get(key);
    if (c) return c;
    const labels: Labels = {
      ...this.source,
      destination_service: d.host ?? 'unknown',
      destination_service_name: d.name ?? 'unknown',
      destination_service_namespace: d.namespace ?? 'unknown',
      request_protocol: o.grpc ? 'grpc' : 'http',
      response_code: String(o.responseCode),
      grpc_response_status: '',
      response_flags: o.responseFlags,
    };
    c = {
      requests: this.requests.labels(labels),
      duration: this.duration.labels(labels),
      reqBytes: this.requestBytes.labels(labels),
      respBytes: this.responseBytes.labels(labels),
    };
    if (this.cache.size >= MAX_CACHED_LABEL_SETS) this.cache.clear();
    this.cache.set(key, c);
    return c;
  }

  observeHttp(o: HttpObservation): void {
    const c = this.children(o);
    c.requests.inc();
    c.duration.observe(o.durationMs);
    c.reqBytes.observe(o.requestBytes);
    c.respBytes.observe(o.responseBytes);
  }

  async render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
