// `meshgate kube-inject`: add the meshgate sidecar to the pod templates in Kubernetes YAML, as
// `istioctl kube-inject` does: a container `istio-proxy` running `meshgate run --mode sidecar`, and an
// init container `istio-init` running `meshgate iptables --apply` (istio-init's capture rules).
// Pure: text in, text out. Documents that are not workloads, or are not to be injected, come out
// byte for byte; injected ones are edited in place in the parsed document, so their comments and field
// order stay. The decision (decide) and the containers (proxyContainer, initContainer) are plain data.

import { isMap, isScalar, isSeq, parseAllDocuments, visit, type Document, type ToStringOptions, type YAMLMap, type YAMLSeq } from 'yaml';
import { DEFAULT_CAPTURE } from '../sidecar/iptables';
import { WORKLOAD_NAME_LABEL } from '../serviceentry/services';

export const PROXY_NAME = 'istio-proxy';
export const INIT_NAME = 'istio-init';
export const STATUS_ANNOTATION = 'sidecar.istio.io/status';
export const INJECT_KEY = 'sidecar.istio.io/inject';
/** The image `docker build -t meshgate:0.1.0 .` makes (README), as deploy/kustomization.yaml names it. */
export const DEFAULT_IMAGE = 'meshgate:0.1.0';
export const STATUS_PORT = 15021;
export const METRICS_PORT = 15090;
/**
 * The agent's port (Istio's status port): its `/stats/prometheus` serves the proxy's metrics merged
 * with the application's, which is what Prometheus scrapes when metrics merging is on.
 */
export const AGENT_PORT = 15020;
/** The proxy's environment variable holding the application's own prometheus.io annotations (JSON). */
export const PROMETHEUS_ANNOTATIONS_ENV = 'ISTIO_PROMETHEUS_ANNOTATIONS';
/** `"false"` turns metrics merging off for a pod (Istio's annotation; the mesh default is on). */
export const MERGE_METRICS_KEY = 'prometheus.istio.io/merge-metrics';
const SCRAPE_KEY = 'prometheus.io/scrape';
const PATH_KEY = 'prometheus.io/path';
const PORT_KEY = 'prometheus.io/port';

/** Where each workload kind keeps its pod template (the map holding metadata and spec). */
export const POD_TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

/** Kinds whose pods end: a plain sidecar container would keep them running, a native one does not. */
const RUN_TO_COMPLETION = new Set(['Job', 'CronJob']);

/**
 * Whether a pod template gets the proxy as a native sidecar: when asked (`--native-sidecar`), for the
 * kinds whose pods run to completion, and for any template whose `spec.restartPolicy` is Never or
 * OnFailure (a bare Pod run as a one-off task: with the proxy as a regular container, which never
 * exits, the pod would never complete). Only templates that may end can have those policies; the
 * others (Deployment and the like) require Always.
 */
export function wantsNativeSidecar(kind: string, t: PodTemplate, o: Pick<InjectOptions, 'nativeSidecar'>): boolean {
  if (o.nativeSidecar || RUN_TO_COMPLETION.has(kind)) return true;
  const policy = text(t.spec?.restartPolicy);
  return policy === 'Never' || policy === 'OnFailure';
}

interface Named {
  readonly name?: unknown;
}

/** The parts of a pod template the injection reads (as parsed; values may be of any type). */
export interface PodTemplate {
  readonly metadata?: { readonly namespace?: unknown; readonly labels?: Record<string, unknown>; readonly annotations?: Record<string, unknown> };
  readonly spec?: {
    readonly hostNetwork?: unknown;
    readonly automountServiceAccountToken?: unknown;
    readonly restartPolicy?: unknown;
    readonly containers?: readonly Named[];
    readonly initContainers?: readonly Named[];
  };
}

export interface InjectOptions {
  readonly image: string;
  readonly imagePullPolicy: string;
  /**
   * The proxy as an init container with restartPolicy Always (Kubernetes 1.29+): it is ready before the
   * application starts and does not keep a Job's pod alive. Always on for Job and CronJob, and for pod
   * templates whose restartPolicy is Never or OnFailure (see wantsNativeSidecar).
   */
  readonly nativeSidecar: boolean;
}

export type Decision = { readonly inject: true } | { readonly inject: false; readonly reason: string };

function text(v: unknown): string | undefined {
  return v === undefined || v === null ? undefined : String(v);
}

/**
 * Istio's reading of sidecar.istio.io/inject: y, yes, true, on (any case) inject; empty means the
 * default; anything else opts out. Values are not trimmed (" true " opts out, as in Istio).
 */
export function injectValue(v: unknown): boolean | undefined {
  const s = text(v)?.toLowerCase();
  if (s === undefined || s === '') return undefined;
  return ['y', 'yes', 'true', 'on'].includes(s);
}

/** Namespaces Istio never injects into (its injector's IgnoredNamespaces). */
export const IGNORED_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease', 'local-path-storage'];

/**
 * Whether a pod template gets the sidecar, and why not, as Istio's injectRequired decides with the
 * policy enabled: never with hostNetwork or in one of IGNORED_NAMESPACES (the template's namespace,
 * else `namespace`, its workload's); then the label, when present even if empty, else the annotation.
 */
export function decide(t: PodTemplate, namespace?: string): Decision {
  const containers = t.spec?.containers;
  if (!Array.isArray(containers) || containers.length === 0) return { inject: false, reason: 'no containers in the pod spec' };
  const names = [...containers, ...(Array.isArray(t.spec?.initContainers) ? t.spec.initContainers : [])].map((c) => c?.name);
  if (t.metadata?.annotations?.[STATUS_ANNOTATION] !== undefined || names.includes(PROXY_NAME)) return { inject: false, reason: 'already injected' };
  if (t.spec?.hostNetwork === true) return { inject: false, reason: "hostNetwork: capture would redirect the node's own traffic" };
  const ns = text(t.metadata?.namespace) || namespace;
  if (ns !== undefined && IGNORED_NAMESPACES.includes(ns)) return { inject: false, reason: `namespace ${ns}: Istio never injects there` };
  const labels = t.metadata?.labels;
  const [where, raw] = labels && Object.hasOwn(labels, INJECT_KEY)
    ? ['label', labels[INJECT_KEY]] as const
    : ['annotation', t.metadata?.annotations?.[INJECT_KEY]] as const;
  if (injectValue(raw) === false) return { inject: false, reason: `${where} ${INJECT_KEY}: "${text(raw)}"` };
  return { inject: true };
}

function annotations(t: PodTemplate): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(t.metadata?.annotations ?? {})) if (v !== undefined && v !== null) out[k] = String(v);
  return out;
}

function csv(v: string | undefined): string[] {
  return (v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
}

/**
 * `meshgate iptables --apply` with istio-init's defaults (-p 15001 -z 15006 -u 1337 -i '*' -b '*'
 * -d 15090,15021,15020) and the pod's traffic.sidecar.istio.io/* annotations, as Istio reads them.
 */
export function iptablesArgs(podAnnotations: Readonly<Record<string, string>>): string[] {
  const a = (k: string): string | undefined => podAnnotations[`traffic.sidecar.istio.io/${k}`]?.trim();
  const c = DEFAULT_CAPTURE;
  const excludeInbound = [...new Set([...c.excludeInboundPorts.map(String), ...csv(a('excludeInboundPorts'))])];
  // Present but empty: no outbound capture at all (istio-iptables' -i ''), not the default '*'.
  const includeCidrs = a('includeOutboundIPRanges');
  const args = ['iptables', '--apply',
    '--proxy-port', String(c.proxyPort), '--inbound-port', String(c.inboundPort),
    '--proxy-uid', String(c.uid), '--proxy-gid', String(c.gid),
    '--include-outbound-cidrs', includeCidrs === undefined ? '*' : csv(includeCidrs).join(',')];
  const excludeCidrs = csv(a('excludeOutboundIPRanges'));
  if (excludeCidrs.length > 0) args.push('--exclude-outbound-cidrs', excludeCidrs.join(','));
  const excludePorts = csv(a('excludeOutboundPorts'));
  if (excludePorts.length > 0) args.push('--exclude-outbound-ports', excludePorts.join(','));
  const includeInbound = a('includeInboundPorts');
  args.push('--include-inbound-ports', includeInbound === undefined ? '*' : csv(includeInbound).join(','));
  args.push('--exclude-inbound-ports', excludeInbound.join(','));
  return args;
}

/**
 * Istio traffic annotations `meshgate iptables` has no equivalent for, with what ignoring them means:
 * the injection warns about each one set to something, rather than dropping it silently.
 */
const UNSUPPORTED_TRAFFIC_ANNOTATIONS: Readonly<Record<string, string>> = {
  includeOutboundPorts: 'outbound traffic to these ports is captured only when its destination is in includeOutboundIPRanges',
  excludeInterfaces: 'traffic on these interfaces is captured like any other',
};

/** Warnings for the pod's traffic.sidecar.istio.io/* annotations that meshgate iptables cannot apply. */
export function unsupportedTrafficAnnotations(podAnnotations: Readonly<Record<string, string>>): string[] {
  const out: string[] = [];
  for (const [k, effect] of Object.entries(UNSUPPORTED_TRAFFIC_ANNOTATIONS)) {
    const v = podAnnotations[`traffic.sidecar.istio.io/${k}`];
    if (v !== undefined && csv(v).length > 0) out.push(`annotation traffic.sidecar.istio.io/${k}: "${v}" is not supported by meshgate iptables and is ignored: ${effect}`);
  }
  return out;
}

function readyProbe(extra: Record<string, number>): Record<string, unknown> {
  return { httpGet: { path: '/healthz/ready', port: STATUS_PORT }, ...extra };
}

/**
 * The sidecar container: `meshgate run --mode sidecar` as uid/gid 1337 with the pod's labels, and
 * the workload's name (the Deployment, StatefulSet, ... the template belongs to: what Istio's
 * injector passes as ISTIO_META_WORKLOAD_NAME) as `service.istio.io/workload-name` unless the
 * template sets that label itself; with metrics merging, the application's prometheus.io annotations
 * in ISTIO_PROMETHEUS_ANNOTATIONS (see prometheusMerge).
 */
export function proxyContainer(o: InjectOptions, t: PodTemplate, native: boolean, workloadName?: string): Record<string, unknown> {
  const ann = annotations(t);
  const own = t.metadata?.labels ?? {};
  const all = workloadName && !Object.hasOwn(own, WORKLOAD_NAME_LABEL) ? { ...own, [WORKLOAD_NAME_LABEL]: workloadName } : own;
  const labels = Object.entries(all).map(([k, v]) => `${k}=${text(v) ?? ''}`).join(',');
  const c = DEFAULT_CAPTURE;
  const { scrapeConfig } = prometheusMerge(t);
  return {
    name: PROXY_NAME,
    image: ann['sidecar.istio.io/proxyImage'] ?? o.image,
    imagePullPolicy: o.imagePullPolicy,
    ...(native ? { restartPolicy: 'Always' } : {}),
    args: ['run', '--mode', 'sidecar', '--source', 'kubernetes', '--labels', labels,
      '--capture-port', String(c.proxyPort), '--inbound-port', String(c.inboundPort)],
    env: [
      { name: 'MESHGATE_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      ...(scrapeConfig === undefined ? [] : [{ name: PROMETHEUS_ANNOTATIONS_ENV, value: scrapeConfig }]),
    ],
    ports: [
      { name: 'tcp-outbound', containerPort: c.proxyPort, protocol: 'TCP' },
      { name: 'tcp-inbound', containerPort: c.inboundPort, protocol: 'TCP' },
      { name: 'status-port', containerPort: STATUS_PORT, protocol: 'TCP' },
      { name: 'http-envoy-prom', containerPort: METRICS_PORT, protocol: 'TCP' },
    ],
    ...(native ? { startupProbe: readyProbe({ periodSeconds: 1, timeoutSeconds: 3, failureThreshold: 600 }) } : {}),
    readinessProbe: readyProbe({ initialDelaySeconds: 1, periodSeconds: 2, timeoutSeconds: 3, failureThreshold: 30 }),
    resources: {
      requests: { cpu: ann['sidecar.istio.io/proxyCPU'] ?? '50m', memory: ann['sidecar.istio.io/proxyMemory'] ?? '96Mi' },
      limits: { cpu: ann['sidecar.istio.io/proxyCPULimit'] ?? '1', memory: ann['sidecar.istio.io/proxyMemoryLimit'] ?? '512Mi' },
    },
    securityContext: {
      runAsUser: c.uid, runAsGroup: c.gid, runAsNonRoot: true, allowPrivilegeEscalation: false, privileged: false,
      readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] },
    },
  };
}

/** The capture step: root with NET_ADMIN and NET_RAW only, as istio-init runs. */
export function initContainer(o: InjectOptions, t: PodTemplate): Record<string, unknown> {
  const ann = annotations(t);
  return {
    name: INIT_NAME,
    image: ann['sidecar.istio.io/proxyImage'] ?? o.image,
    imagePullPolicy: o.imagePullPolicy,
    args: iptablesArgs(ann),
    resources: { requests: { cpu: '10m', memory: '64Mi' }, limits: { cpu: '500m', memory: '128Mi' } },
    securityContext: {
      runAsUser: 0, runAsGroup: 0, runAsNonRoot: false, allowPrivilegeEscalation: false, privileged: false,
      readOnlyRootFilesystem: false, capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  };
}

/**
 * Go's strconv.ParseBool, which Istio reads these annotations with: 1, t, T, TRUE, true, True and
 * 0, f, F, FALSE, false, False; anything else (or absent) is undefined, and the caller's default holds.
 */
export function parseGoBool(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

/**
 * JSON as Go's json.Marshal writes it: JSON.stringify's, with Go's escapes of <, >, &, U+2028 and
 * U+2029, and `\ufffd` for what Go would see as invalid UTF-8 (JSON.stringify escapes a lone surrogate
 * as itself). An escaped backslash is matched first, so what follows it is never read as an escape.
 */
function goJson(value: unknown): string {
  return JSON.stringify(value).replace(/\\\\|\\ud[89a-f][0-9a-f]{2}|[<>&\u2028\u2029]/g, (m) =>
    m === '\\\\' ? m : m.startsWith('\\') ? '\\ufffd' : `\\u${m.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface PrometheusMerge {
  /** Annotations to set on the pod template, overwriting the application's values. */
  readonly annotations: Readonly<Record<string, string>>;
  /** The value of ISTIO_PROMETHEUS_ANNOTATIONS for the proxy, when the application had its own annotations. */
  readonly scrapeConfig?: string;
}

/**
 * Istio's metrics merging (its injector's applyPrometheusMerge, with the mesh's enablePrometheusMerge
 * at its default, on): unless the template turns it off with prometheus.istio.io/merge-metrics (read as
 * a Go bool) or opts out of scraping with prometheus.io/scrape (likewise; absent or unparsable means
 * scrape), Prometheus is pointed at the agent's :15020/stats/prometheus, and the application's own
 * scrape, path and port go to the proxy as ISTIO_PROMETHEUS_ANNOTATIONS (all three keys, in that order,
 * missing ones empty), where the agent finds what to scrape and merge. A port already 15020 (re-injected,
 * or set by the user) changes nothing. Otherwise meshgate's older rule: the proxy's :15090 metrics are
 * announced when the application has no prometheus.io annotations of its own.
 */
export function prometheusMerge(t: PodTemplate): PrometheusMerge {
  const ann = annotations(t);
  const merge = parseGoBool(ann[MERGE_METRICS_KEY]) ?? true;
  if (merge && (parseGoBool(ann[SCRAPE_KEY]) ?? true)) {
    if (ann[PORT_KEY] === String(AGENT_PORT)) return { annotations: {} };
    const app = { scrape: ann[SCRAPE_KEY] ?? '', path: ann[PATH_KEY] ?? '', port: ann[PORT_KEY] ?? '' };
    return {
      annotations: { [SCRAPE_KEY]: 'true', [PORT_KEY]: String(AGENT_PORT), [PATH_KEY]: '/stats/prometheus' },
      ...(app.scrape !== '' || app.path !== '' || app.port !== '' ? { scrapeConfig: goJson(app) } : {}),
    };
  }
  if (Object.keys(ann).some((k) => k.startsWith('prometheus.io/'))) return { annotations: {} };
  return { annotations: { [SCRAPE_KEY]: 'true', [PORT_KEY]: String(METRICS_PORT), [PATH_KEY]: '/stats/prometheus' } };
}

/**
 * The annotations the injection sets on the pod template: the status Istio checks for (so a second
 * run is a no-op), kubectl's default container (the application, not the proxy), and Prometheus
 * scraping as prometheusMerge decides (these may replace the application's values).
 */
export function injectedAnnotations(t: PodTemplate, native: boolean): Record<string, string> {
  const ann = annotations(t);
  const status = {
    initContainers: native ? [INIT_NAME, PROXY_NAME] : [INIT_NAME],
    containers: native ? [] : [PROXY_NAME],
    volumes: [],
    imagePullSecrets: null,
    revision: 'meshgate',
  };
  const out: Record<string, string> = { [STATUS_ANNOTATION]: JSON.stringify(status) };
  const app = text(t.spec?.containers?.[0]?.name);
  if (app !== undefined) {
    for (const k of ['kubectl.kubernetes.io/default-container', 'kubectl.kubernetes.io/default-logs-container']) if (ann[k] === undefined) out[k] = app;
  }
  return { ...out, ...prometheusMerge(t).annotations };
}

export interface ObjectReport {
  /** e.g. `Deployment default/sleep`. */
  readonly object: string;
  readonly injected: boolean;
  readonly reason?: string;
}

export interface InjectOutput {
  readonly text: string;
  /** One entry per workload found (other kinds pass through unreported). */
  readonly objects: readonly ObjectReport[];
  readonly warnings: readonly string[];
}

function dig(v: unknown, path: readonly string[]): unknown {
  let cur = v;
  for (const k of path) cur = typeof cur === 'object' && cur !== null ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

function describe(obj: Record<string, unknown>): string {
  const ns = text(dig(obj, ['metadata', 'namespace']));
  return `${text(obj['kind'])} ${ns ? `${ns}/` : ''}${text(dig(obj, ['metadata', 'name'])) ?? '(unnamed)'}`;
}

/**
 * The map under `key` in `parent`, made (before `before`, when that key exists) if missing. A flow
 * collection (`{name: x}`) that is about to grow is turned into block style.
 */
function childMap(doc: Document, parent: YAMLMap, key: string, before?: string): YAMLMap {
  const cur = parent.get(key, true);
  return block(isMap(cur) ? cur : insertPair(doc, parent, key, doc.createNode({}), before) as YAMLMap);
}

function childSeq(doc: Document, parent: YAMLMap, key: string, before?: string): YAMLSeq {
  const cur = parent.get(key, true);
  return block(isSeq(cur) ? cur : insertPair(doc, parent, key, doc.createNode([]), before) as YAMLSeq);
}

function block<T extends YAMLMap | YAMLSeq>(node: T): T {
  node.flow = false;
  return node;
}

function insertPair(doc: Document, parent: YAMLMap, key: string, value: unknown, before?: string): unknown {
  parent.delete(key);
  const at = before === undefined ? -1 : parent.items.findIndex((p) => String((p.key as { value?: unknown } | null)?.value ?? p.key) === before);
  const pair = doc.createPair(key, value);
  if (at < 0) parent.items.push(pair);
  else parent.items.splice(at, 0, pair);
  return pair.value;
}

/**
 * Set `key` to the string `value`. An existing scalar keeps its node, so its comments and quoting
 * style stay (the stringifier quotes where a plain value would read as another type, e.g. a number);
 * any other existing value is replaced in its place, and a new key goes last. An anchored value that
 * aliases elsewhere use moves, unchanged, to the first of those aliases, so they keep reading it.
 */
function setValue(doc: Document, map: YAMLMap, key: string, value: string): void {
  const cur = map.get(key, true);
  if (isScalar(cur) && !cur.anchor) {
    cur.value = value;
    cur.tag = undefined;
    return;
  }
  map.set(key, doc.createNode(value));
  if (!isScalar(cur) || !cur.anchor) return;
  let moved = false;
  visit(doc, {
    Alias: (_k, alias) => {
      if (moved || alias.source !== cur.anchor) return undefined;
      moved = true;
      return cur;
    },
  });
}

/** Add the sidecar to one pod template node (a map with metadata and spec). */
function injectTemplate(doc: Document, node: YAMLMap, t: PodTemplate, o: InjectOptions, native: boolean, workloadName: string | undefined): void {
  const metadata = childMap(doc, node, 'metadata', 'spec');
  const ann = childMap(doc, metadata, 'annotations');
  for (const [k, v] of Object.entries(injectedAnnotations(t, native))) setValue(doc, ann, k, v);
  const spec = node.get('spec', true);
  const containers = isMap(spec) ? spec.get('containers', true) : undefined;
  if (!isMap(spec) || !isSeq(containers)) throw new Error('pod template without spec.containers'); // decide() saw them
  const inits = childSeq(doc, spec, 'initContainers', 'containers');
  const first = [doc.createNode(initContainer(o, t)), ...(native ? [doc.createNode(proxyContainer(o, t, true, workloadName))] : [])];
  inits.items.unshift(...first);
  if (!native) block(containers).items.push(doc.createNode(proxyContainer(o, t, false, workloadName)));
}

function injectObject(doc: Document, node: YAMLMap, obj: Record<string, unknown>, o: InjectOptions, out: { objects: ObjectReport[]; warnings: string[] }): boolean {
  const kind = text(obj['kind']) ?? '';
  const path = POD_TEMPLATE_PATHS[kind];
  if (!path) return false;
  const object = describe(obj);
  const tNode = path.length === 0 ? node : node.getIn(path, true);
  const t = dig(obj, path) as PodTemplate | undefined;
  const d: Decision = isMap(tNode) && t ? decide(t, text(dig(obj, ['metadata', 'namespace']))) : { inject: false, reason: 'no pod template' };
  if (!d.inject) {
    out.objects.push({ object, injected: false, reason: d.reason });
    return false;
  }
  injectTemplate(doc, tNode as YAMLMap, t!, o, wantsNativeSidecar(kind, t!, o), text(dig(obj, ['metadata', 'name'])));
  out.objects.push({ object, injected: true });
  for (const w of unsupportedTrafficAnnotations(annotations(t!))) out.warnings.push(`${object}: ${w}`);
  if (t!.spec?.automountServiceAccountToken === false) {
    out.warnings.push(`${object}: automountServiceAccountToken is false, but the sidecar reads the Kubernetes API with the pod's service account token`);
  }
  return true;
}

/** The output style of the input, so edited documents look like their neighbours. */
export function styleOf(source: string): ToStringOptions {
  // `key:` then `- item` at the key's own indentation (kubectl's style) or deeper.
  const flat = /^( *)[^\s#-][^\n]*:\n\1- /m.test(source);
  const deep = /^( *)[^\s#-][^\n]*:\n\1 +- /m.test(source);
  return { indentSeq: deep && !flat, lineWidth: 0, flowCollectionPadding: /: [[{] [^\s\]}]/.test(source) };
}

/** Inject every workload in a multi-document YAML text. Throws on YAML syntax errors. */
export function kubeInject(source: string, o: InjectOptions): InjectOutput {
  const docs = parseAllDocuments(source);
  const out = { objects: [] as ObjectReport[], warnings: [] as string[] };
  if (!Array.isArray(docs)) return { text: source, ...out };
  for (const doc of docs) {
    const err = doc.errors[0];
    if (err) throw new Error(`YAML: ${err.message.split('\n')[0]}`);
  }
  let text = '';
  let pos = 0;
  for (const doc of docs) {
    const end = doc.range[2];
    const chunk = source.slice(pos, end);
    pos = end;
    const root = doc.contents;
    const js = doc.toJS({ maxAliasCount: 1000 }) as unknown;
    let changed = false;
    if (isMap(root) && typeof js === 'object' && js !== null) {
      const obj = js as Record<string, unknown>;
      const items = root.get('items', true);
      if (obj['kind'] === 'List' && isSeq(items) && Array.isArray(obj['items'])) {
        items.items.forEach((item, i) => {
          const itemJs = (obj['items'] as unknown[])[i];
          if (isMap(item) && typeof itemJs === 'object' && itemJs !== null) changed = injectObject(doc, item, itemJs as Record<string, unknown>, o, out) || changed;
        });
      } else {
        changed = injectObject(doc, root, obj, o, out);
      }
    }
    text += changed ? doc.toString(styleOf(chunk)) : chunk;
  }
  return { text: text + source.slice(pos), ...out };
}
