// The shape of each resource's spec, as a small declarative schema: what fields exist, their types,
// which are required. validate.ts walks a value against it and reports every mismatch.

export type Schema =
  | { readonly t: 'str' }
  | { readonly t: 'regex' } // a string that must compile as RE2
  | { readonly t: 'int'; readonly min?: number; readonly max?: number }
  | { readonly t: 'num'; readonly min?: number; readonly max?: number }
  | { readonly t: 'bool' }
  | { readonly t: 'dur' }
  | { readonly t: 'enum'; readonly v: readonly string[] }
  | { readonly t: 'obj'; readonly f: Readonly<Record<string, Schema>>; readonly req?: readonly string[]; readonly atMostOne?: readonly string[]; readonly open?: boolean }
  | { readonly t: 'arr'; readonly of: Schema }
  | { readonly t: 'map'; readonly of: Schema }
  | { readonly t: 'intOrStr'; readonly min?: number; readonly max?: number }
  | { readonly t: 'any' };

const str: Schema = { t: 'str' };
const bool: Schema = { t: 'bool' };
const dur: Schema = { t: 'dur' };
const any: Schema = { t: 'any' };
const port: Schema = { t: 'int', min: 1, max: 65535 };
const u32: Schema = { t: 'int', min: 0, max: 4294967295 };
const strs: Schema = { t: 'arr', of: str };
const labels: Schema = { t: 'map', of: str };
const obj = (f: Record<string, Schema>, req?: string[], atMostOne?: string[]): Schema => ({ t: 'obj', f, req, atMostOne });
const arr = (of: Schema): Schema => ({ t: 'arr', of });
const enm = (...v: string[]): Schema => ({ t: 'enum', v });

const percent = obj({ value: { t: 'num', min: 0, max: 100 } });
const stringMatch = obj({ exact: str, prefix: str, regex: { t: 'regex' } }, undefined, ['exact', 'prefix', 'regex']);
const portSelector = obj({ number: port });
const destination = obj({ host: str, subset: str, port: portSelector }, ['host']);
const headerOps = obj({ set: labels, add: labels, remove: strs });
const headers = obj({ request: headerOps, response: headerOps });

const serverTls = obj({
  httpsRedirect: bool,
  mode: enm('PASSTHROUGH', 'SIMPLE', 'MUTUAL', 'AUTO_PASSTHROUGH', 'ISTIO_MUTUAL', 'OPTIONAL_MUTUAL'),
  serverCertificate: str, privateKey: str, caCertificates: str, caCrl: str, credentialName: str, credentialNames: strs,
  tlsCertificates: arr(obj({ serverCertificate: str, privateKey: str, caCertificates: str })),
  caCertCredentialName: str,
  subjectAltNames: strs, verifyCertificateSpki: strs, verifyCertificateHash: strs,
  minProtocolVersion: enm('TLS_AUTO', 'TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'),
  maxProtocolVersion: enm('TLS_AUTO', 'TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'),
  cipherSuites: strs,
});

export const GATEWAY: Schema = obj({
  selector: labels,
  servers: arr(obj({
    port: obj({ number: port, protocol: str, name: str, targetPort: port }, ['number', 'protocol']),
    hosts: strs, bind: str, defaultEndpoint: str, tls: serverTls, name: str,
  }, ['port', 'hosts'])),
}, ['servers']);

const httpMatch = obj({
  name: str, uri: stringMatch, scheme: stringMatch, method: stringMatch, authority: stringMatch,
  headers: { t: 'map', of: stringMatch }, port, sourceLabels: labels, gateways: strs,
  queryParams: { t: 'map', of: stringMatch }, ignoreUriCase: bool, withoutHeaders: { t: 'map', of: stringMatch },
  sourceNamespace: str, statPrefix: str,
});

const httpRoute = obj({
  name: str,
  match: arr(httpMatch),
  route: arr(obj({ destination, weight: { t: 'int', min: 0, max: 100 }, headers }, ['destination'])),
  redirect: obj({
    uri: str, authority: str, port, derivePort: enm('FROM_PROTOCOL_DEFAULT', 'FROM_REQUEST_PORT'), scheme: str,
    redirectCode: { t: 'int', min: 300, max: 399 },
  }),
  directResponse: obj({ status: { t: 'int', min: 200, max: 599 }, body: obj({ string: str, bytes: str }, undefined, ['string', 'bytes']) }, ['status']),
  delegate: obj({ name: str, namespace: str }),
  rewrite: obj({ uri: str, authority: str, uriRegexRewrite: obj({ match: { t: 'regex' }, rewrite: str }, ['match', 'rewrite']) }),
  timeout: dur,
  retries: obj({ attempts: { t: 'int', min: 0 }, perTryTimeout: dur, retryOn: str, retryRemoteLocalities: bool, retryIgnorePreviousHosts: bool, backoff: dur }),
  fault: obj({
    delay: obj({ fixedDelay: dur, exponentialDelay: dur, percentage: percent, percent: { t: 'int', min: 0, max: 100 } }),
    abort: obj({ httpStatus: { t: 'int', min: 200, max: 599 }, grpcStatus: str, http2Error: str, percentage: percent }),
  }),
  mirror: destination,
  mirrors: arr(obj({ destination, percentage: percent }, ['destination'])),
  mirrorPercentage: percent,
  mirrorPercent: { t: 'int', min: 0, max: 100 },
  mirror_percent: { t: 'int', min: 0, max: 100 },
  corsPolicy: obj({
    allowOrigins: arr(stringMatch), allowOrigin: strs, allowMethods: strs, allowHeaders: strs, exposeHeaders: strs,
    maxAge: dur, allowCredentials: bool, unmatchedPreflights: enm('UNSPECIFIED', 'FORWARD', 'IGNORE'),
  }),
  headers,
});

const l4Match = {
  destinationSubnets: strs, port, sourceLabels: labels, gateways: strs, sourceNamespace: str, sourceSubnet: str,
};
const routeDestination = obj({ destination, weight: { t: 'int', min: 0, max: 100 } }, ['destination']);

export const VIRTUAL_SERVICE: Schema = obj({
  hosts: strs,
  gateways: strs,
  http: arr(httpRoute),
  tls: arr(obj({ match: arr(obj({ sniHosts: strs, ...l4Match }, ['sniHosts'])), route: arr(routeDestination) }, ['match'])),
  tcp: arr(obj({ match: arr(obj(l4Match)), route: arr(routeDestination) })),
  exportTo: strs,
});

const loadBalancer = obj({
  simple: enm('UNSPECIFIED', 'LEAST_CONN', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST'),
  consistentHash: obj({
    httpHeaderName: str,
    httpCookie: obj({ name: str, path: str, ttl: dur }, ['name']),
    useSourceIp: bool, httpQueryParameterName: str,
    ringHash: obj({ minimumRingSize: u32 }), maglev: obj({ tableSize: u32 }), minimumRingSize: u32,
  }),
  localityLbSetting: any, warmupDurationSecs: dur, warmup: any,
}, undefined, ['simple', 'consistentHash']);

const connectionPool = obj({
  tcp: obj({
    maxConnections: u32, connectTimeout: dur,
    tcpKeepalive: obj({ probes: u32, time: dur, interval: dur }),
    maxConnectionDuration: dur, idleTimeout: dur,
  }),
  http: obj({
    http1MaxPendingRequests: u32, http2MaxRequests: u32, maxRequestsPerConnection: u32, maxRetries: u32,
    idleTimeout: dur, h2UpgradePolicy: enm('DEFAULT', 'DO_NOT_UPGRADE', 'UPGRADE'), useClientProtocol: bool,
    maxConcurrentStreams: u32,
  }),
});

const outlierDetection = obj({
  splitExternalLocalOriginErrors: bool, consecutiveLocalOriginFailures: u32, consecutiveGatewayErrors: u32,
  consecutive5xxErrors: u32, consecutiveErrors: u32, interval: dur, baseEjectionTime: dur,
  maxEjectionPercent: { t: 'int', min: 0, max: 100 }, minHealthPercent: { t: 'int', min: 0, max: 100 },
});

const clientTls = obj({
  mode: enm('DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL'),
  clientCertificate: str, privateKey: str, caCertificates: str, credentialName: str, subjectAltNames: strs,
  sni: str, insecureSkipVerify: bool, caCrl: str,
});

const portPolicy = { loadBalancer, connectionPool, outlierDetection, tls: clientTls };
const trafficPolicy = obj({
  ...portPolicy,
  portLevelSettings: arr(obj({ port: portSelector, ...portPolicy })),
  tunnel: any, proxyProtocol: any, retryBudget: any,
});

export const DESTINATION_RULE: Schema = obj({
  host: str,
  trafficPolicy,
  subsets: arr(obj({ name: str, labels, trafficPolicy }, ['name'])),
  exportTo: strs,
  workloadSelector: obj({ matchLabels: labels }),
}, ['host']);

const workloadEntry = obj({
  address: str, ports: { t: 'map', of: port }, labels, network: str, locality: str,
  weight: u32, serviceAccount: str,
});

export const WORKLOAD_ENTRY: Schema = workloadEntry;

export const SERVICE_ENTRY: Schema = obj({
  hosts: strs,
  addresses: strs,
  ports: arr(obj({ number: port, protocol: str, name: str, targetPort: port }, ['number'])),
  location: enm('MESH_EXTERNAL', 'MESH_INTERNAL'),
  resolution: enm('NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN', 'DYNAMIC_DNS'),
  endpoints: arr(workloadEntry),
  workloadSelector: obj({ labels }),
  exportTo: strs,
  subjectAltNames: strs,
}, ['hosts']);

export const SIDECAR: Schema = obj({
  workloadSelector: obj({ labels }),
  ingress: arr(any),
  egress: arr(obj({ port: any, bind: str, captureMode: enm('DEFAULT', 'IPTABLES', 'NONE'), hosts: strs }, ['hosts'])),
  outboundTrafficPolicy: obj({ mode: enm('REGISTRY_ONLY', 'ALLOW_ANY'), egressProxy: destination }),
  inboundConnectionPool: any,
});

/** The mesh config fields meshgate knows; other MeshConfig fields are accepted with a warning. */
export const MESH: Schema = obj({
  accessLogFile: str,
  accessLogEncoding: enm('TEXT', 'JSON'),
  accessLogFormat: str,
  connectTimeout: dur,
  outboundTrafficPolicy: obj({ mode: enm('REGISTRY_ONLY', 'ALLOW_ANY', 'ALLOW_ANY_DYNAMIC_DNS'), egressProxy: destination }),
  dnsRefreshRate: dur,
  protocolDetectionTimeout: dur,
  enableAutoMtls: bool,
  enableTracing: bool,
  defaultHttpRetryPolicy: obj({ attempts: { t: 'int', min: 0 }, perTryTimeout: dur, retryOn: str, retryRemoteLocalities: bool }),
  defaultConfig: any,
});

// ---------------------------------------------------------------- Kubernetes core kinds
// Only the fields meshgate reads are checked; the API's other fields (clusterIPs, ipFamilies,
// sessionAffinity, ...) pass (`open`), so objects from the Kubernetes API and full manifests load.

/** `open`: other fields are allowed (not reported as unknown). */
const openObj = (f: Record<string, Schema>, req?: string[]): Schema => ({ t: 'obj', f, req, open: true });

export const SERVICE: Schema = openObj({
  selector: labels,
  ports: arr(obj({
    port, name: str, targetPort: { t: 'intOrStr', min: 1, max: 65535 }, protocol: str, appProtocol: str, nodePort: { t: 'int', min: 0, max: 65535 },
  }, ['port'])),
  type: str, clusterIP: str, externalName: str,
});

/** Secret and ConfigMap: checked from the object's top level (`data.tls.crt`), not under `spec`. */
export const SECRET: Schema = obj({ type: str, data: labels, stringData: labels });
export const CONFIG_MAP: Schema = openObj({ data: labels });

export const SCHEMAS: Readonly<Record<string, Schema>> = {
  Gateway: GATEWAY,
  VirtualService: VIRTUAL_SERVICE,
  DestinationRule: DESTINATION_RULE,
  ServiceEntry: SERVICE_ENTRY,
  WorkloadEntry: WORKLOAD_ENTRY,
  Sidecar: SIDECAR,
  Service: SERVICE,
  Secret: SECRET,
  ConfigMap: CONFIG_MAP,
};

/** Where a kind's schema starts: `spec`, except Secret and ConfigMap whose fields are top-level. */
export function schemaRoot(kind: string): string {
  return kind === 'Secret' || kind === 'ConfigMap' ? '' : 'spec';
}
