// The one error catalogue. Every failure the gateway answers or logs is one of these codes, with the
// reply Envoy gives for it (status, body, response flag, response-code details), who failed, and
// whether a retry may help. Foreign errors (undici, node:net, node:dns) are mapped in one place:
// `fromUpstreamError`. docs/errors.md is checked against this table by a test.

export type Party = 'downstream' | 'upstream' | 'internal' | 'config';

export interface ErrorSpec {
  /** HTTP status of the local reply (0 for connection-level failures). */
  readonly status: number;
  /** Exact body of the local reply ('' for none). */
  readonly body: string;
  /** Envoy response flag for %RESPONSE_FLAGS% ('-' when none). */
  readonly flag: string;
  /** Envoy %RESPONSE_CODE_DETAILS%. */
  readonly details: string;
  readonly party: Party;
  /** May the router retry the request on another attempt (subject to retryOn)? */
  readonly retryable: boolean;
  /** Which `retryOn` condition covers it, when retryable. */
  readonly retryOn?: 'connect-failure' | 'reset' | 'refused-stream';
  /** Extra reply headers. */
  readonly headers?: Readonly<Record<string, string>>;
  /** One sentence for operators: what usually causes it. */
  readonly hint: string;
}

const RESET_PREFIX = 'upstream connect error or disconnect/reset before headers. ';

const CATALOGUE = {
  NO_ROUTE: {
    status: 404, body: '', flag: 'NR', details: 'route_not_found', party: 'config', retryable: false,
    hint: 'no VirtualService bound to this gateway matches the host and request; check hosts, gateways and match blocks',
  },
  CLUSTER_NOT_FOUND: {
    status: 503, body: '', flag: 'NC', details: 'cluster_not_found', party: 'config', retryable: false,
    hint: 'the route names a host, port or subset that no ServiceEntry/DestinationRule defines',
  },
  NO_HEALTHY_UPSTREAM: {
    status: 503, body: 'no healthy upstream', flag: 'UH', details: 'no_healthy_upstream', party: 'upstream', retryable: false,
    hint: 'the cluster has no endpoints (subset labels match none, DNS resolved nothing, or all are ejected)',
  },
  CONNECT_FAILURE: {
    status: 503, body: `${RESET_PREFIX}reset reason: connection failure`, flag: 'UF',
    details: 'upstream_reset_before_response_started{remote_connection_failure}', party: 'upstream', retryable: true,
    retryOn: 'connect-failure',
    hint: 'the endpoint refused or did not accept the connection in time; check the endpoint address and port',
  },
  CONNECT_TIMEOUT: {
    status: 503, body: `${RESET_PREFIX}reset reason: connection timeout`, flag: 'UF',
    details: 'upstream_reset_before_response_started{connection_timeout}', party: 'upstream', retryable: true,
    retryOn: 'connect-failure',
    hint: 'the endpoint did not accept the connection within connectTimeout',
  },
  UPSTREAM_RESET: {
    status: 503, body: `${RESET_PREFIX}reset reason: connection termination`, flag: 'UC',
    details: 'upstream_reset_before_response_started{connection_termination}', party: 'upstream', retryable: true,
    retryOn: 'reset',
    hint: 'the upstream closed the connection before sending a response',
  },
  UPSTREAM_REMOTE_RESET: {
    status: 503, body: `${RESET_PREFIX}reset reason: remote reset`, flag: 'UR',
    details: 'upstream_reset_before_response_started{remote_reset}', party: 'upstream', retryable: true,
    retryOn: 'reset',
    hint: 'the upstream reset the HTTP/2 stream before sending a response',
  },
  UPSTREAM_REFUSED_STREAM: {
    status: 503, body: `${RESET_PREFIX}reset reason: remote refused stream reset`, flag: 'UR',
    details: 'upstream_reset_before_response_started{remote_refused_stream_reset}', party: 'upstream', retryable: true,
    retryOn: 'refused-stream',
    hint: 'the upstream refused the HTTP/2 stream (REFUSED_STREAM: not processed, safe to retry; often its concurrent-stream limit)',
  },
  UPSTREAM_PROTOCOL_ERROR: {
    status: 502, body: `${RESET_PREFIX}reset reason: protocol error`, flag: 'UPE',
    details: 'upstream_reset_before_response_started{protocol_error}', party: 'upstream', retryable: false,
    hint: 'the upstream answered with something that is not valid HTTP/1.1',
  },
  UPSTREAM_TIMEOUT: {
    status: 504, body: 'upstream request timeout', flag: 'UT', details: 'upstream_response_timeout',
    party: 'upstream', retryable: false,
    hint: 'the route timeout elapsed before the upstream answered',
  },
  UPSTREAM_PER_TRY_TIMEOUT: {
    status: 504, body: 'upstream request timeout', flag: 'UT', details: 'upstream_per_try_timeout',
    party: 'upstream', retryable: true, retryOn: 'reset',
    hint: 'one attempt took longer than retries.perTryTimeout',
  },
  OVERFLOW: {
    status: 503, body: `${RESET_PREFIX}reset reason: overflow`, flag: 'UO',
    details: 'upstream_reset_before_response_started{overflow}', party: 'upstream', retryable: false,
    headers: { 'x-envoy-overloaded': 'true' },
    hint: 'a DestinationRule connectionPool limit was reached (circuit breaker open)',
  },
  DOWNSTREAM_DISCONNECT: {
    status: 0, body: '', flag: 'DC', details: 'downstream_remote_disconnect', party: 'downstream', retryable: false,
    hint: 'the client went away before the response was complete',
  },
  DOWNSTREAM_PROTOCOL_ERROR: {
    status: 400, body: 'Bad Request', flag: 'DPE', details: 'http1.codec_error', party: 'downstream', retryable: false,
    headers: { connection: 'close' },
    hint: 'the client sent a request that is not valid HTTP',
  },
  UNSUPPORTED_TRANSFER_ENCODING: {
    status: 501, body: 'Not Implemented', flag: 'DPE', details: 'http1.invalid_transfer_encoding', party: 'downstream', retryable: false,
    headers: { connection: 'close' },
    hint: 'the client sent a Transfer-Encoding other than chunked (gzip, ...), which the gateway cannot pass on intact',
  },
  UPGRADE_FAILED: {
    status: 403, body: '', flag: '-', details: 'upgrade_failed', party: 'downstream', retryable: false,
    hint: 'the client asked for an upgrade other than websocket (h2c upgrades are served as HTTP/1.1 instead)',
  },
  HEADERS_TOO_LARGE: {
    status: 431, body: 'Request Header Fields Too Large', flag: 'DPE', details: 'http1.headers_too_large',
    party: 'downstream', retryable: false,
    hint: 'the request headers exceed the gateway limit',
  },
  REQUEST_TIMEOUT: {
    status: 408, body: 'request timeout', flag: 'DPE', details: 'request_overall_timeout', party: 'downstream',
    retryable: false,
    hint: 'the client did not send its request (headers or body) in time',
  },
  INTERNAL: {
    status: 500, body: 'internal error', flag: 'LR', details: 'internal_error', party: 'internal', retryable: false,
    hint: 'a bug in meshgate: please report it with the log line',
  },
  DNS_RESOLUTION_FAILED: {
    status: 503, body: 'DNS resolution failure', flag: 'DF', details: 'dns_resolution_failure', party: 'upstream', retryable: false,
    hint: 'a resolution NONE service at a gateway, or per-port capture passthrough: the requested host (SNI or Host) did not resolve',
  },
  FAULT_ABORT: {
    status: 0, body: 'fault filter abort', flag: 'FI', details: 'fault_filter_abort', party: 'config', retryable: false,
    hint: 'a VirtualService fault.abort injected this reply (status from httpStatus; gRPC requests get grpc-status)',
  },
  FILTER_CHAIN_NOT_FOUND: {
    status: 0, body: '', flag: 'NR', details: 'filter_chain_not_found', party: 'config', retryable: false,
    hint: 'no Gateway server / route matches this connection (port, SNI)',
  },
  ORIGINAL_DST_UNKNOWN: {
    status: 0, body: '', flag: 'NR', details: 'original_destination_unknown', party: 'config', retryable: false,
    hint: 'per-port capture (no SO_ORIGINAL_DST): opaque TCP on a port no single service owns has no known destination',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof CATALOGUE;
export const ERRORS: Readonly<Record<ErrorCode, ErrorSpec>> = CATALOGUE;

/** A failure with its catalogue entry and the foreign error that caused it. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly spec: ErrorSpec;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].hint, options);
    this.name = 'GatewayError';
    this.code = code;
    this.spec = ERRORS[code];
  }
}

/**
 * Connect-level codes that mean "could not connect": errno codes (node:net, undici), and our HTTP/2
 * client's mesh peer that would not speak h2 by ALPN.
 */
const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EACCES', 'ERR_H2_ALPN',
]);

/** A code that means the connection was never made (refused, unreachable, TLS handshake failed). */
export function isConnectCode(code: string): boolean {
  return CONNECT_CODES.has(code) || isTlsHandshakeCode(code);
}

/** OpenSSL / node:tls codes for a failed upstream handshake (certificate, name or protocol). */
export function isTlsHandshakeCode(code: string): boolean {
  return /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED|SELF_SIGNED_CERT|HOSTNAME_MISMATCH)/.test(code);
}

/** What was thrown, as an Error (a thrown string or object wrapped). */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * An error shaped as undici's (`code` set), made by our own upstream pools (h1-pool.ts, h2c-pool.ts)
 * so that fromUpstreamError below maps every client alike.
 */
export function undiciShapedError(code: string, message: string, cause?: unknown): Error {
  return Object.assign(new Error(message, cause ? { cause } : undefined), { code });
}

/**
 * The one place foreign errors become gateway errors. `phase` says whether the request was already
 * written to a connection: a reset before that is a connect failure, after it a termination.
 */
export function fromUpstreamError(err: unknown, phase: 'connect' | 'request' = 'request'): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { code?: string; name?: string; message?: string; cause?: { code?: string } } | undefined;
  const code = e?.code ?? e?.cause?.code ?? '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT' && phase === 'connect') {
    return new GatewayError('CONNECT_TIMEOUT', e?.message, { cause: err });
  }
  if (isConnectCode(code)) return new GatewayError('CONNECT_FAILURE', e?.message, { cause: err });
  if (e?.name === 'HTTPParserError' || code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'ERR_H2_MALFORMED') {
    return new GatewayError('UPSTREAM_PROTOCOL_ERROR', e?.message, { cause: err });
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new GatewayError('UPSTREAM_TIMEOUT', e?.message, { cause: err });
  }
  if (code === 'UND_ERR_REFUSED_STREAM') return new GatewayError('UPSTREAM_REFUSED_STREAM', e?.message, { cause: err });
  if (code === 'UND_ERR_H2_RESET') return new GatewayError('UPSTREAM_REMOTE_RESET', e?.message, { cause: err });
  if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_CLOSED') {
    return new GatewayError(phase === 'connect' ? 'CONNECT_FAILURE' : 'UPSTREAM_RESET', e?.message, { cause: err });
  }
  if (phase === 'connect') return new GatewayError('CONNECT_FAILURE', e?.message, { cause: err });
  return new GatewayError('UPSTREAM_RESET', e?.message ?? String(err), { cause: err });
}
