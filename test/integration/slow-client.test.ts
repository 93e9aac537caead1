// Slow clients (slowloris) are cut by the header timeout with 408, and the gateway keeps serving.

import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { rawHttp } from '../helpers/upstream';
import { httpGatewayYaml } from '../../src/sample/configs';

describe('slow clients', function () {
  this.timeout(20_000);
  let gw: TestGateway;

  before(async () => {
    gw = await startGateway({
      'gw.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{directResponse: {status: 200, body: {string: "ok"}}}]
`,
    }, { opts: { limits: { headersTimeoutMs: 600, requestTimeoutMs: 1500 } } });
  });
  after(async () => gw?.stop());

  it('a client that never finishes its headers gets 408 and is closed', async () => {
    const t0 = Date.now();
    const out = await rawHttp(gw.port(80), 'GET / HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n', { timeoutMs: 5000 });
    const took = Date.now() - t0;
    assert.match(out, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.ok(took < 4000, `closed after ${took} ms`);
    const lines = await gw.waitForLines(1);
    assert.ok(lines.some((l) => / 408 DPE request_overall_timeout /.test(l)), lines.join('\n'));
  });

  it("a client that sends nothing at all gets 408 and is closed too (the HTTP/1.1 lane's head timer)", async () => {
    const before = gw.accessLines().length;
    const t0 = Date.now();
    const out = await rawHttp(gw.port(80), '', { timeoutMs: 5000 });
    const took = Date.now() - t0;
    assert.match(out, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.ok(took < 4000, `closed after ${took} ms`);
    const lines = await gw.waitForLines(before + 1);
    assert.ok(lines.slice(before).some((l) => / 408 DPE /.test(l)), lines.join('\n'));
  });

  it('still serves others meanwhile', async () => {
    const out = await rawHttp(gw.port(80), 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', { timeoutMs: 3000 });
    assert.match(out, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
  });
});
