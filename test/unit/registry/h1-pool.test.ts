// The plain HTTP/1.1 upstream pool, against real loopback servers that answer with exact bytes:
// the request bytes (the same as undici's), each response framing, what is refused, connection
// reuse and its limits, failures, backpressure, and random answers that never throw.

import assert from 'node:assert/strict';
import net from 'node:net';
import { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { H1Pool, requestHead } from '../../../src/registry/h1-pool';
import { listenLoopback, portOf } from '../../helpers/upstream';
import { mulberry32 } from '../../helpers/random';

interface Outcome {
  status?: number;
  headers?: string[];
  body: string;
  trailers?: unknown;
  error?: { code?: string; message: string };
}

/**
 * Requests that ended twice (onComplete and onError, or either twice). Checked after each test: an
 * assertion thrown inside a pool callback would be caught by the pool, so it could never fail one.
 */
const extraEnds: string[] = [];

/** One request through `pool`, every callback recorded; `onData` may ask for a pause. */
function request(pool: { dispatch: Dispatcher['dispatch'] }, o: Partial<Dispatcher.DispatchOptions> = {}, hooks: { onData?: (resume: () => void) => boolean; onHeaders?: () => void } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { body: '' };
    let resume: () => void = () => {};
    let ends = 0;
    const end = () => {
      ends += 1;
      if (ends > 1) extraEnds.push(`${o.method ?? 'GET'} ${o.path ?? '/p'}`);
      resolve(out);
    };
    pool.dispatch({ path: '/p', method: 'GET', headers: { host: 'up.example' }, body: null, ...o } as Dispatcher.DispatchOptions, {
      onConnect: () => {},
      onHeaders: (status, raw, res) => {
        hooks.onHeaders?.();
        resume = res;
        out.status = status;
        out.headers = (raw as unknown as string[]).map(String);
        return true;
      },
      onData: (chunk) => {
        out.body += chunk.toString('latin1');
        return hooks.onData ? hooks.onData(resume) : true;
      },
      onComplete: (trailers) => {
        out.trailers = trailers;
        end();
      },
      onError: (err) => {
        out.error = { code: (err as { code?: string }).code, message: err.message };
        end();
      },
    });
  });
}

/** A server that records each connection's bytes and answers each request head with the next canned answer. */
class Canned {
  readonly conns: { text: string; socket: net.Socket }[] = [];
  answers: (string | ((s: net.Socket) => void))[] = [];
  readonly server = net.createServer((socket) => {
    const rec = { text: '', socket };
    this.conns.push(rec);
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      rec.text += d.toString('latin1');
      // One answer per complete request head seen (bodies here are small and follow their head).
      while ((rec.text.match(/\r\n\r\n/g) ?? []).length > this.answered(rec)) {
        const a = this.answers.shift();
        this.count.set(rec, this.answered(rec) + 1);
        if (typeof a === 'string') socket.write(a);
        else if (a) a(socket);
      }
    });
  });
  private readonly count = new Map<object, number>();
  private answered(rec: object): number {
    return this.count.get(rec) ?? 0;
  }
  async start(): Promise<number> {
    await listenLoopback(this.server);
    return portOf(this.server);
  }
  close(): void {
    for (const c of this.conns) c.socket.destroy();
    this.server.close();
  }
}

const OK = 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok';

describe('HTTP/1.1 upstream pool', () => {
  let canned: Canned;
  let pool: H1Pool;
  const make = async (o: Partial<ConstructorParameters<typeof H1Pool>[0]> = {}) => {
    canned = new Canned();
    const port = await canned.start();
    pool = new H1Pool({ host: '127.0.0.1', port, connectTimeoutMs: 1000, idleTimeoutMs: 10_000, streamingPool: () => new Pool(`http://127.0.0.1:${port}`), ...o });
    return port;
  };
  afterEach(async () => {
    await pool?.destroy();
    canned?.close();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(extraEnds.splice(0), [], 'one of onComplete / onError, once');
  });

  it('writes the request as undici does: host first, connection, headers in order, the length', async () => {
    const seen: string[] = [];
    const server = net.createServer((s) => s.on('data', (d: Buffer) => {
      seen.push(d.toString('latin1'));
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
    }));
    await listenLoopback(server);
    const port = portOf(server);
    const cases: Partial<Dispatcher.DispatchOptions>[] = [
      { method: 'GET', headers: { 'x-a': ['1', '2'], host: 'bench', 'x-request-id': 'r' } },
      { method: 'POST', headers: { host: 'b', 'content-length': '0' } },
      { method: 'POST', headers: { host: 'b' } },
      { method: 'PUT', headers: { host: 'b', 'content-length': '5' }, body: Buffer.from('hello') },
      { method: 'DELETE', headers: {} },
      { method: 'GET', path: '/caf\u00e9?q', headers: { host: 'b', 'x-latin': 'caf\u00e9' } },
    ];
    const ours = new H1Pool({ host: '127.0.0.1', port, connectTimeoutMs: 1000, idleTimeoutMs: 10_000, streamingPool: () => { throw new Error('not used'); } });
    const theirs = new Pool(`http://127.0.0.1:${port}`);
    try {
      for (const c of cases) {
        await request(theirs, c);
        await request(ours, c);
      }
      for (let i = 0; i < seen.length; i += 2) assert.equal(seen[i + 1], seen[i], `case ${i / 2}`);
      assert.equal(seen.length, cases.length * 2);
    } finally {
      await ours.destroy();
      await theirs.destroy();
      server.close();
    }
  });

  it('refuses to write a request line or header that could split the request', () => {
    assert.ok(requestHead('GET', '/a b', {}, undefined, 'h') instanceof Error);
    assert.ok(requestHead('GET', '/', { 'x-a': 'v\r\nx-evil: 1' }, undefined, 'h') instanceof Error);
    assert.ok(requestHead('GET', '/', { 'bad name': 'v' }, undefined, 'h') instanceof Error);
    assert.ok(requestHead('GET', '/', { host: 'h\r\nx: y' }, undefined, 'h') instanceof Error);
    assert.ok(requestHead('G ET', '/', {}, undefined, 'h') instanceof Error);
    assert.equal(requestHead('GET', '/', { Connection: 'close', 'Transfer-Encoding': 'chunked', Upgrade: 'x', 'x-b': 'ok' }, undefined, 'h:1'),
      'GET / HTTP/1.1\r\nhost: h:1\r\nconnection: keep-alive\r\nx-b: ok\r\n\r\n', 'framing and connection headers are the pool\'s own');
  });

  const framings: { name: string; answer: string; method?: string; want: Partial<Outcome> }[] = [
    { name: 'content-length', answer: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello', want: { status: 200, body: 'hello', headers: ['Content-Length', '5', 'X-A', '1'] } },
    { name: 'the same content-length twice', answer: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok', want: { status: 200, body: 'ok' } },
    { name: 'chunked, with an extension and trailers', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\ngrpc-status: 0\r\nX-T:  v \r\n\r\n', want: { status: 200, body: 'abc0123456789', trailers: ['grpc-status', '0', 'X-T', 'v'] } },
    { name: 'chunked without trailers', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', want: { body: 'ok', trailers: null } },
    { name: 'a HEAD answer names a length and has no body', method: 'HEAD', answer: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n', want: { status: 200, body: '' } },
    { name: '204 with a content-length has no body', answer: 'HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n', want: { status: 204, body: '' } },
    { name: '304 has no body', answer: 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', want: { status: 304, body: '' } },
    { name: '100 and 103 before the answer are skipped', answer: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx', want: { status: 201, body: 'x' } },
    { name: 'a reason phrase may be empty', answer: 'HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n', want: { status: 200, body: '' } },
    { name: 'no length: the body runs to the close', answer: 'HTTP/1.1 200 OK\r\n\r\nuntil the end', want: { status: 200, body: 'until the end' } },
    { name: 'HTTP/1.0 with a length', answer: 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok', want: { status: 200, body: 'ok' } },
  ];
  for (const f of framings) {
    it(`reads: ${f.name}`, async () => {
      await make();
      canned.answers = [f.answer.includes('until the end') ? (s) => s.end(f.answer) : f.answer];
      const got = await request(pool, { method: f.method ?? 'GET' });
      assert.equal(got.error, undefined, JSON.stringify(got.error));
      for (const [k, v] of Object.entries(f.want)) assert.deepEqual(got[k as keyof Outcome], v, k);
    });
  }

  const refused: { name: string; answer: string }[] = [
    { name: 'a bad status line', answer: 'HTTP/1.1 2000 OK\r\n\r\n' },
    { name: 'not HTTP', answer: 'SSH-2.0-OpenSSH\r\n\r\n' },
    { name: 'a 101 nobody asked for', answer: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n' },
    { name: 'obs-fold', answer: 'HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n' },
    { name: 'a space before the colon', answer: 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n' },
    { name: 'a NUL in a value', answer: 'HTTP/1.1 200 OK\r\nX-A: a\u0000b\r\nContent-Length: 0\r\n\r\n' },
    { name: 'a bare LF', answer: 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n' },
    { name: 'Content-Length with Transfer-Encoding', answer: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n' },
    { name: 'two different lengths', answer: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok' },
    { name: 'a length that is no number', answer: 'HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok' },
    { name: 'a bad chunk size', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n' },
    { name: 'a chunk size over 12 hex digits', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nok\r\n0\r\n\r\n' },
    { name: 'a chunk not ended by CRLF', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokZZ0\r\n\r\n' },
    { name: 'framing in trailers', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 99\r\n\r\n' },
    { name: 'a head over 64 KiB', answer: `HTTP/1.1 200 OK\r\nX-A: ${'a'.repeat(70_000)}\r\n\r\n` },
    // Found by the differential test against llhttp (test/unit/gateway/h1-differential.test.ts):
    { name: 'whitespace after a chunk size (llhttp refuses it)', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n' },
    { name: 'a chunk extension without a name', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nok\r\n0\r\n\r\n' },
    { name: '`chunked` followed by a tab (chunked to RFC 9110, not to llhttp)', answer: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n2\r\nok\r\n0\r\n\r\n' },
    { name: 'a tab after a Content-Length', answer: 'HTTP/1.1 200 OK\r\nContent-Length: 2\t\r\n\r\nok' },
    { name: 'a chunk-size line over 1 KiB that arrives whole', answer: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;${'a'.repeat(2000)}\r\nok\r\n0\r\n\r\n` },
    { name: 'a bad Content-Length in a 100 before the answer', answer: 'HTTP/1.1 100 Continue\r\nContent-Length: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' },
  ];
  for (const r of refused) {
    it(`refuses (HPE_, 502 UPE in the proxy) and drops the connection: ${r.name}`, async () => {
      await make();
      canned.answers = [r.answer, OK];
      const got = await request(pool);
      assert.match(got.error?.code ?? '', /^HPE_/, JSON.stringify(got));
      const next = await request(pool);
      assert.equal(next.body, 'ok');
      assert.equal(canned.conns.length, 2, 'the next request went on a new connection');
    });
  }

  it('keep-alive: requests one after another share a connection; maxRequestsPerConnection retires it', async () => {
    await make({ maxRequestsPerConnection: 2 });
    canned.answers = [OK, OK, OK];
    for (let i = 0; i < 3; i++) assert.equal((await request(pool)).body, 'ok');
    assert.equal(canned.conns.length, 2);
    assert.equal((canned.conns[0]!.text.match(/GET \/p/g) ?? []).length, 2);
  });

  it('an answer that closes the connection, or bytes after the answer, end reuse', async () => {
    await make();
    canned.answers = ['HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok', `${OK}HTTP/1.1 200 OK\r\n\r\nstray`, OK];
    for (let i = 0; i < 3; i++) assert.equal((await request(pool)).body, 'ok');
    assert.equal(canned.conns.length, 3);
  });

  it('maxConnections: requests beyond wait, in order, for a connection to come free', async () => {
    await make({ maxConnections: 1 });
    canned.answers = [(s) => setTimeout(() => s.write(OK), 50), OK, OK];
    const got = await Promise.all([request(pool, { path: '/1' }), request(pool, { path: '/2' }), request(pool, { path: '/3' })]);
    assert.deepEqual(got.map((g) => g.body), ['ok', 'ok', 'ok']);
    assert.equal(canned.conns.length, 1);
    assert.deepEqual([...canned.conns[0]!.text.matchAll(/GET (\/\d)/g)].map((m) => m[1]), ['/1', '/2', '/3']);
  });

  it('a refused connection: the error with its errno, and connectionError', async () => {
    await make();
    canned.close();
    await new Promise((r) => setTimeout(r, 20));
    let events = 0;
    pool.on('connectionError', () => { events++; });
    const got = await request(pool);
    assert.equal(got.error?.code, 'ECONNREFUSED');
    assert.equal(events, 1);
    assert.equal(pool.inFlight, 0);
  });

  it('the upstream closing mid-body is an error (UND_ERR_SOCKET), not a short answer', async () => {
    await make();
    canned.answers = [(s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort')];
    const got = await request(pool);
    assert.equal(got.error?.code, 'UND_ERR_SOCKET');
  });

  it('an idle connection closes after idleTimeoutMs', async () => {
    await make({ idleTimeoutMs: 150 });
    canned.answers = [OK];
    await request(pool);
    const t0 = Date.now();
    const sock = canned.conns[0]!.socket;
    const closedAt = await new Promise<number>((resolve) => sock.once('close', () => resolve(Date.now())));
    assert.ok(closedAt - t0 >= 100 && closedAt - t0 < 2000, `closed after ${closedAt - t0} ms`);
    assert.equal(pool.inFlight, 0);
  });

  it('abort: mid-answer it fails the request and drops the connection; from onConnect it sends nothing and keeps it', async () => {
    await make();
    canned.answers = [(s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart'), OK];
    const aborted = await new Promise<string>((resolve) => {
      let abort: (e?: Error) => void = () => {};
      pool.dispatch({ path: '/', method: 'GET', headers: {} }, {
        onConnect: (a) => { abort = a; },
        onHeaders: () => true,
        onData: () => { abort(new Error('enough')); return true; },
        onComplete: () => resolve('complete'),
        onError: (e) => resolve(e.message),
      });
    });
    assert.equal(aborted, 'enough');
    const early = await new Promise<string>((resolve) => {
      pool.dispatch({ path: '/early', method: 'GET', headers: {} }, {
        onConnect: (a) => a(new Error('superseded')),
        onHeaders: () => true, onData: () => true,
        onComplete: () => resolve('complete'),
        onError: (e) => resolve(e.message),
      });
    });
    assert.equal(early, 'superseded');
    assert.equal((await request(pool)).body, 'ok');
    assert.equal(canned.conns.length, 2, 'the aborted one was dropped, the early-aborted one reused');
    assert.ok(!canned.conns[1]!.text.includes('/early'), 'nothing sent for the early abort');
  });

  it('a queued request abandoned in onConnect leaves the connection to the next one (it was never written)', async () => {
    await make({ maxConnections: 1 });
    canned.answers = [(s) => setTimeout(() => s.write(OK), 30), OK];
    const a = request(pool, { path: '/a' });
    const b = new Promise<string>((resolve) => {
      pool.dispatch({ path: '/b', method: 'GET', headers: {} }, {
        onConnect: (abort) => abort(new Error('superseded')),
        onHeaders: () => true, onData: () => true,
        onComplete: () => resolve('complete'),
        onError: (e) => resolve(e.message),
      });
    });
    const c = request(pool, { path: '/c' });
    assert.equal((await a).body, 'ok');
    assert.equal(await b, 'superseded');
    assert.equal((await c).body, 'ok', JSON.stringify(await c));
    assert.equal(canned.conns.length, 1);
    assert.ok(!canned.conns[0]!.text.includes('/b'));
  });

  it('thousands of queued requests abandoned at once: no recursion, the one after them is served', async () => {
    await make({ maxConnections: 1 });
    canned.answers = [(s) => setTimeout(() => s.write(OK), 30), OK];
    const first = request(pool, { path: '/first' });
    let abandoned = 0;
    for (let i = 0; i < 20_000; i++) {
      pool.dispatch({ path: '/gone', method: 'GET', headers: {} }, {
        onConnect: (abort) => abort(new Error('superseded')),
        onHeaders: () => true, onData: () => true, onComplete: () => {},
        onError: () => { abandoned++; },
      });
    }
    const last = request(pool, { path: '/last' });
    assert.equal((await first).body, 'ok');
    assert.equal((await last).body, 'ok');
    assert.equal(abandoned, 20_000);
    assert.equal(pool.inFlight, 0);
  });

  it("the upstream's Keep-Alive timeout: reuse stops 2 s before it (timeout=2: never reused)", async () => {
    await make();
    canned.answers = ['HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok', 'HTTP/1.1 200 OK\r\nKeep-Alive: timeout=3\r\nContent-Length: 2\r\n\r\nok', OK, OK];
    await request(pool);
    await request(pool); // timeout=2: a new connection; it says timeout=3, so 1 s of reuse
    assert.equal(canned.conns.length, 2);
    await request(pool); // at once: reused
    assert.equal(canned.conns.length, 2);
    await new Promise((r) => setTimeout(r, 1100));
    await request(pool); // idle over 1 s: a new connection
    assert.equal(canned.conns.length, 3);
  });

  it('a handler that throws costs its request and connection, never the process', async () => {
    await make();
    canned.answers = [OK, OK];
    const got = await request(pool, {}, { onHeaders: () => { throw new Error('handler bug'); } });
    assert.equal(got.error?.message, 'handler bug');
    assert.equal((await request(pool)).body, 'ok');
  });

  it('backpressure: onData false pauses reading until resume, and every byte arrives', async () => {
    await make();
    const size = 4 * 1024 * 1024;
    canned.answers = [(s) => { s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`); s.write(Buffer.alloc(size, 0x61)); }];
    let pauses = 0;
    const got = await request(pool, {}, {
      onData: (resume) => {
        pauses++;
        setTimeout(resume, 1);
        return false;
      },
    });
    assert.equal(got.body.length, size);
    assert.ok(pauses > 1);
  });

  it('chunks kept by the handler stay intact while later reads arrive (reads share one buffer and are copied out)', async () => {
    await make();
    // A head split over three reads, then 60 small body pieces, each its own read, all different.
    const pieces = Array.from({ length: 60 }, (_, i) => Buffer.alloc(50 + i, 0x41 + (i % 26)));
    const total = pieces.reduce((n, p) => n + p.length, 0);
    canned.answers = [(s) => {
      const parts = ['HTTP/1.1 200 OK\r\nCon', `tent-Length: ${total}\r\n`, '\r\n', ...pieces];
      let i = 0;
      const next = () => {
        if (i < parts.length) s.write(parts[i++]!, () => setTimeout(next, 2));
      };
      next();
    }];
    const kept: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      pool.dispatch({ path: '/p', method: 'GET', headers: { host: 'up.example' }, body: null } as Dispatcher.DispatchOptions, {
        onConnect: () => {},
        onHeaders: () => true,
        onData: (chunk) => { kept.push(chunk); return true; }, // kept as given, never copied here
        onComplete: () => resolve(),
        onError: reject,
      });
    });
    assert.ok(kept.length > 10, `the body came in many reads (${kept.length})`);
    assert.deepEqual(Buffer.concat(kept), Buffer.concat(pieces));
  });

  it('a streamed body goes through the streaming pool (undici), whole', async () => {
    const seen: string[] = [];
    const echo = net.createServer((s) => s.on('data', (d: Buffer) => {
      seen.push(d.toString('latin1'));
      if (seen.join('').endsWith('0\r\n\r\n')) s.write(OK);
    }));
    await listenLoopback(echo);
    let made = 0;
    const p = new H1Pool({ host: '127.0.0.1', port: portOf(echo), connectTimeoutMs: 1000, idleTimeoutMs: 10_000, streamingPool: () => { made++; return new Pool(`http://127.0.0.1:${portOf(echo)}`); } });
    try {
      const got = await request(p, { method: 'POST', body: Readable.from([Buffer.from('one,'), Buffer.from('two')]) });
      assert.equal(got.body, 'ok');
      assert.equal(made, 1);
      assert.match(seen.join(''), /transfer-encoding: chunked[\s\S]*one,[\s\S]*two/);
    } finally {
      await p.destroy();
      echo.close();
    }
  });

  it('random answers (seeded, 300): every request ends once, with an answer or an error; the process stays up', async () => {
    await make({ idleTimeoutMs: 1000 });
    const rand = mulberry32(0x5eed);
    const pieces = ['HTTP/1.1 ', '200', ' OK', '\r\n', 'Content-Length: ', '3', 'Transfer-Encoding: chunked', '\r\n\r\n', 'abc', '0\r\n\r\n', '\n', ':', ' ', '\u0000', 'ff'];
    for (let i = 0; i < 300; i++) {
      let text = '';
      const n = 1 + Math.floor(rand() * 12);
      for (let j = 0; j < n; j++) text += pieces[Math.floor(rand() * pieces.length)];
      canned.answers = [(s) => s.end(text)];
      const got = await request(pool);
      assert.ok(got.error !== undefined || got.status !== undefined, JSON.stringify(text));
    }
  });
});
