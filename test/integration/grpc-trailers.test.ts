// Response trailers reach the client (gRPC keeps its status there): from an HTTP/2 (h2c) upstream
// and an HTTP/1.1 chunked one, to HTTP/2 and HTTP/1.1 clients alike; the gateway's own replies to
// gRPC requests are gRPC-shaped.

import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';

describe('response trailers', function () {
  this.timeout(20_000);
  let gw: TestGateway;
  let h2: http2.Http2Server;
  let h1: http.Server;

  before(async () => {
    h2 = http2.createServer();
    h2.on('stream', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '7', 'grpc-message': 'denied' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    h1 = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/grpc', trailer: 'grpc-status' });
      res.write(Buffer.from([0, 0, 0, 0, 0]));
      res.addTrailers({ 'grpc-status': '5', 'grpc-message': 'missing' });
      res.end();
    });
    await Promise.all([h2, h1].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
    const port = (s: http.Server | http2.Http2Server) => (s.address() as { port: number }).port;
    gw = await startGateway({
      'routes.yaml': `${httpGatewayYaml()}${loopbackServiceEntryYaml('g2', 'g2.internal', 80, 'GRPC', port(h2))}${loopbackServiceEntryYaml('g1', 'g1.internal', 80, 'HTTP', port(h1))}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: g, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /h1}}]
    route: [{destination: {host: g1.internal}}]
  - match: [{uri: {prefix: /nowhere}}]
    route: [{destination: {host: nowhere.internal}}]
  - route: [{destination: {host: g2.internal}}]
`,
    });
  });
  after(async () => {
    await gw?.stop();
    h2?.close();
    h1?.close();
  });

  /** An HTTP/2 (prior knowledge) call through the gateway: status, trailers. */
  function callH2(path: string): Promise<{ status: number; trailers: http2.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${gw.port(80)}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
      let status = 0;
      let trailers: http2.IncomingHttpHeaders = {};
      req.on('response', (h) => { status = Number(h[':status']); });
      req.on('trailers', (t) => { trailers = t; });
      req.on('end', () => { session.close(); resolve({ status, trailers }); });
      req.resume();
      req.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  }

  /** The same over HTTP/1.1 (a chunked response carries the trailers). */
  function callH1(path: string): Promise<{ status: number; trailers: NodeJS.Dict<string> }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port(80), path, method: 'POST', headers: { 'content-type': 'application/grpc', te: 'trailers' } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, trailers: res.trailers }));
      });
      req.on('error', reject);
      req.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  }

  it('from an h2c upstream to an HTTP/2 client and an HTTP/1.1 client', async () => {
    const a = await callH2('/svc.Api/Call');
    assert.equal(a.status, 200);
    assert.equal(a.trailers['grpc-status'], '7');
    assert.equal(a.trailers['grpc-message'], 'denied');
    const b = await callH1('/svc.Api/Call');
    assert.equal(b.trailers['grpc-status'], '7');
  });

  it('from a chunked HTTP/1.1 upstream to an HTTP/2 client', async () => {
    const a = await callH2('/h1/svc.Api/Call');
    assert.equal(a.status, 200);
    assert.equal(a.trailers['grpc-status'], '5');
    assert.equal(a.trailers['grpc-message'], 'missing');
  });

  it('a local reply to a gRPC request is gRPC-shaped, as Envoy\'s: 200, grpc-status mapped from the HTTP status', async () => {
    const status = await new Promise<{ status: number; headers: http2.IncomingHttpHeaders }>((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${gw.port(80)}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': '/nowhere/svc.Api/Call', 'content-type': 'application/grpc', te: 'trailers' });
      req.on('response', (h) => { resolve({ status: Number(h[':status']), headers: h }); session.close(); });
      req.resume();
      req.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    assert.equal(status.status, 200);
    assert.equal(status.headers['grpc-status'], '14', 'UNAVAILABLE for 503 NC');
    assert.equal(status.headers['content-type'], 'application/grpc');
    await gw.waitForLine(/"POST \/nowhere\/svc\.Api\/Call HTTP\/2" 200 NC cluster_not_found /);
    // A plain HTTP client of the same route still gets the HTTP reply.
    const plain = await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: gw.port(80), path: '/nowhere/x' }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
    });
    assert.equal(plain, 503);
  });

  it('the metrics read the status from the trailers', async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.app.ports.metrics}/stats/prometheus`)).text();
    assert.match(text, /istio_requests_total\{[^}]*grpc_response_status="7"[^}]*\} [1-9]/);
  });
});
