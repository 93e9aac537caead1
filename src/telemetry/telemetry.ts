// The one sink for finished requests and connections: one access-log line and one metric
// observation each. Callers build an HttpResult and call record() once; a second call is a no-op.

import type { AccessLog, AccessRecord } from './access-log';
import { isInboundCluster, type DestinationEndpoint, type DestinationLabels, type Metrics } from './metrics';
import type { PeerWorkload } from './peer-metadata';

/** What the caller knows of a request beyond its access record. */
export interface HttpRecordExtras {
  /** A gRPC request, when the caller has told already (else read from the request's content-type). */
  readonly grpc?: boolean | undefined;
  /** The response's grpc-status (trailers, else headers), when it had one. */
  readonly grpcStatus?: string | undefined;
  /** A sidecar's inbound request; when not said, inbound clusters (`inbound|PORT||`, InboundPassthroughCluster) tell. */
  readonly inbound?: boolean | undefined;
  /** The endpoint the request went to (names the destination workload when known). */
  readonly endpoint?: DestinationEndpoint | undefined;
  /** A sidecar's inbound request: the caller, from its peer metadata. */
  readonly source?: PeerWorkload | undefined;
  /** The upstream's peer metadata from its response (the exchange's answer). */
  readonly upstreamPeer?: PeerWorkload | undefined;
}

export class Telemetry {
  constructor(readonly accessLog: AccessLog, readonly metrics: Metrics) {}

  recordHttp(rec: AccessRecord, destination: DestinationLabels, requestBytes: number, responseBytes: number, extras?: HttpRecordExtras): void {
    this.accessLog.write(rec);
    const grpc = extras?.grpc ?? isGrpcContentType(rec.requestHeaders?.['content-type']);
    this.metrics.observeHttp({
      destination,
      endpoint: extras?.endpoint,
      source: extras?.source,
      upstreamPeer: extras?.upstreamPeer,
      upstreamIdentities: rec.upstreamIdentities,
      downstreamIdentities: rec.downstreamIdentities,
      responseCode: rec.responseCode,
      responseFlags: rec.responseFlags.length > 0 ? rec.responseFlags.join(',') : '-',
      durationMs: rec.durationMs,
      requestBytes,
      responseBytes,
      grpc,
      grpcStatus: grpc ? grpcResponseStatus(extras?.grpcStatus, rec.responseCode) : '',
      inbound: extras?.inbound ?? isInboundCluster(rec.upstreamCluster),
    });
  }
}

/**
 * A gRPC request, as Envoy tells one: content-type exactly `application/grpc` or
 * `application/grpc+<codec>` (`application/grpc-web...` is gRPC-Web, counted as HTTP).
 */
export function isGrpcContentType(ct: string | string[] | undefined): boolean {
  if (typeof ct !== 'string' || !ct.startsWith('application/grpc')) return false;
  return ct.length === 16 || ct.charCodeAt(16) === 43; /* + */
}

/** The highest well-known gRPC status (UNAUTHENTICATED); Envoy reports others as -1 (invalid). */
const GRPC_MAX_KNOWN = 16;

/**
 * grpc_response_status as Envoy's istio_stats derives it: the response's grpc-status (trailers, then
 * headers), else inferred from the HTTP status (gRPC's HTTP-to-gRPC mapping); '' without a response.
 */
export function grpcResponseStatus(grpcStatus: string | undefined, httpStatus: number): string {
  if (grpcStatus !== undefined && grpcStatus !== '') {
    const n = /^\d+$/.test(grpcStatus) ? Number(grpcStatus) : NaN;
    return n <= GRPC_MAX_KNOWN ? String(n) : '-1';
  }
  if (!(httpStatus > 0)) return '';
  return String(httpToGrpcStatus(httpStatus));
}

/** gRPC's status for an HTTP status (gRPC's doc/http-grpc-status-mapping.md, as Envoy's Grpc::Utility::httpToGrpcStatus). */
export function httpToGrpcStatus(status: number): number {
  switch (status) {
    case 400: return 13; // INTERNAL
    case 401: return 16; // UNAUTHENTICATED
    case 403: return 7; // PERMISSION_DENIED
    case 404: return 12; // UNIMPLEMENTED
    case 429: case 502: case 503: case 504: return 14; // UNAVAILABLE
    default: return 2; // UNKNOWN
  }
}
