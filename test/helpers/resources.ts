// Build ResourceSets from plain objects for unit tests (no YAML, no files).

import type { Resource, ResourceSet, MeshConfig } from '../../src/config/types';

let order = 0;

export function res<K extends string, S>(kind: K, name: string, spec: S, namespace = 'default', labels?: Record<string, string>): Resource<K, S> {
  order += 1;
  return {
    kind, apiVersion: kind === 'Service' ? 'v1' : 'networking.istio.io/v1', metadata: { name, namespace, labels },
    spec, source: { file: 'test.yaml', line: order, col: 1 }, positions: new Map(), order,
  };
}

export function set(resources: Resource[], mesh: MeshConfig = {}): ResourceSet {
  const of = <T>(kind: string) => resources.filter((r) => r.kind === kind) as unknown as T[];
  return {
    gateways: of('Gateway'), virtualServices: of('VirtualService'), destinationRules: of('DestinationRule'),
    serviceEntries: of('ServiceEntry'), workloadEntries: of('WorkloadEntry'), sidecars: of('Sidecar'),
    services: of('Service'), secrets: of('Secret'), configMaps: of('ConfigMap'), mesh,
  };
}
