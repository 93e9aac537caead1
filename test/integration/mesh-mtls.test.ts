// ISTIO_MUTUAL between two meshgates, as istio.io's egress-gateway-tls-origination task sets it up:
// the first proxy's DestinationRule for the egress gateway says ISTIO_MUTUAL (sni edition.cnn.com),
// the egress gateway's Gateway server is HTTPS with tls.mode ISTIO_MUTUAL. Both hold a mesh identity
// made by `meshgate certs --mesh` from one mesh CA. The hop is mTLS and HTTP/2 (ALPN), and the egress
// gateway originates TLS to the site. Peers without a mesh certificate are refused.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { httpGatewayYaml } from '../../src/sample/configs';
import { writeMeshCertificates } from '../../src/tls/dev-certs';
import { MESH_CERT_NAMES, type MeshCertFiles } from '../../src/tls/secrets';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { makeCa, makeLeaf } from '../helpers/certs';
import { curl, freePort } from '../helpers/upstream';

async function meshIdentity(caDir: string, out: string, identity: string): Promise<MeshCertFiles> {
  await writeMeshCertificates({ out, caDir, identity, dnsNames: [], caName: 'test mesh CA', days: 1, newCa: false });
  return { cert: path.join(out, MESH_CERT_NAMES.cert), key: path.join(out, MESH_CERT_NAMES.key), ca: path.join(out, MESH_CERT_NAMES.ca) };
}

describe('ISTIO_MUTUAL between meshgates (mesh certificates from meshgate certs --mesh)', function () {
  this.timeout(30_000);
  let dir: string;
  let site: https.Server;
  let egress: TestGateway;
  let sidecar: TestGateway;
  let siteCa: string;
  let egressPort: number;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-mtls-'));
    const ca = await makeCa(dir, 'site-ca');
    siteCa = ca.certFile;
    const leaf = await makeLeaf(dir, ca, 'site', ['edition.cnn.com']);
    site = https.createServer({ cert: fs.readFileSync(leaf.certFile), key: fs.readFileSync(leaf.keyFile) }, (req, res) => {
      res.end(`site ${req.url} host=${req.headers.host}\n`);
    });
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    const sitePort = (site.address() as AddressInfo).port;
    const caDir = path.join(dir, 'mesh-ca');
    const egressId = await meshIdentity(caDir, path.join(dir, 'egress'), 'spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account');
    const sleepId = await meshIdentity(caDir, path.join(dir, 'sleep'), 'spiffe://cluster.local/ns/default/sa/sleep');
    egressPort = await freePort();
    // The egress gateway: Gateway 80 HTTPS ISTIO_MUTUAL, and TLS origination to the site on 443.
    egress = await startGateway({
      'egress.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: https, protocol: HTTPS}
    hosts: [edition.cnn.com]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  ports: [{number: 80, name: http-port, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS, targetPort: ${sitePort}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-cnn-through-egress-gateway, namespace: default}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway]
  http:
  - route: [{destination: {host: edition.cnn.com, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-tls-for-edition-cnn-com, namespace: default}
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, caCertificates: ${siteCa}}
`,
    }, { opts: { labels: { istio: 'egressgateway' }, meshCerts: egressId, portMap: new Map([[80, egressPort]]) } });
    // The client side (a gateway here; the same cluster code runs in sidecar mode).
    sidecar = await startGateway({
      'to-egress.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  ports: [{number: 80, name: http2, protocol: HTTP2, targetPort: ${egressPort}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-cnn, namespace: default}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
    trafficPolicy:
      # A connection per request: each after the first resumes its TLS session with the egress gateway.
      connectionPool: {http: {maxRequestsPerConnection: 1}}
      portLevelSettings:
      - port: {number: 80}
        tls: {mode: ISTIO_MUTUAL, sni: edition.cnn.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-egress, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, subset: cnn, port: {number: 80}}}]
`,
    // In namespace default, as the task's sleep pod: the DestinationRule for the egress gateway is there.
    }, { opts: { meshCerts: sleepId, namespace: 'default' } });
  });

  after(async () => {
    await sidecar?.stop();
    await egress?.stop();
    await new Promise((resolve) => site?.close(resolve));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('plain HTTP in, mTLS + HTTP/2 to the egress gateway, TLS to the site; both logs read as Istio\'s', async () => {
    const r = await curl(['-s', '-i', '-H', 'Host: edition.cnn.com', `http://127.0.0.1:${sidecar.port(80)}/politics`]);
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n/, r.stdout);
    assert.match(r.stdout, /site \/politics host=edition\.cnn\.com\n$/);
    const eg = await egress.waitForLines(1);
    assert.match(eg[0]!, /"GET \/politics HTTP\/2" 200 - via_upstream .* "edition\.cnn\.com" "127\.0\.0\.1:\d+" outbound\|443\|\|edition\.cnn\.com /);
    const sc = await sidecar.waitForLines(1);
    assert.match(sc[0]!, /"GET \/politics HTTP\/1\.1" 200 .* outbound\|80\|cnn\|istio-egressgateway\.istio-system\.svc\.cluster\.local /);
  });

  it('the client side names both mesh identities in its metrics (source_principal, destination_principal), as Istio\'s', async () => {
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: edition.cnn.com', `http://127.0.0.1:${sidecar.port(80)}/principals`]);
    assert.equal(r.stdout, '200');
    const line = (await sidecar.app.metrics.render()).split('\n').find((l) => l.startsWith('istio_requests_total{') && l.includes('destination_service="istio-egressgateway.istio-system.svc.cluster.local"'));
    assert.ok(line, 'a series for the hop to the egress gateway');
    assert.match(line, /source_principal="spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep"/);
    assert.match(line, /destination_principal="spiffe:\/\/cluster\.local\/ns\/istio-system\/sa\/istio-egressgateway-service-account"/);
    assert.match(line, /destination_workload_namespace="istio-system"/);
    assert.match(line, /connection_security_policy="unknown"/);
    // The egress gateway's hop to the site is SIMPLE TLS with a certificate that has no URI SAN: unknown.
    const site = (await egress.app.metrics.render()).split('\n').find((l) => l.startsWith('istio_requests_total{') && l.includes('destination_service="edition.cnn.com"'));
    assert.ok(site);
    assert.match(site, /source_principal="unknown",/);
    assert.match(site, /destination_principal="unknown",/);
  });

  it('every request on a new connection (TLS sessions resumed with the egress gateway) is answered and names the egress identity', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: edition.cnn.com', `http://127.0.0.1:${sidecar.port(80)}/again/${i}`]);
      assert.equal(r.stdout, '200', `request ${i}`);
    }
    const lines = (await sidecar.app.metrics.render()).split('\n').filter((l) => l.startsWith('istio_requests_total{') && l.includes('destination_service="istio-egressgateway.istio-system.svc.cluster.local"'));
    assert.ok(lines.length > 0);
    for (const line of lines) assert.match(line, /destination_principal="spiffe:\/\/cluster\.local\/ns\/istio-system\/sa\/istio-egressgateway-service-account"/, line);
    // None needed a retry: the egress gateway resumed each session (a refused resumption fails the
    // handshake, and the retry on a full handshake would hide it from the status codes).
    const stats = await new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: sidecar.app.ports.admin, path: '/stats' }, (res) => {
        let body = '';
        res.on('data', (c) => { body += c; });
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    // (the counter is listed once it has counted)
    const retries = /cnn\|istio-egressgateway\.istio-system\.svc\.cluster\.local\.upstream_rq_retry: (\d+)/.exec(stats)?.[1] ?? '0';
    assert.equal(retries, '0', 'retries on the hop');
  });

  it('the egress gateway refuses a client without a mesh certificate, or with one from another CA', async () => {
    const meshRoot = path.join(dir, 'egress', MESH_CERT_NAMES.ca);
    const none = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', meshRoot, '-k', '--resolve', `edition.cnn.com:${egressPort}:127.0.0.1`, `https://edition.cnn.com:${egressPort}/`]);
    assert.notEqual(none.code, 0, 'a TLS client without a certificate must fail');
    assert.equal(none.stdout, '000');
    const other = await makeCa(dir, 'other-ca');
    const stranger = await makeLeaf(dir, other, 'stranger', ['stranger'], true);
    const foreign = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-k', '--cert', stranger.certFile, '--key', stranger.keyFile,
      '--resolve', `edition.cnn.com:${egressPort}:127.0.0.1`, `https://edition.cnn.com:${egressPort}/`]);
    assert.notEqual(foreign.code, 0);
    assert.equal(foreign.stdout, '000');
    // A mesh certificate gets in (the control).
    const sleep = path.join(dir, 'sleep');
    const member = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-k', '--cert', path.join(sleep, MESH_CERT_NAMES.cert), '--key', path.join(sleep, MESH_CERT_NAMES.key),
      '--resolve', `edition.cnn.com:${egressPort}:127.0.0.1`, `https://edition.cnn.com:${egressPort}/`]);
    assert.equal(member.stdout, '200');
  });
});
