// A custom mesh accessLogFormat through a real gateway: the operators that need the proxy's own
// timing and addresses (%RESPONSE_DURATION%, %UPSTREAM_REMOTE_ADDRESS%) and a length limit.

import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

describe('custom access-log format', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  let up: HttpbinServer;

  before(async () => {
    up = await startHttpbin({ name: 'fmt' });
    gw = await startGateway({ 'routes.yaml': singleRouteYaml({ upstreamPort: up.port, prefix: '/' }) }, {
      mesh: 'accessLogFormat: "fmt %RESPONSE_CODE% rd=%RESPONSE_DURATION% d=%DURATION% ua=%REQ(USER-AGENT):4% up=%UPSTREAM_REMOTE_ADDRESS%\\n"',
    });
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
  });

  it('fills in the response duration, the upstream address and a cut header', async () => {
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-A', 'curl/very-long', `http://127.0.0.1:${gw.port(80)}/delay/0.2`]);
    assert.equal(r.stdout, '200');
    const line = await gw.waitForLine(/^fmt 200 /);
    const m = /^fmt 200 rd=(\d+) d=(\d+) ua=curl up=127\.0\.0\.1:(\d+)$/.exec(line);
    assert.ok(m, line);
    assert.equal(Number(m[3]), up.port);
    assert.ok(Number(m[1]) >= 190 && Number(m[1]) <= Number(m[2]), `response duration ${m[1]} ms of ${m[2]} ms`);
  });
});
