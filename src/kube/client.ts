// A small Kubernetes API client over undici: GET a JSON document (lists, discovery) and stream a
// watch (newline-delimited JSON events). Bounded everywhere: request and idle timeouts, a maximum
// size for a list page and for one watch event. Errors come back as KubeApiError with the HTTP
// status and the API's own Status reason, never as a crash.

import fs from 'node:fs';
import type { Agent, ProxyAgent, Dispatcher } from 'undici';
import { undici } from '../undici';
import { ExecCredentialSource } from './exec-credential';
import type { KubeConnection } from './connection';
import { asError } from '../errors';

export interface KubeClientOptions {
  /** Headers of any request, and the whole body of a list page (default 30 s). */
  readonly requestTimeoutMs: number;
  /**
   * Longest silence on a watch stream before it is dropped and restarted (default 10 min + 1 min: a
   * quiet watch lasts up to twice the reflector's minimum timeoutSeconds, 2 x 5 min).
   */
  readonly watchIdleTimeoutMs: number;
  /** Largest list page or discovery document (default 256 MiB). */
  readonly maxBodyBytes: number;
  /** Largest single watch event (default 16 MiB; etcd's own limit is 1.5 MiB per object). */
  readonly maxEventBytes: number;
  /** How often a token file is read again (bound service-account tokens rotate; default 60 s). */
  readonly tokenRefreshMs: number;
}

export const DEFAULT_CLIENT_OPTIONS: KubeClientOptions = {
  requestTimeoutMs: 30_000,
  watchIdleTimeoutMs: 660_000,
  maxBodyBytes: 256 * 1024 * 1024,
  maxEventBytes: 16 * 1024 * 1024,
  tokenRefreshMs: 60_000,
};

/** An API answer other than 2xx, or a failure to talk to the API at all (status 0). */
export class KubeApiError extends Error {
  constructor(message: string, readonly status: number, readonly reason = '', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeApiError';
  }
}

/** A watch event: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR (object is then a Status). */
export interface WatchEvent {
  readonly type: string;
  readonly object: Record<string, unknown>;
}

/**
 * Splits a byte stream into lines without ever holding more than `max` bytes of an unfinished
 * line; a longer line is an error (the watch is then restarted).
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly max: number) {}

  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      if (this.pendingBytes + part.length > this.max) throw new KubeApiError(`a watch event is longer than ${this.max} bytes`, 0, 'EventTooLarge');
      const line = this.pending.length > 0 ? Buffer.concat([...this.pending, part]).toString('utf8') : part.toString('utf8');
      this.pending = [];
      this.pendingBytes = 0;
      if (line.trim() !== '') lines.push(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.pendingBytes += rest.length;
      if (this.pendingBytes > this.max) throw new KubeApiError(`a watch event is longer than ${this.max} bytes`, 0, 'EventTooLarge');
      this.pending.push(Buffer.from(rest));
    }
    return lines;
  }
}

function statusMessage(status: number, text: string): { message: string; reason: string } {
  try {
    const s = JSON.parse(text) as { message?: unknown; reason?: unknown };
    return { message: typeof s.message === 'string' ? s.message : text.slice(0, 200), reason: typeof s.reason === 'string' ? s.reason : '' };
  } catch {
    return { message: text.slice(0, 200) || `HTTP ${status}`, reason: '' };
  }
}

/**
 * A kubeconfig `server` as client-go reads it: the scheme, host and port to connect to, and a path
 * (`https://rancher.example.com/k8s/clusters/c-abc`: an API behind a proxy) that is the base of every
 * API path. No trailing slash on the base path ('' when there is none).
 */
export function splitServer(server: string): { origin: string; basePath: string } {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new Error(`the API server address ${JSON.stringify(server)} is not a URL (https://host:port[/path])`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`the API server address ${JSON.stringify(server)}: only https:// (or http://) is supported`);
  if (url.search || url.hash) throw new Error(`the API server address ${JSON.stringify(server)} has a query or fragment`);
  return { origin: url.origin, basePath: url.pathname.replace(/\/+$/, '') };
}

export class KubeClient {
  private readonly agent: Agent | ProxyAgent;
  private readonly opts: KubeClientOptions;
  private token: { value: string; readAt: number } | undefined;
  private readonly exec: ExecCredentialSource | undefined;
  private readonly origin: string;
  private readonly basePath: string;
  /** kubeconfig tls-server-name: SNI and the name the server certificate is checked against. */
  private readonly servername: string | undefined;

  constructor(readonly connection: KubeConnection, opts: Partial<KubeClientOptions> = {}, private readonly now: () => number = Date.now) {
    this.opts = { ...DEFAULT_CLIENT_OPTIONS, ...opts };
    ({ origin: this.origin, basePath: this.basePath } = splitServer(connection.server));
    this.servername = this.origin.startsWith('https:') ? connection.tlsServerName : undefined;
    this.exec = connection.exec ? new ExecCredentialSource(connection.exec) : undefined;
    const tlsOptions = {
      ...(connection.ca ? { ca: connection.ca } : {}),
      ...(connection.cert ? { cert: connection.cert } : {}),
      ...(connection.key ? { key: connection.key } : {}),
      rejectUnauthorized: !connection.insecureSkipTlsVerify,
      // As client-go's TLSClientConfig.ServerName: SNI and certificate verification use this name
      // (node's tls.connect checks the certificate against servername) for an IP or a host name.
      ...(this.servername ? { servername: this.servername } : {}),
      timeout: this.opts.requestTimeoutMs,
    };
    const common = {
      headersTimeout: this.opts.requestTimeoutMs,
      keepAliveTimeout: 30_000,
      // No connection limit: each watch holds one HTTP/1.1 connection for minutes, and a limit
      // would leave lists queued behind them.
    };
    // kubeconfig proxy-url: a tunnel (CONNECT) through the proxy; TLS to the API server inside it.
    this.agent = connection.proxyUrl
      ? new (undici().ProxyAgent)({ uri: connection.proxyUrl, requestTls: tlsOptions, proxyTunnel: true, ...common })
      : new (undici().Agent)({ connect: tlsOptions, ...common });
  }

  /** The bearer token: fixed, the token file as of at most `tokenRefreshMs` ago, or the exec plugin's. */
  private async bearer(): Promise<string | undefined> {
    if (this.connection.token) return this.connection.token;
    if (this.exec) return this.exec.token();
    if (!this.connection.tokenFile) return undefined;
    if (!this.token || this.now() - this.token.readAt >= this.opts.tokenRefreshMs) this.readTokenFile();
    return this.token?.value;
  }

  /** Read the token file now; on a failure the previous token is kept (the kubelet swaps the file atomically). */
  private readTokenFile(): void {
    try {
      this.token = { value: fs.readFileSync(this.connection.tokenFile!, 'utf8').trim(), readAt: this.now() };
    } catch {
      // keep the previous token
    }
  }

  /**
   * After a 401 for `token`: a refused plugin token is run for again on the next attempt (the
   * reflector retries with backoff); a token file is read again at once, and true is returned when it
   * now holds another token (rotated since it was last read), so the request can be sent again.
   */
  private refused(token: string): boolean {
    if (this.exec) {
      this.exec.invalidate(token);
      return false;
    }
    if (this.connection.token || !this.connection.tokenFile) return false;
    this.readTokenFile();
    return this.token !== undefined && this.token.value !== token;
  }

  private async send(path: string, signal: AbortSignal | undefined, bodyTimeout: number): Promise<Dispatcher.ResponseData> {
    for (let attempt = 0; ; attempt++) {
      let token: string | undefined;
      try {
        token = await this.bearer();
      } catch (err) {
        throw new KubeApiError(`GET ${path}: ${asError(err).message}`, 0, 'ExecCredential', { cause: err });
      }
      let res: Dispatcher.ResponseData;
      try {
        res = await this.agent.request({
          origin: this.origin,
          path: this.basePath + path,
          method: 'GET',
          headers: { accept: 'application/json', 'user-agent': 'meshgate', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          // The same per request: undici prefers a request's servername (or one derived from a Host
          // header) to the connector's. The Host header itself stays the server address's, as in kubectl.
          ...(this.servername ? { servername: this.servername } : {}),
          signal: signal ?? null,
          headersTimeout: this.opts.requestTimeoutMs,
          bodyTimeout,
        });
      } catch (err) {
        throw new KubeApiError(`GET ${path}: ${asError(err).message}${this.tlsHint(err)}`, 0, (err as { code?: string }).code ?? '', { cause: err });
      }
      // Once only: a token file that changed again between two reads is left to the next request.
      if (res.statusCode === 401 && token && this.refused(token) && attempt === 0) {
        await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        continue;
      }
      return res;
    }
  }

  /** What to do about a server certificate that does not name the host connected to. */
  private tlsHint(err: unknown): string {
    const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code;
    if (code !== 'ERR_TLS_CERT_ALTNAME_INVALID') return '';
    return this.servername
      ? ` (the certificate was checked for tls-server-name ${this.servername}, from ${this.connection.describe})`
      : ` (the API server's certificate does not name the host of ${this.origin}: set the cluster's tls-server-name in the kubeconfig to a name it has, as kubectl would need too)`;
  }

  private async failure(path: string, res: Dispatcher.ResponseData): Promise<KubeApiError> {
    const text = await readCapped(res.body, 64 * 1024).catch(() => '');
    const { message, reason } = statusMessage(res.statusCode, text);
    const hint = res.statusCode === 401 ? ' (check the token or client certificate)'
      : res.statusCode === 403 ? ' (check the service account\'s RBAC: get, list and watch are needed)' : '';
    return new KubeApiError(`GET ${path}: ${res.statusCode} ${message}${hint}`, res.statusCode, reason);
  }

  /** GET a JSON document; throws KubeApiError on a non-2xx answer, a timeout or an oversized body. */
  async getJson(path: string, signal?: AbortSignal): Promise<unknown> {
    const res = await this.send(path, signal, this.opts.requestTimeoutMs);
    if (res.statusCode < 200 || res.statusCode >= 300) throw await this.failure(path, res);
    let text: string;
    try {
      text = await readCapped(res.body, this.opts.maxBodyBytes);
    } catch (err) {
      throw err instanceof KubeApiError ? err : new KubeApiError(`GET ${path}: ${asError(err).message}`, 0, '', { cause: err });
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new KubeApiError(`GET ${path}: the answer is not JSON: ${asError(err).message}`, res.statusCode, 'BadJSON');
    }
  }

  /**
   * Stream a watch: `onEvent` for each event, in order. Resolves when the server ends the stream
   * (timeoutSeconds reached, or a graceful close); rejects with KubeApiError on a non-2xx answer, a
   * reset, an idle stream, bad JSON or an oversized event. Aborting `signal` rejects too.
   */
  async watch(path: string, onEvent: (e: WatchEvent) => void, signal?: AbortSignal): Promise<void> {
    const res = await this.send(path, signal, this.opts.watchIdleTimeoutMs);
    if (res.statusCode < 200 || res.statusCode >= 300) throw await this.failure(path, res);
    const lines = new LineSplitter(this.opts.maxEventBytes);
    try {
      for await (const chunk of res.body) {
        for (const line of lines.push(chunk as Buffer)) {
          let event: WatchEvent;
          try {
            event = JSON.parse(line) as WatchEvent;
          } catch {
            throw new KubeApiError(`watch ${path}: an event is not JSON: ${line.slice(0, 100)}`, 200, 'BadJSON');
          }
          if (typeof event?.type !== 'string' || typeof event.object !== 'object' || event.object === null) {
            throw new KubeApiError(`watch ${path}: an event has no type or object: ${line.slice(0, 100)}`, 200, 'BadEvent');
          }
          onEvent(event);
        }
      }
    } catch (err) {
      res.body.destroy();
      if (err instanceof KubeApiError) throw err;
      throw new KubeApiError(`watch ${path}: ${asError(err).message}`, 0, (err as { code?: string }).code ?? '', { cause: err });
    }
  }

  close(): Promise<void> {
    return this.agent.destroy().catch(() => undefined);
  }
}

/** Read a whole body as UTF-8, failing (and destroying the stream) past `max` bytes. */
async function readCapped(body: Dispatcher.ResponseData['body'], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > max) {
      body.destroy();
      throw new KubeApiError(`the answer is larger than ${max} bytes`, 0, 'TooLarge');
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
