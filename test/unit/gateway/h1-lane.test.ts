// The HTTP/1.1 lane: which heads it serves itself (a table over parseRequestHead, and random bytes
// that never throw), and, on real loopback sockets, a connection's life: keep-alive, pipelining,
// hand-off to node:http with every unread byte, framing of what it writes, close, idle timeout,
// backpressure.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { H1Connection, parseRequestHead, type H1Request, type H1Response, type ParsedHead } from '../../../src/gateway/http/h1-lane';
import { listenLoopback, portOf } from '../../helpers/upstream';
import { mulberry32 } from '../../helpers/random';

const LIMIT = 1024;
const head = (text: string) => parseRequestHead(Buffer.from(text, 'latin1'), LIMIT);

describe('HTTP/1.1 lane: request heads it serves', () => {
  it('a plain GET: method, target, headers by lower-case name, raw headers as sent, head length', () => {
    const text = 'GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Trace:  t1 \t\r\nAccept: */*\r\n\r\n';
    const got = head(`${text}GET /next HTTP/1.1\r\n`) as ParsedHead;
    assert.equal(typeof got, 'object');
    assert.equal(got.method, 'GET');
    assert.equal(got.url, '/a?b=1');
    assert.deepEqual({ ...got.headers }, { host: 'example.com', 'x-trace': 't1', accept: '*/*' });
    assert.deepEqual(got.rawHeaders, ['Host', 'example.com', 'X-Trace', 't1', 'Accept', '*/*']);
    assert.equal(got.keepAlive, true);
    assert.equal(got.length, Buffer.byteLength(text), 'the pipelined request after it is not consumed');
  });

  const cases: { name: string; text: string; want: 'partial' | 'node' | { keepAlive: boolean } }[] = [
    { name: 'no blank line yet', text: 'GET / HTTP/1.1\r\nHost: a\r\n', want: 'partial' },
    { name: 'no end within the size limit (node:http answers 431)', text: `GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(LIMIT)}`, want: 'node' },
    { name: 'a whole head over the size limit', text: `GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(LIMIT)}\r\n\r\n`, want: 'node' },
    { name: 'HTTP/1.0', text: 'GET / HTTP/1.0\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'HTTP/2 preface-like version', text: 'GET / HTTP/2.0\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'CONNECT', text: 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n', want: 'node' },
    { name: 'an unknown method', text: 'FOO / HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'lower-case method', text: 'get / HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'two spaces in the request line', text: 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'a tab in the target', text: 'GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'a latin1 byte in the target', text: 'GET /caf\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'no Host (node:http answers 400)', text: 'GET / HTTP/1.1\r\nAccept: */*\r\n\r\n', want: 'node' },
    { name: 'a Content-Length body not all here yet (node:http reads the rest)', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nhello', want: 'partial' },
    { name: 'a Content-Length body over 64 KiB', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\nx', want: 'node' },
    { name: 'a signed Content-Length', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello', want: 'node' },
    { name: 'a Content-Length list', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello', want: 'node' },
    { name: 'Content-Length: 0', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n', want: { keepAlive: true } },
    { name: 'Content-Length: 00', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n', want: 'node' },
    { name: 'Transfer-Encoding', text: 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', want: 'node' },
    { name: 'Transfer-Encoding in odd case', text: 'GET / HTTP/1.1\r\nHost: a\r\ntRANSFER-eNCODING: chunked\r\n\r\n', want: 'node' },
    { name: 'Upgrade', text: 'GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', want: 'node' },
    { name: 'Connection naming upgrade alone', text: 'GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n', want: 'node' },
    { name: 'Expect', text: 'PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n', want: 'node' },
    { name: 'HTTP2-Settings', text: 'GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n', want: 'node' },
    { name: 'Connection: close', text: 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', want: { keepAlive: false } },
    { name: 'Connection: Keep-Alive, CLOSE', text: 'GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n', want: { keepAlive: false } },
    { name: 'Connection naming a header', text: 'GET / HTTP/1.1\r\nHost: a\r\nConnection: x-private\r\nX-Private: 1\r\n\r\n', want: { keepAlive: true } },
    { name: 'a repeated header', text: 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', want: 'node' },
    { name: 'a repeated header in another case', text: 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n', want: 'node' },
    { name: 'a header named __proto__', text: 'GET / HTTP/1.1\r\nHost: a\r\n__proto__: x\r\n\r\n', want: 'node' },
    { name: 'a header named as an Object.prototype member', text: 'GET / HTTP/1.1\r\nHost: a\r\nconstructor: x\r\n\r\n', want: 'node' },
    { name: 'obs-fold', text: 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n', want: 'node' },
    { name: 'whitespace before the colon', text: 'GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n', want: 'node' },
    { name: 'a line without a colon', text: 'GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n', want: 'node' },
    { name: 'an empty name', text: 'GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n', want: 'node' },
    { name: 'NUL in a value', text: 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u0000b\r\n\r\n', want: 'node' },
    { name: 'DEL in a value', text: 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u007fb\r\n\r\n', want: 'node' },
    { name: 'a bare LF ending a line', text: 'GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n', want: 'node' },
    { name: 'a bare CR in a value', text: 'GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n', want: 'node' },
    { name: 'a tab and latin1 in a value', text: 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\tcaf\u00e9\r\n\r\n', want: { keepAlive: true } },
    // Found by the differential test against llhttp (h1-differential.test.ts):
    { name: 'a target without its slash (node:http answers 400)', text: 'GET a HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'an absolute-form target', text: 'GET http://a/p HTTP/1.1\r\nHost: a\r\n\r\n', want: 'node' },
    { name: 'OPTIONS *', text: 'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n', want: { keepAlive: true } },
    { name: 'Proxy-Connection (llhttp reads it as Connection)', text: 'GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n', want: 'node' },
    { name: 'a tab after a Content-Length (llhttp refuses it)', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\t\r\n\r\nok', want: 'node' },
    { name: 'spaces around a Content-Length', text: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  2  \r\n\r\nok', want: { keepAlive: true } },
    { name: 'more than 100 headers', text: `GET / HTTP/1.1\r\nHost: a\r\n${Array.from({ length: 100 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`, want: 'node' },
  ];
  for (const c of cases) {
    it(`${typeof c.want === 'string' ? c.want : 'served'}: ${c.name}`, () => {
      const got = head(c.text);
      if (typeof c.want === 'string') assert.equal(got, c.want);
      else assert.equal((got as ParsedHead).keepAlive, c.want.keepAlive);
    });
  }

  it('a Content-Length body that came with its head: served, the body whole, the next request after it untouched', () => {
    const text = 'POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello';
    const got = head(`${text}GET / HTTP/1.1\r\n`) as ParsedHead;
    assert.equal(got.body?.toString(), 'hello');
    assert.equal(got.length, Buffer.byteLength(text));
  });

  it('value whitespace: SP and HTAB are trimmed, a latin1 no-break space (0xa0) is not', () => {
    const got = head('GET / HTTP/1.1\r\nHost: a\r\nX-A: \t v \u00a0\t \r\n\r\n') as ParsedHead;
    assert.equal(got.headers['x-a'], 'v \u00a0');
  });

  it('random bytes, and random edits of a valid head, never throw (seeded, 20000 cases)', () => {
    const rand = mulberry32(0x1a2e);
    const base = Buffer.from('GET /p HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', 'latin1');
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      let buf: Buffer;
      if (i % 2 === 0) {
        buf = Buffer.alloc(Math.floor(rand() * 200));
        for (let j = 0; j < buf.length; j++) buf[j] = Math.floor(rand() * 256);
      } else {
        buf = Buffer.from(base);
        for (let k = 0; k < 3; k++) buf[Math.floor(rand() * buf.length)] = Math.floor(rand() * 256);
      }
      const got = parseRequestHead(buf, 128);
      seen.add(typeof got === 'string' ? got : 'served');
      if (typeof got === 'object') {
        assert.ok(got.length <= buf.length && got.length <= 128);
        assert.equal(buf.toString('latin1', got.length - 4, got.length), '\r\n\r\n');
        assert.equal(typeof got.headers.host, 'string');
      }
    }
    assert.deepEqual([...seen].sort(), ['node', 'partial', 'served'], 'the sample reaches every outcome');
  });
});

/** A listener whose connections go on the lane; `serve` answers the lane's requests, node:http the rest. */
class LaneServer {
  readonly lane = new Set<H1Connection>();
  readonly laneSeen: string[] = [];
  readonly nodeSeen: string[] = [];
  readonly node = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      this.nodeSeen.push(`${req.method} ${req.url} ${Buffer.concat(chunks).toString()}`);
      res.end('node');
    });
  });
  readonly server: net.Server;
  readonly sockets: net.Socket[] = [];

  constructor(serve: (req: H1Request, res: H1Response) => void, keepAliveTimeoutMs = 60_000, headersTimeoutMs = 60_000) {
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => {
      this.sockets.push(socket);
      socket.on('error', () => {});
      new H1Connection(socket, { maxHeaderBytes: 4096, keepAliveTimeoutMs, headersTimeoutMs }, {
        serve: (req, res) => {
          this.laneSeen.push(`${req.method} ${req.url}`);
          serve(req, res);
        },
        handOff: (s) => this.node.emit('connection', s),
        headTimeout: (s) => s.end('HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'),
      }, this.lane);
    });
  }

  async start(): Promise<number> {
    await listenLoopback(this.server);
    return portOf(this.server);
  }

  close(): void {
    for (const c of this.lane) c.destroy();
    this.node.closeAllConnections();
    this.server.close();
  }
}

/** A raw client: write, and read what comes back. */
class Raw {
  readonly socket: net.Socket;
  text = '';
  ended = false;
  closed = false;
  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => { this.text += d.toString('latin1'); });
    this.socket.on('end', () => { this.ended = true; });
    this.socket.on('close', () => { this.closed = true; });
    this.socket.on('error', () => {});
  }

  async until(pred: () => boolean, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out; read so far: ${JSON.stringify(this.text)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Count of complete answers of `body` read so far. */
  count(body: string): number {
    return this.text.split(`\r\n\r\n${body}`).length - 1;
  }
}

const ok = (body: string) => (_req: H1Request, res: H1Response) => {
  res.writeHead(200, ['content-length', String(body.length), 'x-by', 'lane']);
  res.end(body);
};

describe('HTTP/1.1 lane: a connection on real sockets', () => {
  let srv: LaneServer;
  const raws: Raw[] = [];
  const client = async (port: number) => {
    const r = new Raw(port);
    raws.push(r);
    await new Promise((resolve) => r.socket.once('connect', resolve));
    return r;
  };
  /** A lane server for this test (closed after it); its port. */
  const onLane = (...args: ConstructorParameters<typeof LaneServer>) => {
    srv = new LaneServer(...args);
    return srv.start();
  };
  afterEach(() => {
    for (const r of raws.splice(0)) r.socket.destroy();
    srv?.close();
  });

  it('keep-alive: requests one after another on one connection, each answer exactly as written', async () => {
    const c = await client(await onLane(ok('hi')));
    c.socket.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.count('hi') === 1);
    c.socket.write('GET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.count('hi') === 2);
    assert.equal(c.text, 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-by: lane\r\n\r\nhi'.repeat(2));
    assert.deepEqual(srv.laneSeen, ['GET /1', 'GET /2']);
    assert.equal(c.closed, false);
  });

  it('pipelined requests in one write are answered one at a time, in order', async () => {
    const answered: H1Response[] = [];
    const overlaps: number[] = [];
    const c = await client(await onLane((req, res) => {
      // Answer later, out of the serve call: the next request must wait for this one to end.
      overlaps.push(answered.filter((r) => !r.finished).length);
      answered.push(res);
      setTimeout(() => ok(req.url)(req, res), 20);
    }));
    c.socket.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.count('/c') === 1);
    assert.deepEqual(srv.laneSeen, ['GET /a', 'GET /b', 'GET /c']);
    assert.deepEqual(overlaps, [0, 0, 0], 'no request started while an earlier answer was unfinished');
    assert.ok(c.text.indexOf('/a') < c.text.indexOf('/b') && c.text.indexOf('/b') < c.text.indexOf('/c'));
  });

  it('a request it does not serve hands the connection to node:http with every unread byte, for good', async () => {
    const c = await client(await onLane(ok('lane')));
    // A lane request, then (in the same write) a POST whose body is not all there: node reads it, intact.
    c.socket.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\nPOST /y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel');
    await c.until(() => c.count('lane') === 1);
    c.socket.write('lo');
    await c.until(() => c.count('node') === 1);
    c.socket.write('GET /z HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.count('node') === 2);
    assert.deepEqual(srv.laneSeen, ['GET /x']);
    assert.deepEqual(srv.nodeSeen, ['POST /y hello', 'GET /z ']);
    assert.equal(srv.lane.size, 0, 'the connection left the lane');
  });

  it('a small body that came with its head is served on the lane, whole, and the connection stays', async () => {
    const bodies: string[] = [];
    const c = await client(await onLane((req, res) => {
      bodies.push(req.body?.toString() ?? '-');
      ok('k')(req, res);
    }));
    c.socket.write('POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello worldGET /g HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.count('k') === 2);
    assert.deepEqual(srv.laneSeen, ['POST /b', 'GET /g']);
    assert.deepEqual(bodies, ['hello world', '-']);
    assert.deepEqual(srv.nodeSeen, []);
  });

  it('a head that arrives in pieces goes to node:http, which waits for the rest', async () => {
    const c = await client(await onLane(ok('lane')));
    c.socket.write('GET /slow HTTP/1.1\r\nHo');
    await new Promise((r) => setTimeout(r, 50));
    c.socket.write('st: a\r\n\r\n');
    await c.until(() => c.count('node') === 1);
    assert.deepEqual(srv.nodeSeen, ['GET /slow ']);
    assert.deepEqual(srv.laneSeen, []);
  });

  it('Connection: close: the answer, then the connection ends; bytes after it are not served', async () => {
    const c = await client(await onLane(ok('bye')));
    c.socket.write('GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.ended);
    assert.equal(c.count('bye'), 1);
    assert.deepEqual(srv.laneSeen, ['GET /1']);
  });

  it('Connection: close from a client that keeps its side open: the server still closes the socket', async () => {
    const port = await onLane(ok('bye'));
    const c = new Raw(port);
    raws.push(c);
    c.socket.setNoDelay(true);
    (c.socket as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true; // never answers the FIN
    await new Promise((resolve) => c.socket.once('connect', resolve));
    c.socket.write('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await c.until(() => c.ended);
    const server = srv.sockets[0]!;
    await c.until(() => server.destroyed, 2000);
    assert.equal(c.count('bye'), 1);
  });

  it('no first head within the headers timeout: the head-timeout hook answers (408); a connection that sent one in time is not affected', async () => {
    const port = await onLane(ok('ok'), 60_000, 200);
    const silent = await client(port);
    const prompt = await client(port);
    prompt.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await prompt.until(() => prompt.count('ok') === 1);
    const t0 = Date.now();
    await silent.until(() => silent.ended, 2000);
    assert.match(silent.text, /^HTTP\/1\.1 408 /);
    assert.ok(Date.now() - t0 < 1000);
    await new Promise((r) => setTimeout(r, 100)); // past the headers timeout for the prompt one too
    prompt.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await prompt.until(() => prompt.count('ok') === 2);
    assert.equal(prompt.closed, false);
  });

  it("a client's FIN abandons the request in flight, as node:http and Envoy (DC) do: close, no answer, the end", async () => {
    const closes: string[] = [];
    const c = await client(await onLane((req, res) => {
      res.on('close', () => closes.push(req.url));
      setTimeout(() => ok('late')(req, res), 50);
    }));
    c.socket.end('GET /fin HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.ended);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(closes, ['/fin']);
    assert.equal(c.text, '');
  });

  it('chunked answers: chunk framing, trailers, the last chunk; node:http reads them back', async () => {
    const port = await onLane((_req, res) => {
      res.writeHead(200, ['transfer-encoding', 'chunked']);
      res.write(Buffer.from('abc'));
      res.write(Buffer.alloc(20_000, 0x62)); // over the copy limit: written after its size line
      res.addTrailers({ 'grpc-status': '0' });
      res.end();
    });
    const got = await new Promise<{ body: string; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
      http.get({ port, host: '127.0.0.1', path: '/', agent: false }, (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (d: string) => { body += d; });
        res.on('end', () => resolve({ body, trailers: res.trailers }));
      }).on('error', reject);
    });
    assert.equal(got.body, `abc${'b'.repeat(20_000)}`);
    assert.deepEqual(got.trailers, { 'grpc-status': '0' });
  });

  it('no body on HEAD, 204 and 304, whatever end() is given; a chunked HEAD answer has no last chunk', async () => {
    const c = await client(await onLane((req, res) => {
      const status = Number(req.url.slice(1)) || 200;
      res.writeHead(status, req.url === '/chunked' ? ['transfer-encoding', 'chunked'] : ['content-length', '4']);
      res.end('body');
    }));
    c.socket.write('HEAD /chunked HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET /200 HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.text.endsWith('\r\n\r\nbody'));
    assert.equal(c.text, [
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n',
      'HTTP/1.1 204 No Content\r\ncontent-length: 4\r\n\r\n',
      'HTTP/1.1 304 Not Modified\r\ncontent-length: 4\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody',
    ].join(''));
  });

  it('a header that cannot be sent throws (no response splitting) and nothing is written', async () => {
    const thrown: string[] = [];
    const c = await client(await onLane((_req, res) => {
      for (const list of [['x-a', 'one\r\nset-cookie: evil'], ['bad name', 'v'], ['x-a', 'nul\u0000']]) {
        try {
          res.writeHead(200, list);
        } catch (err) {
          thrown.push((err as { code?: string }).code ?? '');
        }
      }
      res.writeHead(200, ['content-length', '2']);
      res.end('ok');
    }));
    c.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.count('ok') === 1);
    assert.deepEqual(thrown, ['ERR_INVALID_CHAR', 'ERR_INVALID_CHAR', 'ERR_INVALID_CHAR']);
    assert.equal(c.text, 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });

  it("the client going away mid-answer emits the response's close; a finished one never does", async () => {
    const closes: string[] = [];
    const c = await client(await onLane((req, res) => {
      res.on('close', () => closes.push(req.url));
      if (req.url === '/done') return ok('done')(req, res);
      res.writeHead(200, ['content-length', '100']);
      res.write(Buffer.from('partial'));
    }));
    c.socket.write('GET /done HTTP/1.1\r\nHost: a\r\n\r\nGET /cut HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.until(() => c.text.endsWith('partial'));
    c.socket.destroy();
    const deadline = Date.now() + 2000;
    while (closes.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(closes, ['/cut']);
  });

  it('an idle connection is closed after the keep-alive time; one in use is not', async () => {
    const port = await onLane(ok('k'), 300);
    const idle = await client(port);
    idle.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    const busy = await client(port);
    const t0 = Date.now();
    for (let i = 0; i < 8; i++) {
      busy.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
      await busy.until(() => busy.count('k') === i + 1);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(Date.now() - t0 >= 800);
    assert.equal(idle.closed, true, 'idle for over 300 ms: closed');
    assert.equal(busy.closed, false, 'a request every 100 ms: kept');
  });

  it('backpressure: write() says when to wait, drain says when to go on, and every byte arrives', async () => {
    let falses = 0;
    let drains = 0;
    const total = 8 * 1024 * 1024;
    const c = await client(await onLane((_req, res) => {
      res.writeHead(200, ['content-length', String(total)]);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += 64 * 1024;
          if (!res.write(Buffer.alloc(64 * 1024, 0x61))) {
            falses++;
            res.once('drain', () => { drains++; pump(); });
            return;
          }
        }
        res.end();
      };
      pump();
    }));
    c.socket.pause(); // a slow reader at first
    c.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await new Promise((r) => setTimeout(r, 100));
    let bytes = 0;
    c.socket.removeAllListeners('data');
    c.socket.on('data', (d: Buffer) => { bytes += d.length; });
    c.socket.resume();
    await c.until(() => bytes >= total + 'HTTP/1.1 200 OK\r\ncontent-length: 8388608\r\n\r\n'.length, 10_000);
    assert.ok(falses > 0 && drains === falses, `write() returned false ${falses} times, drain ${drains}`);
  });
});
