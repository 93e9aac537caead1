import assert from 'node:assert/strict';
import { compile, destinationRuleFor, serverKind, upstreamHttp2, type GatewayIdentity } from '../../../src/config/compile';
import { Cluster } from '../../../src/registry/cluster';
import { res, set } from '../../helpers/resources';

const id: GatewayIdentity = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map(), bind: '0.0.0.0' };

describe('compile: services, subsets and clusters', () => {
  const svc = res('Service', 'reviews', { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080, targetPort: 9080 }] });
  const we = (v: string, port: number) => res('WorkloadEntry', `reviews-${v}`, { address: '127.0.0.1', ports: { http: port }, labels: { app: 'reviews', version: v } });
  const dr = res('DestinationRule', 'reviews', {
    host: 'reviews',
    trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' }, connectionPool: { tcp: { connectTimeout: '250ms' } } },
    subsets: [
      { name: 'v1', labels: { version: 'v1' } },
      { name: 'v2', labels: { version: 'v2' }, trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } },
      { name: 'v9', labels: { version: 'v9' } },
    ],
  });
  const se = res('ServiceEntry', 'ext', {
    hosts: ['api.example.org'], ports: [{ number: 443, name: 'https', protocol: 'HTTPS' }, { number: 80, name: 'http', protocol: 'HTTP', targetPort: 8080 }],
    resolution: 'DNS',
  });
  const snap = compile(set([svc, we('v1', 1001), we('v2', 1002), we('v3', 1003), dr, se]), id, 1).snapshot;

  it('names clusters as Istio does, one per port and subset', () => {
    assert.deepEqual([...snap.clusters.keys()].sort(), [
      'outbound|443||api.example.org', 'outbound|80||api.example.org',
      'outbound|9080|v1|reviews.default.svc.cluster.local', 'outbound|9080|v2|reviews.default.svc.cluster.local',
      'outbound|9080|v9|reviews.default.svc.cluster.local', 'outbound|9080||reviews.default.svc.cluster.local',
    ]);
  });

  it('selects endpoints by subset labels and WorkloadEntry port names', () => {
    const all = snap.clusters.get('outbound|9080||reviews.default.svc.cluster.local')!;
    assert.deepEqual(all.endpoints.map((e) => e.port), [1001, 1002, 1003]);
    assert.deepEqual(snap.clusters.get('outbound|9080|v1|reviews.default.svc.cluster.local')!.endpoints.map((e) => e.port), [1001]);
    assert.equal(snap.clusters.get('outbound|9080|v9|reviews.default.svc.cluster.local')!.endpoints.length, 0);
  });

  it('merges traffic policies: subset overrides top level per field, connect timeout from the pool', () => {
    const v1 = snap.clusters.get('outbound|9080|v1|reviews.default.svc.cluster.local')!;
    const v2 = snap.clusters.get('outbound|9080|v2|reviews.default.svc.cluster.local')!;
    assert.equal(v1.lb, 'ROUND_ROBIN');
    assert.equal(v2.lb, 'RANDOM');
    assert.equal(v1.connectTimeoutMs, 250);
    assert.equal(v2.connectTimeoutMs, 250);
    assert.equal(snap.clusters.get('outbound|443||api.example.org')!.lb, 'LEAST_REQUEST');
    assert.equal(snap.clusters.get('outbound|443||api.example.org')!.connectTimeoutMs, 10_000);
  });

  it('DNS ServiceEntries resolve their host, to the port targetPort', () => {
    const c = snap.clusters.get('outbound|80||api.example.org')!;
    assert.deepEqual(c.endpoints.map((e) => `${e.address}:${e.port}`), ['api.example.org:8080']);
    assert.equal(c.resolution, 'DNS');
  });

  it('picks the DestinationRule for a host: exact beats wildcard, longer wildcard beats shorter', () => {
    const a = res('DestinationRule', 'star', { host: '*.example.org' });
    const b = res('DestinationRule', 'deeper', { host: '*.api.example.org' });
    const c = res('DestinationRule', 'exact', { host: 'x.api.example.org' });
    assert.equal(destinationRuleFor('x.api.example.org', [a, b, c])?.metadata.name, 'exact');
    assert.equal(destinationRuleFor('y.api.example.org', [a, b, c])?.metadata.name, 'deeper');
    assert.equal(destinationRuleFor('z.example.org', [a, b, c])?.metadata.name, 'star');
    assert.equal(destinationRuleFor('z.example.com', [a, b, c]), undefined);
  });

  it('honours DestinationRule exportTo: "." hides a rule from a gateway in another namespace', () => {
    const hidden = res('DestinationRule', 'reviews', { ...dr.spec, exportTo: ['.'] });
    const own = compile(set([svc, we('v1', 1001), hidden]), { ...id, namespace: 'default' }, 1).snapshot;
    const other = compile(set([svc, we('v1', 1001), hidden]), id, 1).snapshot;
    assert.ok(own.clusters.has('outbound|9080|v1|reviews.default.svc.cluster.local'));
    assert.ok(!other.clusters.has('outbound|9080|v1|reviews.default.svc.cluster.local'));
    const exported = compile(set([svc, we('v1', 1001), res('DestinationRule', 'reviews', { ...dr.spec, exportTo: ['istio-system'] })]), id, 1).snapshot;
    assert.ok(exported.clusters.has('outbound|9080|v1|reviews.default.svc.cluster.local'));
  });

  it('the same inputs give the same fingerprint; any change gives another', () => {
    const again = compile(set([svc, we('v1', 1001), we('v2', 1002), we('v3', 1003), dr, se]), id, 2).snapshot;
    assert.equal(again.fingerprint, snap.fingerprint);
    const changed = compile(set([svc, we('v1', 1001), dr, se]), id, 2).snapshot;
    assert.notEqual(changed.fingerprint, snap.fingerprint);
  });
});

describe('load balancers', () => {
  const def = (lb: 'ROUND_ROBIN' | 'RANDOM' | 'LEAST_REQUEST') => ({
    name: 'c', host: 'h', port: 80, service: { host: 'h', name: 'h', namespace: 'default' }, protocol: 'HTTP',
    resolution: 'STATIC' as const, lb, connectTimeoutMs: 1000, endpoints: [], policy: {},
    breaker: { maxConnections: 1e9, maxPendingRequests: 1e9, maxRequests: 1e9, maxRetries: 1e9, maxRequestsPerConnection: 0, idleTimeoutMs: 3_600_000 },
  });
  const eps = [1, 2, 3, 4].map((i) => ({ address: `10.0.0.${i}`, port: 80, labels: {}, weight: 1 }));
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;

  it('ROUND_ROBIN cycles through every endpoint in order', () => {
    const c = new Cluster(def('ROUND_ROBIN'), rnd);
    c.setEndpoints(eps);
    assert.deepEqual(Array.from({ length: 8 }, () => c.pick()!.address), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']);
  });

  it('RANDOM spreads evenly over 4000 picks (each within 5 sd of 1000)', () => {
    const c = new Cluster(def('RANDOM'), rnd);
    c.setEndpoints(eps);
    const n: Record<string, number> = {};
    for (let i = 0; i < 4000; i++) {
      const a = c.pick()!.address;
      n[a] = (n[a] ?? 0) + 1;
    }
    for (const v of Object.values(n)) assert.ok(Math.abs(v - 1000) < 5 * Math.sqrt(4000 * 0.25 * 0.75), JSON.stringify(n));
  });

  it('LEAST_REQUEST (two choices) never picks the busiest endpoint when others are idle', () => {
    const c = new Cluster(def('LEAST_REQUEST'), rnd);
    c.setEndpoints(eps);
    c.endpoints[2]!.active = 100;
    for (let i = 0; i < 500; i++) assert.notEqual(c.pick()!.address, '10.0.0.3');
  });

  it('a retry avoids endpoints already tried when another exists', () => {
    const c = new Cluster(def('ROUND_ROBIN'), rnd);
    c.setEndpoints(eps.slice(0, 2));
    const first = c.pick()!;
    for (let i = 0; i < 10; i++) assert.notEqual(c.pick(new Set([first]))!.address, first.address);
  });

  it('keeps endpoint objects (and their counters) across an update that keeps them', () => {
    const c = new Cluster(def('ROUND_ROBIN'), rnd);
    c.setEndpoints(eps);
    const kept = c.endpoints[0]!;
    kept.rqTotal = 7;
    c.setEndpoints([eps[0]!, eps[3]!]);
    assert.equal(c.endpoints[0], kept);
    assert.equal(c.stats.get('membership_total'), 2);
  });
});

describe('compile: upstream protocol and mesh mTLS', () => {
  it('picks HTTP/2 toward a cluster as Envoy does', () => {
    const table: [string, Record<string, unknown>, boolean][] = [
      ['HTTP', {}, false],
      ['HTTP2', {}, true],
      ['GRPC', {}, true],
      ['GRPC-WEB', {}, true],
      ['HTTP', { connectionPool: { http: { h2UpgradePolicy: 'UPGRADE' } } }, true],
      ['HTTP', { connectionPool: { http: { h2UpgradePolicy: 'DO_NOT_UPGRADE' } } }, false],
      ['TCP', { connectionPool: { http: { h2UpgradePolicy: 'UPGRADE' } } }, false],
      ['', {}, false],
    ];
    for (const [protocol, policy, want] of table) assert.equal(upstreamHttp2(protocol, policy), want, `${protocol} ${JSON.stringify(policy)}`);
  });

  it('serves ISTIO_MUTUAL Gateway servers by terminating TLS; AUTO_PASSTHROUGH is not served', () => {
    assert.equal(serverKind('HTTPS', 'ISTIO_MUTUAL'), 'https-terminate');
    assert.equal(serverKind('TLS', 'ISTIO_MUTUAL'), 'tls-terminate');
    assert.equal(serverKind('TLS', 'AUTO_PASSTHROUGH'), undefined);
  });

  const gw = res('Gateway', 'egress', { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 80, name: 'https', protocol: 'HTTPS' }, hosts: ['edition.cnn.com'], tls: { mode: 'ISTIO_MUTUAL' } }] });
  const se = res('ServiceEntry', 'egw', { hosts: ['egw.example'], ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }] });
  const dr = res('DestinationRule', 'egw', { host: 'egw.example', subsets: [{ name: 'cnn', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } } }] });
  const meshCerts = { cert: '/m/cert-chain.pem', key: '/m/key.pem', ca: '/m/root-cert.pem' };

  it('with mesh certificates: the server terminates mTLS, the cluster originates it with Istio\'s SNI and HTTP/2', () => {
    const { snapshot } = compile(set([gw, se, dr]), { ...id, meshCerts }, 1);
    assert.equal(snapshot.listeners.get(80)?.family, 'TLS');
    const c = snapshot.clusters.get('outbound|80|cnn|egw.example')!;
    assert.equal(c.upstreamTls?.mode, 'ISTIO_MUTUAL');
    assert.equal(c.upstreamTls?.sni, 'outbound_.80_.cnn_.egw.example');
    assert.deepEqual(c.upstreamTls?.material, { kind: 'files', ...meshCerts });
    assert.equal(c.http2, true);
    assert.equal(snapshot.clusters.get('outbound|80||egw.example')?.upstreamTls, undefined);
  });

  it('without them: plaintext on both sides, each with a warning', () => {
    const { snapshot, notes } = compile(set([gw, se, dr]), id, 1);
    assert.equal(snapshot.listeners.get(80)?.family, 'HTTP');
    assert.equal(snapshot.clusters.get('outbound|80|cnn|egw.example')?.upstreamTls, undefined);
    const text = notes.map((n) => n.message).join('\n');
    assert.match(text, /ISTIO_MUTUAL without mesh certificates .* served in plaintext/);
    assert.match(text, /ISTIO_MUTUAL needs the mesh certificates .* plaintext/);
  });
});

describe('compile: headless Services', () => {
  it('a headless Service is an original-destination cluster that keeps its endpoints (for gateways)', () => {
    const svc = (name: string, clusterIP?: string) => res('Service', name, { ...(clusterIP ? { clusterIP } : {}), selector: { app: 'db' }, ports: [{ name: 'tcp', port: 5432 }] });
    const we = res('WorkloadEntry', 'db-0', { address: '10.0.0.7', labels: { app: 'db' } });
    const { snapshot } = compile(set([svc('db', 'None'), svc('db-vip', '10.96.0.9'), we]), id, 1);
    const headless = snapshot.clusters.get('outbound|5432||db.default.svc.cluster.local')!;
    assert.equal(headless.originalDstPort, 5432);
    assert.equal(headless.endpoints.length, 1);
    assert.equal(snapshot.clusters.get('outbound|5432||db-vip.default.svc.cluster.local')!.originalDstPort, undefined);
  });
});

describe('compile: exportTo of services (ServiceEntry exportTo, Service annotation)', () => {
  const se = (name: string, exportTo: string[] | undefined, ns = 'default') => res('ServiceEntry', name, {
    hosts: [`${name}.example.org`], ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], resolution: 'STATIC',
    endpoints: [{ address: '127.0.0.1' }], ...(exportTo ? { exportTo } : {}),
  }, ns);
  const annotated = (name: string, exportTo: string) => {
    const r = res('Service', name, { selector: { app: name }, ports: [{ name: 'http', port: 80 }] });
    return { ...r, metadata: { ...r.metadata, annotations: { 'networking.istio.io/exportTo': exportTo } } };
  };
  const vs = res('VirtualService', 'routes', {
    hosts: ['*'], gateways: ['istio-system/gw'],
    http: [{ route: [{ destination: { host: 'private.example.org' } }] }],
  });
  const all = set([se('public', undefined), se('private', ['.']), se('shared', ['istio-system', 'team-b']), annotated('local-svc', '.'), annotated('wide-svc', '*'), vs]);

  it('a gateway in istio-system sees what is exported everywhere or to istio-system, not what a namespace kept to itself', () => {
    const { snapshot, notes } = compile(all, id, 1);
    assert.deepEqual([...snapshot.services.keys()].sort(), [
      'public.example.org', 'shared.example.org', 'wide-svc.default.svc.cluster.local',
    ]);
    assert.ok(!snapshot.clusters.has('outbound|80||private.example.org'));
    // Istio is silent when a route names a hidden service; we say why its requests will get 503 NC.
    const hidden = notes.filter((n) => n.message.includes('is exported to'));
    assert.deepEqual(hidden.map((n) => [n.resource, n.message]), [[
      'ServiceEntry default/private', 'private.example.org is exported to . only, not to istio-system where this proxy runs: routes to it answer 503 NC',
    ]]);
  });

  it('a proxy in the services\' own namespace sees those exported to it (`.`, `*`), not one listing other namespaces only', () => {
    const { snapshot } = compile(all, { ...id, namespace: 'default' }, 1);
    assert.deepEqual([...snapshot.services.keys()].sort(), [
      'local-svc.default.svc.cluster.local', 'private.example.org', 'public.example.org', 'wide-svc.default.svc.cluster.local',
    ]);
  });
});

describe('compile: VirtualService gateway references and exportTo', () => {
  const gw = (name: string, ns: string) => res('Gateway', name, { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] }, ns);
  const domainsAt = (snapshot: ReturnType<typeof compile>['snapshot']) => [...(snapshot.listeners.get(80)?.routes?.exact.keys() ?? [])].sort();

  it('`./name` in gateways is the VirtualService\'s own namespace (Istio resolveGatewayName)', () => {
    const vs = res('VirtualService', 'bookinfo', { hosts: ['a.example.com'], gateways: ['./bookinfo-gateway'], http: [{ route: [{ destination: { host: 'x' } }] }] }, 'bookinfo');
    const { snapshot } = compile(set([gw('bookinfo-gateway', 'bookinfo'), vs]), id, 1);
    assert.deepEqual(domainsAt(snapshot), ['a.example.com']);
    // Not the same-named Gateway of another namespace.
    const other = compile(set([gw('bookinfo-gateway', 'default'), vs]), id, 1).snapshot;
    assert.deepEqual(domainsAt(other), []);
  });

  it('a route timeout or fault delay longer than a Node timer holds (720h) is capped at 2^31-1 ms, not fired after 1 ms (found by the fuzz test)', () => {
    const vs = res('VirtualService', 'slow', {
      hosts: ['a.example.com'], gateways: ['gw'],
      http: [{ route: [{ destination: { host: 'x' } }], timeout: '720h', retries: { attempts: 1, perTryTimeout: '2562047h' }, fault: { delay: { fixedDelay: '1000h', percentage: { value: 1 } } } }],
    }, 'team');
    const route = compile(set([gw('gw', 'team'), vs]), id, 1).snapshot.listeners.get(80)!.routes!.exact.get('a.example.com')!.routes[0]!;
    assert.equal(route.timeoutMs, 2 ** 31 - 1);
    assert.equal(route.retry.perTryTimeoutMs, 2 ** 31 - 1);
    assert.equal(route.fault?.delayMs, 2 ** 31 - 1);
  });

  it('fault abort grpcStatus is a gRPC code name or number, never an Object.prototype member (`toString`) (found by the fuzz test)', () => {
    const codes = ['UNAVAILABLE', '7', 'toString', 'constructor', '1e400', '99'].map((grpcStatus, i) => {
      const vs = res('VirtualService', `abort${i}`, {
        hosts: [`a${i}.example.com`], gateways: ['gw'],
        http: [{ route: [{ destination: { host: 'x' } }], fault: { abort: { grpcStatus, percentage: { value: 100 } } } }],
      }, 'team');
      return compile(set([gw('gw', 'team'), vs]), id, 1).snapshot.listeners.get(80)!.routes!.exact.get(`a${i}.example.com`)!.routes[0]!.fault?.abortGrpc;
    });
    assert.deepEqual(codes, [14, 7, 2, 2, 2, 2]);
  });

  it('`./name` in a match-level gateways list selects that match at the Gateway', () => {
    const vs = res('VirtualService', 'split', {
      hosts: ['a.example.com'], gateways: ['./gw', 'mesh'],
      http: [
        { match: [{ uri: { prefix: '/gw' }, gateways: ['./gw'] }, { uri: { prefix: '/mesh' }, gateways: ['mesh'] }], route: [{ destination: { host: 'x' } }] },
      ],
    }, 'team');
    const { snapshot } = compile(set([gw('gw', 'team'), vs]), id, 1);
    const routes = snapshot.listeners.get(80)!.routes!.exact.get('a.example.com')!.routes;
    assert.deepEqual(routes.map((r) => r.match?.uri?.value), ['/gw']);
  });

  it('exportTo is checked against the proxy\'s namespace (--namespace), not the Gateway resource\'s', () => {
    // The Gateway object lives in `edge`; this proxy runs in istio-system.
    const vs = (name: string, exportTo: string[], ns = 'edge') => res('VirtualService', name, {
      hosts: [`${name}.example.com`], gateways: ['edge/gw'], exportTo, http: [{ route: [{ destination: { host: 'x' } }] }],
    }, ns);
    const all = set([gw('gw', 'edge'), vs('own', ['.']), vs('to-proxy', ['istio-system']), vs('to-gw-ns', ['edge'], 'apps'), vs('all', ['*'], 'apps')]);
    assert.deepEqual(domainsAt(compile(all, id, 1).snapshot), ['all.example.com', 'to-proxy.example.com']);
    // A proxy running in `edge` sees the ones kept to `edge`.
    assert.deepEqual(domainsAt(compile(all, { ...id, namespace: 'edge' }, 1).snapshot), ['all.example.com', 'own.example.com', 'to-gw-ns.example.com']);
  });

  it('sidecar mode: exportTo is checked against the sidecar\'s namespace, as before', () => {
    const svc = res('Service', 'web', { selector: { app: 'web' }, ports: [{ name: 'http', port: 80 }] }, 'apps');
    const vs = (name: string, exportTo: string[]) => res('VirtualService', name, {
      hosts: ['web.apps.svc.cluster.local'], exportTo, http: [{ match: [{ uri: { prefix: `/${name}` } }], route: [{ destination: { host: 'web.apps.svc.cluster.local' } }] }],
    }, 'apps');
    const sidecar = (ns: string): GatewayIdentity => ({ labels: { app: 'sleep' }, namespace: ns, portMap: new Map(), bind: '127.0.0.1', capturePort: 15001 });
    const routesFor = (ns: string) => {
      const out = compile(set([svc, vs('private', ['.']), vs('shared', ['client'])]), sidecar(ns), 1).snapshot.listeners.get(15001)!.outbound!;
      return out.http.get(80)!.exact.get('web.apps.svc.cluster.local')!.routes.map((r) => r.name);
    };
    assert.deepEqual(routesFor('apps'), ['apps.private.0']);
    assert.deepEqual(routesFor('client'), ['apps.shared.0']);
    assert.deepEqual(routesFor('other'), ['default'], 'neither is visible: the registry default route');
  });
});

describe('compile: DestinationRule portLevelSettings (Istio MergeTrafficPolicy)', () => {
  const svc = res('Service', 'api', { selector: { app: 'api' }, ports: [{ name: 'http', port: 80 }, { name: 'http-admin', port: 9000 }] });
  const we = res('WorkloadEntry', 'api-1', { address: '127.0.0.1', labels: { app: 'api', version: 'v1' } });
  const host = 'api.default.svc.cluster.local';
  const dr = res('DestinationRule', 'api', {
    host: 'api',
    trafficPolicy: {
      loadBalancer: { simple: 'ROUND_ROBIN' },
      connectionPool: { tcp: { connectTimeout: '250ms', maxConnections: 7 } },
      outlierDetection: { consecutive5xxErrors: 3 },
      portLevelSettings: [
        { port: { number: 80 }, loadBalancer: { simple: 'RANDOM' } },
        { port: { number: 80 }, loadBalancer: { simple: 'LEAST_REQUEST' }, connectionPool: { tcp: { maxConnections: 1 } } },
      ],
    },
    subsets: [
      { name: 'plain', labels: { version: 'v1' } },
      { name: 'tuned', labels: { version: 'v1' }, trafficPolicy: { connectionPool: { tcp: { connectTimeout: '1s' } } } },
      {
        name: 'ported', labels: { version: 'v1' },
        trafficPolicy: { loadBalancer: { simple: 'RANDOM' }, portLevelSettings: [{ port: { number: 9000 }, outlierDetection: { consecutive5xxErrors: 9 } }] },
      },
    ],
  });
  const { snapshot } = compile(set([svc, we, dr]), id, 1);
  const c = (port: number, subset = '') => snapshot.clusters.get(`outbound|${port}|${subset}|${host}`)!;

  it('a matching port-level entry replaces every block: what it leaves unset gets the defaults, not the top-level value', () => {
    const p80 = c(80);
    assert.equal(p80.lb, 'RANDOM', 'the first matching entry wins');
    assert.equal(p80.connectTimeoutMs, 10_000);
    assert.equal(p80.breaker.maxConnections, 4294967295);
    assert.equal(p80.outlier, undefined);
  });

  it('a port with no port-level entry keeps the top-level policy', () => {
    const p9000 = c(9000);
    assert.equal(p9000.lb, 'ROUND_ROBIN');
    assert.equal(p9000.connectTimeoutMs, 250);
    assert.equal(p9000.breaker.maxConnections, 7);
    assert.equal(p9000.outlier?.consecutive5xx, 3);
  });

  it('a subset overrides the (port-merged) top level field by field', () => {
    assert.equal(c(80, 'plain').lb, 'RANDOM');
    assert.equal(c(80, 'plain').connectTimeoutMs, 10_000);
    assert.equal(c(80, 'tuned').connectTimeoutMs, 1000);
    assert.equal(c(80, 'tuned').lb, 'RANDOM');
    assert.equal(c(9000, 'tuned').connectTimeoutMs, 1000);
    assert.equal(c(9000, 'tuned').lb, 'ROUND_ROBIN');
    assert.equal(c(9000, 'tuned').outlier?.consecutive5xx, 3);
  });

  it('then the subset\'s own portLevelSettings replace every block for their port', () => {
    const p = c(9000, 'ported');
    assert.equal(p.outlier?.consecutive5xx, 9);
    assert.equal(p.lb, 'LEAST_REQUEST', 'not the subset\'s RANDOM, not the top level ROUND_ROBIN');
    assert.equal(p.connectTimeoutMs, 10_000);
    assert.equal(p.breaker.maxConnections, 4294967295);
    assert.equal(c(80, 'ported').lb, 'RANDOM');
    assert.equal(c(80, 'ported').outlier, undefined, 'port 80 was merged at the top level first');
  });
});

describe('compile: which DestinationRule applies (namespaces)', () => {
  const svc = res('Service', 'api', { selector: { app: 'api' }, ports: [{ name: 'http', port: 80 }] }, 'apps');
  const drIn = (name: string, ns: string, lb: string, host = 'api.apps.svc.cluster.local') => res('DestinationRule', name, { host, trafficPolicy: { loadBalancer: { simple: lb } } }, ns);
  const ruleOf = (resources: Parameters<typeof set>[0], namespace = 'istio-system') =>
    compile(set([svc, ...resources]), { ...id, namespace }, 1).snapshot.clusters.get('outbound|80||api.apps.svc.cluster.local')!.destinationRule;

  it('the proxy\'s namespace first, then the service\'s, then the root namespace; no other', () => {
    const root = drIn('root', 'istio-system', 'RANDOM');
    const own = drIn('own', 'apps', 'ROUND_ROBIN');
    const proxy = drIn('proxy', 'edge', 'LEAST_REQUEST');
    const stranger = drIn('stranger', 'elsewhere', 'ROUND_ROBIN');
    assert.equal(ruleOf([root, own, proxy], 'edge'), 'DestinationRule edge/proxy');
    assert.equal(ruleOf([root, own, stranger], 'edge'), 'DestinationRule apps/own');
    assert.equal(ruleOf([stranger, root], 'edge'), 'DestinationRule istio-system/root');
    assert.equal(ruleOf([stranger], 'edge'), undefined, 'a rule in an unrelated namespace is ignored, as Istio');
    assert.equal(ruleOf([], 'edge'), undefined);
  });

  // The gateways live in istio-system, often next to a mesh-wide rule (`*.local`, ISTIO_MUTUAL): the
  // service's own rule, with its subsets, must still win there, or subset routes answer 503.
  it('a proxy in the root namespace looks in the service\'s namespace first', () => {
    const meshWide = drIn('mesh-wide', 'istio-system', 'RANDOM', '*.local');
    const own = drIn('own', 'apps', 'ROUND_ROBIN');
    assert.equal(ruleOf([meshWide, own], 'istio-system'), 'DestinationRule apps/own');
    assert.equal(ruleOf([meshWide], 'istio-system'), 'DestinationRule istio-system/mesh-wide');
    assert.equal(ruleOf([meshWide, own], 'edge'), 'DestinationRule apps/own');
  });

  it('a wildcard rule in a preferred namespace beats an exact one further down; within a namespace the oldest wins a tie', () => {
    const wildcard = drIn('wild', 'apps', 'RANDOM', '*.svc.cluster.local');
    const exactRoot = drIn('exact-root', 'istio-system', 'ROUND_ROBIN');
    assert.equal(ruleOf([exactRoot, wildcard], 'edge'), 'DestinationRule apps/wild');
    const older = drIn('older', 'apps', 'RANDOM');
    const newer = drIn('newer', 'apps', 'ROUND_ROBIN');
    assert.equal(ruleOf([newer, older], 'edge'), 'DestinationRule apps/older');
    assert.equal(ruleOf([older, newer], 'edge'), 'DestinationRule apps/older');
  });
});

describe('compile: DestinationRule workloadSelector', () => {
  // istio.io egress TLS origination (mTLS variant): a rule for the sleep workload only. The rule for
  // every proxy is made first (older), so precedence, not age, decides below.
  const host = 'my-nginx.mesh-external.svc.cluster.local';
  const forAll = res('DestinationRule', 'everyone', { host, trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } });
  const se = res('ServiceEntry', 'nginx', { hosts: [host], ports: [{ number: 443, name: 'https', protocol: 'HTTPS' }], resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }] });
  const forSleep = res('DestinationRule', 'originate-tls-for-sleep', { host, workloadSelector: { matchLabels: { app: 'sleep' } }, trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } });
  const wildcard = res('DestinationRule', 'wide', { host: '*.mesh-external.svc.cluster.local', trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } });
  const inNs2 = res('DestinationRule', 'ns2-for-sleep', { host, workloadSelector: { matchLabels: { app: 'sleep' } }, trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }, 'ns2');
  const forEgress = res('DestinationRule', 'egress-only', { host, workloadSelector: { matchLabels: { istio: 'egressgateway' } }, trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }, 'istio-system');
  const lbFor = (labels: Record<string, string>, namespace: string, rules: typeof forAll[]) =>
    compile(set([se, ...rules]), { labels, namespace, portMap: new Map(), bind: '0.0.0.0' }, 1).snapshot.clusters.get(`outbound|443||${host}`)?.lb;

  it('as Istio picks: the namespace and the most specific host first, then the rule selecting the proxy, else the one for every proxy (table)', () => {
    const cases: [Record<string, string>, string, typeof forAll[], string][] = [
      [{ app: 'sleep', version: 'v1' }, 'default', [forAll, forSleep], 'RANDOM'], // selected: its rule, though newer
      [{ app: 'other' }, 'default', [forAll, forSleep], 'ROUND_ROBIN'], // not selected: the rule for every proxy
      [{ app: 'other' }, 'default', [forSleep], 'LEAST_REQUEST'], // not selected, nothing else: no rule
      [{ app: 'other' }, 'default', [wildcard, forSleep], 'LEAST_REQUEST'], // the exact host's rules hide the wildcard's
      [{ app: 'sleep' }, 'other-ns', [forSleep], 'LEAST_REQUEST'], // selectors do not cross namespaces
      [{ app: 'other' }, 'ns2', [inNs2, forAll], 'LEAST_REQUEST'], // the proxy's namespace has a rule for the host: levels below are hidden
      [{ app: 'sleep' }, 'ns2', [inNs2, forAll], 'RANDOM'],
      [{ istio: 'egressgateway' }, 'istio-system', [forAll, forEgress], 'RANDOM'], // the root namespace's private rules come first for its proxies
      [{ istio: 'ingressgateway' }, 'istio-system', [forAll, forEgress], 'LEAST_REQUEST'],
      [{ istio: 'ingressgateway' }, 'istio-system', [forAll], 'ROUND_ROBIN'], // the service's namespace
    ];
    for (const [labels, namespace, rules, want] of cases) assert.equal(lbFor(labels, namespace, rules), want, JSON.stringify([labels, namespace, rules.map((r) => r.metadata.name)]));
  });
});

describe('compile: L4 match source fields', () => {
  it('a gateway looks at a tcp block\'s port and gateways only, as Istio (sourceLabels do not drop the route)', () => {
    const gw = res('Gateway', 'gw', { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 31400, name: 'tcp', protocol: 'TCP' }, hosts: ['*'] }] });
    const echo = res('ServiceEntry', 'echo', { hosts: ['echo.test'], ports: [{ number: 9000, name: 'tcp', protocol: 'TCP' }], resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }] });
    const vs = res('VirtualService', 'echo', { hosts: ['*'], gateways: ['gw'], tcp: [{ match: [{ port: 31400, sourceLabels: { app: 'sleep' }, sourceNamespace: 'elsewhere' }], route: [{ destination: { host: 'echo.test', port: { number: 9000 } } }] }] });
    const l = compile(set([gw, echo, vs]), id, 1).snapshot.listeners.get(31400)!;
    assert.equal(l.tcpRoutes?.length, 1);
  });
});

describe('compile: mesh protocolDetectionTimeout', () => {
  it('is taken when positive; unset or 0 (Istio\'s "no timeout") keeps 1 s (table)', async () => {
    const { compileMesh } = await import('../../../src/config/compile');
    const cases: [string | undefined, number][] = [[undefined, 1000], ['5s', 5000], ['100ms', 100], ['0s', 1000], ['0', 1000]];
    for (const [v, want] of cases) assert.equal(compileMesh(set([], v === undefined ? {} : { protocolDetectionTimeout: v })).protocolDetectionMs, want, String(v));
  });
});
