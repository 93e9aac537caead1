// The HTTP gateway end to end: real gateway, real upstream servers on loopback, curl as the client.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl, freePort, httpGet, rawHttp } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { workloadEntry } from '../helpers/yaml';

const SAMPLES = path.resolve(__dirname, '../../../../shared/istio-samples/samples');

/** Status code, headers and body from `curl -si`. */
function parseCurl(stdout: string): { status: number; headers: Record<string, string>; body: string } {
  const blocks = stdout.split('\r\n\r\n');
  let i = 0;
  while (i < blocks.length - 1 && /^HTTP\/\S+ 1\d\d/.test(blocks[i]!)) i++;
  const head = blocks[i]!.split('\r\n');
  const status = Number(head[0]!.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const c = line.indexOf(':');
    headers[line.slice(0, c).toLowerCase()] = line.slice(c + 1).trim();
  }
  return { status, headers, body: blocks.slice(i + 1).join('\r\n\r\n') };
}

describe('HTTP gateway: bookinfo sample, routing, local replies, telemetry', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  const upstreams: HttpbinServer[] = [];
  let productpage: HttpbinServer;
  let reviews: Record<string, HttpbinServer>;
  let deadPort: number;
  let url: (p: string) => string;

  before(async () => {
    productpage = await startHttpbin({ port: 0, host: '127.0.0.1', name: 'productpage-v1' });
    reviews = {
      v1: await startHttpbin({ port: 0, host: '127.0.0.1', name: 'reviews-v1' }),
      v2: await startHttpbin({ port: 0, host: '127.0.0.1', name: 'reviews-v2' }),
      v3: await startHttpbin({ port: 0, host: '127.0.0.1', name: 'reviews-v3' }),
    };
    upstreams.push(productpage, ...Object.values(reviews));
    deadPort = await freePort();
    const bookinfo = fs.readFileSync(path.join(SAMPLES, 'bookinfo/platform/kube/bookinfo.yaml'), 'utf8');
    const gateway = fs.readFileSync(path.join(SAMPLES, 'bookinfo/networking/bookinfo-gateway.yaml'), 'utf8');
    const rules = fs.readFileSync(path.join(SAMPLES, 'bookinfo/networking/destination-rule-all.yaml'), 'utf8');
    const standIns = workloadEntry('productpage-v1', { http: productpage.port }, { app: 'productpage', version: 'v1' })
      + workloadEntry('reviews-v1', { http: reviews.v1!.port }, { app: 'reviews', version: 'v1' })
      + workloadEntry('reviews-v2', { http: reviews.v2!.port }, { app: 'reviews', version: 'v2' })
      + workloadEntry('reviews-v3', { http: reviews.v3!.port }, { app: 'reviews', version: 'v3' })
      + workloadEntry('details-dead', { http: deadPort }, { app: 'details', version: 'v1' });
    // Test-only routes on the same gateway: reviews by subset, header match, weights, failures.
    const testRoutes = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: test-routes
  namespace: default
spec:
  hosts: ["test.example.com"]
  gateways: [bookinfo-gateway]
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
      uri:
        prefix: /reviews
    route:
    - destination: {host: reviews, subset: v2}
  - name: reviews-v3
    match: [{uri: {prefix: /reviews}}]
    route:
    - destination: {host: reviews, subset: v3}
  - name: split
    match: [{uri: {prefix: /split}}]
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
  - name: no-subset
    match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - name: unknown-host
    match: [{uri: {prefix: /unknownhost}}]
    route: [{destination: {host: nowhere.example.org}}]
  - name: empty-subset
    match: [{uri: {prefix: /emptysubset}}]
    route: [{destination: {host: ratings, subset: v1}}]
  - name: dead
    match: [{uri: {prefix: /dead}}]
    route: [{destination: {host: details}}]
  - name: slow
    match: [{uri: {prefix: /delay}}]
    timeout: 0.5s
    route: [{destination: {host: reviews, subset: v1}}]
  - name: passthrough
    route: [{destination: {host: reviews, subset: v1}}]
`;
    gw = await startGateway({
      'bookinfo.yaml': bookinfo, 'bookinfo-gateway.yaml': gateway, 'destination-rule-all.yaml': rules,
      'stand-ins.yaml': standIns, 'test-routes.yaml': testRoutes,
    }, { serverPorts: [8080] });
    url = (p) => `http://127.0.0.1:${gw.port(8080)}${p}`;
  });

  after(async () => {
    await gw?.stop();
    await Promise.all(upstreams.map((u) => u.close()));
  });

  it('serves the bookinfo gateway sample unchanged: /productpage is 200 with istio headers', async () => {
    const r = await curl(['-si', url('/productpage')]);
    const res = parseCurl(r.stdout);
    assert.equal(res.status, 200);
    assert.equal(res.headers['server'], 'istio-envoy');
    assert.match(res.headers['x-envoy-upstream-service-time'] ?? '', /^\d+$/);
    assert.equal(res.headers['x-served-by'], 'productpage-v1');
    const seen = productpage.requests.at(-1)!;
    assert.match(String(seen.headers['x-request-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen.headers['x-envoy-attempt-count'], '1');
    assert.equal(seen.headers['host'], `127.0.0.1:${gw.port(8080)}`);
  });

  it('drops a client-sent x-forwarded-client-cert at the edge: no forged identity reaches the upstream', async () => {
    await curl(['-s', '-o', '/dev/null', '-H', 'X-Forwarded-Client-Cert: By=spiffe://x;URI=spiffe://cluster.local/ns/x/sa/admin', url('/productpage')]);
    const seen = productpage.requests.at(-1)!;
    assert.equal(seen.headers['x-forwarded-client-cert'], undefined);
  });

  it('routes /static prefix and the exact /login, and 404s anything else with an empty body (NR)', async () => {
    assert.equal(parseCurl((await curl(['-si', url('/static/x.css')])).stdout).status, 200);
    const nr = parseCurl((await curl(['-si', url('/nothing-here')])).stdout);
    assert.equal(nr.status, 404);
    assert.equal(nr.body, '');
    assert.equal(nr.headers['content-length'], '0');
    assert.equal(nr.headers['server'], 'istio-envoy');
  });

  it('routes to a DestinationRule subset, and header end-user: jason to v2', async () => {
    const h = { host: 'test.example.com' };
    const v3 = parseCurl((await curl(['-si', '-H', `Host: ${h.host}`, url('/reviews/1')])).stdout);
    assert.equal(v3.headers['x-served-by'], 'reviews-v3');
    const jason = parseCurl((await curl(['-si', '-H', `Host: ${h.host}`, '-H', 'end-user: jason', url('/reviews/1')])).stdout);
    assert.equal(jason.headers['x-served-by'], 'reviews-v2');
  });

  it('splits 80/20 by weight over 400 requests', async () => {
    const n = 400;
    const counts: Record<string, number> = {};
    const one = async () => {
      const r = await httpGet(gw.port(8080), '/split', { host: 'test.example.com' });
      const by = String(r.headers['x-served-by'] ?? '?');
      counts[by] = (counts[by] ?? 0) + 1;
    };
    for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: 20 }, one));
    // Binomial(400, 0.8): sd 8; +-40 is 5 sd, a false failure about once in 1.7 million runs.
    assert.ok(Math.abs((counts['reviews-v1'] ?? 0) - 320) <= 40, JSON.stringify(counts));
    assert.equal((counts['reviews-v1'] ?? 0) + (counts['reviews-v2'] ?? 0), n);
  });

  const replies: { name: string; path: string; status: number; body: string; flag: string; details: string }[] = [
    { name: 'undefined subset: 503 NC', path: '/nosubset', status: 503, body: '', flag: 'NC', details: 'cluster_not_found' },
    { name: 'unknown host: 503 NC', path: '/unknownhost', status: 503, body: '', flag: 'NC', details: 'cluster_not_found' },
    { name: 'subset with no endpoint: 503 UH', path: '/emptysubset', status: 503, body: 'no healthy upstream', flag: 'UH', details: 'no_healthy_upstream' },
    {
      name: 'connect refused: 503 UF after the default retries', path: '/dead', status: 503,
      body: 'upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: 111',
      flag: 'UF,URX', details: 'upstream_reset_before_response_started{remote_connection_failure,delayed_connect_error:_111}',
    },
    { name: 'upstream reset: 503 UC', path: '/reset', status: 503, body: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination', flag: 'UC', details: 'upstream_reset_before_response_started{connection_termination}' },
    { name: 'upstream protocol error: 502 UPE', path: '/garbage', status: 502, body: 'upstream connect error or disconnect/reset before headers. reset reason: protocol error', flag: 'UPE', details: 'upstream_reset_before_response_started{protocol_error}' },
    { name: 'route timeout: 504 UT', path: '/delay/2', status: 504, body: 'upstream request timeout', flag: 'UT', details: 'upstream_response_timeout' },
  ];
  for (const c of replies) {
    it(`local reply, ${c.name}`, async () => {
      const started = Date.now();
      const res = parseCurl((await curl(['-si', '-H', 'Host: test.example.com', url(c.path)])).stdout);
      assert.equal(res.status, c.status);
      assert.equal(res.body, c.body);
      assert.equal(res.headers['server'], 'istio-envoy');
      assert.equal(res.headers['x-envoy-upstream-service-time'], undefined);
      if (c.body) assert.equal(res.headers['content-type'], 'text/plain');
      if (c.flag === 'UT') assert.ok(Date.now() - started >= 450 && Date.now() - started < 1900);
      // Each path is asked for once in this file: its line, whenever the log writer flushes it.
      const line = await gw.waitForLine(new RegExp(`"GET ${c.path.replace(/[/.]/g, '\\$&')} HTTP/1\\.1" `), 5000);
      assert.ok(line.includes(`" ${c.status} ${c.flag} ${c.details} `), line);
    });
  }

  it('writes one access-log line per request in Istio\'s TEXT format', async () => {
    const before = gw.accessLines().length;
    await curl(['-s', '-o', '/dev/null', '-A', 'curl/test', '-H', 'x-request-id: 11111111-2222-4333-8444-555555555555', url('/productpage?a=1')]);
    const lines = await gw.waitForLines(before + 1);
    const fresh = lines.slice(before);
    assert.equal(fresh.length, 1);
    const re = new RegExp(
      String.raw`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /productpage\?a=1 HTTP/1\.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ `
      + String.raw`"127\.0\.0\.1" "curl/test" "11111111-2222-4333-8444-555555555555" "127\.0\.0\.1:${gw.port(8080)}" `
      + String.raw`"127\.0\.0\.1:${productpage.port}" outbound\|9080\|\|productpage\.default\.svc\.cluster\.local 127\.0\.0\.1:(\d+) `
      + String.raw`127\.0\.0\.1:${gw.port(8080)} 127\.0\.0\.1:\d+ - default\.bookinfo\.0$`);
    const m = re.exec(fresh[0]!);
    assert.ok(m, fresh[0]);
    // %UPSTREAM_LOCAL_ADDRESS%: the port of the pooled connection the upstream saw this request on.
    assert.equal(Number(m[1]), productpage.requests.at(-1)!.remotePort);
  });

  it('counts the request in istio_requests_total with Istio labels', async () => {
    await curl(['-s', '-o', '/dev/null', url('/productpage')]);
    const text = await (await fetch(`http://127.0.0.1:${gw.app.ports.metrics}/stats/prometheus`)).text();
    const line = text.split('\n').find((l) => l.startsWith('istio_requests_total{') && l.includes('destination_service="productpage.default.svc.cluster.local"') && l.includes('response_code="200"'));
    assert.ok(line, 'no istio_requests_total line for productpage');
    assert.match(line!, /reporter="source",source_workload="istio-ingressgateway"/);
    assert.match(line!, /destination_service_name="productpage",destination_service_namespace="default"/);
    assert.match(line!, /request_protocol="http",response_code="200",grpc_response_status="",response_flags="-"/);
    assert.ok(Number(line!.split(' ').at(-1)) >= 1);
    assert.match(text, /istio_request_duration_milliseconds_bucket\{[^}]*le="0\.5"/);
    assert.match(text, /istio_request_bytes_sum\{/);
    assert.match(text, /istio_response_bytes_count\{/);
  });

  it('streams bodies both ways and handles Expect: 100-continue', async () => {
    const file = path.join(gw.dir, 'body.bin');
    fs.writeFileSync(file, Buffer.alloc(3 * 1024 * 1024, 7));
    const r = await curl(['-s', '-H', 'Host: test.example.com', '-H', 'Expect: 100-continue', '--data-binary', `@${file}`, url('/echo')]);
    assert.equal(r.stdout.length, 3 * 1024 * 1024);
    const chunked = await curl(['-s', '-H', 'Host: test.example.com', '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${file}`, url('/echo')]);
    assert.equal(chunked.stdout.length, 3 * 1024 * 1024);
  });

  it('passes WebSocket upgrades through', async () => {
    const sock = net.connect(gw.port(8080), '127.0.0.1');
    const got: Buffer[] = [];
    sock.on('data', (c) => got.push(c));
    await new Promise((r) => sock.once('connect', r));
    sock.write('GET /ws HTTP/1.1\r\nHost: test.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await new Promise((r) => setTimeout(r, 200));
    sock.write('ping-through-the-tunnel');
    await new Promise((r) => setTimeout(r, 200));
    sock.destroy();
    const text = Buffer.concat(got).toString();
    assert.match(text, /^HTTP\/1\.1 101 /);
    assert.match(text, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
    assert.ok(text.endsWith('ping-through-the-tunnel'));
  });

  describe('the request target, as Envoy routes it', () => {
    it('normalizes the path before routing (pathNormalization BASE): dot segments cannot slip past a prefix route', async () => {
      const ok = parseCurl((await curl(['-si', '--path-as-is', url('/static/../productpage')])).stdout);
      assert.equal(ok.status, 200);
      assert.equal(ok.headers['x-served-by'], 'productpage-v1');
      assert.equal(productpage.requests.at(-1)!.url, '/productpage', 'the upstream gets the normalized path');
      // Under /static before normalization, outside every route after it.
      for (const p of ['/static/../nothing', '/static/%2e%2e/nothing', '/static/%2E./nothing']) {
        assert.equal(parseCurl((await curl(['-si', '--path-as-is', url(p)])).stdout).status, 404, p);
      }
      await gw.waitForLine(/"GET \/nothing HTTP\/1\.1" 404 NR route_not_found /);
    });

    it('absolute-form targets route on the URL\'s authority and path (Envoy allow_absolute_url)', async () => {
      const before = reviews.v3!.requests.length;
      const out = await rawHttp(gw.port(8080), 'GET http://test.example.com/reviews/1 HTTP/1.1\r\nHost: other.example.org\r\nConnection: close\r\n\r\n', { timeoutMs: 3000 });
      assert.match(out, /^HTTP\/1\.1 200 /);
      assert.match(out, /\r\nx-served-by: reviews-v3\r\n/);
      const seen = reviews.v3!.requests.slice(before);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.url, '/reviews/1');
      assert.equal(seen[0]!.headers.host, 'test.example.com');
      // curl -x sends exactly this to a proxy.
      const viaProxy = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-x', `http://127.0.0.1:${gw.port(8080)}`, 'http://test.example.com/reviews/2']);
      assert.equal(viaProxy.stdout, '200');
    });

    it('serves HTTP/1.0 (a deliberate difference: Istio\'s Envoy answers 426 by default)', async () => {
      const r = await curl(['-s', '-0', '-o', '/dev/null', '-w', '%{http_code}', url('/productpage')]);
      assert.equal(r.stdout, '200');
      await gw.waitForLine(/"GET \/productpage HTTP\/1\.0" 200 /);
    });

    it('a Connection header cannot remove Host (or the body\'s framing) on the way upstream', async () => {
      const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Connection: host, content-length', '--data', 'abc', url('/productpage')]);
      assert.equal(r.stdout, '200');
      const seen = productpage.requests.at(-1)!;
      assert.equal(seen.headers.host, `127.0.0.1:${gw.port(8080)}`);
      assert.equal(seen.headers['content-length'], '3');
    });
  });

  describe('bad input', () => {
    it('malformed request line: 400 and the connection closed', async () => {
      const out = await rawHttp(gw.port(8080), 'GARBAGE\r\n\r\n', { timeoutMs: 3000 });
      assert.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.match(out, /connection: close/i);
    });

    it('oversized request headers: 431', async () => {
      const big = 'x'.repeat(70 * 1024);
      const out = await rawHttp(gw.port(8080), `GET /productpage HTTP/1.1\r\nHost: a\r\nx-big: ${big}\r\n\r\n`, { timeoutMs: 3000 });
      assert.match(out, /^HTTP\/1\.1 431 /);
    });

    it('a handler error costs one request, not the process', async () => {
      // A request whose Host header is not a valid authority still gets an answer.
      const out = await rawHttp(gw.port(8080), 'GET /productpage HTTP/1.1\r\nHost: [::1\r\n\r\n', { timeoutMs: 3000 });
      assert.match(out, /^HTTP\/1\.1 400 /);
      const again = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', url('/productpage')]);
      assert.equal(again.stdout, '200');
    });
  });
});
