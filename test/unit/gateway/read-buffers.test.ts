// The upstream read buffers of TCP sessions (src/gateway/tcp/read-buffers.ts): which buffer a socket
// reads into next, when a chunk is copied out, and when a buffer goes back to the pool.

import assert from 'node:assert/strict';
import { ReadBuffers, SMALL_READ, userReads } from '../../../src/gateway/tcp/read-buffers';

describe('TCP upstream read buffers', () => {
  /** Simulates Node's onread loop: read `bytes` into the current buffer, then ask for the next. */
  function setup() {
    const pool = new ReadBuffers(1024 * 64, 2);
    const chunks: { chunk: Buffer; release: (() => void) | undefined }[] = [];
    const reads = userReads(pool, (chunk, release) => {
      chunks.push({ chunk, release });
      return true;
    });
    let current = reads.buffer();
    const read = (bytes: number, fill: number): Buffer => {
      const into = current;
      into.fill(fill, 0, bytes);
      reads.callback(bytes, into);
      current = reads.buffer();
      return into;
    };
    return { pool, reads, chunks, read, next: () => current };
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
    lent.release!();
    assert.equal(pool.idle, 1);
    assert.equal(pool.take(), own); // reused
  });

  it('close returns the buffer the socket would have read into; the pool keeps at most `keep`', () => {
    const { pool, reads, read } = setup();
    read(SMALL_READ * 2, 6);
    reads.close();
    assert.equal(pool.idle, 1);
    reads.close(); // twice is harmless: the shared buffer is never pooled
    assert.equal(pool.idle, 1);
    for (const b of [pool.take(), pool.take(), pool.take(), Buffer.alloc(10)]) pool.give(b);
    assert.equal(pool.idle, 2); // keep = 2; a buffer of another size is never taken in
  });
});
