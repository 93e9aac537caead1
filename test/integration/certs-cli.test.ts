// `meshgate certs` as users run it, what `validate` says about the certificates a Gateway serves, and
// the expiry gauge.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { runMeshgate, startGateway } from '../helpers/gateway';

describe('meshgate certs', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-certs-cli-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('--help names every flag and exits 0', async () => {
    const r = await runMeshgate(['certs', '--help']);
    assert.equal(r.code, 0);
    for (const flag of ['--out', '--server', '--client', '--days', '--secret-name', '--secret-namespace', '--new-ca']) assert.ok(r.stdout.includes(flag), flag);
  });

  it('writes a CA, server and client certificates, keys for the owner only, and a Secret', async () => {
    const out = path.join(dir, 'a');
    const r = await runMeshgate(['certs', '--out', out, '--server', 'httpbin.example.com,127.0.0.1', '--client', 'me.example.com', '--secret-name', 'httpbin-credential']);
    assert.equal(r.code, 0, r.stderr);
    for (const f of ['ca.key', 'server.key', 'client.key', 'secret.yaml']) assert.equal(fs.statSync(path.join(out, f)).mode & 0o777, 0o600, f);
    const verify = execFileSync('openssl', ['verify', '-CAfile', path.join(out, 'ca.crt'), path.join(out, 'server.crt'), path.join(out, 'client.crt')]).toString();
    assert.match(verify, /server\.crt: OK\n.*client\.crt: OK/s);
    const secret = parse(fs.readFileSync(path.join(out, 'secret.yaml'), 'utf8')) as { kind: string; type: string; metadata: { name: string; namespace: string }; data: Record<string, string> };
    assert.deepEqual([secret.kind, secret.type, secret.metadata.name, secret.metadata.namespace], ['Secret', 'kubernetes.io/tls', 'httpbin-credential', 'istio-system']);
    assert.equal(Buffer.from(secret.data['tls.crt']!, 'base64').toString(), fs.readFileSync(path.join(out, 'server.crt'), 'utf8'));
    assert.equal(Buffer.from(secret.data['tls.key']!, 'base64').toString(), fs.readFileSync(path.join(out, 'server.key'), 'utf8'));
    assert.equal(Buffer.from(secret.data['ca.crt']!, 'base64').toString(), fs.readFileSync(path.join(out, 'ca.crt'), 'utf8'));
  });

  it('reuses the CA in --out unless --new-ca', async () => {
    const out = path.join(dir, 'b');
    await runMeshgate(['certs', '--out', out, '--server', 'one.example.com']);
    const ca = fs.readFileSync(path.join(out, 'ca.crt'), 'utf8');
    await runMeshgate(['certs', '--out', out, '--server', 'two.example.com']);
    assert.equal(fs.readFileSync(path.join(out, 'ca.crt'), 'utf8'), ca);
    assert.match(execFileSync('openssl', ['verify', '-CAfile', path.join(out, 'ca.crt'), path.join(out, 'server.crt')]).toString(), /OK/);
    await runMeshgate(['certs', '--out', out, '--server', 'three.example.com', '--new-ca']);
    assert.notEqual(fs.readFileSync(path.join(out, 'ca.crt'), 'utf8'), ca);
  });

  it('--mesh: identities for two proxies from one shared mesh CA, in the --mesh-certs layout', async () => {
    const caDir = path.join(dir, 'mesh-ca');
    const a = await runMeshgate(['certs', '--mesh', '--ca-dir', caDir, '--out', path.join(dir, 'sleep'), '--identity', 'spiffe://cluster.local/ns/default/sa/sleep']);
    assert.equal(a.code, 0, a.stderr);
    const b = await runMeshgate(['certs', '--mesh', '--ca-dir', caDir, '--out', path.join(dir, 'egw'), '--identity', 'spiffe://cluster.local/ns/istio-system/sa/egw']);
    assert.equal(b.code, 0, b.stderr);
    const root = fs.readFileSync(path.join(caDir, 'ca.crt'), 'utf8');
    for (const who of ['sleep', 'egw']) {
      assert.equal(fs.readFileSync(path.join(dir, who, 'root-cert.pem'), 'utf8'), root, who);
      assert.equal(fs.statSync(path.join(dir, who, 'key.pem')).mode & 0o777, 0o600);
      const chain = path.join(dir, who, 'cert-chain.pem');
      assert.match(execFileSync('openssl', ['verify', '-CAfile', path.join(dir, who, 'root-cert.pem'), '-purpose', 'sslclient', chain]).toString(), /OK/);
      assert.match(execFileSync('openssl', ['verify', '-CAfile', path.join(dir, who, 'root-cert.pem'), '-purpose', 'sslserver', chain]).toString(), /OK/);
    }
    const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', path.join(dir, 'sleep', 'cert-chain.pem')]).toString();
    assert.match(text, /URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep/);
    const bad = await runMeshgate(['certs', '--mesh', '--out', path.join(dir, 'x'), '--identity', 'sleep']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--identity "sleep" is not a spiffe:/);
    const run = await runMeshgate(['run', '--config', path.join(dir, 'x'), '--mesh-certs', path.join(dir, 'nowhere')]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--mesh-certs: .*cert-chain\.pem does not exist/);
  });

  it('bad flags exit 2 with a message', async () => {
    const none = await runMeshgate(['certs', '--out', path.join(dir, 'c')]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--server NAME/);
    const days = await runMeshgate(['certs', '--out', path.join(dir, 'c'), '--server', 'x', '--days', 'soon']);
    assert.equal(days.code, 2);
    assert.match(days.stderr, /--days "soon"/);
  });

  it('validate warns, with file and line, when a served certificate does not cover the server hosts; the gauge shows its expiry', async () => {
    const out = path.join(dir, 'd');
    await runMeshgate(['certs', '--out', out, '--server', 'httpbin.example.com', '--secret-name', 'httpbin-credential']);
    const cfg = path.join(dir, 'cfg');
    fs.mkdirSync(cfg);
    fs.copyFileSync(path.join(out, 'secret.yaml'), path.join(cfg, 'secret.yaml'));
    const gateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com, www.example.com]
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
`;
    fs.writeFileSync(path.join(cfg, 'gateway.yaml'), gateway);
    const r = await runMeshgate(['validate', '--config', cfg]);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, new RegExp(`${path.join(cfg, 'gateway.yaml').replace(/[.]/g, '\\.')}:11:\\d+: Gateway default/gw: spec\\.servers\\[0\\]\\.tls\\.credentialName: warning: Secret istio-system/httpbin-credential: the certificate's SANs \\(httpbin\\.example\\.com\\) do not cover host www\\.example\\.com`));
    assert.doesNotMatch(r.stdout, /httpbin\.example\.com\)? do not cover host httpbin/);

    const gw = await startGateway({ 'secret.yaml': fs.readFileSync(path.join(out, 'secret.yaml'), 'utf8'), 'gateway.yaml': gateway }, { serverPorts: [443] });
    try {
      const text = await gw.app.metrics.render();
      const line = text.split('\n').find((l) => l.startsWith('meshgate_certificate_expiration_timestamp_seconds{'));
      assert.ok(line, text.split('\n').filter((l) => l.includes('certificate')).join('\n'));
      assert.match(line!, /gateway="default\/gw",server="https",source="Secret istio-system\/httpbin-credential",subject="CN=httpbin\.example\.com"/);
      const notAfter = Number(line!.split(' ').at(-1));
      const days = (notAfter * 1000 - Date.now()) / 86_400_000;
      assert.ok(days > 364 && days < 366, `expires in ${days} days`);
    } finally {
      await gw.stop();
    }
  });
});
