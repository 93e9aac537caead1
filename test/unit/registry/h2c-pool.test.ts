import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import type { Dispatcher } from 'undici';
import { H2cPool } from '../../../src/registry/h2c-pool';

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
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
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
