import assert from 'node:assert/strict';
import { compile, type GatewayIdentity } from '../../../src/config/compile';
import { decide, pickDestination, type RouteInput } from '../../../src/gateway/http/route-match';
import { httpsRedirectLocation, redirectLocation } from '../../../src/gateway/http/redirect';
import { res, set } from '../../helpers/resources';

const id: GatewayIdentity = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map(), bind: '0.0.0.0' };

const gateway = res('Gateway', 'gw', {
  selector: { istio: 'ingressgateway' },
  servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*.example.com', 'exact.test', 'ns1/only-ns1.test'] }],
});

const vsMain = res('VirtualService', 'main', {
  hosts: ['app.example.com', 'exact.test'],
  gateways: ['gw'],
  http: [
    { name: 'jason', match: [{ headers: { 'end-user': { exact: 'jason' } } }], route: [{ destination: { host: 'reviews', subset: 'v2' } }] },
    { name: 'api', match: [{ uri: { regex: '/api/v[0-9]+/.*' }, method: { exact: 'GET' } }], route: [{ destination: { host: 'api', port: { number: 9080 } } }] },
    { name: 'case', match: [{ uri: { prefix: '/CaSe' }, ignoreUriCase: true }], route: [{ destination: { host: 'case' } }] },
    { name: 'q', match: [{ queryParams: { v: { exact: '2' } } }], route: [{ destination: { host: 'q' } }] },
    { name: 'nobeta', match: [{ uri: { prefix: '/beta' }, withoutHeaders: { 'x-beta': { exact: 'yes' } } }], route: [{ destination: { host: 'stable' } }] },
    { name: 'regcase', match: [{ uri: { regex: '/reg[a-z]+' }, ignoreUriCase: true }], route: [{ destination: { host: 'stable' } }] },
    { name: 'nodebug', match: [{ uri: { prefix: '/nodebug' }, withoutHeaders: { 'x-debug': {} } }], route: [{ destination: { host: 'stable' } }] },
    { name: 'qraw', match: [{ uri: { prefix: '/qraw' }, queryParams: { a: { exact: 'x%20y' } } }], route: [{ destination: { host: 'q' } }] },
    { name: 'port', match: [{ uri: { prefix: '/p' }, port: 443 }], route: [{ destination: { host: 'never' } }] },
    { name: 'otherGw', match: [{ uri: { prefix: '/g' }, gateways: ['other'] }], route: [{ destination: { host: 'never' } }] },
    { name: 'split', match: [{ uri: { exact: '/split' } }], route: [{ destination: { host: 'reviews', subset: 'v1' }, weight: 80 }, { destination: { host: 'reviews', subset: 'v2' }, weight: 20 }] },
    { name: 'redir', match: [{ uri: { exact: '/old' } }], redirect: { uri: '/new' } },
    { name: 'direct', match: [{ uri: { exact: '/teapot' } }], directResponse: { status: 418, body: { string: 'short and stout' } } },
  ],
});

const vsWildcard = res('VirtualService', 'wild', {
  hosts: ['*.example.com'], gateways: ['default/gw'],
  http: [{ route: [{ destination: { host: 'wild' } }] }],
});

const vsSecond = res('VirtualService', 'second', {
  hosts: ['app.example.com'], gateways: ['gw'],
  http: [
    { route: [{ destination: { host: 'catchall' } }] },
    { name: 'late', match: [{ uri: { prefix: '/late' } }], route: [{ destination: { host: 'late' } }] },
  ],
});

const vsOtherNs = res('VirtualService', 'other-ns', {
  hosts: ['only-ns1.test'], gateways: ['default/gw'],
  http: [{ route: [{ destination: { host: 'x' } }] }],
}, 'ns2');

const snapshot = compile(set([gateway, vsMain, vsWildcard, vsSecond, vsOtherNs]), id, 1).snapshot;
const table = snapshot.listeners.get(80)!.routes!;

function req(over: Partial<RouteInput>): RouteInput {
  return { authority: 'app.example.com', path: '/', method: 'GET', scheme: 'http', headers: {}, ...over };
}

describe('route matching (pure)', () => {
  const cases: { name: string; input: Partial<RouteInput>; route?: string }[] = [
    { name: 'header match end-user: jason', input: { headers: { 'end-user': 'jason' } }, route: 'jason' },
    { name: 'header value is exact', input: { headers: { 'end-user': 'jasonx' } }, route: 'default.second.0' },
    { name: 'regex is a full match, query ignored', input: { path: '/api/v12/products?x=1' }, route: 'api' },
    { name: 'regex does not match a prefix only', input: { path: '/api/vx/products' }, route: 'default.second.0' },
    { name: 'conditions in one block AND (method)', input: { path: '/api/v1/x', method: 'POST' }, route: 'default.second.0' },
    { name: 'ignoreUriCase', input: { path: '/case/abc' }, route: 'case' },
    { name: 'query param exact', input: { path: '/anything?a=1&v=2' }, route: 'q' },
    { name: 'withoutHeaders: absent header matches', input: { path: '/beta/x' }, route: 'nobeta' },
    { name: 'withoutHeaders: present header excludes', input: { path: '/beta/x', headers: { 'x-beta': 'yes' } }, route: 'default.second.0' },
    { name: 'ignoreUriCase leaves a regex case-sensitive (as Envoy does)', input: { path: '/regabc' }, route: 'regcase' },
    { name: 'ignoreUriCase: /REGabc does not match /reg[a-z]+', input: { path: '/REGabc' }, route: 'default.second.0' },
    { name: 'withoutHeaders {}: an absent header matches', input: { path: '/nodebug/x' }, route: 'nodebug' },
    { name: 'withoutHeaders {}: a present header excludes, whatever its value', input: { path: '/nodebug/x', headers: { 'x-debug': '' } }, route: 'default.second.0' },
    { name: 'query params are matched as sent (not decoded), as Envoy does', input: { path: '/qraw?a=x%20y' }, route: 'qraw' },
    { name: 'a decoded form of the same value does not match', input: { path: '/qraw?a=x+y' }, route: 'default.second.0' },
    { name: 'match port for another server port is dropped', input: { path: '/p' }, route: 'default.second.0' },
    { name: 'match gateways for another gateway is dropped', input: { path: '/g' }, route: 'default.second.0' },
    { name: 'host port ignored and case-insensitive', input: { authority: 'APP.Example.com:8080', headers: { 'end-user': 'jason' } }, route: 'jason' },
    { name: 'exact host beats wildcard vhost', input: { authority: 'exact.test', path: '/teapot' }, route: 'direct' },
    { name: 'wildcard vhost serves other subdomains', input: { authority: 'deep.sub.example.com' }, route: 'default.wild.0' },
    { name: 'a more specific vhost never falls through to the wildcard one', input: { authority: 'exact.test', path: '/none' } },
    { name: 'unknown host: no route', input: { authority: 'nope.test' } },
    { name: 'wildcard does not match the bare domain', input: { authority: 'example.com' } },
    { name: 'server host ns/ restricts VS namespace', input: { authority: 'only-ns1.test' } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const d = decide(table, req(c.input));
      assert.equal(d?.route?.name, c.route);
    });
  }

  it('merges VirtualServices for one host, catch-all last', () => {
    const vh = table.exact.get('app.example.com')!;
    assert.equal(vh.name, 'app.example.com:80');
    assert.equal(vh.routes.at(-1)!.name, 'default.second.0');
    assert.equal(decide(table, req({ path: '/late' }))?.route?.name, 'late');
  });

  it('resolves short destination hosts and builds Istio cluster names', () => {
    const d = decide(table, req({ headers: { 'end-user': 'jason' } }))!.route!;
    assert.equal(d.action.type, 'route');
    if (d.action.type !== 'route') return;
    assert.equal(d.action.destinations[0]!.cluster, 'outbound|80|v2|reviews.default.svc.cluster.local');
    const api = decide(table, req({ path: '/api/v1/x' }))!.route!;
    assert.ok(api.action.type === 'route' && api.action.destinations[0]!.cluster === 'outbound|9080||api.default.svc.cluster.local');
  });

  it('weighted pick follows the weights at the boundaries', () => {
    const d = decide(table, req({ path: '/split' }))!.route!;
    assert.ok(d.action.type === 'route');
    if (d.action.type !== 'route') return;
    const { destinations, totalWeight } = d.action;
    assert.equal(totalWeight, 100);
    assert.equal(pickDestination(destinations, totalWeight, 0)!.subset, 'v1');
    assert.equal(pickDestination(destinations, totalWeight, 0.7999)!.subset, 'v1');
    assert.equal(pickDestination(destinations, totalWeight, 0.8)!.subset, 'v2');
    assert.equal(pickDestination(destinations, totalWeight, 0.9999)!.subset, 'v2');
  });

  it('a gateway whose selector does not match this proxy adds no listener', () => {
    const other = compile(set([res('Gateway', 'egress', { selector: { istio: 'egressgateway' }, servers: [{ port: { number: 81, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] })]), id, 1).snapshot;
    assert.equal(other.listeners.size, 0);
  });

  it('binds the Service targetPort of a Service selecting the gateway, or --port-map', () => {
    const svc = res('Service', 'istio-ingressgateway', { selector: { istio: 'ingressgateway' }, ports: [{ name: 'http2', port: 80, targetPort: 8080 }] }, 'istio-system');
    assert.deepEqual([...compile(set([gateway, svc]), id, 1).snapshot.listeners.keys()], [8080]);
    const mapped = compile(set([gateway, svc]), { ...id, portMap: new Map([[80, 9999]]) }, 1).snapshot;
    assert.deepEqual([...mapped.listeners.keys()], [9999]);
    assert.deepEqual([...compile(set([gateway]), id, 1).snapshot.listeners.keys()], [80]);
  });
});

describe('redirect location', () => {
  const cases: [Parameters<typeof redirectLocation>, string][] = [
    [[{ uri: '/new' }, 'a.test', '/old?x=1', 'http'], 'http://a.test/new?x=1'],
    [[{ scheme: 'https' }, 'a.test:80', '/p', 'http'], 'https://a.test/p'],
    [[{ authority: 'b.test', port: 8443, scheme: 'https' }, 'a.test', '/p', 'http'], 'https://b.test:8443/p'],
    [[{}, 'a.test:8080', '/p', 'http'], 'http://a.test:8080/p'],
    // Envoy keeps a port that is not the request scheme's default when only the scheme changes.
    [[{ scheme: 'https' }, 'a.test:8080', '/p', 'http'], 'https://a.test:8080/p'],
    [[{ scheme: 'http' }, 'a.test:443', '/p', 'https'], 'http://a.test/p'],
    [[{ scheme: 'https', derivePort: 'FROM_PROTOCOL_DEFAULT' }, 'a.test:80', '/p', 'http'], 'https://a.test/p'],
    [[{ port: 9000 }, 'a.test:8080', '/p', 'http'], 'http://a.test:9000/p'],
    [[{ derivePort: 'FROM_REQUEST_PORT', scheme: 'https' }, 'a.test:8080', '/p', 'http'], 'https://a.test:8080/p'],
    [[{ scheme: 'https' }, '[::1]:8080', '/p', 'http'], 'https://[::1]:8080/p'],
    [[{ port: 9000 }, '[::1]:8080', '/p', 'http'], 'http://[::1]:9000/p'],
  ];
  for (const [args, want] of cases) it(`${JSON.stringify(args[0])} -> ${want}`, () => assert.equal(redirectLocation(...args), want));
  it('httpsRedirect keeps the Host as sent, port and all (Envoy require_tls)', () => {
    assert.equal(httpsRedirectLocation('a.test:18081', '/a?b=1'), 'https://a.test:18081/a?b=1');
    assert.equal(httpsRedirectLocation('a.test', '/'), 'https://a.test/');
  });
});
