// The upstream read buffers of TCP sessions (src/gateway/tcp/read-buffers.ts): which buffer a socket
// reads into next, when a chunk is copied out, and when a buffer goes back to the pool.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { ownedReads, ReadBuffers, SMALL_READ, userReads, type ChunkHandler } from '../../../src/gateway/tcp/read-buffers';

describe('TCP upstream read buffers', () => {
  /** Simulates Node's onread loop: read `bytes` into the current buffer, then ask for the next. */
  function setup(handler?: ChunkHandler) {
    const pool = new ReadBuffers(1024 * 64, 2);
    const chunks: { chunk: Buffer; release: ((written: boolean) => void) | undefined }[] = [];
    const failures: unknown[] = [];
    const reads = userReads(pool, handler ?? ((chunk, release) => {
      chunks.push({ chunk, release });
      return true;
    }), (err) => failures.push(err));
    let current = reads.buffer();
    const read = (bytes: number, fill: number): Buffer => {
      const into = current;
      into.fill(fill, 0, bytes);
      reads.callback(bytes, into);
      current = reads.buffer();
      return into;
    };
    return { pool, reads, chunks, failures, read, next: () => current };
  }

  it('a quiet socket reads into the shared buffer and its bytes are copied out at once', () => {
    const { pool, chunks, read, next } = setup();
    assert.equal(next(), pool.shared);
    read(100, 1);
    assert.equal(chunks[0]!.release, undefined);
    assert.notEqual(chunks[0]!.chunk.buffer, pool.shared.buffer);
    read(50, 2); // the shared buffer is overwritten: the first chunk must not change
    assert.deepEqual(chunks[0]!.chunk, Buffer.alloc(100, 1));
    assert.equal(next(), pool.shared);
  });

  it('a read above SMALL_READ gives the socket a pool buffer, lent to the write as is and returned by release', () => {
    const { pool, chunks, read, next } = setup();
    read(SMALL_READ + 1, 3); // into the shared buffer: copied; the next read gets its own
    const own = next();
    assert.notEqual(own, pool.shared);
    read(65536, 4);
    const lent = chunks[1]!;
    assert.equal(lent.chunk.buffer, own.buffer);
    assert.equal(lent.chunk.length, 65536);
    assert.notEqual(next(), own); // the lent buffer is not read into again before it is released
    read(10, 5); // a small read: back to the shared buffer for the next
    assert.equal(next(), pool.shared);
    assert.equal(pool.idle, 0);
    lent.release!(true);
    assert.equal(pool.idle, 1);
    assert.equal(pool.take(), own); // reused
  });

  it('close returns the buffer the socket would have read into; past `max` buffers sockets share (and copy)', () => {
    const { pool, reads, read } = setup();
    read(SMALL_READ * 2, 6);
    assert.equal(pool.total, 1);
    reads.close();
    assert.equal(pool.idle, 1);
    reads.close(); // twice is harmless: the shared buffer is never pooled
    assert.equal(pool.idle, 1);
    assert.equal(reads.buffer(), pool.shared);
    const a = pool.take();
    const b = pool.take();
    assert.equal(pool.total, 2);
    assert.equal(pool.take(), pool.shared); // max = 2: no third buffer
    pool.forget(a); // a failed write: its buffer is not coming back
    const c = pool.take();
    assert.ok(c !== pool.shared && c !== a && c !== b);
    assert.equal(pool.total, 2);
  });

  it('an exception while handling a read goes to `fail`, never into Node; the next read goes into a buffer not lent', () => {
    let lent: Buffer | undefined;
    const { pool, failures, read, next } = setup((chunk) => {
      lent = chunk;
      throw new Error('boom');
    });
    read(SMALL_READ * 2, 1); // into the shared buffer
    const own = next();
    assert.notEqual(own, pool.shared);
    assert.doesNotThrow(() => read(65536, 2));
    assert.equal(failures.length, 2);
    assert.equal(lent!.buffer, own.buffer);
    assert.notEqual(next(), own);
  });

  it("Node's onread asks for the next buffer after each read, and hands the callback the buffer that read went into", async () => {
    // The pool's safety rests on this order (an undocumented detail of Node's net module).
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.end(Buffer.alloc(300_000, 9));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const given: Buffer[] = [];
    const got: Buffer[] = [];
    let total = 0;
    const c = net.connect({
      port: (server.address() as net.AddressInfo).port, host: '127.0.0.1',
      onread: {
        buffer: () => {
          const b = Buffer.alloc(64 * 1024);
          given.push(b);
          return b;
        },
        callback: (n, b) => {
          got.push(b as Buffer);
          total += n;
          return true;
        },
      },
    });
    c.on('error', () => {});
    await once(c, 'end');
    c.destroy();
    server.close();
    assert.equal(total, 300_000);
    assert.ok(got.length >= 5);
    // Read i went into the buffer given before it; a new one was asked for after every read.
    got.forEach((b, i) => assert.equal(b, given[i], `read ${i}`));
    assert.equal(given.length, got.length + 1);
  });

  describe('owned reads (the HTTP/1.1 upstream pool: chunks are kept with no word of when they are done with)', () => {
    function setup(onChunk: (chunk: Buffer) => boolean = () => true) {
      const shared = Buffer.alloc(64 * 1024);
      const chunks: Buffer[] = [];
      const failures: unknown[] = [];
      const reads = ownedReads(shared, (chunk) => {
        chunks.push(chunk);
        return onChunk(chunk);
      }, (err) => failures.push(err));
      let current = reads.buffer();
      const read = (bytes: number, fill: number): boolean => {
        current.fill(fill, 0, bytes);
        const go = reads.callback(bytes, current);
        current = reads.buffer();
        return go;
      };
      return { shared, chunks, failures, read, next: () => current };
    }

    it('a small read is copied out of the shared buffer, so the next read cannot change it', () => {
      const { shared, chunks, read, next } = setup();
      assert.equal(next(), shared);
      read(100, 1);
      read(SMALL_READ, 2);
      assert.deepEqual(chunks[0], Buffer.alloc(100, 1));
      assert.deepEqual(chunks[1], Buffer.alloc(SMALL_READ, 2));
      assert.notEqual(chunks[0]!.buffer, shared.buffer);
      assert.equal(next(), shared);
    });

    it('after a large read the next one goes into a fresh buffer that is given away whole, never reused', () => {
      const { shared, chunks, read, next } = setup();
      read(SMALL_READ + 1, 1); // into shared: copied; the next read gets a buffer of its own
      const own = next();
      assert.notEqual(own, shared);
      read(60_000, 2);
      assert.equal(chunks[1]!.buffer, own.buffer, 'the big read is handed on without a copy');
      const after = next();
      assert.notEqual(after, own, 'a buffer given away is never read into again');
      assert.notEqual(after, shared);
      read(10, 3); // small again: the one after goes back to shared
      assert.deepEqual(chunks[1], Buffer.alloc(60_000, 2));
      assert.equal(next(), shared);
    });

    it('a throw from the handler goes to fail and stops reading, never into Node\'s read loop', () => {
      const { failures, read } = setup(() => { throw new Error('boom'); });
      assert.equal(read(10, 1), false);
      assert.equal(failures.length, 1);
    });

    it('the handler\'s false stops reading', () => {
      const { read } = setup(() => false);
      assert.equal(read(10, 1), false);
    });
  });
});
