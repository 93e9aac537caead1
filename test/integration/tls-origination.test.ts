// TLS origination from DestinationRule trafficPolicy.tls (the egress TLS-origination task: plain HTTP
// in, HTTPS out): SIMPLE with a CA file, MUTUAL with a Secret, SNI, verification failures as 503 UF,
// subjectAltNames (DNS wildcard SANs cover one label), and a TCP route whose upstream speaks TLS.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { makeCa, makeLeaf, tlsSecretYaml, type CaPem } from '../helpers/certs';
import { curl, listenLoopback, portOf } from '../helpers/upstream';
import { loopbackServiceEntryYaml } from '../../src/sample/configs';

describe('TLS origination (DestinationRule tls)', function () {
  this.timeout(60_000);
  let dir: string;
  let gw: TestGateway;
  let ca: CaPem;
  let ca2: CaPem;
  let web: https.Server;
  let mtlsWeb: https.Server;
  let echo: tls.Server;
  let wildWeb: https.Server;
  const sniSeen: string[] = [];
  const clientSeen: string[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-orig-'));
    ca = await makeCa(dir, 'ca');
    ca2 = await makeCa(dir, 'ca2');
    const leaf = await makeLeaf(dir, ca, 'api', ['api.example.com', 'other.example.com']);
    web = https.createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
      sniSeen.push(String((req.socket as tls.TLSSocket).servername || '-'));
      res.end(`secure hello ${req.url}\n`);
    });
    mtlsWeb = https.createServer({ cert: leaf.cert, key: leaf.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      clientSeen.push(String((req.socket as tls.TLSSocket).getPeerCertificate().subject?.CN ?? '-'));
      res.end('mutual hello\n');
    });
    echo = tls.createServer({ cert: leaf.cert, key: leaf.key }, (s) => s.pipe(s));
    const wildLeaf = await makeLeaf(dir, ca, 'wild', ['*.wild.example.com']);
    wildWeb = https.createServer({ cert: wildLeaf.cert, key: wildLeaf.key }, (req, res) => res.end(`wild hello ${req.url}\n`));
    await Promise.all([listenLoopback(web), listenLoopback(mtlsWeb), listenLoopback(echo), listenLoopback(wildWeb)]);
    const client = await makeLeaf(dir, ca, 'gateway-client', ['gateway.example.com'], true);
    const se = loopbackServiceEntryYaml;
    const dr = (name: string, host: string, tlsYaml: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: default}
spec:
  host: ${host}
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: ${tlsYaml}
---
`;
    gw = await startGateway({
      'client-secret.yaml': tlsSecretYaml('client-credential', 'istio-system', client, ca),
      'upstreams.yaml': se('api', 'api.example.com', 443, 'HTTPS', portOf(web))
        + se('wrong-ca', 'other.example.com', 443, 'HTTPS', portOf(web))
        + se('san', 'san.example.com', 443, 'HTTPS', portOf(web))
        + se('skip', 'skip.example.com', 443, 'HTTPS', portOf(web))
        + se('mtls', 'mtls.example.com', 443, 'HTTPS', portOf(mtlsWeb))
        + se('echo', 'echo.example.com', 443, 'TLS', portOf(echo))
        + se('wild-one', 'wild-one.example.com', 443, 'HTTPS', portOf(wildWeb))
        + se('wild-two', 'wild-two.example.com', 443, 'HTTPS', portOf(wildWeb))
        + se('wild-apex', 'wild-apex.example.com', 443, 'HTTPS', portOf(wildWeb))
        + dr('api', 'api.example.com', `{mode: SIMPLE, caCertificates: ${ca.certFile}}`)
        + dr('wrong-ca', 'other.example.com', `{mode: SIMPLE, caCertificates: ${ca2.certFile}}`)
        + dr('san', 'san.example.com', `{mode: SIMPLE, caCertificates: ${ca.certFile}, sni: api.example.com, subjectAltNames: [spiffe://nope]}`)
        + dr('skip', 'skip.example.com', '{mode: SIMPLE, insecureSkipVerify: true}')
        + dr('mtls', 'mtls.example.com', '{mode: MUTUAL, credentialName: client-credential, sni: api.example.com}')
        + dr('echo', 'echo.example.com', `{mode: SIMPLE, caCertificates: ${ca.certFile}, sni: api.example.com}`)
        + dr('wild-one', 'wild-one.example.com', `{mode: SIMPLE, caCertificates: ${ca.certFile}, subjectAltNames: [api.wild.example.com]}`)
        + dr('wild-two', 'wild-two.example.com', `{mode: SIMPLE, caCertificates: ${ca.certFile}, subjectAltNames: [a.b.wild.example.com]}`)
        + dr('wild-apex', 'wild-apex.example.com', `{mode: SIMPLE, caCertificates: ${ca.certFile}, subjectAltNames: [wild.example.com]}`),
      'routes.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 9000, name: tcp, protocol: TCP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: origination, namespace: default}
spec:
  hosts: [api.example.com, other.example.com, san.example.com, skip.example.com, mtls.example.com, wild-one.example.com, wild-two.example.com, wild-apex.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {exact: wild-one.example.com}}]
    route: [{destination: {host: wild-one.example.com, port: {number: 443}}}]
  - match: [{authority: {exact: wild-two.example.com}}]
    route: [{destination: {host: wild-two.example.com, port: {number: 443}}}]
  - match: [{authority: {exact: wild-apex.example.com}}]
    route: [{destination: {host: wild-apex.example.com, port: {number: 443}}}]
  - match: [{authority: {exact: api.example.com}}]
    route: [{destination: {host: api.example.com, port: {number: 443}}}]
  - match: [{authority: {exact: other.example.com}}]
    route: [{destination: {host: other.example.com, port: {number: 443}}}]
  - match: [{authority: {exact: san.example.com}}]
    route: [{destination: {host: san.example.com, port: {number: 443}}}]
  - match: [{authority: {exact: skip.example.com}}]
    route: [{destination: {host: skip.example.com, port: {number: 443}}}]
  - route: [{destination: {host: mtls.example.com, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp: [{match: [{port: 9000}], route: [{destination: {host: echo.example.com, port: {number: 443}}}]}]
`,
    }, { serverPorts: [80, 9000] });
  });
  after(async () => {
    await gw?.stop();
    web?.close();
    mtlsWeb?.close();
    echo?.close();
    wildWeb?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const get = (host: string, p = '/politics') => curl(['-s', '-i', '-H', `Host: ${host}`, `http://127.0.0.1:${gw.port(80)}${p}`]);

  it('SIMPLE: plain HTTP in, verified HTTPS out, SNI set to the host', async () => {
    const r = await get('api.example.com');
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.stdout, /secure hello \/politics\n$/);
    assert.equal(sniSeen.at(-1), 'api.example.com');
    await gw.waitForLine(/"GET \/politics HTTP\/1\.1" 200 - via_upstream .*outbound\|443\|\|api\.example\.com/);
  });

  it('an upstream certificate the CA does not vouch for: 503 UF, the reason in the log', async () => {
    const r = await get('other.example.com');
    assert.match(r.stdout, /^HTTP\/1\.1 503 /);
    const line = await gw.waitForLine(/outbound\|443\|\|other\.example\.com/);
    assert.match(line, / 503 UF,URX upstream_reset_before_response_started\{remote_connection_failure[^}]*\} - "TLS_error: UNABLE_TO_VERIFY_LEAF_SIGNATURE" /);
  });

  it('subjectAltNames the certificate does not carry: 503 UF', async () => {
    const r = await get('san.example.com');
    assert.match(r.stdout, /^HTTP\/1\.1 503 /);
  });

  it('subjectAltNames against a wildcard certificate: *.wild.example.com covers one label only', async () => {
    const one = await get('wild-one.example.com');
    assert.match(one.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*wild hello \/politics\n$/);
    const two = await get('wild-two.example.com');
    assert.match(two.stdout, /^HTTP\/1\.1 503 /);
    const apex = await get('wild-apex.example.com');
    assert.match(apex.stdout, /^HTTP\/1\.1 503 /);
  });

  it('insecureSkipVerify: an upstream nobody vouches for is still reached', async () => {
    const r = await get('skip.example.com');
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*secure hello \/politics\n$/);
    assert.equal(sniSeen.at(-1), 'skip.example.com');
  });

  it('MUTUAL: the gateway presents the client certificate from credentialName', async () => {
    const r = await get('mtls.example.com', '/');
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*mutual hello\n$/);
    assert.equal(clientSeen.at(-1), 'gateway.example.com');
  });

  it('a TCP route whose upstream speaks TLS', async () => {
    const out = await new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      const c = net.connect(gw.port(9000), '127.0.0.1', () => c.write('ping over tls\n'));
      c.on('data', (d: Buffer) => {
        chunks.push(d);
        if (Buffer.concat(chunks).includes('\n')) c.destroy();
      });
      c.on('error', () => {});
      c.on('close', () => resolve(Buffer.concat(chunks).toString()));
      setTimeout(() => c.destroy(), 5000);
    });
    assert.equal(out, 'ping over tls\n');
  });
});
