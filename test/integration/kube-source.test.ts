// meshgate on the Kubernetes source, against the fake API server: real HTTP through a Gateway,
// VirtualService, Service and EndpointSlice to real upstreams on loopback; updates through the
// API; a bad object left out while the rest serves; 410 re-list; resets with backoff; readiness
// until the first sync; v1beta1 when v1 is not served; the command line; and kubectl (client-go)
// driving the fake, so the fake is checked against a real client. No test reaches a real cluster.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import tls from 'node:tls';
import path from 'node:path';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { FakeKubeApi } from '../helpers/fake-kube-api';
import { MESHGATE_BIN } from '../helpers/gateway';
import {
  endpointSliceObj, gatewayObj, kubeconfigFor, podObj, serviceObj, startKubeGateway, virtualServiceObj, type KubeGateway,
} from '../helpers/kube';
import { curl, freePort, httpGet, waitFor } from '../helpers/upstream';
import { makeCa, makeLeaf } from '../helpers/certs';

const HOST = 'httpbin.example.com';
const route = (dest: Record<string, unknown>) => [{ route: [{ destination: { host: 'httpbin', port: { number: 8000 }, ...dest } }] }];

/** The istio.io ingress task, as objects in the API: Gateway, VirtualService, Service, slices, pods. */
function seed(fake: FakeKubeApi, v1: HttpbinServer): void {
  fake.upsert(gatewayObj('httpbin-gateway', [HOST]));
  fake.upsert(virtualServiceObj('httpbin', [HOST], 'istio-system/httpbin-gateway', route({})));
  fake.upsert(serviceObj('httpbin', [{ name: 'http', port: 8000, targetPort: 'http-web' }]));
  fake.upsert(podObj('httpbin-v1', { app: 'httpbin', version: 'v1' }));
  for (const s of endpointSliceObj('httpbin', 'httpbin', 'http', [{ pod: 'httpbin-v1', port: v1.port }])) fake.upsert(s);
}

/** `meshgate run --source kubernetes --kubeconfig F` as a real process, once its first config is applied. */
async function runOnKube(kubeconfig: string, port: number): Promise<{ child: ChildProcess; stderr: () => string }> {
  const child = spawn(process.execPath, [MESHGATE_BIN, 'run', '--source', 'kubernetes', '--kubeconfig', kubeconfig, '--watch-namespace', 'default,istio-system',
    '--port-map', `80=${port}`, '--bind', '127.0.0.1', '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  try {
    await waitFor(() => /config version 1 applied/.test(stderr), { timeoutMs: 10_000 });
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}; stderr:\n${stderr}`);
  }
  return { child, stderr: () => stderr };
}

/** SIGTERM, and the exit code. */
function stopProcess(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  return exited;
}

async function served(port: number, host = HOST): Promise<{ status: number; by: string }> {
  const r = await httpGet(port, '/status/200', { host });
  return { status: r.status, by: String(r.headers['x-served-by'] ?? '') };
}

async function metricsText(gw: KubeGateway): Promise<string> {
  return (await httpGet(gw.app.ports.metrics, '/stats/prometheus')).body;
}

describe('Kubernetes API source', function () {
  this.timeout(20_000);
  let fake: FakeKubeApi;
  let v1: HttpbinServer;
  let v2: HttpbinServer;
  let gw: KubeGateway | undefined;

  before(async () => {
    v1 = await startHttpbin({ host: '127.0.0.1', port: 0, name: 'httpbin-v1' });
    v2 = await startHttpbin({ host: '127.0.0.1', port: 0, name: 'httpbin-v2' });
  });
  after(async () => {
    await v1.close();
    await v2.close();
  });
  beforeEach(async () => {
    fake = await new FakeKubeApi().start();
  });
  afterEach(async () => {
    await gw?.stop();
    gw = undefined;
    await fake.close();
  });

  it('is not ready until every kind is listed, then routes HTTP through Gateway, VirtualService, Service and EndpointSlice', async () => {
    seed(fake, v1);
    fake.hold(/endpointslices\?limit/); // the first EndpointSlice list waits
    gw = await startKubeGateway(fake);
    await waitFor(() => gw!.app.ports.status > 0 && fake.openWatches('VirtualService') > 0, { timeoutMs: 5000, intervalMs: 10 });
    assert.equal((await httpGet(gw.app.ports.status, '/healthz/ready')).status, 503, 'not ready before the first full sync');
    assert.equal(gw.app.ready(), false);
    fake.release();
    await gw.started;
    assert.equal((await httpGet(gw.app.ports.status, '/healthz/ready')).status, 200);
    assert.deepEqual(await served(gw.port), { status: 200, by: 'httpbin-v1' });
    gw.app.accessLog.flush();
    await waitFor(() => fs.existsSync(gw!.accessLogPath) && fs.readFileSync(gw!.accessLogPath, 'utf8').includes('outbound|8000||httpbin.default.svc.cluster.local'), { timeoutMs: 3000 });
    const dump = JSON.parse((await httpGet(gw.app.ports.admin, '/config_dump')).body) as { source?: string; watches?: { kind: string; synced: boolean }[] };
    assert.equal(dump.source, 'kubernetes');
    assert.ok(dump.watches!.length >= 11 && dump.watches!.every((w) => w.synced));
  });

  it('updates through the API take effect: a new endpoint, Pod labels for subsets, a route change, a deleted route', async () => {
    seed(fake, v1);
    gw = await startKubeGateway(fake);
    await gw.started;
    assert.equal((await served(gw.port)).by, 'httpbin-v1');
    fake.upsert(podObj('httpbin-v2', { app: 'httpbin', version: 'v2' }));
    for (const s of endpointSliceObj('httpbin', 'httpbin', 'http', [{ pod: 'httpbin-v1', port: v1.port }, { pod: 'httpbin-v2', port: v2.port }])) fake.upsert(s);
    fake.upsert({ kind: 'DestinationRule', apiVersion: 'networking.istio.io/v1', metadata: { name: 'httpbin', namespace: 'default' },
      spec: { host: 'httpbin', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] } });
    fake.upsert(virtualServiceObj('httpbin', [HOST], 'istio-system/httpbin-gateway', route({ subset: 'v2' })));
    await waitFor(async () => (await served(gw!.port)).by === 'httpbin-v2', { timeoutMs: 3000, intervalMs: 20 });
    for (let i = 0; i < 5; i++) assert.equal((await served(gw.port)).by, 'httpbin-v2', 'subset v2 is the pod labelled version=v2');
    // An endpoint that is not ready is left out.
    for (const s of endpointSliceObj('httpbin', 'httpbin', 'http', [{ pod: 'httpbin-v1', port: v1.port }, { pod: 'httpbin-v2', port: v2.port, ready: false }])) fake.upsert(s);
    await waitFor(async () => (await served(gw!.port)).status === 503, { timeoutMs: 3000, intervalMs: 20 });
    fake.remove('VirtualService', 'default', 'httpbin');
    await waitFor(async () => (await served(gw!.port)).status === 404, { timeoutMs: 3000, intervalMs: 20 });
  });

  it('a bad object is reported (log line and metric naming it) and left out; the rest keeps applying', async () => {
    seed(fake, v1);
    fake.upsert(virtualServiceObj('broken', ['broken.example.com'], 'istio-system/httpbin-gateway', [{ route: [{ destination: { host: 'httpbin' }, wieght: 5 }] }]));
    fake.upsert(gatewayObj('httpbin-gateway', [HOST, 'broken.example.com', 'other.example.com']));
    gw = await startKubeGateway(fake);
    const outcome = await gw.started as { result: string; rejectedObjects?: string[] };
    assert.equal(outcome.result, 'applied');
    assert.deepEqual(outcome.rejectedObjects, ['VirtualService default/broken']);
    assert.ok(gw.logs.some((l) => l.includes('kubernetes:default/VirtualService/broken:1:1: VirtualService default/broken: spec.http[0].route[0].wieght: unknown field \\"wieght\\" (did you mean \\"weight\\"?)')),
      gw.logs.filter((l) => l.includes('broken')).join('\n'));
    assert.match(await metricsText(gw), /meshgate_config_rejected_objects\{kind="VirtualService",namespace="default",name="broken"\} 1/);
    assert.equal((await served(gw.port)).by, 'httpbin-v1', 'the good VirtualService serves');
    assert.equal((await served(gw.port, 'broken.example.com')).status, 404, 'the bad one is not there');
    // Other changes keep applying while the bad object stays bad; its error is logged once.
    fake.upsert(virtualServiceObj('other', ['other.example.com'], 'istio-system/httpbin-gateway', route({})));
    await waitFor(async () => (await served(gw!.port, 'other.example.com')).status === 200, { timeoutMs: 3000, intervalMs: 20 });
    assert.equal(gw.logs.filter((l) => l.includes('spec.http[0].route[0].wieght')).length, 1);
    // Fixed: it applies and the metric series goes away.
    fake.upsert(virtualServiceObj('broken', ['broken.example.com'], 'istio-system/httpbin-gateway', route({})));
    await waitFor(async () => (await served(gw!.port, 'broken.example.com')).status === 200, { timeoutMs: 3000, intervalMs: 20 });
    assert.doesNotMatch(await metricsText(gw), /meshgate_config_rejected_objects\{/);
  });

  it('a bad new version of a good object: the last good version keeps serving, the new one is reported; a fix applies', async () => {
    seed(fake, v1);
    gw = await startKubeGateway(fake);
    await gw.started;
    assert.equal((await served(gw.port)).status, 200);
    // kubectl apply with a typo (and a route that would 404 if it were taken as is).
    fake.upsert(virtualServiceObj('httpbin', [HOST], 'istio-system/httpbin-gateway', [{ match: [{ uri: { prefx: '/nowhere' } }], route: [{ destination: { host: 'httpbin', port: { number: 8000 } } }] }]));
    await waitFor(async () => /meshgate_config_rejected_objects\{kind="VirtualService",namespace="default",name="httpbin"\} 1/.test(await metricsText(gw!)), { timeoutMs: 3000, intervalMs: 20 });
    assert.equal((await served(gw.port)).status, 200, 'the last good version still routes');
    assert.ok(gw.logs.some((l) => l.includes('VirtualService default/httpbin: this version is rejected') && l.includes('last good version keeps serving')), gw.logs.slice(-5).join('\n'));
    // A good change to the same object applies and clears the report.
    fake.upsert(virtualServiceObj('httpbin', [HOST], 'istio-system/httpbin-gateway', [{ match: [{ uri: { prefix: '/elsewhere' } }], route: [{ destination: { host: 'httpbin', port: { number: 8000 } } }] }]));
    await waitFor(async () => (await served(gw!.port)).status === 404, { timeoutMs: 3000, intervalMs: 20 });
    assert.doesNotMatch(await metricsText(gw), /meshgate_config_rejected_objects\{/);
  });

  it('410 Gone lists again, and a reset with failing requests backs off; changes made meanwhile arrive', async () => {
    seed(fake, v1);
    gw = await startKubeGateway(fake);
    await gw.started;
    await waitFor(() => fake.openWatches() >= 11, { timeoutMs: 3000, intervalMs: 10 });
    const listsBefore = fake.count((q) => !q.watch && q.path.endsWith('/virtualservices'));
    fake.dropWatches('graceful');
    fake.upsert(virtualServiceObj('httpbin', [HOST], 'istio-system/httpbin-gateway', [{ directResponse: { status: 418, body: { string: 'relisted' } } }]));
    fake.compact();
    await waitFor(async () => (await served(gw!.port)).status === 418, { timeoutMs: 3000, intervalMs: 20 });
    assert.ok(fake.count((q) => !q.watch && q.path.endsWith('/virtualservices')) > listsBefore, 'the VirtualServices were listed again');
    await waitFor(() => fake.openWatches() >= 11, { timeoutMs: 3000, intervalMs: 10 });
    fake.failNext(6, 500, /virtualservices/);
    assert.ok(fake.dropWatches('reset') >= 11);
    fake.upsert(virtualServiceObj('httpbin', [HOST], 'istio-system/httpbin-gateway', route({})));
    await waitFor(async () => (await served(gw!.port)).by === 'httpbin-v1', { timeoutMs: 5000, intervalMs: 20 });
    assert.equal(gw.app.ready(), true, 'readiness stays true through watch restarts');
    const dump = gw.app.source.describe() as { watches: { kind: string; errors: number; relistsOnGone: number }[] };
    const vsWatch = dump.watches.find((w) => w.kind === 'VirtualService')!;
    assert.ok(vsWatch.errors >= 6, `the reset and the 500s were retried (${vsWatch.errors})`);
    assert.ok(vsWatch.relistsOnGone >= 1);
  });

  it('HTTPS with a credentialName Secret from the gateway namespace; a new certificate in the Secret is served', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-ksecret-'));
    try {
      const ca = await makeCa(dir, 'ca');
      const first = await makeLeaf(dir, ca, 'first', [HOST]);
      const second = await makeLeaf(dir, ca, 'second', [HOST]);
      const secret = (leaf: { cert: string; key: string }) => ({
        kind: 'Secret', apiVersion: 'v1', metadata: { name: 'httpbin-credential', namespace: 'istio-system' }, type: 'kubernetes.io/tls',
        data: { 'tls.crt': Buffer.from(leaf.cert).toString('base64'), 'tls.key': Buffer.from(leaf.key).toString('base64') },
      });
      seed(fake, v1);
      fake.upsert(secret(first));
      fake.upsert({ kind: 'Secret', apiVersion: 'v1', metadata: { name: 'unrelated', namespace: 'istio-system' }, data: { password: 'c2VjcmV0' } });
      const gwObj = gatewayObj('httpbin-gateway', [HOST]);
      (gwObj['spec'] as { servers: unknown[] }).servers.push({ port: { number: 443, name: 'https', protocol: 'HTTPS' }, hosts: [HOST], tls: { mode: 'SIMPLE', credentialName: 'httpbin-credential' } });
      fake.upsert(gwObj);
      const port = await freePort();
      const tlsPort = await freePort();
      gw = await startKubeGateway(fake, { portMap: new Map([[80, port], [443, tlsPort]]) });
      await gw.started;
      const r = await curl(['-s', '-w', '%{http_code}', '-o', '/dev/null', '--resolve', `${HOST}:${tlsPort}:127.0.0.1`, '--cacert', ca.certFile, `https://${HOST}:${tlsPort}/status/200`]);
      assert.equal(r.stdout, '200', r.stderr);
      const serial = (pem: string) => new X509Certificate(pem).serialNumber;
      const served = () => new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: tlsPort, servername: HOST, ca: ca.cert }, () => {
          resolve(s.getPeerX509Certificate()?.serialNumber ?? '');
          s.end();
        });
        s.on('error', reject);
      });
      assert.equal(await served(), serial(first.cert));
      fake.upsert(secret(second));
      await waitFor(async () => (await served()) === serial(second.cert), { timeoutMs: 3000, intervalMs: 20 });
      const dump = JSON.parse((await httpGet(gw.app.ports.admin, '/config_dump')).body) as { watches: { kind: string; namespace: string; objects: number }[] };
      assert.deepEqual(dump.watches.filter((w) => w.kind === 'Secret').map((w) => [w.namespace, w.objects]), [['istio-system', 2]], 'Secrets watched in the gateway namespace only');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('uses networking.istio.io/v1beta1 when v1 is not served', async () => {
    fake.istioVersions = ['v1beta1', 'v1alpha3'];
    seed(fake, v1);
    gw = await startKubeGateway(fake);
    await gw.started;
    assert.equal((await served(gw.port)).by, 'httpbin-v1');
    assert.ok(fake.requests.some((q) => q.path === '/apis/networking.istio.io/v1beta1/gateways'));
    assert.ok(!fake.requests.some((q) => q.path.startsWith('/apis/networking.istio.io/v1/')));
  });

  it('meshgate run --source kubernetes --kubeconfig: the flags, a real process', async () => {
    seed(fake, v1);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-kcli-'));
    let child: ChildProcess | undefined;
    try {
      fake.token = 'sekret';
      const kubeconfig = path.join(dir, 'kubeconfig');
      fs.writeFileSync(kubeconfig, kubeconfigFor(fake.url, 'sekret'));
      const port = await freePort();
      const run = await runOnKube(kubeconfig, port);
      child = run.child;
      const stderr = run.stderr();
      assert.match(stderr, /first full sync done/);
      assert.equal((await served(port)).by, 'httpbin-v1');
      assert.ok(fake.requests.some((q) => q.path === '/apis/networking.istio.io/v1/namespaces/default/virtualservices'), 'watched per namespace');
      assert.ok(fake.requests.every((q) => q.authorization === 'Bearer sekret'));
      assert.equal(await stopProcess(child), 0);
      child = undefined;
    } finally {
      child?.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a kubeconfig exec credential plugin: its token is used, and a refused token (401) makes meshgate run it again', async () => {
    seed(fake, v1);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-kexec-'));
    let child: ChildProcess | undefined;
    try {
      // The plugin prints the token in token.txt, as `aws eks get-token` prints a fresh one.
      const tokenFile = path.join(dir, 'token.txt');
      fs.writeFileSync(tokenFile, 'tok-A');
      fs.writeFileSync(path.join(dir, 'get-token.js'), `const fs = require('fs');
fs.appendFileSync(${JSON.stringify(path.join(dir, 'runs'))}, 'x');
const info = JSON.parse(process.env.KUBERNETES_EXEC_INFO);
console.log(JSON.stringify({ apiVersion: info.apiVersion, kind: 'ExecCredential', status: { token: fs.readFileSync(${JSON.stringify(tokenFile)}, 'utf8') } }));
`);
      const kubeconfig = path.join(dir, 'kubeconfig');
      fs.writeFileSync(kubeconfig, kubeconfigFor(fake.url).replace('  user: {}', `  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ${process.execPath}
      args: [${JSON.stringify(path.join(dir, 'get-token.js'))}]`));
      fake.token = 'tok-A';
      const port = await freePort();
      child = (await runOnKube(kubeconfig, port)).child;
      assert.equal((await served(port)).by, 'httpbin-v1');
      assert.ok(fake.requests.every((q) => q.authorization === 'Bearer tok-A'), 'every request carried the plugin\'s token');
      assert.equal(fs.readFileSync(path.join(dir, 'runs'), 'utf8'), 'x', 'one run served every watch');
      // The credential rotates: the API server now wants tok-B; reconnecting watches get 401 once.
      fs.writeFileSync(tokenFile, 'tok-B');
      fake.token = 'tok-B';
      const before = fake.requests.length;
      fake.dropWatches('reset');
      await waitFor(() => fake.requests.slice(before).some((q) => q.authorization === 'Bearer tok-B' && q.watch), { timeoutMs: 10_000 });
      assert.ok(fs.readFileSync(path.join(dir, 'runs'), 'utf8').length >= 2, 'the plugin ran again after the 401');
      assert.equal((await served(port)).by, 'httpbin-v1', 'still serving through the rotation');
      assert.equal(await stopProcess(child), 0);
      child = undefined;
    } finally {
      child?.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the fake API server answers a real client: kubectl get -w (client-go) lists and watches through it', async function () {
    const kubectl = '/usr/bin/kubectl';
    if (!fs.existsSync(kubectl)) {
      console.warn(`      SKIPPED: ${kubectl} is missing, so the fake API server is not checked against a real client`);
      this.skip();
    }
    fake.upsert(virtualServiceObj('first', ['a.example.com'], 'mesh', route({})));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-kubectl-'));
    let child: ChildProcess | undefined;
    try {
      fs.writeFileSync(path.join(dir, 'kubeconfig'), kubeconfigFor(fake.url));
      child = spawn(kubectl, ['--kubeconfig', path.join(dir, 'kubeconfig'), '--cache-dir', path.join(dir, 'cache'), 'get', 'virtualservices.networking.istio.io', '-A', '-w',
        '-o', 'custom-columns=NAME:.metadata.name,NAMESPACE:.metadata.namespace,HOSTS:.spec.hosts[0]'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
      child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
      child.on('error', (e) => { err += e.message; });
      await waitFor(() => /first\s+default\s+a\.example\.com/.test(out), { timeoutMs: 10_000 }).catch(() => assert.fail(`kubectl printed: ${out}\n${err}`));
      await waitFor(() => fake.openWatches('VirtualService') === 1, { timeoutMs: 5000 });
      fake.upsert(virtualServiceObj('second', ['b.example.com'], 'mesh', route({}), 'team-b'));
      fake.upsert(virtualServiceObj('first', ['changed.example.com'], 'mesh', route({})));
      await waitFor(() => /second\s+team-b\s+b\.example\.com/.test(out) && /first\s+default\s+changed\.example\.com/.test(out), { timeoutMs: 5000 })
        .catch(() => assert.fail(`kubectl printed: ${out}\n${err}`));
      assert.doesNotMatch(err, /error/i);
      const watch = fake.requests.find((q) => q.watch && q.path === '/apis/networking.istio.io/v1/virtualservices')!;
      assert.ok(watch.query['resourceVersion'], 'kubectl watched from the list\'s resourceVersion');
    } finally {
      child?.kill('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
