// The one sink for finished requests and connections: one access-log line and one metric
// observation each. Callers build an HttpResult and call record() once; a second call is a no-op.

import type { AccessLog, AccessRecord } from './access-log';
import type { DestinationLabels, Metrics } from './metrics';

export class Telemetry {
  constructor(readonly accessLog: AccessLog, readonly metrics: Metrics) {}

  recordHttp(rec: AccessRecord, destination: DestinationLabels, requestBytes: number, responseBytes: number): void {
    this.accessLog.write(rec);
    this.metrics.observeHttp({
      destination,
      responseCode: rec.responseCode,
      responseFlags: rec.responseFlags.length > 0 ? rec.responseFlags.join(',') : '-',
      durationMs: rec.durationMs,
      requestBytes,
      responseBytes,
      grpc: isGrpc(rec.requestHeaders?.['content-type']),
    });
  }
}

function isGrpc(ct: string | string[] | undefined): boolean {
  return typeof ct === 'string' && ct.startsWith('application/grpc');
}
