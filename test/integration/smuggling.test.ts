// Request smuggling, desync and header injection at the gateway, end to end on loopback sockets:
// raw bytes in from a client, the exact bytes the upstream receives recorded, raw upstream answers
// out. Each case asserts the safe behaviour (what Envoy does, or stricter), so a parser option, a
// header rule or a re-framing change that opens one of these vectors fails here.
//
// Request side (HTTP/1): ambiguous framing (CL+TE, duplicate CL, obfuscated TE, bad chunks, obs-fold,
// whitespace before the colon, control bytes in values) is refused with 400 before anything goes
// upstream; valid requests are re-framed canonically; pipelined requests never leak into each other's
// bodies; Connection cannot remove what the gateway adds; client x-envoy-* headers are stripped.
// Response side: upstream framing errors become 502 / a reset, and stray upstream bytes never reach
// the next client (no response-queue poisoning). HTTP/2 (h2c): content-length must match DATA,
// connection-specific headers, uppercase names and malformed pseudo-headers reset the stream.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { listenLoopback, portOf } from '../helpers/upstream';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';
import { h2frame } from '../helpers/h2frames';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly body: string;
}

/** Records every byte each upstream connection carries, and answers through Node's HTTP server with an echo. */
class RecordingUpstream {
  readonly conns: { bytes: Buffer[]; closed: boolean }[] = [];
  readonly seen: Seen[] = [];
  /** Every byte received, all connections, in arrival order (append-only: slice it by an earlier length). */
  private log = '';
  private readonly echo = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      this.seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString('latin1') });
      res.writeHead(200, { 'content-length': 2 }).end('ok');
    });
  });
  readonly server = net.createServer((c) => {
    const rec = { bytes: [] as Buffer[], closed: false };
    this.conns.push(rec);
    const back = net.connect(portOf(this.echo), '127.0.0.1');
    back.on('error', () => c.destroy());
    c.on('error', () => back.destroy());
    c.on('data', (d: Buffer) => {
      rec.bytes.push(d);
      this.log += d.toString('latin1');
      back.write(d);
    });
    c.on('end', () => back.end());
    c.on('close', () => {
      rec.closed = true;
      back.destroy();
    });
    back.pipe(c);
  });

  async start(): Promise<void> {
    await listenLoopback(this.echo);
    await listenLoopback(this.server);
  }

  /** Every byte received so far, all connections, in arrival order. */
  text(): string {
    return this.log;
  }

  close(): void {
    this.server.close();
    this.echo.close();
    this.echo.closeAllConnections();
  }
}

/**
 * Answers each request with the raw bytes CANNED[last path segment] (the head is read, a body is
 * not expected). A request for /canned/legit gets a normal 200 `legit`.
 */
const CANNED: Record<string, string> = {
  'cl-te': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2c\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON\r\n0\r\n\r\n',
  'dup-cl': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 8\r\n\r\nokPOISON',
  'cr-header': 'HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok',
  'lf-header': 'HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok',
  'nul-header': 'HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok',
  'fold-header': 'HTTP/1.1 200 OK\r\nX-A: a\r\n Set-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok',
  'space-colon': 'HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok',
  'bad-chunk': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloZZ\r\n0\r\n\r\n',
  'chunk-overflow': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n',
  'trailer-framing': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n',
  'extra-bytes': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON',
  '204-then-bytes': 'HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON',
  'head-cl': 'HTTP/1.1 200 OK\r\nContent-Length: 38\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON',
  'early-hints': 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  'unasked-101': 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON',
  'conn-nominates': 'HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok',
  legit: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlegit',
  // RFC 9110 8.6: a 304 may carry the Content-Length a 200 would have had; it has no body.
  'not-modified-cl': 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n',
  'no-content-cl': 'HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n',
  'gzip-chunked': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'ws-refused': 'HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n',
};

interface Response {
  readonly status: number;
  readonly headers: [string, string][];
  readonly body: string;
}

/** Complete HTTP/1.1 responses in `text` (content-length, chunked, 1xx and bodiless ones); `rest` is what follows them. */
function parseResponses(text: string, headRequest = false): { responses: Response[]; rest: string } {
  const responses: Response[] = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (!/^HTTP\/1\.[01] \d{3}/.test(rest) || end < 0) break;
    const lines = rest.slice(0, end).split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    const headers = lines.slice(1).map((l): [string, string] => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]);
    const get = (n: string) => headers.find(([k]) => k === n)?.[1];
    let after = rest.slice(end + 4);
    let body = '';
    if (status >= 200 && status !== 204 && status !== 304 && !headRequest) {
      if (get('transfer-encoding')?.toLowerCase() === 'chunked') {
        let ok = false;
        for (;;) {
          const le = after.indexOf('\r\n');
          if (le < 0) break;
          const size = parseInt(after.slice(0, le), 16);
          if (size === 0) {
            const te = after.indexOf('\r\n\r\n');
            if (te < 0) break;
            after = after.slice(te + 4);
            ok = true;
            break;
          }
          if (after.length < le + 2 + size + 2) break;
          body += after.slice(le + 2, le + 2 + size);
          after = after.slice(le + 2 + size + 2);
        }
        if (!ok) break;
      } else if (get('content-length') !== undefined) {
        const n = Number(get('content-length'));
        if (after.length < n) break;
        body = after.slice(0, n);
        after = after.slice(n);
      } else {
        break; // close-delimited: not complete until the end
      }
    }
    responses.push({ status, headers, body });
    rest = after;
  }
  return { responses, rest };
}

const finals = (text: string, head = false) => parseResponses(text, head).responses.filter((r) => r.status >= 200);

/**
 * Write raw bytes (parts 50 ms apart), read until the connection closes, `finalCount` final
 * responses are complete, or the timeout; `closed` says whether the gateway closed it.
 */
function exchange(port: number, data: string | string[], o: { finalCount?: number; timeoutMs?: number; head?: boolean; until?: (text: string) => boolean } = {}): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(port, '127.0.0.1');
    let settled = false;
    const done = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const timer = setTimeout(() => done(false), o.timeoutMs ?? 1500);
    const parts = Array.isArray(data) ? data : [data];
    sock.on('connect', () => {
      parts.forEach((p, i) => setTimeout(() => { if (!sock.destroyed) sock.write(Buffer.from(p, 'latin1')); }, i * 50));
    });
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      const text = Buffer.concat(chunks).toString('latin1');
      if (o.until?.(text) || (o.finalCount !== undefined && finals(text, o.head).length >= o.finalCount)) done(false);
    });
    sock.on('error', () => done(true));
    sock.on('close', () => done(true));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- HTTP/2 frames by hand: what a client library would refuse to send -------------------------

/** HPACK "literal header field never indexed, new name", no Huffman: any bytes, any case. */
function hpackLiteral(name: string, value: string): Buffer {
  const int7 = (x: number) => {
    if (x < 127) return Buffer.from([x]);
    const out = [127];
    let v = x - 127;
    while (v >= 128) {
      out.push((v & 127) | 128);
      v >>= 7;
    }
    out.push(v);
    return Buffer.from(out);
  };
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  return Buffer.concat([Buffer.from([0x10]), int7(n.length), n, int7(v.length), v]);
}


const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

/**
 * One request on stream 1 of a fresh h2c connection; resolves with how stream 1 ended: 'reset'
 * (RST_STREAM or GOAWAY), 'response' (HEADERS then END_STREAM), or 'timeout'.
 */
function h2Request(port: number, headers: [string, string][], data: string[] = []): Promise<'reset' | 'response' | 'timeout'> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let sawHeaders = false;
    let settled = false;
    const done = (r: 'reset' | 'response' | 'timeout') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done('timeout'), 2000);
    sock.on('connect', () => {
      const block = Buffer.concat(headers.map(([n, v]) => hpackLiteral(n, v)));
      const frames = [Buffer.from(PREFACE, 'latin1'), h2frame(4, 0, 0, Buffer.alloc(0)), h2frame(1, 0x4 | (data.length === 0 ? 0x1 : 0), 1, block)];
      data.forEach((d, i) => frames.push(h2frame(0, i === data.length - 1 ? 0x1 : 0, 1, Buffer.from(d, 'latin1'))));
      sock.write(Buffer.concat(frames));
    });
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const sid = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === 4 && !(flags & 1)) sock.write(h2frame(4, 1, 0, Buffer.alloc(0))); // SETTINGS ack
        if (type === 7) return done('reset');
        if (sid !== 1) continue;
        if (type === 3) return done('reset');
        if (type === 1) sawHeaders = true;
        if ((type === 0 || type === 1) && flags & 1 && sawHeaders) return done('response');
      }
    });
    sock.on('error', () => done('reset'));
    sock.on('close', () => done('reset'));
  });
}

describe('request smuggling, desync and header injection', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  let port: number;
  const rec = new RecordingUpstream();
  let canned: net.Server;
  /** Connections the canned upstream accepted, and whether each has closed. */
  const cannedConns: { socket: net.Socket; closed: boolean }[] = [];

  before(async () => {
    await rec.start();
    canned = net.createServer((c) => {
      const entry = { socket: c, closed: false };
      cannedConns.push(entry);
      c.on('error', () => {});
      c.on('close', () => { entry.closed = true; });
      let buf = '';
      c.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        let end: number;
        while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
          const target = buf.slice(0, end).split(' ')[1] ?? '';
          buf = buf.slice(end + 4);
          const answer = CANNED[target.split('/').pop() ?? ''];
          if (answer) c.write(Buffer.from(answer, 'latin1'));
        }
      });
    });
    await listenLoopback(canned);
    gw = await startGateway({
      'routes.yaml': `${httpGatewayYaml()}${loopbackServiceEntryYaml('rec', 'rec.internal', 80, 'HTTP', portOf(rec.server))}${loopbackServiceEntryYaml('canned', 'canned.internal', 80, 'HTTP', portOf(canned))}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: smuggling, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /echo}}]
    route: [{destination: {host: rec.internal}}]
  - match: [{uri: {prefix: /canned}}]
    route: [{destination: {host: canned.internal}}]
`,
    });
    port = gw.port(80);
  });
  after(async () => {
    await gw?.stop();
    rec.close();
    for (const c of cannedConns) c.socket.destroy();
    canned?.close();
  });

  const H = 'Host: app.example.com\r\n';

  /** Send, expect a 400 and a closed connection, and nothing new at the upstream. */
  async function refused(request: string, status = 400): Promise<void> {
    const before = rec.text().length;
    const seen = rec.seen.length;
    const { text, closed } = await exchange(port, request);
    assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), `answer: ${JSON.stringify(text.slice(0, 200))}`);
    assert.ok(closed, 'the connection is closed after the error');
    await sleep(100);
    assert.equal(rec.text().length, before, `nothing reached the upstream: ${JSON.stringify(rec.text().slice(before))}`);
    assert.equal(rec.seen.length, seen);
  }

  /** Send; return the requests the upstream saw for it and the new raw bytes. */
  async function forwarded(request: string | string[], finalCount = 1): Promise<{ seen: Seen[]; raw: string; text: string }> {
    const before = rec.text().length;
    const n = rec.seen.length;
    const { text } = await exchange(port, request, { finalCount });
    await sleep(50);
    return { seen: rec.seen.slice(n), raw: rec.text().slice(before), text };
  }

  const headerOf = (s: Seen, name: string) => {
    const out: string[] = [];
    for (let i = 0; i + 1 < s.rawHeaders.length; i += 2) if (s.rawHeaders[i]!.toLowerCase() === name) out.push(s.rawHeaders[i + 1]!);
    return out;
  };

  describe('HTTP/1 request framing', () => {
    it('Content-Length with Transfer-Encoding is refused (no CL.TE / TE.CL)', () =>
      refused(`POST /echo HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\n${H}\r\n`));

    it('HTTP/1.0 with Content-Length and Transfer-Encoding is refused', () =>
      refused(`POST /echo HTTP/1.0\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc`));

    it('two Content-Length headers are refused, equal or not, and a list value too', async () => {
      await refused(`POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /echo/smuggled HTTP/1.1\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Content-Length: 3, 3\r\n\r\nabc`);
    });

    it('malformed Content-Length values are refused', async () => {
      for (const v of ['-1', '+3', '3 3', '0x3', '99999999999999999999']) await refused(`POST /echo HTTP/1.1\r\n${H}Content-Length: ${v}\r\n\r\nabc`);
    });

    it('Transfer-Encoding where chunked is not the final coding, or unknown, or repeated, is refused', async () => {
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    });

    it('a coding before chunked (gzip) is refused with 501, as Envoy: it could not be passed on intact', async () => {
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, 501);
    });

    it('HTTP/1.0 with Transfer-Encoding is faulty framing: refused; HTTP/0.9 is not served', async () => {
      await refused(`POST /echo HTTP/1.0\r\n${H}Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      const before = rec.seen.length;
      const { text } = await exchange(port, 'GET /echo\r\n\r\n');
      assert.doesNotMatch(text, /^HTTP\/1\.[01] 200 /, JSON.stringify(text.slice(0, 100)));
      assert.equal(rec.seen.length, before, 'nothing reached the upstream');
    });

    it('chunked spelled with other case or whitespace is decoded and sent on as canonical chunked', async () => {
      for (const te of ['Chunked', ' chunked', '\tchunked', 'CHUNKED ']) {
        const { seen, raw } = await forwarded(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding:${te.startsWith(' ') || te.startsWith('\t') ? '' : ' '}${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
        assert.equal(seen.length, 1, te);
        assert.equal(seen[0]!.body, 'abc');
        assert.match(raw, /\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n$/);
        assert.equal(raw.match(/transfer-encoding/gi)?.length, 1);
      }
    });

    it('bad chunks are refused: size overflow, bare LF, missing CRLF after the data, space in the size', async () => {
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;ext\nabc\r\n0\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n`);
    });

    it('a chunked body that goes bad midway never reaches the upstream as a complete request', async () => {
      const n = rec.seen.length;
      const { text } = await exchange(port, `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\n${H}\r\n`);
      assert.match(text, /^HTTP\/1\.1 400 /);
      await sleep(150);
      assert.equal(rec.seen.length, n, 'the upstream never completed a request');
      assert.doesNotMatch(rec.text(), /\/echo\/smuggled/);
    });

    it('chunk extensions and trailers are accepted and dropped: the upstream gets plain chunks', async () => {
      const { seen, raw } = await forwarded(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n`);
      assert.equal(seen[0]!.body, 'abc');
      assert.match(raw, /\r\n\r\n3\r\nabc\r\n0\r\n\r\n$/);
    });

    it('header syntax that parsers disagree on is refused: obs-fold, space before colon, bare LF lines', async () => {
      await refused(`GET /echo HTTP/1.1\r\n${H}X-A: one\r\n two\r\n\r\n`);
      await refused(`POST /echo HTTP/1.1\r\n${H}X-A: one\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Content-Length : 3\r\n\r\nabc`);
      await refused(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
      await refused(`GET /echo HTTP/1.1\n${H.replace('\r\n', '\n')}\n`);
    });

    it('NUL, CR, LF and DEL inside a header value are refused (no header injection upstream)', async () => {
      for (const v of ['a\x00b', 'a\rb', 'a\nX-Injected: 1', 'a\x7fb']) await refused(`GET /echo HTTP/1.1\r\n${H}X-A: ${v}\r\n\r\n`);
    });

    it('a request line with a space or tab in the target, a lowercase method or version 1.2 is refused', async () => {
      await refused(`GET /echo/a\tb HTTP/1.1\r\n${H}\r\n`);
      await refused(`GET /echo HTTP/1.1 x\r\n${H}\r\n`);
      await refused(`get /echo HTTP/1.1\r\n${H}\r\n`);
      await refused(`GET /echo HTTP/1.2\r\n${H}\r\n`);
    });

    it('an HTTP/1.1 request without Host, or with a Host that is no authority, is refused', async () => {
      await refused('GET /echo HTTP/1.1\r\n\r\n');
      for (const host of ['app.example.com/../admin', 'user@app.example.com', 'a b']) await refused(`GET /echo HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    });

    it('duplicate Host: routing and the upstream both use the first, and exactly one Host goes upstream', async () => {
      const { seen } = await forwarded(`GET /echo HTTP/1.1\r\nHost: first.example.com\r\nHost: second.example.com\r\n\r\n`);
      assert.deepEqual(headerOf(seen[0]!, 'host'), ['first.example.com']);
    });

    it('absolute-form: the authority of the target replaces Host, for routing and upstream alike', async () => {
      const { seen } = await forwarded(`GET http://abs.example.com/echo HTTP/1.1\r\nHost: header.example.com\r\n\r\n`);
      assert.equal(seen[0]!.url, '/echo');
      assert.deepEqual(headerOf(seen[0]!, 'host'), ['abs.example.com']);
    });

    it('a GET with a Content-Length body is forwarded whole, with its Content-Length', async () => {
      const { seen, raw } = await forwarded(`GET /echo HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`);
      assert.equal(seen[0]!.method, 'GET');
      assert.equal(seen[0]!.body, 'hello');
      assert.match(raw, /\r\ncontent-length: 5\r\n\r\nhello$/);
    });

    it('a large (streamed) Content-Length body with a pipelined request after it: two requests upstream, bodies intact', async () => {
      const body = 'A'.repeat(70_000);
      const { seen, text } = await forwarded(`POST /echo HTTP/1.1\r\n${H}Content-Length: ${body.length}\r\n\r\n${body}GET /echo/second HTTP/1.1\r\n${H}\r\n`, 2);
      assert.equal(finals(text).length, 2);
      const post = seen.find((s) => s.method === 'POST');
      assert.equal(post?.body.length, body.length);
      assert.ok(seen.some((s) => s.method === 'GET' && s.url === '/echo/second' && s.body === ''));
      assert.equal(seen.length, 2);
    });

    it('pipelined: a body that looks like a request stays a body, the next request stays a request', async () => {
      const inner = `GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`;
      for (const framing of ['cl', 'chunked']) {
        const head = framing === 'cl' ? `Content-Length: ${inner.length}\r\n\r\n${inner}` : `Transfer-Encoding: chunked\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
        const { seen } = await forwarded(`POST /echo HTTP/1.1\r\n${H}${head}GET /echo/second HTTP/1.1\r\n${H}\r\n`, 2);
        assert.equal(seen.length, 2, framing);
        assert.equal(seen.find((s) => s.method === 'POST')?.body, inner);
        assert.ok(seen.some((s) => s.url === '/echo/second'));
        assert.ok(!seen.some((s) => s.url === '/echo/smuggled'));
      }
    });

    it('a body of a request the gateway answers itself (404) is skipped, never forwarded as a request', async () => {
      const inner = `GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`;
      for (const body of [`Content-Length: ${inner.length}\r\n\r\n${inner}`, `Transfer-Encoding: chunked\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`, `Content-Length: 70000\r\n\r\n${inner}${'A'.repeat(70_000 - inner.length)}`]) {
        const { seen, text } = await forwarded(`POST /nowhere HTTP/1.1\r\n${H}${body}GET /echo/second HTTP/1.1\r\n${H}\r\n`, 2);
        assert.deepEqual(finals(text).map((r) => r.status), [404, 200]);
        assert.deepEqual(seen.map((s) => s.url), ['/echo/second']);
      }
    });

    it('Expect: 100-continue is answered by the gateway and not sent upstream; another expectation gets 417', async () => {
      const { text, seen, raw } = await forwarded(`POST /echo HTTP/1.1\r\n${H}Content-Length: 5\r\nExpect: 100-continue\r\n\r\nhello`);
      assert.deepEqual(parseResponses(text).responses.map((r) => r.status), [100, 200]);
      assert.equal(seen[0]!.body, 'hello');
      assert.doesNotMatch(raw, /expect/i);
      const other = await exchange(port, `POST /echo HTTP/1.1\r\n${H}Content-Length: 5\r\nExpect: something\r\n\r\nhello`, { finalCount: 1 });
      assert.match(other.text, /^HTTP\/1\.1 417 /);
    });

    it('a client that goes away mid chunked body: the upstream never sees the last chunk', async () => {
      const before = rec.text().length;
      const n = rec.seen.length;
      const sock = net.connect(port, '127.0.0.1');
      sock.on('error', () => {});
      await new Promise((r) => sock.once('connect', r));
      sock.write(`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
      await sleep(200);
      sock.destroy();
      await sleep(200);
      assert.equal(rec.seen.length, n);
      const raw = rec.text().slice(before);
      assert.match(raw, /\r\n5\r\nhello/, 'the first chunk was streamed upstream');
      assert.doesNotMatch(raw, /0\r\n\r\n$/);
    });
  });

  describe('HTTP/1 header handling', () => {
    it('Connection cannot remove what the gateway sets, nor Host and Content-Length', async () => {
      const { seen } = await forwarded(`POST /echo HTTP/1.1\r\n${H}Connection: close, host, content-length, x-forwarded-for, x-forwarded-proto, x-request-id, x-envoy-external-address, x-envoy-attempt-count\r\nX-Forwarded-For: 203.0.113.9\r\nContent-Length: 2\r\n\r\nhi`);
      const s = seen[0]!;
      assert.deepEqual(headerOf(s, 'host'), ['app.example.com']);
      assert.equal(s.body, 'hi');
      assert.deepEqual(headerOf(s, 'x-forwarded-for'), ['203.0.113.9, 127.0.0.1']);
      assert.deepEqual(headerOf(s, 'x-forwarded-proto'), ['http']);
      assert.deepEqual(headerOf(s, 'x-envoy-external-address'), ['127.0.0.1']);
      assert.deepEqual(headerOf(s, 'x-envoy-attempt-count'), ['1']);
      assert.equal(headerOf(s, 'x-request-id').length, 1);
      assert.equal(headerOf(s, 'connection').join(), 'keep-alive', 'the client\'s Connection is not forwarded');
    });

    it('hop-by-hop headers are dropped; TE is reduced to trailers', async () => {
      const { seen } = await forwarded(`GET /echo HTTP/1.1\r\n${H}Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nTE: trailers, deflate\r\nUpgrade: websocket\r\n\r\n`);
      const s = seen[0]!;
      for (const h of ['keep-alive', 'proxy-connection', 'trailer', 'upgrade']) assert.deepEqual(headerOf(s, h), [], h);
      assert.deepEqual(headerOf(s, 'te'), ['trailers']);
    });

    it('client-sent x-envoy-* headers are stripped at the edge, and x-forwarded-proto is the gateway\'s', async () => {
      const { seen } = await forwarded(`GET /echo HTTP/1.1\r\n${H}X-Envoy-Internal: true\r\nX-Envoy-Retry-On: 5xx\r\nX-Envoy-Original-Path: /admin\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Envoy-Peer-Metadata-Id: router~1\r\nX-Envoy-Attempt-Count: 9\r\nX-Envoy-External-Address: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n`);
      const s = seen[0]!;
      for (const h of ['x-envoy-internal', 'x-envoy-retry-on', 'x-envoy-original-path', 'x-envoy-upstream-rq-timeout-ms', 'x-envoy-peer-metadata-id']) assert.deepEqual(headerOf(s, h), [], h);
      assert.deepEqual(headerOf(s, 'x-envoy-attempt-count'), ['1']);
      assert.deepEqual(headerOf(s, 'x-envoy-external-address'), ['127.0.0.1']);
      assert.deepEqual(headerOf(s, 'x-forwarded-proto'), ['http']);
    });

    it('an encoded CR LF in the path stays encoded upstream', async () => {
      const { seen } = await forwarded(`GET /echo/%0d%0aX-Injected:%20a HTTP/1.1\r\n${H}\r\n`);
      assert.equal(seen[0]!.url, '/echo/%0d%0aX-Injected:%20a');
      assert.equal(headerOf(seen[0]!, 'x-injected').length, 0);
    });
  });

  describe('HTTP/1 upgrades', () => {
    it('a WebSocket upgrade the upstream refuses closes the connection: its body and what follows never reach the upstream', async () => {
      const inner = 'GET /canned/smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
      const conns = cannedConns.length;
      const { text, closed } = await exchange(port, [
        `GET /canned/ws-refused HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`,
        `GET /canned/after HTTP/1.1\r\n${H}\r\n`,
      ], { timeoutMs: 2000 });
      assert.match(text, /^HTTP\/1\.1 426 /);
      assert.match(text, /\r\nconnection: close\r\n/i);
      assert.ok(closed);
      assert.equal(finals(text).length, 1, 'nothing answered after the refused upgrade');
      await sleep(100);
      assert.ok(cannedConns.length > conns, 'the upgrade went upstream');
      for (const c of cannedConns.slice(conns)) assert.ok(c.closed, 'the upgrade\'s upstream connection was closed, not pooled');
    });

    it('Upgrade: h2c is ignored: the request and a pipelined one after its body are served as HTTP/1.1', async () => {
      const { seen } = await forwarded(`POST /echo HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhelloGET /echo/second HTTP/1.1\r\n${H}\r\n`, 2);
      assert.equal(seen.length, 2);
      const post = seen.find((s) => s.method === 'POST')!;
      assert.equal(post.body, 'hello');
      for (const h of ['upgrade', 'http2-settings']) assert.deepEqual(headerOf(post, h), [], h);
    });

    it('an unknown upgrade is refused with 403; Upgrade without Connection: upgrade is a plain request', async () => {
      const { text } = await exchange(port, `GET /echo HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: foo\r\n\r\n`);
      assert.match(text, /^HTTP\/1\.1 403 /);
      const { seen } = await forwarded(`GET /echo HTTP/1.1\r\n${H}Upgrade: websocket\r\n\r\n`);
      assert.deepEqual(headerOf(seen[0]!, 'upgrade'), []);
    });
  });

  describe('upstream responses', () => {
    /** GET /canned/<key> then, on a new connection, /canned/legit: the second client must get `legit`. */
    async function thenLegit(): Promise<void> {
      for (let i = 0; i < 2; i++) {
        const { text } = await exchange(port, `GET /canned/legit HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
        const r = finals(text);
        assert.equal(r[0]?.body, 'legit', `a later client got ${JSON.stringify(text)}`);
      }
    }

    it('framing or header errors in a response become 502, never reach the client, and poison nothing', async () => {
      for (const key of ['cl-te', 'dup-cl', 'cr-header', 'lf-header', 'nul-header', 'fold-header', 'space-colon']) {
        const { text } = await exchange(port, `GET /canned/${key} HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
        assert.match(text, /^HTTP\/1\.1 502 /, key);
        assert.doesNotMatch(text, /POISON|injected/, key);
      }
      await thenLegit();
    });

    it('a chunked response that goes bad is cut: the client never sees it complete', async () => {
      for (const key of ['bad-chunk', 'chunk-overflow', 'trailer-framing']) {
        const { text, closed } = await exchange(port, `GET /canned/${key} HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
        assert.ok(closed, key);
        assert.ok(!finals(text).some((r) => r.status === 200), `${key}: ${JSON.stringify(text)}`);
        assert.doesNotMatch(text, /content-length: 99/i);
      }
      await thenLegit();
    });

    it('bytes after a complete response (extra data, a 204 with a body, a HEAD answer with one) never reach the next client', async () => {
      for (const [key, method] of [['extra-bytes', 'GET'], ['204-then-bytes', 'GET'], ['head-cl', 'HEAD']] as const) {
        const { text } = await exchange(port, `${method} /canned/${key} HTTP/1.1\r\n${H}\r\n`, { finalCount: 1, head: method === 'HEAD' });
        const r = finals(text, method === 'HEAD');
        assert.equal(r.length, 1, key);
        assert.doesNotMatch(text, /POISON/, key);
        await thenLegit();
      }
    });

    it('a HEAD answer keeps its Content-Length and sends no body', async () => {
      const { text } = await exchange(port, [`HEAD /canned/head-cl HTTP/1.1\r\n${H}\r\n`, `GET /canned/legit HTTP/1.1\r\n${H}\r\n`], { until: (t) => t.endsWith('legit'), timeoutMs: 2000 });
      const first = text.slice(0, text.indexOf('\r\n\r\n') + 4);
      assert.match(first, /\r\ncontent-length: 38\r\n/i);
      assert.match(text.slice(first.length), /^HTTP\/1\.1 200 OK\r\n/, 'the next response follows the HEAD answer\'s head directly');
      assert.doesNotMatch(text, /POISON/);
    });

    it('a 304 with the Content-Length of the representation reaches the client whole (conditional GETs work)', async () => {
      const { text, closed } = await exchange(port, [`GET /canned/not-modified-cl HTTP/1.1\r\n${H}If-None-Match: "v1"\r\n\r\n`, `GET /canned/legit HTTP/1.1\r\n${H}\r\n`],
        { until: (t) => t.endsWith('legit'), timeoutMs: 3000 });
      assert.match(text, /^HTTP\/1\.1 304 Not Modified\r\n/, JSON.stringify(text));
      assert.match(text, /\r\netag: "v1"\r\n/i);
      assert.ok(text.endsWith('legit') && !closed, `the connection goes on: ${JSON.stringify(text)}`);
    });

    it('a response coded beyond chunked (gzip, chunked) is a 502 UPE, never a body passed on still coded', async () => {
      const { text } = await exchange(port, `GET /canned/gzip-chunked HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
      assert.match(text, /^HTTP\/1\.1 502 /, JSON.stringify(text));
      assert.doesNotMatch(text, /hello/);
      await thenLegit();
    });

    it('a 204 that (wrongly) names a Content-Length reaches the client as a 204 without one', async () => {
      const { text, closed } = await exchange(port, [`GET /canned/no-content-cl HTTP/1.1\r\n${H}\r\n`, `GET /canned/legit HTTP/1.1\r\n${H}\r\n`],
        { until: (t) => t.endsWith('legit'), timeoutMs: 3000 });
      assert.match(text, /^HTTP\/1\.1 204 No Content\r\n/, JSON.stringify(text));
      assert.doesNotMatch(text.slice(0, text.indexOf('\r\n\r\n')), /content-length/i);
      assert.ok(text.endsWith('legit') && !closed, `the connection goes on: ${JSON.stringify(text)}`);
    });

    it('a 103 before the final response is dropped: the client gets the 200', async () => {
      const { text } = await exchange(port, `GET /canned/early-hints HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
      assert.equal(finals(text)[0]?.status, 200);
      assert.equal(finals(text)[0]?.body, 'ok');
    });

    it('a 101 to a request that asked for no upgrade is an error, not a tunnel', async () => {
      const { text } = await exchange(port, `GET /canned/unasked-101 HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
      assert.match(text, /^HTTP\/1\.1 50[23] /);
      assert.doesNotMatch(text, /POISON|101 Switching/);
      await thenLegit();
    });

    it('response headers named by the upstream\'s Connection header are dropped; Content-Length is not', async () => {
      const { text } = await exchange(port, `GET /canned/conn-nominates HTTP/1.1\r\n${H}\r\n`, { finalCount: 1 });
      const r = finals(text)[0]!;
      assert.equal(r.body, 'ok');
      assert.ok(!r.headers.some(([k]) => k === 'x-hop'));
      assert.ok(r.headers.some(([k, v]) => k === 'content-length' && v === '2'));
    });
  });

  describe('HTTP/2 (h2c) requests', () => {
    const req = (method = 'GET', path = '/echo'): [string, string][] => [[':method', method], [':scheme', 'http'], [':authority', 'app.example.com'], [':path', path]];

    async function h2Refused(headers: [string, string][], data: string[] = []): Promise<void> {
      const before = rec.text().length;
      assert.equal(await h2Request(port, headers, data), 'reset', JSON.stringify(headers.slice(4)));
      await sleep(100);
      assert.equal(rec.text().length, before, `nothing reached the upstream: ${JSON.stringify(rec.text().slice(before))}`);
    }

    it('a well-formed request is forwarded (the harness works)', async () => {
      const n = rec.seen.length;
      assert.equal(await h2Request(port, [...req('POST'), ['content-length', '5']], ['hello']), 'response');
      assert.equal(rec.seen[n]?.body, 'hello');
    });

    it('content-length that disagrees with the DATA frames resets the stream', async () => {
      await h2Refused([...req('POST'), ['content-length', '5']], ['0123456789']);
      await h2Refused([...req('POST'), ['content-length', '10']], ['01234']);
      await h2Refused([...req('POST'), ['content-length', '70000']], ['01234']);
      await h2Refused([...req('GET'), ['content-length', '5']]);
      await h2Refused([...req('POST'), ['content-length', 'abc']], ['hello']);
      await h2Refused([...req('POST'), ['content-length', '5'], ['content-length', '6']], ['hello']);
    });

    it('connection-specific headers reset the stream: transfer-encoding, connection, keep-alive, upgrade, proxy-connection, te other than trailers', async () => {
      await h2Refused([...req('POST'), ['transfer-encoding', 'chunked']], ['5\r\nhello\r\n0\r\n\r\n']);
      for (const [n, v] of [['connection', 'keep-alive'], ['keep-alive', 'timeout=5'], ['upgrade', 'websocket'], ['proxy-connection', 'keep-alive'], ['te', 'gzip']] as const) {
        await h2Refused([...req(), [n, v]]);
      }
    });

    it('an uppercase header name resets the stream', () => h2Refused([...req(), ['X-Upper', 'v']]));

    it('malformed pseudo-headers reset the stream', async () => {
      await h2Refused([...req(), [':path', '/other']]);
      await h2Refused([...req(), [':foo', 'bar']]);
      await h2Refused([[':method', 'GET'], [':scheme', 'http'], ['x-a', '1'], [':authority', 'app.example.com'], [':path', '/echo']]);
      await h2Refused([[':method', 'GET'], [':authority', 'app.example.com'], [':path', '/echo']]);
      await h2Refused([[':method', 'GET'], [':scheme', 'http'], [':path', '/echo']]);
      for (const path of ['/echo HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /echo/smuggled', '/echo x', 'echo', '']) {
        await h2Refused([[':method', 'GET'], [':scheme', 'http'], [':authority', 'app.example.com'], [':path', path]]);
      }
      await h2Refused([[':method', 'GET /x'], [':scheme', 'http'], [':authority', 'app.example.com'], [':path', '/echo']]);
      await h2Refused([[':method', 'GET'], [':scheme', 'http'], [':authority', 'app.example.com\r\nX-Injected: 1'], [':path', '/echo']]);
    });

    it('a header value with CR, LF or NUL never reaches the upstream', async () => {
      for (const v of ['a\r\nX-Injected: 1', 'a\nX-Injected: 1', 'a\x00b']) {
        const before = rec.text().length;
        await h2Request(port, [...req(), ['x-a', v]]);
        await sleep(50);
        const raw = rec.text().slice(before);
        assert.doesNotMatch(raw, /x-injected|x-a:/i, JSON.stringify(raw));
      }
    });

    it('client-sent x-envoy-* headers are stripped on HTTP/2 too', async () => {
      const n = rec.seen.length;
      assert.equal(await h2Request(port, [...req(), ['x-envoy-internal', 'true'], ['x-envoy-retry-on', '5xx']]), 'response');
      const s = rec.seen[n]!;
      assert.deepEqual(headerOf(s, 'x-envoy-internal'), []);
      assert.deepEqual(headerOf(s, 'x-envoy-retry-on'), []);
    });
  });
});
