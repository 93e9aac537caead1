// Sidecar inbound (the walkthroughs' D1/D2), in two network namespaces the test makes and removes: a
// client namespace calls the pod's IP; `meshgate iptables --include-inbound-ports '*'` sends it to
// the sidecar's 15006, which hands it to the application from 127.0.0.6. A port of the pod's own
// Service is `inbound|PORT||`, any other InboundPassthroughCluster. Skipped loudly without root etc.

import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MESHGATE_BIN } from '../helpers/gateway';
import { waitFor } from '../helpers/upstream';
import { missingForCapture, accessLogIn, shareFiles, sharedWorkDir } from '../helpers/netns';
import { decodePeerMetadata, encodePeerMetadata } from '../../src/telemetry/peer-metadata';
import { writeMeshCertificates } from '../../src/tls/dev-certs';

const POD = `mgin${process.pid}`;
const CLIENT = `mgcl${process.pid}`;
/** The sidecar's Prometheus port (Envoy's 15090), in the pod's own namespace. */
const METRICS_PORT = 15090;

/** The sidecar's istio_* lines for a metric, scraped from inside the pod. */
function scrape(metric: string): string[] {
  const text = execFileSync('ip', ['netns', 'exec', POD, 'curl', '-s', '-m', '3', `http://127.0.0.1:${METRICS_PORT}/stats/prometheus`], { encoding: 'utf8' });
  return text.split('\n').filter((l) => l.startsWith(`${metric}{`));
}

function inClient(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('ip', ['netns', 'exec', CLIENT, ...args], { timeout: 8000, encoding: 'utf8' }, (err, stdout) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout });
    });
    child.stdin?.end();
  });
}

const APP = `
const http = require('http');
for (const port of [8080, 9090]) {
  const server = http.createServer((q, r) => r.end(q.url === '/mx' ? 'mx:' + (q.headers['x-envoy-peer-metadata'] ?? '-') + ',' + (q.headers['x-envoy-peer-metadata-id'] ?? '-')
    : q.url === '/xfcc' ? 'xfcc:' + (q.headers['x-forwarded-client-cert'] ?? '-') : 'app:' + port + ' saw ' + q.socket.remoteAddress + '\\n'));
  server.on('upgrade', (q, socket) => socket.end('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\nws:' + port + ' from ' + q.socket.remoteAddress + ' xfcc=' + (q.headers['x-forwarded-client-cert'] ? 'yes' : 'no')));
  server.listen(port, '0.0.0.0');
}
console.log('ready');
`;

/**
 * A mesh peer's ISTIO_MUTUAL request, from the client namespace: node mtls-client.js DIR PATH SNI ALPN [h2|http1] [nocert].
 * Prints the response body, or `error: <message>`.
 */
const MTLS_CLIENT = `
const [dir, reqPath, sni, alpn, proto, nocert] = process.argv.slice(2);
const fs = require('fs'); const tls = require('tls'); const http2 = require('http2');
const id = nocert ? {} : { cert: fs.readFileSync(dir + '/cert-chain.pem'), key: fs.readFileSync(dir + '/key.pem') };
const opts = { host: '10.9.8.1', port: 8080, servername: sni, ca: fs.readFileSync(dir + '/root-cert.pem'), ...(alpn === 'none' ? {} : { ALPNProtocols: alpn.split(',') }), checkServerIdentity: () => undefined, ...id };
const fail = (e) => { console.log('error: ' + e.message); process.exit(0); };
setTimeout(() => fail(new Error('timeout')), 5000).unref();
if (proto === 'h2') {
  const s = http2.connect('https://10.9.8.1:8080', { createConnection: () => tls.connect(opts) });
  s.on('error', fail);
  const r = s.request({ ':path': reqPath, ':authority': 'web.default.svc.cluster.local' });
  let body = ''; let status = 0; r.on('response', (h) => { status = h[':status']; });
  r.setEncoding('utf8'); r.on('data', (c) => { body += c; }); r.on('end', () => { console.log(body || 'status ' + status); s.close(); }); r.on('error', fail); r.end();
} else {
  const upgrade = proto === 'ws' ? 'Upgrade: websocket\\r\\nConnection: Upgrade\\r\\n' : 'Connection: close\\r\\n';
  const c = tls.connect(opts, () => c.write('GET ' + reqPath + ' HTTP/1.1\\r\\nHost: web.default.svc.cluster.local\\r\\n' + upgrade + '\\r\\n'));
  let out = ''; c.setEncoding('utf8'); c.on('data', (d) => { out += d; }); c.on('end', () => { const body = out.split('\\r\\n\\r\\n').slice(1).join(''); console.log(body || 'raw: ' + JSON.stringify(out)); }); c.on('error', fail);
}
`;

describe('sidecar inbound: D1 (a Service port) and D2 (any other port)', function () {
  this.timeout(60_000);
  const procs: ChildProcess[] = [];
  let dir: string;
  let made = false;
  const log = () => accessLogIn(dir);

  before(function () {
    const missing = missingForCapture();
    if (missing.length > 0) {
      console.warn(`    SKIPPED sidecar inbound tests: missing ${missing.join(', ')}`);
      this.skip();
    }
  });

  before(async function () {
    if (this.currentTest?.isPending()) return;
    const work = sharedWorkDir('meshgate-inbound-');
    dir = work.dir;
    fs.writeFileSync(path.join(dir, 'app.js'), APP, { mode: 0o644 });
    const cfg = work.cfg;
    fs.writeFileSync(path.join(cfg, 'config.yaml'), `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: ${dir}/access.log
    protocolDetectionTimeout: 200ms
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
# Another namespace's Service selects no pod here, whatever its selector: 9090 stays unnamed.
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: other}
spec:
  selector: {app: web}
  ports: [{name: http, port: 90, targetPort: 9090}]
`);
    execFileSync('ip', ['netns', 'add', POD]);
    execFileSync('ip', ['netns', 'add', CLIENT]);
    made = true;
    execFileSync('ip', ['link', 'add', 'in0', 'netns', POD, 'type', 'veth', 'peer', 'name', 'cl0', 'netns', CLIENT]);
    for (const [ns, dev, addr] of [[POD, 'in0', '10.9.8.1/24'], [CLIENT, 'cl0', '10.9.8.2/24']] as const) {
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      execFileSync('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev]);
      execFileSync('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    }
    const app = spawn('ip', ['netns', 'exec', POD, process.execPath, path.join(dir, 'app.js')], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(app);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('app did not start')), 10_000);
      app.stdout!.on('data', (c: Buffer) => { if (c.toString().includes('ready')) { clearTimeout(t); resolve(); } });
    });
    // Mesh identities from one mesh CA: the sidecar's (web) and a caller's (sleep), for inbound mTLS.
    const caDir = path.join(dir, 'mesh-ca');
    for (const [who, sa] of [['web', 'web'], ['sleep', 'sleep']] as const) {
      await writeMeshCertificates({ out: path.join(dir, who), caDir, identity: `spiffe://cluster.local/ns/default/sa/${sa}`, dnsNames: [], caName: 'test mesh CA', days: 1, newCa: false });
      fs.chmodSync(path.join(dir, who), 0o755);
      shareFiles(path.join(dir, who));
    }
    fs.writeFileSync(path.join(dir, 'mtls-client.js'), MTLS_CLIENT, { mode: 0o644 });
    execFileSync('ip', ['netns', 'exec', POD, process.execPath, MESHGATE_BIN, 'iptables', '--apply', '--include-inbound-ports', '*']);
    const sidecar = spawn('ip', ['netns', 'exec', POD, 'setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', process.execPath, MESHGATE_BIN,
      'run', '--mode', 'sidecar', '--inbound-port', '15006', '--labels', 'app=web', '--namespace', 'default', '--config', cfg, '--mesh-certs', path.join(dir, 'web'),
      '--admin-port', '0', '--status-port', '0', '--metrics-port', String(METRICS_PORT), '--agent-port', '0', '--log-level', 'warn'], { stdio: 'ignore' });
    procs.push(sidecar);
    await waitFor(async () => (await inClient(['curl', '-s', '-m', '2', 'http://10.9.8.1:8080/'])).out.startsWith('app:8080'), { timeoutMs: 15_000, intervalMs: 250 });
  });

  after(() => {
    for (const p of procs) p.kill('SIGKILL');
    if (made) {
      execFileSync('ip', ['netns', 'del', POD]);
      execFileSync('ip', ['netns', 'del', CLIENT]);
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  // The walkthrough's D1 line: the upstream connection's own end is 127.0.0.6 (%UPSTREAM_LOCAL_ADDRESS%).
  it('D1: a Service port reaches the application from 127.0.0.6 as inbound|8080||', async () => {
    const r = await inClient(['curl', '-s', '-m', '5', 'http://10.9.8.1:8080/']);
    assert.equal(r.out, 'app:8080 saw 127.0.0.6\n');
    await waitFor(() => /"GET \/ HTTP\/1\.1" 200 - via_upstream .* "10\.9\.8\.1:8080" "10\.9\.8\.1:8080" inbound\|8080\|\| 127\.0\.0\.6:\d+ 10\.9\.8\.1:8080 10\.9\.8\.2:\d+ - default$/m.test(log()), { timeoutMs: 3000 }).catch(() => assert.fail(log()));
  });

  it('D2: a port no Service names goes to InboundPassthroughCluster', async () => {
    const r = await inClient(['curl', '-s', '-m', '5', 'http://10.9.8.1:9090/']);
    assert.equal(r.out, 'app:9090 saw 127.0.0.6\n');
    await waitFor(() => /"10\.9\.8\.1:9090" InboundPassthroughCluster 127\.0\.0\.6:\d+ 10\.9\.8\.1:9090 10\.9\.8\.2:\d+ - default$/m.test(log()), { timeoutMs: 3000 }).catch(() => assert.fail(log()));
  });

  // Istio: the server side reports its inbound requests, as the destination; this workload (app=web
  // in namespace default) in destination_*, the plaintext client unknown, connection_security_policy none.
  // destination_service names the Service of the port (Istio's inbound cluster metadata), not the cluster.
  it('metrics: inbound requests are reported by the destination (this workload), the plaintext peer unknown', async () => {
    await inClient(['curl', '-s', '-m', '5', 'http://10.9.8.1:8080/metrics-check']);
    let line: string | undefined;
    await waitFor(() => (line = scrape('istio_requests_total').find((l) => l.includes('destination_service="web.default.svc.cluster.local"'))) !== undefined, { timeoutMs: 3000 })
      .catch(() => assert.fail(scrape('istio_requests_total').join('\n')));
    assert.match(line!, /^istio_requests_total\{reporter="destination",source_workload="unknown",/);
    assert.match(line!, /source_workload_namespace="unknown",source_principal="unknown",source_app="unknown",source_version="unknown"/);
    assert.match(line!, /destination_workload="web",destination_workload_namespace="default",destination_principal="unknown",destination_app="web",/);
    assert.match(line!, /destination_service_name="web",destination_service_namespace="default",/);
    assert.match(line!, /connection_security_policy="none"\}/);
    assert.ok(!scrape('istio_requests_total').some((l) => l.includes('inbound|')), 'no series names the inbound cluster');
    assert.ok(!scrape('istio_requests_total').some((l) => l.includes('reporter="source"')), 'no inbound request is reported by the source');
  });

  it("metrics: a caller's Istio peer metadata names it in source_* (reporter destination); the application never sees the headers", async () => {
    const md = encodePeerMetadata({
      CLUSTER_ID: 'Kubernetes', NAME: 'reviews-v3-58b6479b-62rv5', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'reviews-v3',
      LABELS: { app: 'reviews', version: 'v3', 'service.istio.io/canonical-name': 'reviews' },
    });
    const r = await inClient(['curl', '-s', '-m', '5', '-H', `x-envoy-peer-metadata: ${md}`, '-H', 'x-envoy-peer-metadata-id: sidecar~10.9.8.2~reviews-v3-58b6479b-62rv5.bookinfo~bookinfo.svc.cluster.local', 'http://10.9.8.1:8080/mx']);
    assert.equal(r.out, 'mx:-,-', 'the metadata headers stop at the sidecar');
    let line: string | undefined;
    await waitFor(() => (line = scrape('istio_requests_total').find((l) => l.includes('source_workload="reviews-v3"'))) !== undefined, { timeoutMs: 3000 })
      .catch(() => assert.fail(scrape('istio_requests_total').join('\n')));
    assert.match(line!, /^istio_requests_total\{reporter="destination",source_workload="reviews-v3",source_canonical_service="reviews",source_canonical_revision="v3",source_workload_namespace="bookinfo",source_principal="unknown",source_app="reviews",source_version="v3",source_cluster="Kubernetes",destination_workload="web",/);
  });

  it("the exchange's answer: a caller that sent its peer metadata gets this workload's in the response; other callers get none", async () => {
    const md = encodePeerMetadata({ NAME: 'reviews-v3-58b6479b-62rv5', NAMESPACE: 'bookinfo', WORKLOAD_NAME: 'reviews-v3', LABELS: { app: 'reviews' } });
    const headersOf = (out: string) => Object.fromEntries(out.split('\r\n\r\n')[0]!.split('\r\n').slice(1).map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
    }));
    const mesh = headersOf((await inClient(['curl', '-s', '-i', '-m', '5', '-H', `x-envoy-peer-metadata: ${md}`, 'http://10.9.8.1:8080/'])).out);
    const answer = decodePeerMetadata(mesh['x-envoy-peer-metadata']);
    assert.ok(answer, JSON.stringify(mesh));
    assert.equal(answer['WORKLOAD_NAME'], 'web');
    assert.equal(answer['NAMESPACE'], 'default');
    assert.match(mesh['x-envoy-peer-metadata-id']!, /^sidecar~/);
    const plain = headersOf((await inClient(['curl', '-s', '-i', '-m', '5', 'http://10.9.8.1:8080/'])).out);
    assert.equal(plain['x-envoy-peer-metadata'], undefined);
    assert.equal(plain['x-envoy-peer-metadata-id'], undefined);
  });

  // Istio's inbound for ISTIO_MUTUAL peers: the mesh mTLS is terminated by the sidecar (PERMISSIVE:
  // the plaintext requests above still pass), the application sees plain HTTP from 127.0.0.6 and the
  // caller in x-forwarded-client-cert; metrics say mutual_tls with both principals.
  it("inbound mesh mTLS: a mesh peer's ISTIO_MUTUAL (SNI outbound_..., or Istio's ALPN) is terminated; HTTP/1.1 and HTTP/2; mutual_tls in metrics", async () => {
    const client = (reqPath: string, sni: string, alpn: string, ...more: string[]) => inClient([process.execPath, path.join(dir, 'mtls-client.js'), path.join(dir, 'sleep'), reqPath, sni, alpn, ...more]);
    const meshSni = 'outbound_.80_._.web.default.svc.cluster.local';
    assert.equal((await client('/', meshSni, 'http/1.1')).out, 'app:8080 saw 127.0.0.6\n\n');
    assert.equal((await client('/', meshSni, 'h2', 'h2')).out, 'app:8080 saw 127.0.0.6\n\n');
    // An Istio sidecar's client: its ALPN says mesh mTLS whatever the SNI.
    assert.equal((await client('/', 'web.default.svc.cluster.local', 'istio-http/1.1')).out, 'app:8080 saw 127.0.0.6\n\n');
    const xfcc = (await client('/xfcc', meshSni, 'http/1.1')).out;
    assert.match(xfcc, /^xfcc:By=spiffe:\/\/cluster\.local\/ns\/default\/sa\/web;Hash=[0-9a-f]{64};Subject="[^"]*";URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep\n$/);
    // HTTP/2 with no ALPN at all (the bytes say it), and Istio's TCP ALPN (to the application as TCP at once).
    assert.equal((await client('/', meshSni, 'none', 'h2')).out, 'app:8080 saw 127.0.0.6\n\n');
    assert.equal((await client('/', 'web', 'istio', 'http1')).out, 'app:8080 saw 127.0.0.6\n\n');
    // WebSocket over mesh mTLS: the upgrade reaches the application, with the caller's certificate.
    assert.match((await client('/ws', meshSni, 'http/1.1', 'ws')).out, /^ws:8080 from 127\.0\.0\.6 xfcc=yes\n$/);
    // No client certificate: refused in the handshake.
    assert.match((await client('/', meshSni, 'http/1.1', 'http1', 'nocert')).out, /^error: /);
    let line: string | undefined;
    await waitFor(() => (line = scrape('istio_requests_total').find((l) => l.includes('connection_security_policy="mutual_tls"'))) !== undefined, { timeoutMs: 3000 })
      .catch(() => assert.fail(scrape('istio_requests_total').join('\n')));
    assert.match(line!, /reporter="destination"/);
    assert.match(line!, /source_workload_namespace="default",source_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep"/);
    assert.match(line!, /destination_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/web"/);
    assert.ok(scrape('istio_requests_total').some((l) => l.includes('connection_security_policy="none"')), 'plaintext requests stay none');
  });

  it('the mesh config\'s protocolDetectionTimeout (200ms here): a caller silent for longer is carried as TCP', async () => {
    const r = await inClient(['sh', '-c', "(sleep 0.6; printf 'GET /late HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'; sleep 1) | nc -w 3 10.9.8.1 9090"]);
    assert.match(r.out, /app:9090 saw 127\.0\.0\.6/, 'the bytes still reach the application');
    await waitFor(() => /"- - -" 0 - - - "-" \d+ \d+ \d+ - "-" "-" "-" "-" "10\.9\.8\.1:9090" InboundPassthroughCluster /m.test(log()), { timeoutMs: 3000 }).catch(() => assert.fail(log()));
    assert.doesNotMatch(log(), /"GET \/late /, 'not parsed as HTTP: detection had given up');
  });

  it('h2c with prior knowledge (gRPC callers) on a Service port reaches the application', async () => {
    const r = await inClient(['curl', '-s', '-m', '5', '--http2-prior-knowledge', 'http://10.9.8.1:8080/']);
    assert.equal(r.out, 'app:8080 saw 127.0.0.6\n');
  });

  it('a plaintext caller cannot claim an identity: its x-forwarded-client-cert is dropped', async () => {
    const r = await inClient(['curl', '-s', '-m', '5', '-H', 'x-forwarded-client-cert: By=spiffe://cluster.local/ns/default/sa/web;URI=spiffe://cluster.local/ns/prod/sa/admin', 'http://10.9.8.1:8080/xfcc']);
    assert.equal(r.out, 'xfcc:-');
  });

  it('WebSocket upgrades reach the application on Service and other ports (inbound|PORT||, InboundPassthroughCluster)', async () => {
    for (const port of [8080, 9090]) {
      const r = await inClient(['sh', '-c', `printf 'GET /ws HTTP/1.1\\r\\nHost: web\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n' | nc -w 2 10.9.8.1 ${port}`]);
      assert.match(r.out, /^HTTP\/1\.1 101 /, `port ${port}: ${r.out}`);
      assert.ok(r.out.endsWith(`ws:${port} from 127.0.0.6 xfcc=no`), r.out);
    }
    await waitFor(() => /"GET \/ws HTTP\/1\.1" 101 .* InboundPassthroughCluster 127\.0\.0\.6:\d+ 10\.9\.8\.1:9090 /m.test(log()), { timeoutMs: 3000 }).catch(() => assert.fail(log()));
  });

  it('metrics: a malformed inbound request (400) is reported by the destination too', async () => {
    await inClient(['sh', '-c', "printf 'GET / HTTP/1.1\\r\\nHost: a\\r\\nbad header\\r\\n\\r\\n' | nc -w 2 10.9.8.1 8080"]);
    let line: string | undefined;
    await waitFor(() => (line = scrape('istio_requests_total').find((l) => l.includes('response_code="400"'))) !== undefined, { timeoutMs: 3000 })
      .catch(() => assert.fail(`${scrape('istio_requests_total').join('\n')}\n${log()}`));
    assert.match(line!, /^istio_requests_total\{reporter="destination",/);
    assert.match(line!, /response_flags="DPE"/);
  });

  it('metrics: an inbound TCP connection is reported by the destination too', async () => {
    await inClient(['sh', '-c', "printf 'not http\\r\\n\\r\\n' | nc -w 2 10.9.8.1 9090"]);
    let line: string | undefined;
    await waitFor(() => (line = scrape('istio_tcp_connections_opened_total').find((l) => l.includes('destination_service="InboundPassthroughCluster"'))) !== undefined, { timeoutMs: 3000 })
      .catch(() => assert.fail(`${scrape('istio_tcp_connections_opened_total').join('\n')}\n${log()}`));
    assert.match(line!, /^istio_tcp_connections_opened_total\{reporter="destination",source_workload="unknown",/);
    assert.match(line!, /destination_workload="web",destination_workload_namespace="default",/);
    assert.match(line!, /request_protocol="tcp",response_flags="-",connection_security_policy="none"\}/);
  });
});
