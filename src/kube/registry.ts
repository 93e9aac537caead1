// Kubernetes Services, EndpointSlices and Pods -> registry services (pure), the way Istio's kube
// registry builds them: host `name.namespace.svc.cluster.local`, ports with the protocol from
// `appProtocol` or the port-name prefix, ready endpoints only, each endpoint's port taken from its
// slice's port of the same name (so a named targetPort is already resolved; a slice without the port
// gives that port no endpoint), labels from the Pod the endpoint refers to (for DestinationRule
// subsets) and the workload that Pod belongs to, named as Istio names it (for the destination_workload*
// labels of metrics). ExternalName Services resolve their external name by DNS. The input is the
// API's plain JSON, read defensively.

import type { Dict, KubeServicePort, KubeServiceSpec } from '../config/types';
import { DEFAULT_DOMAIN_SUFFIX } from '../config/names';
import { protocolFromPortName, type EndpointDef, type PortDef, type ServiceDef, type WorkloadRef, serviceExportTo, WORKLOAD_NAME_LABEL } from '../serviceentry/services';

/** An owner reference of an object; only the controlling one (`controller: true`) names a Pod's workload. */
export interface OwnerReference {
  readonly kind?: string;
  readonly name?: string;
  readonly controller?: boolean | null;
}

export interface KubeMeta {
  readonly name?: string;
  readonly namespace?: string;
  /** Set when the name was generated (by a controller): only then does Istio look at the Pod's controller. */
  readonly generateName?: string;
  readonly ownerReferences?: readonly (OwnerReference | null)[] | null;
  readonly labels?: Dict<string> | null;
  readonly annotations?: Dict<string> | null;
  readonly resourceVersion?: string;
  readonly creationTimestamp?: string;
}

export interface KubeServiceObject {
  readonly metadata?: KubeMeta;
  readonly spec?: KubeServiceSpec | null;
}

export interface SliceEndpoint {
  readonly addresses?: readonly string[] | null;
  readonly conditions?: { readonly ready?: boolean | null; readonly serving?: boolean | null; readonly terminating?: boolean | null } | null;
  readonly targetRef?: { readonly kind?: string; readonly name?: string; readonly namespace?: string } | null;
}

export interface SlicePort {
  readonly name?: string | null;
  readonly port?: number | null;
  readonly protocol?: string;
  readonly appProtocol?: string;
}

export interface EndpointSliceObject {
  readonly metadata?: KubeMeta;
  readonly addressType?: string;
  readonly endpoints?: readonly SliceEndpoint[] | null;
  readonly ports?: readonly SlicePort[] | null;
}

export interface PodObject {
  readonly metadata?: KubeMeta;
  readonly status?: { readonly podIP?: string; readonly podIPs?: readonly { readonly ip?: string }[] | null } | null;
}

/** The label an EndpointSlice names its Service with. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Istio's annotation limiting where a Service is visible (comma-separated namespaces, `.` or `*`). */

const key = (ns: string, name: string) => `${ns}/${name}`;

/** A Job a CronJob created: the CronJob's name, `-`, and the scheduled time in minutes (8 to 10 digits). */
const CRONJOB_JOB_NAME = /(.+)-\d{8,10}$/;

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
/** A label's value, or undefined when the Pod has no such label (never a property of Object.prototype). */
function labelOf(labels: unknown, name: string): string | undefined {
  if (typeof labels !== 'object' || labels === null || !Object.hasOwn(labels, name)) return undefined;
  const v = (labels as Record<string, unknown>)[name];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The workload name of a Pod, as Istio names it for telemetry (istio/istio pkg/kube/util.go,
 * GetWorkloadMetaFromPod over GetDeployMetaFromPod, which the kube registry's endpoint builder uses
 * for the endpoints' `istio:workload` metadata):
 * - by default the Pod's own name (a bare Pod, or one whose name was not generated);
 * - when the name was generated (`generateName`) and an owner reference has `controller: true` (the
 *   first such), the controller's name, except that
 *   - a ReplicaSet whose name ends with the Pod's `pod-template-hash` label is a Deployment: the
 *     name without `-<hash>` (likewise `rollouts-pod-template-hash`, an Argo Rollout);
 *   - a ReplicationController of a Pod labelled `deploymentconfig` (OpenShift) is that
 *     DeploymentConfig;
 *   - a Job named `<name>-<8 to 10 digits>` is the CronJob `<name>`;
 *   StatefulSets, DaemonSets, other Jobs and ReplicaSets keep their own name;
 * - an empty result is the Pod's name;
 * - the `service.istio.io/workload-name` label, when the Pod has it, wins over all of that.
 * No heuristic runs on the Pod's name alone (a Pod without a controller is never taken for a
 * Deployment). Never throws, whatever the input.
 */
export function workloadNameOf(pod: PodObject | null | undefined): string {
  const meta = typeof pod === 'object' && pod !== null && typeof pod.metadata === 'object' && pod.metadata !== null ? pod.metadata : undefined;
  const podName = str(meta?.name);
  const labels = meta?.labels;
  let name = podName;
  if (str(meta?.generateName) !== '') {
    const refs: unknown = meta?.ownerReferences;
    const owners: readonly unknown[] = Array.isArray(refs) ? refs : [];
    const controller = owners.find((r): r is OwnerReference => typeof r === 'object' && r !== null && (r as OwnerReference).controller === true);
    if (controller) {
      const kind = str(controller.kind);
      const owner = str(controller.name);
      name = owner;
      const withoutHash = (h: string) => (owner.endsWith(`-${h}`) ? owner.slice(0, -(h.length + 1)) : owner);
      const deployHash = labelOf(labels, 'pod-template-hash');
      const rolloutHash = labelOf(labels, 'rollouts-pod-template-hash');
      if (kind === 'ReplicaSet' && deployHash && owner.endsWith(deployHash)) name = withoutHash(deployHash);
      else if (kind === 'ReplicaSet' && rolloutHash && owner.endsWith(rolloutHash)) name = withoutHash(rolloutHash);
      else if (kind === 'ReplicationController' && labelOf(labels, 'deploymentconfig')) name = labelOf(labels, 'deploymentconfig')!;
      else if (kind === 'Job') name = CRONJOB_JOB_NAME.exec(owner)?.[1] ?? owner;
    }
  }
  if (name === '') name = podName;
  return labelOf(labels, WORKLOAD_NAME_LABEL) ?? name;
}

/** What the endpoints take from their Pod: its labels (for subsets) and its workload (for metrics). */
export interface PodInfo {
  readonly labels: Dict<string>;
  readonly workload: WorkloadRef;
}

/** Pods by namespace/name and by namespace/IP. */
export interface PodIndex {
  readonly byName: ReadonlyMap<string, PodInfo>;
  readonly byIp: ReadonlyMap<string, PodInfo>;
}

/** Pods by namespace/name and by namespace/IP, for the endpoints' labels and workload. */
export function indexPods(pods: readonly PodObject[]): PodIndex {
  const byName = new Map<string, PodInfo>();
  const byIp = new Map<string, PodInfo>();
  for (const p of pods) {
    if (typeof p !== 'object' || p === null) continue;
    const ns = p.metadata?.namespace ?? 'default';
    const info: PodInfo = { labels: p.metadata?.labels ?? {}, workload: { name: workloadNameOf(p), namespace: ns } };
    if (p.metadata?.name) byName.set(key(ns, p.metadata.name), info);
    const ips = [p.status?.podIP, ...(Array.isArray(p.status?.podIPs) ? p.status.podIPs : []).map((x) => x?.ip)];
    for (const ip of ips) if (ip) byIp.set(key(ns, ip), info);
  }
  return { byName, byIp };
}

function portDefs(ports: readonly KubeServicePort[]): PortDef[] {
  return ports.filter((p) => typeof p?.port === 'number').map((p) => ({
    number: p.port,
    name: p.name || String(p.port),
    protocol: protocolFromPortName(p),
    // Slice endpoints carry their own ports (a named targetPort resolved there); a numeric targetPort
    // is for WorkloadEntries the Service selects and for a headless Service's original destination.
    ...(typeof p.targetPort === 'number' ? { targetPort: p.targetPort } : p.targetPort === undefined ? { targetPort: p.port } : {}),
  }));
}

/**
 * Ready endpoints of one Service from its slices, sorted by address. An endpoint has the ports its
 * slice has (by service port name) and no others (`listedPortsOnly`): Istio builds endpoints per
 * slice port, so an endpoint whose slice lacks a port is not in that port's cluster. An address
 * listed by several slices (a moved endpoint, host-network pods sharing their node's address) is one
 * endpoint per address and port.
 */
export function endpointsOf(
  svcPorts: readonly KubeServicePort[], ns: string, slices: readonly EndpointSliceObject[],
  pods: PodIndex,
): EndpointDef[] {
  const out: EndpointDef[] = [];
  const seen = new Set<string>();
  for (const slice of slices) {
    if (slice.addressType !== undefined && slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue; // FQDN slices
    const ports: [string, number][] = [];
    for (const sp of svcPorts) {
      const match = (slice.ports ?? []).find((x) => (x?.name ?? '') === (sp.name ?? ''));
      if (typeof match?.port === 'number') ports.push([sp.name || String(sp.port), match.port]);
    }
    for (const e of slice.endpoints ?? []) {
      if (e?.conditions?.ready === false) continue; // unknown (null) counts as ready, as the API says
      const address = e.addresses?.[0]; // the addresses of one endpoint are fungible
      if (!address) continue;
      const mine: Record<string, number> = {};
      for (const [name, port] of ports) {
        const id = `${address} ${name} ${port}`;
        if (seen.has(id)) continue;
        seen.add(id);
        mine[name] = port;
      }
      if (Object.keys(mine).length === 0) continue; // no port of the Service, or every one already listed
      const ref = e.targetRef?.kind === 'Pod' && e.targetRef.name ? key(e.targetRef.namespace ?? ns, e.targetRef.name) : undefined;
      const pod = (ref ? pods.byName.get(ref) : undefined) ?? pods.byIp.get(key(ns, address));
      out.push({ address, ports: mine, labels: pod?.labels ?? {}, weight: 1, listedPortsOnly: true, ...(pod ? { workload: pod.workload } : {}) });
    }
  }
  // By address, then by ports (in port-name order): the same slices give the same list.
  const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  const order = (e: EndpointDef) => `${e.address} ${JSON.stringify(Object.entries(e.ports).sort(([a], [b]) => cmp(a, b)))}`;
  return out.map((e) => [order(e), e] as const).sort(([a], [b]) => cmp(a, b)).map(([, e]) => e);
}

/**
 * Registry services for every Service, sorted by host (so a snapshot's fingerprint does not depend
 * on the order events arrived in). Services without a name are skipped.
 */
export function kubeServiceDefs(
  services: readonly KubeServiceObject[], slices: readonly EndpointSliceObject[], pods: readonly PodObject[],
  suffix = DEFAULT_DOMAIN_SUFFIX,
): ServiceDef[] {
  const podIndex = indexPods(pods);
  const slicesOf = new Map<string, EndpointSliceObject[]>();
  for (const s of slices) {
    const svc = s.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (!svc) continue;
    const k = key(s.metadata?.namespace ?? 'default', svc);
    const list = slicesOf.get(k) ?? [];
    list.push(s);
    slicesOf.set(k, list);
  }
  const out: ServiceDef[] = [];
  for (const svc of services) {
    const name = svc.metadata?.name;
    if (!name) continue;
    const ns = svc.metadata?.namespace ?? 'default';
    const spec = svc.spec ?? {};
    const kubePorts = Array.isArray(spec.ports) ? spec.ports : [];
    const external = spec.type === 'ExternalName' && typeof spec.externalName === 'string' && spec.externalName !== '';
    const clusterIP = typeof spec.clusterIP === 'string' && spec.clusterIP !== 'None' && spec.clusterIP !== '' ? [spec.clusterIP] : [];
    out.push({
      host: `${name}.${ns}.svc.${suffix}`,
      name,
      namespace: ns,
      origin: 'Service',
      ports: portDefs(kubePorts),
      resolution: external ? 'DNS' : 'STATIC',
      endpoints: external
        ? [{ address: spec.externalName!.replace(/\.$/, ''), ports: {}, labels: {}, weight: 1 }]
        : endpointsOf(kubePorts, ns, slicesOf.get(key(ns, name)) ?? [], podIndex),
      addresses: clusterIP,
      location: 'MESH_INTERNAL',
      exportTo: serviceExportTo(svc.metadata?.annotations),
      definedBy: `Service ${ns}/${name}`,
      ...(spec.clusterIP === 'None' ? { headless: true } : {}),
    });
  }
  return out.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
}
