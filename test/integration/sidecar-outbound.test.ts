// Sidecar outbound by destination address, end to end in network namespaces the test makes and
// removes (a "pod" behind `meshgate iptables` with the sidecar as uid 1337, an "external" namespace
// with the servers), under REGISTRY_ONLY: ServiceEntry /32 and CIDR addresses, the declared protocol
// of the destination service (TCP never sniffed, never parsed as HTTP, per VIP not per port), h2c
// through the capture listener, mesh VirtualService `tcp` routes, TLS to a VIP whatever the SNI.
// Needs root, ip, iptables and the addon: skipped loudly otherwise.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MESHGATE_BIN } from '../helpers/gateway';
import { makeCa, makeLeaf } from '../helpers/certs';
import { waitFor } from '../helpers/upstream';
import { missingForCapture, NetnsWorld, accessLogIn, shareFiles, sharedWorkDir } from '../helpers/netns';
import { sidecarMesh } from '../helpers/yaml';

const world = new NetnsWorld();
let POD = '';
let EXT = '';
const inPod = (args: string[], timeoutMs = 8000) => world.exec(POD, args, timeoutMs);
const echo = (ip: string, port: number) => inPod(['sh', '-c', `printf "ping\\n" | nc -N -w 3 ${ip} ${port}`]);

const EXTERNAL = (cert: string, key: string) => `
const http = require('http'), http2 = require('http2'), https = require('https'), net = require('net'), fs = require('fs');
http.createServer((q, r) => r.end('plain-http ' + q.url + '\\n')).listen(8081, '10.9.9.2');
https.createServer({ cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}) }, (q, r) => r.end('secure ' + q.url + '\\n')).listen(443, '10.9.9.2');
for (const p of [9000, 9001, 9002, 9003]) net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(p, '10.9.9.2');
net.createServer((s) => { s.on('error', () => {}); s.on('data', () => {}); s.end('other\\n'); }).listen(9003, '10.9.9.3');
net.createServer((s) => { s.on('error', () => {}); s.write('BANNER\\n'); setTimeout(() => s.end(), 200); }).listen(3306, '10.9.9.2');
http2.createServer((q, r) => r.end('h2c ' + q.url + '\\n')).listen(9090, '10.9.9.2', () => console.log('ready'));
`;

/** A root client in the pod: ms until a server-first banner arrives. */
const BANNER_CLIENT = `
const s = require('net').connect(3306, '10.9.9.2'); const t = Date.now();
s.once('data', (d) => { console.log(JSON.stringify({ ms: Date.now() - t, data: d.toString() })); s.destroy(); });
s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); });
`;

const se = (name: string, host: string, addresses: string[], port: string, extra = 'resolution: STATIC\n  endpoints: [{address: 10.9.9.2}]') => `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${host}]
  addresses: [${addresses.join(', ')}]
  ports: [${port}]
  ${extra}
`;

const CONFIG = (dir: string) => `${sidecarMesh(dir, 'REGISTRY_ONLY')}${se('a', 'a.test', ['10.9.9.2'], '{number: 8081, name: tcp, protocol: TCP}')}
${se('b32', 'my-company-proxy.test', ['10.9.9.2/32'], '{number: 9001, name: tcp, protocol: TCP}')}
${se('bcidr', 'cidr.test', ['10.9.9.0/24'], '{number: 9002, name: tcp, protocol: TCP}', 'resolution: NONE')}
${se('c', 'c.test', ['10.9.9.2'], '{number: 443, name: tls, protocol: TLS}')}
${se('d-http', 'd-http.test', ['10.9.9.11'], '{number: 9000, name: http, protocol: HTTP}', 'resolution: STATIC\n  endpoints: [{address: 10.9.9.2, ports: {http: 8081}}]')}
${se('d-echo', 'echo.test', ['10.9.9.2'], '{number: 9000, name: tcp, protocol: TCP}')}
${se('e', 'e.test', ['10.9.9.12'], '{number: 9003, name: tcp, protocol: TCP}')}
${se('e-other', 'e-other.test', ['10.9.9.13'], '{number: 9003, name: tcp, protocol: TCP}', 'resolution: STATIC\n  endpoints: [{address: 10.9.9.3}]')}
${se('mysql', 'mysql.test', ['10.9.9.2'], '{number: 3306, name: tcp, protocol: TCP}')}
${se('grpc', 'grpc.test', ['10.9.9.14'], '{number: 9090, name: grpc, protocol: GRPC}')}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: e, namespace: default}
spec:
  hosts: [e.test]
  tcp:
  - route:
    - destination: {host: e-other.test, port: {number: 9003}}
---
apiVersion: v1
kind: Service
metadata: {name: websecure, namespace: default}
spec:
  clusterIP: 10.9.9.10
  selector: {app: websecure}
  ports: [{name: https, port: 8443, targetPort: 443}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: websecure-pod, namespace: default}
spec: {address: 10.9.9.2, labels: {app: websecure}}
`;

describe('sidecar outbound by destination address (netns, REGISTRY_ONLY)', function () {
  this.timeout(90_000);
  let dir = '';
  let cfg = '';
  const log = () => accessLogIn(dir);

  before(function () {
    const missing = missingForCapture();
    if (missing.length > 0) {
      console.warn(`    SKIPPED sidecar outbound tests: missing ${missing.join(', ')}`);
      this.skip();
    }
  });

  before(async function () {
    if (this.currentTest?.isPending()) return;
    ({ dir, cfg } = sharedWorkDir('meshgate-sidecar-out-'));
    const ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'x', ['edition.cnn.test', 'c.test', 'websecure']);
    shareFiles(dir);
    fs.writeFileSync(path.join(dir, 'external.js'), EXTERNAL(leaf.certFile, leaf.keyFile));
    POD = world.add('mgopod');
    EXT = world.add('mgoext');
    world.link({ ns: POD, dev: 'pod0', addrs: ['10.9.9.1/24'] }, { ns: EXT, dev: 'ext0', addrs: ['10.9.9.2/24', '10.9.9.3/24'] });
    await NetnsWorld.waitOutput(world.spawn(EXT, [process.execPath, path.join(dir, 'external.js')]), /ready/);
    const applied = await inPod([process.execPath, MESHGATE_BIN, 'iptables', '--apply']);
    assert.equal(applied.code, 0, applied.err);
    fs.writeFileSync(path.join(cfg, 'all.yaml'), CONFIG(dir));
    const mg = world.spawn(POD, ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', process.execPath, MESHGATE_BIN,
      'run', '--mode', 'sidecar', '--namespace', 'default', '--config', cfg, '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--log-level', 'warn']);
    mg.stderr!.on('data', (c: Buffer) => process.stderr.write(`[meshgate] ${c}`));
    // Up once an unknown address is answered by block_all (502 from the sidecar).
    await waitFor(async () => (await inPod(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '2', 'http://10.9.9.99/'])).out === '502', { timeoutMs: 15_000, intervalMs: 250 });
  });

  after(() => {
    world.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('A: ServiceEntry addresses [IP/32] and [CIDR] take TCP to their service', async () => {
    assert.equal((await echo('10.9.9.2', 9001)).out, 'ping\n', '10.9.9.2/32 port 9001');
    assert.equal((await echo('10.9.9.2', 9002)).out, 'ping\n', '10.9.9.0/24 port 9002');
    await waitFor(async () => /outbound\|9001\|\|my-company-proxy\.test/.test(log()) && /outbound\|9002\|\|cidr\.test/.test(log()), { timeoutMs: 5000, intervalMs: 200 });
  });

  it('B: a server-first protocol on a TCP-declared port gets its banner without the detection wait', async () => {
    const r = await inPod([process.execPath, '-e', BANNER_CLIENT]);
    const got = JSON.parse(r.out) as { ms?: number; data?: string; error?: string };
    assert.equal(got.data, 'BANNER\n', r.out);
    assert.ok(got.ms! < 500, `banner after ${got.ms} ms`);
  });

  it('C: HTTP to a VIP whose port is declared TCP is proxied as TCP to that service', async () => {
    const r = await inPod(['curl', '-s', '-m', '5', 'http://10.9.9.2:8081/x']);
    assert.equal(r.out, 'plain-http /x\n');
    await waitFor(async () => /outbound\|8081\|\|a\.test/.test(log()), { timeoutMs: 5000, intervalMs: 200 });
  });

  it('D: a TCP service keeps its VIP when another service declares the same port HTTP', async () => {
    assert.equal((await echo('10.9.9.2', 9000)).out, 'ping\n');
    const h = await inPod(['curl', '-s', '-m', '5', 'http://10.9.9.11:9000/d']);
    assert.equal(h.out, 'plain-http /d\n', 'the HTTP service on the same port is still HTTP');
  });

  it('E: h2c (prior knowledge) through the capture listener reaches the HTTP/2 server', async () => {
    const r = await inPod(['curl', '-s', '-m', '5', '--http2-prior-knowledge', '--resolve', 'grpc.test:9090:10.9.9.14', 'http://grpc.test:9090/g']);
    assert.equal(r.out, 'h2c /g\n', r.err);
  });

  it('F: a mesh VirtualService tcp route sends the host\'s traffic to another service', async () => {
    assert.equal((await echo('10.9.9.12', 9003)).out, 'other\n');
    await waitFor(async () => /outbound\|9003\|\|e-other\.test/.test(log()), { timeoutMs: 5000, intervalMs: 200 });
  });

  it('G: TLS to a VIP goes to its service whatever the SNI (short name, another name)', async () => {
    const short = await inPod(['curl', '-s', '-k', '-m', '5', '--resolve', 'websecure:8443:10.9.9.10', 'https://websecure:8443/g1']);
    assert.equal(short.out, 'secure /g1\n', short.err);
    const other = await inPod(['curl', '-s', '-k', '-m', '5', '--resolve', 'edition.cnn.test:443:10.9.9.2', 'https://edition.cnn.test/g2']);
    assert.equal(other.out, 'secure /g2\n', other.err);
    const fqdn = await inPod(['curl', '-s', '-k', '-m', '5', '--resolve', 'c.test:443:10.9.9.2', 'https://c.test/g3']);
    assert.equal(fqdn.out, 'secure /g3\n', fqdn.err);
  });

  it('an address no service owns is still blocked (REGISTRY_ONLY)', async () => {
    const r = await echo('10.9.9.3', 9001);
    assert.equal(r.out, '');
  });
});
