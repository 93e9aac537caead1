// HTTP/2 toward upstreams, as Envoy's clusters with http2_protocol_options: a port whose protocol is
// HTTP2/GRPC (or a DestinationRule h2UpgradePolicy UPGRADE) gets h2c with prior knowledge; plain
// HTTP ports stay HTTP/1.1. The upstreams are a real node:http2 (h2c) server and a node:http one.

import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createHash } from 'node:crypto';
import { curl, freePort, waitFor } from '../helpers/upstream';
import { h2frame } from '../helpers/h2frames';
import { HpackDecoder, hpackEncode } from '../../src/gateway/http/hpack';

const routes = (port: number, h1Port: number) => `${httpGatewayYaml()}${loopbackServiceEntryYaml('h2', 'h2.internal', 80, 'HTTP2', port)}apiVersion: v1
kind: Service
metadata: {name: grpcsvc, namespace: default}
spec:
  selector: {app: grpcsvc}
  ports: [{name: grpc-api, port: 80, targetPort: ${port}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: grpcsvc-pod, namespace: default}
spec: {address: 127.0.0.1, labels: {app: grpcsvc}}
---
${loopbackServiceEntryYaml('h1', 'h1.internal', 80, 'HTTP', h1Port)}${loopbackServiceEntryYaml('up', 'up.internal', 80, 'HTTP', port)}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: up, namespace: default}
spec:
  host: up.internal
  subsets: [{name: upgraded, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /h2}}]
    route: [{destination: {host: h2.internal}}]
  - match: [{uri: {prefix: /grpc}}]
    route: [{destination: {host: grpcsvc.default.svc.cluster.local}}]
  - match: [{uri: {prefix: /upgraded}}]
    route: [{destination: {host: up.internal, subset: upgraded}}]
  - route: [{destination: {host: h1.internal}}]
`;

describe('HTTP/2 to upstreams (h2c prior knowledge)', function () {
  this.timeout(20_000);
  let gw: TestGateway;
  let upstream: http2.Http2Server;
  let h1: http.Server;

  before(async () => {
    const handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.setHeader('x-upstream-version', req.httpVersion);
        res.setHeader('x-peer-port', String(req.socket.remotePort));
        res.setHeader('set-cookie', ['a=1', 'b=2']);
        res.end(`${req.httpVersion} ${req.method} ${req.url} authority=${req.headers[':authority'] ?? req.headers.host} body=${Buffer.concat(chunks).toString()}`);
      });
    };
    upstream = http2.createServer(handler);
    h1 = http.createServer(handler);
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => h1.listen(0, '127.0.0.1', resolve));
    gw = await startGateway({ 'routes.yaml': routes((upstream.address() as AddressInfo).port, (h1.address() as AddressInfo).port) });
  });

  after(async () => {
    await gw?.stop();
    await new Promise((resolve) => upstream?.close(resolve));
    await new Promise((resolve) => h1?.close(resolve));
  });

  const get = (path: string, extra: string[] = []) =>
    curl(['-s', '-i', '-H', 'Host: app.example.com', ...extra, `http://127.0.0.1:${gw.port(80)}${path}`]);

  it('a ServiceEntry port with protocol HTTP2 is reached over h2c; headers, body and authority arrive', async () => {
    const r = await get('/h2/x', ['-d', 'payload']);
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.stdout, /\r\nx-upstream-version: 2\.0\r\n/);
    assert.match(r.stdout, /\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n/i);
    assert.match(r.stdout, /2\.0 POST \/h2\/x authority=app\.example\.com body=payload$/);
  });

  it('a Service port named grpc-* is HTTP/2 too', async () => {
    const r = await get('/grpc');
    assert.match(r.stdout, /\r\n\r\n2\.0 GET \/grpc /);
  });

  it('an HTTP port stays HTTP/1.1 unless the DestinationRule says h2UpgradePolicy UPGRADE', async () => {
    const plain = await get('/plain');
    assert.match(plain.stdout, /\r\n\r\n1\.1 GET \/plain authority=app\.example\.com body=$/);
    const up = await get('/upgraded');
    assert.match(up.stdout, /\r\n\r\n2\.0 GET \/upgraded authority=app\.example\.com body=$/);
  });

  it('a client speaking HTTP/2 reaches an HTTP/2 upstream; the access log shows the downstream protocol', async () => {
    const r = await curl(['-s', '--http2-prior-knowledge', '-H', 'Host: app.example.com', `http://127.0.0.1:${gw.port(80)}/h2/both`]);
    assert.match(r.stdout, /^2\.0 GET \/h2\/both /);
    const lines = await gw.waitForLines(5);
    assert.ok(lines.some((l) => /"GET \/h2\/both HTTP\/2" 200 /.test(l) && /outbound\|80\|\|h2\.internal /.test(l)), lines.join('\n'));
  });

  it('%UPSTREAM_LOCAL_ADDRESS% names the HTTP/2 connection the request went out on, as for HTTP/1.1', async () => {
    for (const [p, name] of [['/h2/local', 'h2.internal'], ['/local', 'h1.internal']] as const) {
      const r = await get(p);
      const port = /\r\nx-peer-port: (\d+)\r\n/.exec(r.stdout)?.[1];
      assert.ok(port, r.stdout);
      const re = new RegExp(String.raw`"GET ${p} HTTP/1\.1" 200 .* outbound\|80\|\|${name.replace('.', '\\.')} 127\.0\.0\.1:${port} `);
      await waitFor(() => gw.accessLines().some((l) => re.test(l)), { timeoutMs: 3000 }).catch(() => assert.fail(`${re}\n${gw.accessLines().join('\n')}`));
    }
  });
});

const h2Entry = (name: string, port: number) => loopbackServiceEntryYaml(name, `${name}.internal`, 80, 'HTTP2', port);

describe('h2c pool: streams, flow control and failures', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  let raw: net.Server;
  let upstream: http2.Http2Server;
  let sessions = 0;
  let refused = 0;
  let sessionsClosed = 0;
  const seen: string[] = [];
  const BIG = Buffer.alloc(8 * 1024 * 1024 + 123, 'abcdefghij');

  before(async () => {
    upstream = http2.createServer();
    upstream.on('session', (session) => {
      sessions += 1;
      session.once('close', () => { sessionsClosed += 1; });
    });
    upstream.on('stream', (stream, headers) => {
      const path = String(headers[':path']);
      seen.push(path);
      stream.on('error', () => {});
      if (path === '/refuse-once' && refused === 0) {
        refused += 1;
        return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      }
      if (path === '/reset') return stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      if (path === '/big') {
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
        return stream.end(BIG);
      }
      const hash = createHash('sha256');
      let n = 0;
      stream.on('data', (c: Buffer) => { n += c.length; hash.update(c); });
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end(`${path} ${n} ${hash.digest('hex')} sessions=${sessions}`);
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const port = (upstream.address() as AddressInfo).port;
    const closed = await freePort();
    // A raw HTTP/2 upstream whose answers break the rules, by path: a header name in upper case, or a
    // trailer value with CR LF after a body.
    raw = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.write(h2frame(4, 0, 0));
      const decoder = new HpackDecoder();
      let buf = Buffer.alloc(0);
      let preface = false;
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (!preface && buf.length >= 24) {
          buf = buf.subarray(24);
          preface = true;
        }
        while (preface && buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
          const [len, type, flags, id] = [buf.readUIntBE(0, 3), buf[3]!, buf[4]!, buf.readUInt32BE(5)];
          const path = type === 1 ? new Map(decoder.decode(buf.subarray(9, 9 + len))).get(':path') : undefined;
          buf = buf.subarray(9 + len);
          if (type === 4 && !(flags & 1)) socket.write(h2frame(4, 1, 0));
          if (path === '/malformed') socket.write(h2frame(1, 5, id, Buffer.from([0x88, 0x00, 0x01, 0x58, 0x01, 0x79])));
          if (path === '/malformed-trailer') {
            socket.write(h2frame(1, 4, id, hpackEncode([[':status', '200']])));
            socket.write(h2frame(0, 0, id, Buffer.from('hello')));
            socket.write(h2frame(1, 5, id, hpackEncode([['x-trailer', 'a\r\nb']])));
          }
        }
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    const rawPort = (raw.address() as AddressInfo).port;
    gw = await startGateway({
      'routes.yaml': `${httpGatewayYaml()}${h2Entry('h2', port)}${h2Entry('h2once', port)}${h2Entry('h2gone', closed)}${h2Entry('h2idle', port)}${h2Entry('h2raw', rawPort)}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: h2once, namespace: default}
spec:
  host: h2once.internal
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: h2idle, namespace: default}
spec:
  host: h2idle.internal
  trafficPolicy: {connectionPool: {http: {idleTimeout: 0.3s}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /once}}]
    route: [{destination: {host: h2once.internal}}]
  - match: [{uri: {prefix: /gone}}]
    route: [{destination: {host: h2gone.internal}}]
  - match: [{uri: {prefix: /idle}}]
    route: [{destination: {host: h2idle.internal}}]
  - match: [{uri: {prefix: /malformed}}]
    route: [{destination: {host: h2raw.internal}}]
  - route: [{destination: {host: h2.internal}}]
`,
    });
  });

  after(async () => {
    await gw?.stop();
    await new Promise((resolve) => upstream?.close(resolve));
    await new Promise((resolve) => raw?.close(resolve));
  });

  const url = (path: string) => `http://127.0.0.1:${gw.port(80)}${path}`;

  it('a trailer value with CR LF after the head went out: the client is reset and the request logged, never left hanging', async () => {
    const r = await curl(['-s', '--max-time', '5', '-H', 'Host: app.example.com', url('/malformed-trailer')]);
    assert.notEqual(r.code, 28, 'curl timed out: the response was never ended');
    assert.notEqual(r.code, 0, 'a response cut short is not a clean end');
    await gw.waitForLine(/"GET \/malformed-trailer HTTP\/1\.1" 200 UPE /);
  });

  it('a malformed HTTP/2 answer (an upper-case header name) is 502 UPE protocol_error, as Envoy', async () => {
    const r = await curl(['-s', '-w', '\n%{http_code}', '-H', 'Host: app.example.com', url('/malformed')]);
    assert.equal(r.stdout, 'upstream connect error or disconnect/reset before headers. reset reason: protocol error\n502');
    await gw.waitForLine(/"GET \/malformed HTTP\/1\.1" 502 UPE upstream_reset_before_response_started\{protocol_error\} /);
  });

  it('an 8 MiB response crosses intact (flow control both ways) and a 3 MiB request body arrives intact', async () => {
    const big = await curl(['-s', '-H', 'Host: app.example.com', url('/big')]);
    assert.equal(Buffer.from(big.stdout, 'latin1').length, BIG.length);
    assert.ok(Buffer.from(big.stdout, 'latin1').equals(BIG));
    const body = Buffer.alloc(3 * 1024 * 1024, 'xyz');
    const file = `${gw.dir}/body.bin`;
    (await import('node:fs')).writeFileSync(file, body);
    for (const extra of [[], ['-H', 'Transfer-Encoding: chunked']]) {
      const r = await curl(['-s', '-H', 'Host: app.example.com', ...extra, '--data-binary', `@${file}`, url('/upload')]);
      assert.match(r.stdout, new RegExp(`^/upload ${body.length} ${createHash('sha256').update(body).digest('hex')} `));
    }
  });

  it('a REFUSED_STREAM is retried (Istio\'s default retryOn has refused-stream) and the retry is answered', async () => {
    const r = await curl(['-s', '-w', '\n%{http_code}', '-H', 'Host: app.example.com', url('/refuse-once')]);
    assert.match(r.stdout, /^\/refuse-once 0 [0-9a-f]{64} sessions=\d+\n200$/);
    assert.equal(seen.filter((p) => p === '/refuse-once').length, 2);
    await gw.waitForLine(/"GET \/refuse-once HTTP\/1\.1" 200 - via_upstream /);
  });

  it('an upstream RST_STREAM before the response is 503 UR remote_reset, in the body and the access log', async () => {
    const r = await curl(['-s', '-w', '\n%{http_code}', '-H', 'Host: app.example.com', url('/reset')]);
    assert.equal(r.stdout, 'upstream connect error or disconnect/reset before headers. reset reason: remote reset\n503');
    await gw.waitForLine(/"GET \/reset HTTP\/1\.1" 503 UR upstream_reset_before_response_started\{remote_reset\} /);
  });

  it('maxRequestsPerConnection: 1 opens a connection per request; without it one connection carries them all', async () => {
    const before = sessions;
    for (let i = 0; i < 3; i++) await curl(['-s', '-H', 'Host: app.example.com', url(`/once/${i}`)]);
    assert.equal(sessions - before, 3);
    const shared = sessions;
    for (let i = 0; i < 3; i++) await curl(['-s', '-H', 'Host: app.example.com', url(`/shared/${i}`)]);
    assert.ok(sessions - shared <= 1, `opened ${sessions - shared} connections for 3 requests`);
  });

  it('connectionPool.http.idleTimeout closes an idle HTTP/2 connection; the next request opens a new one', async () => {
    await curl(['-s', '-H', 'Host: app.example.com', url('/idle/1')]);
    const opened = sessions;
    const closedBefore = sessionsClosed;
    const { waitFor } = await import('../helpers/upstream');
    await waitFor(() => sessionsClosed > closedBefore, { timeoutMs: 3000, intervalMs: 50 });
    const r = await curl(['-s', '-H', 'Host: app.example.com', url('/idle/2')]);
    assert.match(r.stdout, /^\/idle\/2 0 /);
    assert.equal(sessions, opened + 1);
  });

  it('a refused connection is 503 UF with the transport failure reason, as for HTTP/1.1', async () => {
    const r = await curl(['-s', '-w', '\n%{http_code}', '-H', 'Host: app.example.com', url('/gone')]);
    assert.match(r.stdout, /^upstream connect error or disconnect\/reset before headers\. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: 111\n503$/);
    await gw.waitForLine(/"GET \/gone HTTP\/1\.1" 503 UF,URX upstream_reset_before_response_started\{remote_connection_failure,delayed_connect_error:_111\} /);
  });
});
