// credentialName CAs on real TLS connections, in the layout cert-manager leaves: Secret `cred` with
// tls.crt/tls.key and ca.crt = the server certificate's issuer, and Secret `cred-cacert` with the CA
// that signs clients. Istio checks clients against `cred-cacert`; a DestinationRule's credentialName
// likewise takes its CA from `<name>-cacert` first, and may have no `<name>` Secret at all (SIMPLE).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { makeCa, makeLeaf, tlsSecretYaml, type CaPem } from '../helpers/certs';
import { curl, listenLoopback, portOf, withHttpbin } from '../helpers/upstream';
import type { HttpbinServer } from '../../src/sample/httpbin';
import { loopbackServiceEntryYaml } from '../../src/sample/configs';

const b64 = (s: string) => Buffer.from(s).toString('base64');

function genericSecretYaml(name: string, data: Record<string, string>): string {
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: istio-system}
type: Opaque
data:
${Object.entries(data).map(([k, v]) => `  ${k}: ${b64(v)}\n`).join('')}---
`;
}

describe('credentialName CA from <name>-cacert (Istio precedence)', function () {
  this.timeout(60_000);
  let dir: string;
  let gw: TestGateway;
  let serverCa: CaPem;
  let clientCa: CaPem;
  let upstreamCa: CaPem;
  let httpbin: HttpbinServer;
  let web: https.Server;
  let mtlsWeb: https.Server;
  const clientSeen: string[] = [];
  const resolve = (host: string, port: number) => ['--resolve', `${host}:${port}:127.0.0.1`];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-cacert-'));
    serverCa = await makeCa(dir, 'server-ca');
    clientCa = await makeCa(dir, 'client-ca');
    upstreamCa = await makeCa(dir, 'upstream-ca');
    httpbin = await withHttpbin('httpbin-cacert');
    const upLeaf = await makeLeaf(dir, upstreamCa, 'up', ['up.example.com']);
    web = https.createServer({ cert: upLeaf.cert, key: upLeaf.key }, (_req, res) => res.end('upstream hello\n'));
    // Trusts only gateway certificates signed by the server CA.
    mtlsWeb = https.createServer({ cert: upLeaf.cert, key: upLeaf.key, ca: serverCa.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      clientSeen.push(String((req.socket as tls.TLSSocket).getPeerCertificate().subject?.CN ?? '-'));
      res.end('mutual upstream hello\n');
    });
    await Promise.all([listenLoopback(web), listenLoopback(mtlsWeb)]);
    const serverLeaf = await makeLeaf(dir, serverCa, 'mtls', ['mtls.example.com']);
    const gatewayClient = await makeLeaf(dir, serverCa, 'gateway-client', ['gateway.example.com'], true);
    const se = loopbackServiceEntryYaml;
    const dr = (name: string, host: string, tlsYaml: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: default}
spec:
  host: ${host}
  trafficPolicy: {tls: ${tlsYaml}}
---
`;
    gw = await startGateway({
      'secrets.yaml': tlsSecretYaml('cred', 'istio-system', serverLeaf, serverCa)
        + genericSecretYaml('cred-cacert', { cacert: clientCa.cert })
        // Only the CA Secret exists for this DestinationRule.
        + genericSecretYaml('up-cacert', { cacert: upstreamCa.cert })
        // The client certificate's Secret carries its own issuer as ca.crt; the upstream's CA is in -cacert.
        + tlsSecretYaml('upm', 'istio-system', gatewayClient, serverCa)
        + genericSecretYaml('upm-cacert', { 'ca.crt': upstreamCa.cert }),
      'upstreams.yaml': se('httpbin', 'httpbin.example.com', 8000, 'HTTP', httpbin.port)
        + se('up', 'up.example.com', 443, 'HTTPS', portOf(web))
        + se('upm', 'upm.example.com', 443, 'HTTPS', portOf(mtlsWeb))
        + dr('up', 'up.example.com', '{mode: SIMPLE, credentialName: up}')
        + dr('upm', 'upm.example.com', '{mode: MUTUAL, credentialName: upm, sni: up.example.com}'),
      'gateway.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, credentialName: cred}
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [up.example.com, upm.example.com]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [mtls.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: httpbin.example.com, port: {number: 8000}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: out, namespace: default}
spec:
  hosts: [up.example.com, upm.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {exact: up.example.com}}]
    route: [{destination: {host: up.example.com, port: {number: 443}}}]
  - route: [{destination: {host: upm.example.com, port: {number: 443}}}]
`,
    }, { serverPorts: [8443, 80] });
  });
  after(async () => {
    await gw?.stop();
    web?.close();
    mtlsWeb?.close();
    await httpbin?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('Gateway MUTUAL: clients are checked against cred-cacert, not ca.crt of cred', async () => {
    const p = gw.port(8443);
    const url = `https://mtls.example.com:${p}/status/200`;
    const code = (cert: string, key: string) => curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...resolve('mtls.example.com', p),
      '--cacert', serverCa.certFile, '--cert', cert, '--key', key, url]);
    const good = await makeLeaf(dir, clientCa, 'client', ['client.example.com'], true);
    const r = await code(good.certFile, good.keyFile);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '200');
    // Signed by the server's issuer (cred's ca.crt): not a CA this server trusts for clients.
    const wrong = await makeLeaf(dir, serverCa, 'wrong-client', ['wrong.example.com'], true);
    assert.notEqual((await code(wrong.certFile, wrong.keyFile)).stdout, '200');
  });

  const get = (host: string) => curl(['-s', '-i', '-H', `Host: ${host}`, `http://127.0.0.1:${gw.port(80)}/`]);

  it('DestinationRule SIMPLE: a credentialName whose only Secret is <name>-cacert verifies the upstream', async () => {
    const r = await get('up.example.com');
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*upstream hello\n$/);
  });

  it('DestinationRule MUTUAL: client certificate from <name>, upstream CA from <name>-cacert', async () => {
    const r = await get('upm.example.com');
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*mutual upstream hello\n$/);
    assert.equal(clientSeen.at(-1), 'gateway.example.com');
  });
});
