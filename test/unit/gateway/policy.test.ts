// Per-route policies as pure functions, compiled from VirtualService YAML shapes: fault decisions,
// rewrites, header operations, CORS, shadow hosts.

import assert from 'node:assert/strict';
import { compile, type GatewayIdentity } from '../../../src/config/compile';
import type { CompiledRoute } from '../../../src/config/snapshot';
import {
  applyHeaderOps, applyHeaderOpsFlat, corsPreflight, corsResponseHeaders, decideFault, rewritePath, shadowHost, shapeUpstreamRequest,
} from '../../../src/gateway/http/policy';
import { res, set } from '../../helpers/resources';
import { retryableGrpc } from '../../../src/gateway/http/proxy';

const id: GatewayIdentity = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map(), bind: '0.0.0.0' };

function routesOf(http: unknown[]): CompiledRoute[] {
  const gw = res('Gateway', 'gw', { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] });
  const vs = res('VirtualService', 'vs', { hosts: ['a.example.com'], gateways: ['gw'], http });
  const snap = compile(set([gw, vs]), id, 1).snapshot;
  return [...snap.listeners.get(80)!.routes!.exact.get('a.example.com')!.routes];
}

describe('request header operations: route and destination', () => {
  const headersOf = (route: CompiledRoute, i = 0) => {
    const h: Record<string, string | string[]> = {};
    assert.ok(route.action.type === 'route');
    if (route.action.type === 'route') shapeUpstreamRequest(h, route, route.action.destinations[i]!, '/');
    return h;
  };
  it('one destination: its operations come after the route\'s (Istio folds them in), so its set wins', () => {
    const [r] = routesOf([{ headers: { request: { set: { 'x-a': 'route' } } }, route: [{ destination: { host: 'x' }, headers: { request: { set: { 'x-a': 'dest' } } } }] }]);
    assert.equal(headersOf(r!)['x-a'], 'dest');
  });
  it('weighted destinations: the route\'s operations come last (Envoy: weighted cluster first), so its set wins', () => {
    const [r] = routesOf([{ headers: { request: { set: { 'x-a': 'route' } } }, route: [
      { destination: { host: 'x' }, weight: 50, headers: { request: { set: { 'x-a': 'dest1' }, add: { 'x-b': 'one' } } } },
      { destination: { host: 'y' }, weight: 50 },
    ] }]);
    const h = headersOf(r!);
    assert.equal(h['x-a'], 'route');
    assert.equal(h['x-b'], 'one');
  });
});

describe('route policies', () => {
  it('faults: fractions from percentage.value or legacy percent (delay)', () => {
    const [r] = routesOf([{ fault: { delay: { fixedDelay: '7s', percent: 10 }, abort: { httpStatus: 500, percentage: { value: 100 } } }, route: [{ destination: { host: 'x' } }] }]);
    assert.deepEqual(r!.fault, { delayMs: 7000, delayFraction: 0.1, abortStatus: 500, abortFraction: 1 });
    assert.deepEqual(decideFault(r!.fault, 0.05, 0.99), { delayMs: 7000, abort: { status: 500 } });
    assert.deepEqual(decideFault(r!.fault, 0.1, 0.5), { abort: { status: 500 } });
    const [g] = routesOf([{ fault: { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 25.5 } } }, route: [{ destination: { host: 'x' } }] }]);
    assert.deepEqual(g!.fault, { abortGrpc: 14, delayFraction: 0, abortFraction: 0.255 });
    assert.deepEqual(decideFault(g!.fault, 0, 0.2), { abort: { status: 200, grpc: 14 } });
    assert.deepEqual(decideFault(g!.fault, 0, 0.3), {});
    assert.deepEqual(decideFault(undefined, 0, 0), {});
  });

  it('faults: a delay or abort without percentage (nor legacy percent) applies to no request (Istio: 0 %)', () => {
    const [r] = routesOf([{ fault: { delay: { fixedDelay: '7s' }, abort: { httpStatus: 500 } }, route: [{ destination: { host: 'x' } }] }]);
    assert.deepEqual(r!.fault, { delayMs: 7000, delayFraction: 0, abortStatus: 500, abortFraction: 0 });
    // Even the smallest random draw neither delays nor aborts.
    assert.deepEqual(decideFault(r!.fault, 0, 0), {});
    const [g] = routesOf([{ fault: { abort: { grpcStatus: 'UNAVAILABLE' } }, route: [{ destination: { host: 'x' } }] }]);
    assert.deepEqual(decideFault(g!.fault, 0, 0), {});
    // An explicit percentage with no value is 0 too; an explicit 0 legacy percent likewise.
    const [e] = routesOf([{ fault: { delay: { fixedDelay: '1s', percentage: {}, percent: 0 } }, route: [{ destination: { host: 'x' } }] }]);
    assert.equal(e!.fault!.delayFraction, 0);
  });

  it('mirrors: no percentage still mirrors every request (unchanged by the fault default)', () => {
    const [m] = routesOf([{ route: [{ destination: { host: 'x' } }], mirror: { host: 'y' } }]);
    assert.equal(m!.mirrors![0]!.fraction, 1);
  });

  it('rewrite.uri replaces the matched prefix, the exact path, a regex match\'s whole path; the query stays', () => {
    const routes = routesOf([
      { match: [{ uri: { prefix: '/api/v1' } }, { uri: { exact: '/login' } }, { uri: { regex: '/r/.*' } }], rewrite: { uri: '/v2' }, route: [{ destination: { host: 'x' } }] },
      { match: [{ uri: { prefix: '/svc' } }], rewrite: { uriRegexRewrite: { match: '^/svc/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1' }, authority: 'internal.example.com' }, route: [{ destination: { host: 'x' } }] },
      { match: [{ uri: { prefix: '/cost' } }], rewrite: { uriRegexRewrite: { match: 'c', rewrite: '$c' } }, route: [{ destination: { host: 'x' } }] },
    ]);
    const [prefix, exact, regex, rx, dollar] = routes;
    assert.equal(rewritePath('/api/v1/users?id=3', prefix!.rewrite), '/v2/users?id=3');
    assert.equal(rewritePath('/login?next=/', exact!.rewrite), '/v2?next=/');
    assert.equal(rewritePath('/r/x?q=1', regex!.rewrite), '/v2?q=1', 'Envoy: with regex path matching the entire path is swapped');
    assert.equal(rewritePath('/svc/foo/bar?q=1', rx!.rewrite), '/bar/instance/foo?q=1');
    assert.equal(rx!.rewrite!.authority, 'internal.example.com');
    assert.equal(rewritePath('/cost', dollar!.rewrite), '/$cost', 'a literal $ in the rewrite stays literal');
    assert.equal(rewritePath('/same', undefined), '/same');
  });

  it('header operations: remove, then set, then add; on maps and on flat response lists', () => {
    const h: Record<string, string | string[]> = { 'x-a': '1', 'x-b': '2', 'x-c': '3' };
    applyHeaderOps(h, { remove: ['X-B'], set: { 'X-A': 'one' }, add: { 'x-c': 'three', 'x-d': '4' } });
    assert.deepEqual(h, { 'x-a': 'one', 'x-c': ['3', 'three'], 'x-d': '4' });
    const flat = applyHeaderOpsFlat(['Server', 'istio-envoy', 'X-Old', 'y', 'x-keep', 'k'], { remove: ['x-old'], set: { server: 'mine' }, add: { 'x-new': 'n' } });
    assert.deepEqual(flat, ['x-keep', 'k', 'server', 'mine', 'x-new', 'n']);
  });

  it('CORS: allowed preflights are answered, others forwarded; actual responses get the origin', () => {
    const [r] = routesOf([{
      corsPolicy: {
        allowOrigins: [{ exact: 'https://a.example.com' }, { prefix: 'https://dev.' }, { regex: 'https://.*\\.test' }],
        allowMethods: ['POST', 'GET'], allowHeaders: ['X-Foo'], exposeHeaders: ['X-Bar'], maxAge: '24h', allowCredentials: true,
      },
      route: [{ destination: { host: 'x' } }],
    }]);
    const pre = (origin: string) => corsPreflight(r!.cors, 'OPTIONS', { origin, 'access-control-request-method': 'POST' });
    assert.deepEqual(pre('https://a.example.com'), {
      'access-control-allow-origin': 'https://a.example.com', 'access-control-allow-methods': 'POST,GET',
      'access-control-allow-headers': 'X-Foo', 'access-control-max-age': '86400', 'access-control-allow-credentials': 'true',
    });
    assert.ok(pre('https://dev.other.org'));
    assert.ok(pre('https://x.test'));
    assert.equal(pre('https://evil.example.com'), undefined);
    assert.equal(corsPreflight(r!.cors, 'OPTIONS', { origin: 'https://a.example.com' }), undefined, 'no Access-Control-Request-Method: not a preflight');
    assert.equal(corsPreflight(r!.cors, 'GET', { origin: 'https://a.example.com', 'access-control-request-method': 'GET' }), undefined);
    assert.deepEqual(corsResponseHeaders(r!.cors, 'https://a.example.com'), [
      'access-control-allow-origin', 'https://a.example.com', 'access-control-expose-headers', 'X-Bar', 'access-control-allow-credentials', 'true',
    ]);
    assert.deepEqual(corsResponseHeaders(r!.cors, 'https://evil.example.com'), []);
  });

  it('CORS unmatchedPreflights IGNORE: an unmatched preflight is answered here, without CORS headers', () => {
    const [r] = routesOf([{ corsPolicy: { allowOrigins: [{ exact: 'https://a.example.com' }], unmatchedPreflights: 'IGNORE' }, route: [{ destination: { host: 'x' } }] }]);
    assert.deepEqual(corsPreflight(r!.cors, 'OPTIONS', { origin: 'https://evil.example.com', 'access-control-request-method': 'POST' }), {});
    assert.equal(corsPreflight(r!.cors, 'GET', { origin: 'https://evil.example.com' }), undefined, 'not a preflight: routed as usual');
  });

  it('mirrors: legacy mirror_percent, mirrorPercentage and mirrors[], resolved to clusters', () => {
    const [r] = routesOf([{
      route: [{ destination: { host: 'httpbin', subset: 'v1' } }],
      mirror: { host: 'httpbin', subset: 'v2' }, mirror_percent: 50,
      mirrors: [{ destination: { host: 'other.example.org', port: { number: 8080 } }, percentage: { value: 5 } }],
    }]);
    assert.deepEqual(r!.mirrors, [
      { cluster: 'outbound|80|v2|httpbin.default.svc.cluster.local', host: 'httpbin.default.svc.cluster.local', fraction: 0.5 },
      { cluster: 'outbound|8080||other.example.org', host: 'other.example.org', fraction: 0.05 },
    ]);
    assert.equal(shadowHost('httpbin:8000'), 'httpbin-shadow:8000');
    assert.equal(shadowHost('httpbin.default.svc.cluster.local'), 'httpbin.default.svc.cluster.local-shadow');
    assert.equal(shadowHost('[::1]:80'), '[::1]-shadow:80');
  });
});

describe('mesh and cluster switches for traffic policy', () => {
  it('DISABLE_SHADOW_HOST_SUFFIX in defaultConfig.proxyMetadata keeps mirror hosts as they are', () => {
    const on = compile(set([], { defaultConfig: { proxyMetadata: { DISABLE_SHADOW_HOST_SUFFIX: 'true' } } }), id, 1).snapshot.mesh;
    const off = compile(set([]), id, 1).snapshot.mesh;
    assert.equal(on.disableShadowHostSuffix, true);
    assert.equal(off.disableShadowHostSuffix, false);
  });

  it('gRPC retry conditions read grpc-status; connection pool settings reach the cluster', () => {
    const policy = { attempts: 2, perTryTimeoutMs: 0, retryOn: ['unavailable', 'cancelled'], retriableStatusCodes: [] };
    assert.equal(retryableGrpc('14', policy), true);
    assert.equal(retryableGrpc('1', policy), true);
    assert.equal(retryableGrpc('13', policy), false);
    assert.equal(retryableGrpc(undefined, policy), false);
    const se = res('ServiceEntry', 'x', { hosts: ['x.internal'], ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }] });
    const dr = res('DestinationRule', 'x', { host: 'x.internal', trafficPolicy: { connectionPool: { tcp: { maxConnections: 3, tcpKeepalive: { time: '30s' } }, http: { http1MaxPendingRequests: 7, maxRequestsPerConnection: 2, maxRetries: 4, idleTimeout: '5s' } } } });
    const c = compile(set([se, dr]), id, 1).snapshot.clusters.get('outbound|80||x.internal')!;
    assert.deepEqual(c.breaker, { maxConnections: 3, maxPendingRequests: 7, maxRequests: 4294967295, maxRetries: 4, maxRequestsPerConnection: 2, idleTimeoutMs: 5000 });
    assert.equal(c.keepaliveMs, 30_000);
  });
});
