// Small Istio YAML documents for integration tests: stand-ins for pods, as WorkloadEntries on loopback.

/** A WorkloadEntry on 127.0.0.1 whose named port is `port`, followed by a document separator. */
export function workloadEntry(name: string, ports: Record<string, number>, labels: Record<string, string>, ns = 'default'): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ${name}
  namespace: ${ns}
spec:
  address: 127.0.0.1
  ports:
${Object.entries(ports).map(([k, v]) => `    ${k}: ${v}`).join('\n')}
  labels:
${Object.entries(labels).map(([k, v]) => `    ${k}: ${v}`).join('\n')}
---
`;
}

/** The mesh config (ConfigMap istio-system/istio) of a sidecar test: the access log in `dir`, an outbound policy. */
export function sidecarMesh(dir: string, policy: string): string {
  return `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: ${dir}/access.log
    outboundTrafficPolicy:
      mode: ${policy}
`;
}
