// The ISTIO_MUTUAL client's ClientHello offers Istio's ALPN besides h2/http/1.1 (an Istio sidecar's
// PERMISSIVE inbound tells mesh mTLS from the application's TLS by it), the server still picks h2,
// and the connector fails as undici's would (its connect-timeout error) when nothing answers.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { meshAlpn, meshConnector } from '../../../src/tls/upstream';
import { readClientHello } from '../../../src/tls/client-hello';
import { makeCa, makeLeaf } from '../../helpers/certs';

type Result = { err: Error | null; socket: net.Socket | tls.TLSSocket | null };
const connectWith = (connector: ReturnType<typeof meshConnector>, port: number, servername?: string) => new Promise<Result>((resolve) => {
  connector({ hostname: '127.0.0.1', port: String(port), protocol: 'https:', ...(servername ? { servername } : {}) }, (err, socket) => resolve({ err, socket }));
});

describe('ISTIO_MUTUAL client: Istio\'s ALPN', () => {
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-mesh-alpn-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('offers h2, http/1.1 and istio-h2, istio-http/1.1 (HTTP/2 clusters); http/1.1 ones without h2; istio for TCP', () => {
    assert.deepEqual(meshAlpn('h2'), ['h2', 'http/1.1', 'istio-h2', 'istio-http/1.1']);
    assert.deepEqual(meshAlpn('http1'), ['http/1.1', 'istio-http/1.1']);
    assert.deepEqual(meshAlpn('tcp'), ['istio']);
  });

  it('the ClientHello carries that list and the SNI; a server offering h2 and http/1.1 (Envoy, meshgate) picks h2', async () => {
    const seen: { sni?: string; alpn: readonly string[] }[] = [];
    const recorder = net.createServer((s) => {
      s.on('error', () => {});
      void readClientHello(s, { timeoutMs: 2000 }).then((h) => { if (h.status === 'hello') seen.push({ sni: h.sni, alpn: h.alpn }); s.destroy(); });
    });
    await new Promise<void>((r) => recorder.listen(0, '127.0.0.1', r));
    const sni = 'outbound_.80_.cnn_.istio-egressgateway.istio-system.svc.cluster.local';
    const r1 = await connectWith(meshConnector({ servername: sni, rejectUnauthorized: false }, { timeoutMs: 2000, h2: true }), (recorder.address() as net.AddressInfo).port);
    recorder.close();
    assert.ok(r1.err, 'the recorder hangs up');
    assert.deepEqual(seen, [{ sni, alpn: ['h2', 'http/1.1', 'istio-h2', 'istio-http/1.1'] }]);

    const ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'server', ['server.example']);
    const server = tls.createServer({ cert: leaf.cert, key: leaf.key, ALPNProtocols: ['h2', 'http/1.1'] }, (s) => s.end('bye'));
    server.on('tlsClientError', () => {});
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const connector = meshConnector({ ca: ca.cert, servername: 'server.example' }, { timeoutMs: 2000, h2: true });
      const port = (server.address() as net.AddressInfo).port;
      const r2 = await connectWith(connector, port);
      assert.equal(r2.err, null);
      const first = r2.socket as tls.TLSSocket;
      assert.equal(first.alpnProtocol, 'h2');
      assert.equal(first.isSessionReused(), false);
      // The server answers and closes; reading to the end takes in its session ticket.
      await new Promise<void>((resolve) => { first.resume(); first.once('close', () => resolve()); });
      // The next connection to the same peer resumes that session (as undici's own connector does).
      const r3 = await connectWith(connector, port);
      assert.equal(r3.err, null);
      assert.equal((r3.socket as tls.TLSSocket).isSessionReused(), true);
      r3.socket!.destroy();
    } finally {
      server.close();
    }
  });

  it('a peer that never answers the handshake is undici\'s connect timeout', async () => {
    const silent = net.createServer((s) => { s.on('error', () => {}); setTimeout(() => s.destroy(), 3000).unref(); });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const t0 = Date.now();
    const r = await connectWith(meshConnector({ rejectUnauthorized: false }, { timeoutMs: 300, h2: false }), (silent.address() as net.AddressInfo).port);
    silent.close();
    assert.equal((r.err as { code?: string } | null)?.code, 'UND_ERR_CONNECT_TIMEOUT');
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(r.socket, null);
  });
});
