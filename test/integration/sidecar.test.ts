// Sidecar mode end to end, in two network namespaces the test makes and removes: a "pod" with curl
// and nc (root) and meshgate --mode sidecar (uid 1337) behind `meshgate iptables`, and an "external"
// namespace with HTTP, TLS and TCP servers standing in for edition.cnn.test. Checks the walkthroughs'
// E1-E3: ALLOW_ANY passes through (PassthroughCluster, allow_any), REGISTRY_ONLY answers plain HTTP
// with 502 from `server: envoy` and closes TLS (curl exit 35), and a ServiceEntry turns the host back
// on within 2 s of the file change. Needs root, ip, iptables and the addon: skipped loudly otherwise.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MESHGATE_BIN } from '../helpers/gateway';
import { makeCa, makeLeaf, type CaPem } from '../helpers/certs';
import { waitFor } from '../helpers/upstream';
import { missingForCapture, NetnsWorld, accessLogIn, shareFiles, sharedWorkDir } from '../helpers/netns';
import { sidecarMesh } from '../helpers/yaml';

const world = new NetnsWorld();
let POD = '';
let EXT = '';
const inPod = (args: string[], timeoutMs = 8000) => world.exec(POD, args, timeoutMs);


const EXTERNAL = (certFile: string, keyFile: string, cnnCert: string, cnnKey: string) => `
const http = require('http'), https = require('https'), net = require('net'), fs = require('fs');
http.createServer((q, r) => r.end('external ' + q.url + ' host=' + q.headers.host + '\\n')).listen(80, '10.9.9.2');
https.createServer({ cert: fs.readFileSync(${JSON.stringify(certFile)}), key: fs.readFileSync(${JSON.stringify(keyFile)}) },
  (q, r) => r.end('secure ' + q.url + '\\n')).listen(443, '10.9.9.2');
http.createServer((q, r) => r.end('cnn ' + q.url + ' host=' + q.headers.host + '\\n')).listen(80, '10.9.9.4');
https.createServer({ cert: fs.readFileSync(${JSON.stringify(cnnCert)}), key: fs.readFileSync(${JSON.stringify(cnnKey)}) },
  (q, r) => r.end('cnn secure ' + q.url + '\\n')).listen(443, '10.9.9.4');
http.createServer((q, r) => r.end('ratings-v1 ' + q.url + '\\n')).listen(9080, '10.9.9.5');
net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(9000, '10.9.9.2', () => console.log('ready'));
`;

const mesh = sidecarMesh;

/** A YAML block of the walkthrough text, as `kubectl apply -f <name>` would take it. */
function block(name: string): string {
  const seed = fs.readFileSync(path.resolve(__dirname, '../../../../shared/seed-scenarios/source/000_54cdee40cf656adf.txt'), 'utf8').split('\n');
  const i = seed.indexOf(`# ${name}`);
  assert.ok(i >= 0, name);
  return seed.slice(i + 1, seed.indexOf('', i)).join('\n') + '\n---\n';
}

/** The egress gateway's Service and its pod, as both the sidecar and the egress gateway see them. */
const EGRESS_SERVICE = `apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: egress-pod, namespace: istio-system}
spec: {address: 10.9.9.2, labels: {istio: egressgateway}, ports: {http2: 8080, https: 8443}}
---
`;

describe('sidecar mode: capture, ALLOW_ANY, REGISTRY_ONLY, ServiceEntry (netns)', function () {
  this.timeout(90_000);
  let dir: string;
  let cfg: string;
  let ca: CaPem;
  let eg = '';
  const log = () => accessLogIn(dir);

  before(function () {
    const missing = missingForCapture();
    if (missing.length > 0) {
      console.warn(`    SKIPPED sidecar tests: missing ${missing.join(', ')}`);
      this.skip();
    }
  });

  before(async function () {
    if (this.currentTest?.isPending()) return;
    ({ dir, cfg } = sharedWorkDir('meshgate-sidecar-'));
    ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'cnn', ['edition.cnn.test']);
    const site = await makeLeaf(dir, ca, 'site', ['edition.cnn.com']);
    shareFiles(dir);
    fs.writeFileSync(path.join(dir, 'external.js'), EXTERNAL(leaf.certFile, leaf.keyFile, site.certFile, site.keyFile));
    POD = world.add('mgpod');
    EXT = world.add('mgext');
    // 10.9.9.4: the "real" edition.cnn.com behind the egress gateway (E4); 10.9.9.5: ratings v1 (bookinfo faults).
    world.link({ ns: POD, dev: 'pod0', addrs: ['10.9.9.1/24'] }, { ns: EXT, dev: 'ext0', addrs: ['10.9.9.2/24', '10.9.9.4/24', '10.9.9.5/24'] });
    await NetnsWorld.waitOutput(world.spawn(EXT, [process.execPath, path.join(dir, 'external.js')]), /ready/);
    // The pod's DNS server (the walkthrough's ServiceEntries resolve edition.cnn.com through it).
    const dns = world.spawn(POD, [process.execPath, path.resolve(__dirname, '../helpers/dns-server.js')]);
    const dnsPort = await NetnsWorld.waitOutput(dns, /dns (\d+)/);
    dns.stdin!.write(`${JSON.stringify({ set: 'edition.cnn.com', a: ['10.9.9.4'], ttl: 30 })}\n`);
    const applied = await inPod([process.execPath, MESHGATE_BIN, 'iptables', '--apply']);
    assert.equal(applied.code, 0, applied.err);
    fs.writeFileSync(path.join(cfg, 'mesh.yaml'), mesh(dir, 'ALLOW_ANY'));
    world.spawn(POD, ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', process.execPath, MESHGATE_BIN,
      'run', '--mode', 'sidecar', '--namespace', 'default', '--config', cfg, '--dns-server', `127.0.0.1:${dnsPort}`, '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--log-level', 'warn']);
    await waitFor(async () => (await inPod(['curl', '-s', '-m', '2', 'http://10.9.9.2/ready'])).out.startsWith('external'), { timeoutMs: 15_000, intervalMs: 250 });
  });

  after(() => {
    world.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('E1 ALLOW_ANY: unknown HTTP, TLS and TCP go to their original destination through the sidecar', async () => {
    const h = await inPod(['curl', '-s', '-i', '-m', '5', 'http://10.9.9.2/politics']);
    assert.match(h.out, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(h.out, /\r\nserver: envoy\r\n/, 'the outbound sidecar answers as envoy');
    assert.match(h.out, /external \/politics host=10\.9\.9\.2\n$/);
    const t = await inPod(['curl', '-s', '-m', '5', '--resolve', 'edition.cnn.test:443:10.9.9.2', '--cacert', ca.certFile, 'https://edition.cnn.test/politics']);
    assert.equal(t.out, 'secure /politics\n', t.err);
    const n = await inPod(['sh', '-c', 'printf "ping\\n" | nc -N -w 3 10.9.9.2 9000']);
    assert.equal(n.out, 'ping\n');
    await waitFor(() => /"10\.9\.9\.2:443" PassthroughCluster/.test(log()), { timeoutMs: 3000 });
    // As Envoy logs them: the original destination as the local address, the route allow_any.
    assert.match(log(), /"GET \/politics HTTP\/1\.1" 200 - via_upstream .* "10\.9\.9\.2:80" PassthroughCluster 10\.9\.9\.1:\d+ 10\.9\.9\.2:80 10\.9\.9\.1:\d+ - allow_any$/m);
    assert.match(log(), /"- - -" 0 - - - .* "10\.9\.9\.2:443" PassthroughCluster \S+ 10\.9\.9\.2:443 10\.9\.9\.1:\d+ edition\.cnn\.test -$/m);
  });

  it('E2 REGISTRY_ONLY: plain HTTP gets 502 from envoy, https fails (curl exit 35)', async () => {
    fs.writeFileSync(path.join(cfg, 'mesh.yaml'), mesh(dir, 'REGISTRY_ONLY'));
    await waitFor(async () => (await inPod(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '3', 'http://10.9.9.2/'])).out === '502', { timeoutMs: 5000, intervalMs: 200 });
    const h = await inPod(['curl', '-sL', '-o', '/dev/null', '-D', '-', '-m', '5', 'http://edition.cnn.test/politics', '--resolve', 'edition.cnn.test:80:10.9.9.2']);
    assert.match(h.out, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(h.out, /\r\nserver: envoy\r\n/);
    assert.match(h.out, /\r\ncontent-length: 0\r\n/);
    const t = await inPod(['curl', '-s', '-m', '5', '--resolve', 'edition.cnn.test:443:10.9.9.2', '--cacert', ca.certFile, 'https://edition.cnn.test/politics']);
    assert.equal(t.code, 35, `curl exit ${t.code}`);
    await waitFor(() => /block_all$/m.test(log()) && /BlackHoleCluster/.test(log()), { timeoutMs: 3000 });
  });

  it('E3: the walkthrough\'s cnn-service-entry.yaml (resolution DNS) lets edition.cnn.com through again within 2 s', async () => {
    const t0 = Date.now();
    fs.writeFileSync(path.join(cfg, 'cnn-service-entry.yaml'), block('cnn-service-entry.yaml'));
    const get = (p: string) => inPod(['curl', '-s', '-m', '2', '--resolve', 'edition.cnn.com:80:10.9.9.99', `http://edition.cnn.com${p}`]);
    await waitFor(async () => (await get('/politics')).out === 'cnn /politics host=edition.cnn.com\n', { timeoutMs: 4000, intervalMs: 100 });
    assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0} ms`);
    const t = await inPod(['curl', '-s', '-m', '5', '--resolve', 'edition.cnn.com:443:10.9.9.99', '--cacert', ca.certFile, 'https://edition.cnn.com/politics']);
    assert.equal(t.out, 'cnn secure /politics\n', t.err);
    await waitFor(() => /"10\.9\.9\.4:80" outbound\|80\|\|edition\.cnn\.com /.test(log()) && /"10\.9\.9\.4:443" outbound\|443\|\|edition\.cnn\.com /.test(log()), { timeoutMs: 3000 });
    // Other hosts stay blocked.
    const other = await inPod(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '3', 'http://10.9.9.2/']);
    assert.equal(other.out, '502');
  });

  it('E4: HTTP to edition.cnn.com goes sidecar -> egress gateway -> the site, with the walkthrough\'s YAML', async () => {
    // The egress gateway: meshgate in gateway mode (istio=egressgateway) in the external namespace.
    const site = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  ports: [{number: 80, name: http-port, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.4}]
---
`;
    eg = path.join(dir, 'egress');
    fs.mkdirSync(eg, { mode: 0o777 });
    fs.writeFileSync(path.join(eg, 'mesh.yaml'), mesh(eg, 'ALLOW_ANY'));
    fs.writeFileSync(path.join(eg, 'all.yaml'), EGRESS_SERVICE + site + block('cnn-egress-gateway.yaml') + block('cnn-virtual.yaml'));
    world.spawn(EXT, [process.execPath, MESHGATE_BIN, 'run', '--config', eg, '--labels', 'istio=egressgateway',
      '--bind', '10.9.9.2', '--admin-port', '0', '--status-port', '0', '--metrics-port', '0', '--agent-port', '0', '--log-level', 'warn']);
    // The sidecar's side: the same VirtualService (its mesh half), the egress gateway's Service and pod.
    fs.writeFileSync(path.join(cfg, 'egress.yaml'), EGRESS_SERVICE + block('cnn-egress-gateway.yaml') + block('cnn-virtual.yaml'));
    const egressLog = () => { try { return fs.readFileSync(path.join(eg, 'access.log'), 'utf8'); } catch { return ''; } };
    const viaEgress = /"GET \/politics HTTP\/2" 200 .* "edition\.cnn\.com" "10\.9\.9\.4:80" outbound\|80\|\|edition\.cnn\.com /;
    // Until both proxies have the new config the request may still go straight out (the site answers
    // the same): ask until the egress gateway has logged one.
    let r = { code: 0, out: '', err: '' };
    await waitFor(async () => {
      r = await inPod(['curl', '-s', '-i', '-m', '3', '--resolve', 'edition.cnn.com:80:10.9.9.99', 'http://edition.cnn.com/politics']);
      await new Promise((res) => setTimeout(res, 300)); // access logs are flushed every 250 ms
      return viaEgress.test(egressLog());
    }, { timeoutMs: 10_000, intervalMs: 100 });
    assert.match(r.out, /cnn \/politics host=edition\.cnn\.com\n$/);
    await waitFor(() => /"edition\.cnn\.com" "10\.9\.9\.2:8080" outbound\|80\|cnn\|istio-egressgateway\.istio-system\.svc\.cluster\.local /.test(log()), { timeoutMs: 3000 });
  });

  it('E5: HTTPS to edition.cnn.com passes through sidecar and egress gateway by SNI (the walkthrough\'s YAML)', async () => {
    // As the walkthrough does: the HTTP resources are deleted, the TLS ones applied, on both proxies.
    fs.rmSync(path.join(cfg, 'cnn-service-entry.yaml'));
    fs.writeFileSync(path.join(cfg, 'egress.yaml'), EGRESS_SERVICE + block('cnn-https-service-entry.yaml') + block('cnn-https-service-rule.yaml'));
    fs.writeFileSync(path.join(eg, 'all.yaml'), `${EGRESS_SERVICE}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.4}]
---
${block('cnn-https-service-rule.yaml')}`);
    const egressLog = () => { try { return fs.readFileSync(path.join(eg, 'access.log'), 'utf8'); } catch { return ''; } };
    const viaEgress = /"- - -" 0 - - - .* "10\.9\.9\.4:443" outbound\|443\|\|edition\.cnn\.com \S+ 10\.9\.9\.2:8443 \S+ edition\.cnn\.com -$/m;
    let r = { code: 0, out: '', err: '' };
    await waitFor(async () => {
      r = await inPod(['curl', '-s', '-m', '3', '--resolve', 'edition.cnn.com:443:10.9.9.99', '--cacert', ca.certFile, 'https://edition.cnn.com/politics']);
      await new Promise((res) => setTimeout(res, 300));
      return viaEgress.test(egressLog());
    }, { timeoutMs: 10_000, intervalMs: 100 });
    assert.equal(r.out, 'cnn secure /politics\n');
    await waitFor(() => /"10\.9\.9\.2:8443" outbound\|443\|cnn\|istio-egressgateway\.istio-system\.svc\.cluster\.local \S+ 10\.9\.9\.99:443 \S+ edition\.cnn\.com -$/m.test(log()), { timeoutMs: 3000 });
  });

  it('the bookinfo ratings fault samples for user jason, unchanged: abort 500, then a 7 s delay', async () => {
    const samples = path.resolve(__dirname, '../../../../shared/istio-samples/samples/bookinfo');
    const read = (f: string) => fs.readFileSync(path.join(samples, f), 'utf8');
    fs.writeFileSync(path.join(cfg, 'bookinfo.yaml'), `${read('platform/kube/bookinfo.yaml')}
---
${read('networking/destination-rule-all.yaml')}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1, namespace: default}
spec: {address: 10.9.9.5, labels: {app: ratings, version: v1}, ports: {http: 9080}}
`);
    fs.writeFileSync(path.join(cfg, 'ratings-vs.yaml'), read('networking/virtual-service-ratings-test-abort.yaml'));
    // The application calls http://ratings:9080 (any address: the sidecar routes by Host).
    const call = (user: string) => inPod(['curl', '-s', '-i', '-m', '12', '--resolve', 'ratings:9080:10.9.9.50', '-H', `end-user: ${user}`, 'http://ratings:9080/ratings/0']);
    await waitFor(async () => /^HTTP\/1\.1 500 /.test((await call('jason')).out), { timeoutMs: 5000, intervalMs: 200 });
    const jason = await call('jason');
    assert.match(jason.out, /^HTTP\/1\.1 500 Internal Server Error\r\n[\s\S]*\r\n\r\nfault filter abort$/);
    const mary = await call('mary');
    assert.match(mary.out, /^HTTP\/1\.1 200 OK\r\n[\s\S]*ratings-v1 \/ratings\/0\n$/);
    fs.writeFileSync(path.join(cfg, 'ratings-vs.yaml'), read('networking/virtual-service-ratings-test-delay.yaml'));
    await waitFor(async () => !/^HTTP\/1\.1 500 /.test((await inPod(['curl', '-s', '-i', '-m', '1', '--resolve', 'ratings:9080:10.9.9.50', '-H', 'end-user: jason', 'http://ratings:9080/ratings/0'])).out), { timeoutMs: 5000, intervalMs: 200 });
    const t0 = Date.now();
    const delayed = await call('jason');
    const took = Date.now() - t0;
    assert.match(delayed.out, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(took >= 6900 && took < 11_000, `jason waited ${took} ms`);
    await waitFor(() => / 200 DI via_upstream .* "ratings:9080" "10\.9\.9\.5:9080" outbound\|9080\|v1\|ratings\.default\.svc\.cluster\.local /.test(log()), { timeoutMs: 3000 });
  });

  it('TLS origination at the sidecar: plain HTTP from the application, HTTPS to the site (DestinationRule tls)', async () => {
    fs.writeFileSync(path.join(cfg, 'origination.yaml'), `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin, namespace: default}
spec:
  hosts: [origin.example.test]
  ports: [{number: 80, name: http-port, protocol: HTTP}, {number: 443, name: https-port, protocol: HTTPS}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.4}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: origin, namespace: default}
spec:
  hosts: [origin.example.test]
  http:
  - match: [{port: 80}]
    route: [{destination: {host: origin.example.test, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: origin, namespace: default}
spec:
  host: origin.example.test
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, sni: edition.cnn.com, caCertificates: ${ca.certFile}}
`);
    let r = { code: 0, out: '', err: '' };
    await waitFor(async () => {
      r = await inPod(['curl', '-s', '-m', '3', '--resolve', 'origin.example.test:80:10.9.9.99', 'http://origin.example.test/politics']);
      return r.out === 'cnn secure /politics\n';
    }, { timeoutMs: 5000, intervalMs: 200 });
    await waitFor(() => /"GET \/politics HTTP\/1\.1" 200 .* "10\.9\.9\.4:443" outbound\|443\|\|origin\.example\.test /.test(log()), { timeoutMs: 3000 });
  });
});
