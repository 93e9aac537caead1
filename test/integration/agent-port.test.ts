// The agent port (Istio's 15020): merged Prometheus metrics with the application's own, scrape
// failures counted and never failing the answer; the Envoy admin's /logging, /healthcheck/fail|ok and
// /quitquitquit; the CLI draining and exiting 0 on /quitquitquit.

import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, spawnMeshgate, type TestGateway } from '../helpers/gateway';
import { capturedLogger } from '../helpers/log';
import { freePort, httpGet, listenLoopback, portOf, waitFor } from '../helpers/upstream';
import { httpGatewayYaml, singleRouteYaml } from '../../src/sample/configs';
import { envoyLevel } from '../../src/admin/servers';

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

function request(port: number, method: string, p: string, headers: http.OutgoingHttpHeaders = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** The application's metrics endpoint: what it answers is set per test; it records what it was asked. */
class AppMetrics {
  readonly server: http.Server;
  answer: (req: http.IncomingMessage, res: http.ServerResponse) => void = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end('# HELP app_orders_total Orders.\n# TYPE app_orders_total counter\napp_orders_total 7\n');
  };
  seen: { path: string; headers: http.IncomingHttpHeaders }[] = [];

  constructor() {
    this.server = http.createServer((req, res) => {
      this.seen.push({ path: req.url ?? '', headers: req.headers });
      this.answer(req, res);
    });
  }
}

describe('agent port (15020): merged metrics, quitquitquit; admin logging and health checks', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let app: AppMetrics;

  before(async () => {
    app = new AppMetrics();
    await listenLoopback(app.server);
    gw = await startGateway({ 'gw.yaml': httpGatewayYaml() }, {
      opts: { agentPort: 0, prometheusAnnotations: JSON.stringify({ scrape: 'true', path: '/custom/metrics', port: String(portOf(app.server)) }) },
    });
  });
  after(async () => {
    await gw?.stop();
    app?.server.close();
  });

  const scrape = (headers: http.OutgoingHttpHeaders = {}) => request(gw.app.ports.agent, 'GET', '/stats/prometheus', headers);
  const failures = (body: string) => Number(/^istio_agent_scrape_failures_total\{type="application"\} (\d+)$/m.exec(body)?.[1]);

  it('answers the proxy\'s metrics, then the application\'s, in one Prometheus text answer', async () => {
    app.seen = [];
    const r = await scrape({ accept: 'text/plain;version=0.0.4', 'user-agent': 'Prometheus/2.53.0', 'x-prometheus-scrape-timeout-seconds': '9' });
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const own = r.body.indexOf('istio_build{component="proxy"');
    const theirs = r.body.indexOf('app_orders_total 7');
    assert.ok(own > 0, 'the proxy\'s metrics');
    assert.ok(theirs > own, 'the application\'s metrics, after the proxy\'s');
    assert.match(r.body, /^istio_agent_scrapes_total \d+$/m);
    assert.equal(failures(r.body), 0);
    // Asked where the annotations say, with Prometheus's format and time budget passed on.
    assert.equal(app.seen.length, 1);
    assert.equal(app.seen[0]!.path, '/custom/metrics');
    assert.equal(app.seen[0]!.headers['accept'], 'text/plain;version=0.0.4');
    assert.equal(app.seen[0]!.headers['user-agent'], 'Prometheus/2.53.0');
    assert.equal(app.seen[0]!.headers['x-prometheus-scrape-timeout-seconds'], '9');
  });

  it('takes the application\'s OpenMetrics content type, its # EOF last', async () => {
    app.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/openmetrics-text; version=1.0.0; charset=utf-8' });
      res.end('# TYPE app_up gauge\napp_up 1\n# EOF\n');
    };
    const r = await scrape();
    assert.equal(r.headers['content-type'], 'application/openmetrics-text; version=1.0.0; charset=utf-8');
    assert.ok(r.body.endsWith('app_up 1\n# EOF\n'));
    assert.equal(r.body.indexOf('# EOF'), r.body.length - '# EOF\n'.length, 'one # EOF, at the end');
  });

  it('still answers the proxy\'s metrics when the application fails, and counts each failure', async () => {
    const before = failures((await scrape()).body);
    app.answer = (_req, res) => { res.writeHead(500).end('boom'); };
    const r1 = await scrape();
    assert.equal(r1.status, 200);
    assert.match(r1.body, /istio_build\{component="proxy"/);
    assert.doesNotMatch(r1.body, /boom/);
    assert.equal(failures(r1.body), before + 1);

    // Too slow for Prometheus's budget: given up on in time.
    app.answer = (_req, res) => { setTimeout(() => res.writeHead(200).end('late_metric 1\n'), 3000).unref(); };
    const t0 = Date.now();
    const r2 = await scrape({ 'x-prometheus-scrape-timeout-seconds': '0.5' });
    assert.ok(Date.now() - t0 < 2500, `answered after ${Date.now() - t0} ms`);
    assert.doesNotMatch(r2.body, /late_metric/);
    assert.equal(failures(r2.body), before + 2);

    // Larger than Istio's 10 MiB per application answer: dropped.
    const line = `big_metric{pad="${'x'.repeat(1000)}"} 1\n`;
    app.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      for (let i = 0; i < 11 * 1024; i++) res.write(line);
      res.end();
    };
    const r3 = await scrape();
    assert.doesNotMatch(r3.body, /big_metric/);
    assert.equal(failures(r3.body), before + 3);

    // Nobody listening.
    const closed = await freePort();
    const lone = await startGateway({ 'gw.yaml': httpGatewayYaml() }, { opts: { agentPort: 0, prometheusAnnotations: `{"scrape":"true","path":"","port":"${closed}"}` } });
    try {
      const r4 = await request(lone.app.ports.agent, 'GET', '/stats/prometheus');
      assert.equal(r4.status, 200);
      assert.equal(failures(r4.body), 1);
    } finally {
      await lone.stop();
    }
  });

  it('without the application\'s annotations: the proxy\'s metrics alone, no application failure series', async () => {
    const lone = await startGateway({ 'gw.yaml': httpGatewayYaml() }, { opts: { agentPort: 0 } });
    try {
      const r = await request(lone.app.ports.agent, 'GET', '/stats/prometheus');
      assert.match(r.body, /istio_build\{component="proxy"/);
      assert.doesNotMatch(r.body, /type="application"/);
      assert.equal((await request(lone.app.ports.agent, 'GET', '/healthz/ready')).status, 200);
      assert.equal((await request(lone.app.ports.agent, 'GET', '/quitquitquit')).status, 405);
      assert.equal((await request(lone.app.ports.agent, 'POST', '/quitquitquit')).status, 501, 'an in-process gateway is not ended');
      const alias = await request(lone.app.ports.agent, 'GET', '/metrics');
      assert.equal(alias.status, 200);
      assert.match(alias.body, /istio_build\{component="proxy"/, '/metrics, as Istio\'s agent');
      assert.equal((await request(lone.app.ports.agent, 'GET', '/nothing')).status, 404);
    } finally {
      await lone.stop();
    }
  });

  it('admin /logging lists and sets the level as Envoy\'s (POST only; unknown loggers refused)', async () => {
    const admin = gw.app.ports.admin;
    assert.equal((await request(admin, 'GET', '/logging')).status, 405);
    const original = envoyLevel(gw.app.log.level);
    const list = await request(admin, 'POST', '/logging');
    assert.equal(list.status, 200);
    assert.equal(list.body, `active loggers:\n  meshgate: ${original}\n`);
    const set = await request(admin, 'POST', '/logging?level=debug');
    assert.equal(set.status, 200);
    assert.equal(set.body, 'active loggers:\n  meshgate: debug\n');
    assert.equal(gw.app.log.level, 'debug');
    const warning = await request(admin, 'POST', '/logging?meshgate=warning');
    assert.equal(warning.body, 'active loggers:\n  meshgate: warning\n');
    assert.equal(gw.app.log.level, 'warn');
    const unknown = await request(admin, 'POST', '/logging?http=debug');
    assert.equal(unknown.status, 404);
    assert.match(unknown.body, /^usage: \/logging\?<name>=<level>/);
    assert.equal(gw.app.log.level, 'warn', 'unchanged');
    assert.equal((await request(admin, 'POST', '/logging?level=loud')).status, 404);
    await request(admin, 'POST', `/logging?level=${original}`);
    assert.equal(envoyLevel(gw.app.log.level), original);
  });

  it('at debug level (admin /logging), each failed upstream attempt is logged: endpoint, error, retried or not', async () => {
    const { logger, lines } = capturedLogger('info');
    const closed = await freePort();
    const dead = await startGateway({ 'routes.yaml': singleRouteYaml({ upstreamPort: closed }) }, { opts: { logger } });
    try {
      const attempts = () => lines.filter((l) => l.includes('upstream attempt'));
      assert.equal((await httpGet(dead.port(80), '/')).status, 503);
      assert.deepEqual(attempts(), [], 'nothing at info level');
      assert.equal((await request(dead.app.ports.admin, 'POST', '/logging?level=debug')).status, 200);
      assert.equal((await httpGet(dead.port(80), '/')).status, 503);
      const got = attempts().map((l) => JSON.parse(l) as { msg: string; endpoint: string; attempt: number; of: number; cluster: string });
      // Istio's default retry policy: 2 retries on connect-failure, so 3 attempts, the last given up.
      assert.deepEqual(got.map((g) => [g.attempt, g.of, g.endpoint, g.cluster]), [1, 2, 3].map((n) => [n, 3, `127.0.0.1:${closed}`, 'outbound|80||upstream.internal']));
      assert.match(got[0]!.msg, /^upstream attempt 1 to 127\.0\.0\.1:\d+ in outbound\|80\|\|upstream\.internal: CONNECT_FAILURE: .*ECONNREFUSED.*; retrying$/);
      assert.match(got[2]!.msg, /; giving up$/);
    } finally {
      await dead.stop();
    }
  });

  it('admin /healthcheck/fail fails readiness while traffic is still served; /healthcheck/ok restores it', async () => {
    const admin = gw.app.ports.admin;
    assert.equal((await request(admin, 'GET', '/healthcheck/fail')).status, 405);
    assert.equal((await request(admin, 'POST', '/healthcheck/fail')).body, 'OK\n');
    try {
      assert.equal((await httpGet(gw.app.ports.status, '/healthz/ready')).status, 503);
      assert.equal((await request(gw.app.ports.agent, 'GET', '/healthz/ready')).status, 503);
      const ready = await request(admin, 'GET', '/ready');
      assert.deepEqual([ready.status, ready.body], [503, 'DRAINING\n']);
      assert.match((await scrape()).body, /^envoy_server_state 1$/m);
    } finally {
      assert.equal((await request(admin, 'POST', '/healthcheck/ok')).status, 200);
    }
    assert.equal((await httpGet(gw.app.ports.status, '/healthz/ready')).status, 200);
    assert.equal((await request(admin, 'GET', '/ready')).body, 'LIVE\n');
    assert.match((await scrape()).body, /^envoy_server_state 0$/m);
  });

  it('an in-process gateway is not ended by /quitquitquit (it is not its process to end)', async () => {
    assert.equal((await request(gw.app.ports.admin, 'POST', '/quitquitquit')).status, 501);
    assert.equal(gw.app.ready(), true);
  });
});

describe('/quitquitquit ends meshgate run', function () {
  this.timeout(60_000);
  let child: ChildProcess | undefined;
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-quit-'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), singleRouteYaml({ upstreamPort: 9, accessLogFile: path.join(dir, 'access.log') }));
  });
  afterEach(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, flag] of [['agent port', '--agent-port'], ['admin port', '--admin-port']] as const) {
    it(`POST on the ${name}: answers OK, drains, exits 0`, async () => {
      const [port, listen] = [await freePort(), await freePort()];
      child = spawnMeshgate(dir, listen, [flag, String(port), '--log-level', 'info', '--drain-seconds', '2'], 'pipe');
      let stderr = '';
      child.stderr?.on('data', (c: Buffer) => { stderr += c.toString(); });
      await waitFor(async () => (await request(port, 'GET', '/').catch(() => undefined)) !== undefined, { timeoutMs: 20_000 });
      const exited = once(child, 'exit');
      const r = await request(port, 'POST', '/quitquitquit');
      assert.equal(r.status, 200);
      assert.match(r.body, /^OK/);
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0, stderr);
      assert.match(stderr, /SIGTERM: draining/);
    });
  }
});
