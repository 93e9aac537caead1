import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tlsModule, { type TLSSocket } from 'node:tls';
import { makeCa, makeLeaf, type CaPem, type Pem } from '../../helpers/certs';
import { listenLoopback, portOf } from '../../helpers/upstream';
import type { Dispatcher } from 'undici';
import { H2cPool } from '../../../src/registry/h2c-pool';
import { fromUpstreamError } from '../../../src/errors';
import { claimUpstreamSocket, type SocketClaim } from '../../../src/registry/upstream-socket';
import * as certs from '../../../src/tls/certs';

interface Outcome { status?: number; body: string; error?: Error }

/** One request through the pool; resolves when the handler hears the end or an error. */
function request(pool: H2cPool, path: string, hooks: Partial<Dispatcher.DispatchHandler> = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { body: '' };
    pool.dispatch({ path, method: 'GET', headers: { host: 'app.test' }, body: null }, {
      onConnect: () => {},
      onHeaders: (status, raw, resume, text) => { out.status = status; return hooks.onHeaders ? hooks.onHeaders(status, raw, resume, text) : true; },
      onData: (chunk) => { out.body += chunk.toString(); return true; },
      onComplete: () => resolve(out),
      onError: (err) => { out.error = err; resolve(out); },
    });
  });
}

describe('H2cPool (h2c) against a node:http2 server', () => {
  let server: http2.Http2Server;
  let port: number;
  let slowEnd: (() => void) | undefined;
  const serverSessions = new Set<http2.ServerHttp2Session>();

  before(async () => {
    server = http2.createServer();
    server.on('session', (session) => {
      serverSessions.add(session);
      session.once('close', () => serverSessions.delete(session));
    });
    server.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      const path = headers[':path'];
      if (path === '/cut-cl' || path === '/cut-nocl') {
        // Part of the body, then the connection goes away under the stream.
        stream.respond({ ':status': 200, ...(path === '/cut-cl' ? { 'content-length': '100' } : {}) });
        stream.write('part;', () => setTimeout(() => stream.session?.destroy(), 30));
        return;
      }
      if (path === '/unprocessed') {
        // GOAWAY naming an earlier stream as the last processed: this one was not, and gets no answer.
        stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, (stream.id ?? 3) - 2);
        return;
      }
      if (path === '/goaway') {
        // A draining upstream: answer, then GOAWAY (no new streams on this connection).
        stream.respond({ ':status': 200 });
        stream.end('bye', () => stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR));
        return;
      }
      if (path === '/head') {
        stream.respond({ ':status': 200, 'content-length': '42' }, { endStream: true });
        return;
      }
      if (path === '/nocontent') {
        stream.respond({ ':status': 204 }, { endStream: true });
        return;
      }
      if (headers[':path'] === '/slow') {
        stream.respond({ ':status': 200 });
        stream.write('part;');
        slowEnd = () => stream.end('end');
        return;
      }
      stream.respond({ ':status': 200 });
      stream.end(`${headers[':path']} ${headers[':authority']}`);
    });
    await listenLoopback(server);
    port = portOf(server);
  });
  after(() => {
    // node keeps a server session that sent GOAWAY open after its client has gone: cut them so close() returns.
    for (const session of serverSessions) session.destroy();
    return new Promise((r) => server.close(r));
  });

  const pool = () => new H2cPool({ host: '127.0.0.1', port, connectTimeoutMs: 1000, idleTimeoutMs: 60_000 });

  it('a handler that throws ends that request with the error, not the process; the pool goes on', async () => {
    const p = pool();
    const boom = await request(p, '/a', { onHeaders: () => { throw new Error('handler bug'); } });
    assert.equal(boom.error?.message, 'handler bug');
    const ok = await request(p, '/b');
    assert.equal(ok.error, undefined);
    assert.equal(ok.body, '/b app.test');
    await p.close();
  });

  it('an upstream GOAWAY (a draining gateway) moves new requests to a new connection: none fails', async () => {
    const p = pool();
    let sessions = 0;
    const count = () => { sessions += 1; };
    server.on('session', count);
    try {
      assert.equal((await request(p, '/goaway')).body, 'bye');
      await new Promise((r) => setTimeout(r, 50));
      const after = await Promise.all([request(p, '/n1'), request(p, '/n2'), request(p, '/n3')]);
      for (const r of after) assert.equal(r.error, undefined, r.error?.message);
      assert.deepEqual(after.map((r) => r.body), ['/n1 app.test', '/n2 app.test', '/n3 app.test']);
      assert.equal(sessions, 2, 'one new connection after the GOAWAY');
    } finally {
      server.off('session', count);
      await p.close();
    }
  });

  it('a stream above a GOAWAY\'s last stream id was not processed: refused (retried under refused-stream), not a reset', async () => {
    const p = pool();
    const held = request(p, '/slow'); // stream 1, answered later
    await new Promise((r) => setTimeout(r, 50));
    const r = await request(p, '/unprocessed'); // stream 3: GOAWAY says the last processed is 1
    assert.equal((r.error as { code?: string } | undefined)?.code, 'UND_ERR_REFUSED_STREAM', r.error?.message);
    slowEnd!();
    assert.equal((await held).body, 'part;end', 'the processed stream still completes');
    assert.equal((await request(p, '/after')).body, '/after app.test');
    await p.close();
  });

  it('close() lets an in-flight stream finish, then resolves; new requests after it fail with UND_ERR_CLOSED', async () => {
    const p = pool();
    const slow = request(p, '/slow');
    await new Promise((r) => setTimeout(r, 100));
    let closed = false;
    const closing = p.close().then(() => { closed = true; });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(closed, false, 'closed while a stream was still open');
    slowEnd!();
    assert.equal((await slow).body, 'part;end');
    await closing;
    const after = await request(p, '/late');
    assert.equal((after.error as { code?: string } | undefined)?.code, 'UND_ERR_CLOSED');
  });

  it('destroy() cuts an in-flight stream: its handler hears an error', async () => {
    const p = pool();
    const slow = request(p, '/slow');
    await new Promise((r) => setTimeout(r, 100));
    await p.destroy();
    const r = await slow;
    assert.ok(r.error, 'the cut stream reported an error');
    slowEnd?.();
  });

  it('a response cut off by the upstream is an error, not a complete response (with and without content-length)', async () => {
    const p = pool();
    for (const path of ['/cut-cl', '/cut-nocl']) {
      const r = await request(p, path);
      assert.ok(r.error, `${path}: the handler heard an error`);
      assert.equal((r.error as { code?: string }).code, 'UND_ERR_SOCKET', path);
      assert.equal(r.body, 'part;');
    }
    // Whole answers still complete, a HEAD (a content-length without a body) and a 204 included.
    for (const [path, method] of [['/head', 'HEAD'], ['/nocontent', 'GET'], ['/b', 'GET']] as const) {
      const r = await new Promise<Outcome>((resolve) => {
        const out: Outcome = { body: '' };
        p.dispatch({ path, method, headers: { host: 'app.test' }, body: null }, {
          onConnect: () => {}, onHeaders: (st) => { out.status = st; return true; }, onData: (c) => { out.body += c.toString(); return true; },
          onComplete: () => resolve(out), onError: (err) => { out.error = err; resolve(out); },
        });
      });
      assert.equal(r.error, undefined, `${method} ${path}: ${r.error?.message}`);
    }
    await p.close();
  });

  it('a connect that never completes is UND_ERR_CONNECT_TIMEOUT after connectTimeout (mapped to UF connection_timeout)', async function () {
    this.timeout(15_000);
    // A loopback listener that never accepts, its backlog filled first: further SYNs go unanswered.
    const child = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const stuckPort = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
      const fillers: net.Socket[] = [];
      for (let i = 0; i < 4; i++) {
        const f = net.connect(stuckPort, '127.0.0.1');
        f.on('error', () => {});
        fillers.push(f);
      }
      await new Promise((r) => setTimeout(r, 200));
      const p = new H2cPool({ host: '127.0.0.1', port: stuckPort, connectTimeoutMs: 300, idleTimeoutMs: 60_000 });
      const t0 = Date.now();
      const r = await request(p, '/x');
      assert.equal((r.error as { code?: string } | undefined)?.code, 'UND_ERR_CONNECT_TIMEOUT');
      assert.ok(Date.now() - t0 >= 280, `failed after ${Date.now() - t0} ms`);
      await p.destroy();
      for (const f of fillers) f.destroy();
    } finally {
      child.kill();
    }
  });
});

describe('H2cPool over mesh mTLS (ISTIO_MUTUAL)', function () {
  this.timeout(20_000);
  let dir: string;
  let ca: CaPem;
  let serverLeaf: Pem;
  let clientLeaf: Pem;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h2c-tls-'));
    ca = await makeCa(dir, 'mesh-ca');
    serverLeaf = await makeLeaf(dir, ca, 'egress', ['egress.mesh']);
    clientLeaf = await makeLeaf(dir, ca, 'sidecar', ['sidecar.mesh'], true);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A TLS server offering `alpn`, requiring a client certificate from the mesh CA. */
  async function tlsServer() {
    const seen: { scheme?: string; authority?: string; resumed: boolean; alpnOffered?: string[] }[] = [];
    const server = http2.createSecureServer({
      cert: serverLeaf.cert, key: serverLeaf.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true,
    });
    server.on('secureConnection', (s: TLSSocket) => seen.push({ resumed: s.isSessionReused() }));
    server.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      const last = seen[seen.length - 1]!;
      last.scheme = headers[':scheme'] as string;
      last.authority = headers[':authority'] as string;
      stream.respond({ ':status': 200 });
      stream.end('secure');
    });
    await listenLoopback(server);
    return { server, seen, port: portOf(server) };
  }

  const meshPool = (port: number, extra: Partial<ConstructorParameters<typeof H2cPool>[0]> = {}) => new H2cPool({
    host: '127.0.0.1', port, connectTimeoutMs: 2000, idleTimeoutMs: 60_000,
    tls: { cert: clientLeaf.cert, key: clientLeaf.key, ca: ca.cert, servername: 'egress.mesh' }, ...extra,
  });

  it('speaks HTTP/2 over mTLS: :scheme https, the mesh peer verified; a second connection resumes the TLS session', async () => {
    const { server, seen, port } = await tlsServer();
    const p = meshPool(port, { maxRequestsPerConnection: 1 });
    try {
      assert.equal((await request(p, '/one')).body, 'secure');
      await new Promise((r) => setTimeout(r, 50)); // the session ticket arrives after the handshake
      assert.equal((await request(p, '/two')).body, 'secure');
      assert.equal(seen.length, 2, 'one connection per request');
      assert.deepEqual(seen.map((s) => s.scheme), ['https', 'https']);
      assert.deepEqual(seen.map((s) => s.resumed), [false, true]);
    } finally {
      await p.destroy();
      server.close();
    }
  });

  it('a peer that will not speak h2 is a connection failure (503 UF), never HTTP/2 sent to an HTTP/1.1 server', async () => {
    // Offering only HTTP/1.1 by ALPN, the server refuses the handshake (no_application_protocol);
    // one that ignores ALPN completes it with none chosen, and we refuse (ERR_H2_ALPN).
    for (const [alpn, want] of [[['http/1.1'], /no application protocol/], [undefined, /chose no ALPN protocol, not h2/]] as const) {
      let received = 0;
      const server = tlsModule.createServer({ cert: serverLeaf.cert, key: serverLeaf.key, ca: ca.cert, requestCert: true, ...(alpn ? { ALPNProtocols: [...alpn] } : {}) }, (s) => {
        s.on('error', () => {});
        s.on('data', () => { received += 1; });
      });
      await listenLoopback(server);
      const p = meshPool(portOf(server));
      let connectionErrors = 0;
      p.on('connectionError', () => { connectionErrors += 1; });
      try {
        const r = await request(p, '/x');
        assert.match(r.error?.message ?? 'no error', want);
        assert.equal(fromUpstreamError(r.error).code, 'CONNECT_FAILURE');
        assert.equal(connectionErrors, 1);
        await new Promise((res) => setTimeout(res, 50));
        assert.equal(received, 0, 'nothing of HTTP/2 reached the server');
      } finally {
        await p.destroy();
        server.close();
      }
    }
  });

  it('a peer whose certificate the mesh CA did not sign is a TLS failure before any request is sent', async () => {
    const other = await makeCa(dir, 'other-ca');
    const { server, seen, port } = await tlsServer();
    const p = meshPool(port, { tls: { cert: clientLeaf.cert, key: clientLeaf.key, ca: other.cert, servername: 'egress.mesh' } });
    try {
      const r = await request(p, '/x');
      assert.ok(r.error, 'refused');
      assert.equal(seen.filter((s) => s.scheme).length, 0, 'no request reached the server');
    } finally {
      await p.destroy();
      server.close();
    }
  });

  /** A server certificate with a SPIFFE identity (URI SAN), signed by `issuer`. */
  const certsLeaf = (issuer: CaPem, id: string) => certs.makeLeaf(issuer.material, { commonName: 'egress.mesh', names: ['egress.mesh'], uris: [id], days: 1, usage: 'server' });

  /** One request with a record to claim (the proxy claims in onConnect). */
  function claimed(p: H2cPool, path: string): Promise<{ out: Outcome; claim: SocketClaim }> {
    const claim: SocketClaim = {};
    return new Promise((resolve) => {
      const out: Outcome = { body: '' };
      p.dispatch({ path, method: 'GET', headers: { host: 'app.test' }, body: null }, {
        onConnect: () => claimUpstreamSocket(claim),
        onHeaders: (status) => { out.status = status; return true; },
        onData: (chunk) => { out.body += chunk.toString(); return true; },
        onComplete: () => resolve({ out, claim }),
        onError: (err) => { out.error = err; resolve({ out, claim }); },
      });
    });
  }

  it('a resumed connection keeps the peer identity of the handshake that made its session; a request reset before its head has its record filled too', async () => {
    const peerCa = await makeCa(dir, 'mesh-ca-2');
    const meshLeaf = await certsLeaf(peerCa, 'spiffe://cluster.local/ns/istio-system/sa/egress');
    const server = http2.createSecureServer({ cert: meshLeaf.cert, key: meshLeaf.key, ca: ca.cert, requestCert: true });
    server.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      if (headers[':path'] === '/reset') return stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    await listenLoopback(server);
    const p = meshPool(portOf(server), { maxRequestsPerConnection: 1, tls: { cert: clientLeaf.cert, key: clientLeaf.key, ca: peerCa.cert, servername: 'egress.mesh', checkServerIdentity: () => undefined } });
    try {
      const peers: string[][] = [];
      for (const path of ['/one', '/two', '/reset']) {
        const { out, claim } = await claimed(p, path);
        if (path !== '/reset') assert.equal(out.body, 'ok');
        else assert.ok(out.error);
        assert.ok(claim.upstreamLocalAddress, `${path}: local address`);
        peers.push([...(claim.upstreamIdentities?.peerUriSans ?? [])]);
        await new Promise((r) => setTimeout(r, 30));
      }
      assert.deepEqual(peers, Array(3).fill(['spiffe://cluster.local/ns/istio-system/sa/egress']));
    } finally {
      await p.destroy();
      server.close();
    }
  });

  it('a peer that refuses to resume a session gets full handshakes from then on: one failed connection, not one in two', async () => {
    // A server whose context has no session id context while asking for client certificates:
    // OpenSSL refuses every resumption (meshgate's own server sets one now; others may not). node's
    // tls.Server always sets one, so it is cleared through its context (not public API).
    const server = http2.createSecureServer({ cert: serverLeaf.cert, key: serverLeaf.key, ca: ca.cert, requestCert: true });
    (server as unknown as { _sharedCreds: { context: { setSessionIdContext(s: string): void } } })._sharedCreds.context.setSessionIdContext('');
    server.on('stream', (stream) => { stream.on('error', () => {}); stream.respond({ ':status': 200 }); stream.end('ok'); });
    server.on('tlsClientError', () => {});
    await listenLoopback(server);
    const p = meshPool(portOf(server), { maxRequestsPerConnection: 1 });
    try {
      const got: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await request(p, `/${i}`);
        got.push(r.error ? 'failed' : r.body);
        await new Promise((res) => setTimeout(res, 30));
      }
      assert.ok(got.filter((g) => g === 'failed').length <= 1, got.join(','));
      assert.deepEqual(got.slice(-2), ['ok', 'ok']);
    } finally {
      await p.destroy();
      server.close();
    }
  });

  it('mesh TLS material node refuses (a key that does not match its certificate) fails the request as a connect failure, never a throw', async () => {
    const other = await makeLeaf(dir, ca, 'other', ['other.mesh'], true);
    const p = meshPool(1, { tls: { cert: clientLeaf.cert, key: other.key, ca: ca.cert } });
    try {
      const r = await request(p, '/x');
      assert.equal((r.error as { code?: string } | undefined)?.code, 'ERR_TLS_CONFIG', r.error?.message);
      assert.equal(fromUpstreamError(r.error).code, 'CONNECT_FAILURE');
    } finally {
      await p.destroy();
    }
  });

  it('a peer that chooses istio-h2 by ALPN speaks HTTP/2: accepted', async () => {
    const h2 = http2.createServer();
    h2.on('stream', (stream) => { stream.on('error', () => {}); stream.respond({ ':status': 200 }); stream.end('istio-h2'); });
    const server = tlsModule.createServer({ cert: serverLeaf.cert, key: serverLeaf.key, ca: ca.cert, requestCert: true, ALPNCallback: () => 'istio-h2' }, (s) => h2.emit('connection', s));
    await listenLoopback(server);
    const p = meshPool(portOf(server));
    try {
      assert.equal((await request(p, '/')).body, 'istio-h2');
    } finally {
      await p.destroy();
      server.close();
    }
  });

  it('over TLS 1.3 a peer that refuses our certificate after the handshake is still a connect failure (503 UF), with its alert', async () => {
    const other = await makeCa(dir, 'other-ca-2');
    const server = http2.createSecureServer({ cert: serverLeaf.cert, key: serverLeaf.key, ca: other.cert, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
    server.on('tlsClientError', () => {});
    await listenLoopback(server);
    const p = meshPool(portOf(server));
    let connects = 0;
    p.on('connect', () => { connects += 1; });
    try {
      const r = await request(p, '/x');
      assert.ok(r.error);
      assert.equal(fromUpstreamError(r.error).code, 'CONNECT_FAILURE', r.error.message);
      assert.equal(connects, 0, 'never counted as connected');
    } finally {
      await p.destroy();
      server.close();
    }
  });
});
