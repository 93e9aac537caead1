// The pilot-agent shim (bin/pilot-agent) run as Istio runbooks run it, against a real gateway's admin
// and status ports (named by MESHGATE_ADMIN_PORT / MESHGATE_STATUS_PORT, as in the container) and
// against small servers of the test's own for what the gateway cannot show (5xx, POST bodies).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { freePort, httpGet, listenLoopback, portOf } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

const PILOT_AGENT_BIN = path.resolve(__dirname, '../../../bin/pilot-agent');

interface Run { code: number; stdout: string; stderr: string; ms: number }

/** Run bin/pilot-agent with this env on top of ours (minus any MESHGATE_* the runner has). */
function pilotAgent(args: string[], env: Record<string, string>): Promise<Run> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHGATE_')) base[k] = v;
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [PILOT_AGENT_BIN, ...args], { env: { ...base, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

interface Seen { method: string; url: string; host: string; body: string; contentLength: string | undefined }

/** A loopback server answering every request with (status, body); it records what it was sent. */
async function startServer(answer: (seen: Seen, n: number) => [number, string]): Promise<{ port: number; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', url: req.url ?? '', host: req.headers.host ?? '', body: Buffer.concat(chunks).toString(), contentLength: req.headers['content-length'] };
      seen.push(s);
      const [status, body] = answer(s, seen.length);
      res.writeHead(status, { 'content-type': 'text/plain' }).end(body);
    });
  });
  await listenLoopback(server);
  return { port: portOf(server), seen, close: () => new Promise((r) => server.close(() => r())) };
}

describe('pilot-agent shim against a running gateway', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let backend: HttpbinServer;
  let env: Record<string, string>;

  before(async () => {
    backend = await startHttpbin({ name: 'a' });
    gw = await startGateway({ 'routes.yaml': singleRouteYaml({ upstreamPort: backend.port, host: 'svc.example.internal' }) });
    env = { MESHGATE_ADMIN_PORT: String(gw.app.ports.admin), MESHGATE_STATUS_PORT: String(gw.app.ports.status) };
    // One request through the gateway, so the cluster's counters are not all zero.
    assert.equal((await httpGet(gw.port(80), '/get')).status, 200);
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  const CLUSTER = 'outbound|80||svc.example.internal';

  it('request GET stats: the admin /stats text on stdout (plus one newline), nothing on stderr', async () => {
    const r = await pilotAgent(['request', 'GET', 'stats'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(r.stdout.endsWith('\n\n'), 'the body (ending in a newline) and println\'s newline');
    const lines = r.stdout.slice(0, -1).split('\n').filter(Boolean);
    assert.ok(lines.includes('server.live: 1'), r.stdout);
    assert.ok(lines.includes(`cluster.${CLUSTER}.upstream_rq_total: 1`), r.stdout);
    assert.ok(lines.some((l) => l.startsWith(`cluster.${CLUSTER}.upstream_rq_pending_total: `)), 'the runbook\'s `| grep pending` finds the pending stats');
    // The same stats the admin serves (memory and uptime values move between two reads; names do not).
    const direct = await httpGet(gw.app.ports.admin, '/stats');
    const names = (text: string) => text.split('\n').filter(Boolean).map((l) => l.slice(0, l.lastIndexOf(':')));
    assert.deepEqual(names(r.stdout), names(direct.body));
  });

  it('request GET with a query: the filter reaches the admin; byte for byte what the admin answers', async () => {
    const r = await pilotAgent(['request', 'GET', 'stats?filter=^cluster\\.'], env);
    assert.equal(r.code, 0, r.stderr);
    const direct = await httpGet(gw.app.ports.admin, '/stats?filter=^cluster%5C.');
    assert.equal(direct.status, 200);
    assert.ok(direct.body.includes(`cluster.${CLUSTER}.upstream_rq_total: 1`));
    assert.equal(r.stdout, `${direct.body}\n`);
    assert.ok(!r.stdout.includes('server.live'));
  });

  it('request GET /clusters: the leading slash is the same request', async () => {
    const r = await pilotAgent(['request', 'GET', '/clusters'], env);
    assert.equal(r.code, 0, r.stderr);
    const direct = await httpGet(gw.app.ports.admin, '/clusters');
    assert.equal(r.stdout, `${direct.body}\n`);
    assert.ok(r.stdout.includes(`${CLUSTER}::127.0.0.1:${backend.port}::`), r.stdout);
    const json = await pilotAgent(['request', 'GET', 'clusters?format=json'], env);
    assert.equal(json.code, 0, json.stderr);
    assert.ok(JSON.parse(json.stdout), 'istioctl parses stdout as JSON: nothing else may be there');
  });

  it('request GET of a path the admin does not have: the 404 body on stdout, exit 0 (as Istio)', async () => {
    const r = await pilotAgent(['request', 'GET', 'no/such/endpoint'], env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, 'not found\n\n', '']);
  });

  it('request to the status port (allowed through MESHGATE_STATUS_PORT with --debug-port)', async () => {
    const r = await pilotAgent(['request', 'GET', 'healthz/ready', '--debug-port', String(gw.app.ports.status)], env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, '\n', '']);
  });

  it('a 5xx answer: exit 1, the status and body on stderr, nothing on stdout', async () => {
    const agent = await startServer(() => [503, 'upstream overloaded']);
    try {
      const r = await pilotAgent(['request', 'GET', 'stats', `--debug-port=${agent.port}`], { ...env, MESHGATE_AGENT_PORT: String(agent.port) });
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'Error: received unsuccessful status code 503: upstream overloaded\n');
      assert.deepEqual(agent.seen.map((s) => `${s.method} ${s.url}`), ['GET /stats']);
    } finally {
      await agent.close();
    }
  });

  it('a port outside the allow-list is refused before any connection: exit 1', async () => {
    const other = await startServer(() => [200, 'should not be asked']);
    try {
      const r = await pilotAgent(['request', 'GET', 'stats', '--debug-port', String(other.port)], env);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      const allowed = [15000, 15004, 15020, 15021, gw.app.ports.admin, gw.app.ports.status].sort((a, b) => a - b);
      assert.equal(r.stderr, `Error: debug port ${other.port} is not in allowed list [${allowed.join(' ')}]\n`);
      assert.equal(other.seen.length, 0);
    } finally {
      await other.close();
    }
  });

  it('request POST sends the method, path with query and the body, with Host localhost:PORT', async () => {
    const agent = await startServer((s) => [200, `active loggers:\n  meshgate: ${s.body === '' ? 'debug' : 'x'}`]);
    try {
      const e = { ...env, MESHGATE_AGENT_PORT: String(agent.port) };
      const r = await pilotAgent(['request', 'POST', '/logging?level=debug', 'the body \u00e9', '--debug-port', String(agent.port)], e);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual([r.stdout, r.stderr], ['active loggers:\n  meshgate: x\n', '']);
      const empty = await pilotAgent(['request', 'POST', 'logging?level=debug', `--debug-port=${agent.port}`], e);
      assert.equal(empty.code, 0, empty.stderr);
      assert.equal(empty.stdout, 'active loggers:\n  meshgate: debug\n');
      assert.deepEqual(agent.seen, [
        { method: 'POST', url: '/logging?level=debug', host: `localhost:${agent.port}`, body: 'the body \u00e9', contentLength: String(Buffer.byteLength('the body \u00e9')) },
        { method: 'POST', url: '/logging?level=debug', host: `localhost:${agent.port}`, body: '', contentLength: '0' },
      ]);
    } finally {
      await agent.close();
    }
  });

  it('request when nothing listens: exit 1 with the connection error on stderr', async () => {
    const closed = await freePort();
    const r = await pilotAgent(['request', 'GET', 'stats'], { MESHGATE_ADMIN_PORT: String(closed) });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^Error: Get "http://localhost:${closed}/stats": .*ECONNREFUSED 127\\.0\\.0\\.1:${closed}\\n$`));
  });

  it('wait: exits 0 against the ready gateway (status port from MESHGATE_STATUS_PORT)', async () => {
    const r = await pilotAgent(['wait', '--periodMillis', '400'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.ms >= 400, `the first poll comes one period after the start (took ${r.ms} ms)`);
    assert.equal(r.stderr, '');
    const lines = r.stdout.split('\n').filter(Boolean);
    assert.equal(lines.length, 2, r.stdout);
    assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\tinfo\tWaiting for Envoy proxy to be ready \(timeout: 60 seconds\)\.\.\.$/);
    assert.match(lines[1]!, /\tinfo\tEnvoy is ready!$/);
  });

  it('wait: polls every period until the URL answers 200', async () => {
    const status = await startServer((_s, n) => (n < 3 ? [503, 'not ready'] : [200, '']));
    try {
      const r = await pilotAgent(['wait', '--periodMillis', '100', '--url', `http://localhost:${status.port}/healthz/ready`], {});
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Envoy is ready!/);
      assert.deepEqual(status.seen.map((s) => `${s.method} ${s.url} ${s.host}`), [1, 2, 3].map(() => `GET /healthz/ready localhost:${status.port}`));
    } finally {
      await status.close();
    }
  });

  it('wait: times out after --timeoutSeconds with the last error, exit 1', async () => {
    const closed = await freePort();
    const r = await pilotAgent(['wait', '--timeoutSeconds', '1', '--periodMillis', '100', '--url', `http://127.0.0.1:${closed}/healthz/ready`], env);
    assert.equal(r.code, 1);
    assert.ok(r.ms >= 1000 && r.ms < 2500, `took ${r.ms} ms`);
    assert.match(r.stdout, /Waiting for Envoy proxy to be ready \(timeout: 1 seconds\)\.\.\.\n$/);
    assert.ok(!r.stdout.includes('ready!'));
    assert.match(r.stderr, new RegExp(`^Error: timeout waiting for Envoy proxy to become ready\\. Last error: Get "http://127\\.0\\.0\\.1:${closed}/healthz/ready": .*ECONNREFUSED.*\\n$`));
  });

  it('wait: only a 200 is ready; a non-200 is the last error', async () => {
    const status = await startServer((_s, n) => (n < 2 ? [503, 'not ready'] : [204, '']));
    try {
      const r = await pilotAgent(['wait', '--timeoutSeconds=1', '--periodMillis=200', `--url=http://127.0.0.1:${status.port}/healthz/ready`], {});
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'Error: timeout waiting for Envoy proxy to become ready. Last error: HTTP status code 204\n');
      assert.ok(status.seen.length >= 3 && status.seen.length <= 5, `${status.seen.length} polls in 1 s at 200 ms`);
    } finally {
      await status.close();
    }
  });

  it('help and usage errors from the real script: help on stdout exit 0, errors on stderr exit 1, no stack trace', async () => {
    for (const args of [[], ['--help'], ['help'], ['request', '--help'], ['wait', '--help']]) {
      const r = await pilotAgent(args, env);
      assert.equal(r.code, 0, args.join(' '));
      assert.equal(r.stderr, '');
      assert.match(r.stdout, /meshgate's compatibility shim for Istio's pilot-agent/);
      assert.match(r.stdout, /Only "request" and "wait" exist/);
    }
    for (const args of [['proxy', 'router'], ['request', 'GET'], ['wait', '--timeoutSeconds', 'x'], ['request', 'GET', 'stats', '--nope']]) {
      const r = await pilotAgent(args, env);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^Error: .*\nRun 'pilot-agent --help' for usage\.\n$/);
      assert.ok(!/\n\s+at /.test(r.stderr), r.stderr);
    }
  });
});
