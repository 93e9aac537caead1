// The sidecar capture listener's per-destination tables (Istio's per-VIP outbound listeners): which
// service owns an original destination (exact address, /32, then the longest CIDR), how its bytes are
// read (declared protocol of that service, not of the port) and where mesh `tcp`/`tls` routes send them.

import assert from 'node:assert/strict';
import { compile } from '../../../src/config/compile';
import type { OutboundDef } from '../../../src/config/snapshot';
import { outboundDestinationFor } from '../../../src/gateway/listener-manager';
import { selectChain, selectTcpRoute } from '../../../src/gateway/tcp/match';
import { decide } from '../../../src/gateway/http/route-match';
import { res, set } from '../../helpers/resources';

const id = { labels: { app: 'sleep' }, namespace: 'default', portMap: new Map<number, number>(), bind: '::', capturePort: 15001 };
const se = (name: string, host: string, addresses: string[], ports: { number: number; name: string; protocol: string }[]) =>
  res('ServiceEntry', name, { hosts: [host], addresses, ports, resolution: addresses.some((a) => a.includes('/')) ? 'NONE' : 'STATIC', endpoints: [{ address: '10.9.9.2' }] });
const tcp = (n: number) => ({ number: n, name: 'tcp', protocol: 'TCP' });
const outbound = (resources: Parameters<typeof set>[0]): OutboundDef => compile(set(resources, { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } }), id, 1).snapshot.listeners.get(15001)!.outbound!;
const clusterOf = (r: ReturnType<typeof selectTcpRoute>) => r?.destinations.map((d) => `${d.cluster}:${d.weight}`).join(',');

describe('sidecar outbound compile: destinations by address', () => {
  it('A: ServiceEntry /32 and CIDR addresses are matched; exact first, then the longest prefix', () => {
    const out = outbound([
      se('b32', 'my-company-proxy.test', ['10.9.9.2/32'], [tcp(9001)]),
      se('wide', 'wide.test', ['10.9.0.0/16'], [tcp(9002)]),
      se('narrow', 'narrow.test', ['10.9.9.0/24'], [tcp(9002)]),
      se('exact', 'exact.test', ['10.9.9.7'], [tcp(9002)]),
    ]);
    assert.equal(outboundDestinationFor(out, '10.9.9.2', 9001)?.host, 'my-company-proxy.test');
    assert.equal(outboundDestinationFor(out, '::ffff:10.9.9.2', 9001)?.host, 'my-company-proxy.test');
    assert.equal(outboundDestinationFor(out, '10.9.9.2', 9002)?.host, 'narrow.test');
    assert.equal(outboundDestinationFor(out, '10.9.8.1', 9002)?.host, 'wide.test');
    assert.equal(outboundDestinationFor(out, '10.9.9.7', 9002)?.host, 'exact.test');
    assert.equal(outboundDestinationFor(out, '10.8.0.1', 9002), undefined);
    assert.equal(outboundDestinationFor(out, '10.9.9.2', 9003), undefined, 'other ports are not the service\'s');
    assert.equal(clusterOf(selectTcpRoute(outboundDestinationFor(out, '10.9.9.2', 9002)!.tcpRoutes, '10.9.9.2')), 'outbound|9002||narrow.test:100');
  });

  it('B/C/D: the protocol is the destination service\'s; per port only for addresses nobody owns', () => {
    const out = outbound([
      se('d-http', 'd-http.test', ['10.9.9.11'], [{ number: 9000, name: 'http', protocol: 'HTTP' }]),
      se('echo', 'echo.test', ['10.9.9.2'], [tcp(9000)]),
      se('mysql', 'mysql.test', ['10.9.9.2'], [{ number: 3306, name: 'mysql', protocol: 'MYSQL' }]),
      se('a', 'a.test', ['10.9.9.2'], [tcp(8081)]),
      se('auto', 'auto.test', ['10.9.9.3'], [{ number: 7000, name: 'x', protocol: '' }]),
    ]);
    assert.equal(outboundDestinationFor(out, '10.9.9.2', 9000)?.protocol, 'TCP');
    assert.equal(outboundDestinationFor(out, '10.9.9.11', 9000)?.protocol, 'HTTP');
    assert.equal(outboundDestinationFor(out, '10.9.9.2', 3306)?.protocol, 'TCP');
    assert.equal(outboundDestinationFor(out, '10.9.9.2', 8081)?.protocol, 'TCP');
    assert.equal(outboundDestinationFor(out, '10.9.9.3', 7000)?.protocol, 'AUTO');
    assert.ok(out.httpPorts.has(9000), 'unknown addresses on 9000 are still HTTP');
    assert.deepEqual([...out.tcpPorts].sort(), [3306, 8081], 'ports only opaque services use');
  });

  it('F: mesh VirtualService tcp routes apply to the host\'s address (weights, subsets), then the service', () => {
    const vs = res('VirtualService', 'e', {
      hosts: ['e.test'],
      tcp: [
        { match: [{ destinationSubnets: ['10.9.9.99/32'] }], route: [{ destination: { host: 'e-other.test', subset: 'v2' } }] },
        { route: [{ destination: { host: 'e-other.test', port: { number: 9003 } }, weight: 80 }, { destination: { host: 'e.test', subset: 'v1' }, weight: 20 }] },
      ],
    });
    const gwOnly = res('VirtualService', 'gw', { hosts: ['e.test'], gateways: ['some-gateway'], tcp: [{ route: [{ destination: { host: 'nowhere.test' } }] }] });
    const out = outbound([se('e', 'e.test', ['10.9.9.12'], [tcp(9003)]), se('e-other', 'e-other.test', ['10.9.9.13'], [tcp(9003)]), gwOnly, vs]);
    const e = outboundDestinationFor(out, '10.9.9.12', 9003)!;
    assert.equal(clusterOf(selectTcpRoute(e.tcpRoutes, '10.9.9.12')), 'outbound|9003||e-other.test:80,outbound|9003|v1|e.test:20');
    assert.equal(clusterOf(selectTcpRoute(e.tcpRoutes, '10.9.9.99')), 'outbound|9003|v2|e-other.test:100');
    const other = outboundDestinationFor(out, '10.9.9.13', 9003)!;
    assert.equal(clusterOf(selectTcpRoute(other.tcpRoutes, '10.9.9.13')), 'outbound|9003||e-other.test:100');
  });

  it('G: TLS to a service\'s address goes to it whatever the SNI; mesh tls routes still pick by SNI', () => {
    const svc = res('Service', 'websecure', { selector: { app: 'websecure' }, clusterIP: '10.9.9.10', ports: [{ name: 'https', port: 8443, targetPort: 443 }] });
    const vs = res('VirtualService', 'c', { hosts: ['c.test'], tls: [{ match: [{ sniHosts: ['c.test'] }], route: [{ destination: { host: 'c.test', subset: 'v2' } }] }] });
    const out = outbound([svc, se('c', 'c.test', ['10.9.9.2'], [{ number: 443, name: 'tls', protocol: 'TLS' }]), vs]);
    const chainTo = (address: string, port: number, sni: string | undefined) => {
      const d = outboundDestinationFor(out, address, port)!;
      assert.equal(d.protocol, 'TLS');
      const c = selectChain(d.chains, sni, address);
      return c?.action.type === 'passthrough' ? c.action.route.destinations.map((x) => x.cluster).join(',') : undefined;
    };
    assert.equal(chainTo('10.9.9.10', 8443, 'websecure'), 'outbound|8443||websecure.default.svc.cluster.local');
    assert.equal(chainTo('10.9.9.10', 8443, 'websecure.default.svc.cluster.local'), 'outbound|8443||websecure.default.svc.cluster.local');
    assert.equal(chainTo('10.9.9.10', 8443, undefined), 'outbound|8443||websecure.default.svc.cluster.local');
    assert.equal(chainTo('10.9.9.2', 443, 'edition.cnn.test'), 'outbound|443||c.test');
    assert.equal(chainTo('10.9.9.2', 443, 'c.test'), 'outbound|443|v2|c.test');
  });
});

describe('sidecar outbound compile: match sourceLabels and sourceNamespace (Istio\'s source match)', () => {
  const svc = res('Service', 'reviews', { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080, targetPort: 9080 }] });
  const vs = res('VirtualService', 'reviews', {
    hosts: ['reviews'],
    http: [
      { name: 'from-productpage', match: [{ sourceLabels: { app: 'productpage' } }], route: [{ destination: { host: 'reviews', subset: 'v2' } }] },
      { name: 'from-bookinfo-ns', match: [{ sourceNamespace: 'bookinfo' }], route: [{ destination: { host: 'reviews', subset: 'v3' } }] },
      { name: 'everyone', route: [{ destination: { host: 'reviews', subset: 'v1' } }] },
    ],
  });
  const routeFor = (labels: Record<string, string>, namespace: string) => {
    const snap = compile(set([svc, vs]), { labels, namespace, portMap: new Map(), bind: '::', capturePort: 15001 }, 1).snapshot;
    const table = snap.listeners.get(15001)!.outbound!.http.get(9080);
    return decide(table, { authority: 'reviews.default.svc.cluster.local', path: '/', method: 'GET', scheme: 'http', headers: {} })?.route?.name;
  };

  it('a block applies only to the proxies its source labels and namespace name (table)', () => {
    const cases: [Record<string, string>, string, string][] = [
      [{ app: 'productpage', version: 'v1' }, 'default', 'from-productpage'],
      [{ app: 'ratings' }, 'default', 'everyone'],
      [{ app: 'ratings' }, 'bookinfo', 'from-bookinfo-ns'],
      [{ app: 'productpage' }, 'bookinfo', 'from-productpage'], // the first block that applies
    ];
    for (const [labels, ns, want] of cases) assert.equal(routeFor(labels, ns), want, JSON.stringify([labels, ns]));
  });
});

describe('sidecar outbound compile: TCP match source fields (Istio\'s matchTCP)', () => {
  /** Where a connection to db.test goes when the first tcp block has this match (this proxy: app=sleep). */
  const routeWith = (match: Record<string, unknown>) => {
    const out = outbound([
      se('db', 'db.test', ['10.9.9.20'], [tcp(5432)]),
      se('db-replica', 'db-replica.test', ['10.9.9.21'], [tcp(5432)]),
      res('VirtualService', 'db', {
        hosts: ['db.test'],
        tcp: [
          { match: [match], route: [{ destination: { host: 'db-replica.test' } }] },
          { route: [{ destination: { host: 'db.test' } }] },
        ],
      }),
    ]);
    return clusterOf(selectTcpRoute(outboundDestinationFor(out, '10.9.9.20', 5432)!.tcpRoutes, '10.9.9.20'));
  };

  it('a block applies when its source labels are the proxy\'s, and with gateways: [mesh] only when they hold too (table)', () => {
    const replica = 'outbound|5432||db-replica.test:100';
    const primary = 'outbound|5432||db.test:100';
    const cases: [Record<string, unknown>, string][] = [
      [{ port: 5432, sourceLabels: { app: 'sleep' } }, replica],
      [{ port: 5432, sourceLabels: { app: 'other' } }, primary],
      [{ gateways: ['mesh'], sourceLabels: { app: 'productpage' } }, primary],
      [{ gateways: ['mesh'], sourceLabels: { app: 'sleep' } }, replica],
      [{ sourceNamespace: 'elsewhere' }, primary],
    ];
    for (const [match, want] of cases) assert.equal(routeWith(match), want, JSON.stringify(match));
  });
});
