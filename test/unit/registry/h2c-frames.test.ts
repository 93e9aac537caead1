// The HTTP/2 client's framing against a raw upstream that sends exactly the frames a test scripts:
// what we write, header blocks split and padded, informational heads and trailers, malformed
// answers, the peer's stream limit and windows, our windows and backpressure, PING, connection
// errors, GOAWAY, resets, and random frames that must never escape into the process.

import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { H2cPool, H2_CANCEL, H2_PROTOCOL_ERROR, H2_REFUSED_STREAM } from '../../../src/registry/h2c-pool';
import { HpackDecoder, hpackEncode } from '../../../src/gateway/http/hpack';
import { h2frame, hpackLiteral } from '../../helpers/h2frames';
import { mulberry32 } from '../../helpers/random';

const DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5, PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9;
const END_STREAM = 1, END_HEADERS = 4, PADDED = 8, PRIORITY = 0x20;

interface Frame { type: number; flags: number; id: number; payload: Buffer }

/** One connection as the raw upstream sees it. */
class Peer {
  readonly frames: Frame[] = [];
  readonly decoder = new HpackDecoder();
  private buf = Buffer.alloc(0);
  private preface = false;
  private block: Buffer[] = [];

  constructor(readonly socket: net.Socket, private readonly onHeaders: (peer: Peer, id: number, fields: [string, string][], endStream: boolean) => void, private readonly onFrame?: (peer: Peer, f: Frame) => void) {
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => this.read(d));
  }

  send(type: number, flags: number, id: number, payload?: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(h2frame(type, flags, id, payload));
  }

  /** A response head (or trailers) in one HEADERS frame. */
  head(id: number, fields: [string, string][], endStream = false): void {
    this.send(HEADERS, END_HEADERS | (endStream ? END_STREAM : 0), id, hpackEncode(fields));
  }

  data(id: number, body: string | Buffer, endStream = true): void {
    this.send(DATA, endStream ? END_STREAM : 0, id, Buffer.from(body));
  }

  of(type: number): Frame[] {
    return this.frames.filter((f) => f.type === type);
  }

  private read(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    if (!this.preface) {
      if (this.buf.length < 24) return;
      assert.equal(this.buf.toString('latin1', 0, 24), 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
      this.buf = this.buf.subarray(24);
      this.preface = true;
    }
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) return;
      const f: Frame = { type: this.buf[3]!, flags: this.buf[4]!, id: this.buf.readUInt32BE(5) & 0x7fffffff, payload: Buffer.from(this.buf.subarray(9, 9 + len)) };
      this.buf = this.buf.subarray(9 + len);
      this.frames.push(f);
      if (f.type === SETTINGS && !(f.flags & 1)) this.send(SETTINGS, 1, 0);
      if (f.type === HEADERS || f.type === CONTINUATION) {
        this.block.push(f.payload);
        if (f.flags & END_HEADERS) {
          const start = this.frames.filter((x) => x.type === HEADERS).at(-1)!;
          const fields = this.decoder.decode(Buffer.concat(this.block));
          this.block = [];
          this.onHeaders(this, f.id, fields, (start.flags & END_STREAM) !== 0);
        }
      }
      this.onFrame?.(this, f);
    }
  }
}

/** A raw upstream: every connection gets `settings` first, then `answer` per request head. */
async function rawUpstream(answer: (peer: Peer, id: number, fields: [string, string][], endStream: boolean) => void, opts: { settings?: Buffer; onFrame?: (peer: Peer, f: Frame) => void } = {}) {
  const peers: Peer[] = [];
  const server = net.createServer((socket) => {
    const peer = new Peer(socket, answer, opts.onFrame);
    peers.push(peer);
    peer.send(SETTINGS, 0, 0, opts.settings ?? Buffer.alloc(0));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const pool = new H2cPool({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, connectTimeoutMs: 2000, idleTimeoutMs: 60_000 });
  return {
    peers, pool,
    close: async () => {
      await pool.destroy();
      for (const p of peers) p.socket.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

interface Outcome { status?: number; headers: string[]; body: string; trailers?: string[]; error?: Error & { code?: string }; events: string[] }

interface RequestOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: Buffer | Readable | null;
  /** The handler pauses (returns false) at the first body chunk; resume when this calls back. */
  pauseFirst?: (resume: () => void) => void;
  abort?: (abort: (e?: Error) => void) => void;
  /** Runs in onHeaders with the abort function; what it returns is onHeaders' answer. */
  onHeaders?: (abort: (e?: Error) => void) => boolean;
}

function request(pool: H2cPool, path: string, o: RequestOptions = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { headers: [], body: '', events: [] };
    let resumeFn: () => void = () => {};
    let paused = false;
    let abortFn: (e?: Error) => void = () => {};
    const handler: Dispatcher.DispatchHandler = {
      onConnect: (abort) => {
        abortFn = abort;
        o.abort?.(abort);
      },
      onHeaders: (status, raw, resume) => {
        out.status = status;
        out.headers = raw as unknown as string[];
        resumeFn = resume;
        return o.onHeaders ? o.onHeaders(abortFn) : true;
      },
      onData: (chunk) => {
        out.body += chunk.toString('latin1');
        if (o.pauseFirst && !paused) {
          paused = true;
          o.pauseFirst(resumeFn);
          return false;
        }
        return true;
      },
      onComplete: (trailers) => {
        out.events.push('complete');
        out.trailers = trailers as unknown as string[];
        resolve(out);
      },
      onError: (err) => {
        out.events.push('error');
        out.error = err;
        resolve(out);
      },
    };
    pool.dispatch({ path, method: (o.method ?? 'GET') as Dispatcher.HttpMethod, headers: { host: 'app.test', ...o.headers }, body: o.body ?? null }, handler);
  });
}

const ok = (peer: Peer, id: number) => {
  peer.head(id, [[':status', '200'], ['content-length', '2']]);
  peer.data(id, 'ok');
};
const settings = (...pairs: [number, number][]) => {
  const b = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([k, v], i) => { b.writeUInt16BE(k, i * 6); b.writeUInt32BE(v, i * 6 + 2); });
  return b;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('H2cPool framing against a raw upstream', function () {
  this.timeout(20_000);

  it('what we send: preface, SETTINGS (push off), the connection window opened, a GET as one HEADERS frame that ends the stream', async () => {
    let fields: [string, string][] = [];
    const up = await rawUpstream((peer, id, f) => { fields = f; ok(peer, id); });
    try {
      const r = await request(up.pool, '/a?b=1', { headers: { 'x-one': 'v', connection: 'keep-alive', 'keep-alive': '5', te: 'trailers', 'transfer-encoding': 'chunked', 'x-two': ['1', '2'] } });
      assert.equal(r.body, 'ok');
      const peer = up.peers[0]!;
      const s = peer.frames[0]!;
      assert.equal(s.type, SETTINGS);
      assert.ok(s.payload.equals(settings([2, 0], [4, 1 << 20], [6, 65536])), s.payload.toString('hex'));
      assert.deepEqual(peer.frames[1], { type: WINDOW_UPDATE, flags: 0, id: 0, payload: Buffer.from([0x00, 0xff, 0x00, 0x01]) }, '16 MiB - 65535');
      const h = peer.of(HEADERS)[0]!;
      assert.equal(h.flags, END_HEADERS | END_STREAM);
      assert.equal(h.id, 1);
      assert.deepEqual(fields, [[':method', 'GET'], [':scheme', 'http'], [':path', '/a?b=1'], [':authority', 'app.test'], ['x-one', 'v'], ['te', 'trailers'], ['x-two', '1'], ['x-two', '2']]);
      assert.equal((await request(up.pool, '/2')).body, 'ok');
      assert.deepEqual(peer.of(HEADERS).map((f) => f.id), [1, 3], 'odd ids, one connection');
    } finally {
      await up.close();
    }
  });

  it('a POST body follows its HEADERS in DATA frames; a streamed body ends with END_STREAM', async () => {
    const bodies: Record<number, Buffer[]> = {};
    const up = await rawUpstream(() => {}, {
      onFrame: (peer, f) => {
        if (f.type === DATA) (bodies[f.id] ??= []).push(f.payload);
        if (f.type === DATA && f.flags & END_STREAM) ok(peer, f.id);
      },
    });
    try {
      const big = Buffer.alloc(40_000, 'x');
      assert.equal((await request(up.pool, '/p', { method: 'POST', body: big })).body, 'ok');
      assert.ok(Buffer.concat(bodies[1]!).equals(big));
      assert.ok(bodies[1]!.every((b) => b.length <= 16_384), 'no frame over the peer\'s max frame size');
      const r = await request(up.pool, '/s', { method: 'POST', body: Readable.from([Buffer.from('one;'), Buffer.from('two')]) });
      assert.equal(r.body, 'ok');
      assert.equal(Buffer.concat(bodies[3]!).toString(), 'one;two');
      assert.equal(up.peers[0]!.of(HEADERS)[1]!.flags & END_STREAM, 0, 'a body follows');
    } finally {
      await up.close();
    }
  });

  it('reads a head split into HEADERS + CONTINUATION, padding, a priority block, 1xx heads before it, trailers after it', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '103'], ['link', '</a.css>; rel=preload']]);
      peer.head(id, [[':status', '100']]);
      const block = hpackEncode([[':status', '200'], ['x-big', 'b'.repeat(20_000)], ['x-after', 'yes']]);
      // HEADERS padded with a priority block, then two CONTINUATIONs.
      const first = Buffer.concat([Buffer.from([3]), Buffer.alloc(5), block.subarray(0, 1000), Buffer.alloc(3)]);
      peer.send(HEADERS, PADDED | PRIORITY, id, first);
      peer.send(CONTINUATION, 0, id, block.subarray(1000, 15_000));
      peer.send(CONTINUATION, END_HEADERS, id, block.subarray(15_000));
      peer.send(DATA, PADDED, id, Buffer.concat([Buffer.from([4]), Buffer.from('body'), Buffer.alloc(4)]));
      peer.head(id, [['grpc-status', '0']], true);
    });
    try {
      const r = await request(up.pool, '/');
      assert.equal(r.error, undefined, r.error?.message);
      assert.equal(r.status, 200);
      assert.deepEqual(r.headers.filter((_, i) => i % 2 === 0), ['x-big', 'x-after']);
      assert.equal(r.headers[1]!.length, 20_000);
      assert.equal(r.body, 'body');
      assert.deepEqual(r.trailers, ['grpc-status', '0']);
    } finally {
      await up.close();
    }
  });

  it('DATA chunks kept by the handler stay intact while later reads arrive, frames split across reads included', async () => {
    const pieces = Array.from({ length: 40 }, (_, i) => Buffer.alloc(30 + i, 0x61 + (i % 26)));
    const up = await rawUpstream((peer, id) => {
      const bytes = Buffer.concat([
        h2frame(HEADERS, END_HEADERS, id, hpackEncode([[':status', '200']])),
        ...pieces.map((p, i) => h2frame(DATA, i === pieces.length - 1 ? END_STREAM : 0, id, p)),
      ]);
      // 23-byte writes, each its own read: frame headers and payloads cut anywhere.
      let at = 0;
      const next = () => {
        if (at >= bytes.length || peer.socket.destroyed) return;
        peer.socket.write(bytes.subarray(at, at + 23), () => setTimeout(next, 1));
        at += 23;
      };
      next();
    });
    try {
      const kept: Buffer[] = [];
      await new Promise<void>((resolve, reject) => {
        up.pool.dispatch({ path: '/', method: 'GET', headers: { host: 'app.test' }, body: null }, {
          onConnect: () => {},
          onHeaders: () => true,
          onData: (chunk) => { kept.push(chunk); return true; }, // kept as given, never copied here
          onComplete: () => resolve(),
          onError: reject,
        });
      });
      assert.ok(kept.length >= pieces.length);
      assert.deepEqual(Buffer.concat(kept), Buffer.concat(pieces));
    } finally {
      await up.close();
    }
  });

  const malformedCases: [string, (peer: Peer, id: number) => void][] = [
    ['an upper-case header name', (p, id) => p.send(HEADERS, END_HEADERS, id, Buffer.concat([hpackEncode([[':status', '200']]), Buffer.from([0x00, 0x01, 0x58, 0x01, 0x79])]))],
    ['no :status', (p, id) => p.head(id, [['x-a', 'b']], true)],
    ['a pseudo-header after a regular one', (p, id) => p.head(id, [['x-a', 'b'], [':status', '200']], true)],
    ['a connection-specific header', (p, id) => p.head(id, [[':status', '200'], ['connection', 'close']], true)],
    ['status 101', (p, id) => p.head(id, [[':status', '101']])],
    ['DATA before the head', (p, id) => p.data(id, 'x')],
    ['a second head that does not end the stream', (p, id) => { p.head(id, [[':status', '200']]); p.head(id, [['x-t', '1']]); }],
    ['two different content-lengths', (p, id) => p.head(id, [[':status', '200'], ['content-length', '1'], ['content-length', '2']], true)],
  ];
  for (const [name, answer] of malformedCases) {
    it(`a malformed response (${name}) is ERR_H2_MALFORMED (502 UPE) and RST_STREAM PROTOCOL_ERROR; the connection goes on`, async () => {
      const up = await rawUpstream((peer, id) => (id === 1 ? answer(peer, id) : ok(peer, id)));
      try {
        const r = await request(up.pool, '/bad');
        assert.equal(r.error?.code, 'ERR_H2_MALFORMED', r.error?.message ?? `status ${r.status}`);
        await until(() => up.peers[0]!.of(RST_STREAM).length > 0);
        assert.deepEqual(up.peers[0]!.of(RST_STREAM).map((f) => [f.id, f.payload.readUInt32BE(0)]), [[1, H2_PROTOCOL_ERROR]]);
        assert.equal((await request(up.pool, '/next')).body, 'ok');
        assert.equal(up.peers.length, 1, 'same connection');
      } finally {
        await up.close();
      }
    });
  }

  it('content-length: a body longer or shorter than announced is UND_ERR_RES_CONTENT_LENGTH_MISMATCH', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '200'], ['content-length', '3']]);
      peer.data(id, id === 1 ? 'toolong' : 'ab');
    });
    try {
      for (const path of ['/long', '/short']) {
        const r = await request(up.pool, path);
        assert.equal(r.error?.code, 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', path);
      }
    } finally {
      await up.close();
    }
  });

  it('the peer\'s SETTINGS_MAX_CONCURRENT_STREAMS 1: more at once open more connections (as Envoy\'s pool), none carries two at once', async () => {
    const open = new Map<Peer, number>();
    let most = 0;
    const up = await rawUpstream((peer, id) => {
      open.set(peer, (open.get(peer) ?? 0) + 1);
      most = Math.max(most, open.get(peer)!);
      setTimeout(() => { open.set(peer, open.get(peer)! - 1); ok(peer, id); }, 20);
    }, { settings: settings([3, 1]) });
    try {
      // Each new connection learns the limit from the peer's SETTINGS, sent at once on connect.
      await request(up.pool, '/warm');
      // 15 ms apart (each answer takes 20): a new connection has read the peer's limit before the next.
      const rs = await Promise.all([0, 1, 2].map(async (i) => { await sleep(i * 15); return request(up.pool, `/${i}`); }));
      assert.deepEqual(rs.map((r) => r.body), ['ok', 'ok', 'ok']);
      assert.equal(most, 1, 'never two streams at once on a connection');
      assert.ok(up.peers.length >= 2, `${up.peers.length} connections`);
      assert.equal(up.pool.inFlight, 0);
    } finally {
      await up.close();
    }
  });

  it('the peer\'s stream window of 10 bytes: the body goes 10 bytes at a time, as WINDOW_UPDATEs allow', async () => {
    const got: Buffer[] = [];
    const up = await rawUpstream((peer, id, _f, endStream) => endStream && ok(peer, id), {
      settings: settings([4, 10]),
      onFrame: (peer, f) => {
        if (f.type !== DATA) return;
        got.push(f.payload);
        if (f.flags & END_STREAM) ok(peer, f.id);
        else setTimeout(() => peer.send(WINDOW_UPDATE, 0, f.id, Buffer.from([0, 0, 0, 10])), 2);
      },
    });
    try {
      await request(up.pool, '/warm');
      const body = Buffer.from('0123456789'.repeat(10));
      assert.equal((await request(up.pool, '/p', { method: 'POST', body })).body, 'ok');
      assert.ok(Buffer.concat(got).equals(body));
      assert.ok(got.every((b) => b.length <= 10), got.map((b) => b.length).join(','));
    } finally {
      await up.close();
    }
  });

  it('our window: a paused handler gets no more window (no WINDOW_UPDATE for its stream); after resume all data arrives in order', async () => {
    const chunk = Buffer.alloc(16_384, 'a');
    const total = 80; // 1.25 MiB: over our 1 MiB stream window
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '200'], ['content-length', String(chunk.length * total)]]);
      let sent = 0;
      let window = 1 << 20;
      const pump = () => {
        while (sent < total && window >= chunk.length) {
          sent += 1;
          window -= chunk.length;
          peer.send(DATA, sent === total ? END_STREAM : 0, id, Buffer.from(chunk.fill(97 + (sent % 26))));
        }
      };
      let read = 0;
      peer.socket.on('data', () => {
        for (; read < peer.frames.length; read++) {
          const f = peer.frames[read]!;
          if (f.type === WINDOW_UPDATE && f.id === id) window += f.payload.readUInt32BE(0);
        }
        pump();
      });
      pump();
    });
    try {
      let resumeAt = 0;
      let updatesWhilePaused = -1;
      const r = await request(up.pool, '/big', {
        pauseFirst: (resume) => setTimeout(() => {
          updatesWhilePaused = up.peers[0]!.frames.filter((f) => f.type === WINDOW_UPDATE && f.id === 1).length;
          resumeAt = Date.now();
          resume();
        }, 150),
      });
      assert.equal(r.error, undefined, r.error?.message);
      assert.ok(resumeAt > 0);
      assert.equal(updatesWhilePaused, 0);
      assert.equal(r.body.length, chunk.length * total);
      for (let i = 0; i < total; i++) assert.equal(r.body[i * chunk.length], String.fromCharCode(97 + ((i + 1) % 26)), `chunk ${i} in order`);
    } finally {
      await up.close();
    }
  });

  it('DATA beyond the stream window we granted is reset with FLOW_CONTROL_ERROR', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '200']]);
      const c = Buffer.alloc(16_384);
      for (let i = 0; i < 65; i++) peer.send(DATA, 0, id, c); // 1 MiB + 16 KiB, no WINDOW_UPDATE waited for
    });
    try {
      const r = await request(up.pool, '/flood', { pauseFirst: () => {} });
      assert.equal(r.error?.code, 'ERR_H2_MALFORMED');
      await until(() => up.peers[0]!.of(RST_STREAM).length > 0);
      assert.equal(up.peers[0]!.of(RST_STREAM)[0]!.payload.readUInt32BE(0), 3);
    } finally {
      await up.close();
    }
  });

  it('a PING is answered with its payload', async () => {
    const up = await rawUpstream(ok);
    try {
      await request(up.pool, '/');
      const peer = up.peers[0]!;
      peer.send(PING, 0, 0, Buffer.from('12345678'));
      await until(() => peer.of(PING).length > 0);
      assert.deepEqual(peer.of(PING)[0], { type: PING, flags: 1, id: 0, payload: Buffer.from('12345678') });
    } finally {
      await up.close();
    }
  });

  const connectionErrors: [string, number, (peer: Peer, id: number) => void][] = [
    ['a PUSH_PROMISE (push is off)', 1, (p, id) => p.send(PUSH_PROMISE, END_HEADERS, id, Buffer.concat([Buffer.from([0, 0, 0, 2]), hpackEncode([[':method', 'GET']])]))],
    ['a frame over 16384 bytes', 6, (p, id) => p.send(DATA, 0, id, Buffer.alloc(16_385))],
    ['a broken header block', 9, (p, id) => p.send(HEADERS, END_HEADERS, id, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))],
    ['a header block interrupted by another frame', 1, (p, id) => { p.send(HEADERS, 0, id, hpackEncode([[':status', '200']])); p.send(PING, 0, 0, Buffer.alloc(8)); }],
    ['HEADERS on a stream we never opened', 1, (p) => p.head(8, [[':status', '200']])],
  ];
  for (const [name, code, answer] of connectionErrors) {
    it(`${name} is a connection error: GOAWAY code ${code}, the request fails, the next one gets a new connection`, async () => {
      const up = await rawUpstream((peer, id) => (up.peers.indexOf(peer) === 0 ? answer(peer, id) : ok(peer, id)));
      try {
        const r = await request(up.pool, '/bad');
        assert.ok(r.error, `status ${r.status}`);
        await until(() => up.peers[0]!.of(GOAWAY).length > 0);
        const goaway = up.peers[0]!.of(GOAWAY)[0];
        assert.ok(goaway, 'GOAWAY sent');
        assert.equal(goaway.payload.readUInt32BE(4), code);
        await until(() => up.peers[0]!.socket.destroyed || up.peers[0]!.socket.readableEnded);
        assert.equal((await request(up.pool, '/next')).body, 'ok');
        assert.equal(up.peers.length, 2);
      } finally {
        await up.close();
      }
    });
  }

  it('a GOAWAY: streams it processed finish, one above its last id is refused, the next goes on a new connection', async () => {
    const up = await rawUpstream((peer, id) => {
      if (up.peers.indexOf(peer) > 0) return ok(peer, id);
      if (id === 1) setTimeout(() => ok(peer, 1), 100);
      if (id === 3) peer.send(GOAWAY, 0, 0, Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]));
    }, { settings: settings([3, 2]) });
    try {
      const first = request(up.pool, '/1');
      await new Promise((r) => setTimeout(r, 30));
      const second = request(up.pool, '/3');
      const third = request(up.pool, '/more'); // over the limit of 2: a second connection
      const [a, b, c] = await Promise.all([first, second, third]);
      assert.equal(a.body, 'ok');
      assert.equal(b.error?.code, 'UND_ERR_REFUSED_STREAM');
      assert.equal(c.body, 'ok', c.error?.message);
      assert.equal(up.peers.length, 2);
    } finally {
      await up.close();
    }
  });

  it('RST_STREAM: REFUSED_STREAM is UND_ERR_REFUSED_STREAM (retried), any other code UND_ERR_H2_RESET (503 UR)', async () => {
    const up = await rawUpstream((peer, id) => peer.send(RST_STREAM, 0, id, Buffer.from([0, 0, 0, id === 1 ? H2_REFUSED_STREAM : 2])));
    try {
      assert.equal((await request(up.pool, '/1')).error?.code, 'UND_ERR_REFUSED_STREAM');
      assert.equal((await request(up.pool, '/3')).error?.code, 'UND_ERR_H2_RESET');
    } finally {
      await up.close();
    }
  });

  it('an abort from the proxy resets the stream with CANCEL; a late answer for it is ignored', async () => {
    let abortFn: ((e?: Error) => void) | undefined;
    const up = await rawUpstream((peer, id) => {
      if (id === 1) {
        abortFn!();
        setTimeout(() => ok(peer, 1), 20);
      } else ok(peer, id);
    });
    try {
      const r = await request(up.pool, '/aborted', { abort: (a) => { abortFn = a; } });
      assert.equal(r.error?.code, 'UND_ERR_ABORTED');
      await until(() => up.peers[0]!.of(RST_STREAM).length > 0);
      assert.equal(up.peers[0]!.of(RST_STREAM)[0]!.payload.readUInt32BE(0), H2_CANCEL);
      await new Promise((r2) => setTimeout(r2, 40));
      assert.deepEqual(r.events, ['error'], 'one outcome only');
      assert.equal((await request(up.pool, '/next')).body, 'ok');
      assert.equal(up.peers.length, 1);
    } finally {
      await up.close();
    }
  });

  it('a handler that throws or aborts in onHeaders on a head that ends the stream hears one outcome (onError), never onComplete too', async () => {
    const up = await rawUpstream((peer, id) => peer.head(id, [[':status', id === 1 ? '204' : '503']], true));
    try {
      const thrown = await request(up.pool, '/throws', { onHeaders: () => { throw new Error('handler bug'); } });
      const aborted = await request(up.pool, '/aborts', { onHeaders: (abort) => { abort(new Error('retrying')); return true; } });
      await sleep(50);
      assert.deepEqual(thrown.events, ['error']);
      assert.deepEqual(aborted.events, ['error']);
    } finally {
      await up.close();
    }
  });

  it('a paused handler keeps a whole response: a GOAWAY and close after END_STREAM, or RST_STREAM NO_ERROR, do not cut it; DATA after END_STREAM is not added', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '200'], ['content-length', '8']]);
      peer.data(id, 'abcd', false);
      peer.data(id, 'efgh', true);
      if (id === 1) peer.data(id, 'INJECTED', true); // the stream is closed (RFC 9113 5.1)
      if (id === 3) setTimeout(() => peer.send(RST_STREAM, 0, id, Buffer.from([0, 0, 0, 0])), 30);
      if (id === 5) setTimeout(() => { peer.send(GOAWAY, 0, 0, Buffer.from([0, 0, 0, 5, 0, 0, 0, 0])); peer.socket.end(); }, 30);
    });
    try {
      for (const path of ['/after-end', '/rst-no-error', '/goaway-close']) {
        const r = await request(up.pool, path, { pauseFirst: (resume) => setTimeout(resume, 150) });
        assert.equal(r.error, undefined, `${path}: ${r.error?.code} ${r.error?.message}`);
        assert.equal(r.body, 'abcdefgh', path);
      }
    } finally {
      await up.close();
    }
  });

  it('a paused handler holding a whole response frees its stream slot: the next request is not held behind it', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '200'], ['content-length', '8']]);
      peer.data(id, 'abcd', false);
      peer.data(id, 'efgh', true);
    }, { settings: settings([3, 1]) });
    try {
      await request(up.pool, '/warm');
      let resumeA: () => void = () => {};
      const a = request(up.pool, '/a', { pauseFirst: (resume) => { resumeA = resume; } });
      await sleep(50);
      const b = await Promise.race([request(up.pool, '/b'), sleep(1000).then(() => undefined)]);
      assert.equal(b?.body, 'abcdefgh', 'b answered while a is still paused');
      assert.equal(up.peers.length, 1, 'on the same connection');
      resumeA();
      assert.equal((await a).body, 'abcdefgh');
    } finally {
      await up.close();
    }
  });

  it('a POST answered early (a whole 413 while its body still streams): the rest of the body is cancelled (RST_STREAM CANCEL)', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '413'], ['content-length', '2']]);
      peer.data(id, 'no');
    });
    try {
      const body = new Readable({ read() {} });
      body.push('partial');
      const r = await request(up.pool, '/', { method: 'POST', body });
      assert.equal(r.status, 413);
      assert.equal(r.body, 'no');
      await until(() => up.peers[0]!.of(RST_STREAM).length > 0);
      assert.equal(up.peers[0]!.of(RST_STREAM)[0]!.payload.readUInt32BE(0), H2_CANCEL);
    } finally {
      await up.close();
    }
  });

  it('trailers with a control character in a value, or a connection-specific one, are malformed (RFC 9113 8.2), as in the head', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.head(id, [[':status', '200']]);
      peer.data(id, 'body', false);
      peer.head(id, id === 1 ? [['grpc-message', 'a\r\nset-cookie: x=1']] : id === 3 ? [['x-nul', 'a\u0000b']] : [['connection', 'close']], true);
    });
    try {
      for (const path of ['/crlf', '/nul', '/connection']) assert.equal((await request(up.pool, path)).error?.code, 'ERR_H2_MALFORMED', path);
    } finally {
      await up.close();
    }
  });

  it('a CONTINUATION flood (empty frames, END_HEADERS never set) is a connection error after 64 KiB counted, not memory without end', async () => {
    const up = await rawUpstream((peer, id) => {
      peer.send(HEADERS, 0, id, hpackEncode([[':status', '200']]));
      const empty = h2frame(CONTINUATION, 0, id);
      peer.socket.write(Buffer.concat(Array.from({ length: 100_000 }, () => empty)));
    });
    try {
      const r = await request(up.pool, '/');
      assert.equal(r.error?.code, 'ERR_H2_MALFORMED');
      await until(() => up.peers[0]!.of(GOAWAY).length > 0);
      assert.equal(up.peers[0]!.of(GOAWAY)[0]!.payload.readUInt32BE(4), H2_PROTOCOL_ERROR);
    } finally {
      await up.close();
    }
  });

  it('a PING flood from a peer that reads nothing: our queue of PING ACKs stays bounded and the connection is closed', async () => {
    const up = await rawUpstream(() => {});
    try {
      const r = request(up.pool, '/');
      await until(() => up.peers.length === 1 && up.peers[0]!.frames.length > 0);
      const ours = (up.pool as unknown as { live: { socket: net.Socket } }).live.socket;
      const peer = up.peers[0]!;
      peer.socket.pause();
      const batch = Buffer.concat(Array.from({ length: 10_000 }, () => h2frame(PING, 0, 0, Buffer.alloc(8))));
      let most = 0;
      for (let i = 0; i < 100 && !ours.destroyed; i++) {
        peer.socket.write(batch); // up to 1,000,000 PINGs, 17 MB
        most = Math.max(most, ours.writableLength);
        await sleep(5);
      }
      await until(() => ours.destroyed, 5000);
      assert.ok(most < 1 << 20, `our write queue reached ${most} bytes`);
      assert.equal((await r).error?.code, 'ERR_H2_MALFORMED');
    } finally {
      await up.close();
    }
  });

  it('HEADERS with the PRIORITY flag and fewer than 5 octets is a FRAME_SIZE_ERROR (connection), not an empty header block', async () => {
    const up = await rawUpstream((peer, id) => peer.send(HEADERS, END_HEADERS | END_STREAM | PRIORITY, id, Buffer.from([0x88])));
    try {
      assert.equal((await request(up.pool, '/')).error?.code, 'ERR_H2_MALFORMED');
      await until(() => up.peers[0]!.of(GOAWAY).length > 0);
      assert.equal(up.peers[0]!.of(GOAWAY)[0]!.payload.readUInt32BE(4), 6);
    } finally {
      await up.close();
    }
  });

  it('a peer window of 0 in SETTINGS holds a body until a later SETTINGS raises it', async () => {
    const got: Buffer[] = [];
    const up = await rawUpstream((peer, id, _f, endStream) => endStream && ok(peer, id), {
      settings: settings([4, 0]),
      onFrame: (peer, f) => {
        if (f.type !== DATA) return;
        got.push(f.payload);
        if (f.flags & END_STREAM) ok(peer, f.id);
      },
    });
    try {
      await request(up.pool, '/warm');
      const r = request(up.pool, '/p', { method: 'POST', body: Buffer.alloc(100, 'x') });
      await sleep(100);
      assert.equal(got.length, 0, 'held at window 0');
      up.peers[0]!.send(SETTINGS, 0, 0, settings([4, 1000]));
      assert.equal((await r).body, 'ok');
      assert.equal(Buffer.concat(got).length, 100);
    } finally {
      await up.close();
    }
  });

  it('pool.close() with requests on two connections (over the peer\'s stream limit) resolves once both are answered', async () => {
    const up = await rawUpstream((peer, id) => setTimeout(() => ok(peer, id), 100), { settings: settings([3, 1]) });
    try {
      await request(up.pool, '/warm');
      const a = request(up.pool, '/a');
      await sleep(20);
      const b = request(up.pool, '/b');
      await sleep(20);
      const closed = up.pool.close();
      const [ra, rb] = await Promise.all([a, b]);
      assert.deepEqual([ra.body, rb.body], ['ok', 'ok']);
      assert.equal(await Promise.race([closed.then(() => 'closed'), sleep(2000).then(() => 'still open')]), 'closed');
      assert.equal(up.peers.length, 2);
    } finally {
      await up.close();
    }
  });

  it('a response head over our header-list limit is that stream\'s error (502 UPE); the connection and its table go on', async () => {
    const up = await rawUpstream((peer, id) => {
      if (id === 1) {
        // 4 KiB on the wire, 68 KiB decoded: a 4000-byte field put in the table, then named 16 times
        // more by its index; last, x-idx: ok put in the table too (0x40: incremental indexing).
        const block = Buffer.concat([Buffer.from([0x88]), hpackLiteral('x-big', 'b'.repeat(4000), true), Buffer.alloc(16, 0x80 | 62), hpackLiteral('x-idx', 'ok', true)]);
        peer.send(HEADERS, END_HEADERS | END_STREAM, id, block);
        return;
      }
      // The next answer names the entry the oversized block added: index 62.
      peer.send(HEADERS, END_HEADERS, id, Buffer.concat([hpackEncode([[':status', '200'], ['content-length', '2']]), Buffer.from([0x80 | 62])]));
      peer.data(id, 'ok');
    });
    try {
      const r = await request(up.pool, '/big');
      assert.equal(r.error?.code, 'ERR_H2_MALFORMED');
      assert.match(r.error!.message, /header list of \d+ bytes/);
      await until(() => up.peers[0]!.of(RST_STREAM).length > 0);
      assert.equal(up.peers[0]!.of(RST_STREAM)[0]!.payload.readUInt32BE(0), H2_PROTOCOL_ERROR);
      const next = await request(up.pool, '/next');
      assert.equal(next.body, 'ok');
      assert.deepEqual(next.headers.slice(2), ['x-idx', 'ok'], 'the table followed the peer\'s');
      assert.equal(up.peers.length, 1);
      assert.equal(up.peers[0]!.of(GOAWAY).length, 0);
    } finally {
      await up.close();
    }
  });

  it('a server that sets SETTINGS_ENABLE_PUSH 1 is a connection error (PROTOCOL_ERROR, RFC 9113 6.5.2)', async () => {
    const up = await rawUpstream((peer, id) => ok(peer, id), { settings: settings([2, 1]) });
    try {
      await request(up.pool, '/');
      await until(() => up.peers[0]!.of(GOAWAY).length > 0);
      assert.equal(up.peers[0]!.of(GOAWAY)[0]!.payload.readUInt32BE(4), H2_PROTOCOL_ERROR);
    } finally {
      await up.close();
    }
  });

  it('2,000 random frame sequences from the upstream: every request ends exactly once, nothing escapes, a good upstream still works', async function () {
    this.timeout(120_000);
    const rnd = mulberry32(4242);
    const int = (n: number) => Math.floor(rnd() * n);
    const valid = (id: number): Buffer[] => [
      h2frame(HEADERS, END_HEADERS, id, hpackEncode([[':status', '200'], ['content-length', '2']])), h2frame(DATA, END_STREAM, id, Buffer.from('ok')),
    ];
    const junk = (id: number): Buffer => {
      const type = int(12);
      const len = rnd() < 0.8 ? int(40) : int(20_000);
      const payload = Buffer.alloc(len);
      for (let i = 0; i < len; i++) payload[i] = int(256);
      return h2frame(type, int(256), rnd() < 0.7 ? id : int(10), payload);
    };
    const outcomes: Outcome[] = [];
    const up = await rawUpstream((peer, id) => {
      const parts = valid(id);
      const seq: Buffer[] = [];
      for (let i = 0; i < 1 + int(3); i++) seq.push(rnd() < 0.5 ? junk(id) : parts[int(2)]!);
      let bytes = Buffer.concat(seq);
      if (rnd() < 0.3) bytes = bytes.subarray(0, int(bytes.length + 1));
      if (rnd() < 0.2) for (let k = 0; k < 3 && bytes.length > 0; k++) bytes[int(bytes.length)] = int(256);
      peer.socket.write(bytes);
      // Sometimes the connection just goes; otherwise a bound on the request (the proxy has timeouts).
      if (rnd() < 0.1) peer.socket.destroy();
    });
    try {
      // In batches of 25 at once (streams interleave on a connection); a request the junk left
      // unanswered is aborted after 20 ms, as the proxy's timeouts would.
      for (let i = 0; i < 2000; i += 25) {
        const batch = Array.from({ length: 25 }, (_, k) => {
          const aborter: { fn?: (e?: Error) => void } = {};
          const r = request(up.pool, `/${i + k}`, { abort: (a) => { aborter.fn = a; } });
          const t = setTimeout(() => aborter.fn?.(), 20);
          return r.finally(() => clearTimeout(t));
        });
        outcomes.push(...(await Promise.all(batch)));
      }
      assert.ok(outcomes.every((o) => o.events.length === 1), 'each request ended exactly once');
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(outcomes.every((o) => o.events.length === 1), 'and stayed ended');
      const kinds = new Set(outcomes.map((o) => o.error?.code ?? 'complete'));
      assert.ok(kinds.has('complete') && kinds.has('ERR_H2_MALFORMED'), [...kinds].join(','));
    } finally {
      await up.close();
    }
    const good = await rawUpstream(ok);
    try {
      assert.equal((await request(good.pool, '/after')).body, 'ok');
    } finally {
      await good.close();
    }
  });
});
