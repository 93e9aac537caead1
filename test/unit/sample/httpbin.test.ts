import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { patternByte, type HttpbinServer } from '../../../src/sample/httpbin';
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

  it('/status/418 is the teapot (through the real curl)', async () => {
    const r = await curl(['-s', '-i', url('/status/418')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 418 /);
    assert.match(r.stdout, /x-more-info: http:\/\/tools\.ietf\.org\/html\/rfc2324/i);
    assert.match(r.stdout, /^ {4}-=\[ teapot \]=-$/m);
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

    const other = await rawHttp(bin.port, 'GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a2V5\r\n\r\n', { timeoutMs: 3000 });
    assert.match(other, /^HTTP\/1\.1 404 /);
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
