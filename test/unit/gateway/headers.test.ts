import assert from 'node:assert/strict';
import { downstreamResponseHeaders, newRequestId, requestIdOf, upstreamRequestHeaders } from '../../../src/gateway/http/headers';

const raw = (...pairs: string[]) => pairs.map((x) => Buffer.from(x, 'latin1'));

describe('response headers toward the client', () => {
  const cases: { name: string; upstream: string[]; want: string[] }[] = [
    {
      name: 'keeps order and repeats, names in lower case (as Envoy writes them), drops hop-by-hop, overwrites server, adds the service time',
      upstream: ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Keep-Alive', 'timeout=5', 'Server', 'nginx', 'set-cookie', 'b=2', 'Transfer-Encoding', 'chunked'],
      want: ['content-type', 'text/plain', 'set-cookie', 'a=1', 'set-cookie', 'b=2', 'server', 'istio-envoy', 'x-envoy-upstream-service-time', '7'],
    },
    {
      name: 'headers the Connection header names are dropped wherever they stand',
      upstream: ['X-Private', 'p', 'Connection', 'close, X-Private, x-other', 'X-Other', 'o', 'X-Kept', 'k'],
      want: ['x-kept', 'k', 'server', 'istio-envoy', 'x-envoy-upstream-service-time', '7'],
    },
    {
      name: 'an upstream x-envoy-upstream-service-time is replaced by ours; latin1 values pass byte for byte',
      upstream: ['x-envoy-upstream-service-time', '999', 'X-Name', 'caf\u00e9'],
      want: ['x-name', 'caf\u00e9', 'server', 'istio-envoy', 'x-envoy-upstream-service-time', '7'],
    },
    {
      name: "an Istio sidecar's peer metadata (x-envoy-peer-metadata, -id) is not passed on",
      upstream: ['x-envoy-peer-metadata', 'ChkKDkFQUF9DT05UQUlORVJT', 'X-Envoy-Peer-Metadata-Id', 'sidecar~10.0.0.1~httpbin-v1-abc.default~default.svc.cluster.local', 'x-kept', 'k'],
      want: ['x-kept', 'k', 'server', 'istio-envoy', 'x-envoy-upstream-service-time', '7'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(downstreamResponseHeaders(raw(...c.upstream), 'istio-envoy', 7), c.want);
      // Strings (the HTTP/2 pool's form) give the same result as Buffers.
      assert.deepEqual(downstreamResponseHeaders(c.upstream, 'istio-envoy', 7), c.want);
    });
  }
});

describe('request headers toward the upstream', () => {
  it('an edge request: hop-by-hop and x-envoy-* from outside dropped, forwarding headers set', () => {
    const out = upstreamRequestHeaders(
      { host: 'a.example', connection: 'keep-alive, x-hop', 'x-hop': '1', 'x-envoy-retry-on': '5xx', 'x-forwarded-for': '10.0.0.1', te: 'trailers, deflate', accept: '*/*' },
      { remoteAddress: '192.0.2.7', scheme: 'https', requestId: 'rid' },
    );
    assert.deepEqual(out, {
      host: 'a.example', accept: '*/*', 'x-forwarded-for': '10.0.0.1, 192.0.2.7', 'x-request-id': 'rid',
      'x-forwarded-proto': 'https', 'x-envoy-external-address': '192.0.2.7', te: 'trailers',
    });
  });

  it('x-forwarded-client-cert: set at the edge (the client\'s own dropped), appended on a sidecar\'s inbound mesh mTLS, dropped without a verified certificate (table)', () => {
    const ours = 'By=spiffe://cluster.local/ns/default/sa/web;Hash=ab;Subject="";URI=spiffe://cluster.local/ns/default/sa/sleep';
    const cases: [Record<string, string>, boolean, string | undefined, string | undefined][] = [
      [{}, false, ours, ours], // a gateway: SANITIZE_SET
      [{ 'x-forwarded-client-cert': 'forged' }, false, ours, ours],
      [{ 'x-forwarded-client-cert': 'forged' }, false, undefined, undefined], // no verified certificate: none
      [{}, true, ours, ours], // a sidecar's inbound: APPEND_FORWARD
      [{ 'x-forwarded-client-cert': 'By=a;URI=b' }, true, ours, `By=a;URI=b,${ours}`],
      [{ 'x-forwarded-client-cert': 'By=a;URI=b' }, true, undefined, undefined], // plaintext: dropped (a forged identity), as Envoy
    ];
    for (const [headers, outbound, clientCert, want] of cases) {
      const out = upstreamRequestHeaders({ host: 'a', ...headers }, { remoteAddress: '10.0.0.2', scheme: 'http', requestId: 'r', outbound, clientCert });
      assert.equal(out['x-forwarded-client-cert'], want, JSON.stringify([headers, outbound, clientCert]));
    }
  });

  it('a Connection header cannot take away Host or the body\'s framing', () => {
    const out = upstreamRequestHeaders(
      { host: 'a.example', connection: 'Host, Content-Length, content-type, x-hop', 'content-length': '3', 'content-type': 'text/plain', 'x-hop': '1' },
      { remoteAddress: '192.0.2.7', scheme: 'http', requestId: 'rid', outbound: true },
    );
    assert.deepEqual(out, { host: 'a.example', 'content-length': '3', 'content-type': 'text/plain', 'x-request-id': 'rid', 'x-forwarded-proto': 'http' });
  });

  it('a sidecar\'s outbound request keeps x-envoy-* and x-forwarded-for as the application sent them', () => {
    const out = upstreamRequestHeaders(
      { host: 'b', 'x-envoy-retry-on': '5xx', 'x-forwarded-for': '10.0.0.1' },
      { remoteAddress: '127.0.0.1', scheme: 'http', requestId: 'rid', outbound: true },
    );
    assert.deepEqual(out, { host: 'b', 'x-envoy-retry-on': '5xx', 'x-forwarded-for': '10.0.0.1', 'x-request-id': 'rid', 'x-forwarded-proto': 'http' });
  });
});

describe('x-request-id', () => {
  it('a new id is a random version-4 UUID, a fresh one each time (past many refills of its random pool)', () => {
    const seen = new Set<string>();
    const digits = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const id = newRequestId();
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      seen.add(id);
      const d = id[0]!;
      digits.set(d, (digits.get(d) ?? 0) + 1);
    }
    assert.equal(seen.size, 20_000);
    // The first hex digit is uniform over 16 values: 1250 expected each; 900..1600 fails ~1e-20 of the time.
    assert.equal(digits.size, 16);
    for (const [d, n] of digits) assert.ok(n > 900 && n < 1600, `digit ${d}: ${n}`);
  });

  it('a request without one gets a new id; a sane one it sent is kept', () => {
    const fresh = requestIdOf({});
    assert.match(fresh, /^[0-9a-f-]{36}$/);
    assert.notEqual(requestIdOf({}), fresh);
    assert.equal(requestIdOf({ 'x-request-id': 'abc' }), 'abc');
    assert.match(requestIdOf({ 'x-request-id': 'x'.repeat(257) }), /^[0-9a-f-]{36}$/);
  });
});
