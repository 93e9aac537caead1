// Kubernetes Services + EndpointSlices + Pods -> registry services, and Istio's protocol detection:
// tables of inputs and the expected service definitions.

import assert from 'node:assert/strict';
import type { KubeServicePort } from '../../../src/config/types';
import { protocolFromPortName, buildServices, endpointPortOf, portEndpoints, type ServiceDef } from '../../../src/serviceentry/services';
import { endpointsOf, indexPods, kubeServiceDefs, type EndpointSliceObject, type KubeServiceObject, type PodObject } from '../../../src/kube/registry';
import { compile } from '../../../src/config/compile';
import { set as resourceSet, res } from '../../helpers/resources';

describe('Kubernetes service port protocol (Istio ConvertProtocol)', () => {
  const table: [string, KubeServicePort, string][] = [
    ['http name', { name: 'http', port: 80 }, 'HTTP'],
    ['http- prefix', { name: 'http-web', port: 8080 }, 'HTTP'],
    ['upper-case name', { name: 'HTTP2-api', port: 80 }, 'HTTP2'],
    ['https', { name: 'https', port: 443 }, 'HTTPS'],
    ['grpc', { name: 'grpc-svc', port: 9000 }, 'GRPC'],
    ['grpc-web before the - split', { name: 'grpc-web-ui', port: 9001 }, 'GRPC-WEB'],
    ['tcp', { name: 'tcp-echo', port: 9000 }, 'TCP'],
    ['tls', { name: 'tls', port: 443 }, 'TLS'],
    ['mongo', { name: 'mongo', port: 27018 }, 'MONGO'],
    ['redis', { name: 'redis-main', port: 6379 }, 'REDIS'],
    ['mysql', { name: 'mysql', port: 3307 }, 'MYSQL'],
    ['unknown name: sniffed', { name: 'web', port: 8080 }, ''],
    ['no name: sniffed', { port: 8080 }, ''],
    ['prefix without dash is the whole name', { name: 'httpx', port: 80 }, ''],
    ['well-known MySQL port, no name', { port: 3306 }, 'TCP'],
    ['well-known DNS port, unknown name', { name: 'dns', port: 53 }, 'TCP'],
    ['well-known SMTP port', { name: 'mail', port: 25 }, 'TCP'],
    ['well-known MongoDB port', { port: 27017 }, 'TCP'],
    ['UDP wins over the name', { name: 'http', port: 53, protocol: 'UDP' }, 'UDP'],
    ['appProtocol wins over the name', { name: 'tcp-x', port: 80, appProtocol: 'http' }, 'HTTP'],
    ['appProtocol kubernetes.io/h2c', { name: 'web', port: 80, appProtocol: 'kubernetes.io/h2c' }, 'HTTP2'],
    ['appProtocol kubernetes.io/ws', { port: 80, appProtocol: 'kubernetes.io/ws' }, 'HTTP'],
    ['appProtocol kubernetes.io/wss', { port: 443, appProtocol: 'kubernetes.io/wss' }, 'HTTPS'],
    ['appProtocol grpc', { name: 'http', port: 80, appProtocol: 'grpc' }, 'GRPC'],
    ['unknown appProtocol is not the name', { name: 'http', port: 80, appProtocol: 'example.com/custom' }, ''],
    ['a name that is an Object property is no protocol', { name: 'constructor', port: 80 }, ''],
  ];
  for (const [what, port, want] of table) {
    it(`${what}: ${JSON.stringify(port)} -> ${want || "'' (sniffed)"}`, () => assert.equal(protocolFromPortName(port), want));
  }
});

function svc(name: string, spec: KubeServiceObject['spec'], ns = 'default', annotations?: Record<string, string>): KubeServiceObject {
  return { metadata: { name, namespace: ns, ...(annotations ? { annotations } : {}) }, spec };
}

function slice(name: string, service: string, ports: EndpointSliceObject['ports'], endpoints: EndpointSliceObject['endpoints'], ns = 'default', addressType = 'IPv4'): EndpointSliceObject {
  return { metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': service } }, addressType, ports, endpoints };
}

function pod(name: string, ip: string, labels: Record<string, string>, ns = 'default'): PodObject {
  return { metadata: { name, namespace: ns, labels }, status: { podIP: ip, podIPs: [{ ip }] } };
}

const ref = (name: string, ns = 'default') => ({ kind: 'Pod', name, namespace: ns });

describe('Services + EndpointSlices + Pods -> registry services', () => {
  const reviews = svc('reviews', { selector: { app: 'reviews' }, clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 9080, targetPort: 'http-web' }] });
  const reviewsSlice = slice('reviews-abc', 'reviews', [{ name: 'http', port: 8080, protocol: 'TCP' }], [
    { addresses: ['10.0.0.2'], conditions: { ready: true }, targetRef: ref('reviews-v2') },
    { addresses: ['10.0.0.1'], conditions: { ready: true }, targetRef: ref('reviews-v1') },
    { addresses: ['10.0.0.3'], conditions: { ready: false }, targetRef: ref('reviews-v3') },
    { addresses: ['10.0.0.4'], conditions: {} }, // unknown readiness counts as ready; labels by IP
  ]);
  const pods = [pod('reviews-v1', '10.0.0.1', { app: 'reviews', version: 'v1' }), pod('reviews-v2', '10.0.0.2', { app: 'reviews', version: 'v2' }),
    pod('reviews-v4', '10.0.0.4', { app: 'reviews', version: 'v4' })];

  it('a ClusterIP Service: FQDN host, ports and protocol, ClusterIP, ready endpoints with their slice port, pod labels and workload (bare Pods: their name), sorted', () => {
    const [def, ...rest] = kubeServiceDefs([reviews], [reviewsSlice], pods);
    assert.equal(rest.length, 0);
    assert.deepEqual(def, {
      host: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default', origin: 'Service',
      ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
      resolution: 'STATIC',
      endpoints: [
        { address: '10.0.0.1', ports: { http: 8080 }, labels: { app: 'reviews', version: 'v1' }, weight: 1, listedPortsOnly: true, workload: { name: 'reviews-v1', namespace: 'default' } },
        { address: '10.0.0.2', ports: { http: 8080 }, labels: { app: 'reviews', version: 'v2' }, weight: 1, listedPortsOnly: true, workload: { name: 'reviews-v2', namespace: 'default' } },
        { address: '10.0.0.4', ports: { http: 8080 }, labels: { app: 'reviews', version: 'v4' }, weight: 1, listedPortsOnly: true, workload: { name: 'reviews-v4', namespace: 'default' } },
      ],
      addresses: ['10.96.0.10'], location: 'MESH_INTERNAL', exportTo: ['*'], definedBy: 'Service default/reviews',
    });
    assert.equal(endpointPortOf(def!.endpoints[0]!, def!.ports[0]!), 8080, 'the named targetPort is the slice port');
  });

  describe('endpoints carry their Pod\'s workload (Istio istio:workload endpoint metadata)', () => {
    /** A Pod a controller made, as the API (slimmed) has it. */
    const owned = (name: string, ip: string, kind: string, owner: string, labels: Record<string, string>, ns = 'shop'): PodObject => ({
      metadata: { name, namespace: ns, generateName: name.slice(0, name.lastIndexOf('-') + 1), labels, ownerReferences: [{ kind, name: owner, controller: true }] },
      status: { podIP: ip, podIPs: [{ ip }] },
    });
    const shopPods = [
      owned('reviews-v1-7d4b9c8f5-x2x9z', '10.4.0.1', 'ReplicaSet', 'reviews-v1-7d4b9c8f5', { app: 'reviews', version: 'v1', 'pod-template-hash': '7d4b9c8f5' }),
      owned('reviews-v2-5c8f6d7b9-q8f2k', '10.4.0.2', 'ReplicaSet', 'reviews-v2-5c8f6d7b9', { app: 'reviews', version: 'v2', 'pod-template-hash': '5c8f6d7b9' }),
      owned('reviews-db-0', '10.4.0.3', 'StatefulSet', 'reviews-db', { app: 'reviews' }),
      owned('reviews-report-28462710-6kq9x', '10.4.0.4', 'Job', 'reviews-report-28462710', { app: 'reviews', 'job-name': 'reviews-report-28462710' }),
      // The same name as a Pod of shop, in another namespace, at another address.
      owned('reviews-v1-7d4b9c8f5-x2x9z', '10.9.0.1', 'ReplicaSet', 'elsewhere-7d4b9c8f5', { 'pod-template-hash': '7d4b9c8f5' }, 'other'),
    ];
    const shopSvc = svc('reviews', { ports: [{ name: 'http', port: 9080 }] }, 'shop');
    const shopSlice = slice('reviews-1', 'reviews', [{ name: 'http', port: 9080 }], [
      { addresses: ['10.4.0.1'], targetRef: ref('reviews-v1-7d4b9c8f5-x2x9z', 'shop') }, // by targetRef
      { addresses: ['10.4.0.2'] }, // no targetRef: by IP
      { addresses: ['10.4.0.3'], targetRef: ref('reviews-db-0') }, // targetRef without a namespace: the slice's
      { addresses: ['10.4.0.4'], targetRef: { kind: 'Pod', name: 'reviews-report-28462710-6kq9x' } },
      { addresses: ['10.4.0.9'], targetRef: ref('gone', 'shop') }, // a Pod not (yet) known: no workload
      { addresses: ['10.4.0.10'], targetRef: { kind: 'Node', name: 'node-1' } }, // not a Pod, unknown address
    ], 'shop');
    const want = [
      ['10.4.0.1', { name: 'reviews-v1', namespace: 'shop' }],
      ['10.4.0.10', undefined],
      ['10.4.0.2', { name: 'reviews-v2', namespace: 'shop' }],
      ['10.4.0.3', { name: 'reviews-db', namespace: 'shop' }],
      ['10.4.0.4', { name: 'reviews-report', namespace: 'shop' }],
      ['10.4.0.9', undefined],
    ];

    it('kubeServiceDefs: Deployment, StatefulSet and CronJob workloads by targetRef or by IP; none when the Pod is unknown', () => {
      const [def] = kubeServiceDefs([shopSvc], [shopSlice], shopPods);
      assert.deepEqual(def!.endpoints.map((e) => [e.address, e.workload]), want);
      assert.ok(def!.endpoints.filter((e) => e.workload === undefined).every((e) => !('workload' in e)), 'no workload key at all when the Pod is unknown');
      assert.deepEqual(def!.endpoints[0], {
        address: '10.4.0.1', ports: { http: 9080 }, labels: { app: 'reviews', version: 'v1', 'pod-template-hash': '7d4b9c8f5' }, weight: 1, listedPortsOnly: true,
        workload: { name: 'reviews-v1', namespace: 'shop' },
      });
    });

    it('endpointsOf over indexPods: the same, and the workload namespace is the Pod\'s', () => {
      const got = endpointsOf([{ name: 'http', port: 9080 }], 'shop', [shopSlice], indexPods(shopPods));
      assert.deepEqual(got.map((e) => [e.address, e.workload]), want);
      // A targetRef into another namespace names that namespace's Pod, with its own workload.
      const cross = endpointsOf([{ name: 'http', port: 9080 }], 'shop',
        [slice('x', 'reviews', [{ name: 'http', port: 9080 }], [{ addresses: ['10.9.0.1'], targetRef: ref('reviews-v1-7d4b9c8f5-x2x9z', 'other') }], 'shop')], indexPods(shopPods));
      assert.deepEqual(cross.map((e) => e.workload), [{ name: 'elsewhere', namespace: 'other' }]);
    });

    it('through buildServices, the endpoints keep their workload', () => {
      const [kube] = kubeServiceDefs([shopSvc], [shopSlice], shopPods);
      const eps = buildServices({ ...resourceSet([]), kubernetesServices: [kube!] }).get('reviews.shop.svc.cluster.local')!.endpoints;
      assert.deepEqual(eps.map((e) => [e.address, e.workload]), want);
    });
  });

  const cases: { what: string; services: KubeServiceObject[]; slices: EndpointSliceObject[]; pods?: PodObject[]; want: unknown }[] = [
    {
      what: 'unnamed single port: the slice port with an empty name; numeric targetPort kept as the fallback',
      services: [svc('web', { ports: [{ port: 80, targetPort: 8080 }] })],
      slices: [slice('web-1', 'web', [{ port: 8080 }], [{ addresses: ['10.1.0.1'] }])],
      want: [{ host: 'web.default.svc.cluster.local', ports: [{ number: 80, name: '80', protocol: '', targetPort: 8080 }], endpoints: [{ address: '10.1.0.1', ports: { 80: 8080 }, labels: {}, weight: 1, listedPortsOnly: true }] }],
    },
    {
      what: 'two ports mapped by name; several slices merged; one address counted once',
      services: [svc('api', { ports: [{ name: 'http', port: 80 }, { name: 'grpc', port: 9000 }] })],
      slices: [
        slice('api-1', 'api', [{ name: 'http', port: 8080 }, { name: 'grpc', port: 9090 }], [{ addresses: ['10.1.0.2'] }, { addresses: ['10.1.0.1'] }]),
        slice('api-2', 'api', [{ name: 'grpc', port: 9090 }, { name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }, { addresses: ['10.1.0.3'] }]),
      ],
      want: [{
        host: 'api.default.svc.cluster.local',
        ports: [{ number: 80, name: 'http', protocol: 'HTTP', targetPort: 80 }, { number: 9000, name: 'grpc', protocol: 'GRPC', targetPort: 9000 }],
        endpoints: ['10.1.0.1', '10.1.0.2', '10.1.0.3'].map((address) => ({ address, ports: { http: 8080, grpc: 9090 }, labels: {}, weight: 1, listedPortsOnly: true })),
      }],
    },
    {
      what: 'slices of another namespace or another service, and FQDN slices, are not used',
      services: [svc('a', { ports: [{ name: 'http', port: 80 }] }, 'ns1')],
      slices: [
        slice('a-other-ns', 'a', [{ name: 'http', port: 80 }], [{ addresses: ['10.2.0.1'] }], 'ns2'),
        slice('b', 'b', [{ name: 'http', port: 80 }], [{ addresses: ['10.2.0.2'] }], 'ns1'),
        slice('a-fqdn', 'a', [{ name: 'http', port: 80 }], [{ addresses: ['a.example.com'] }], 'ns1', 'FQDN'),
        slice('a-1', 'a', [{ name: 'http', port: 80 }], [{ addresses: ['10.2.0.3'] }], 'ns1'),
      ],
      want: [{ host: 'a.ns1.svc.cluster.local', ports: [{ number: 80, name: 'http', protocol: 'HTTP', targetPort: 80 }], endpoints: [{ address: '10.2.0.3', ports: { http: 80 }, labels: {}, weight: 1, listedPortsOnly: true }] }],
    },
    {
      what: 'ExternalName: resolved by DNS, the external name as the endpoint (trailing dot dropped)',
      services: [svc('ext', { type: 'ExternalName', externalName: 'httpbin.org.', ports: [{ name: 'https', port: 443 }] })],
      slices: [],
      want: [{ host: 'ext.default.svc.cluster.local', resolution: 'DNS', ports: [{ number: 443, name: 'https', protocol: 'HTTPS', targetPort: 443 }], endpoints: [{ address: 'httpbin.org', ports: {}, labels: {}, weight: 1 }], addresses: [] }],
    },
    {
      what: 'headless Service (clusterIP None): no VIP, endpoints from its slices',
      services: [svc('db', { clusterIP: 'None', ports: [{ name: 'tcp', port: 5432 }] })],
      slices: [slice('db-1', 'db', [{ name: 'tcp', port: 5432 }], [{ addresses: ['10.3.0.1'] }])],
      want: [{ host: 'db.default.svc.cluster.local', resolution: 'STATIC', addresses: [], endpoints: [{ address: '10.3.0.1', ports: { tcp: 5432 }, labels: {}, weight: 1, listedPortsOnly: true }] }],
    },
    {
      what: 'a Service with no slice yet has no endpoints; the networking.istio.io/exportTo annotation is read',
      services: [svc('new', { ports: [{ name: 'http', port: 80 }] }, 'default', { 'networking.istio.io/exportTo': '., istio-system' })],
      slices: [],
      want: [{ host: 'new.default.svc.cluster.local', endpoints: [], exportTo: ['.', 'istio-system'] }],
    },
    {
      what: 'services come out sorted by host; a nameless object is skipped',
      services: [svc('zeta', {}), { metadata: {}, spec: {} }, svc('alpha', {})],
      slices: [],
      want: [{ host: 'alpha.default.svc.cluster.local', ports: [] }, { host: 'zeta.default.svc.cluster.local', ports: [] }],
    },
  ];
  const eps = (def: ServiceDef, port: number) => portEndpoints(def, def.ports.find((p) => p.number === port)!).map((e) => `${e.address}:${e.port}`);

  it('an endpoint whose slice lacks the Service\'s port is not in that port\'s cluster (no fallback to the Service port)', () => {
    const web = svc('web', { ports: [{ name: 'http', port: 80, targetPort: 'http-web' }] });
    const [def] = kubeServiceDefs([web], [
      slice('web-a', 'web', [{ name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }]),
      slice('web-b', 'web', [], [{ addresses: ['10.1.0.2'] }]),
    ], []);
    assert.deepEqual(eps(def!, 80), ['10.1.0.1:8080']);
    // The same with a numeric targetPort: a slice without the port still adds nothing.
    const [num] = kubeServiceDefs([svc('web', { ports: [{ name: 'http', port: 80, targetPort: 8080 }] })], [
      slice('web-a', 'web', [{ name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }]),
      slice('web-b', 'web', [{ name: 'metrics', port: 9100 }], [{ addresses: ['10.1.0.2'] }]),
    ], []);
    assert.deepEqual(eps(num!, 80), ['10.1.0.1:8080']);
  });

  it('through compile: the cluster of the port has only the endpoint whose slice has the port', () => {
    const defs = kubeServiceDefs([svc('web', { clusterIP: '10.96.0.5', ports: [{ name: 'http', port: 80, targetPort: 'http-web' }] })], [
      slice('web-a', 'web', [{ name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }]),
      slice('web-b', 'web', [], [{ addresses: ['10.1.0.2'] }]),
    ], []);
    const id = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map<number, number>(), bind: '0.0.0.0' };
    const cluster = compile({ ...resourceSet([]), kubernetesServices: defs }, id, 1).snapshot.clusters.get('outbound|80||web.default.svc.cluster.local');
    assert.deepEqual(cluster?.endpoints.map((e) => `${e.address}:${e.port}`), ['10.1.0.1:8080']);
  });

  it('two ports, each slice with one of them: each endpoint is in its own port\'s cluster only', () => {
    const api = svc('api', { ports: [{ name: 'http', port: 80, targetPort: 'web' }, { name: 'grpc', port: 9000, targetPort: 'rpc' }] });
    const [def] = kubeServiceDefs([api], [
      slice('api-http', 'api', [{ name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }, { addresses: ['10.1.0.2'] }]),
      slice('api-grpc', 'api', [{ name: 'grpc', port: 9090 }], [{ addresses: ['10.1.0.2'] }, { addresses: ['10.1.0.3'] }]),
    ], []);
    assert.deepEqual(eps(def!, 80), ['10.1.0.1:8080', '10.1.0.2:8080']);
    assert.deepEqual(eps(def!, 9000), ['10.1.0.2:9090', '10.1.0.3:9090']);
  });

  it('through compile, two ports: an endpoint is in the cluster of the port its slice lists only', () => {
    const api = svc('api', { clusterIP: '10.96.0.6', ports: [{ name: 'http', port: 80, targetPort: 'web' }, { name: 'grpc', port: 9000, targetPort: 'rpc' }] });
    const defs = kubeServiceDefs([api], [
      slice('api-http', 'api', [{ name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }]),
      slice('api-grpc', 'api', [{ name: 'grpc', port: 9090 }], [{ addresses: ['10.1.0.3'] }]),
    ], []);
    const id = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map<number, number>(), bind: '0.0.0.0' };
    const clusters = compile({ ...resourceSet([]), kubernetesServices: defs }, id, 1).snapshot.clusters;
    const of = (port: number) => clusters.get(`outbound|${port}||api.default.svc.cluster.local`)?.endpoints.map((e) => `${e.address}:${e.port}`);
    assert.deepEqual(of(80), ['10.1.0.1:8080']);
    assert.deepEqual(of(9000), ['10.1.0.3:9090']);
  });

  it('an address listed by two slices is one endpoint per address and port (not per whole port map)', () => {
    const api = svc('api', { ports: [{ name: 'http', port: 80 }, { name: 'grpc', port: 9000 }] });
    const [def] = kubeServiceDefs([api], [
      slice('api-1', 'api', [{ name: 'http', port: 8080 }, { name: 'grpc', port: 9090 }], [{ addresses: ['10.1.0.1'] }]),
      slice('api-2', 'api', [{ name: 'http', port: 8080 }], [{ addresses: ['10.1.0.1'] }]), // the same pod, mid-move
      slice('api-3', 'api', [{ name: 'http', port: 8081 }], [{ addresses: ['10.1.0.1'] }]), // another host-network pod on the node
    ], []);
    assert.deepEqual(eps(def!, 80), ['10.1.0.1:8080', '10.1.0.1:8081']);
    assert.deepEqual(eps(def!, 9000), ['10.1.0.1:9090']);
  });

  it('a port named like an Object property (constructor) maps by the endpoint\'s own ports only', () => {
    const [def] = kubeServiceDefs([svc('odd', { ports: [{ name: 'constructor', port: 80 }] })], [
      slice('odd-a', 'odd', [{ name: 'constructor', port: 8080 }], [{ addresses: ['10.1.0.1'] }]),
      slice('odd-b', 'odd', [{ name: 'other', port: 9090 }], [{ addresses: ['10.1.0.2'] }]),
    ], []);
    assert.deepEqual(eps(def!, 80), ['10.1.0.1:8080']);
  });

  it('ServiceEntry and WorkloadEntry endpoints without a port entry still use the targetPort, else the service port', () => {
    const s = resourceSet([
      res('ServiceEntry', 'ext', { hosts: ['ext.example.com'], ports: [{ number: 80, name: 'http', protocol: 'HTTP', targetPort: 8080 }, { number: 443, name: 'https', protocol: 'HTTPS' }],
        resolution: 'STATIC', endpoints: [{ address: '192.0.2.1' }, { address: '192.0.2.2', ports: { https: 8443 } }] }),
    ]);
    const se = buildServices(s).get('ext.example.com')!;
    assert.deepEqual(eps(se, 80), ['192.0.2.1:8080', '192.0.2.2:8080']);
    assert.deepEqual(eps(se, 443), ['192.0.2.1:443', '192.0.2.2:8443']);
    // A WorkloadEntry joining a Service from the API keeps that too, next to its slice endpoints.
    const [kube] = kubeServiceDefs([svc('reviews', { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080, targetPort: 'http-web' }] })],
      [slice('r-1', 'reviews', [], [{ addresses: ['10.0.0.9'] }]), slice('r-2', 'reviews', [{ name: 'http', port: 8080 }], [{ addresses: ['10.0.0.1'] }])], []);
    const joined = buildServices({
      ...resourceSet([res('Service', 'reviews', { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080 }] }), res('WorkloadEntry', 'vm-1', { address: '192.0.2.7', labels: { app: 'reviews' } })]),
      kubernetesServices: [kube!],
    }).get('reviews.default.svc.cluster.local')!;
    assert.deepEqual(eps(joined, 9080), ['10.0.0.1:8080', '192.0.2.7:9080']);
  });

  for (const c of cases) {
    it(c.what, () => {
      const got = kubeServiceDefs(c.services, c.slices, c.pods ?? []);
      const wanted = c.want as Record<string, unknown>[];
      assert.equal(got.length, wanted.length);
      wanted.forEach((w, i) => {
        const g = got[i] as unknown as Record<string, unknown>;
        for (const k of Object.keys(w)) assert.deepEqual(g[k], w[k], `${i}.${k}`);
      });
    });
  }

  it('buildServices: the Kubernetes source\'s services come first; Service resources and ServiceEntries fill in other hosts', () => {
    const [kube] = kubeServiceDefs([reviews], [reviewsSlice], pods);
    const s = resourceSet([
      res('Service', 'reviews', { ports: [{ name: 'http', port: 9080 }] }),
      res('Service', 'other', { ports: [{ name: 'http', port: 80 }] }),
      res('ServiceEntry', 'reviews-se', { hosts: ['reviews.default.svc.cluster.local'], ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }], resolution: 'STATIC', endpoints: [{ address: '192.0.2.1' }] }),
    ]);
    const services = buildServices({ ...s, kubernetesServices: [kube!] });
    assert.equal(services.get('reviews.default.svc.cluster.local')?.endpoints.length, 3, 'EndpointSlice endpoints, not the ServiceEntry');
    assert.ok(services.has('other.default.svc.cluster.local'));
  });

  it('buildServices: WorkloadEntries a Service from the API selects join its EndpointSlice endpoints', () => {
    const [kube] = kubeServiceDefs([reviews], [reviewsSlice], pods);
    const s = resourceSet([
      res('Service', 'reviews', { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080 }] }),
      res('WorkloadEntry', 'vm-1', { address: '192.0.2.7', labels: { app: 'reviews', version: 'vm' } }),
      res('WorkloadEntry', 'elsewhere', { address: '192.0.2.8', labels: { app: 'ratings' } }),
    ]);
    const eps = buildServices({ ...s, kubernetesServices: [kube!] }).get('reviews.default.svc.cluster.local')!.endpoints;
    assert.equal(eps.length, 4);
    assert.deepEqual(eps.at(-1), { address: '192.0.2.7', ports: {}, labels: { app: 'reviews', version: 'vm' }, weight: 1, workload: { name: 'vm-1', namespace: 'default' } });
  });
});
