// ServiceEntry, WorkloadEntry and Kubernetes Service resources -> service definitions (pure).
// A service is a host with ports and endpoints; endpoints may name DNS hosts that the runtime
// registry resolves (resolution DNS / DNS_ROUND_ROBIN).

import type {
  Dict, KubeServicePort, Resolution, ResourceSet, ServiceEntryResource, ServicePort, ServiceResource,
  WorkloadEntrySpec,
} from '../config/types';
import { DEFAULT_DOMAIN_SUFFIX, resolveHost, isIP } from '../config/names';
import { within } from '../config/compile-error';

export interface PortDef {
  readonly number: number;
  readonly name: string;
  /** Upper-case Istio protocol: HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, MONGO, ... ('' when unknown). */
  readonly protocol: string;
  /** Port on the endpoint when the endpoint does not say (ServiceEntry targetPort, Service targetPort). */
  readonly targetPort?: number;
  /** Named Service targetPort, looked up in each endpoint's `ports`. */
  readonly targetPortName?: string;
}

export interface EndpointDef {
  /** IP address, or a DNS name to resolve. */
  readonly address: string;
  /** Endpoint port by service port name (WorkloadEntry `ports`). */
  readonly ports: Dict<number>;
  readonly labels: Dict<string>;
  readonly weight: number;
  /**
   * Only the service ports named in `ports` have this endpoint (an EndpointSlice endpoint: Istio
   * builds endpoints per slice port, so a slice without a port adds nothing to that port's cluster).
   * Otherwise (ServiceEntry, WorkloadEntry) a port missing from `ports` is the service port's
   * targetPort, else its number.
   */
  readonly listedPortsOnly?: true;
  /**
   * The workload behind the endpoint (Istio's `istio:workload` endpoint metadata), for the
   * destination_workload* labels of metrics when the destination does not say who it is: a Pod's
   * Deployment (or other controller), a WorkloadEntry. Absent for ServiceEntry endpoints.
   */
  readonly workload?: WorkloadRef;
}

/** A workload as Istio names it in telemetry: the controller's name (Deployment, StatefulSet, ...) and namespace. */
export interface WorkloadRef {
  readonly name: string;
  readonly namespace: string;
}

export interface ServiceDef {
  readonly host: string;
  /** For metrics: the Kubernetes service name, or the host for ServiceEntries. */
  readonly name: string;
  readonly namespace: string;
  readonly origin: 'ServiceEntry' | 'Service';
  readonly ports: readonly PortDef[];
  readonly resolution: Resolution;
  readonly endpoints: readonly EndpointDef[];
  readonly addresses: readonly string[];
  readonly location: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  readonly exportTo: readonly string[];
  /** `Kind namespace/name` of the resource that defined it. */
  readonly definedBy: string;
  /**
   * A headless Service (clusterIP None): a sidecar sends each connection to the pod it dialled (Istio's
   * ORIGINAL_DST cluster), since clients of StatefulSets pick their pod; a gateway load balances over
   * the endpoints.
   */
  readonly headless?: boolean;
}

/** Istio's annotation on a Kubernetes Service: the namespaces it is exported to (default everywhere). */
const EXPORT_TO_ANNOTATION = 'networking.istio.io/exportTo';

/** A Service's exportTo from its annotations (`.`, `*` or namespaces, comma-separated). */
export function serviceExportTo(annotations: Readonly<Record<string, string>> | null | undefined): string[] {
  const text = annotations?.[EXPORT_TO_ANNOTATION];
  const list = text ? text.split(',').map((x) => x.trim()).filter(Boolean) : [];
  return list.length > 0 ? list : ['*'];
}

function labelsMatch(selector: Dict<string> | undefined, labels: Dict<string> | undefined): boolean {
  if (!selector) return false;
  const keys = Object.keys(selector);
  if (keys.length === 0) return false;
  return keys.every((k) => labels?.[k] === selector[k]);
}

export function subsetMatches(subsetLabels: Dict<string> | undefined, labels: Dict<string>): boolean {
  if (!subsetLabels) return true;
  for (const k of Object.keys(subsetLabels)) if (labels[k] !== subsetLabels[k]) return false;
  return true;
}

/**
 * Istio's label naming a workload in telemetry (source_workload, destination_workload): on a Pod it
 * wins over its controller's name, on a WorkloadEntry over the entry's name; meshgate's injector
 * passes it to the sidecar with the Deployment's name.
 */
export const WORKLOAD_NAME_LABEL = 'service.istio.io/workload-name';

/**
 * A ServiceEntry endpoint, or a WorkloadEntry's (`entry`: its name and namespace, for the workload
 * named in metrics).
 */
function endpointOf(spec: WorkloadEntrySpec, entry?: { readonly name: string; readonly namespace: string }): EndpointDef | undefined {
  const address = spec.address;
  if (!address) return undefined;
  const labels = spec.labels ?? {};
  const ep: EndpointDef = { address, ports: spec.ports ?? {}, labels, weight: spec.weight ?? 1 };
  if (!entry) return ep;
  const name = Object.hasOwn(labels, WORKLOAD_NAME_LABEL) && labels[WORKLOAD_NAME_LABEL] ? labels[WORKLOAD_NAME_LABEL]! : entry.name;
  return { ...ep, workload: { name, namespace: entry.namespace } };
}

const KNOWN_PROTOCOLS: Readonly<Record<string, string>> = {
  tcp: 'TCP', udp: 'UDP', grpc: 'GRPC', 'grpc-web': 'GRPC-WEB', http: 'HTTP', http_proxy: 'HTTP_PROXY', http2: 'HTTP2',
  https: 'HTTPS', tls: 'TLS', mongo: 'MONGO', redis: 'REDIS', mysql: 'MYSQL',
};
/** Ports Istio never sniffs: TCP when the name says nothing (SMTP, DNS, MySQL, MongoDB). */
const WELL_KNOWN_TCP_PORTS = new Set([25, 53, 3306, 27017]);

/**
 * The protocol of a Kubernetes Service port, as Istio's kube registry decides it: UDP ports are UDP;
 * else `appProtocol` when set (Kubernetes' `kubernetes.io/h2c`, `ws`, `wss` mapped), else the port
 * name; a `grpc-web` prefix, else the part before the first `-` (`http-web` -> HTTP); unknown names
 * are '' (sniffed), except on well-known TCP ports.
 */
export function protocolFromPortName(port: KubeServicePort): string {
  if (port.protocol && port.protocol.toUpperCase() === 'UDP') return 'UDP';
  const app = port.appProtocol;
  if (app === 'kubernetes.io/h2c') return 'HTTP2';
  if (app === 'kubernetes.io/ws') return 'HTTP';
  if (app === 'kubernetes.io/wss') return 'HTTPS';
  const name = (app ?? port.name ?? '').toLowerCase();
  const prefix = name.split('-')[0]!;
  // Own keys only: a port named `constructor` or `toString` is no protocol.
  const found = name.startsWith('grpc-web') ? 'GRPC-WEB' : Object.hasOwn(KNOWN_PROTOCOLS, prefix) ? KNOWN_PROTOCOLS[prefix] : undefined;
  if (found) return found;
  return WELL_KNOWN_TCP_PORTS.has(port.port) ? 'TCP' : '';
}

function sePorts(ports: readonly ServicePort[] | undefined): PortDef[] {
  return (ports ?? []).map((p) => ({
    number: p.number,
    name: p.name ?? String(p.number),
    protocol: (p.protocol ?? '').toUpperCase(),
    targetPort: p.targetPort,
  }));
}

function fromServiceEntry(se: ServiceEntryResource, set: ResourceSet, suffix: string): ServiceDef[] {
  const ns = se.metadata.namespace;
  const spec = se.spec;
  const resolution = spec.resolution ?? 'NONE';
  let endpoints: EndpointDef[] = [];
  if (spec.workloadSelector?.labels) {
    for (const we of set.workloadEntries) {
      if (we.metadata.namespace !== ns || !labelsMatch(spec.workloadSelector.labels, we.spec.labels)) continue;
      const ep = endpointOf(we.spec, we.metadata);
      if (ep) endpoints.push(ep);
    }
  } else {
    endpoints = (spec.endpoints ?? []).flatMap((e) => endpointOf(e) ?? []);
  }
  const ports = sePorts(spec.ports);
  return spec.hosts.map((h) => {
    const host = resolveHost(h, ns, suffix);
    // DNS resolution with no endpoints resolves the host itself.
    const eps = endpoints.length === 0 && (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') && !host.startsWith('*')
      ? [{ address: host, ports: {}, labels: {}, weight: 1 }]
      : endpoints;
    return {
      host,
      name: host,
      namespace: ns,
      origin: 'ServiceEntry' as const,
      ports,
      resolution,
      endpoints: eps,
      addresses: spec.addresses ?? [],
      location: spec.location ?? 'MESH_EXTERNAL',
      exportTo: spec.exportTo ?? ['*'],
      definedBy: `ServiceEntry ${ns}/${se.metadata.name}`,
    };
  });
}

function fromKubeService(svc: ServiceResource, set: ResourceSet, suffix: string): ServiceDef {
  const ns = svc.metadata.namespace;
  const ports: PortDef[] = (svc.spec.ports ?? []).map((p) => ({
    number: p.port,
    name: p.name ?? String(p.port),
    protocol: protocolFromPortName(p),
    targetPort: typeof p.targetPort === 'number' ? p.targetPort : (p.targetPort === undefined ? p.port : undefined),
    targetPortName: typeof p.targetPort === 'string' ? p.targetPort : undefined,
  }));
  const endpoints: EndpointDef[] = [];
  for (const we of set.workloadEntries) {
    if (we.metadata.namespace !== ns || !labelsMatch(svc.spec.selector, we.spec.labels)) continue;
    const ep = endpointOf(we.spec, we.metadata);
    if (ep) endpoints.push(ep);
  }
  const external = svc.spec.type === 'ExternalName' && svc.spec.externalName;
  return {
    host: `${svc.metadata.name}.${ns}.svc.${suffix}`,
    name: svc.metadata.name,
    namespace: ns,
    origin: 'Service',
    ports,
    resolution: external ? 'DNS' : 'STATIC',
    endpoints: external ? [{ address: svc.spec.externalName!, ports: {}, labels: {}, weight: 1 }] : endpoints,
    addresses: svc.spec.clusterIP && svc.spec.clusterIP !== 'None' ? [svc.spec.clusterIP] : [],
    location: 'MESH_INTERNAL',
    exportTo: serviceExportTo(svc.metadata.annotations),
    definedBy: `Service ${ns}/${svc.metadata.name}`,
    ...(svc.spec.clusterIP === 'None' ? { headless: true } : {}),
  };
}

/**
 * Every service the config defines, by host. The Kubernetes API source's services (with their
 * EndpointSlice endpoints, plus the WorkloadEntries the Service selects) come first, then Service
 * resources (endpoints: WorkloadEntries they select). When a ServiceEntry and a Kubernetes Service share a host, the Service wins (as in Istio,
 * where the Kubernetes registry comes first); among ServiceEntries the oldest wins.
 */
export function buildServices(set: ResourceSet, suffix = DEFAULT_DOMAIN_SUFFIX): ReadonlyMap<string, ServiceDef> {
  const out = new Map<string, ServiceDef>();
  const fromApi = new Set<string>();
  for (const def of set.kubernetesServices ?? []) {
    if (out.has(def.host)) continue;
    out.set(def.host, def);
    fromApi.add(def.host);
  }
  for (const svc of set.services) {
    const def = within(svc, 'spec', () => fromKubeService(svc, set, suffix));
    const api = out.get(def.host);
    if (!api) out.set(def.host, def);
    else if (fromApi.has(def.host) && def.resolution === 'STATIC' && def.endpoints.length > 0) {
      // WorkloadEntries the Service selects join its EndpointSlice endpoints, as in Istio.
      out.set(def.host, { ...api, endpoints: [...api.endpoints, ...def.endpoints] });
    }
  }
  const ses = [...set.serviceEntries].sort((a, b) => a.order - b.order);
  for (const se of ses) for (const def of within(se, 'spec', () => fromServiceEntry(se, set, suffix))) if (!out.has(def.host)) out.set(def.host, def);
  return out;
}

/**
 * The endpoint port for a service port, as Istio picks it; undefined when the endpoint is not one of
 * that port (`listedPortsOnly` without an entry for it).
 */
export function endpointPortOf(ep: EndpointDef, port: PortDef): number | undefined {
  const key = port.targetPortName ?? port.name;
  const byName = Object.hasOwn(ep.ports, key) ? ep.ports[key] : undefined;
  if (byName !== undefined) return byName;
  return ep.listedPortsOnly ? undefined : port.targetPort ?? port.number;
}

/** An endpoint of one service port. */
export interface PortEndpoint {
  readonly address: string;
  readonly port: number;
  readonly labels: Dict<string>;
  readonly weight: number;
  readonly workload?: WorkloadRef;
}

/** The endpoints of one service port, each with its port; endpoints that are not ones of the port are left out. */
export function portEndpoints(svc: Pick<ServiceDef, 'endpoints'>, port: PortDef): PortEndpoint[] {
  const out: PortEndpoint[] = [];
  for (const e of svc.endpoints) {
    const p = endpointPortOf(e, port);
    if (p === undefined) continue;
    out.push(e.workload ? { address: e.address, port: p, labels: e.labels, weight: e.weight, workload: e.workload } : { address: e.address, port: p, labels: e.labels, weight: e.weight });
  }
  return out;
}

export function isStaticAddress(address: string): boolean {
  return isIP(address);
}
