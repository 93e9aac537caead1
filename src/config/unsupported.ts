// Fields Istio defines that meshgate reads without acting on them. The schema accepts them (Istio
// YAML must load unchanged), so without a word here they would be silently ignored: the kind of quiet
// config mistake users of Istio complain about. Each one set gets a warning at its field, saying what
// meshgate does instead.

type Check = (value: unknown) => boolean;

/** `path` is relative to `spec`; `[]` stands for every element of a list. `when`: only values it accepts are unsupported. */
interface Unsupported {
  readonly path: string;
  readonly effect: string;
  readonly when?: Check;
}

const always: Check = () => true;

/** A traffic policy's unsupported fields, under each place a DestinationRule can hold one. */
function policyFields(prefix: string): Unsupported[] {
  const fields: Unsupported[] = [
    { path: 'loadBalancer.localityLbSetting', effect: 'endpoints are balanced without regard to locality (no failover or distribution by zone)' },
    { path: 'loadBalancer.warmupDurationSecs', effect: 'new endpoints get their full share at once (no slow start)' },
    { path: 'loadBalancer.warmup', effect: 'new endpoints get their full share at once (no slow start)' },
    { path: 'loadBalancer.consistentHash.maglev', effect: 'a ring hash is used instead of Maglev (keys map to endpoints as consistently, by other points)' },
    { path: 'loadBalancer.simple', effect: 'PASSTHROUGH balances as LEAST_REQUEST over the known endpoints', when: (v) => v === 'PASSTHROUGH' },
    { path: 'connectionPool.tcp.maxConnectionDuration', effect: 'connections are not closed after a maximum age' },
    { path: 'connectionPool.tcp.tcpKeepalive.probes', effect: 'only tcpKeepalive.time is applied; probes are 10, 1 s apart (Node\'s)' },
    { path: 'connectionPool.tcp.tcpKeepalive.interval', effect: 'only tcpKeepalive.time is applied; probes are 10, 1 s apart (Node\'s)' },
    { path: 'connectionPool.http.useClientProtocol', effect: 'the upstream protocol follows the port and h2UpgradePolicy, not the client\'s' },
    { path: 'connectionPool.http.maxConcurrentStreams', effect: 'HTTP/2 upstream connections take as many streams as the server allows' },
    { path: 'tls.caCrl', effect: 'upstream certificates are not checked against a revocation list' },
    { path: 'tunnel', effect: 'connections are not tunnelled through CONNECT' },
    { path: 'proxyProtocol', effect: 'no PROXY protocol header is sent upstream' },
    { path: 'retryBudget', effect: 'retries are limited by the route and connectionPool.http.maxRetries only' },
  ];
  return [
    ...fields.map((f) => ({ ...f, path: `${prefix}.${f.path}` })),
    ...fields.map((f) => ({ ...f, path: `${prefix}.portLevelSettings[].${f.path}` })).filter((f) => !/\.(tunnel|proxyProtocol|retryBudget)$/.test(f.path)),
  ];
}

const FIELDS: Readonly<Record<string, readonly Unsupported[]>> = {
  Gateway: [
    { path: 'servers[].bind', effect: 'every server listens on the address of --bind' },
    { path: 'servers[].defaultEndpoint', effect: 'traffic is routed by VirtualServices only' },
    { path: 'servers[].tls.caCrl', effect: 'client certificates are not checked against a revocation list' },
    { path: 'servers[].tls.credentialNames', effect: 'only the first credential is served', when: (v) => Array.isArray(v) && v.length > 1 },
    { path: 'servers[].tls.tlsCertificates', effect: 'use credentialName or serverCertificate/privateKey' },
    { path: 'servers[].tls.caCertCredentialName', effect: 'the CA comes from the credential\'s ca.crt or a <credentialName>-cacert Secret' },
    { path: 'servers[].tls.verifyCertificateSpki', effect: 'client certificates are not pinned' },
    { path: 'servers[].tls.verifyCertificateHash', effect: 'client certificates are not pinned' },
  ],
  VirtualService: [
    { path: 'http[].delegate', effect: 'delegate VirtualServices are not followed: the route answers 503 (NC)' },
    { path: 'http[].match[].statPrefix', effect: 'no per-match stats' },
    { path: 'http[].retries.retryRemoteLocalities', effect: 'retries are not locality-aware', when: (v) => v === true },
    { path: 'http[].retries.backoff', effect: 'retries back off from 25 ms up to 250 ms, Envoy\'s default' },
    { path: 'http[].retries.retryIgnorePreviousHosts', effect: 'a retry always goes to another endpoint first, when there is one', when: (v) => v === false },
    { path: 'http[].fault.delay.exponentialDelay', effect: 'only fixedDelay is applied (Istio does not implement it either)' },
    { path: 'http[].fault.abort.http2Error', effect: 'only httpStatus and grpcStatus aborts are applied (Istio does not implement it either)' },
    { path: 'tcp[].match[].sourceSubnet', effect: 'connections are not matched by their source address' },
    { path: 'tls[].match[].sourceSubnet', effect: 'connections are not matched by their source address' },
  ],
  DestinationRule: [...policyFields('trafficPolicy'), ...policyFields('subsets[].trafficPolicy')],
  ServiceEntry: [
    { path: 'resolution', effect: 'DYNAMIC_DNS resolves nothing: without endpoints the service has none (503 UH)', when: (v) => v === 'DYNAMIC_DNS' },
    { path: 'subjectAltNames', effect: 'the upstream certificate is checked by a DestinationRule tls.subjectAltNames only' },
    { path: 'endpoints[].network', effect: 'every endpoint is reached directly (no multi-network gateways)' },
    { path: 'endpoints[].locality', effect: 'endpoints are balanced without regard to locality' },
    { path: 'endpoints[].serviceAccount', effect: 'ISTIO_MUTUAL accepts any identity from the mesh root' },
  ],
  WorkloadEntry: [
    { path: 'network', effect: 'the workload is reached directly (no multi-network gateways)' },
    { path: 'locality', effect: 'endpoints are balanced without regard to locality' },
    { path: 'serviceAccount', effect: 'ISTIO_MUTUAL accepts any identity from the mesh root' },
  ],
  /** The mesh config (ConfigMap istio-system/istio, data.mesh). */
  MeshConfig: [
    { path: 'protocolDetectionTimeout', effect: '0 (no timeout) is not taken: protocol detection waits 1 s for a client\'s first bytes', when: (v) => typeof v === 'string' && /^0+(\.0*)?[a-z]*$/.test(v) },
    { path: 'enableAutoMtls', effect: 'mTLS is originated only where a DestinationRule says tls.mode ISTIO_MUTUAL', when: (v) => v === true },
    { path: 'enableTracing', effect: 'no traces are reported', when: (v) => v === true },
    { path: 'defaultHttpRetryPolicy.retryRemoteLocalities', effect: 'retries are not locality-aware', when: (v) => v === true },
    { path: 'outboundTrafficPolicy.egressProxy', effect: 'unknown traffic goes to its original destination (ALLOW_ANY) or nowhere' },
    { path: 'outboundTrafficPolicy.mode', effect: 'ALLOW_ANY_DYNAMIC_DNS works as ALLOW_ANY', when: (v) => v === 'ALLOW_ANY_DYNAMIC_DNS' },
  ],
  Sidecar: [
    { path: 'ingress', effect: 'the inbound side serves the ports of the Services selecting the proxy (--inbound-port)', when: (v) => !Array.isArray(v) || v.length > 0 },
    { path: 'egress[].port', effect: 'the egress hosts apply to every port' },
    { path: 'egress[].bind', effect: 'outbound traffic is captured on the capture port only' },
    { path: 'egress[].captureMode', effect: 'outbound traffic is captured by the iptables rules only' },
    { path: 'outboundTrafficPolicy.egressProxy', effect: 'unknown traffic goes to its original destination (ALLOW_ANY) or nowhere' },
    { path: 'inboundConnectionPool', effect: 'the inbound side has no connection limits' },
  ],
};

/** Each concrete path (`spec.servers[1].bind`; `root` for the mesh config) where an unsupported field of this kind is set, with what meshgate does instead. */
export function unsupportedFields(kind: string, spec: unknown, root = 'spec'): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  for (const f of FIELDS[kind] ?? []) {
    for (const { path, value } of valuesAt(spec, f.path.split('.'), root)) {
      if (!(f.when ?? always)(value)) continue;
      const name = f.path.slice(f.path.lastIndexOf('.') + 1).replace('[]', '');
      const shown = f.when && typeof value !== 'object' ? `${name}: ${JSON.stringify(value)}` : name;
      out.push({ path, message: `warning: ${shown} is not supported by meshgate: ${f.effect}` });
    }
  }
  return out;
}

/** The values at a path of segments (`servers[]` expands a list), with their concrete paths. */
function valuesAt(v: unknown, segments: readonly string[], at: string): { path: string; value: unknown }[] {
  if (segments.length === 0) return v === undefined || v === null ? [] : [{ path: at, value: v }];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return [];
  const [head, ...rest] = segments as [string, ...string[]];
  const list = head.endsWith('[]');
  const key = list ? head.slice(0, -2) : head;
  if (!Object.hasOwn(v, key)) return [];
  const child = (v as Record<string, unknown>)[key];
  if (!list) return valuesAt(child, rest, `${at}.${key}`);
  if (!Array.isArray(child)) return [];
  return child.flatMap((item, i) => valuesAt(item, rest, `${at}.${key}[${i}]`));
}
