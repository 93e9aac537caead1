// ServiceEntry resolution NONE at a gateway (the wildcard-egress pattern): the request's own host,
// the SNI for TLS passthrough or the Host for HTTP, is resolved through DNS and reached on the
// service port; a name that does not resolve is 503 DF (HTTP) or a closed connection (TLS).

import assert from 'node:assert/strict';
import https from 'node:https';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { TestDnsServer } from '../helpers/dns-server';
import { makeCa, makeLeaf, type CaPem } from '../helpers/certs';
import { curl, waitFor, withHttpbin } from '../helpers/upstream';
import { httpGatewayYaml } from '../../src/sample/configs';
import type { HttpbinServer } from '../../src/sample/httpbin';

describe('resolution NONE at a gateway: the requested host, resolved', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let dns: TestDnsServer;
  let httpbin: HttpbinServer;
  let wiki: https.Server;
  let ca: CaPem;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-odst-'));
    ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'wiki', ['*.wikipedia.test']);
    wiki = https.createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => res.end(`wiki ${req.headers.host}\n`));
    await new Promise<void>((r) => wiki.listen(0, '127.0.0.1', r));
    httpbin = await withHttpbin('any-site');
    dns = await new TestDnsServer().start();
    dns.setRecords('en.wikipedia.test', { a: ['127.0.0.1'], ttl: 30 });
    dns.setRecords('de.wikipedia.test', { a: ['127.0.0.1'], ttl: 30 });
    dns.setRecords('api.sites.test', { a: ['127.0.0.1'], ttl: 30 });
    const wikiPort = (wiki.address() as { port: number }).port;
    gw = await startGateway({
      'egress.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wikipedia, namespace: default}
spec:
  hosts: ["*.wikipedia.test"]
  ports: [{number: 443, name: tls, protocol: TLS, targetPort: ${wikiPort}}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: sites, namespace: default}
spec:
  hosts: ["*.sites.test"]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: ${httpbin.port}}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: ["*.wikipedia.test"], tls: {mode: PASSTHROUGH}}
---
${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wikipedia, namespace: default}
spec:
  hosts: ["*.wikipedia.test"]
  gateways: [egress]
  tls: [{match: [{port: 443, sniHosts: ["*.wikipedia.test"]}], route: [{destination: {host: "*.wikipedia.test", port: {number: 443}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sites, namespace: default}
spec:
  hosts: ["*.sites.test"]
  gateways: [gw]
  http: [{route: [{destination: {host: "*.sites.test", port: {number: 80}}}]}]
`,
    }, { serverPorts: [443, 80], opts: { dnsServers: [dns.address] } });
  });
  after(async () => {
    await gw?.stop();
    wiki?.close();
    await httpbin?.close();
    await dns?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('TLS passthrough to a wildcard host: each SNI is resolved and reached', async () => {
    for (const name of ['en.wikipedia.test', 'de.wikipedia.test']) {
      const r = await curl(['-s', '--resolve', `${name}:${gw.port(443)}:127.0.0.1`, '--cacert', ca.certFile, `https://${name}:${gw.port(443)}/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `wiki ${name}:${gw.port(443)}\n`);
    }
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => l.includes('outbound|443||*.wikipedia.test') && l.endsWith(' en.wikipedia.test -')); }, { timeoutMs: 3000 });
  });

  it('a name DNS does not know: the TLS connection is closed, logged DF', async () => {
    const r = await curl(['-s', '--resolve', `xx.wikipedia.test:${gw.port(443)}:127.0.0.1`, '--cacert', ca.certFile, `https://xx.wikipedia.test:${gw.port(443)}/`]);
    assert.notEqual(r.code, 0);
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => /"- - -" 0 DF /.test(l) && l.endsWith(' xx.wikipedia.test -')); }, { timeoutMs: 5000 });
  });

  it('HTTP to a wildcard host: the Host is resolved; an unknown one is 503 DF', async () => {
    const ok = await curl(['-s', '-i', '-H', 'Host: api.sites.test', `http://127.0.0.1:${gw.port(80)}/get`]);
    assert.match(ok.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*x-served-by: any-site\r\n/);
    const bad = await curl(['-s', '-i', '-H', 'Host: nowhere.sites.test', `http://127.0.0.1:${gw.port(80)}/get`]);
    assert.match(bad.stdout, /^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*\r\n\r\nDNS resolution failure$/);
    await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => l.includes('503 DF dns_resolution_failure')); }, { timeoutMs: 3000 });
  });
});
