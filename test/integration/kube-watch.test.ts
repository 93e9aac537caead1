// The list/watch client against the fake API server (real sockets on loopback): pagination,
// events, bookmarks, resume from the last resourceVersion, 410 re-list, resets and errors with
// backoff, bad and oversized lines, version discovery, token rotation and HTTPS.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { KubeClient, LineSplitter } from '../../src/kube/client';
import type { KubeConnection } from '../../src/kube/connection';
import { backoffDelay, Reflector, type ReflectorTuning, type WatchTarget } from '../../src/kube/reflector';
import { KUBE_TYPES } from '../../src/sources/kubernetes';
import { FakeKubeApi, type KubeObj } from '../helpers/fake-kube-api';
import { makeCa, makeLeaf } from '../helpers/certs';
import { waitFor } from '../helpers/upstream';

const log = pino({ level: process.env['MESHGATE_TEST_LOG'] ?? 'silent' });
const FAST: ReflectorTuning = { pageSize: 500, watchTimeoutSeconds: 60, backoffInitialMs: 20, backoffMaxMs: 200, rediscoverMs: 200 };

const vs = (name: string, hosts: string[], ns = 'default'): KubeObj => ({ kind: 'VirtualService', metadata: { name, namespace: ns }, spec: { hosts } });

describe('Kubernetes list/watch client (against the fake API server)', function () {
  this.timeout(10_000);
  let fake: FakeKubeApi;
  let client: KubeClient | undefined;
  const reflectors: Reflector[] = [];
  let changes = 0;

  async function reflect(target: WatchTarget, tuning: Partial<ReflectorTuning> = {}, conn?: Partial<KubeConnection>, clientOpts = {}): Promise<Reflector> {
    client ??= new KubeClient({ server: fake.url, insecureSkipTlsVerify: false, describe: 'test', ...conn }, { requestTimeoutMs: 2000, ...clientOpts });
    const r = new Reflector(client, target, { onChange: () => { changes += 1; }, onSynced: () => undefined }, log, { ...FAST, ...tuning });
    reflectors.push(r);
    r.start();
    await waitFor(() => r.synced, { timeoutMs: 3000, intervalMs: 5 });
    return r;
  }

  const names = (r: Reflector) => [...r.objects.values()].map((o) => o.metadata?.name).sort();

  beforeEach(async () => {
    fake = await new FakeKubeApi().start();
    changes = 0;
  });

  afterEach(async () => {
    await Promise.all(reflectors.splice(0).map((r) => r.stop()));
    await client?.close();
    client = undefined;
    await fake.close();
  });

  it('lists page by page (limit/continue), then sees ADDED, MODIFIED and DELETED live', async () => {
    for (let i = 0; i < 5; i++) fake.upsert(vs(`vs-${i}`, [`h${i}`]));
    const r = await reflect({ type: KUBE_TYPES.VirtualService }, { pageSize: 2 });
    assert.deepEqual(names(r), ['vs-0', 'vs-1', 'vs-2', 'vs-3', 'vs-4']);
    const lists = fake.requests.filter((q) => !q.watch && q.path.endsWith('/virtualservices'));
    assert.deepEqual(lists.map((q) => Boolean(q.query['continue'])), [false, true, true], 'three pages of at most 2');
    assert.equal(r.version, 'v1');
    await waitFor(() => fake.openWatches('VirtualService') === 1, { timeoutMs: 2000, intervalMs: 5 });
    const watch = fake.requests.find((q) => q.watch)!;
    assert.equal(watch.query['allowWatchBookmarks'], 'true');
    assert.equal(watch.query['resourceVersion'], '6', 'the watch starts at the list\'s resourceVersion');
    const timeout = Number(watch.query['timeoutSeconds']);
    assert.ok(Number.isInteger(timeout) && timeout >= 60 && timeout < 120, `timeoutSeconds ${timeout}: the minimum 60 to twice it, at random`);
    fake.upsert(vs('vs-5', ['h5']));
    fake.upsert(vs('vs-0', ['changed']));
    fake.remove('VirtualService', 'default', 'vs-1');
    await waitFor(() => names(r).join() === 'vs-0,vs-2,vs-3,vs-4,vs-5', { timeoutMs: 2000, intervalMs: 5 });
    assert.deepEqual((r.objects.get('default/vs-0')?.['spec'] as { hosts: string[] }).hosts, ['changed']);
    assert.ok(changes >= 3, `onChange for each event after the first sync (${changes})`);
  });

  it('a namespace and a field selector narrow the list and the watch', async () => {
    fake.upsert({ kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh: 'a: 1' } });
    fake.upsert({ kind: 'ConfigMap', metadata: { name: 'other', namespace: 'istio-system' }, data: {} });
    fake.upsert({ kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'default' }, data: {} });
    const r = await reflect({ type: KUBE_TYPES.ConfigMap, namespace: 'istio-system', fieldSelector: 'metadata.name=istio' });
    assert.deepEqual([...r.objects.keys()], ['istio-system/istio']);
    assert.ok(fake.requests.some((q) => q.path === '/api/v1/namespaces/istio-system/configmaps' && q.query['fieldSelector'] === 'metadata.name=istio'));
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    fake.upsert({ kind: 'ConfigMap', metadata: { name: 'other', namespace: 'istio-system' }, data: { x: 'y' } });
    fake.upsert({ kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh: 'a: 2' } });
    await waitFor(() => (r.objects.get('istio-system/istio')?.['data'] as { mesh: string }).mesh === 'a: 2', { timeoutMs: 2000, intervalMs: 5 });
    assert.equal(r.objects.size, 1);
  });

  it('a slimmed object whose kept fields did not change is no change (Pod status churn)', async () => {
    const pod = (labels: Record<string, string>, phase: string): KubeObj => ({ kind: 'Pod', metadata: { name: 'p', namespace: 'default', labels }, status: { phase, podIP: '10.0.0.1' } });
    fake.upsert(pod({ app: 'a' }, 'Pending'));
    const r = await reflect({ type: KUBE_TYPES.Pod, slim: (o) => ({ metadata: { name: o.metadata?.name, labels: o.metadata?.['labels'] } }) });
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    changes = 0;
    fake.upsert(pod({ app: 'a' }, 'Running'));
    fake.upsert(pod({ app: 'b' }, 'Running'));
    await waitFor(() => (r.objects.get('default/p')?.metadata?.['labels'] as Record<string, string>).app === 'b', { timeoutMs: 2000, intervalMs: 5 });
    assert.equal(changes, 1, 'only the label change is a change');
  });

  it('a graceful close (timeoutSeconds) resumes from the last resourceVersion, moved on by bookmarks, without listing again', async () => {
    fake.upsert(vs('a', ['a']));
    const r = await reflect({ type: KUBE_TYPES.VirtualService }, { watchTimeoutSeconds: 1 });
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    fake.upsert({ kind: 'Service', metadata: { name: 'unrelated' }, spec: {} }); // moves the global resourceVersion on
    fake.bookmark();
    const rvAfterBookmark = fake.resourceVersion;
    await waitFor(() => fake.count((q) => q.watch) >= 2, { timeoutMs: 3000, intervalMs: 10 });
    const second = fake.requests.filter((q) => q.watch)[1]!;
    assert.equal(second.query['resourceVersion'], rvAfterBookmark, 'resumed from the bookmark');
    fake.upsert(vs('b', ['b']));
    await waitFor(() => r.objects.has('default/b'), { timeoutMs: 2000, intervalMs: 5 });
    assert.equal(r.stats.lists, 1, 'no second list');
    assert.equal(r.stats.errors, 0);
  });

  it('410 Gone (an ERROR event for a compacted resourceVersion, or the HTTP status) lists again and catches up', async () => {
    fake.upsert(vs('a', ['a']));
    const r = await reflect({ type: KUBE_TYPES.VirtualService });
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    fake.dropWatches('graceful');
    // While the client is away: a change, then the history is compacted past its resourceVersion.
    fake.hold(/watch=1/);
    await waitFor(() => fake.count((q) => q.watch) === 2, { timeoutMs: 2000, intervalMs: 5 });
    fake.upsert(vs('b', ['b']));
    fake.remove('VirtualService', 'default', 'a');
    fake.compact();
    fake.release();
    await waitFor(() => names(r).join() === 'b', { timeoutMs: 3000, intervalMs: 5 });
    assert.equal(r.stats.relistsOnGone, 1);
    assert.equal(r.stats.lists, 2);
    // The HTTP status form of 410 on a watch request.
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    fake.failNext(1, 410, /watch=1/);
    fake.dropWatches('graceful');
    await waitFor(() => r.stats.lists === 3, { timeoutMs: 3000, intervalMs: 5 });
    assert.equal(r.stats.relistsOnGone, 2);
  });

  it('a reset connection and failing requests back off and recover; nothing is lost', async () => {
    fake.upsert(vs('a', ['a']));
    const r = await reflect({ type: KUBE_TYPES.VirtualService });
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    fake.failNext(3, 500, /virtualservices/);
    const before = fake.requests.length;
    assert.equal(fake.dropWatches('reset'), 1);
    fake.upsert(vs('b', ['b']));
    await waitFor(() => r.objects.has('default/b'), { timeoutMs: 5000, intervalMs: 5 });
    assert.ok(r.stats.errors >= 4, `the reset and three 500s are errors (${r.stats.errors})`);
    assert.match(r.stats.lastError, /500 injected failure/);
    const retries = fake.requests.slice(before).filter((q) => q.path.endsWith('virtualservices'));
    assert.ok(retries.length >= 4 && retries.length < 20, `bounded retries (${retries.length})`);
  });

  it('a line that is not JSON, or longer than the limit, restarts the watch without a crash', async () => {
    fake.upsert(vs('a', ['a']));
    const r = await reflect({ type: KUBE_TYPES.VirtualService }, {}, {}, { maxEventBytes: 4096 });
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 2000, intervalMs: 5 });
    fake.writeRaw('{"type": "ADDED", "object": {not json}\n');
    // The new watch is open (not just the old one, whose close the fake may not have seen yet).
    await waitFor(() => r.stats.errors === 1 && fake.count((q) => q.watch) === 2 && fake.openWatches() === 1, { timeoutMs: 3000, intervalMs: 5 });
    assert.match(r.stats.lastError, /not JSON/);
    fake.writeRaw(`{"type":"ADDED","object":{"x":"${'y'.repeat(10_000)}`);
    await waitFor(() => r.stats.errors === 2 && fake.count((q) => q.watch) === 3 && fake.openWatches() === 1, { timeoutMs: 3000, intervalMs: 5 });
    assert.match(r.stats.lastError, /longer than 4096 bytes/);
    fake.upsert(vs('b', ['b']));
    await waitFor(() => r.objects.has('default/b'), { timeoutMs: 2000, intervalMs: 5 });
    assert.equal(r.stats.lists, 1, 'resumed from the last resourceVersion');
  });

  it('discovery: v1 not served -> v1beta1; no version served -> synced and empty, found later', async () => {
    fake.istioVersions = ['v1beta1', 'v1alpha3'];
    fake.upsert(vs('a', ['a']));
    const r = await reflect({ type: KUBE_TYPES.VirtualService });
    assert.equal(r.version, 'v1beta1');
    assert.ok(fake.requests.some((q) => q.path === '/apis/networking.istio.io/v1beta1/virtualservices' && !q.watch));
    assert.ok(!fake.requests.some((q) => q.path === '/apis/networking.istio.io/v1/virtualservices'));
    fake.istioVersions = [];
    const gw = await reflect({ type: KUBE_TYPES.Gateway });
    assert.equal(gw.version, undefined);
    assert.equal(gw.objects.size, 0);
    fake.istioVersions = ['v1alpha3'];
    fake.upsert({ kind: 'Gateway', metadata: { name: 'g' }, spec: { servers: [] } });
    await waitFor(() => gw.objects.size === 1, { timeoutMs: 3000, intervalMs: 10 });
    assert.equal(gw.version, 'v1alpha3');
  });

  it('a bearer token from a file is read again when it rotates', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-token-'));
    try {
      const tokenFile = path.join(dir, 'token');
      fs.writeFileSync(tokenFile, 'first\n');
      fake.token = 'first';
      fake.upsert(vs('a', ['a']));
      const r = await reflect({ type: KUBE_TYPES.VirtualService }, {}, { tokenFile }, { tokenRefreshMs: 50 });
      assert.ok(fake.requests.every((q) => q.authorization === 'Bearer first'));
      fake.token = 'second';
      fs.writeFileSync(tokenFile, 'second');
      fake.dropWatches('graceful');
      fake.upsert(vs('b', ['b']));
      await waitFor(() => r.objects.has('default/b'), { timeoutMs: 3000, intervalMs: 10 });
      assert.equal(fake.requests.at(-1)!.authorization, 'Bearer second');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('HTTPS with the cluster CA from the connection; a wrong CA is an error, retried', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-kube-tls-'));
    try {
      const ca = await makeCa(dir, 'fake-cluster-ca');
      const other = await makeCa(dir, 'other-ca');
      const leaf = await makeLeaf(dir, ca, 'apiserver', ['127.0.0.1', 'localhost']);
      await fake.close();
      fake = await new FakeKubeApi({ tls: { cert: leaf.cert, key: leaf.key }, token: 't' }).start();
      fake.upsert(vs('a', ['a']));
      const r = await reflect({ type: KUBE_TYPES.VirtualService }, {}, { ca: ca.cert, token: 't' });
      assert.deepEqual(names(r), ['a']);
      const bad = new KubeClient({ server: fake.url, ca: other.cert, token: 't', insecureSkipTlsVerify: false, describe: 'bad' }, { requestTimeoutMs: 2000 });
      await assert.rejects(bad.getJson('/api'), (err: Error & { status?: number }) => err.status === 0 && /certificate/i.test(err.message));
      await bad.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('watch stream pieces', () => {
  it('LineSplitter: lines across chunks, multi-byte characters split, blank lines skipped, bounded', () => {
    const s = new LineSplitter(16);
    const euro = Buffer.from('€');
    assert.deepEqual(s.push(Buffer.from('ab\ncd')), ['ab']);
    assert.deepEqual(s.push(Buffer.concat([Buffer.from('e'), euro.subarray(0, 1)])), []);
    assert.deepEqual(s.push(Buffer.concat([euro.subarray(1), Buffer.from('\n\n\nxy\n')])), ['cde€', 'xy']);
    assert.throws(() => s.push(Buffer.from('0123456789abcdefXYZ')), /longer than 16 bytes/);
  });

  it('backoff: exponential from the initial delay to the cap, jittered within 50-100 %', () => {
    const t = { backoffInitialMs: 100, backoffMaxMs: 1000 };
    assert.deepEqual([0, 1, 2, 3, 4, 10, 100].map((n) => backoffDelay(n, t, () => 1)), [100, 200, 400, 800, 1000, 1000, 1000]);
    assert.deepEqual([0, 3].map((n) => backoffDelay(n, t, () => 0)), [50, 400]);
  });
});
