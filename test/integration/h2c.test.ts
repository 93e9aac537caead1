// HTTP/2 with prior knowledge (h2c) on a plaintext Gateway port: same routing, replies and log as
// HTTP/1.1, with curl --http2-prior-knowledge as the client.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl, withHttpbin } from '../helpers/upstream';
import type { HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';
import { H2_PREFACE, h2frame, hpackLiteral } from '../helpers/h2frames';

describe('h2c (HTTP/2 prior knowledge) on a plaintext port', function () {
  this.timeout(20_000);
  let gw: TestGateway;
  let upstream: HttpbinServer;

  before(async () => {
    upstream = await withHttpbin('httpbin-h2c');
    gw = await startGateway({
      'gw.yaml': singleRouteYaml({ upstreamPort: upstream.port, host: 'httpbin.example.com', routeHosts: ['httpbin.example.com'] }),
    });
  });
  after(async () => {
    await gw?.stop();
    await upstream?.close();
  });

  const url = (p: string) => `http://127.0.0.1:${gw.port(80)}${p}`;

  it('routes by :authority to an HTTP/1.1 upstream, which sees it as Host', async () => {
    const r = await curl(['-s', '-i', '--http2-prior-knowledge', '-H', 'Host: httpbin.example.com', url('/headers')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/2 200 ?\r\n/);
    assert.match(r.stdout, /\r\nserver: istio-envoy\r\n/);
    assert.match(r.stdout, /\r\nx-envoy-upstream-service-time: \d+\r\n/);
    assert.doesNotMatch(r.stdout, /\r\n(connection|keep-alive|transfer-encoding):/i);
    const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> };
    assert.equal(body.headers['Host'], 'httpbin.example.com');
    assert.ok(!Object.keys(body.headers).some((k) => k.startsWith(':')), JSON.stringify(body.headers));
  });

  it('streams a request body up and logs HTTP/2 in the access log', async () => {
    const payload = 'x'.repeat(200_000);
    const file = path.join(gw.dir, 'payload.bin');
    fs.writeFileSync(file, payload);
    const r = await curl(['-s', '--http2-prior-knowledge', '-H', 'Host: httpbin.example.com', '--data-binary', `@${file}`,
      '-H', 'content-type: text/plain', url('/post')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { data: { length: number } }).data.length, payload.length);
    const lines = await gw.waitForLines(2);
    assert.ok(lines.some((l) => /"POST \/post HTTP\/2" 200 - via_upstream /.test(l)), lines.join('\n'));
  });

  /** One HTTP/2 request with node:http2's client, which sends no content-length unless told. */
  const h2request = (headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ status: number; body: string }> => new Promise((resolve, reject) => {
    const session = http2.connect(url(''));
    session.on('error', reject);
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let status = 0;
    stream.on('response', (h) => { status = Number(h[':status']); });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      session.close();
      resolve({ status, body: Buffer.concat(chunks).toString() });
    });
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });

  it('forwards a request body sent without content-length (DATA frames only)', async () => {
    const payload = Buffer.alloc(100_000, 'y');
    const r = await h2request({ ':method': 'POST', ':path': '/post', ':authority': 'httpbin.example.com' }, payload);
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as { data: { length: number } }).data.length, payload.length);
  });

  it('routes by :authority and sends it upstream as Host, not a host header the client added', async () => {
    const r = await h2request({ ':method': 'GET', ':path': '/headers', ':authority': 'httpbin.example.com', host: 'internal-admin.example' });
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as { headers: Record<string, string> }).headers['Host'], 'httpbin.example.com');
  });

  it('an upstream response header HTTP/2 forbids (HTTP2-Settings) is dropped, not a broken stream', async () => {
    const r = await h2request({ ':method': 'GET', ':path': '/response-headers?HTTP2-Settings=AAMAAABkAAQAAP__&x-kept=1', ':authority': 'httpbin.example.com' });
    assert.equal(r.status, 200, r.body);
    assert.match(r.body, /"x-kept": "1"/);
  });

  it('answers an unknown host with 404 NR, as on HTTP/1.1', async () => {
    const r = await curl(['-s', '-i', '--http2-prior-knowledge', '-H', 'Host: nowhere.example.com', url('/')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/2 404 ?\r\n/);
    const lines = await gw.waitForLines(3);
    assert.ok(lines.some((l) => /"GET \/ HTTP\/2" 404 NR route_not_found /.test(l)), lines.join('\n'));
  });

  /** The frames of stream 1 for one request without a body, read off the wire by hand (no HTTP/2 library between). */
  const rawFrames = (pathname: string, authority: string, method = 'GET'): Promise<{ type: number; flags: number; length: number }[]> => new Promise((resolve, reject) => {
    const block = Buffer.concat([hpackLiteral(':method', method), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', pathname), hpackLiteral(':authority', authority)]);
    const frames: { type: number; flags: number; length: number }[] = [];
    let pending = Buffer.alloc(0);
    const sock = net.connect(gw.port(80), '127.0.0.1', () => {
      sock.write(Buffer.concat([H2_PREFACE, h2frame(4, 0, 0), h2frame(1, 0x5 /* END_STREAM|END_HEADERS */, 1, block)]));
    });
    sock.on('data', (c: Buffer) => {
      pending = Buffer.concat([pending, c]);
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3);
        if (pending.length < 9 + length) break;
        const [type, flags] = [pending[3]!, pending[4]!];
        if ((pending.readUInt32BE(5) & 0x7fffffff) === 1) frames.push({ type, flags, length });
        pending = pending.subarray(9 + length);
        if ((flags & 0x1) !== 0 && (type === 0 || type === 1) && frames.length > 0) return sock.destroy(), resolve(frames);
      }
    });
    sock.on('error', reject);
    sock.setTimeout(5000, () => { sock.destroy(); reject(new Error(`no END_STREAM on stream 1; frames: ${JSON.stringify(frames)}`)); });
  });

  it("a response with a length ends its stream on its last DATA frame, not in an empty frame of its own a turn later (Node's compatibility default)", async () => {
    const frames = await rawFrames('/bytes/1000', 'httpbin.example.com');
    const data = frames.filter((f) => f.type === 0);
    assert.equal(frames[0]!.type, 1, JSON.stringify(frames)); // HEADERS first
    assert.equal(data.reduce((n, f) => n + f.length, 0), 1000, JSON.stringify(frames));
    const last = frames[frames.length - 1]!;
    assert.equal(last.type, 0, JSON.stringify(frames));
    assert.ok(last.length > 0 && (last.flags & 0x1) !== 0, `END_STREAM in an empty frame: ${JSON.stringify(frames)}`);
  });

  it('a reply without a body (404 NR) is one HEADERS frame that ends the stream, as Envoy sends it', async () => {
    const frames = await rawFrames('/', 'nowhere.example.com');
    assert.deepEqual(frames.map((f) => [f.type, f.flags & 0x5]), [[1, 0x5]], JSON.stringify(frames));
    const r = await curl(['-s', '-i', '--http2-prior-knowledge', '-H', 'Host: nowhere.example.com', url('/')]);
    assert.match(r.stdout, /^HTTP\/2 404 ?\r\n/);
    assert.match(r.stdout, /\r\nserver: istio-envoy\r\n/);
    assert.match(r.stdout, /\r\ncontent-length: 0\r\n/);
    assert.match(r.stdout, /\r\ndate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n/);
  });

  it('a bodiless upstream answer (HEAD) also ends the stream on its HEADERS frame', async () => {
    const frames = await rawFrames('/get', 'httpbin.example.com', 'HEAD');
    assert.deepEqual(frames.map((f) => [f.type, f.flags & 0x5]), [[1, 0x5]], JSON.stringify(frames));
    const r = await curl(['-s', '-I', '--http2-prior-knowledge', '-H', 'Host: httpbin.example.com', url('/get')]);
    assert.match(r.stdout, /^HTTP\/2 200 ?\r\n/);
    assert.match(r.stdout, /\r\nx-envoy-upstream-service-time: \d+\r\n/);
  });

  it('still serves HTTP/1.1 on the same port, including a request split before the sniffer decides', async () => {
    const r = await curl(['-s', '-i', '-H', 'Host: httpbin.example.com', url('/get')]);
    assert.match(r.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    // "P" alone matches the preface's first byte, so the sniffer must wait for more before it decides.
    const out = await new Promise<string>((resolve, reject) => {
      const sock = net.connect(gw.port(80), '127.0.0.1', () => {
        sock.write('P');
        setTimeout(() => sock.write('OST /post HTTP/1.1\r\nHost: httpbin.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi'), 150);
      });
      const chunks: Buffer[] = [];
      sock.on('data', (c: Buffer) => chunks.push(c));
      sock.on('error', reject);
      sock.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      sock.setTimeout(5000, () => sock.destroy());
    });
    assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(out, /"length": 2,/);
  });
});

describe('h2c: a bodiless answer whose head node:http2 refuses', function () {
  this.timeout(20_000);
  let gw: TestGateway;
  let upstream: net.Server;

  before(async () => {
    // An HTTP/1.1 upstream that names content-type twice (HTTP/2 allows one): fine on HTTP/1.1,
    // refused by node:http2 when the head is sent.
    upstream = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', () => s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-type: text/html\r\ncontent-length: 5\r\n\r\n'));
    });
    upstream.listen(0, '127.0.0.1');
    await new Promise((r) => upstream.once('listening', r));
    const port = (upstream.address() as net.AddressInfo).port;
    gw = await startGateway({ 'gw.yaml': singleRouteYaml({ upstreamPort: port, host: 'dup.example.com', routeHosts: ['dup.example.com'] }) });
  });
  after(async () => {
    await gw?.stop();
    upstream?.close();
  });

  it('a HEAD is reset at once and logged UC, never left hanging', async () => {
    const t0 = Date.now();
    const outcome = await new Promise<string>((resolve) => {
      const session = http2.connect(`http://127.0.0.1:${gw.port(80)}`);
      session.on('error', () => {});
      const stream = session.request({ ':method': 'HEAD', ':path': '/', ':authority': 'dup.example.com' });
      stream.on('error', () => {});
      stream.on('response', (h) => resolve(`response ${h[':status']}`));
      stream.on('close', () => resolve(`closed, code ${stream.rstCode}`));
      setTimeout(() => resolve('hung'), 3000);
    });
    assert.match(outcome, /^closed/, outcome); // no head reaches the client: its stream is reset
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    const lines = await gw.waitForLines(1);
    assert.ok(lines.some((l) => /"HEAD \/ HTTP\/2" 200 UC /.test(l)), lines.join('\n'));
  });
});
