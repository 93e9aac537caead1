// ServiceEntry DNS resolution against a real DNS server on loopback.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import * as packet from 'dns-packet';
import { DnsResolver } from '../../src/serviceentry/dns';
import { TestDnsServer } from '../helpers/dns-server';
import { startGateway } from '../helpers/gateway';
import { httpGet, waitFor } from '../helpers/upstream';
import { startHttpbin } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';

/**
 * In front of the test DNS server: fails one record type of a name (the server fails whole names),
 * forwards the rest, and counts the questions by type.
 */
class TypeFailingProxy {
  private readonly socket = dgram.createSocket('udp4');
  private readonly failing = new Map<string, 'SERVFAIL' | 'timeout'>();
  readonly asked: string[] = [];
  port = 0;
  constructor(private readonly upstream: TestDnsServer) {}

  async start(): Promise<this> {
    this.socket.on('message', (msg, rinfo) => this.onQuery(msg, rinfo));
    await new Promise<void>((resolve) => this.socket.bind(0, '127.0.0.1', () => resolve()));
    this.port = this.socket.address().port;
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  fail(name: string, type: 'A' | 'AAAA', mode: 'SERVFAIL' | 'timeout' | undefined): void {
    if (mode) this.failing.set(`${name}/${type}`, mode);
    else this.failing.delete(`${name}/${type}`);
  }

  private onQuery(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const q = packet.decode(msg);
    const question = q.questions?.[0];
    if (!question) return;
    this.asked.push(`${question.name}/${question.type}`);
    const mode = this.failing.get(`${question.name.toLowerCase()}/${question.type}`);
    if (mode === 'timeout') return;
    if (mode === 'SERVFAIL') {
      const reply = packet.encode({ id: q.id, type: 'response', flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | 2, questions: q.questions, answers: [] });
      this.socket.send(reply, rinfo.port, rinfo.address);
      return;
    }
    const out = dgram.createSocket('udp4');
    out.on('message', (reply) => {
      this.socket.send(reply, rinfo.port, rinfo.address);
      out.close();
    });
    out.send(msg, this.upstream.port, '127.0.0.1');
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

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

  it('dual stack (family both) resolves A and AAAA with the record TTL', async () => {
    dns.setRecords('svc.test', { a: ['10.0.0.1'], aaaa: ['fd00::1'], ttl: 1 });
    const ans = await resolver({ family: 'both' }).resolveOnce('svc.test');
    assert.deepEqual(ans.addresses, ['10.0.0.1', 'fd00::1']);
    assert.equal(ans.ttlMs, 1000);
  });

  it("asks for A only by default (Istio's V4_ONLY for an IPv4 proxy); v6 asks for AAAA only", async () => {
    const proxy = await new TypeFailingProxy(dns).start();
    try {
      dns.setRecords('svc.test', { a: ['10.0.0.1'], aaaa: ['fd00::1'], ttl: 1 });
      assert.deepEqual((await resolver({ servers: [proxy.address] }).resolveOnce('svc.test')).addresses, ['10.0.0.1']);
      assert.deepEqual(proxy.asked, ['svc.test/A']);
      assert.deepEqual((await resolver({ servers: [proxy.address], family: 'v6' }).resolveOnce('svc.test')).addresses, ['fd00::1']);
      assert.deepEqual(proxy.asked, ['svc.test/A', 'svc.test/AAAA']);
    } finally {
      await proxy.close();
    }
  });

  for (const mode of ['SERVFAIL', 'timeout'] as const) {
    it(`dual stack: an A query that fails (${mode}) while AAAA answers keeps the last good IPv4 addresses`, async () => {
      const proxy = await new TypeFailingProxy(dns).start();
      try {
        dns.setRecords('ds.test', { a: ['10.0.0.1', '10.0.0.2'], aaaa: ['fd00::1'], ttl: 0 });
        const r = resolver({ servers: [proxy.address], family: 'both' });
        const seen: string[][] = [];
        r.watch('ds.test', (addrs) => seen.push([...addrs].sort()));
        await waitFor(() => seen.length === 1, { timeoutMs: 2000 });
        proxy.fail('ds.test', 'A', mode);
        dns.setRecords('ds.test', { a: ['10.0.0.1', '10.0.0.2'], aaaa: ['fd00::2'], ttl: 0 });
        await waitFor(() => (r.current('ds.test') ?? []).includes('fd00::2'), { timeoutMs: 4000 });
        const asked = proxy.asked.length;
        await waitFor(() => proxy.asked.length >= asked + 4, { timeoutMs: 6000 });
        assert.deepEqual([...r.current('ds.test')!].sort(), ['10.0.0.1', '10.0.0.2', 'fd00::2'], 'IPv4 kept, IPv6 followed');
        assert.ok(seen.every((s) => s.includes('10.0.0.1')), JSON.stringify(seen));
        assert.ok(r.stats()['ds.test']!.failures >= 1, 'the failed family counts as a failure');
        // A answers again, now with no A records (NODATA): the IPv4 addresses are really gone.
        proxy.fail('ds.test', 'A', undefined);
        dns.setRecords('ds.test', { a: [], aaaa: ['fd00::2'], ttl: 0 });
        await waitFor(() => r.current('ds.test')?.join() === 'fd00::2', { timeoutMs: 6000 });
      } finally {
        await proxy.close();
      }
    });
  }

  it('a watcher that throws is isolated: the others are told once, no failure is reported, refreshing goes on', async () => {
    dns.setRecords('l.test', { a: ['10.0.0.1'], ttl: 0 });
    const thrown: unknown[] = [];
    const r = resolver({ onListenerError: (_name, err) => thrown.push(err) });
    const seen: { addrs: string[]; error?: string }[] = [];
    r.watch('l.test', () => { throw new Error('listener bug'); });
    r.watch('l.test', (addrs, info) => seen.push({ addrs: [...addrs], ...(info.error ? { error: info.error.message } : {}) }));
    await waitFor(() => seen.length === 1, { timeoutMs: 2000 });
    dns.setRecords('l.test', { a: ['10.0.0.2'], ttl: 0 });
    await waitFor(() => seen.length === 2, { timeoutMs: 3000 });
    const q = dns.queries.get('l.test') ?? 0;
    await waitFor(() => (dns.queries.get('l.test') ?? 0) >= q + 3, { timeoutMs: 3000 });
    dns.setRecords('l.test', { a: ['10.0.0.3'], ttl: 0 });
    await waitFor(() => seen.length === 3, { timeoutMs: 3000 });
    assert.deepEqual(seen, [{ addrs: ['10.0.0.1'] }, { addrs: ['10.0.0.2'] }, { addrs: ['10.0.0.3'] }]);
    assert.equal(r.stats()['l.test']!.failures, 0);
    assert.equal(thrown.length, 3);
  });

  it('the gateway asks for IPv4 only unless told dual stack (dnsFamily)', async () => {
    for (const [opts, family] of [[{}, 'v4'], [{ dnsFamily: 'both' as const }, 'both']] as const) {
      const gw = await startGateway({}, { opts: { dnsServers: [dns.address], ...opts } });
      try {
        assert.equal(gw.app.dns.opts.family, family);
      } finally {
        await gw.stop();
      }
    }
  });

  it('clamps the TTL to the floor and the ceiling', async () => {
    dns.setRecords('zero.test', { a: ['10.0.0.1'], ttl: 0 });
    dns.setRecords('huge.test', { a: ['10.0.0.1'], ttl: 86400 });
    const r = resolver();
    assert.equal((await r.resolveOnce('zero.test')).ttlMs, 200);
    assert.equal((await r.resolveOnce('huge.test')).ttlMs, 2000);
  });

  it('re-queries on the TTL, reports a real change once and ignores a reordering (no pool churn)', async () => {
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

  // A deliberate difference from Envoy, which empties the cluster on NXDOMAIN: a resolver that
  // answers NXDOMAIN for a while (a broken search path, a DNS rollout) must not black-hole the service.
  it('a name answered NXDOMAIN keeps its last good addresses, as for any failed refresh', async () => {
    dns.setRecords('gone.test', { a: ['10.0.0.7'], ttl: 0 });
    const r = resolver();
    const errors: string[] = [];
    r.watch('gone.test', (_a, info) => { if (info.error) errors.push(info.error.message); });
    await waitFor(() => r.current('gone.test')?.length === 1, { timeoutMs: 2000 });
    dns.failWith('gone.test', 'NXDOMAIN');
    await waitFor(() => errors.length >= 1, { timeoutMs: 3000 });
    assert.deepEqual(r.current('gone.test'), ['10.0.0.7']);
    assert.ok((r.stats()['gone.test']?.failures ?? 0) >= 1, 'counted as a failure');
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
