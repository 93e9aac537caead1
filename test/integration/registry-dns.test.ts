// The registry on the real DNS resolver against the test DNS server: a name no cluster uses any
// more stops being resolved at all (no more queries), while the name in use keeps refreshing.

import assert from 'node:assert/strict';
import { DnsResolver } from '../../src/serviceentry/dns';
import { Registry } from '../../src/registry/registry';
import type { ClusterDef, Snapshot } from '../../src/config/snapshot';
import { TestDnsServer } from '../helpers/dns-server';
import { waitFor } from '../helpers/upstream';

function snapshot(host: string, resolution: ClusterDef['resolution'] = 'DNS'): Snapshot {
  const def: ClusterDef = {
    name: 'outbound|80||ext', host: 'ext', port: 80, service: { host: 'ext', name: 'ext', namespace: 'default' }, protocol: 'HTTP', resolution, lb: 'ROUND_ROBIN',
    connectTimeoutMs: 1000, endpoints: [{ address: host, port: 80, labels: {}, weight: 1 }], policy: {},
    breaker: { maxConnections: 4294967295, maxPendingRequests: 4294967295, maxRequests: 4294967295, maxRetries: 4294967295, maxRequestsPerConnection: 0, idleTimeoutMs: 3_600_000 },
  };
  return { mesh: { connectTimeoutMs: 10_000 }, clusters: new Map([[def.name, def]]), listeners: new Map() } as unknown as Snapshot;
}

describe('registry DNS watches on the real resolver', function () {
  this.timeout(20_000);

  it('a cluster moved a.example -> b.example -> c.example resolves only c.example', async () => {
    const dns = await new TestDnsServer().start();
    const resolver = new DnsResolver({ servers: [dns.address], timeoutMs: 300, tries: 1, deadlineMs: 800, minTtlMs: 100, maxTtlMs: 1000 });
    const registry = new Registry({
      watch: (name, onChange) => resolver.watch(name, (addrs) => onChange(addrs)),
      current: (name) => resolver.current(name),
    });
    try {
      dns.setRecords('a.example', { a: ['10.0.0.1'], ttl: 0 });
      dns.setRecords('b.example', { a: ['10.0.0.2'], ttl: 0 });
      dns.setRecords('c.example', { a: ['10.0.0.3'], ttl: 0 });
      const cluster = () => registry.get('outbound|80||ext')!;
      for (const [name, ip] of [['a.example', '10.0.0.1'], ['b.example', '10.0.0.2'], ['c.example', '10.0.0.3']] as const) {
        registry.reconcile(snapshot(name));
        await waitFor(() => cluster().endpoints[0]?.address === ip, { timeoutMs: 3000 });
      }
      assert.deepEqual(Object.keys(resolver.stats()), ['c.example']);
      const before = { a: dns.queries.get('a.example'), b: dns.queries.get('b.example'), c: dns.queries.get('c.example') ?? 0 };
      await waitFor(() => (dns.queries.get('c.example') ?? 0) >= before.c + 4, { timeoutMs: 5000 });
      assert.equal(dns.queries.get('a.example'), before.a, 'a.example is no longer queried');
      assert.equal(dns.queries.get('b.example'), before.b, 'b.example is no longer queried');
    } finally {
      await registry.close();
      resolver.close();
      await dns.close();
    }
  });

  // The "no connection-pool churn when the answer only reorders", for both resolutions.
  it('a reordered answer changes nothing: DNS_ROUND_ROBIN keeps its address, DNS its endpoints', async () => {
    const dns = await new TestDnsServer().start();
    const resolver = new DnsResolver({ servers: [dns.address], timeoutMs: 300, tries: 1, deadlineMs: 800, minTtlMs: 100, maxTtlMs: 1000 });
    const changed: string[] = [];
    const registry = (resolution: ClusterDef['resolution']) => {
      const r = new Registry({
        watch: (name, onChange) => resolver.watch(name, (addrs) => onChange(addrs)),
        current: (name) => resolver.current(name),
      }, Math.random, { onEndpointsChanged: (c) => changed.push(`${resolution} ${c.endpoints.map((e) => e.address).join(',')}`) });
      r.reconcile(snapshot('rr.example', resolution));
      return r;
    };
    const logical = registry('DNS_ROUND_ROBIN');
    const strict = registry('DNS');
    try {
      dns.setRecords('rr.example', { a: ['10.0.0.1', '10.0.0.2'], ttl: 0 });
      const first = () => logical.get('outbound|80||ext')!.endpoints.map((e) => e.address);
      await waitFor(() => first()[0] === '10.0.0.1', { timeoutMs: 3000 });
      assert.deepEqual(first(), ['10.0.0.1'], 'one endpoint: the first address');
      const strictEndpoints = strict.get('outbound|80||ext')!.endpoints;
      assert.equal(strictEndpoints.length, 2);
      const logicalEndpoints = logical.get('outbound|80||ext')!.endpoints;
      changed.length = 0;
      dns.setRecords('rr.example', { a: ['10.0.0.2', '10.0.0.1'], ttl: 0 });
      const q = dns.queries.get('rr.example') ?? 0;
      await waitFor(() => (dns.queries.get('rr.example') ?? 0) >= q + 4, { timeoutMs: 3000 });
      assert.equal(logical.get('outbound|80||ext')!.endpoints, logicalEndpoints, 'DNS_ROUND_ROBIN keeps 10.0.0.1');
      assert.equal(strict.get('outbound|80||ext')!.endpoints, strictEndpoints, 'the same set: DNS endpoints untouched');
      assert.deepEqual(changed, []);
      // A real change moves both.
      dns.setRecords('rr.example', { a: ['10.0.0.3', '10.0.0.1'], ttl: 0 });
      await waitFor(() => first()[0] === '10.0.0.3', { timeoutMs: 3000 });
      assert.equal(strict.get('outbound|80||ext')!.endpoints.length, 2);
    } finally {
      await logical.close();
      await strict.close();
      resolver.close();
      await dns.close();
    }
  });
});
