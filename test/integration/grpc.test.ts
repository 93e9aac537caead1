// gRPC through the gateway: response trailers reach the client (gRPC keeps its status there), from
// an HTTP/2 (h2c) upstream and an HTTP/1.1 chunked one, to HTTP/2 and HTTP/1.1 clients alike; the
// gateway's own replies to gRPC requests are gRPC-shaped; istio_requests_total says
// request_protocol="grpc" only for application/grpc[+codec] (gRPC-Web is "http"), with
// grpc_response_status from the response's grpc-status (trailers, or the headers of a
// trailers-only response), or a fault abort's.

import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl } from '../helpers/upstream';

const routes = (h2Port: number, h1Port: number) => `${httpGatewayYaml()}${loopbackServiceEntryYaml('g2', 'g2.internal', 80, 'GRPC', h2Port)}${loopbackServiceEntryYaml('g1', 'g1.internal', 80, 'HTTP', h1Port)}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
    route: [{destination: {host: g2.internal}}]
  - match: [{uri: {prefix: /h1}}]
    route: [{destination: {host: g1.internal}}]
  - match: [{uri: {prefix: /nowhere}}]
    route: [{destination: {host: nowhere.internal}}]
  - route: [{destination: {host: g2.internal}}]
`;

/** The status a path names (`.../status/N`), if it names one. */
const statusIn = (path: string | undefined) => /\/status\/(\d+)/.exec(path ?? '')?.[1];

describe('gRPC through the gateway', function () {
  this.timeout(20_000);
  let gw: TestGateway;
  let h2: http2.Http2Server;
  let h1: http.Server;

  before(async () => {
    // h2c: `/status/N` answers trailers-only (grpc-status N in the headers); anything else sends a
    // message, then grpc-status 7 "denied" in the trailers.
    h2 = http2.createServer();
    h2.on('stream', (stream, headers) => {
      const status = statusIn(String(headers[':path']));
      if (status !== undefined) return void stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': status }, { endStream: true });
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '7', 'grpc-message': 'denied' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    // HTTP/1.1 with chunked trailers: grpc-status (the path's, else 5 "missing") after the body.
    h1 = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/grpc', trailer: 'grpc-status' });
        res.write(Buffer.from([0, 0, 0, 0, 0]));
        const status = statusIn(req.url);
        res.addTrailers(status !== undefined ? { 'grpc-status': status } : { 'grpc-status': '5', 'grpc-message': 'missing' });
        res.end();
      });
    });
    await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => h1.listen(0, '127.0.0.1', resolve));
    gw = await startGateway({ 'routes.yaml': routes((h2.address() as AddressInfo).port, (h1.address() as AddressInfo).port) });
  });

  after(async () => {
    await gw?.stop();
    h2?.close();
    h1?.close();
  });

  const call = (path: string, contentType = 'application/grpc') =>
    curl(['-s', '-o', '/dev/null', '-H', 'Host: app.example.com', '-H', `content-type: ${contentType}`, '-H', 'te: trailers', '--data-binary', 'xxxxx', `http://127.0.0.1:${gw.port(80)}${path}`]);

  /** An HTTP/2 (prior knowledge) call through the gateway: status, response headers, trailers. */
  function callH2(path: string): Promise<{ status: number; headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${gw.port(80)}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      req.on('response', (h) => { headers = h; });
      req.on('trailers', (t) => { trailers = t; });
      req.on('end', () => { session.close(); resolve({ status: Number(headers[':status']), headers, trailers }); });
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

  /** The istio_requests_total lines for a destination service. */
  async function lines(service: string): Promise<string[]> {
    const text = await (await fetch(`http://127.0.0.1:${gw.app.ports.metrics}/stats/prometheus`)).text();
    return text.split('\n').filter((l) => l.startsWith('istio_requests_total{') && l.includes(`destination_service="${service}"`));
  }

  it('trailers from an h2c upstream reach an HTTP/2 client and an HTTP/1.1 client', async () => {
    const a = await callH2('/svc.Api/Call');
    assert.equal(a.status, 200);
    assert.equal(a.trailers['grpc-status'], '7');
    assert.equal(a.trailers['grpc-message'], 'denied');
    const b = await callH1('/svc.Api/Call');
    assert.equal(b.trailers['grpc-status'], '7');
  });

  it('trailers from a chunked HTTP/1.1 upstream reach an HTTP/2 client', async () => {
    const a = await callH2('/h1/svc.Api/Call');
    assert.equal(a.status, 200);
    assert.equal(a.trailers['grpc-status'], '5');
    assert.equal(a.trailers['grpc-message'], 'missing');
  });

  it('a local reply to a gRPC request is gRPC-shaped, as Envoy\'s: 200, grpc-status mapped from the HTTP status', async () => {
    const r = await callH2('/nowhere/svc.Api/Call');
    assert.equal(r.status, 200);
    assert.equal(r.headers['grpc-status'], '14', 'UNAVAILABLE for 503 NC');
    assert.equal(r.headers['content-type'], 'application/grpc');
    await gw.waitForLine(/"POST \/nowhere\/svc\.Api\/Call HTTP\/2" 200 NC cluster_not_found /);
    // A plain HTTP client of the same route still gets the HTTP reply.
    const plain = await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: gw.port(80), path: '/nowhere/x' }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
    });
    assert.equal(plain, 503);
  });

  it('grpc_response_status from the trailers of an h2c response', async () => {
    await callH2('/svc.Api/Counted');
    await gw.waitForLine(/"POST \/svc\.Api\/Counted /);
    const found = await lines('g2.internal');
    assert.ok(found.some((l) => /grpc_response_status="7"[^}]*\} [1-9]/.test(l)), found.join('\n'));
  });

  it('a trailers-only response: grpc_response_status from its headers', async () => {
    await call('/pkg.Svc/status/5');
    await call('/pkg.Svc/status/0');
    await gw.waitForLine(/"POST \/pkg\.Svc\/status\/0 /);
    const found = await lines('g2.internal');
    assert.ok(found.some((l) => /request_protocol="grpc",response_code="200",grpc_response_status="5"/.test(l)), found.join('\n'));
    assert.ok(found.some((l) => /request_protocol="grpc",response_code="200",grpc_response_status="0"/.test(l)), found.join('\n'));
  });

  it('grpc-status in the trailers (HTTP/1.1 upstream)', async () => {
    await call('/h1/pkg.Svc/status/3');
    await gw.waitForLine(/"POST \/h1\/pkg\.Svc\/status\/3 /);
    const found = await lines('g1.internal');
    assert.ok(found.some((l) => /request_protocol="grpc",response_code="200",grpc_response_status="3"/.test(l)), found.join('\n'));
  });

  it('a fault abort with grpcStatus counts that status', async () => {
    await call('/abort/pkg.Svc/M');
    await gw.waitForLine(/"POST \/abort\/pkg\.Svc\/M /);
    const found = await lines('unknown');
    assert.ok(found.some((l) => /request_protocol="grpc",response_code="200",grpc_response_status="8",response_flags="FI"/.test(l)), found.join('\n'));
  });

  it('gRPC-Web is request_protocol="http", without grpc_response_status', async () => {
    await call('/web/pkg.Svc/status/0', 'application/grpc-web+proto');
    await gw.waitForLine(/"POST \/web\/pkg\.Svc\/status\/0 /);
    const found = (await lines('g2.internal')).filter((l) => l.includes('request_protocol="http"'));
    assert.equal(found.length, 1, (await lines('g2.internal')).join('\n'));
    assert.match(found[0]!, /response_code="200",grpc_response_status="",response_flags="-"/);
  });
});
