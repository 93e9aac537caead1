// ServiceEntry DNS resolution against a real DNS server on loopback.

import assert from 'node:assert/strict';
import { DnsResolver } from '../../src/serviceentry/dns';
import { TestDnsServer } from '../helpers/dns-server';
import { startGateway } from '../helpers/gateway';
import { httpGet, waitFor } from '../helpers/upstream';
import { startHttpbin } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

describe('DNS resolution for ServiceEntries', function () {
  this.timeout(30_000);
  let dns: TestDnsServer;
  const resolvers: DnsResolver[] = [];
  const resolver = (o: ConstructorParameters<typeof DnsResolver>[0] = {}) => {
    const r = new DnsResolver({ servers: [dns.address], timeoutMs: 300, tries: 1, deadlineMs: 800, minTtlMs: 200, maxTtlMs: 2000, ...o });
    resolvers.push(r);
    return r;
  };

  beforeEach(async () => {
    dns = await new TestDnsServer().start();
  });
  afterEach(async () => {
    for (const r of resolvers.splice(0)) r.close();
    await dns.close();
  });

  it('resolves A and AAAA with the record TTL', async () => {
    dns.setRecords('svc.test', { a: ['10.0.0.1'], aaaa: ['fd00::1'], ttl: 1 });
    const ans = await resolver().resolveOnce('svc.test');
    assert.deepEqual(ans.addresses, ['10.0.0.1', 'fd00::1']);
    assert.equal(ans.ttlMs, 1000);
  });

  it('clamps the TTL to the floor and the ceiling', async () => {
    dns.setRecords('zero.test', { a: ['10.0.0.1'], ttl: 0 });
    dns.setRecords('huge.test', { a: ['10.0.0.1'], ttl: 86400 });
    const r = resolver();
    assert.equal((await r.resolveOnce('zero.test')).ttlMs, 200);
    assert.equal((await r.resolveOnce('huge.test')).ttlMs, 2000);
  });

  it('re-queries on the TTL, reports a real change once and ignores a reordering', async () => {
    dns.setRecords('w.test', { a: ['10.0.0.1', '10.0.0.2'], ttl: 0 });
    const changes: string[][] = [];
    resolver().watch('w.test', (addrs, info) => { if (!info.error) changes.push([...addrs]); });
    await waitFor(() => changes.length === 1, { timeoutMs: 2000 });
    dns.setRecords('w.test', { a: ['10.0.0.2', '10.0.0.1'], ttl: 0 });
    const q = dns.queries.get('w.test') ?? 0;
    await waitFor(() => (dns.queries.get('w.test') ?? 0) >= q + 4, { timeoutMs: 3000 });
    assert.equal(changes.length, 1, 'a reordered answer is not a change');
    dns.setRecords('w.test', { a: ['10.0.0.3'], ttl: 0 });
    await waitFor(() => changes.length === 2, { timeoutMs: 2000 });
    assert.deepEqual(changes[1], ['10.0.0.3']);
  });

  it('keeps the last good answer when the server fails, and reports the error', async () => {
    dns.setRecords('f.test', { a: ['10.0.0.9'], ttl: 0 });
    const r = resolver();
    const errors: string[] = [];
    r.watch('f.test', (_a, info) => { if (info.error) errors.push(info.error.message); });
    await waitFor(() => r.current('f.test')?.length === 1, { timeoutMs: 2000 });
    dns.failWith('f.test', 'SERVFAIL');
    await waitFor(() => errors.length >= 1, { timeoutMs: 3000 });
    assert.deepEqual(r.current('f.test'), ['10.0.0.9']);
  });

  it('bounds a lookup the server never answers', async () => {
    dns.failWith('slow.test', 'timeout');
    const t0 = Date.now();
    await assert.rejects(resolver().resolveOnce('slow.test'));
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
  });

  it('IP literals and localhost need no query', async () => {
    const r = resolver();
    assert.deepEqual((await r.resolveOnce('10.1.2.3')).addresses, ['10.1.2.3']);
    assert.deepEqual((await r.resolveOnce('localhost')).addresses, ['127.0.0.1']);
    assert.equal(dns.queries.size, 0);
  });

  it('a DNS ServiceEntry routes to the resolved address, follows a change, and keeps it when DNS fails', async () => {
    const first = await startHttpbin({ name: 'first', host: '127.0.0.1' });
    // The same port on another loopback address: only the DNS answer tells them apart.
    const second = await startHttpbin({ name: 'second', host: '127.0.0.2', port: first.port });
    dns.setRecords('ext.example.org', { a: ['127.0.0.1'], ttl: 0 });
    const gw = await startGateway({
      'se.yaml': singleRouteYaml({ upstreamPort: first.port, host: 'ext.example.org', resolution: 'DNS' }),
    }, { opts: { dnsServers: [dns.address] } });
    const servedBy = async () => String((await httpGet(gw.port(80), '/get')).headers['x-served-by']);
    try {
      await waitFor(async () => (await servedBy()) === 'first', { timeoutMs: 3000 });
      dns.setRecords('ext.example.org', { a: ['127.0.0.2'], ttl: 0 });
      await waitFor(async () => (await servedBy()) === 'second', { timeoutMs: 5000 });
      const q = dns.queries.get('ext.example.org') ?? 0;
      dns.failWith('ext.example.org', 'SERVFAIL');
      await waitFor(() => (dns.queries.get('ext.example.org') ?? 0) >= q + 2, { timeoutMs: 5000 });
      assert.equal(await servedBy(), 'second', 'after a failed refresh the last good answer is kept');
    } finally {
      await gw.stop();
      await first.close();
      await second.close();
    }
  });
});
