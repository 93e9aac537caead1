// A protocol-faithful fake Kubernetes API server for tests, on 127.0.0.1 port 0 (node:http, or
// node:https when given a certificate). It follows the apiserver's list/watch protocol as clients
// meet it: discovery (/api, /apis, /api/v1, /apis/<group>/<version>; which networking.istio.io
// versions are served is configurable), lists with a resourceVersion and limit/continue pagination,
// watches as chunked newline-delimited JSON with headers flushed at once, replay of the events after
// a resourceVersion, a 410 Expired ERROR event for a resourceVersion older than the kept history,
// BOOKMARK events when asked for (allowWatchBookmarks), timeoutSeconds, and test hooks to change
// objects, compact the history, close watches gracefully or reset their connections, fail or hold
// requests and write raw lines. resourceVersions are opaque strings to clients (here a counter).
// It is checked against a real client (kubectl get -w) in test/integration/kube-source.test.ts.

import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export type KubeObj = Record<string, unknown> & {
  kind?: string;
  apiVersion?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; [k: string]: unknown };
};

interface TypeInfo {
  readonly kind: string;
  readonly group: string;
  readonly plural: string;
  readonly shortNames?: readonly string[];
}

const ISTIO_GROUP = 'networking.istio.io';
const TYPES: readonly TypeInfo[] = [
  { kind: 'Service', group: '', plural: 'services', shortNames: ['svc'] },
  { kind: 'Pod', group: '', plural: 'pods', shortNames: ['po'] },
  { kind: 'Secret', group: '', plural: 'secrets' },
  { kind: 'ConfigMap', group: '', plural: 'configmaps', shortNames: ['cm'] },
  { kind: 'Namespace', group: '', plural: 'namespaces', shortNames: ['ns'] },
  { kind: 'EndpointSlice', group: 'discovery.k8s.io', plural: 'endpointslices' },
  { kind: 'Gateway', group: ISTIO_GROUP, plural: 'gateways', shortNames: ['gw'] },
  { kind: 'VirtualService', group: ISTIO_GROUP, plural: 'virtualservices', shortNames: ['vs'] },
  { kind: 'DestinationRule', group: ISTIO_GROUP, plural: 'destinationrules', shortNames: ['dr'] },
  { kind: 'ServiceEntry', group: ISTIO_GROUP, plural: 'serviceentries', shortNames: ['se'] },
  { kind: 'WorkloadEntry', group: ISTIO_GROUP, plural: 'workloadentries', shortNames: ['we'] },
  { kind: 'Sidecar', group: ISTIO_GROUP, plural: 'sidecars' },
];
const CLUSTER_SCOPED = new Set(['Namespace']);

export interface FakeKubeOptions {
  /** networking.istio.io versions served, preferred first (default v1, v1beta1, v1alpha3). */
  readonly istioVersions?: readonly string[];
  /** Send a BOOKMARK to watches that allow them this often (0: only through `bookmark()`). */
  readonly bookmarkIntervalMs?: number;
  /** Require `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** Serve HTTPS with this certificate. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /**
   * Serve the API under this path only (`/k8s/clusters/c-abc`, as behind Rancher's proxy); anything
   * else is 404. `url` then includes it, as a kubeconfig's `server` would.
   */
  readonly pathPrefix?: string;
}

interface Watcher {
  readonly type: TypeInfo;
  readonly version: string;
  readonly namespace: string | undefined;
  readonly fieldSelector: Record<string, string>;
  readonly bookmarks: boolean;
  readonly res: http.ServerResponse;
  readonly socket: Socket;
  timer?: NodeJS.Timeout;
}

interface HistoryEntry {
  readonly rv: number;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly plural: string;
  readonly obj: KubeObj;
}

export interface RequestRecord {
  readonly method: string;
  /** The API path (without `pathPrefix`). */
  readonly path: string;
  /** The path as the request had it (with `pathPrefix`). */
  readonly rawPath: string;
  readonly query: Record<string, string>;
  readonly watch: boolean;
  readonly authorization?: string;
}

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;

export class FakeKubeApi {
  istioVersions: string[];
  token: string | undefined;
  readonly requests: RequestRecord[] = [];
  /** With `tls`: the SNI name of each TLS connection accepted ('' when the client sent none). */
  readonly serverNames: string[] = [];
  private server: http.Server | undefined;
  private readonly objects = new Map<string, Map<string, KubeObj>>(); // plural -> ns/name -> object
  private rv = 1;
  /** Events after this resourceVersion are kept; older ones are compacted away (410 Expired). */
  private oldestRv = 1;
  private history: HistoryEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private failures: { count: number; status: number; match: RegExp }[] = [];
  private held: { match: RegExp; waiting: (() => void)[] } | undefined;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  port = 0;

  constructor(private readonly opts: FakeKubeOptions = {}) {
    this.istioVersions = [...(opts.istioVersions ?? ['v1', 'v1beta1', 'v1alpha3'])];
    this.token = opts.token;
  }

  get url(): string {
    return `${this.opts.tls ? 'https' : 'http'}://127.0.0.1:${this.port}${this.opts.pathPrefix ?? ''}`;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  async start(): Promise<this> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res);
    this.server = this.opts.tls ? https.createServer({ cert: this.opts.tls.cert, key: this.opts.tls.key }, handler) : http.createServer(handler);
    this.server.on('clientError', (_err, socket) => socket.destroy());
    this.server.on('secureConnection', (socket: { servername?: string | false }) => this.serverNames.push(socket.servername || ''));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    if (this.opts.bookmarkIntervalMs) {
      this.bookmarkTimer = setInterval(() => this.bookmark(), this.opts.bookmarkIntervalMs);
      this.bookmarkTimer.unref();
    }
    return this;
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    this.dropWatches('graceful');
    this.release();
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  // ------------------------------------------------------------------ test hooks

  private typeOf(kind: string): TypeInfo {
    const t = TYPES.find((x) => x.kind === kind);
    if (!t) throw new Error(`fake API: unknown kind ${kind}`);
    return t;
  }

  /** Create or replace an object (kind and metadata.name needed; namespace defaults to `default`). */
  upsert(input: KubeObj): KubeObj {
    const type = this.typeOf(String(input.kind));
    const obj = clone(input);
    if (!CLUSTER_SCOPED.has(type.kind)) obj.metadata.namespace ??= 'default';
    const store = this.objects.get(type.plural) ?? new Map<string, KubeObj>();
    this.objects.set(type.plural, store);
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const prev = store.get(key);
    this.rv += 1;
    obj.metadata.resourceVersion = String(this.rv);
    obj.metadata['uid'] = (prev?.metadata['uid'] as string | undefined) ?? `uid-${type.plural}-${this.rv}`;
    obj.metadata['creationTimestamp'] = (prev?.metadata['creationTimestamp'] as string | undefined) ?? new Date(Date.UTC(2026, 0, 1, 0, 0, this.rv)).toISOString().replace('.000', '');
    store.set(key, obj);
    this.emit(prev ? 'MODIFIED' : 'ADDED', type, obj);
    return obj;
  }

  remove(kind: string, namespace: string, name: string): boolean {
    const type = this.typeOf(kind);
    const key = `${CLUSTER_SCOPED.has(kind) ? '' : namespace}/${name}`;
    const prev = this.objects.get(type.plural)?.get(key);
    if (!prev) return false;
    this.objects.get(type.plural)!.delete(key);
    this.rv += 1;
    const gone = clone(prev);
    gone.metadata.resourceVersion = String(this.rv);
    this.emit('DELETED', type, gone);
    return true;
  }

  get(kind: string, namespace: string, name: string): KubeObj | undefined {
    return this.objects.get(this.typeOf(kind).plural)?.get(`${namespace}/${name}`);
  }

  /** Forget the event history: watches from an older resourceVersion get 410 Expired. */
  compact(): void {
    this.history = [];
    this.oldestRv = this.rv;
  }

  /** End every open watch: `graceful` ends the response, `reset` destroys the connection (RST). */
  dropWatches(mode: 'graceful' | 'reset'): number {
    const n = this.watchers.size;
    for (const w of [...this.watchers]) this.endWatch(w, mode);
    return n;
  }

  /** Send a BOOKMARK (the current resourceVersion) to every watch that allows them. */
  bookmark(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      this.write(w, { type: 'BOOKMARK', object: { kind: w.type.kind, apiVersion: this.apiVersion(w.type, w.version), metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** Write a raw line (bad JSON, an oversized event...) to every open watch. */
  writeRaw(text: string): void {
    for (const w of this.watchers) w.res.write(text);
  }

  /** The next `count` requests whose path and query match get `status` with a Status body. */
  failNext(count: number, status: number, match: RegExp = /./): void {
    this.failures.push({ count, status, match });
  }

  /** Requests matching are held unanswered until `release()`. */
  hold(match: RegExp): void {
    this.held = { match, waiting: [] };
  }

  release(): void {
    const h = this.held;
    this.held = undefined;
    for (const go of h?.waiting ?? []) go();
  }

  openWatches(kind?: string): number {
    return [...this.watchers].filter((w) => !kind || w.type.kind === kind).length;
  }

  count(pred: (r: RequestRecord) => boolean): number {
    return this.requests.filter(pred).length;
  }

  // ------------------------------------------------------------------ protocol

  private apiVersion(type: TypeInfo, version: string): string {
    return type.group ? `${type.group}/${version}` : version;
  }

  private versionsOf(group: string): string[] {
    if (group === '') return ['v1'];
    if (group === ISTIO_GROUP) return this.istioVersions;
    return TYPES.some((t) => t.group === group) ? ['v1'] : [];
  }

  private emit(type: HistoryEntry['type'], info: TypeInfo, obj: KubeObj): void {
    const entry = { rv: this.rv, type, plural: info.plural, obj: clone(obj) };
    this.history.push(entry);
    if (this.history.length > 10_000) {
      this.oldestRv = this.history[0]!.rv;
      this.history.shift();
    }
    for (const w of this.watchers) {
      if (w.type !== info || !this.matches(w, obj)) continue;
      this.write(w, { type, object: this.present(obj, info, w.version) });
    }
  }

  private matches(w: { namespace: string | undefined; fieldSelector: Record<string, string> }, obj: KubeObj): boolean {
    if (w.namespace && obj.metadata.namespace !== w.namespace) return false;
    for (const [k, v] of Object.entries(w.fieldSelector)) {
      if (k === 'metadata.name' && obj.metadata.name !== v) return false;
      if (k === 'metadata.namespace' && obj.metadata.namespace !== v) return false;
    }
    return true;
  }

  /** As the API shows an object: its served apiVersion and kind. */
  private present(obj: KubeObj, type: TypeInfo, version: string): KubeObj {
    return { ...clone(obj), apiVersion: this.apiVersion(type, version), kind: type.kind };
  }

  private write(w: Watcher, event: unknown): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    w.res.write(JSON.stringify(event) + '\n');
  }

  private endWatch(w: Watcher, mode: 'graceful' | 'reset'): void {
    // Removed first, so nothing is written after the end.
    this.watchers.delete(w);
    if (w.timer) clearTimeout(w.timer);
    if (mode === 'graceful') w.res.end();
    else if (typeof w.socket.resetAndDestroy === 'function') w.socket.resetAndDestroy();
    else w.socket.destroy();
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    this.json(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    const url = new URL(req.url ?? '/', 'http://fake');
    const rawPath = url.pathname;
    const prefix = this.opts.pathPrefix ?? '';
    const outside = prefix !== '' && !rawPath.startsWith(`${prefix}/`);
    if (prefix && !outside) url.pathname = rawPath.slice(prefix.length);
    const query = Object.fromEntries(url.searchParams);
    const watch = query['watch'] === 'true' || query['watch'] === '1';
    const record: RequestRecord = { method: req.method ?? 'GET', path: url.pathname, rawPath, query, watch, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) };
    this.requests.push(record);
    if (outside) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (not under ${prefix})`);
    const go = () => this.route(req, res, url, query, watch);
    const line = `${url.pathname}${url.search}`;
    const failure = this.failures.find((f) => f.count > 0 && f.match.test(line));
    if (failure) {
      failure.count -= 1;
      return this.status(res, failure.status, failure.status === 410 ? 'Expired' : 'InternalError', `injected failure ${failure.status}`);
    }
    if (this.held && this.held.match.test(line)) {
      this.held.waiting.push(go);
      return;
    }
    go();
  }

  private route(req: http.IncomingMessage, res: http.ServerResponse, url: URL, query: Record<string, string>, watch: boolean): void {
    if (res.destroyed) return;
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) return this.status(res, 401, 'Unauthorized', 'Unauthorized');
    if (req.method !== 'GET') return this.status(res, 405, 'MethodNotAllowed', 'only GET is served by this fake');
    const parts = url.pathname.split('/').filter(Boolean);
    if (url.pathname === '/version') return this.json(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0-fake', platform: 'linux/amd64' });
    if (url.pathname === '/api') return this.json(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.port}` }] });
    if (url.pathname === '/apis') return this.json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: this.groups().filter(Boolean).map((g) => this.groupDoc(g)).filter((g) => g.versions.length > 0) });
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts.length >= 2) {
      group = '';
      version = parts[1]!;
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 2) {
      group = parts[1]!;
      if (parts.length === 2) {
        const doc = this.groupDoc(group);
        if (doc.versions.length === 0) return this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
        return this.json(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...doc });
      }
      version = parts[2]!;
      rest = parts.slice(3);
    } else {
      return this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
    }
    if (!this.versionsOf(group).includes(version) || !this.groups().includes(group)) return this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
    if (rest.length === 0) return this.json(res, 200, this.resourceList(group, version));
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = decodeURIComponent(rest[1]!);
      rest = rest.slice(2);
    }
    const type = TYPES.find((t) => t.group === group && t.plural === rest[0]);
    if (!type || rest.length > 2) return this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
    const fieldSelector: Record<string, string> = {};
    for (const part of (query['fieldSelector'] ?? '').split(',').filter(Boolean)) {
      const [k, v] = part.split('=');
      if (k && v !== undefined) fieldSelector[k.replace(/=$/, '')] = v;
    }
    if (rest.length === 2) {
      fieldSelector['metadata.name'] = decodeURIComponent(rest[1]!);
      if (!watch) {
        const obj = this.objects.get(type.plural)?.get(`${namespace ?? ''}/${rest[1]}`);
        if (!obj) return this.status(res, 404, 'NotFound', `${type.plural} "${rest[1]}" not found`);
        return this.json(res, 200, this.present(obj, type, version));
      }
    }
    const scope = { namespace, fieldSelector };
    if (watch) return this.watch(req, res, type, version, scope, query);
    return this.list(res, type, version, scope, query);
  }

  private groups(): string[] {
    return ['', ...new Set(TYPES.map((t) => t.group).filter(Boolean))];
  }

  private groupDoc(group: string): { name: string; versions: { groupVersion: string; version: string }[]; preferredVersion?: { groupVersion: string; version: string } } {
    const versions = this.versionsOf(group).map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
    return { name: group, versions, ...(versions[0] ? { preferredVersion: versions[0] } : {}) };
  }

  private resourceList(group: string, version: string): unknown {
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: group ? `${group}/${version}` : version,
      resources: TYPES.filter((t) => t.group === group).map((t) => ({
        name: t.plural, singularName: t.kind.toLowerCase(), namespaced: !CLUSTER_SCOPED.has(t.kind), kind: t.kind,
        verbs: ['get', 'list', 'watch'], ...(t.shortNames ? { shortNames: t.shortNames } : {}),
      })),
    };
  }

  private selected(type: TypeInfo, scope: { namespace: string | undefined; fieldSelector: Record<string, string> }): KubeObj[] {
    return [...(this.objects.get(type.plural)?.values() ?? [])]
      .filter((o) => this.matches(scope, o))
      .sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  }

  private list(res: http.ServerResponse, type: TypeInfo, version: string, scope: { namespace: string | undefined; fieldSelector: Record<string, string> }, query: Record<string, string>): void {
    let offset = 0;
    let rv = this.rv;
    if (query['continue']) {
      try {
        const token = JSON.parse(Buffer.from(query['continue'], 'base64url').toString()) as { rv: number; offset: number };
        if (token.rv < this.oldestRv) return this.status(res, 410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
        offset = token.offset;
        rv = token.rv;
      } catch {
        return this.status(res, 400, 'BadRequest', 'invalid continue token');
      }
    }
    const all = this.selected(type, scope);
    const limit = Number(query['limit'] ?? 0);
    const page = limit > 0 ? all.slice(offset, offset + limit) : all.slice(offset);
    const more = limit > 0 && offset + limit < all.length;
    // Built-in kinds' list items carry no kind/apiVersion (as the real API serves them); CRDs' do.
    const items = page.map((o) => (type.group === ISTIO_GROUP ? this.present(o, type, version) : (({ kind: _k, apiVersion: _a, ...x }) => x)(clone(o))));
    this.json(res, 200, {
      kind: `${type.kind}List`,
      apiVersion: this.apiVersion(type, version),
      metadata: {
        resourceVersion: String(rv),
        ...(more ? { continue: Buffer.from(JSON.stringify({ rv, offset: offset + limit })).toString('base64url'), remainingItemCount: all.length - offset - limit } : {}),
      },
      items,
    });
  }

  private watch(
    req: http.IncomingMessage, res: http.ServerResponse, type: TypeInfo, version: string,
    scope: { namespace: string | undefined; fieldSelector: Record<string, string> }, query: Record<string, string>,
  ): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders(); // clients wait for the headers before they read anything
    const w: Watcher = {
      type, version, namespace: scope.namespace, fieldSelector: scope.fieldSelector, bookmarks: query['allowWatchBookmarks'] === 'true',
      res, socket: req.socket,
    };
    const from = query['resourceVersion'];
    if (from === undefined || from === '' || from === '0') {
      for (const o of this.selected(type, scope)) this.write(w, { type: 'ADDED', object: this.present(o, type, version) });
    } else {
      const rv = Number(from);
      if (!Number.isFinite(rv) || rv < this.oldestRv) {
        this.write(w, {
          type: 'ERROR',
          object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${this.oldestRv})`, reason: 'Expired', code: 410 },
        });
        res.end();
        return;
      }
      for (const e of this.history) {
        if (e.rv <= rv || e.plural !== type.plural) continue;
        if (this.matches(w, e.obj)) this.write(w, { type: e.type, object: this.present(e.obj, type, version) });
      }
    }
    this.watchers.add(w);
    const seconds = Number(query['timeoutSeconds'] ?? 0);
    if (seconds > 0) w.timer = setTimeout(() => this.endWatch(w, 'graceful'), seconds * 1000);
    const gone = () => {
      this.watchers.delete(w);
      if (w.timer) clearTimeout(w.timer);
    };
    res.on('close', gone);
    req.socket.on('error', gone);
  }
}
