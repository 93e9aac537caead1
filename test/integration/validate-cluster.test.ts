// `meshgate validate --source kubernetes`: the cluster's config checked as the gateways would read it
// (the fake API server here), with local files applied over it as `kubectl apply` would; what
// compiling adds (a credentialName naming no Secret) for files and the cluster alike.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FakeKubeApi, type KubeObj } from '../helpers/fake-kube-api';
import { runMeshgate } from '../helpers/gateway';
import { gatewayObj, kubeconfigFor, serviceObj, virtualServiceObj } from '../helpers/kube';
import { freePort } from '../helpers/upstream';

const HTTPS_GATEWAY: KubeObj = {
  kind: 'Gateway', apiVersion: 'networking.istio.io/v1', metadata: { name: 'mygateway', namespace: 'istio-system' },
  spec: {
    selector: { istio: 'ingressgateway' },
    servers: [{ port: { number: 443, name: 'https', protocol: 'HTTPS' }, hosts: ['httpbin.example.com'], tls: { mode: 'SIMPLE', credentialName: 'httpbin-credential' } }],
  },
};

describe('meshgate validate --source kubernetes', function () {
  this.timeout(30_000);
  let fake: FakeKubeApi;
  let dir: string;
  let kubeconfig: string;

  before(async () => {
    fake = await new FakeKubeApi().start();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-validate-kube-'));
    kubeconfig = path.join(dir, 'kubeconfig');
    fs.writeFileSync(kubeconfig, kubeconfigFor(fake.url));
    fake.upsert(gatewayObj('httpbin-gateway', ['httpbin.example.com']));
    fake.upsert(HTTPS_GATEWAY);
    fake.upsert(serviceObj('httpbin', [{ name: 'http', port: 8000 }]));
    // A typo kubectl accepts (the CRD keeps unknown fields): `rout`.
    fake.upsert(virtualServiceObj('httpbin', ['httpbin.example.com'], 'istio-system/httpbin-gateway', [{ rout: [{ destination: { host: 'httpbin' } }] }]));
  });
  after(async () => {
    await fake?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const validate = (...extra: string[]) => runMeshgate(['validate', '--source', 'kubernetes', '--kubeconfig', kubeconfig, ...extra]);

  it('reports the cluster\'s problems by object and field path, exit 1 on errors', async () => {
    const r = await validate();
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.ok(lines.includes('kubernetes:default/VirtualService/httpbin:1:1: VirtualService default/httpbin: spec.http[0].rout: unknown field "rout" (did you mean "route"?)'), r.stdout);
    assert.match(lines.at(-1)!, new RegExp(`^1 error, \\d+ warnings? in the cluster \\(${fake.url.replace(/[.:/]/g, '\\$&')}\\)$`));
    // As run --source kubernetes: the broken object is left out and the rest compiles, so what
    // compiling says about the rest is reported too.
    assert.ok(lines.some((l) => l.includes('Gateway istio-system/mygateway: spec.servers[0].tls.credentialName: warning: credentialName httpbin-credential: no Secret')), r.stdout);
  });

  it('applies local files over the cluster: a fixed object replaces the broken one, and compile warnings appear', async () => {
    const fixed = path.join(dir, 'fix.yaml');
    fs.writeFileSync(fixed, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [istio-system/httpbin-gateway]
  http:
  - route: [{destination: {host: httpbin, port: {number: 8000}}}]
`);
    const r = await validate('--config', fixed);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /rout:/);
    // The HTTPS server's Secret is not in the cluster: what `run` would warn, validate says too.
    assert.ok(r.stdout.includes('kubernetes:istio-system/Gateway/mygateway:1:1: Gateway istio-system/mygateway: spec.servers[0].tls.credentialName: '
      + 'warning: credentialName httpbin-credential: no Secret istio-system/httpbin-credential; TLS handshakes on port 443 for httpbin.example.com will fail'), r.stdout);
    assert.match(r.stdout.trim().split('\n').at(-1)!, / in the cluster \(.*\) and 1 file$/);
  });

  it('reads the Secrets a local file names, though nothing in the cluster names them', async () => {
    fake.upsert({ kind: 'Secret', apiVersion: 'v1', metadata: { name: 'other-credential', namespace: 'istio-system' }, type: 'kubernetes.io/tls', data: { 'tls.crt': '', 'tls.key': '' } });
    const gw = path.join(dir, 'gw.yaml');
    fs.writeFileSync(gw, `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: other-credential}
`);
    const r = await validate('--config', gw, '--config', path.join(dir, 'fix.yaml'));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /no Secret istio-system\/other-credential/, r.stdout);
    // Read: its (empty) contents are what is wrong with it now.
    assert.match(r.stdout, /credentialName: warning: Secret istio-system\/other-credential has no tls\.crt\/tls\.key/);
    assert.doesNotMatch(r.stdout, /httpbin-credential/, 'the cluster\'s Gateway was replaced by the file\'s');
  });

  it('reaches the API through the kubeconfig\'s proxy-url (CONNECT), as kubectl does; a socks5 proxy is refused clearly', async () => {
    const tunnels: string[] = [];
    const proxy = net.createServer((client) => {
      client.on('error', () => {});
      client.once('data', (head: Buffer) => {
        const m = /^CONNECT (\S+) HTTP\/1\.1\r\n/.exec(head.toString('latin1'));
        if (!m) return void client.end('HTTP/1.1 405 Method Not Allowed\r\n\r\n');
        tunnels.push(m[1]!);
        const [host, port] = [m[1]!.slice(0, m[1]!.lastIndexOf(':')), Number(m[1]!.slice(m[1]!.lastIndexOf(':') + 1))];
        const upstream = net.connect(port, host, () => {
          client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          upstream.pipe(client).pipe(upstream);
        });
        upstream.on('error', () => client.destroy());
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const viaProxy = path.join(dir, 'via-proxy');
      fs.writeFileSync(viaProxy, kubeconfigFor(fake.url).replace(`server: ${fake.url}`, `server: ${fake.url}\n    proxy-url: http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`));
      const r = await runMeshgate(['validate', '--source', 'kubernetes', '--kubeconfig', viaProxy, '--timeout', '10s']);
      assert.ok(r.stdout.includes('VirtualService default/httpbin: spec.http[0].rout: unknown field'), r.stdout + r.stderr);
      assert.ok(tunnels.length > 0 && tunnels.every((t) => t === `127.0.0.1:${fake.port}`), JSON.stringify(tunnels));
    } finally {
      proxy.close();
    }
    const socks = path.join(dir, 'socks');
    fs.writeFileSync(socks, kubeconfigFor(fake.url).replace(`server: ${fake.url}`, `server: ${fake.url}\n    proxy-url: socks5://127.0.0.1:1080`));
    const s = await runMeshgate(['validate', '--source', 'kubernetes', '--kubeconfig', socks]);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /proxy-url "socks5:\/\/127\.0\.0\.1:1080": only http:\/\/ and https:\/\/ proxies are supported/);
  });

  it('an API that cannot be reached fails within --timeout with the reason, exit 2', async () => {
    const closed = await freePort();
    const unreachable = path.join(dir, 'unreachable');
    fs.writeFileSync(unreachable, kubeconfigFor(`http://127.0.0.1:${closed}`));
    const t0 = Date.now();
    const r = await runMeshgate(['validate', '--source', 'kubernetes', '--kubeconfig', unreachable, '--timeout', '2s']);
    assert.equal(r.code, 2);
    assert.ok(Date.now() - t0 < 10_000);
    assert.match(r.stderr, new RegExp(`the Kubernetes API at http://127\\.0\\.0\\.1:${closed} did not list everything within 2 s`));
    assert.equal(r.stdout, '');
  });
});
