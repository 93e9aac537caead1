// One kind in one namespace (or all), kept in memory from the API: list (paginated), then watch
// from the list's resourceVersion; bookmarks and events move the resourceVersion on, so a dropped
// watch resumes where it stopped; 410 Gone (an ERROR event or the HTTP status) lists again; any
// other error or reset waits a jittered exponential backoff and tries again. Istio kinds are looked
// up by discovery (v1, else v1beta1, else v1alpha3); a kind the API does not serve counts as synced
// and empty, and is looked up again later.

import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, type WatchEvent } from './client';
import { asError } from '../errors';

export interface ResourceType {
  readonly kind: string;
  /** '' for the core group. */
  readonly group: string;
  /** Versions in order of preference; the first one the API serves is used. */
  readonly versions: readonly string[];
  readonly plural: string;
}

export interface WatchTarget {
  readonly type: ResourceType;
  /** undefined: every namespace. */
  readonly namespace?: string;
  /** e.g. `metadata.name=istio`. */
  readonly fieldSelector?: string;
  /** Keep only what the source needs of each object (memory). */
  readonly slim?: (obj: KubeObject) => KubeObject;
}

export type KubeObject = Record<string, unknown> & { metadata?: { name?: string; namespace?: string; resourceVersion?: string; [k: string]: unknown } };

export interface ReflectorTuning {
  /** Items per list page (`limit`). */
  readonly pageSize: number;
  /**
   * The shortest `timeoutSeconds` asked of a watch: each asks a random value between this and twice
   * it (client-go's minWatchTimeout), so the watches of many proxies and kinds do not all end and
   * reconnect together. The server ends the watch then, and it is opened again.
   */
  readonly watchTimeoutSeconds: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  /** How often a kind the API does not serve is looked up again. */
  readonly rediscoverMs: number;
}

export const DEFAULT_TUNING: ReflectorTuning = {
  pageSize: 500,
  watchTimeoutSeconds: 300,
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
  rediscoverMs: 60_000,
};

/** The next backoff delay: exponential up to the cap, then a random 50-100 % of it (jitter). */
export function backoffDelay(attempt: number, t: Pick<ReflectorTuning, 'backoffInitialMs' | 'backoffMaxMs'>, random: () => number = Math.random): number {
  const base = Math.min(t.backoffMaxMs, t.backoffInitialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base * (0.5 + random() / 2));
}

/** A watch's `timeoutSeconds`: `min` times 1 to 2, at random (as client-go), whole seconds. */
export function watchTimeout(min: number, random: () => number = Math.random): number {
  return Math.max(1, Math.floor(min * (Math.min(Math.max(random(), 0), 1) + 1)));
}

/** The API path of a collection: `/api/v1[/namespaces/ns]/plural` or `/apis/group/version[...]`. */
export function collectionPath(type: ResourceType, version: string, namespace: string | undefined): string {
  const root = type.group ? `/apis/${type.group}/${version}` : `/api/${version}`;
  return `${root}${namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ''}/${type.plural}`;
}

/**
 * The first of the type's versions that the API serves with this resource, or undefined when none
 * is (the group or the resource is missing: CRDs not installed).
 */
export async function discoverVersion(client: KubeClient, type: ResourceType, signal?: AbortSignal): Promise<string | undefined> {
  if (!type.group) return type.versions[0];
  let served: Set<string>;
  try {
    const group = await client.getJson(`/apis/${type.group}`, signal) as { versions?: { version?: string }[] };
    served = new Set((group.versions ?? []).map((v) => v.version ?? ''));
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return undefined;
    throw err;
  }
  for (const v of type.versions) {
    if (!served.has(v)) continue;
    try {
      const list = await client.getJson(`/apis/${type.group}/${v}`, signal) as { resources?: { name?: string }[] };
      if ((list.resources ?? []).some((r) => r.name === type.plural)) return v;
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err;
    }
  }
  return undefined;
}

class Gone extends Error {}

const objectKey = (o: KubeObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

export interface ReflectorEvents {
  /** The objects changed (after the first sync only). */
  readonly onChange: (target: WatchTarget) => void;
  /** The first full list is in (or the kind is not served). */
  readonly onSynced: (target: WatchTarget) => void;
}

export class Reflector {
  /** The objects as of the last event, by `namespace/name`; a list replaces the map whole. */
  objects = new Map<string, KubeObject>();
  /** The served version in use; undefined before discovery or when not served. */
  version: string | undefined;
  synced = false;
  /** Counters for tests and /config_dump. */
  readonly stats = { lists: 0, watches: 0, relistsOnGone: 0, errors: 0, lastError: '' };
  private resourceVersion: string | undefined;
  private attempt = 0;
  private readonly abort = new AbortController();
  private stopped = false;
  private running: Promise<void> | undefined;

  constructor(
    private readonly client: KubeClient,
    readonly target: WatchTarget,
    private readonly events: ReflectorEvents,
    private readonly log: Logger,
    private readonly tuning: ReflectorTuning = DEFAULT_TUNING,
    private readonly random: () => number = Math.random,
  ) {}

  get name(): string {
    return `${this.target.type.kind}${this.target.namespace ? ` in ${this.target.namespace}` : ''}`;
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.running;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.abort.signal.addEventListener('abort', done);
    });
  }

  private markSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.events.onSynced(this.target);
  }

  private changed(): void {
    if (this.synced) this.events.onChange(this.target);
  }

  /** The loop: each turn waits on the API or on a backoff, so it never spins. */
  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.version === undefined) {
          this.version = await discoverVersion(this.client, this.target.type, this.abort.signal);
          if (this.version === undefined) {
            this.log.warn({ kind: this.target.type.kind }, `the API does not serve ${this.target.type.kind} (${this.target.type.group}, versions ${this.target.type.versions.join(', ')}): treated as empty, looked up again in ${Math.round(this.tuning.rediscoverMs / 1000)} s`);
            if (this.objects.size > 0) {
              this.objects = new Map();
              this.changed();
            }
            this.markSynced();
            await this.sleep(this.tuning.rediscoverMs);
            continue;
          }
        }
        if (this.resourceVersion === undefined) await this.list();
        const started = Date.now();
        const delivered = await this.watchOnce();
        // A watch the server ends at once, with nothing in it, must not make this loop spin.
        if (delivered === 0 && Date.now() - started < 1000) await this.sleep(backoffDelay(this.attempt++, this.tuning, this.random));
        else this.attempt = 0;
      } catch (err) {
        if (this.stopped) break;
        if (err instanceof Gone) {
          this.stats.relistsOnGone += 1;
          this.log.info({ kind: this.target.type.kind }, `${this.name}: resourceVersion ${this.resourceVersion} is too old (410 Gone): listing again`);
          this.resourceVersion = undefined;
          if (this.stats.relistsOnGone % 3 === 0) await this.sleep(backoffDelay(this.attempt++, this.tuning, this.random));
          continue;
        }
        this.stats.errors += 1;
        const message = asError(err).message;
        this.stats.lastError = message;
        if (err instanceof KubeApiError && err.status === 404) this.version = undefined; // CRD removed or version dropped
        const delay = backoffDelay(this.attempt++, this.tuning, this.random);
        this.log.warn({ kind: this.target.type.kind, err: message, retryInMs: delay }, `${this.name}: ${message}; retrying`);
        await this.sleep(delay);
      }
    }
  }

  private query(extra: Record<string, string>): string {
    const q = new URLSearchParams(extra);
    if (this.target.fieldSelector) q.set('fieldSelector', this.target.fieldSelector);
    return `${collectionPath(this.target.type, this.version!, this.target.namespace)}?${q.toString()}`;
  }

  private slim(o: KubeObject): KubeObject {
    return this.target.slim ? this.target.slim(o) : o;
  }

  /** Every page, then one swap: a half-read list is never visible. */
  private async list(): Promise<void> {
    const next = new Map<string, KubeObject>();
    let cont = '';
    let rv = '';
    for (let page = 0; page < 100_000; page++) {
      const params: Record<string, string> = { limit: String(this.tuning.pageSize) };
      if (cont) params['continue'] = cont;
      let body: { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown };
      try {
        body = await this.client.getJson(this.query(params), this.abort.signal) as typeof body;
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 410) throw new KubeApiError(`${this.name}: the list's continue token expired (410); listing from the start`, 410, 'Expired');
        throw err;
      }
      const items = Array.isArray(body.items) ? body.items as KubeObject[] : [];
      for (const item of items) if (item && typeof item === 'object') next.set(objectKey(item), this.slim(item));
      rv = body.metadata?.resourceVersion ?? rv;
      cont = body.metadata?.continue ?? '';
      if (!cont) break;
    }
    this.stats.lists += 1;
    this.objects = next;
    this.resourceVersion = rv;
    this.attempt = 0;
    this.changed();
    this.markSynced();
  }

  /** One watch from the current resourceVersion; resolves with the number of events when the server ends it. */
  private async watchOnce(): Promise<number> {
    this.stats.watches += 1;
    let delivered = 0;
    const path = this.query({
      watch: '1', resourceVersion: this.resourceVersion ?? '', allowWatchBookmarks: 'true',
      timeoutSeconds: String(watchTimeout(this.tuning.watchTimeoutSeconds, this.random)),
    });
    try {
      await this.client.watch(path, (e) => {
        delivered += 1;
        this.apply(e);
      }, this.abort.signal);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 410) throw new Gone();
      throw err;
    }
    return delivered;
  }

  private apply(e: WatchEvent): void {
    const obj = e.object as KubeObject;
    const rv = obj.metadata?.resourceVersion;
    switch (e.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const k = objectKey(obj);
        const next = this.slim(obj);
        const prev = this.objects.get(k);
        this.objects.set(k, next);
        // A slimmed object (a Pod's status churn) that kept what we read is no change.
        if (!(this.target.slim && prev && JSON.stringify(prev) === JSON.stringify(next))) this.changed();
        break;
      }
      case 'DELETED':
        this.objects.delete(objectKey(obj));
        this.changed();
        break;
      case 'BOOKMARK':
        break;
      case 'ERROR': {
        const status = obj as { code?: number; reason?: string; message?: string };
        if (status.code === 410 || status.reason === 'Expired' || status.reason === 'Gone') throw new KubeApiError(`watch ${this.name}: ${status.message ?? 'Gone'}`, 410, 'Expired');
        throw new KubeApiError(`watch ${this.name}: ERROR ${status.code ?? ''} ${status.reason ?? ''} ${status.message ?? ''}`.trim(), status.code ?? 0, status.reason ?? '');
      }
      default:
        return; // an unknown event type moves nothing
    }
    if (typeof rv === 'string' && rv !== '') this.resourceVersion = rv;
  }
}
