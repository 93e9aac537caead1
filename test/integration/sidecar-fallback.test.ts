// Per-port capture, the fallback without the SO_ORIGINAL_DST addon, in network namespaces the test
// makes and removes: `meshgate iptables --fallback-ports 80,443,9000` redirects each port to its own
// listener and `meshgate run --mode sidecar --fallback-ports 80,443,9000` serves them. The original
// address is unknown (every request here goes to an address nobody has, 10.9.9.77): HTTP is routed by
// Host, TLS by SNI, and passthrough resolves the Host or SNI through the pod's DNS server; opaque TCP
// reaches the one service that owns the port. Skipped loudly without root, ip, iptables.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MESHGATE_BIN } from '../helpers/gateway';
import { makeCa, makeLeaf, type CaPem } from '../helpers/certs';
import { waitFor } from '../helpers/upstream';
import { missingForCapture, NetnsWorld, accessLogIn, shareFiles, sharedWorkDir } from '../helpers/netns';
import { sidecarMesh } from '../helpers/yaml';

const EXTERNAL = (cert: string, key: string) => `
const http = require('http'), https = require('https'), net = require('net'), fs = require('fs');
http.createServer((q, r) => r.end('external ' + q.url + ' host=' + q.headers.host + '\\n')).listen(80, '10.9.9.2');
http.createServer((q, r) => r.end('not captured ' + q.url + '\\n')).listen(8080, '10.9.9.2');
https.createServer({ cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}) },
  (q, r) => r.end('secure ' + q.url + '\\n')).listen(443, '10.9.9.2');
net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(9000, '10.9.9.2', () => console.log('ready'));
`;

const config = (dir: string, policy: string) => `${sidecarMesh(dir, policy)}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.internal]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.2}]
`;

describe('sidecar per-port capture (the fallback without SO_ORIGINAL_DST; netns)', function () {
  this.timeout(60_000);
  const world = new NetnsWorld();
  let pod = '';
  let dir: string;
  let cfg: string;
  let ca: CaPem;
  const log = () => accessLogIn(dir);
  const inPod = (args: string[]) => world.exec(pod, args);

  before(function () {
    // The addon itself is not needed here, only what the namespaces need.
    const missing = missingForCapture().filter((m) => !m.includes('SO_ORIGINAL_DST'));
    if (missing.length > 0) {
      console.warn(`    SKIPPED per-port capture tests: missing ${missing.join(', ')}`);
      this.skip();
    }
  });

  before(async function () {
    if (this.currentTest?.isPending()) return;
    ({ dir, cfg } = sharedWorkDir('meshgate-fallback-'));
    ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'site', ['secure.fallback.test']);
    shareFiles(dir);
    fs.writeFileSync(path.join(dir, 'external.js'), EXTERNAL(leaf.certFile, leaf.keyFile));
    pod = world.add('mgfbpod');
    const ext = world.add('mgfbext');
    world.link({ ns: pod, dev: 'pod0', addrs: ['10.9.9.1/24'] }, { ns: ext, dev: 'ext0', addrs: ['10.9.9.2/24'] });
    await NetnsWorld.waitOutput(world.spawn(ext, [process.execPath, path.join(dir, 'external.js')]), /ready/);
    const dns = world.spawn(pod, [process.execPath, '-e', `
      const { TestDnsServer } = require(${JSON.stringify(path.resolve(__dirname, '../helpers/dns-server.js'))});
      new TestDnsServer().start().then((s) => {
        for (const n of ['site.fallback.test', 'secure.fallback.test']) s.setRecords(n, { a: ['10.9.9.2'], ttl: 30 });
        console.log('dns ' + s.port);
      });
    `]);
    const dnsPort = await NetnsWorld.waitOutput(dns, /dns (\d+)/);
    const fallback = ['--fallback-ports', '80,443,9000', '--fallback-base', '15100'];
    const applied = await inPod([process.execPath, MESHGATE_BIN, 'iptables', '--apply', ...fallback]);
    assert.equal(applied.code, 0, applied.err);
    fs.writeFileSync(path.join(cfg, 'config.yaml'), config(dir, 'ALLOW_ANY'));
    world.spawn(pod, ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', process.execPath, MESHGATE_BIN,
      'run', '--mode', 'sidecar', ...fallback, '--namespace', 'default', '--config', cfg, '--dns-server', `127.0.0.1:${dnsPort}`,
      '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--log-level', 'warn']);
    await waitFor(async () => (await inPod(['curl', '-s', '-m', '2', '--resolve', 'svc.internal:80:10.9.9.77', 'http://svc.internal/ready'])).out.startsWith('external'), { timeoutMs: 15_000, intervalMs: 250 });
  });

  after(() => {
    world.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('iptables redirects only the listed ports, each to its own listener', async () => {
    const rules = await inPod(['iptables-save', '-t', 'nat']);
    for (const [app, listen] of [[80, 15100], [443, 15101], [9000, 15102]]) {
      assert.match(rules.out, new RegExp(`-A ISTIO_REDIRECT -p tcp -m tcp --dport ${app} -j REDIRECT --to-ports ${listen}\\n`));
    }
    assert.doesNotMatch(rules.out, /--to-ports 15001/);
    // A port not listed goes out directly, untouched by the sidecar.
    const direct = await inPod(['curl', '-s', '-m', '3', 'http://10.9.9.2:8080/x']);
    assert.equal(direct.out, 'not captured /x\n');
  });

  it('HTTP is routed by Host to the registry service, whatever address the application dialled', async () => {
    const r = await inPod(['curl', '-s', '-i', '-m', '5', '--resolve', 'svc.internal:80:10.9.9.77', 'http://svc.internal/politics']);
    assert.match(r.out, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.out, /\r\nserver: envoy\r\n/);
    assert.match(r.out, /external \/politics host=svc\.internal\n$/);
    await waitFor(() => /"GET \/politics HTTP\/1\.1" 200 .* "10\.9\.9\.2:80" outbound\|80\|\|svc\.internal /.test(log()), { timeoutMs: 3000 });
  });

  it('ALLOW_ANY: an unknown Host or SNI is resolved and reached (PassthroughCluster)', async () => {
    const h = await inPod(['curl', '-s', '-m', '5', '--resolve', 'site.fallback.test:80:10.9.9.77', 'http://site.fallback.test/any']);
    assert.equal(h.out, 'external /any host=site.fallback.test\n');
    const t = await inPod(['curl', '-s', '-m', '5', '--cacert', ca.certFile, '--resolve', 'secure.fallback.test:443:10.9.9.77', 'https://secure.fallback.test/tls']);
    assert.equal(t.out, 'secure /tls\n', t.err);
    await waitFor(() => /"GET \/any HTTP\/1\.1" 200 .* "10\.9\.9\.2:80" PassthroughCluster .* allow_any$/m.test(log())
      && /"- - -" 0 - .* "10\.9\.9\.2:443" PassthroughCluster .* secure\.fallback\.test -$/m.test(log()), { timeoutMs: 3000 });
  });

  it('opaque TCP reaches the one service that owns the port', async () => {
    const n = await inPod(['sh', '-c', 'printf "ping\\n" | nc -N -w 3 10.9.9.77 9000']);
    assert.equal(n.out, 'ping\n');
    await waitFor(() => /"- - -" 0 - .* "10\.9\.9\.2:9000" outbound\|9000\|\|echo\.internal /.test(log()), { timeoutMs: 3000 });
  });

  it('REGISTRY_ONLY: an unknown Host gets 502 block_all; the registry service still works', async () => {
    fs.writeFileSync(path.join(cfg, 'config.yaml'), config(dir, 'REGISTRY_ONLY'));
    const code = () => inPod(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '3', '--resolve', 'site.fallback.test:80:10.9.9.77', 'http://site.fallback.test/']);
    await waitFor(async () => (await code()).out === '502', { timeoutMs: 5000, intervalMs: 200 });
    const ok = await inPod(['curl', '-s', '-m', '5', '--resolve', 'svc.internal:80:10.9.9.77', 'http://svc.internal/still']);
    assert.equal(ok.out, 'external /still host=svc.internal\n');
    const t = await inPod(['curl', '-s', '-m', '5', '--cacert', ca.certFile, '--resolve', 'secure.fallback.test:443:10.9.9.77', 'https://secure.fallback.test/tls']);
    assert.equal(t.code, 35, `curl exit ${t.code}`);
  });
});
