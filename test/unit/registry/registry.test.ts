// The registry's bookkeeping against real upstreams on loopback: DNS watches follow the names the
// clusters use, pools of original-destination endpoints close once idle (and at most so many stay),
// and an endpoint change closes only the pools of endpoints that went away.

import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Dispatcher } from 'undici';
import { Registry, type NameResolver, type PoolOptions, type UpstreamPool } from '../../../src/registry/registry';
import type { ClusterDef, Snapshot } from '../../../src/config/snapshot';
import { waitFor } from '../../helpers/upstream';

/** A resolver the test answers for, that knows which names are watched. */
class FakeResolver implements NameResolver {
  readonly watchers = new Map<string, Set<(a: readonly string[]) => void>>();
  private readonly answers = new Map<string, string[]>();
  watch(name: string, onChange: (a: readonly string[]) => void): () => void {
    let set = this.watchers.get(name);
    if (!set) this.watchers.set(name, set = new Set());
    set.add(onChange);
    return () => {
      set!.delete(onChange);
      if (set!.size === 0) this.watchers.delete(name);
    };
  }
  current(name: string): readonly string[] | undefined {
    return this.answers.get(name);
  }
  answer(name: string, addresses: string[]): void {
    this.answers.set(name, addresses);
    for (const w of this.watchers.get(name) ?? []) w(addresses);
  }
}

function clusterDef(name: string, endpoints: { address: string; port: number }[]): ClusterDef {
  return {
    name, host: name, port: 80, service: { host: name, name, namespace: 'default' }, protocol: 'HTTP', resolution: 'DNS', lb: 'ROUND_ROBIN',
    connectTimeoutMs: 1000, endpoints: endpoints.map((e) => ({ ...e, labels: {}, weight: 1 })), policy: {},
    breaker: { maxConnections: 4294967295, maxPendingRequests: 4294967295, maxRequests: 4294967295, maxRetries: 4294967295, maxRequestsPerConnection: 0, idleTimeoutMs: 3_600_000 },
  };
}
function snapshot(...defs: ClusterDef[]): Snapshot {
  return { mesh: { connectTimeoutMs: 10_000 }, clusters: new Map(defs.map((d) => [d.name, d])), listeners: new Map() } as unknown as Snapshot;
}

/** An HTTP/1.1 upstream that counts its open connections; `/slow` answers after 500 ms. */
async function upstream(): Promise<{ port: number; open: () => number; close: () => Promise<void> }> {
  let open = 0;
  const server = http.createServer((req, res) => {
    const answer = () => res.end('ok');
    if (req.url === '/slow') setTimeout(answer, 500);
    else answer();
  });
  server.keepAliveTimeout = 3_600_000;
  server.on('connection', (s) => {
    open += 1;
    s.on('close', () => { open -= 1; });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    open: () => open,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** GET through a pool; resolves with status and body. */
function get(pool: UpstreamPool, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let body = '';
    const handler: Dispatcher.DispatchHandler = {
      onConnect: () => {},
      onHeaders: (s) => { status = s; return true; },
      onData: (chunk) => { body += chunk.toString(); return true; },
      onComplete: () => resolve({ status, body }),
      onError: reject,
    };
    pool.dispatch({ path, method: 'GET', headers: { host: 'upstream' }, body: null, upgrade: null, headersTimeout: 0, bodyTimeout: 0 }, handler);
  });
}

const poolOptions: PoolOptions = { connectTimeoutMs: 1000, idleTimeoutMs: 3_600_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('registry', function () {
  this.timeout(20_000);
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });
  const registry = (resolver?: NameResolver, options = {}) => {
    const r = new Registry(resolver, Math.random, {}, options);
    closers.push(() => r.close());
    return r;
  };
  const server = async () => {
    const s = await upstream();
    closers.push(s.close);
    return s;
  };

  it("an inbound cluster is named by its port's Service in metrics, following reloads", () => {
    const r = registry();
    const withInbound = (service?: { host: string; name: string; namespace: string }) => ({
      ...snapshot(),
      listeners: new Map([[15006, { inbound: { ports: new Map(service ? [[8080, { http: true, service }]] : []) } }]]),
    }) as unknown as Snapshot;
    const web = { host: 'web.default.svc.cluster.local', name: 'web', namespace: 'default' };
    r.reconcile(withInbound(web));
    assert.deepEqual(r.passthrough('inbound|8080||').def.service, web);
    assert.deepEqual(r.passthrough('InboundPassthroughCluster').def.service, { host: 'InboundPassthroughCluster', name: 'InboundPassthroughCluster', namespace: 'unknown' });
    const api = { host: 'api.default.svc.cluster.local', name: 'api', namespace: 'default' };
    r.reconcile(withInbound(api));
    assert.deepEqual(r.passthrough('inbound|8080||').def.service, api, 'the kept cluster follows the reload');
    r.reconcile(withInbound());
    assert.equal(r.passthrough('inbound|8080||').def.service.host, 'inbound|8080||');
  });

  describe('DNS watches', () => {
    it('a name no cluster uses any more is no longer watched (a.example -> b.example -> c.example)', () => {
      const dns = new FakeResolver();
      const r = registry(dns);
      for (const name of ['a.example', 'b.example', 'c.example']) r.reconcile(snapshot(clusterDef('ext', [{ address: name, port: 80 }])));
      assert.deepEqual([...dns.watchers.keys()], ['c.example']);
    });

    it('a name two clusters use is watched until neither does', () => {
      const dns = new FakeResolver();
      const r = registry(dns);
      const one = (name: string) => clusterDef('one', [{ address: name, port: 80 }]);
      const two = (name: string) => clusterDef('two', [{ address: name, port: 80 }]);
      r.reconcile(snapshot(one('shared.example'), two('shared.example')));
      r.reconcile(snapshot(one('other.example'), two('shared.example')));
      assert.deepEqual([...dns.watchers.keys()].sort(), ['other.example', 'shared.example']);
      r.reconcile(snapshot(one('other.example'), two('other.example')));
      assert.deepEqual([...dns.watchers.keys()], ['other.example']);
      r.reconcile(snapshot());
      assert.deepEqual([...dns.watchers.keys()], []);
    });
  });

  // A DestinationRule connectionPool edit changes a cluster's pool options: the endpoint stays, so
  // its old pool is not released with it; unused since the reload, it is closed once idle.
  it("a reload that changes a cluster's pool options closes the old pool once idle; the one in use stays", async () => {
    const up = await server();
    const r = registry(undefined, { adHocIdleMs: 150 });
    const def = clusterDef('c', [{ address: '127.0.0.1', port: up.port }]);
    r.reconcile(snapshot(def));
    const e = r.get('c')!.endpoints[0]!;
    assert.equal((await get(r.pool(e, poolOptions))).status, 200);
    r.reconcile(snapshot({ ...def, idleTimeoutMs: 30_000 }));
    const tuned: PoolOptions = { ...poolOptions, idleTimeoutMs: 30_000 };
    const t0 = Date.now();
    while (Date.now() - t0 < 600) {
      assert.equal((await get(r.pool(e, tuned))).status, 200);
      await sleep(25);
    }
    assert.equal(r.sizes().pools, 1, 'the pool of the old options is gone');
    assert.equal(up.open(), 1, 'its connection closed; the current pool keeps its own');
  });

  describe('pools of original-destination endpoints', () => {
    it('close once idle for adHocIdleMs (the upstream sees the kept-alive connection closed)', async () => {
      const up = await server();
      const r = registry(undefined, { adHocIdleMs: 150 });
      const e = r.endpointFor('127.0.0.1', up.port);
      assert.equal((await get(r.pool(e, poolOptions))).status, 200);
      assert.equal(up.open(), 1, 'kept alive after the request');
      await waitFor(() => up.open() === 0, { timeoutMs: 3000 });
      const s = r.sizes();
      assert.equal(s.pools, 0);
      assert.equal(s.adHocPools, 0);
    });

    it('a pool with a request in flight is not closed, however long the request takes', async () => {
      const up = await server();
      const r = registry(undefined, { adHocIdleMs: 100 });
      const e = r.endpointFor('127.0.0.1', up.port);
      const pool = r.pool(e, poolOptions);
      const res = await get(pool, '/slow');
      assert.deepEqual(res, { status: 200, body: 'ok' });
      assert.equal(r.pool(e, poolOptions), pool, 'the same pool: it was not dropped while busy');
      assert.equal(up.open(), 1);
    });

    it('at most maxIdleAdHocPools idle pools stay open: the least recently used close first', async () => {
      const ups: Awaited<ReturnType<typeof upstream>>[] = [];
      for (let i = 0; i < 8; i++) ups.push(await server());
      const r = registry(undefined, { maxIdleAdHocPools: 3, adHocIdleMs: 60_000 });
      for (const up of ups) assert.equal((await get(r.pool(r.endpointFor('127.0.0.1', up.port), poolOptions))).status, 200);
      await waitFor(() => ups.reduce((n, u) => n + u.open(), 0) === 3, { timeoutMs: 3000 });
      assert.deepEqual(ups.map((u) => u.open()), [0, 0, 0, 0, 0, 1, 1, 1]);
      assert.equal(r.sizes().adHocPools, 3);
    });

    it('connection counters of an endpoint nothing uses are forgotten once idle; active ones stay', async () => {
      const r = registry(undefined, { adHocIdleMs: 100 });
      const idle = r.connectionStats('192.0.2.1:80');
      idle.cxTotal = 5;
      const busy = r.connectionStats('192.0.2.2:80');
      busy.cxTotal = 7;
      busy.cxActive = 1;
      await sleep(400);
      assert.equal(r.connectionStats('192.0.2.1:80').cxTotal, 0, 'forgotten, so a new entry');
      assert.equal(r.connectionStats('192.0.2.2:80'), busy);
      assert.equal(r.sizes().connectionStats, 2);
    });
  });

  describe('endpoint changes', () => {
    it("a DNS change closes the pools of the endpoints that went away, not passthrough ones nor those that stay", async () => {
      const clusterUp = await server();
      const stayUp = await server();
      const passUp = await server();
      const dns = new FakeResolver();
      dns.answer('ext.example', ['127.0.0.1']);
      const r = registry(dns);
      r.reconcile(snapshot(
        clusterDef('ext', [{ address: 'ext.example', port: clusterUp.port }]),
        clusterDef('static', [{ address: '127.0.0.1', port: stayUp.port }]),
      ));
      await get(r.pool(r.get('ext')!.endpoints[0]!, poolOptions));
      await get(r.pool(r.get('static')!.endpoints[0]!, poolOptions));
      await get(r.pool(r.endpointFor('127.0.0.1', passUp.port), poolOptions));
      assert.deepEqual([clusterUp.open(), stayUp.open(), passUp.open()], [1, 1, 1]);
      dns.answer('ext.example', ['127.0.0.1']); // a refresh with the same answer (or a failed one)
      await sleep(200);
      assert.deepEqual([clusterUp.open(), stayUp.open(), passUp.open()], [1, 1, 1], 'nothing changed, nothing closed');
      dns.answer('ext.example', ['127.0.0.2']);
      await waitFor(() => clusterUp.open() === 0, { timeoutMs: 3000 });
      await sleep(200);
      assert.deepEqual([stayUp.open(), passUp.open()], [1, 1], 'the static and the passthrough endpoints keep their connections');
      assert.equal(r.get('ext')!.endpoints[0]!.address, '127.0.0.2');
    });
  });
});
