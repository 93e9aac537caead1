import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { patternByte, startHttpbin, type HttpbinServer } from '../../../src/sample/httpbin';
import { curl, rawHttp, waitFor, withHttpbin } from '../../helpers/upstream';

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** One request on a fresh connection; the body is streamed from `body` chunks if given. */
function request(port: number, p: string, opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: Iterable<Buffer> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const c of opts.body ?? []) req.write(c);
    req.end();
  });
}

function* chunks(total: number, size = 64 * 1024): Generator<Buffer> {
  for (let off = 0; off < total; off += size) {
    const b = Buffer.alloc(Math.min(size, total - off));
    for (let i = 0; i < b.length; i++) b[i] = (off + i) * 7 % 256;
    yield b;
  }
}

function sha256(parts: Iterable<Buffer>): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

describe('sample httpbin', () => {
  let bin: HttpbinServer;
  const url = (p: string): string => `${bin.url}${p}`;

  before(async () => {
    bin = await withHttpbin('reviews-v1');
  });
  after(() => bin.close());

  it('/get echoes method, args, canonical headers and origin, and records the request', async () => {
    const r = await request(bin.port, '/get?a=1&b=two', { headers: { 'x-request-id': 'abc', 'user-agent': 'probe' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-served-by'], 'reviews-v1');
    const j = JSON.parse(r.body.toString());
    assert.equal(j.method, 'GET');
    assert.deepEqual(j.args, { a: '1', b: 'two' });
    assert.equal(j.headers['X-Request-Id'], 'abc');
    assert.equal(j.headers['User-Agent'], 'probe');
    assert.equal(j.headers['Host'], `127.0.0.1:${bin.port}`);
    assert.equal(j.origin, '127.0.0.1');
    assert.equal(j.url, `http://127.0.0.1:${bin.port}/get?a=1&b=two`);
    assert.equal(j.name, 'reviews-v1');
    const seen = bin.requests.at(-1)!;
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/get?a=1&b=two');
    assert.equal(seen.headers['x-request-id'], 'abc');
    assert.equal(seen.bodyLength, 0);
  });

  it('/headers, /ip and /anything/sub/path', async () => {
    const h = JSON.parse((await request(bin.port, '/headers', { headers: { 'x-b3-traceid': '1' } })).body.toString());
    assert.equal(h.headers['X-B3-Traceid'], '1');
    assert.deepEqual(JSON.parse((await request(bin.port, '/ip')).body.toString()), { origin: '127.0.0.1' });
    const a = await request(bin.port, '/anything/x/y', { method: 'PUT', body: [Buffer.from('hello')] });
    const j = JSON.parse(a.body.toString());
    assert.equal(j.method, 'PUT');
    assert.deepEqual(j.data, { length: 5, sha256: sha256([Buffer.from('hello')]) });
    assert.equal(bin.requests.at(-1)!.bodyLength, 5);
  });

  it('/status/N answers N; 1xx and junk are a 400', async () => {
    for (const code of [200, 204, 302, 404, 503]) {
      const r = await request(bin.port, `/status/${code}`);
      assert.equal(r.status, code);
      assert.equal(r.headers['x-served-by'], 'reviews-v1');
    }
    assert.equal((await request(bin.port, '/status/100')).status, 400);
    assert.equal((await request(bin.port, '/status/abc')).status, 400);
  });

  it('/status/N adds httpbin\'s headers: Location for redirects, the Fake Realm challenges', async () => {
    for (const code of [301, 302, 303, 305, 307]) {
      const r = await request(bin.port, `/status/${code}`);
      assert.equal(r.status, code);
      assert.equal(r.headers['location'], '/redirect/1');
    }
    const unauthorized = await request(bin.port, '/status/401');
    assert.equal(unauthorized.headers['www-authenticate'], 'Basic realm="Fake Realm"');
    const proxy = await request(bin.port, '/status/407');
    assert.equal(proxy.headers['proxy-authenticate'], 'Basic realm="Fake Realm"');
    assert.equal((await request(bin.port, '/status/200')).headers['location'], undefined);
  });

  it('/status/204 and /status/304 carry neither a body nor a content-length', async () => {
    for (const code of [204, 304]) {
      const raw = await rawHttp(bin.port, `GET /status/${code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { timeoutMs: 3000 });
      assert.match(raw, new RegExp(`^HTTP/1\\.1 ${code} `));
      assert.doesNotMatch(raw, /content-length|transfer-encoding/i);
      assert.ok(raw.endsWith('\r\n\r\n'), raw);
    }
  });

  it('/status/A,B and /status/A:w,B:w pick a code at random by weight', async () => {
    const seen = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      const { status } = await request(bin.port, i % 2 ? '/status/200,500' : '/status/200:0.5,500:0.5');
      seen.set(status, (seen.get(status) ?? 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort(), [200, 500]);
    for (const bad of ['200,abc', '200:x', '200:-1', '200:0,500:0', '200,100', '200,', '200:1:2']) {
      assert.equal((await request(bin.port, `/status/${bad}`)).status, 400, bad);
    }
  });

  it('/status picks with the injected randomness: weights are shares of [0, 1)', async () => {
    const samples = [0, 0.24, 0.26, 0.5, 0.99];
    let next = 0;
    const own = await startHttpbin({ random: () => samples[next++ % samples.length]! });
    try {
      const codes: number[] = [];
      for (let i = 0; i < samples.length; i++) codes.push((await request(own.port, '/status/201:1,202:3')).status);
      assert.deepEqual(codes, [201, 201, 202, 202, 202]);
      next = 0;
      for (let i = 0; i < samples.length; i++) assert.equal((await request(own.port, '/status/201:0,202:1,203:0')).status, 202);
    } finally {
      await own.close();
    }
  });

  it('/status/418 is the teapot (through the real curl)', async () => {
    const r = await curl(['-s', '-i', url('/status/418')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 418 /);
    assert.match(r.stdout, /x-more-info: http:\/\/tools\.ietf\.org\/html\/rfc2324/i);
    assert.match(r.stdout, /^ {4}-=\[ teapot \]=-$/m);
    const teapot = await request(bin.port, '/status/418');
    assert.equal(teapot.body.toString(), '\n    -=[ teapot ]=-\n\n       _...._\n     .\'  _ _ `.\n    | ."` ^ `". _,\n    \\_;`"---"`|//\n      |       ;/\n      \\_     _/\n        `"""`\n');
  });

  it('origin is the first X-Forwarded-For entry and url has X-Forwarded-Proto\'s scheme', async () => {
    const headers = { 'x-forwarded-for': '203.0.113.7, 10.0.0.1', 'x-forwarded-proto': 'https' };
    const j = JSON.parse((await request(bin.port, '/get?x=1', { headers })).body.toString());
    assert.equal(j.origin, '203.0.113.7');
    assert.equal(j.url, `https://127.0.0.1:${bin.port}/get?x=1`);
    assert.deepEqual(JSON.parse((await request(bin.port, '/ip', { headers })).body.toString()), { origin: '203.0.113.7' });
    const odd = JSON.parse((await request(bin.port, '/get', { headers: { 'x-forwarded-proto': 'a b' } })).body.toString());
    assert.equal(odd.url, `http://127.0.0.1:${bin.port}/get`);
  });

  it('a repeated query key is a list in args; a single one stays a string', async () => {
    const j = JSON.parse((await request(bin.port, '/get?a=1&a=2&b=3&__proto__=x&__proto__=y')).body.toString());
    assert.deepEqual(j.args, { a: ['1', '2'], b: '3', ['__proto__']: ['x', 'y'] });
  });

  it('/response-headers sets each query pair as a header and echoes them', async () => {
    const r = await request(bin.port, '/response-headers?freeform=hello&x-a=1&x-a=2&Content-Type=text/plain');
    assert.equal(r.status, 200);
    assert.equal(r.headers['freeform'], 'hello');
    assert.equal(r.headers['x-a'], '1, 2');
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.deepEqual(JSON.parse(r.body.toString()), { freeform: 'hello', 'x-a': ['1', '2'], 'Content-Type': 'text/plain' });
    for (const bad of ['content-length=1', 'Transfer-Encoding=chunked', 'bad%20name=1', 'x=a%0db']) {
      const refused = await request(bin.port, `/response-headers?${bad}`);
      assert.equal(refused.status, 400, bad);
      assert.equal(refused.headers['x'], undefined);
    }
  });

  it('accessLog gets a gunicorn-style line per request (the mirroring task looks for the request line)', async () => {
    const lines: string[] = [];
    const own = await startHttpbin({ accessLog: (l) => lines.push(l) });
    try {
      await request(own.port, '/headers', { headers: { 'user-agent': 'curl/7.88.1' } });
      await request(own.port, '/status/418', { headers: { referer: 'http://a/"b"' } });
      await waitFor(() => lines.length === 2, { timeoutMs: 3000 });
      assert.match(lines[0]!, /^127\.0\.0\.1 - - \[\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET \/headers HTTP\/1\.1" 200 \d+ "-" "curl\/7\.88\.1"$/);
      assert.match(lines[1]!, / "GET \/status\/418 HTTP\/1\.1" 418 \d+ "http:\/\/a\/\\x22b\\x22" "-"$/);
    } finally {
      await own.close();
    }
  });

  it('pages: /, /productpage, /static/*, /hello, and 404 for the unknown', async () => {
    const root = await request(bin.port, '/');
    assert.equal(root.status, 200);
    assert.match(String(root.headers['content-type']), /^text\/html/);
    assert.match(root.body.toString(), /reviews-v1/);
    assert.equal((await request(bin.port, '/productpage')).status, 200);
    assert.equal((await request(bin.port, '/static/bootstrap/css/bootstrap.min.css')).status, 200);
    assert.equal((await request(bin.port, '/hello')).body.toString(), 'Hello version: reviews-v1\n');
    const missing = await request(bin.port, '/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.headers['x-served-by'], 'reviews-v1');
  });

  it('/delay/N waits N (fractional) seconds, then answers like /get', async () => {
    const t0 = Date.now();
    const r = await request(bin.port, '/delay/0.3');
    const took = Date.now() - t0;
    assert.equal(r.status, 200);
    assert.ok(took >= 290 && took < 2000, `took ${took} ms`);
    assert.equal(JSON.parse(r.body.toString()).url, `http://127.0.0.1:${bin.port}/delay/0.3`);
    assert.equal((await request(bin.port, '/delay/-1')).status, 400);
  });

  it('/delay stops waiting when the client goes away', async () => {
    let answered = false;
    let closedEarly = false;
    const watch = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      if (!req.url?.startsWith('/delay/')) return;
      res.on('close', () => void (closedEarly = !res.writableEnded));
      res.on('finish', () => void (answered = true));
    };
    bin.server.on('request', watch);
    try {
      const req = http.get({ host: '127.0.0.1', port: bin.port, path: '/delay/0.5', agent: false });
      req.on('error', () => {});
      setTimeout(() => req.destroy(), 100);
      await waitFor(() => closedEarly, { timeoutMs: 2000 });
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(answered, false);
    } finally {
      bin.server.off('request', watch);
    }
  });

  it('/bytes/N has a content-length, /stream-bytes/N is chunked, both the same pattern', async () => {
    const n = 300_000;
    const fixed = await request(bin.port, `/bytes/${n}`);
    assert.equal(fixed.headers['content-length'], String(n));
    const streamed = await request(bin.port, `/stream-bytes/${n}`);
    assert.equal(streamed.headers['transfer-encoding'], 'chunked');
    assert.equal(streamed.headers['content-length'], undefined);
    for (const b of [fixed.body, streamed.body]) {
      assert.equal(b.length, n);
      for (const i of [0, 250, 251, 64_255, 64_256, 64_257, n - 1]) assert.equal(b[i], patternByte(i), `byte ${i}`);
    }
    assert.equal((await request(bin.port, '/bytes/0')).body.length, 0);
  });

  it('HEAD /bytes/N and /stream-bytes/N answer at once, writing no body; N above 4 GiB is a 400', async () => {
    const max = 4 * 1024 ** 3;
    let writes = 0;
    const spy = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      if (req.method !== 'HEAD') return;
      const write = res.write.bind(res) as (...a: unknown[]) => boolean;
      res.write = ((...a: unknown[]) => (writes++, write(...a))) as typeof res.write;
    };
    bin.server.prependListener('request', spy); // before the handler, which writes synchronously
    try {
      const fixed = await request(bin.port, `/bytes/${max}`, { method: 'HEAD' });
      assert.equal(fixed.status, 200);
      assert.equal(fixed.headers['content-length'], String(max));
      assert.equal((await request(bin.port, `/stream-bytes/${max}`, { method: 'HEAD' })).status, 200);
      assert.equal(writes, 0);
    } finally {
      bin.server.off('request', spy);
    }
    assert.equal((await request(bin.port, `/bytes/${max + 1}`)).status, 400);
    assert.equal((await request(bin.port, `/stream-bytes/${max + 1}`, { method: 'HEAD' })).status, 400);
  });

  it('/stream-bytes has no small cap: 150 MiB arrive, counted as they stream', async () => {
    const total = 150 * 1024 * 1024;
    const got = await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: bin.port, path: `/stream-bytes/${total}`, agent: false }, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => void (n += c.length));
        res.on('end', () => resolve(n));
        res.on('error', reject);
      }).on('error', reject);
    });
    assert.equal(got, total);
  });

  it('/post, /put, /patch, /delete hash a 10 MB body without buffering it', async () => {
    const total = 10 * 1024 * 1024;
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      const r = await request(bin.port, `/${method.toLowerCase()}`, { method, headers: { 'content-length': total }, body: chunks(total) });
      const j = JSON.parse(r.body.toString());
      assert.equal(j.method, method);
      assert.deepEqual(j.data, { length: total, sha256: sha256(chunks(total)) });
    }
  });

  it('/echo streams a 10 MB body back, with its content-length', async () => {
    const total = 10 * 1024 * 1024;
    const r = await request(bin.port, '/echo', { method: 'POST', headers: { 'content-length': total }, body: chunks(total) });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], String(total));
    assert.equal(r.body.length, total);
    assert.equal(sha256([r.body]), sha256(chunks(total)));
    assert.equal(bin.requests.at(-1)!.bodyLength, total);
  });

  it('/echo of a chunked upload answers chunked', async () => {
    const r = await request(bin.port, '/echo', { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: chunks(200_000) });
    assert.equal(r.headers['transfer-encoding'], 'chunked');
    assert.equal(sha256([r.body]), sha256(chunks(200_000)));
  });

  it('answers Expect: 100-continue (curl), then echoes the body', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'httpbin-'));
    try {
      const file = path.join(dir, 'body.bin');
      fs.writeFileSync(file, Buffer.concat([...chunks(2 * 1024 * 1024)]));
      const r = await curl(['-sS', '-v', '-H', 'Expect: 100-continue', '--data-binary', `@${file}`, url('/echo')]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /> Expect: 100-continue/);
      assert.match(r.stderr, /< HTTP\/1\.1 100 Continue/);
      assert.match(r.stderr, /< HTTP\/1\.1 200 OK/);
      assert.equal(r.stdout.length, 2 * 1024 * 1024);
      assert.equal(sha256([Buffer.from(r.stdout, 'latin1')]), sha256(chunks(2 * 1024 * 1024)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('/drip sends numbytes over duration seconds', async () => {
    const t0 = Date.now();
    const r = await request(bin.port, '/drip?numbytes=5&duration=0.5');
    const took = Date.now() - t0;
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], '5');
    assert.equal(r.body.toString(), '*****');
    assert.ok(took >= 450 && took < 3000, `took ${took} ms`);
    const coded = await request(bin.port, '/drip?numbytes=2&duration=0&code=503');
    assert.equal(coded.status, 503);
    assert.equal(coded.body.toString(), '**');
    const head = await request(bin.port, '/drip?numbytes=5&duration=5', { method: 'HEAD' });
    assert.equal(head.headers['content-length'], '5');
    assert.equal((await request(bin.port, '/drip?numbytes=5&duration=5&code=204')).headers['content-length'], undefined);
  });

  it('/drip waits for a client that does not read, and numbytes is capped at 10 MiB', async () => {
    const cap = 10 * 1024 * 1024;
    let buffered = 0; // the most the server ever held for this client
    const watch = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      if (!req.url?.startsWith('/drip')) return;
      const timer = setInterval(() => void (buffered = Math.max(buffered, res.writableLength)), 5);
      res.on('close', () => clearInterval(timer));
    };
    bin.server.on('request', watch);
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
        http.get({ host: '127.0.0.1', port: bin.port, path: `/drip?numbytes=${2 * cap}&duration=0`, agent: false }, resolve).on('error', reject),
      );
      assert.equal(res.headers['content-length'], String(cap));
      await new Promise((r) => setTimeout(r, 1500)); // not reading: without backpressure all of it would be queued by now
      assert.ok(buffered < 256 * 1024, `${buffered} bytes buffered`);
      let got = 0;
      res.on('data', (c: Buffer) => void (got += c.length));
      await new Promise((r) => res.on('end', r));
      assert.equal(got, cap);
    } finally {
      bin.server.off('request', watch);
    }
  });

  it('/reset closes the connection without an answer', async () => {
    await assert.rejects(request(bin.port, '/reset'), (e: NodeJS.ErrnoException) => ['ECONNRESET', 'EPIPE'].includes(e.code ?? ''));
    const r = await curl(['-sS', url('/reset')]);
    assert.equal(r.code, 52, r.stderr); // CURLE_GOT_NOTHING
  });

  it('/garbage writes an invalid status line and closes', async () => {
    const raw = await rawHttp(bin.port, 'GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n', { timeoutMs: 3000 });
    assert.equal(raw, 'HTTP/1.1 abc\r\n\r\n');
    await assert.rejects(request(bin.port, '/garbage'), (e: NodeJS.ErrnoException) => e.code === 'HPE_INVALID_STATUS');
    const r = await curl(['-sS', url('/garbage')]);
    assert.notEqual(r.code, 0);
  });

  it('upgrades /ws with the computed accept key and echoes raw bytes', async () => {
    const sock = net.connect(bin.port, '127.0.0.1');
    sock.on('error', () => {});
    let got = '';
    sock.setEncoding('latin1');
    sock.on('data', (c: string) => void (got += c));
    await new Promise((r) => sock.once('connect', r));
    // RFC 6455's example key and its accept value
    sock.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly');
    await waitFor(() => got.includes('\r\n\r\nearly'), { timeoutMs: 3000 });
    assert.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(got, /\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/);
    assert.match(got, /\r\nx-served-by: reviews-v1\r\n/);
    sock.write(Buffer.from('\x00\x01 bytes \xff', 'latin1'));
    await waitFor(() => got.endsWith('early\x00\x01 bytes \xff'), { timeoutMs: 3000 });
    sock.destroy();

    const other = await rawHttp(bin.port, 'GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a2V5\r\n\r\n', { timeoutMs: 3000 });
    assert.match(other, /^HTTP\/1\.1 404 /);
    assert.match(other, /\r\n\r\nnot found\n$/);
  });

  it('an upgrade with a target that is no URL is a 400, and the server keeps serving', async () => {
    const ws = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a2V5\r\n';
    for (const target of ['http://[/ws', '*']) {
      const out = await rawHttp(bin.port, `GET ${target} HTTP/1.1\r\nHost: x\r\n${ws}\r\n`, { timeoutMs: 3000 });
      assert.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/, target);
      assert.match(out, /\r\nconnection: close\r\n/, target);
    }
    // `//[` is a path (not a host): a plain 404
    const slashes = await rawHttp(bin.port, `GET //[ HTTP/1.1\r\nHost: x\r\n${ws.replace('Upgrade\r\n', 'Upgrade, close\r\n')}\r\n`, { timeoutMs: 3000 });
    assert.match(slashes, /^HTTP\/1\.1 404 /);
    assert.equal((await request(bin.port, '/status/200')).status, 200);
  });

  it('Upgrade: h2c elsewhere is answered as plain HTTP/1.1; the body and keep-alive work as usual', async () => {
    const h2c = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n';
    const out = await rawHttp(
      bin.port,
      // pipelined, so each upgrade arrives while the answers before it are still being written
      `GET /get?q=1 HTTP/1.1\r\nHost: x\r\n${h2c}\r\n` +
        `GET /headers HTTP/1.1\r\nHost: x\r\n${h2c}\r\n` +
        `POST /post HTTP/1.1\r\nHost: x\r\n${h2c}Content-Length: 5\r\n\r\nhello` +
        'GET /ip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      { timeoutMs: 3000 },
    );
    const answers = out.split(/(?=HTTP\/1\.1 )/);
    assert.equal(answers.length, 4, out);
    for (const a of answers) assert.match(a, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(answers[0]!, /"Upgrade": "h2c"/);
    assert.match(answers[0]!, /"url": "http:\/\/x\/get\?q=1"/);
    assert.match(answers[1]!, /"Http2-Settings": "AAMAAABkAAQAAP__"/);
    assert.match(answers[2]!, new RegExp(`"sha256": "${sha256([Buffer.from('hello')])}"`));
    assert.match(answers[3]!, /"origin": "127\.0\.0\.1"/);
    // curl --http2 on http:// asks for h2c, then takes the HTTP/1.1 answer
    const r = await curl(['-sS', '-i', '--http2', url('/get')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.stdout, /"Upgrade": "h2c"/);
  });

  it('close() resolves with keep-alive and upgraded connections still open', async () => {
    const own = await withHttpbin('closing');
    const sock = net.connect(own.port, '127.0.0.1');
    sock.on('error', () => {});
    let got = '';
    sock.on('data', (c: Buffer) => void (got += c.toString()));
    sock.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a2V5\r\n\r\n');
    await waitFor(() => got.includes('101'), { timeoutMs: 3000 });
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => http.get({ host: '127.0.0.1', port: own.port, path: '/get', agent }, (res) => res.resume().on('end', resolve)).on('error', reject));
    const t0 = Date.now();
    await own.close();
    assert.ok(Date.now() - t0 < 1000);
    await waitFor(() => sock.destroyed || sock.readableEnded, { timeoutMs: 2000 });
    agent.destroy();
    sock.destroy();
  });
});
