// Small Istio configs generated for the bench and the tests: one Gateway on port 80 (hosts "*"; or HTTPS on 443),
// one ServiceEntry for the upstream, one VirtualService routing to it (HTTP or TCP). Plain Istio YAML.

export interface SingleRouteOptions {
  /** Upstream port on 127.0.0.1 (STATIC), or the port the DNS answer is reached on (DNS). */
  readonly upstreamPort: number;
  readonly host?: string;
  readonly resolution?: 'STATIC' | 'DNS';
  /** uri prefix the route matches (default: every request). */
  readonly prefix?: string;
  /** HTTP (default) routes requests; TCP proxies connections (a TCP server and a `tcp` route). */
  readonly protocol?: 'HTTP' | 'TCP';
  /** Extra fields of the HTTP route, as YAML flow mappings (e.g. `retries: {attempts: 3}`). */
  readonly routeExtras?: string;
  /** A DestinationRule trafficPolicy for the upstream, as a YAML flow mapping. */
  readonly trafficPolicy?: string;
  /** VirtualService hosts (default `["*"]`: every request on the Gateway). */
  readonly routeHosts?: readonly string[];
  /** Mesh config accessLogFile; no mesh ConfigMap when undefined. */
  readonly accessLogFile?: string;
  /** HTTP only: the Gateway server is HTTPS on port 443 instead, TLS SIMPLE with these PEM files. */
  readonly serverTls?: { readonly certFile: string; readonly keyFile: string };
}

export function singleRouteYaml(o: SingleRouteOptions): string {
  const host = o.host ?? 'upstream.internal';
  const mesh = o.accessLogFile === undefined ? '' : `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: ${o.accessLogFile}
---
`;
  const endpoints = (o.resolution ?? 'STATIC') === 'STATIC' ? '\n  endpoints: [{address: 127.0.0.1}]' : '';
  const match = o.prefix ? `match: [{uri: {prefix: ${o.prefix}}}], ` : '';
  const tcp = o.protocol === 'TCP';
  const protocol = tcp ? 'TCP' : 'HTTP';
  const extras = o.routeExtras ? `${o.routeExtras}, ` : '';
  const routes = tcp ? `tcp: [{route: [{destination: {host: ${host}}}]}]` : `http: [{${match}${extras}route: [{destination: {host: ${host}}}]}]`;
  const server = o.serverTls && !tcp
    ? `{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, serverCertificate: ${o.serverTls.certFile}, privateKey: ${o.serverTls.keyFile}}}`
    : `{port: {number: 80, name: ${protocol.toLowerCase()}, protocol: ${protocol}}, hosts: ["*"]}`;
  const rule = o.trafficPolicy ? `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upstream, namespace: default}
spec:
  host: ${host}
  trafficPolicy: ${o.trafficPolicy}
` : '';
  return `${mesh}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [${server}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: default}
spec:
  hosts: [${host}]
  ports: [{number: 80, name: ${protocol.toLowerCase()}, protocol: ${protocol}, targetPort: ${o.upstreamPort}}]
  resolution: ${o.resolution ?? 'STATIC'}${endpoints}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: upstream, namespace: default}
spec:
  hosts: ${JSON.stringify(o.routeHosts ?? ['*'])}
  gateways: [gw]
  ${routes}
${rule}`;
}

/** A ServiceEntry for `host`: one port whose endpoint is 127.0.0.1:`targetPort`; ends with `---`. */
export function loopbackServiceEntryYaml(name: string, host: string, port: number, protocol: string, targetPort: number): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${host}]
  ports: [{number: ${port}, name: ${protocol.toLowerCase()}-${port}, protocol: ${protocol}, targetPort: ${targetPort}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
`;
}

/**
 * A ServiceEntry for `host` with one HTTP port (named `http`) and an endpoint on 127.0.0.1 per version,
 * labelled `version: <name>` (DestinationRule subsets select them); ends with `---`.
 */
export function versionedServiceEntryYaml(name: string, host: string, port: number, versions: Readonly<Record<string, number>>): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${host}]
  ports: [{number: ${port}, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
${Object.entries(versions).map(([v, p]) => `  - {address: 127.0.0.1, ports: {http: ${p}}, labels: {version: ${v}}}`).join('\n')}
---
`;
}

/** Gateway `default/gw` selecting the ingress gateway, one HTTP server on port 80 for every host; ends with `---`. */
export function httpGatewayYaml(): string {
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
`;
}
