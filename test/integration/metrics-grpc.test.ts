// istio_requests_total for gRPC through the gateway: request_protocol="grpc" only for
// application/grpc[+codec] (gRPC-Web is "http"), and grpc_response_status from the response's
// grpc-status (trailers, or the headers of a trailers-only response), or a fault abort's.

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
  - route: [{destination: {host: g2.internal}}]
`;

describe('istio_requests_total for gRPC', function () {
  this.timeout(20_000);
  let gw: TestGateway;
  let h2: http2.Http2Server;
  let h1: http.Server;

  before(async () => {
    // h2c: a trailers-only answer (grpc-status in the headers) with the status the path names.
    h2 = http2.createServer();
    h2.on('stream', (stream, headers) => {
      const status = /\/status\/(\d+)/.exec(String(headers[':path']))?.[1] ?? '0';
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': status }, { endStream: true });
    });
    // HTTP/1.1 with chunked trailers: grpc-status after the body.
    h1 = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/grpc', trailer: 'grpc-status' });
        res.write(Buffer.from([0, 0, 0, 0, 0]));
        res.addTrailers({ 'grpc-status': /\/status\/(\d+)/.exec(req.url ?? '')?.[1] ?? '0' });
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

  /** The istio_requests_total lines for a destination service. */
  async function lines(service: string): Promise<string[]> {
    const text = await (await fetch(`http://127.0.0.1:${gw.app.ports.metrics}/stats/prometheus`)).text();
    return text.split('\n').filter((l) => l.startsWith('istio_requests_total{') && l.includes(`destination_service="${service}"`));
  }

  it('a trailers-only response: grpc_response_status from its headers', async () => {
    await call('/pkg.Svc/status/5');
    await call('/pkg.Svc/status/0');
    await gw.waitForLines(2);
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
