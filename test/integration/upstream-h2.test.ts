// HTTP/2 toward upstreams, as Envoy's clusters with http2_protocol_options: a port whose protocol is
// HTTP2/GRPC (or a DestinationRule h2UpgradePolicy UPGRADE) gets h2c with prior knowledge; plain
// HTTP ports stay HTTP/1.1. The upstreams are a real node:http2 (h2c) server and a node:http one.

import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { httpGatewayYaml } from '../../src/sample/configs';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl } from '../helpers/upstream';

const routes = (port: number, h1Port: number) => `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h2, namespace: default}
spec:
  hosts: [h2.internal]
  ports: [{number: 80, name: http2-web, protocol: HTTP2, targetPort: ${port}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: v1
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
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h1, namespace: default}
spec:
  hosts: [h1.internal]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: ${h1Port}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: up, namespace: default}
spec:
  hosts: [up.internal]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: ${port}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
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
});
