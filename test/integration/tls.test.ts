// TLS on Gateway servers, end to end with curl and openssl: PASSTHROUGH routed by SNI (exact,
// wildcard, none, unknown) with the client verifying the upstream's own certificate; HTTPS
// termination (SIMPLE, MUTUAL, two hosts with their own certificates on one port, ALPN h2,
// certificate rotation without dropping connections); httpsRedirect.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { capturedLogger } from '../helpers/log';
import { makeCa, makeLeaf, tlsSecretYaml, type CaPem, type Pem } from '../helpers/certs';
import { curl, waitFor, withHttpbin } from '../helpers/upstream';
import type { HttpbinServer } from '../../src/sample/httpbin';
import { loopbackServiceEntryYaml, singleRouteYaml } from '../../src/sample/configs';
import { directTlsReads, switchedSockets } from '../../src/gateway/direct-reads';
import { seededBytes } from '../helpers/bytes';

/** `openssl s_client` with a short life; resolves its combined output. */
function sClient(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = execFile('openssl', ['s_client', ...args], { timeout: 5000 }, (_err, stdout, stderr) => resolve(`${stdout}\n${stderr}`));
    child.stdin?.end();
  });
}

/** GET /status/200 for httpbin.example.com through `agent`: the status and the local port of the connection used. */
function getStatus200(agent: https.Agent, port: number): Promise<{ status: number; port: number }> {
  return new Promise((done, fail) => {
    https.get({ host: '127.0.0.1', port, path: '/status/200', agent, headers: { host: 'httpbin.example.com' } }, (res) => {
      const local = res.socket.localPort ?? 0;
      res.resume();
      res.on('end', () => done({ status: res.statusCode ?? 0, port: local }));
    }).on('error', fail);
  });
}

describe('TLS gateway: passthrough by SNI and HTTPS termination', function () {
  this.timeout(60_000);
  let dir: string;
  let gw: TestGateway;
  let ca: CaPem;
  let ca2: CaPem;
  const upstreams: https.Server[] = [];
  let httpbin: HttpbinServer;
  let tlsPort: number;
  let httpsPort: number;
  const resolve = (host: string, port: number) => ['--resolve', `${host}:${port}:127.0.0.1`];

  /** A TLS upstream that answers with its own name. */
  async function tlsUpstream(name: string, leaf: Pem): Promise<number> {
    const s = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => res.end(`page from ${name}\n`));
    upstreams.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as { port: number }).port;
  }

  const serviceEntry = loopbackServiceEntryYaml;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-tls-'));
    ca = await makeCa(dir, 'ca');
    ca2 = await makeCa(dir, 'ca2');
    const nginxPort = await tlsUpstream('nginx', await makeLeaf(dir, ca, 'nginx', ['nginx.example.com']));
    const wildPort = await tlsUpstream('wild', await makeLeaf(dir, ca, 'wild', ['*.wild.test']));
    httpbin = await withHttpbin('httpbin-tls');
    gw = await startGateway({
      'upstreams.yaml': serviceEntry('nginx', 'nginx.example.com', 443, 'TLS', nginxPort)
        + serviceEntry('wild', 'any.wild.test', 443, 'TLS', wildPort)
        + serviceEntry('httpbin', 'httpbin.example.com', 8000, 'HTTP', httpbin.port),
      'secrets.yaml': tlsSecretYaml('httpbin-credential', 'istio-system', await makeLeaf(dir, ca, 'httpbin', ['httpbin.example.com']))
        + tlsSecretYaml('bookinfo-credential', 'istio-system', await makeLeaf(dir, ca2, 'bookinfo', ['bookinfo.example.com']))
        + tlsSecretYaml('mtls-credential', 'istio-system', await makeLeaf(dir, ca, 'mtls', ['mtls.example.com']), ca),
      'gateway.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [nginx.example.com, "*.wild.test"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8443, name: https-httpbin, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
  - port: {number: 8443, name: https-bookinfo, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-credential}
  - port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, credentialName: mtls-credential}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [httpbin.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [nginx.example.com, "*.wild.test"]
  gateways: [gw]
  tls:
  - match: [{port: 443, sniHosts: [nginx.example.com]}]
    route: [{destination: {host: nginx.example.com, port: {number: 443}}}]
  - match: [{port: 443, sniHosts: ["*.wild.test"]}]
    route: [{destination: {host: any.wild.test, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [httpbin.example.com, bookinfo.example.com, mtls.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: httpbin.example.com, port: {number: 8000}}}]}]
`,
    }, { serverPorts: [443, 8443, 80] });
    tlsPort = gw.port(443);
    httpsPort = gw.port(8443);
  });
  after(async () => {
    await gw?.stop();
    for (const s of upstreams) s.close();
    await httpbin?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('passthrough: curl verifies the upstream\'s own certificate and gets its page', async () => {
    const r = await curl(['-sv', ...resolve('nginx.example.com', tlsPort), '--cacert', ca.certFile, `https://nginx.example.com:${tlsPort}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /SSL certificate verify ok/);
    assert.match(r.stderr, /subject: CN=nginx\.example\.com/);
    assert.equal(r.stdout, 'page from nginx\n');
    await waitFor(() => gw.accessLines().some((l) => l.endsWith(' nginx.example.com -')), { timeoutMs: 3000 });
    const line = gw.accessLines().find((l) => l.endsWith(' nginx.example.com -'))!;
    assert.match(line, /"- - -" 0 - - - "-" \d+ \d+ \d+ - "-" "-" "-" "-" "127\.0\.0\.1:\d+" outbound\|443\|\|nginx\.example\.com 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ nginx\.example\.com -$/);
  });

  it('passthrough: a wildcard sniHost takes any name under it', async () => {
    const r = await curl(['-s', ...resolve('a.wild.test', tlsPort), '--cacert', ca.certFile, `https://a.wild.test:${tlsPort}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'page from wild\n');
  });

  it('passthrough: no SNI and an unknown SNI are closed and logged NR filter_chain_not_found', async () => {
    const noSni = await sClient(['-connect', `127.0.0.1:${tlsPort}`, '-noservername']);
    assert.doesNotMatch(noSni, /BEGIN CERTIFICATE/);
    const unknown = await curl(['-s', ...resolve('unknown.example.org', tlsPort), '--cacert', ca.certFile, `https://unknown.example.org:${tlsPort}/`]);
    assert.notEqual(unknown.code, 0);
    await waitFor(() => gw.accessLines().filter((l) => l.includes(' NR filter_chain_not_found ')).length >= 2, { timeoutMs: 3000 });
    const lines = gw.accessLines().filter((l) => l.includes(' NR filter_chain_not_found '));
    assert.ok(lines.some((l) => / - -$/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => / unknown\.example\.org -$/.test(l)), lines.join('\n'));
    assert.match(lines[0]!, /^\[[^\]]+\] "- - -" 0 NR filter_chain_not_found - "-" \d+ 0 \d+ - "-" "-" "-" "-" "-" - - 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ /);
  });

  it('passthrough: a client that resets in the middle of its ClientHello is logged with its own address', async () => {
    // The address is asked for when the connection is accepted: after the reset the kernel no longer
    // tells (getpeername fails), and this line showed `-` for the client.
    const client = net.connect(tlsPort, '127.0.0.1');
    client.on('error', () => {});
    await once(client, 'connect');
    const port = client.localPort;
    client.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
    await new Promise((r) => setTimeout(r, 300)); // the gateway has accepted it and waits for the rest
    client.resetAndDestroy();
    const line = await gw.waitForLine(new RegExp(` 127\\.0\\.0\\.1:${port} - -$`));
    assert.match(line, /^\[[^\]]+\] "- - -" 0 NR filter_chain_not_found - "-" 11 0 \d+ - "-" "-" "-" "-" "-" - - 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ - -$/);
  });

  it('HTTPS SIMPLE: ALPN h2, then the same routing (HTTP/2 418 from /status/418)', async () => {
    const r = await curl(['-s', '-i', ...resolve('httpbin.example.com', httpsPort), '--cacert', ca.certFile, `https://httpbin.example.com:${httpsPort}/status/418`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/2 418/);
    const h1 = await curl(['-s', '-i', '--http1.1', ...resolve('httpbin.example.com', httpsPort), '--cacert', ca.certFile, `https://httpbin.example.com:${httpsPort}/headers`]);
    assert.match(h1.stdout, /^HTTP\/1\.1 200 OK/);
    assert.match(h1.stdout, /"X-Forwarded-Proto": "https"/);
    await waitFor(() => gw.accessLines().some((l) => l.includes('"GET /status/418 HTTP/2" 418 ')), { timeoutMs: 3000 });
    const line = gw.accessLines().find((l) => l.includes('"GET /status/418 HTTP/2" 418 '))!;
    assert.match(line, / httpbin\.example\.com default\.web\.0$/);
  });

  it('two hosts on one port, each with its own certificate, picked by SNI', async () => {
    const book = await curl(['-sv', ...resolve('bookinfo.example.com', httpsPort), '--cacert', ca2.certFile, `https://bookinfo.example.com:${httpsPort}/status/200`]);
    assert.equal(book.code, 0, book.stderr);
    assert.match(book.stderr, /subject: CN=bookinfo\.example\.com/);
    // The other CA does not vouch for it.
    const wrongCa = await curl(['-s', ...resolve('bookinfo.example.com', httpsPort), '--cacert', ca.certFile, `https://bookinfo.example.com:${httpsPort}/status/200`]);
    assert.equal(wrongCa.code, 60, wrongCa.stderr);
  });

  it('MUTUAL: refused without a client certificate or with an untrusted one, served with a good one', async () => {
    const url = `https://mtls.example.com:${httpsPort}/status/200`;
    const without = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...resolve('mtls.example.com', httpsPort), '--cacert', ca.certFile, url]);
    assert.notEqual(without.code, 0);
    const client = await makeLeaf(dir, ca, 'client', ['client.example.com'], true);
    const withCert = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...resolve('mtls.example.com', httpsPort), '--cacert', ca.certFile,
      '--cert', client.certFile, '--key', client.keyFile, url]);
    assert.equal(withCert.code, 0, withCert.stderr);
    assert.equal(withCert.stdout, '200');
    // A certificate from a CA the server does not trust is refused too.
    const stranger = await makeLeaf(dir, ca2, 'stranger', ['stranger.example.com'], true);
    const wrong = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...resolve('mtls.example.com', httpsPort), '--cacert', ca.certFile,
      '--cert', stranger.certFile, '--key', stranger.keyFile, url]);
    assert.notEqual(wrong.stdout, '200');
  });

  // Istio's gateway default (SANITIZE_SET with subject, URI and DNS): the backend learns who the
  // verified client is, and a client cannot forge it.
  it('MUTUAL: the upstream gets x-forwarded-client-cert for the verified client certificate, never the client\'s own', async () => {
    const client = await makeLeaf(dir, ca, 'xfcc-client', ['client.example.com'], true);
    const r = await curl(['-s', ...resolve('mtls.example.com', httpsPort), '--cacert', ca.certFile, '--cert', client.certFile, '--key', client.keyFile,
      '-H', 'X-Forwarded-Client-Cert: By=spiffe://x;URI=spiffe://cluster.local/ns/x/sa/admin', `https://mtls.example.com:${httpsPort}/headers`]);
    assert.equal(r.code, 0, r.stderr);
    const xfcc = (JSON.parse(r.stdout) as { headers: Record<string, string> }).headers['X-Forwarded-Client-Cert'];
    const hash = new X509Certificate(client.cert).fingerprint256.replaceAll(':', '').toLowerCase();
    assert.equal(xfcc, `Hash=${hash};Subject="CN=client.example.com";URI=;DNS=client.example.com`);
  });

  it('httpsRedirect answers 301 to https on the HTTP server', async () => {
    const r = await curl(['-s', '-i', '-H', 'Host: httpbin.example.com', `http://127.0.0.1:${gw.port(80)}/status/200?a=1`]);
    assert.match(r.stdout, /^HTTP\/1\.1 301 /);
    assert.match(r.stdout, /\r\nlocation: https:\/\/httpbin\.example\.com\/status\/200\?a=1\r\n/);
  });

  it('rotates a certificate on Secret change: the new CA works, the old fails, open connections stay', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca.cert, servername: 'httpbin.example.com' });
    const get = () => getStatus200(agent, httpsPort);
    const before = await get();
    const version = gw.app.store.current.version;
    const rotated = await makeLeaf(dir, ca2, 'httpbin-rotated', ['httpbin.example.com']);
    const secrets = fs.readFileSync(path.join(gw.dir, 'secrets.yaml'), 'utf8').split(/^---\n/m).filter(Boolean);
    secrets[0] = tlsSecretYaml('httpbin-credential', 'istio-system', rotated).replace(/---\n$/, '');
    gw.write('secrets.yaml', secrets.map((d) => `${d.trimEnd()}\n---\n`).join(''));
    await waitFor(() => gw.app.store.current.version > version, { timeoutMs: 5000 });
    const after = await get();
    assert.equal(after.status, 200);
    assert.equal(after.port, before.port, 'the kept-alive connection made before the rotation is still in use');
    agent.destroy();
    const url = `https://httpbin.example.com:${httpsPort}/status/200`;
    const oldCa = await curl(['-s', ...resolve('httpbin.example.com', httpsPort), '--cacert', ca.certFile, url]);
    assert.equal(oldCa.code, 60, 'the old CA no longer verifies');
    const newCa = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...resolve('httpbin.example.com', httpsPort), '--cacert', ca2.certFile, url]);
    assert.equal(newCa.stdout, '200', newCa.stderr);
  });

  it('a reload that renames the server keeps serving a kept-alive HTTPS connection (not 404 until it reconnects)', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: [ca.cert, ca2.cert], servername: 'httpbin.example.com' });
    const get = () => getStatus200(agent, httpsPort);
    const before = await get();
    assert.equal(before.status, 200);
    const version = gw.app.store.current.version;
    gw.write('gateway.yaml', fs.readFileSync(path.join(gw.dir, 'gateway.yaml'), 'utf8').replace('name: https-httpbin', 'name: https-web'));
    await waitFor(() => gw.app.store.current.version > version, { timeoutMs: 5000 });
    const after = await get();
    assert.equal(after.port, before.port, 'the same connection');
    assert.equal(after.status, 200);
    agent.destroy();
  });

  it('HTTPS on one connection: read directly while the lane serves it, then by node:http for the rest of it (a chunked 1 MiB upload echoed byte-exact, one more request)', async () => {
    // (ca2: the rotation test above re-signed httpbin's certificate with it)
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: [ca.cert, ca2.cert], servername: 'httpbin.example.com' });
    const request = (method: string, urlPath: string, body?: Buffer) => new Promise<{ status: number; body: Buffer; port: number }>((done, fail) => {
      const req = https.request({ host: '127.0.0.1', port: httpsPort, method, path: urlPath, agent, headers: { host: 'httpbin.example.com' } }, (res) => {
        const chunks: Buffer[] = [];
        const local = res.socket.localPort ?? 0;
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), port: local }));
      }).on('error', fail);
      if (body) for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024)); // no length: chunked
      req.end();
    });
    const switched = switchedSockets();
    const first = await request('GET', '/status/200');
    assert.equal(first.status, 200);
    assert.equal(directTlsReads(), true, 'TLS direct reads proven on this node');
    assert.equal(switchedSockets() - switched, 1, 'the decrypted bytes were read directly (direct-reads.ts)');
    const upload = seededBytes(1024 * 1024, 7);
    const echoed = await request('POST', '/echo', upload);
    assert.equal(echoed.status, 200);
    assert.ok(echoed.body.equals(upload), `echoed byte-exact (${echoed.body.length} of ${upload.length} bytes)`);
    const last = await request('GET', '/status/200');
    assert.equal(last.status, 200);
    assert.deepEqual([echoed.port, last.port], [first.port, first.port], 'one connection throughout');
    agent.destroy();
  });

  it('the admin config dump never shows a private key', async () => {
    const port = gw.app.ports.admin;
    const r = await curl(['-s', `http://127.0.0.1:${port}/config_dump`]);
    assert.ok(r.stdout.includes('httpbin-credential'), 'the dump names the credential');
    assert.doesNotMatch(r.stdout, /PRIVATE KEY/);
  });
});

describe('TLS gateway: certificate files, protocol versions, client SANs', function () {
  this.timeout(60_000);
  let dir: string;
  let gw: TestGateway;
  let ca: CaPem;
  let ca2: CaPem;
  let httpbin: HttpbinServer;
  let echo: net.Server;
  let port: number;
  const resolve = (host: string) => ['--resolve', `${host}:${port}:127.0.0.1`];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-tlsfiles-'));
    ca = await makeCa(dir, 'ca');
    ca2 = await makeCa(dir, 'ca2');
    const files = await makeLeaf(dir, ca, 'files', ['files.example.com']);
    const v13 = await makeLeaf(dir, ca, 'v13', ['v13.example.com']);
    const san = await makeLeaf(dir, ca, 'san', ['san.example.com']);
    const tcpLeaf = await makeLeaf(dir, ca, 'tcp', ['tcp.example.com']);
    httpbin = await withHttpbin('httpbin-files');
    echo = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => s.destroy());
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    gw = await startGateway({
      'all.yaml': `${loopbackServiceEntryYaml('httpbin', 'httpbin.internal', 8000, 'HTTP', httpbin.port)}${loopbackServiceEntryYaml('echo', 'echo.internal', 9000, 'TCP', (echo.address() as net.AddressInfo).port)}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-files, protocol: HTTPS}
    hosts: [files.example.com]
    tls: {mode: SIMPLE, serverCertificate: ${files.certFile}, privateKey: ${files.keyFile}}
  - port: {number: 443, name: https-v13, protocol: HTTPS}
    hosts: [v13.example.com]
    tls: {mode: SIMPLE, serverCertificate: ${v13.certFile}, privateKey: ${v13.keyFile}, minProtocolVersion: TLSV1_3}
  - port: {number: 443, name: https-san, protocol: HTTPS}
    hosts: [san.example.com]
    tls: {mode: MUTUAL, serverCertificate: ${san.certFile}, privateKey: ${san.keyFile}, caCertificates: ${ca.certFile}, subjectAltNames: [allowed.client]}
  - port: {number: 9443, name: tls-tcp, protocol: TLS}
    hosts: [tcp.example.com]
    tls: {mode: SIMPLE, serverCertificate: ${tcpLeaf.certFile}, privateKey: ${tcpLeaf.keyFile}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [files.example.com, v13.example.com, san.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: httpbin.internal, port: {number: 8000}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: default}
spec:
  hosts: [tcp.example.com]
  gateways: [gw]
  tcp: [{match: [{port: 9443}], route: [{destination: {host: echo.internal, port: {number: 9000}}}]}]
`,
    }, { serverPorts: [443, 9443] });
    port = gw.port(443);
  });
  after(async () => {
    await gw?.stop();
    echo?.close();
    await httpbin?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const code = async (host: string, extra: string[]) => {
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', ...resolve(host), ...extra, `https://${host}:${port}/status/200`]);
    return r.stdout;
  };

  it('serves certificate files, and picks up rewritten files for new handshakes', async () => {
    assert.equal(await code('files.example.com', ['--cacert', ca.certFile]), '200');
    // Rotate the files in place (as cert-manager or a kubelet volume does): the new CA takes over.
    const next = await makeLeaf(dir, ca2, 'files-next', ['files.example.com']);
    fs.writeFileSync(path.join(dir, 'files.crt'), next.cert);
    fs.writeFileSync(path.join(dir, 'files.key'), next.key);
    await waitFor(async () => (await code('files.example.com', ['--cacert', ca2.certFile])) === '200', { timeoutMs: 10_000, intervalMs: 250 });
    assert.equal(await code('files.example.com', ['--cacert', ca.certFile]), '000');
  });

  it('minProtocolVersion TLSV1_3 refuses a TLS 1.2 client', async () => {
    assert.equal(await code('v13.example.com', ['--cacert', ca.certFile, '--tlsv1.3']), '200');
    assert.equal(await code('v13.example.com', ['--cacert', ca.certFile, '--tls-max', '1.2']), '000');
  });

  it('TLS SIMPLE to a tcp route: terminated, the decrypted bytes read directly, 2 MiB echoed byte-exact through a half-close', async () => {
    const switched = switchedSockets();
    const client = tls.connect({ host: '127.0.0.1', port: gw.port(9443), servername: 'tcp.example.com', ca: ca.cert });
    client.on('error', () => {});
    await once(client, 'secureConnect');
    const chunks: Buffer[] = [];
    client.on('data', (c: Buffer) => chunks.push(c));
    const sent = seededBytes(2 * 1024 * 1024, 9);
    client.end(sent);
    await once(client, 'end');
    client.destroy();
    assert.ok(Buffer.concat(chunks).equals(sent), `byte-exact (${Buffer.concat(chunks).length} of ${sent.length} bytes)`);
    assert.equal(switchedSockets() - switched, 1, "the client's decrypted bytes were read directly (direct-reads.ts)");
  });

  it('MUTUAL with subjectAltNames: only a client certificate carrying one of them is served', async () => {
    const allowed = await makeLeaf(dir, ca, 'allowed', ['allowed.client'], true);
    const other = await makeLeaf(dir, ca, 'other', ['other.client'], true);
    assert.equal(await code('san.example.com', ['--cacert', ca.certFile, '--cert', allowed.certFile, '--key', allowed.keyFile]), '200');
    assert.equal(await code('san.example.com', ['--cacert', ca.certFile, '--cert', other.certFile, '--key', other.keyFile]), '000');
  });
});

describe('TLS gateway log: a failed handshake is reported, a reset of an established connection is not', function () {
  this.timeout(30_000);

  it('logs "TLS handshake failed" for a MUTUAL client without a certificate, not for a client resetting after its handshake', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-tls-log-'));
    const { logger, lines } = capturedLogger('warn');
    const ca = await makeCa(dir, 'ca');
    const g = await startGateway({
      'secrets.yaml': tlsSecretYaml('simple-credential', 'istio-system', await makeLeaf(dir, ca, 'simple', ['simple.example.com']))
        + tlsSecretYaml('mtls-credential', 'istio-system', await makeLeaf(dir, ca, 'mtls', ['mtls.example.com']), ca),
      'gateway.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https-simple, protocol: HTTPS}
    hosts: [simple.example.com]
    tls: {mode: SIMPLE, credentialName: simple-credential}
  - port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, credentialName: mtls-credential}
`,
    }, { serverPorts: [8443], opts: { logger } });
    const port = g.port(8443);
    const failures = () => lines.filter((l) => l.includes('TLS handshake failed')).map((l) => JSON.parse(l) as { chain: string; sni: string; err: string });
    try {
      // A completed handshake, then a reset in the middle of a request's head.
      await new Promise<void>((done, fail) => {
        const tcp = net.connect(port, '127.0.0.1');
        const s = tls.connect({ socket: tcp, servername: 'simple.example.com', ca: ca.cert }, () => {
          s.write('GET / HTTP/1.1\r\nhost: simple.example.com\r\n');
          setTimeout(() => { tcp.resetAndDestroy(); done(); }, 200);
        });
        s.on('error', fail);
      });
      // A handshake that fails on the server: MUTUAL, and the client has no certificate.
      const r = await curl(['-s', '--resolve', `mtls.example.com:${port}:127.0.0.1`, '--cacert', ca.certFile, `https://mtls.example.com:${port}/`]);
      assert.notEqual(r.code, 0);
      await waitFor(() => failures().length > 0, { timeoutMs: 5000 });
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(failures().map((f) => f.sni), ['mtls.example.com'], JSON.stringify(failures()));
    } finally {
      await g.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("singleRouteYaml's serverTls (the bench's https-ka gateway)", function () {
  this.timeout(30_000);

  it('is a Gateway HTTPS server on 443 with the certificate files, routing every host to the upstream', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-https-ka-'));
    const httpbin = await withHttpbin('httpbin-https-ka');
    const ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'bench', ['bench']);
    const g = await startGateway({ 'c.yaml': singleRouteYaml({ upstreamPort: httpbin.port, serverTls: leaf }) }, { serverPorts: [443] });
    try {
      const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', ca.certFile, '--resolve', `bench:${g.port(443)}:127.0.0.1`, `https://bench:${g.port(443)}/status/200`]);
      assert.equal(r.stdout, '200');
    } finally {
      await g.stop();
      await httpbin.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
