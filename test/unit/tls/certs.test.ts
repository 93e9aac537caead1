// Development certificates and load-time certificate checks: what `meshgate certs` makes is accepted
// by OpenSSL and Node's TLS (server and client), and every problem the inspection reports is real.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { makeCa, makeLeaf, type CaMaterial } from '../../../src/tls/certs';
import { certificateMatchesHost, inspectServerCertificate } from '../../../src/tls/inspect';

describe('development certificates and their inspection', function () {
  this.timeout(30_000);
  let dir: string;
  let ca: CaMaterial;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-certs-'));
    ca = await makeCa({ commonName: 'test CA', days: 3 });
    fs.writeFileSync(path.join(dir, 'ca.crt'), ca.cert);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('OpenSSL verifies the chain and shows the SANs and usages', async () => {
    const leaf = await makeLeaf(ca, { commonName: 'a.example.com', names: ['a.example.com', '*.b.example.com', '127.0.0.1'], days: 3, usage: 'server' });
    fs.writeFileSync(path.join(dir, 'a.crt'), leaf.cert);
    assert.match(execFileSync('openssl', ['verify', '-CAfile', path.join(dir, 'ca.crt'), path.join(dir, 'a.crt')]).toString(), /a\.crt: OK/);
    const text = execFileSync('openssl', ['x509', '-in', path.join(dir, 'a.crt'), '-noout', '-text']).toString();
    assert.match(text, /DNS:a\.example\.com, DNS:\*\.b\.example\.com, IP Address:127\.0\.0\.1/);
    assert.match(text, /TLS Web Server Authentication/);
    assert.match(text, /CA:FALSE/);
    const caText = execFileSync('openssl', ['x509', '-in', path.join(dir, 'ca.crt'), '-noout', '-text']).toString();
    assert.match(caText, /CA:TRUE/);
  });

  it('Node TLS accepts them for a MUTUAL handshake, and refuses a client from another CA', async () => {
    const server = await makeLeaf(ca, { commonName: 's.example.com', names: ['s.example.com'], days: 3, usage: 'server' });
    const client = await makeLeaf(ca, { commonName: 'client', names: ['client'], days: 3, usage: 'client' });
    const other = await makeCa({ commonName: 'other CA', days: 3 });
    const stranger = await makeLeaf(other, { commonName: 'stranger', names: ['stranger'], days: 3, usage: 'client' });
    const srv = tls.createServer({ cert: server.cert, key: server.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true }, (s) => s.end('hi'));
    srv.on('tlsClientError', () => {});
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const talk = (cert: string, key: string) => new Promise<string>((resolve) => {
      const c = tls.connect({ port, host: '127.0.0.1', servername: 's.example.com', ca: ca.cert, cert, key }, () => {});
      let got = '';
      c.on('data', (d: Buffer) => { got += d.toString(); });
      c.on('error', (e) => resolve(`error: ${e.message}`));
      c.on('close', () => resolve(got));
    });
    try {
      assert.equal(await talk(client.cert, client.key), 'hi');
      assert.notEqual(await talk(stranger.cert, stranger.key), 'hi');
    } finally {
      srv.close();
    }
  });

  it('wildcard names cover one label, as TLS clients check them', () => {
    const cases: [string[], string, boolean][] = [
      [['a.example.com'], 'a.example.com', true],
      [['A.Example.com'], 'a.example.COM', true],
      [['*.example.com'], 'a.example.com', true],
      [['*.example.com'], 'a.b.example.com', false],
      [['*.example.com'], 'example.com', false],
      [['*.example.com'], '*.example.com', true],
      [['a.example.com'], '*.example.com', false],
      [['other.org'], 'a.example.com', false],
    ];
    for (const [names, host, want] of cases) assert.equal(certificateMatchesHost(names, host), want, `${names.join(',')} vs ${host}`);
  });

  it('reports a key of another certificate, expiry, SANs not covering a host, and unparsable PEM', async () => {
    const good = await makeLeaf(ca, { commonName: 'h.example.com', names: ['h.example.com'], days: 30, usage: 'server' });
    const other = await makeLeaf(ca, { commonName: 'o.example.com', names: ['o.example.com'], days: 30, usage: 'server' });
    assert.deepEqual(inspectServerCertificate(good.cert, good.key, ['h.example.com', '*']).problems, []);
    const mismatch = inspectServerCertificate(good.cert, other.key, ['h.example.com']).problems;
    assert.deepEqual(mismatch, [{ severity: 'error', message: 'the private key does not belong to the certificate' }]);
    const expired = await makeLeaf(ca, { commonName: 'x', names: ['h.example.com'], days: 1, usage: 'server', validFrom: new Date(Date.now() - 3 * 86_400_000) });
    assert.match(inspectServerCertificate(expired.cert, expired.key, []).problems[0]!.message, /expired on/);
    const soon = await makeLeaf(ca, { commonName: 's', names: ['h.example.com'], days: 2, usage: 'server' });
    assert.match(inspectServerCertificate(soon.cert, soon.key, []).problems[0]!.message, /expires soon/);
    const uncovered = inspectServerCertificate(good.cert, good.key, ['www.example.com']).problems;
    assert.equal(uncovered.length, 1);
    assert.match(uncovered[0]!.message, /SANs \(h\.example\.com\) do not cover host www\.example\.com/);
    const garbage = inspectServerCertificate('-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n', good.key, []).problems;
    assert.equal(garbage[0]!.severity, 'error');
    assert.match(garbage[0]!.message, /does not parse/);
  });
});
