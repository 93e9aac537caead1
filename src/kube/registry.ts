// Kubernetes Services, EndpointSlices and Pods -> registry services (pure), the way Istio's kube
// registry builds them: host `name.namespace.svc.cluster.local`, ports with the protocol from
// `appProtocol` or the port-name prefix, ready endpoints only, each endpoint's port taken from its
// slice's port of the same name (so a named targetPort is already resolved; a slice without the port
// gives that port no endpoint), labels from the Pod the endpoint refers to (for DestinationRule
// subsets). ExternalName Services resolve their external name by DNS. The input is the API's plain
// JSON, read defensively.

import type { Dict, KubeServicePort, KubeServiceSpec } from '../config/types';
import { DEFAULT_DOMAIN_SUFFIX } from '../config/names';
import { protocolFromPortName, type EndpointDef, type PortDef, type ServiceDef, serviceExportTo } from '../serviceentry/services';

export interface KubeMeta {
  readonly name?: string;
  readonly namespace?: string;
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

/** Pods by namespace/name and by namespace/IP, for the endpoints' labels. */
function indexPods(pods: readonly PodObject[]): { byName: Map<string, Dict<string>>; byIp: Map<string, Dict<string>> } {
  const byName = new Map<string, Dict<string>>();
  const byIp = new Map<string, Dict<string>>();
  for (const p of pods) {
    const ns = p.metadata?.namespace ?? 'default';
    const labels = p.metadata?.labels ?? {};
    if (p.metadata?.name) byName.set(key(ns, p.metadata.name), labels);
    const ips = [p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)];
    for (const ip of ips) if (ip) byIp.set(key(ns, ip), labels);
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
  pods: { byName: ReadonlyMap<string, Dict<string>>; byIp: ReadonlyMap<string, Dict<string>> },
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
      const labels = (ref ? pods.byName.get(ref) : undefined) ?? pods.byIp.get(key(ns, address)) ?? {};
      out.push({ address, ports: mine, labels, weight: 1, listedPortsOnly: true });
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
