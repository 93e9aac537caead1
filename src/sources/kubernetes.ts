// The Kubernetes API source: lists and watches the Istio kinds, Services, EndpointSlices, Pods, the
// gateway namespace's Secrets and the `istio` ConfigMap, and turns them into the same Resource
// records the YAML loader makes (the "file" of each is `kubernetes:namespace/Kind/name`), so
// validate and compile are shared with the file source. An object with errors is left out alone;
// Services + EndpointSlices + Pods also become registry services (src/kube/registry.ts).

import type { Logger } from 'pino';
import { toResource } from '../config/load';
import { validateEach, whoKey, type ValidatedObjects } from '../config/pipeline';
import type { ConfigIssue, Resource } from '../config/types';
import { KubeClient, type KubeClientOptions } from '../kube/client';
import type { KubeConnection } from '../kube/connection';
import { DEFAULT_TUNING, Reflector, type KubeObject, type ReflectorTuning, type ResourceType, type WatchTarget } from '../kube/reflector';
import { kubeServiceDefs, type EndpointSliceObject, type KubeServiceObject, type OwnerReference, type PodObject } from '../kube/registry';
import type { ConfigSource, SourceLoad } from './source';

const ISTIO_VERSIONS = ['v1', 'v1beta1', 'v1alpha3'] as const;
const istio = (kind: string, plural: string): ResourceType => ({ kind, group: 'networking.istio.io', versions: ISTIO_VERSIONS, plural });

/** What the source watches. */
export const KUBE_TYPES = {
  Gateway: istio('Gateway', 'gateways'),
  VirtualService: istio('VirtualService', 'virtualservices'),
  DestinationRule: istio('DestinationRule', 'destinationrules'),
  ServiceEntry: istio('ServiceEntry', 'serviceentries'),
  WorkloadEntry: istio('WorkloadEntry', 'workloadentries'),
  Sidecar: istio('Sidecar', 'sidecars'),
  Service: { kind: 'Service', group: '', versions: ['v1'], plural: 'services' },
  EndpointSlice: { kind: 'EndpointSlice', group: 'discovery.k8s.io', versions: ['v1'], plural: 'endpointslices' },
  Pod: { kind: 'Pod', group: '', versions: ['v1'], plural: 'pods' },
  Secret: { kind: 'Secret', group: '', versions: ['v1'], plural: 'secrets' },
  ConfigMap: { kind: 'ConfigMap', group: '', versions: ['v1'], plural: 'configmaps' },
} as const satisfies Record<string, ResourceType>;

const ISTIO_KINDS = ['Gateway', 'VirtualService', 'DestinationRule', 'ServiceEntry', 'WorkloadEntry', 'Sidecar'] as const;
/** The namespace and name of the mesh config ConfigMap. */
const MESH_CONFIGMAP = { namespace: 'istio-system', name: 'istio' };

export interface KubeSourceOptions {
  readonly connection: KubeConnection;
  /** Namespaces to watch (Istio kinds, Services, EndpointSlices, Pods); empty: all namespaces. */
  readonly watchNamespaces: readonly string[];
  /** The gateway's own namespace: where its credentialName Secrets are. */
  readonly namespace: string;
  readonly log: Logger;
  readonly tuning?: Partial<ReflectorTuning>;
  readonly client?: Partial<KubeClientOptions>;
  /** Events within this window make one reload (default 100 ms). */
  readonly debounceMs?: number;
}

/**
 * Pods: only what endpoints need: labels and IPs, and what names the Pod's workload (the generated-name
 * prefix, and the controlling owner reference's kind and name; see workloadNameOf).
 */
function slimPod(o: KubeObject): KubeObject {
  const p = o as PodObject;
  const refs: unknown = p.metadata?.ownerReferences;
  const controllers = (Array.isArray(refs) ? refs as unknown[] : [])
    .filter((r): r is OwnerReference => typeof r === 'object' && r !== null && (r as OwnerReference).controller === true)
    .map((r) => ({ kind: typeof r.kind === 'string' ? r.kind : '', name: typeof r.name === 'string' ? r.name : '', controller: true }));
  const generateName = p.metadata?.generateName;
  return {
    metadata: {
      name: p.metadata?.name, namespace: p.metadata?.namespace, labels: p.metadata?.labels ?? {},
      ...(typeof generateName === 'string' && generateName !== '' ? { generateName } : {}),
      ...(controllers.length > 0 ? { ownerReferences: controllers } : {}),
    },
    status: { podIP: p.status?.podIP, podIPs: p.status?.podIPs ?? [] },
  };
}

/** EndpointSlices: the addresses, readiness, pod references and ports. */
function slimSlice(o: KubeObject): KubeObject {
  const s = o as EndpointSliceObject;
  return {
    metadata: { name: s.metadata?.name, namespace: s.metadata?.namespace, labels: s.metadata?.labels ?? {} },
    addressType: s.addressType,
    endpoints: (s.endpoints ?? []).map((e) => ({ addresses: e?.addresses ?? [], conditions: e?.conditions ?? {}, targetRef: e?.targetRef ?? null })),
    ports: s.ports ?? [],
  };
}

type Obj = Record<string, unknown>;
const asObj = (v: unknown): Obj | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Obj : undefined);
const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/**
 * Secret names the config refers to: Gateway `credentialName(s)` (with their `-cacert` companions)
 * and DestinationRule `tls.credentialName` at every level. Read from the raw objects, defensively.
 */
export function referencedSecrets(gateways: readonly KubeObject[], rules: readonly KubeObject[]): Set<string> {
  const names = new Set<string>();
  const add = (tls: unknown) => {
    const t = asObj(tls);
    for (const n of [t?.['credentialName'], ...asList(t?.['credentialNames'])]) {
      if (typeof n === 'string' && n) names.add(n).add(`${n}-cacert`);
    }
  };
  for (const gw of gateways) for (const s of asList(asObj(gw['spec'])?.['servers'])) add(asObj(s)?.['tls']);
  const policy = (p: unknown) => {
    add(asObj(p)?.['tls']);
    for (const pl of asList(asObj(p)?.['portLevelSettings'])) add(asObj(pl)?.['tls']);
  };
  for (const dr of rules) {
    const spec = asObj(dr['spec']);
    policy(spec?.['trafficPolicy']);
    for (const sub of asList(spec?.['subsets'])) policy(asObj(sub)?.['trafficPolicy']);
  }
  return names;
}

const stamp = (o: KubeObject) => String((o.metadata as Obj | undefined)?.['creationTimestamp'] ?? '');

export class KubeSource implements ConfigSource {
  readonly kind = 'kubernetes';
  readonly client: KubeClient;
  readonly reflectors: Reflector[] = [];
  private onChange: ((reason: string) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<string>();
  private syncedResolve!: () => void;
  private readonly synced = new Promise<void>((resolve) => { this.syncedResolve = resolve; });
  private allSynced = false;
  /** The last version of each object that passed validation (served when a newer one does not). */
  private lastGood = new Map<string, Resource>();

  constructor(private readonly opts: KubeSourceOptions) {
    this.client = new KubeClient(opts.connection, opts.client);
    const tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    const scopes: (string | undefined)[] = opts.watchNamespaces.length > 0 ? [...opts.watchNamespaces] : [undefined];
    const targets: WatchTarget[] = [];
    for (const ns of scopes) {
      for (const k of ISTIO_KINDS) targets.push({ type: KUBE_TYPES[k], namespace: ns });
      targets.push({ type: KUBE_TYPES.Service, namespace: ns });
      targets.push({ type: KUBE_TYPES.EndpointSlice, namespace: ns, slim: slimSlice });
      targets.push({ type: KUBE_TYPES.Pod, namespace: ns, slim: slimPod });
    }
    // Every Secret of the gateway's namespace is watched (credentialName may name any of them later);
    // only those the config refers to reach the config.
    targets.push({ type: KUBE_TYPES.Secret, namespace: opts.namespace });
    targets.push({ type: KUBE_TYPES.ConfigMap, namespace: MESH_CONFIGMAP.namespace, fieldSelector: `metadata.name=${MESH_CONFIGMAP.name}` });
    const events = {
      onSynced: () => {
        if (this.allSynced || !this.reflectors.every((r) => r.synced)) return;
        this.allSynced = true;
        opts.log.info({ watches: this.reflectors.length }, 'kubernetes: first full sync done');
        this.syncedResolve();
      },
      onChange: (t: WatchTarget) => this.changed(t.type.kind),
    };
    for (const t of targets) this.reflectors.push(new Reflector(this.client, t, events, opts.log, tuning));
  }

  start(onChange: (reason: string) => void): void {
    this.onChange = onChange;
    this.opts.log.info({ server: this.opts.connection.server, from: this.opts.connection.describe, namespaces: this.opts.watchNamespaces.length > 0 ? this.opts.watchNamespaces : 'all' },
      'kubernetes: listing and watching');
    for (const r of this.reflectors) r.start();
  }

  whenSynced(): Promise<void> {
    return this.synced;
  }

  /** Changes after the first sync make one reload per debounce window. */
  private changed(kind: string): void {
    if (!this.allSynced || !this.onChange) return;
    this.pending.add(kind);
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const kinds = [...this.pending].sort().join(', ');
      this.pending.clear();
      this.onChange?.(`kubernetes: ${kinds} changed`);
    }, this.opts.debounceMs ?? 100);
  }

  private objectsOf(kind: keyof typeof KUBE_TYPES): KubeObject[] {
    return this.reflectors.filter((r) => r.target.type.kind === kind).flatMap((r) => [...r.objects.values()]);
  }

  private versionOf(kind: keyof typeof KUBE_TYPES): string {
    const type = KUBE_TYPES[kind];
    const v = this.reflectors.find((r) => r.target.type.kind === kind && r.version)?.version ?? type.versions[0];
    return type.group ? `${type.group}/${v}` : v;
  }

  /**
   * The objects read so far as config resources (each one's "file" is `kubernetes:ns/Kind/name`), the
   * problems found turning them into resources, and the registry services of Services, EndpointSlices
   * and Pods. `meshgate validate --source kubernetes` checks these; load() validates them object by object.
   */
  resources(alsoSecrets: ReadonlySet<string> = new Set()): { resources: Resource[]; issues: ConfigIssue[]; infos: string[] } {
    const issues: ConfigIssue[] = [];
    const infos: string[] = [];
    const secretNames = referencedSecrets(this.objectsOf('Gateway'), this.objectsOf('DestinationRule'));
    for (const n of alsoSecrets) secretNames.add(n);
    const entries: { kind: keyof typeof KUBE_TYPES; obj: KubeObject }[] = [];
    for (const kind of [...ISTIO_KINDS, 'Service', 'ConfigMap'] as const) for (const obj of this.objectsOf(kind)) entries.push({ kind, obj });
    for (const obj of this.objectsOf('Secret')) if (secretNames.has(obj.metadata?.name ?? '')) entries.push({ kind: 'Secret', obj });
    // Istio's order for conflicts: the oldest object first, then by namespace and name.
    entries.sort((a, b) => stamp(a.obj).localeCompare(stamp(b.obj)) || a.kind.localeCompare(b.kind)
      || `${a.obj.metadata?.namespace}/${a.obj.metadata?.name}`.localeCompare(`${b.obj.metadata?.namespace}/${b.obj.metadata?.name}`));
    const resources: Resource[] = [];
    entries.forEach(({ kind, obj }, i) => {
      const pos = { file: `kubernetes:${obj.metadata?.namespace ?? ''}/${kind}/${obj.metadata?.name ?? ''}`, line: 1, col: 1 };
      const r = toResource({ ...obj, kind, apiVersion: this.versionOf(kind) }, pos, '', new Map(), i + 1, issues, infos);
      if (r) resources.push(r);
    });
    return { resources, issues, infos };
  }

  async load(): Promise<SourceLoad> {
    const { resources, issues, infos } = this.resources();
    const v = this.withLastGood(resources, infos);
    const kubernetesServices = kubeServiceDefs(
      this.objectsOf('Service') as KubeServiceObject[], this.objectsOf('EndpointSlice') as EndpointSliceObject[], this.objectsOf('Pod') as PodObject[],
    );
    return { ...v, set: v.set && { ...v.set, kubernetesServices }, issues: [...issues, ...v.issues] };
  }

  /**
   * Validate object by object; an object whose new version is bad keeps serving its last good version
   * (reported as rejected, with keptLastGood), so a typo in `kubectl apply` never takes a route away.
   * An object that was never good is left out. Deleted objects are forgotten.
   */
  private withLastGood(resources: readonly Resource[], infos: string[]): ValidatedObjects {
    const keyOf = (r: Resource) => whoKey({ kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name });
    let v = validateEach(resources, infos);
    const fallbacks = new Map<string, Resource>();
    for (const r of v.rejected) {
      const key = whoKey(r);
      const good = this.lastGood.get(key);
      if (good) fallbacks.set(key, good);
    }
    if (fallbacks.size > 0) {
      const first = new Map(v.rejected.map((r) => [whoKey(r), r]));
      v = validateEach(resources.map((r) => fallbacks.get(keyOf(r)) ?? r), infos);
      const stillOut = new Set(v.rejected.map((r) => whoKey(r)));
      v = {
        ...v,
        rejected: [
          ...v.rejected.filter((r) => !fallbacks.has(whoKey(r))),
          ...[...fallbacks.keys()].map((k) => ({ ...first.get(k)!, keptLastGood: !stillOut.has(k) })),
        ],
      };
    }
    const rejected = new Set(v.rejected.filter((r) => !r.keptLastGood).map((r) => whoKey(r)));
    const next = new Map<string, Resource>();
    for (const r of resources) {
      const key = keyOf(r);
      if (fallbacks.has(key)) next.set(key, fallbacks.get(key)!);
      else if (!rejected.has(key)) next.set(key, r);
    }
    this.lastGood = next;
    return v;
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.onChange = undefined;
    await Promise.all(this.reflectors.map((r) => r.stop()));
    await this.client.close();
  }

  describe(): Record<string, unknown> {
    return {
      source: 'kubernetes',
      server: this.opts.connection.server,
      synced: this.allSynced,
      watches: this.reflectors.map((r) => ({
        kind: r.target.type.kind, namespace: r.target.namespace ?? '*', version: r.version ?? null, synced: r.synced, objects: r.objects.size, ...r.stats,
      })),
    };
  }
}

/**
 * List the cluster's config once, as the gateway would read it (`meshgate validate --source
 * kubernetes`): every watched kind listed, then the watches stopped. `alsoSecrets`: Secrets of the
 * gateway namespace to read besides those the cluster's own objects name (local files may name others).
 */
export async function listClusterOnce(
  opts: Omit<KubeSourceOptions, 'debounceMs'>, timeoutMs: number, alsoSecrets: ReadonlySet<string>,
): Promise<{ resources: Resource[]; issues: ConfigIssue[]; infos: string[] }> {
  const source = new KubeSource(opts);
  let timer: NodeJS.Timeout | undefined;
  try {
    source.start(() => {});
    await Promise.race([
      source.whenSynced(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the Kubernetes API at ${opts.connection.server} did not list everything within ${timeoutMs / 1000} s (the warnings above say why)`)), timeoutMs);
      }),
    ]);
    return source.resources(alsoSecrets);
  } finally {
    if (timer) clearTimeout(timer);
    await source.stop();
  }
}
