// The ClientHello reader: real hellos from openssl and curl (SNI, ALPN, none), split across TCP
// segments and TLS records, and a fuzz run (random, truncated and mutated hellos, seeded) against the
// pure parser, a socket reader and a real gateway, which must keep serving. sni-reader serves as an
// oracle for well-formed hellos, and is shown to crash a process on a truncated one.

import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import path from 'node:path';
import { parseClientHello, readClientHello, type HelloRead, type ParseResult } from '../../../src/tls/client-hello';
import { startGateway, type TestGateway } from '../../helpers/gateway';
import { waitFor } from '../../helpers/upstream';
import { mulberry32 as prng } from '../../helpers/random';
import { loopbackServiceEntryYaml } from '../../../src/sample/configs';


interface Captured {
  readonly name: string;
  readonly bytes: Buffer;
  readonly sni: string | undefined;
  readonly alpn: readonly string[];
}

/** Run a client against a server that keeps the first complete ClientHello it receives. */
async function capture(name: string, run: (port: number) => Promise<unknown>): Promise<Buffer> {
  let got: Buffer | undefined;
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (parseClientHello(buf).status !== 'incomplete') {
        got ??= buf;
        s.destroy();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await run((server.address() as net.AddressInfo).port);
  server.close();
  assert.ok(got, `no ClientHello captured from ${name}`);
  return got!;
}

function exec(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 5000 }, () => resolve());
    child.stdin?.end();
  });
}

/** Re-frame a hello's handshake bytes into records of at most `size` bytes each. */
function reframe(hello: Buffer, size: number): Buffer {
  const handshake: Buffer[] = [];
  for (let pos = 0; pos + 5 <= hello.length;) {
    const len = hello.readUInt16BE(pos + 3);
    handshake.push(hello.subarray(pos + 5, pos + 5 + len));
    pos += 5 + len;
  }
  const body = Buffer.concat(handshake);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    const head = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    head.writeUInt16BE(part.length, 3);
    out.push(head, part);
  }
  return Buffer.concat(out);
}

const STATUSES = new Set(['incomplete', 'hello', 'not-tls', 'invalid']);

/** A ClientHello in one record with extension `type`'s data replaced, every length fixed up. */
function withExtension(hello: Buffer, type: number, data: Buffer): Buffer {
  const body = hello.subarray(5 + 4); // after the record and handshake headers
  let p = 2 + 32; // legacy version, random
  p += 1 + body[p]!; // session id
  p += 2 + body.readUInt16BE(p); // cipher suites
  p += 1 + body[p]!; // compression methods
  const exts: Buffer[] = [];
  for (let q = p + 2; q < body.length;) {
    const t = body.readUInt16BE(q);
    const len = body.readUInt16BE(q + 2);
    const d = t === type ? data : body.subarray(q + 4, q + 4 + len);
    const h = Buffer.alloc(4);
    h.writeUInt16BE(t);
    h.writeUInt16BE(d.length, 2);
    exts.push(h, d);
    q += 4 + len;
  }
  const extensions = Buffer.concat(exts);
  const message = Buffer.concat([body.subarray(0, p), u16(extensions.length), extensions]);
  const handshake = Buffer.from([1, 0, 0, 0]);
  handshake.writeUIntBE(message.length, 1, 3);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(message.length + 4), handshake, message]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

const nameEntry = (type: number, name: string) => Buffer.concat([Buffer.from([type]), u16(Buffer.byteLength(name, 'latin1')), Buffer.from(name, 'latin1')]);
const nameList = (...entries: Buffer[]) => Buffer.concat([u16(entries.reduce((n, e) => n + e.length, 0)), ...entries]);

/** What OpenSSL (node's TLS server, in memory) makes of a hello: the server name it reports, or its error. */
function opensslServerName(hello: Buffer): Promise<{ sni: string | undefined } | { error: string }> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: { sni: string | undefined } | { error: string }) => {
      if (!done) resolve(v);
      done = true;
    };
    const wire = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    const server = new tls.TLSSocket(wire, { isServer: true, SNICallback: (name, cb) => { finish({ sni: name }); cb(null, undefined); } });
    server.on('error', (err: NodeJS.ErrnoException) => finish({ error: err.code ?? err.message }));
    wire.push(hello);
    setTimeout(() => {
      finish({ sni: server.servername || undefined });
      server.destroy();
    }, 200);
  });
}

describe('ClientHello reader', function () {
  this.timeout(60_000);
  const hellos: Captured[] = [];
  const seed = Number(process.env['MESHGATE_FUZZ_SEED'] ?? 20261123);

  before(async () => {
    const sslArgs = (port: number, extra: string[]) => ['s_client', '-connect', `127.0.0.1:${port}`, ...extra];
    const curlArgs = (port: number, extra: string[]) => ['-sk', '--max-time', '3', '--resolve', `x.example.com:${port}:127.0.0.1`, ...extra, `https://x.example.com:${port}/`];
    const clients: [string, (p: number) => Promise<unknown>, string | undefined, string[]][] = [
      ['openssl TLS 1.3, SNI and ALPN', (p) => exec('openssl', sslArgs(p, ['-servername', 'a.example.com', '-alpn', 'h2,http/1.1'])), 'a.example.com', ['h2', 'http/1.1']],
      ['openssl TLS 1.2 only', (p) => exec('openssl', sslArgs(p, ['-tls1_2', '-servername', 'B.Example.com'])), 'b.example.com', []],
      ['openssl without SNI', (p) => exec('openssl', sslArgs(p, ['-noservername'])), undefined, []],
      ['curl, ALPN h2', (p) => exec('curl', curlArgs(p, [])), 'x.example.com', ['h2', 'http/1.1']],
      ['curl --http1.1', (p) => exec('curl', curlArgs(p, ['--http1.1'])), 'x.example.com', ['http/1.1']],
    ];
    for (const [name, run, sni, alpn] of clients) hellos.push({ name, bytes: await capture(name, run), sni, alpn });
  });

  it('reads SNI and ALPN from real hellos (openssl, curl; TLS 1.2 and 1.3; with and without SNI)', () => {
    for (const h of hellos) {
      const r = parseClientHello(h.bytes);
      assert.equal(r.status, 'hello', `${h.name}: ${JSON.stringify(r)}`);
      if (r.status !== 'hello') continue;
      assert.equal(r.sni, h.sni, h.name);
      assert.deepEqual(r.alpn, h.alpn, h.name);
    }
  });

  it('agrees with sni-reader on every well-formed hello', async () => {
    const sniReader = require('sni-reader') as (s: NodeJS.ReadableStream, cb: (err: Error | null, name?: string) => void) => void;
    for (const h of hellos) {
      const { PassThrough } = await import('node:stream');
      const stream = new PassThrough();
      const name = await new Promise<string | undefined>((resolve) => {
        sniReader(stream, (err, n) => resolve(err ? `error: ${err.message}` : n));
        stream.end(h.bytes);
      });
      assert.equal(name?.toLowerCase(), h.sni, h.name);
    }
  });

  it('is incomplete for every proper prefix, split at every byte', () => {
    for (const h of hellos) {
      for (let i = 1; i < h.bytes.length; i++) {
        const r = parseClientHello(h.bytes.subarray(0, i));
        assert.equal(r.status, 'incomplete', `${h.name}, ${i} of ${h.bytes.length} bytes: ${JSON.stringify(r)}`);
      }
    }
  });

  it('reassembles a hello split across TLS records', () => {
    for (const h of hellos) {
      const whole = parseClientHello(h.bytes);
      for (const size of [1, 7, 100, 512]) {
        assert.deepEqual(parseClientHello(reframe(h.bytes, size)), whole, `${h.name} in records of ${size}`);
      }
    }
  });

  it("server_name as OpenSSL reads it: a name we route on is the name OpenSSL sees; what it refuses, we do (one entry, a host name)", async () => {
    const base = hellos[0]!.bytes;
    const cases: [string, Buffer, string | 'invalid' | undefined][] = [
      ['one host name', nameList(nameEntry(0, 'a.example')), 'a.example'],
      ['upper case, trailing dot', nameList(nameEntry(0, 'A.Example.')), 'a.example'],
      ['an IPv4 literal', nameList(nameEntry(0, '10.0.0.1')), '10.0.0.1'],
      ['a name of type 1 alone', nameList(nameEntry(1, 'a.example')), 'invalid'],
      ['a host name, then type 1', nameList(nameEntry(0, 'a.example'), nameEntry(1, 'b.example')), 'invalid'],
      ['type 1, then a host name', nameList(nameEntry(1, 'b.example'), nameEntry(0, 'a.example')), 'invalid'],
      ['two host names', nameList(nameEntry(0, 'a.example'), nameEntry(0, 'b.example')), 'invalid'],
      ['an empty extension', Buffer.alloc(0), 'invalid'],
      ['an empty list', nameList(), 'invalid'],
      ['a NUL in the name', nameList(nameEntry(0, 'a\0.example')), 'invalid'],
      ['a byte after the list', Buffer.concat([nameList(nameEntry(0, 'a.example')), Buffer.from([0])]), 'invalid'],
    ];
    for (const [name, data, want] of cases) {
      const hello = withExtension(base, 0, data);
      const ours = parseClientHello(hello);
      const theirs = await opensslServerName(hello);
      if (want === 'invalid') {
        assert.equal(ours.status, 'invalid', `${name}: ${JSON.stringify(ours)}`);
        // BAD_EXTENSION: refused for the server_name itself (a hello OpenSSL took would end in another
        // error here, for want of a certificate).
        assert.deepEqual(theirs, { error: 'ERR_SSL_BAD_EXTENSION' }, `${name}: OpenSSL refuses its server_name too`);
      } else {
        assert.ok(ours.status === 'hello' && ours.sni === want, `${name}: ${JSON.stringify(ours)}`);
        assert.ok('sni' in theirs && theirs.sni?.toLowerCase().replace(/\.$/, '') === want, `${name}: OpenSSL sees ${JSON.stringify(theirs)}`);
      }
    }
  });

  it('rejects what is not a hello: plain HTTP, other records, a lying length, oversize', () => {
    const first = hellos[0]!.bytes;
    assert.equal(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n')).status, 'not-tls');
    assert.equal(parseClientHello(Buffer.from([0x17, 3, 3, 0, 1, 0])).status, 'not-tls');
    const lying = Buffer.from(first);
    lying.writeUInt16BE(lying.readUInt16BE(5 + 4 + 2 + 32 + 1 + lying[5 + 4 + 2 + 32]!) + 1, 5 + 4 + 2 + 32 + 1 + lying[5 + 4 + 2 + 32]!); // cipher suites length
    assert.equal(parseClientHello(lying).status, 'invalid');
    const huge = Buffer.from([0x16, 3, 1, 0x40, 0, 1, 0x00, 0x50, 0x00]); // handshake claims 20 KiB
    assert.deepEqual(parseClientHello(huge), { status: 'invalid', reason: 'ClientHello of 20480 bytes exceeds 16384' });
  });

  it(`fuzz: never throws on random, truncated and mutated hellos (seed ${seed})`, () => {
    const rand = prng(seed);
    const byte = () => Math.floor(rand() * 256);
    const results = new Map<string, number>();
    const check = (buf: Buffer, what: string) => {
      let r: ParseResult;
      try {
        r = parseClientHello(buf);
      } catch (err) {
        assert.fail(`${what} (seed ${seed}): threw ${(err as Error).message}; input ${buf.toString('hex').slice(0, 200)}`);
      }
      assert.ok(STATUSES.has(r.status), what);
      results.set(r.status, (results.get(r.status) ?? 0) + 1);
    };
    for (let i = 0; i < 3000; i++) {
      const len = Math.floor(rand() * 600);
      const buf = Buffer.from(Array.from({ length: len }, byte));
      if (len > 2 && rand() < 0.7) {
        buf[0] = 0x16;
        buf[1] = 0x03; // look like a handshake record, so the parser goes deep
      }
      check(buf, `random #${i}`);
    }
    for (const h of hellos) {
      for (let i = 0; i <= h.bytes.length; i++) check(h.bytes.subarray(0, i), `${h.name} truncated to ${i}`);
      for (let i = 0; i < 1500; i++) {
        const m = Buffer.from(h.bytes);
        const edits = 1 + Math.floor(rand() * 4);
        let out: Buffer = m;
        for (let e = 0; e < edits; e++) {
          const at = Math.floor(rand() * out.length);
          const kind = rand();
          if (kind < 0.6) out[at] = byte();
          else if (kind < 0.8) out = Buffer.concat([out.subarray(0, at), Buffer.from([byte()]), out.subarray(at)]);
          else out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
        }
        check(out, `${h.name} mutation #${i}`);
      }
    }
    // The run reached every outcome, so it exercised the parser rather than bouncing off byte 0.
    for (const s of ['incomplete', 'hello', 'not-tls', 'invalid']) assert.ok((results.get(s) ?? 0) > 0, `no ${s} result: ${JSON.stringify([...results])}`);
  });

  it('raw sni-reader crashes a process on a truncated hello (why it is not used on sockets)', () => {
    const script = `
      const net = require('net'); const sni = require(${JSON.stringify(path.dirname(require.resolve('sni-reader/package.json')))});
      const srv = net.createServer((s) => { s.on('error', () => {}); sni(s, () => s.destroy()); }).listen(0, () => {
        const c = net.connect(srv.address().port, '127.0.0.1', () => c.write(Buffer.from([0x16,3,1,0,6,1,0,0,2,3,3])));
        c.on('error', () => {}); setTimeout(() => process.exit(0), 1000);
      });`;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 10_000, encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /RangeError/);
  });

  it('socket reader: survives hundreds of fuzzed connections, bounded in time and size', async () => {
    const rand = prng(seed + 1);
    let uncaught = 0;
    const onUncaught = () => { uncaught += 1; };
    process.on('uncaughtException', onUncaught);
    const seen: HelloRead[] = [];
    const server = net.createServer((s) => {
      s.on('error', () => {});
      void readClientHello(s, { timeoutMs: 300 }).then((r) => {
        seen.push(r);
        s.destroy();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const send = (chunks: Buffer[], opts: { destroyAfter?: number } = {}) => new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      c.on('close', () => resolve());
      c.once('connect', async () => {
        for (const [i, chunk] of chunks.entries()) {
          if (opts.destroyAfter === i) return void c.destroy();
          c.write(chunk);
          await new Promise((r) => setImmediate(r));
        }
        setTimeout(() => c.destroy(), 1000);
      });
    });
    try {
      const base = hellos[0]!.bytes;
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < 300; i++) {
        const m = Buffer.from(base);
        for (let e = 0; e < 3; e++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
        const cut = Math.floor(rand() * m.length);
        const chunks = [m.subarray(0, cut), m.subarray(cut)];
        jobs.push(send(chunks, rand() < 0.2 ? { destroyAfter: 1 } : {}));
        if (jobs.length >= 30) await Promise.all(jobs.splice(0));
      }
      await Promise.all(jobs);
      // Silence: closed by the timeout. 20 KiB of handshake-looking bytes: invalid at once.
      const t0 = Date.now();
      await send([]);
      const junk = Buffer.alloc(20 * 1024, 0x41);
      junk.set([0x16, 3, 1, 0x3f, 0xff, 1, 0x00, 0x4f, 0xfb]); // a handshake of 20 KiB
      await send([junk]);
      // A valid hello, split in three, still reads.
      await send([base.subarray(0, 3), base.subarray(3, 50), base.subarray(50)]);
      await waitFor(() => seen.length >= 303, { timeoutMs: 5000 });
      assert.ok(Date.now() - t0 < 4000);
      assert.ok(seen.some((r) => r.status === 'timeout'), 'a silent client times out');
      assert.ok(seen.some((r) => r.status === 'invalid' && /exceeds 16384/.test(r.reason)), 'oversize is invalid');
      const last = seen.at(-1)!;
      assert.equal(last.status, 'hello');
      assert.ok(last.bytes.equals(base), 'every byte read is kept for the replay');
      assert.equal(uncaught, 0);
    } finally {
      process.off('uncaughtException', onUncaught);
      server.close();
    }
  });

  describe('through a real gateway (TLS passthrough)', () => {
    let gw: TestGateway;
    let upstream: net.Server;
    const received: Buffer[] = [];

    before(async () => {
      upstream = net.createServer((s) => {
        const parts: Buffer[] = [];
        s.on('error', () => {});
        s.on('data', (c: Buffer) => parts.push(c));
        s.on('close', () => received.push(Buffer.concat(parts)));
      });
      await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
      gw = await startGateway({
        'pt.yaml': `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [a.example.com], tls: {mode: PASSTHROUGH}}]
---
${loopbackServiceEntryYaml('up', 'a.example.com', 443, 'TLS', (upstream.address() as net.AddressInfo).port)}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pt, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  tls: [{match: [{port: 443, sniHosts: [a.example.com]}], route: [{destination: {host: a.example.com, port: {number: 443}}}]}]
`,
      }, { serverPorts: [443], opts: { tlsHelloTimeoutMs: 300 } });
    });
    after(async () => {
      await gw?.stop();
      upstream?.close();
    });

    it('keeps serving through 500 fuzzed hellos and replays a good one byte for byte', async () => {
      const rand = prng(seed + 2);
      const port = gw.port(443);
      const base = hellos[0]!.bytes; // SNI a.example.com
      const fire = (buf: Buffer) => new Promise<void>((resolve) => {
        const c = net.connect(port, '127.0.0.1', () => c.write(buf));
        c.on('error', () => {});
        c.on('close', () => resolve());
        setTimeout(() => c.destroy(), 400);
      });
      for (let round = 0; round < 10; round++) {
        await Promise.all(Array.from({ length: 50 }, () => {
          const m = Buffer.from(base);
          for (let e = 0; e < 2; e++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
          return fire(rand() < 0.3 ? m.subarray(0, Math.floor(rand() * m.length)) : m);
        }));
      }
      const ok = net.connect(port, '127.0.0.1', () => ok.end(base));
      ok.on('error', () => {});
      // The upstream receives exactly the client's ClientHello bytes, nothing added or lost.
      await waitFor(() => received.some((b) => b.equals(base)), { timeoutMs: 3000 });
      await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => / a\.example\.com -$/.test(l) && l.includes('"- - -" 0 - ')); }, { timeoutMs: 3000 });
    });
  });
});
