// The walkthroughs' D3-D5 (service discovery seen from a client sidecar) and DNS ServiceEntries in
// network namespaces the test makes and removes: a "pod" with curl and meshgate --mode sidecar behind
// `meshgate iptables`, and a "cluster" namespace with two nginx-like pods (10.9.9.11, 10.9.9.12) and a
// DNS server the sidecar resolves through. The Service my-nginx has the ClusterIP 10.96.0.10, which
// nothing owns: only the sidecar knows what is behind it. Skipped loudly without root, ip, iptables.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MESHGATE_BIN } from '../helpers/gateway';
import { makeCa, makeLeaf, type CaPem } from '../helpers/certs';
import { waitFor } from '../helpers/upstream';
import { missingForCapture, NetnsWorld, accessLogIn, shareFiles, sharedWorkDir } from '../helpers/netns';

const PODS = (cert: string, key: string) => `
const http = require('http'), https = require('https'), net = require('net'), fs = require('fs');
for (const ip of ['10.9.9.11', '10.9.9.12']) {
  http.createServer((q, r) => r.end('nginx ' + ip + '\\n'))
    .on('upgrade', (q, s) => s.end('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\nws ' + ip))
    .listen(80, ip);
  net.createServer((s) => { s.on('error', () => {}); s.end('tcp ' + ip + '\\n'); }).listen(9000, ip);
}
https.createServer({ cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}) },
  (q, r) => r.end('wiki ' + q.headers.host + '\\n')).listen(443, '10.9.9.11');
setTimeout(() => console.log('ready'), 200);
`;

const MESH = (dir: string) => `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: ${dir}/access.log
    connectTimeout: 1s
---
`;

const SERVICE = `apiVersion: v1
kind: Service
metadata: {name: my-nginx, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {run: my-nginx}
  ports: [{name: http, port: 80, targetPort: 80}, {name: tcp-raw, port: 9000, targetPort: 9000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: my-nginx-1, namespace: default}
spec: {address: 10.9.9.11, labels: {run: my-nginx}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: my-nginx-2, namespace: default}
spec: {address: 10.9.9.12, labels: {run: my-nginx}}
---
`;

const DNS_ENTRY = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dyn, namespace: default}
spec:
  hosts: [dyn.example.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
`;

describe('sidecar service discovery: D3-D5 and DNS ServiceEntries (netns)', function () {
  this.timeout(60_000);
  const world = new NetnsWorld();
  let pod = '';
  let dir: string;
  let cfg: string;
  let dns: ChildProcess;
  let ca: CaPem;
  const log = () => accessLogIn(dir);
  const inPod = (args: string[], timeoutMs?: number) => world.exec(pod, args, timeoutMs);
  const dnsCommand = (c: object) => dns.stdin!.write(`${JSON.stringify(c)}\n`);

  before(function () {
    const missing = missingForCapture();
    if (missing.length > 0) {
      console.warn(`    SKIPPED sidecar discovery tests: missing ${missing.join(', ')}`);
      this.skip();
    }
  });

  before(async function () {
    if (this.currentTest?.isPending()) return;
    ({ dir, cfg } = sharedWorkDir('meshgate-discovery-'));
    ca = await makeCa(dir, 'ca');
    const wiki = await makeLeaf(dir, ca, 'wiki', ['*.wiki.test', 'other.test']);
    shareFiles(dir);
    fs.writeFileSync(path.join(dir, 'pods.js'), PODS(wiki.certFile, wiki.keyFile), { mode: 0o644 });
    pod = world.add('mgdpod');
    const cluster = world.add('mgdcl');
    world.link({ ns: pod, dev: 'pod0', addrs: ['10.9.9.1/24'] }, { ns: cluster, dev: 'cl0', addrs: ['10.9.9.2/24', '10.9.9.11/24', '10.9.9.12/24'] });
    // The service network is routed toward the cluster namespace, which drops it (no forwarding):
    // a ClusterIP nobody serves times out, as a deleted Service's address does.
    await world.exec(pod, ['ip', 'route', 'add', '10.96.0.0/16', 'via', '10.9.9.2']);
    await NetnsWorld.waitOutput(world.spawn(cluster, [process.execPath, path.join(dir, 'pods.js')]), /ready/);
    dns = world.spawn(pod, [process.execPath, path.resolve(__dirname, '../helpers/dns-server.js')]);
    const dnsPort = await NetnsWorld.waitOutput(dns, /dns (\d+)/);
    dnsCommand({ set: 'dyn.example.test', a: ['10.9.9.11'], ttl: 1 });
    const applied = await inPod([process.execPath, MESHGATE_BIN, 'iptables', '--apply']);
    assert.equal(applied.code, 0, applied.err);
    fs.writeFileSync(path.join(cfg, 'mesh.yaml'), MESH(dir));
    fs.writeFileSync(path.join(cfg, 'service.yaml'), SERVICE);
    fs.writeFileSync(path.join(cfg, 'dns.yaml'), DNS_ENTRY);
    world.spawn(pod, ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', process.execPath, MESHGATE_BIN,
      'run', '--mode', 'sidecar', '--namespace', 'default', '--config', cfg, '--dns-server', `127.0.0.1:${dnsPort}`,
      '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--log-level', 'warn']);
    await waitFor(async () => (await inPod(['curl', '-s', '-m', '2', 'http://10.9.9.11/'])).out.startsWith('nginx'), { timeoutMs: 15_000, intervalMs: 250 });
    await waitFor(() => /PassthroughCluster/.test(log()), { timeoutMs: 3000 }); // the sidecar is the one answering
  });

  after(() => {
    world.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('D3: a request to a pod IP goes to that pod as it was addressed (PassthroughCluster, allow_any)', async () => {
    const r = await inPod(['curl', '-s', '-m', '5', 'http://10.9.9.12/']);
    assert.equal(r.out, 'nginx 10.9.9.12\n');
    await waitFor(() => /"GET \/ HTTP\/1\.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ "-" "curl\/[^"]+" "[^"]+" "10\.9\.9\.12" "10\.9\.9\.12:80" PassthroughCluster \S+ 10\.9\.9\.12:80 10\.9\.9\.1:\d+ - allow_any$/m.test(log()), { timeoutMs: 3000 });
  });

  it('D3 for WebSocket: an upgrade to a pod IP goes where it was addressed too (PassthroughCluster)', async () => {
    const r = await inPod(['sh', '-c', "printf 'GET /ws HTTP/1.1\\r\\nHost: 10.9.9.12\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n' | nc -w 2 10.9.9.12 80"]);
    assert.match(r.out, /^HTTP\/1\.1 101 /, r.out);
    assert.ok(r.out.endsWith('ws 10.9.9.12'), r.out);
    await waitFor(() => /"GET \/ws HTTP\/1\.1" 101 .* PassthroughCluster \S+ 10\.9\.9\.12:80 10\.9\.9\.1:\d+ - allow_any$/m.test(log()), { timeoutMs: 3000 }).catch(() => assert.fail(log()));
  });

  it('D4: the Service IP is load balanced over its pods as outbound|80||my-nginx.default.svc.cluster.local; other TCP too', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20; i += 1) seen.add((await inPod(['curl', '-s', '-m', '5', 'http://10.96.0.10/'])).out);
    assert.deepEqual([...seen].sort(), ['nginx 10.9.9.11\n', 'nginx 10.9.9.12\n']);
    await waitFor(() => /"10\.96\.0\.10" "10\.9\.9\.1[12]:80" outbound\|80\|\|my-nginx\.default\.svc\.cluster\.local \S+ 10\.96\.0\.10:80 10\.9\.9\.1:\d+ - default$/m.test(log()), { timeoutMs: 3000 });
    // A Host of the service's names routes the same; a port the Service declares as TCP is proxied to the same pods.
    const byName = await inPod(['curl', '-s', '-m', '5', '--resolve', 'my-nginx:80:10.9.9.99', 'http://my-nginx/']);
    assert.match(byName.out, /^nginx 10\.9\.9\.1[12]\n$/);
    const tcp = await inPod(['sh', '-c', 'nc -w 3 10.96.0.10 9000 </dev/null']);
    assert.match(tcp.out, /^tcp 10\.9\.9\.1[12]\n$/);
    await waitFor(() => /"- - -" 0 - .* "10\.9\.9\.1[12]:9000" outbound\|9000\|\|my-nginx\.default\.svc\.cluster\.local \S+ 10\.96\.0\.10:9000 /.test(log()), { timeoutMs: 3000 });
  });

  it('a headless Service: each request goes to the pod the application dialled (ORIGINAL_DST), not load balanced', async () => {
    fs.writeFileSync(path.join(cfg, 'headless.yaml'), `apiVersion: v1
kind: Service
metadata: {name: my-db, namespace: default}
spec:
  clusterIP: None
  selector: {run: my-nginx}
  ports: [{name: http, port: 80, targetPort: 80}]
`);
    const get = (ip: string) => inPod(['curl', '-s', '-m', '5', '--resolve', `my-db:80:${ip}`, 'http://my-db/']);
    await waitFor(async () => { await get('10.9.9.11'); return /outbound\|80\|\|my-db\.default\.svc\.cluster\.local /.test(log()); }, { timeoutMs: 5000, intervalMs: 300 });
    for (const ip of ['10.9.9.11', '10.9.9.12']) {
      const seen = new Set<string>();
      for (let i = 0; i < 10; i += 1) seen.add((await get(ip)).out);
      assert.deepEqual([...seen], [`nginx ${ip}\n`]);
    }
    fs.rmSync(path.join(cfg, 'headless.yaml'));
  });

  it('DNS ServiceEntry: follows the answer on its TTL and keeps the last good one when DNS fails', async () => {
    const get = async () => (await inPod(['curl', '-s', '-m', '3', '--resolve', 'dyn.example.test:80:10.9.9.99', 'http://dyn.example.test/'])).out;
    await waitFor(async () => (await get()) === 'nginx 10.9.9.11\n', { timeoutMs: 5000, intervalMs: 200 });
    const t0 = Date.now();
    dnsCommand({ set: 'dyn.example.test', a: ['10.9.9.12'], ttl: 1 });
    await waitFor(async () => (await get()) === 'nginx 10.9.9.12\n', { timeoutMs: 6000, intervalMs: 200 });
    assert.ok(Date.now() - t0 < 4000, `the new answer took ${Date.now() - t0} ms (TTL 1 s)`);
    dnsCommand({ fail: 'dyn.example.test', mode: 'SERVFAIL' });
    await new Promise((r) => setTimeout(r, 2500)); // two refreshes fail
    for (let i = 0; i < 3; i += 1) assert.equal(await get(), 'nginx 10.9.9.12\n');
    await waitFor(() => /"dyn\.example\.test" "10\.9\.9\.12:80" outbound\|80\|\|dyn\.example\.test /.test(log()), { timeoutMs: 3000 });
  });

  it('D5: with the Service deleted its IP is passed through to nowhere: 503 UF after the connect timeout', async () => {
    fs.rmSync(path.join(cfg, 'service.yaml'));
    await waitFor(async () => !(await inPod(['curl', '-s', '-m', '3', 'http://10.96.0.10/'], 5000)).out.startsWith('nginx'), { timeoutMs: 8000, intervalMs: 200 });
    const t0 = Date.now();
    const r = await inPod(['curl', '-s', '-i', '-m', '8', 'http://10.96.0.10/'], 10_000);
    const took = Date.now() - t0;
    assert.match(r.out, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    assert.match(r.out, /\r\n\r\nupstream connect error or disconnect\/reset before headers\. (retried and the latest )?reset reason: /);
    assert.ok(took >= 900, `answered after ${took} ms, before the 1 s connect timeout`);
    await waitFor(() => /"GET \/ HTTP\/1\.1" 503 UF\S* upstream_reset_before_response_started\{connection_timeout\S*\} .* "10\.96\.0\.10" "10\.96\.0\.10:80" PassthroughCluster - 10\.96\.0\.10:80 10\.9\.9\.1:\d+ - allow_any$/m.test(log()), { timeoutMs: 3000 });
  });

  it('wildcard egress: under REGISTRY_ONLY a *.wiki.test ServiceEntry (resolution NONE) lets its hosts through to the dialled address, TLS and HTTP', async () => {
    // The ServiceEntry first: once REGISTRY_ONLY is seen to apply, the entry is certainly in force
    // (written the other way round, a reload could apply the mode alone and the wiki hosts fail).
    fs.writeFileSync(path.join(cfg, 'wiki.yaml'), `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wikipedia, namespace: default}
spec:
  hosts: ["*.wiki.test"]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
  resolution: NONE
`);
    fs.writeFileSync(path.join(cfg, 'mesh.yaml'), MESH(dir).replace('connectTimeout: 1s', 'connectTimeout: 1s\n    outboundTrafficPolicy: {mode: REGISTRY_ONLY}'));
    const https = (host: string) => inPod(['curl', '-s', '-m', '5', '--cacert', ca.certFile, '--resolve', `${host}:443:10.9.9.11`, `https://${host}/`]);
    await waitFor(async () => (await https('other.test')).code === 35, { timeoutMs: 5000, intervalMs: 200 });
    for (const host of ['en.wiki.test', 'de.wiki.test']) assert.equal((await https(host)).out, `wiki ${host}\n`);
    const plain = await inPod(['curl', '-s', '-m', '5', '--resolve', 'en.wiki.test:80:10.9.9.12', 'http://en.wiki.test/']);
    assert.equal(plain.out, 'nginx 10.9.9.12\n');
    await waitFor(() => /"- - -" 0 - .* "10\.9\.9\.11:443" outbound\|443\|\|\*\.wiki\.test \S+ 10\.9\.9\.11:443 10\.9\.9\.1:\d+ de\.wiki\.test -$/m.test(log()), { timeoutMs: 3000 });
  });
});
