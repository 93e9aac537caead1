// The API client against loopback servers: a kubeconfig server with a path (Rancher's proxy) puts
// every API path under it; a 401 makes the client read a rotated token file again at once; watch
// timeouts are spread between the minimum and twice it.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { KubeApiError, KubeClient, splitServer } from '../../../src/kube/client';
import { parseKubeconfig } from '../../../src/kube/connection';
import { Reflector, watchTimeout, type ReflectorTuning } from '../../../src/kube/reflector';
import { KUBE_TYPES } from '../../../src/sources/kubernetes';
import { makeCa, makeLeaf } from '../../helpers/certs';
import { FakeKubeApi } from '../../helpers/fake-kube-api';
import { waitFor } from '../../helpers/upstream';

const log = pino({ level: process.env['MESHGATE_TEST_LOG'] ?? 'silent' });
const FAST: ReflectorTuning = { pageSize: 500, watchTimeoutSeconds: 60, backoffInitialMs: 20, backoffMaxMs: 200, rediscoverMs: 200 };
const PREFIX = '/k8s/clusters/c-abc';

/** A one-context kubeconfig; `clusterExtra` adds lines to the cluster (indented by the caller). */
const kubeconfig = (server: string, clusterExtra = '') => `apiVersion: v1
kind: Config
current-context: c
contexts:
- name: c
  context: { cluster: k, user: u }
clusters:
- name: k
  cluster:
    server: ${server}
${clusterExtra}users:
- name: u
  user:
    token: t
`;

describe('Kubernetes API client: a server with a path (client-go: the base of every API path)', function () {
  this.timeout(10_000);
  let server: http.Server;
  let port = 0;
  const seen: string[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      seen.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"kind":"APIVersions","versions":["v1"]}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('splitServer: the origin to connect to and the base path, without a trailing slash (table)', () => {
    const cases: [string, { origin: string; basePath: string }][] = [
      ['https://10.0.0.1:6443', { origin: 'https://10.0.0.1:6443', basePath: '' }],
      ['https://api.example:443/', { origin: 'https://api.example', basePath: '' }],
      ['https://rancher.example.com/k8s/clusters/c-abc', { origin: 'https://rancher.example.com', basePath: PREFIX }],
      ['https://rancher.example.com:8443/k8s/clusters/c-abc/', { origin: 'https://rancher.example.com:8443', basePath: PREFIX }],
      ['http://[::1]:8080/proxy', { origin: 'http://[::1]:8080', basePath: '/proxy' }],
    ];
    for (const [s, want] of cases) assert.deepEqual(splitServer(s), want, s);
    for (const bad of ['10.0.0.1:6443', 'ftp://x/', 'https://x/p?q=1']) assert.throws(() => splitServer(bad), /API server address/, bad);
  });

  it(`a get of /api with server http://127.0.0.1:P${PREFIX} (from a kubeconfig) reaches ${PREFIX}/api`, async () => {
    for (const suffix of ['', '/']) {
      seen.length = 0;
      const conn = parseKubeconfig(kubeconfig(`http://127.0.0.1:${port}${PREFIX}${suffix}`), '/k/config', () => undefined);
      const client = new KubeClient(conn, { requestTimeoutMs: 2000 });
      try {
        assert.deepEqual(await client.getJson('/api'), { kind: 'APIVersions', versions: ['v1'] });
        await client.getJson('/apis/networking.istio.io/v1/virtualservices?limit=1');
      } finally {
        await client.close();
      }
      assert.deepEqual(seen, [`${PREFIX}/api`, `${PREFIX}/apis/networking.istio.io/v1/virtualservices?limit=1`], `server ending in "${suffix}"`);
    }
  });

  it('a reflector lists, discovers and watches through the prefix (fake API served only under it)', async () => {
    const fake = await new FakeKubeApi({ pathPrefix: PREFIX }).start();
    const client = new KubeClient(parseKubeconfig(kubeconfig(fake.url), '/k/config', () => undefined), { requestTimeoutMs: 2000 });
    const r = new Reflector(client, { type: KUBE_TYPES.VirtualService }, { onChange: () => undefined, onSynced: () => undefined }, log, FAST);
    try {
      fake.upsert({ kind: 'VirtualService', metadata: { name: 'a' }, spec: { hosts: ['a'] } });
      r.start();
      await waitFor(() => r.synced, { timeoutMs: 3000, intervalMs: 5 });
      fake.upsert({ kind: 'VirtualService', metadata: { name: 'b' }, spec: { hosts: ['b'] } });
      await waitFor(() => r.objects.has('default/b'), { timeoutMs: 3000, intervalMs: 5 });
      assert.equal(r.stats.errors, 0, r.stats.lastError);
      assert.ok(fake.requests.length >= 3);
      assert.ok(fake.requests.every((q) => q.rawPath === `${PREFIX}${q.path}`), JSON.stringify(fake.requests.map((q) => q.rawPath)));
    } finally {
      await r.stop();
      await client.close();
      await fake.close();
    }
  });
});

describe('Kubernetes API client: kubeconfig tls-server-name (SNI and the name the certificate is checked for)', function () {
  this.timeout(20_000);
  const API_NAME = 'kubernetes.default.svc';
  let dir: string;
  let caPem: string;
  let fake: FakeKubeApi;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-kube-sni-'));
    const ca = await makeCa(dir, 'kube-ca');
    // The certificate names only the in-cluster service name: not 127.0.0.1, not localhost.
    const leaf = await makeLeaf(dir, ca, 'apiserver', [API_NAME]);
    caPem = ca.cert;
    fake = await new FakeKubeApi({ tls: { cert: leaf.cert, key: leaf.key } }).start();
    fake.upsert({ kind: 'VirtualService', metadata: { name: 'a' }, spec: { hosts: ['a'] } });
  });
  after(async () => {
    await fake.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const config = (server: string, tlsServerName?: string) => kubeconfig(server,
    `    certificate-authority-data: ${Buffer.from(caPem).toString('base64')}\n${tlsServerName ? `    tls-server-name: ${tlsServerName}\n` : ''}`);
  const list = async (server: string, tlsServerName?: string): Promise<unknown> => {
    const client = new KubeClient(parseKubeconfig(config(server, tlsServerName), '/k/config', () => undefined), { requestTimeoutMs: 5000 });
    try {
      return await client.getJson('/apis/networking.istio.io/v1/virtualservices');
    } finally {
      await client.close();
    }
  };
  const itemNames = (l: unknown) => ((l as { items: { metadata: { name: string } }[] }).items).map((i) => i.metadata.name);

  it(`server https://127.0.0.1:P with tls-server-name ${API_NAME}: the list succeeds, SNI is that name`, async () => {
    fake.serverNames.length = 0;
    assert.deepEqual(itemNames(await list(`https://127.0.0.1:${fake.port}`, API_NAME)), ['a']);
    assert.deepEqual([...new Set(fake.serverNames)], [API_NAME]);
  });

  it('server https://localhost:P (a host name the certificate lacks, as a load balancer\'s) with tls-server-name: the list succeeds', async () => {
    fake.serverNames.length = 0;
    assert.deepEqual(itemNames(await list(`https://localhost:${fake.port}`, API_NAME)), ['a']);
    assert.deepEqual([...new Set(fake.serverNames)], [API_NAME]);
  });

  it('without tls-server-name: a hostname mismatch, with an error saying to set it', async () => {
    await assert.rejects(list(`https://127.0.0.1:${fake.port}`), (err: unknown) => {
      assert.ok(err instanceof KubeApiError, String(err));
      assert.equal(err.status, 0);
      assert.match(err.message, /does not match certificate's altnames/);
      assert.match(err.message, /set the cluster's tls-server-name in the kubeconfig/);
      return true;
    });
  });

  it('a tls-server-name the certificate lacks: an error naming it', async () => {
    await assert.rejects(list(`https://127.0.0.1:${fake.port}`, 'api.example.com'), /altnames.*checked for tls-server-name api\.example\.com/s);
  });
});

describe('Kubernetes API client: a 401 reads the token file again', function () {
  this.timeout(10_000);
  let fake: FakeKubeApi;
  let dir: string;
  let tokenFile: string;
  let client: KubeClient;

  beforeEach(async () => {
    fake = await new FakeKubeApi({ token: 'old' }).start();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-token-401-'));
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, 'old\n');
    // The default refresh (a minute): without the 401 the old token would stay in use.
    client = new KubeClient({ server: fake.url, tokenFile, insecureSkipTlsVerify: false, describe: 'test' }, { requestTimeoutMs: 2000 });
  });
  afterEach(async () => {
    await client.close();
    await fake.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const auth = () => fake.requests.map((q) => q.authorization);

  it('a rotated token file: the refused request is sent again with the new token, and later ones use it', async () => {
    await client.getJson('/api');
    fs.writeFileSync(tokenFile, 'new\n');
    fake.token = 'new'; // the old token is refused from now on
    await client.getJson('/api');
    await client.getJson('/api');
    assert.deepEqual(auth(), ['Bearer old', 'Bearer old', 'Bearer new', 'Bearer new']);
  });

  it('a watch too', async () => {
    await client.getJson('/api');
    fs.writeFileSync(tokenFile, 'new');
    fake.token = 'new';
    const ac = new AbortController();
    const watching = client.watch('/api/v1/services?watch=1&resourceVersion=1', () => undefined, ac.signal).catch(() => undefined);
    await waitFor(() => fake.openWatches() === 1, { timeoutMs: 3000, intervalMs: 5 });
    ac.abort();
    await watching;
    assert.deepEqual(auth(), ['Bearer old', 'Bearer old', 'Bearer new']);
  });

  it('an unchanged token file: the 401 is the answer (no second try), with its hint', async () => {
    await client.getJson('/api');
    fake.token = 'other';
    await assert.rejects(client.getJson('/api'), (err: KubeApiError) => err.status === 401 && /check the token/.test(err.message));
    assert.deepEqual(auth(), ['Bearer old', 'Bearer old']);
  });
});

describe('watch timeoutSeconds (client-go: minWatchTimeout x (1 + random))', function () {
  this.timeout(10_000);

  it('between the minimum and twice it, whole seconds (table)', () => {
    const cases: [number, number, number][] = [[300, 0, 300], [300, 0.5, 450], [300, 0.999, 599], [60, 0.25, 75], [1, 0.9, 1]];
    for (const [min, r, want] of cases) assert.equal(watchTimeout(min, () => r), want, `${min} ${r}`);
  });

  it('the reflector asks for it with its random source (a fixed one here), not a fixed 300', async () => {
    const fake = await new FakeKubeApi().start();
    const client = new KubeClient({ server: fake.url, insecureSkipTlsVerify: false, describe: 'test' }, { requestTimeoutMs: 2000 });
    const r = new Reflector(client, { type: KUBE_TYPES.VirtualService }, { onChange: () => undefined, onSynced: () => undefined }, log,
      { ...FAST, watchTimeoutSeconds: 300 }, () => 0.25);
    try {
      r.start();
      await waitFor(() => fake.openWatches() === 1, { timeoutMs: 3000, intervalMs: 5 });
      fake.dropWatches('graceful');
      await waitFor(() => fake.count((q) => q.watch) === 2 && fake.openWatches() === 1, { timeoutMs: 3000, intervalMs: 5 });
      assert.deepEqual(fake.requests.filter((q) => q.watch).map((q) => q.query['timeoutSeconds']), ['375', '375']);
    } finally {
      await r.stop();
      await client.close();
      await fake.close();
    }
  });
});
