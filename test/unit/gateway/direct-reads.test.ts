// Direct reads of accepted sockets (src/gateway/direct-reads.ts), over real loopback connections:
// the start-up proof, the bytes and the end through the callback, bytes the stream already held,
// pausing, resets, the sockets it refuses, and the way back to the stream for node:http.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { directReadsWork, directTlsReads, laneReads, readThrough, switchedSockets, type SocketReads } from '../../../src/gateway/direct-reads';
import { makeCa, makeLeaf } from '../../../src/tls/certs';
import { seededBytes } from '../../helpers/bytes';
import { listenLoopback, portOf, waitFor } from '../../helpers/upstream';

/** Pairs made by the test running: closed after it, whatever happened. */
const open: (() => void)[] = [];

/** A connected pair: the client and the socket the server accepted (paused, so nothing is read before the test switches it). */
async function pair(): Promise<{ client: net.Socket; accepted: net.Socket }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await listenLoopback(server);
  const accepting = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(portOf(server), '127.0.0.1');
  client.on('error', () => {});
  open.push(() => {
    client.destroy();
    server.close();
  });
  const [accepted] = await accepting;
  open.push(() => accepted.destroy());
  await once(client, 'connect');
  return { client, accepted };
}

/** Reads into one buffer, every chunk copied and kept. */
function collecting(onRead: (chunk: Buffer) => boolean = () => true): SocketReads & { chunks: Buffer[]; bytes: () => Buffer } {
  const into = Buffer.alloc(16 * 1024);
  const chunks: Buffer[] = [];
  return {
    chunks,
    bytes: () => Buffer.concat(chunks),
    buffer: () => into,
    callback: (bytes, buf) => {
      const chunk = Buffer.from(buf.subarray(0, bytes));
      chunks.push(chunk);
      return onRead(chunk);
    },
  };
}

describe('direct reads of accepted sockets', () => {
  before(() => directReadsWork());
  afterEach(() => {
    for (const close of open.splice(0)) close();
  });

  it('pass their start-up proof on this node', async () => {
    assert.equal(await directReadsWork(), true);
  });

  it("deliver a socket's bytes through the callback, in order and not as 'data' events, then its end as 'end'", async () => {
    const { client, accepted } = await pair();
    const reads = collecting();
    const before = switchedSockets();
    const taken = readThrough(accepted, reads);
    assert.ok(taken, 'switched');
    assert.equal(taken.waiting, undefined);
    assert.equal(switchedSockets(), before + 1);
    let dataEvents = 0;
    accepted.on('data', () => (dataEvents += 1));
    const sent = seededBytes(3 * 1024 * 1024 + 17, 1);
    let atEnd = -1;
    const ended = new Promise<void>((resolve) => accepted.once('end', () => {
      atEnd = reads.bytes().length;
      resolve();
    }));
    accepted.resume();
    client.end(sent);
    await ended;
    assert.equal(atEnd, sent.length, "'end' came after every byte");
    assert.ok(reads.bytes().equals(sent), 'byte-exact');
    assert.ok(reads.chunks.length > 1, 'many reads');
    assert.equal(dataEvents, 0);
  });

  /** A TLS connection over a loopback pair: the client, and the server's TLSSocket made by hand as tls-listener.ts makes it. */
  async function tlsPair(): Promise<{ client: tls.TLSSocket; secure: tls.TLSSocket; secured: Promise<void> }> {
    const ca = await makeCa({ commonName: 'direct-reads-ca', days: 1 });
    const leaf = await makeLeaf(ca, { commonName: 'direct.test', names: ['direct.test'], days: 1, usage: 'server' });
    const { client: raw, accepted } = await pair();
    const secure = new tls.TLSSocket(accepted, { isServer: true, secureContext: tls.createSecureContext({ cert: leaf.cert, key: leaf.key }) });
    open.push(() => secure.destroy());
    const secured = once(secure, 'secure').then(() => undefined);
    accepted.resume();
    const client = tls.connect({ socket: raw, servername: 'direct.test', ca: ca.cert });
    client.on('error', () => {});
    open.push(() => client.destroy());
    return { client, secure, secured };
  }

  it("read a terminated TLS socket's decrypted bytes through the callback once its handshake is done, not before", async () => {
    assert.equal(directTlsReads(), true, 'the TLS proof passed on this node');
    const { client, secure, secured } = await tlsPair();
    assert.equal(readThrough(secure, collecting()), false, 'refused during the handshake');
    const reads = collecting();
    let dataEvents = 0;
    await once(client, 'secureConnect');
    await secured;
    assert.ok(readThrough(secure, reads), 'switched once secure');
    secure.on('data', () => (dataEvents += 1));
    const sent = seededBytes(3 * 1024 * 1024 + 5, 3);
    client.end(sent);
    await once(secure, 'end');
    assert.ok(reads.bytes().equals(sent), `byte-exact (${reads.bytes().length} of ${sent.length})`);
    assert.ok(reads.chunks.length > 1, 'many reads');
    assert.equal(dataEvents, 0);
  });

  it('hand back the decrypted bytes a TLS socket\'s stream already held; its large reads land in 16 KiB buffers, not 64 KiB', async () => {
    const { client, secure, secured } = await tlsPair();
    await secured;
    secure.pause(); // reading, but into the stream's buffer
    client.write('held bytes');
    await waitFor(() => secure.readableLength === 10, { timeoutMs: 2000, intervalMs: 5 });
    const chunks: Buffer[] = [];
    const lane = laneReads(secure, (chunk) => {
      chunks.push(chunk);
      return true;
    });
    assert.ok(lane);
    assert.equal(lane.waiting?.toString(), 'held bytes');
    const sent = seededBytes(2 * 1024 * 1024, 5);
    client.end(sent);
    await once(secure, 'end');
    assert.ok(Buffer.concat(chunks).equals(sent), 'byte-exact after the held bytes');
    assert.ok(chunks.some((c) => c.length > 4096), 'large reads (given away whole, not copied)');
    const largest = Math.max(...chunks.map((c) => c.buffer.byteLength));
    assert.ok(largest <= 16 * 1024, `no chunk holds more than a TLS read's 16 KiB (largest backing: ${largest})`);
  });

  it('hand back the bytes the stream already held as `waiting`, ahead of every later read', async () => {
    const { client, accepted } = await pair();
    accepted.resume();
    accepted.pause(); // reading, but into the stream's buffer
    client.write('held bytes');
    await waitFor(() => accepted.readableLength === 10, { timeoutMs: 2000, intervalMs: 5 });
    const reads = collecting();
    const taken = readThrough(accepted, reads);
    assert.ok(taken);
    assert.equal(taken.waiting?.toString(), 'held bytes');
    assert.equal(accepted.isPaused(), false, 'left reading');
    client.end(' then more and the end');
    await once(accepted, 'end');
    assert.equal(reads.bytes().toString(), ' then more and the end');
  });

  it('stop reading when the callback returns false, until resume(); pause() stops them too', async () => {
    const { client, accepted } = await pair();
    let refuse = true;
    const reads = collecting(() => !refuse);
    assert.ok(readThrough(accepted, reads));
    const sent = seededBytes(8 * 1024 * 1024, 1);
    client.end(sent); // far more than the kernel's buffers hold: the client waits on us
    await waitFor(() => reads.chunks.length > 0, { timeoutMs: 2000, intervalMs: 5 });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(reads.chunks.length, 1, 'no read after the callback said false');
    refuse = false;
    accepted.resume();
    await waitFor(() => reads.chunks.length > 1, { timeoutMs: 2000, intervalMs: 5 });
    accepted.pause();
    const seen = reads.chunks.length;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(reads.chunks.length, seen, 'no read while paused');
    accepted.resume();
    await once(accepted, 'end');
    assert.ok(reads.bytes().equals(sent), 'byte-exact after pauses');
  });

  it("report a client's reset as 'error' and 'close', as on any socket", async () => {
    const { client, accepted } = await pair();
    const reads = collecting();
    assert.ok(readThrough(accepted, reads));
    const failed = once(accepted, 'error') as Promise<[NodeJS.ErrnoException]>;
    const closed = new Promise((resolve) => accepted.once('close', resolve));
    client.write('x');
    // Reset once the byte is read (a reset with bytes unread on loopback reads as their end).
    await waitFor(() => reads.chunks.length === 1, { timeoutMs: 2000, intervalMs: 5 });
    client.resetAndDestroy();
    const [err] = await failed;
    assert.equal(err.code, 'ECONNRESET');
    await closed;
  });

  it('refuse a TLS socket before its handshake, a socket switched before and a destroyed one', async () => {
    const secure = new tls.TLSSocket(new net.Socket());
    assert.equal(readThrough(secure, collecting()), false);
    secure.destroy();
    const { accepted } = await pair();
    assert.ok(readThrough(accepted, collecting()));
    assert.equal(readThrough(accepted, collecting()), false, 'switched before');
    const other = await pair();
    other.accepted.destroy();
    assert.equal(readThrough(other.accepted, collecting()), false, 'destroyed');
  });

  it("after toStream, push every read into the stream: 'data' events, behind bytes unshifted first", async () => {
    const { client, accepted } = await pair();
    const direct: string[] = [];
    const lane = laneReads(accepted, (chunk) => {
      direct.push(chunk.toString());
      return true;
    });
    assert.ok(lane);
    client.write('first');
    await waitFor(() => direct.length === 1, { timeoutMs: 2000, intervalMs: 5 });
    lane.toStream();
    accepted.pause();
    accepted.unshift(Buffer.from('unshifted;'));
    const streamed: string[] = [];
    accepted.on('data', (c: Buffer) => streamed.push(c.toString()));
    accepted.resume();
    client.end('second');
    await once(accepted, 'end');
    assert.deepEqual(direct, ['first']);
    assert.equal(streamed.join(''), 'unshifted;second');
  });

  it('after toStream, a connection handed to node:http is served: the parser reading the handle, then an upgrade', async () => {
    const server = http.createServer((req, res) => res.end(`you asked ${req.url}`));
    open.push(() => server.close());
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.on('data', (c: Buffer) => socket.write(c)); // the parser has let go: reads are pushed
      socket.on('end', () => socket.end());
    });
    const { client, accepted } = await pair();
    let seen = Buffer.alloc(0);
    const lane = laneReads(accepted, (chunk) => {
      seen = Buffer.concat([seen, chunk]);
      return true;
    });
    assert.ok(lane);
    let answers = '';
    client.on('data', (c: Buffer) => (answers += c.toString('latin1')));
    client.write('GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /tw');
    await waitFor(() => seen.toString().endsWith('/tw'), { timeoutMs: 2000, intervalMs: 5 });
    // The lane gives up here, as toNode does: back to the stream, unread bytes first, to node:http.
    lane.toStream();
    accepted.pause();
    accepted.unshift(seen);
    server.emit('connection', accepted);
    accepted.resume();
    client.write('o HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitFor(() => answers.includes('you asked /two'), { timeoutMs: 2000, intervalMs: 5 });
    assert.match(answers, /you asked \/one[\s\S]*you asked \/two/);
    client.write('GET /three HTTP/1.1\r\nHost: a\r\n\r\n'); // read by node's parser off the handle
    await waitFor(() => answers.includes('you asked /three'), { timeoutMs: 2000, intervalMs: 5 });
    client.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    await waitFor(() => answers.includes('101 Switching Protocols'), { timeoutMs: 2000, intervalMs: 5 });
    client.end('ping after the upgrade');
    await once(client, 'end');
    assert.ok(answers.endsWith('ping after the upgrade'), answers.slice(-80));
  });

  it('destroy the socket with the error a chunk handler throws: the process goes on', async () => {
    const { client, accepted } = await pair();
    assert.ok(laneReads(accepted, () => {
      throw new Error('handler bug');
    }));
    const failed = once(accepted, 'error') as Promise<[Error]>;
    client.write('boom');
    const [err] = await failed;
    assert.equal(err.message, 'handler bug');
    await once(accepted, 'close');
  });
});
