// Hot reload while traffic flows, rejection of a broken change, admin and health endpoints.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { httpGet, waitFor } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { httpGatewayYaml, versionedServiceEntryYaml } from '../../src/sample/configs';

function routes(v1: number, v2: number, target: 'a' | 'b', extra = ''): string {
  return `${httpGatewayYaml()}${versionedServiceEntryYaml('svc', 'svc.example.internal', 80, { a: v1, b: v2 })}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc.example.internal
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: svc.example.internal, subset: ${target}}
${extra}`;
}

describe('hot reload and admin', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let a: HttpbinServer;
  let b: HttpbinServer;

  before(async () => {
    a = await startHttpbin({ name: 'a' });
    b = await startHttpbin({ name: 'b' });
    gw = await startGateway({ 'routes.yaml': routes(a.port, b.port, 'a') });
  });
  after(async () => {
    await gw?.stop();
    await a?.close();
    await b?.close();
  });

  const served = async (path = '/get') => String((await httpGet(gw.port(80), path)).headers['x-served-by']);

  it('is ready only after the first config is applied, and reports it on /healthz/ready', async () => {
    const r = await httpGet(gw.app.ports.status, '/healthz/ready');
    assert.equal(r.status, 200);
    assert.equal(gw.app.ready(), true);
  });

  it('applies a change within 2 s without dropping in-flight requests, then rejects a broken one', async () => {
    assert.equal(await served(), 'a');
    // Keep traffic flowing through the change: a slow request in flight and a steady loop.
    const slow = httpGet(gw.port(80), '/delay/1');
    let running = true;
    const failures: string[] = [];
    const seen = new Set<string>();
    const loop = (async () => {
      for (let i = 0; running && i < 2000; i++) {
        try {
          const r = await httpGet(gw.port(80), '/get');
          if (r.status !== 200) failures.push(`status ${r.status}`);
          seen.add(String(r.headers['x-served-by']));
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    })();
    const t0 = Date.now();
    gw.write('routes.yaml', routes(a.port, b.port, 'b'));
    await waitFor(async () => (await served()) === 'b', { timeoutMs: 2000, intervalMs: 25 });
    const applyMs = Date.now() - t0;
    const slowRes = await slow;
    assert.equal(slowRes.status, 200, 'the request in flight during the reload finished');
    assert.equal(slowRes.headers['x-served-by'], 'a');

    // A broken change: rejected whole, the last good config keeps serving.
    const versionBefore = gw.app.store.current.version;
    gw.write('routes.yaml', routes(a.port, b.port, 'a', '    timeot: 1s\n'));
    await waitFor(() => gw.app.lastReload?.result === 'rejected', { timeoutMs: 2000, intervalMs: 20 });
    assert.match(gw.app.lastReload!.errors[0]!, /routes\.yaml:\d+:\d+: VirtualService default\/svc: spec\.http\[0\]\.timeot: unknown field/);
    running = false;
    await loop;
    assert.equal(gw.app.store.current.version, versionBefore);
    assert.equal(await served(), 'b');
    assert.deepEqual(failures, []);
    assert.ok(seen.has('a') && seen.has('b'), [...seen].join());
    assert.ok(applyMs < 2000, `applied in ${applyMs} ms`);
    const metrics = (await httpGet(gw.app.ports.metrics, '/stats/prometheus')).body;
    assert.match(metrics, /meshgate_config_reloads_total\{result="rejected"\} [1-9]/);
    assert.match(metrics, /meshgate_config_reloads_total\{result="applied"\} [2-9]/);
  });

  it('keeps the listener socket across reloads (same port, no rebind)', async () => {
    const before = gw.app.listeners.ports();
    gw.write('routes.yaml', routes(a.port, b.port, 'a'));
    await waitFor(async () => (await served()) === 'a', { timeoutMs: 2000 });
    assert.deepEqual(gw.app.listeners.ports(), before);
  });

  it('SIGHUP-style reload() with no change is a no-op', async () => {
    const v = gw.app.store.current.version;
    const o = await gw.app.reload('test');
    assert.equal(o.result, 'unchanged');
    assert.equal(gw.app.store.current.version, v);
  });

  it('admin: /config_dump shows routes with their origin, /clusters, /stats, /listeners, /ready', async () => {
    await served();
    const admin = gw.app.ports.admin;
    const dump = JSON.parse((await httpGet(admin, '/config_dump')).body) as { listeners: { routes: { any: { routes: { origin: { file: string; line: number; resource: string } }[] } } }[] };
    const origin = dump.listeners[0]!.routes.any.routes[0]!.origin;
    assert.equal(origin.resource, 'VirtualService default/svc');
    assert.match(origin.file, /routes\.yaml$/);
    assert.ok(origin.line > 30);
    const clusters = (await httpGet(admin, '/clusters')).body;
    assert.match(clusters, new RegExp(`^outbound\\|80\\|a\\|svc\\.example\\.internal::127\\.0\\.0\\.1:${a.port}::rq_total::\\d+$`, 'm'));
    assert.match(clusters, new RegExp(`^outbound\\|80\\|a\\|svc\\.example\\.internal::127\\.0\\.0\\.1:${a.port}::cx_total::[1-9]`, 'm'));
    const stats = (await httpGet(admin, '/stats?filter=upstream_rq_200')).body;
    assert.match(stats, /^cluster\.outbound\|80\|a\|svc\.example\.internal\.upstream_rq_200: [1-9]\d*$/m);
    assert.doesNotMatch(stats, /membership/);
    // The filter is searched in the stat's name (Envoy's own example: a full-name match), with RE2.
    assert.equal((await httpGet(admin, `/stats?filter=${encodeURIComponent('^server\\.live$')}`)).body, 'server.live: 1\n');
    assert.match((await httpGet(admin, `/stats?filter=${encodeURIComponent('upstream_rq_200$')}`)).body, /\.upstream_rq_200: [1-9]/);
    // A pattern that makes a backtracking engine run for ages answers at once, and traffic goes on.
    const t0 = Date.now();
    assert.equal((await httpGet(admin, `/stats?filter=${encodeURIComponent('(.|.)*!')}`)).body, '\n');
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    assert.match((await httpGet(admin, '/listeners')).body, /^127\.0\.0\.1_\d+::127\.0\.0\.1:\d+$/m);
    assert.equal((await httpGet(admin, '/ready')).body, 'LIVE\n');
  });

  it("metrics: istio_build and Envoy's server, cluster-manager and listener-manager gauges, as Istio's proxies export them", async () => {
    const metrics = (await httpGet(gw.app.ports.metrics, '/stats/prometheus')).body;
    const version = (JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { version: string }).version;
    const gauge = (name: string) => {
      const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics);
      assert.ok(m, `${name} in\n${metrics.split('\n').filter((l) => l.startsWith('envoy_') || l.startsWith('istio_build')).join('\n')}`);
      return Number(m[1]);
    };
    assert.match(metrics, new RegExp(`^istio_build\\{component="proxy",tag="meshgate-${version.replace(/\./g, '\\.')}"\\} 1$`, 'm'));
    assert.equal(gauge('envoy_server_live'), 1);
    assert.equal(gauge('envoy_server_state'), 0);
    assert.ok(gauge('envoy_server_uptime') >= 0);
    assert.equal(gauge('envoy_server_concurrency'), 1);
    assert.ok(gauge('envoy_server_memory_allocated') > 1e6);
    assert.ok(gauge('envoy_server_memory_heap_size') > 1e6);
    assert.equal(gauge('envoy_cluster_manager_active_clusters'), gw.app.registry.all().length);
    assert.equal(gauge('envoy_listener_manager_total_listeners_active'), gw.app.listeners.ports().length);
    const stats = (await httpGet(gw.app.ports.admin, `/stats?filter=${encodeURIComponent('^server\\.')}`)).body;
    assert.match(stats, /^server\.state: 0$/m);
    assert.match(stats, /^server\.uptime: \d+$/m);
    assert.match(stats, /^server\.memory_allocated: [1-9]\d+$/m);
  });

  it("admin /stats?format=json and Envoy's Prometheus form of the cluster stats (/stats/prometheus, ?format=prometheus)", async () => {
    await served();
    const admin = gw.app.ports.admin;
    const json = JSON.parse((await httpGet(admin, '/stats?format=json')).body) as { stats: { name: string; value: number }[] };
    const byName = new Map(json.stats.map((x) => [x.name, x.value]));
    assert.equal(byName.get('server.live'), 1);
    const cluster = 'outbound|80|a|svc.example.internal';
    const ok = byName.get(`cluster.${cluster}.upstream_rq_200`);
    assert.ok(ok !== undefined && ok > 0, 'cluster stats in the JSON form');
    const filtered = JSON.parse((await httpGet(admin, `/stats?format=json&filter=${encodeURIComponent('^server\\.live$')}`)).body) as { stats: unknown[] };
    assert.deepEqual(filtered.stats, [{ name: 'server.live', value: 1 }]);
    for (const path of ['/stats/prometheus', '/stats?format=prometheus']) {
      const text = (await httpGet(admin, path)).body;
      const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
      assert.equal(value(new RegExp(`^envoy_cluster_upstream_rq\\{response_code="200",cluster_name="outbound\\|80\\|a\\|svc\\.example\\.internal"\\} (\\d+)$`, 'm')), byName.get(`cluster.${cluster}.upstream_rq_200`), path);
      assert.ok(value(new RegExp(`^envoy_cluster_upstream_rq\\{response_code_class="2xx",cluster_name="outbound\\|80\\|a\\|svc\\.example\\.internal"\\} (\\d+)$`, 'm')) > 0, path);
      assert.match(text, /^# TYPE envoy_cluster_upstream_rq counter$/m);
      assert.match(text, /^# TYPE envoy_cluster_upstream_rq_active gauge$/m);
      assert.match(text, /^# TYPE envoy_cluster_circuit_breakers_default_rq_open gauge$/m);
      assert.match(text, /^istio_requests_total\{/m, 'the istio metrics too');
      assert.match(text, /^envoy_server_live 1$/m);
      // One TYPE line per family: Prometheus refuses a family declared twice.
      const types = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]);
      assert.equal(new Set(types).size, types.length, `duplicate families: ${types.filter((t, i) => types.indexOf(t) !== i).join(', ')}`);
    }
  });
});
