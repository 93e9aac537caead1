// Where a TCP session's upstream reads land: recycled 64 KiB buffers instead of a fresh one per read.
//
// Why: an ordinary socket read mallocs a 64 KiB backing store, wraps it in a new ArrayBuffer whose
// bytes V8 counts as external memory, and frees it after the scavenge that finds it dead. At a few
// hundred MB/s that is thousands of mallocs and frees a second, a scavenge forced by the external
// count every ~30 MB, and (Node 20's V8 adds the external bytes allocated since the last full
// collection to the old generation when it decides to start marking) now and then a full one.
// Measured on one connection's download (docs/benchmarks.md, "TCP throughput and the garbage
// collector"): 23 scavenges per 768 MiB without the pool, 7 with it (the 2 MiB young generation),
// and ~1.4x the throughput.
//
// How (net.connect's `onread`): a socket reads into the buffer `buffer()` gave it. A quiet socket
// reads into one shared buffer, and what it read is copied out at once, so thousands of idle
// connections hold no read buffer of their own. A read larger than SMALL_READ (a transfer is
// under way) gives the socket a buffer of its own from the pool for its next read; that buffer
// goes to the write as is and returns to the pool when the write completes. A connection whose last
// read was large holds one 64 KiB buffer until its next read or its close; the pool's buffers are
// bounded (64, 4 MiB), and past that bound sockets read into the shared buffer and copy, so idle
// connections cannot add up.
//
// Plain upstream sockets read through `onread`; client sockets (plain, and TLS ones terminated here
// once secure) are switched to the same reads by gateway/direct-reads.ts. The HTTP/1.1 and h2c
// upstream pools read that way too, through ownedReads (below; registry/upstream-socket.ts
// plainUpstreamSocket): their chunks are kept with no word of when they are done with, so every read
// is theirs.

/** Reads up to this size are copied out of the shared buffer (into Node's pooled small-buffer slab). */
export const SMALL_READ = 4096;

export class ReadBuffers {
  private readonly free: Buffer[] = [];
  /** Pool buffers in existence: free, lent to a write, or some socket's next read. */
  private owned = 0;
  /** The buffer quiet sockets read into; never lent to a write. */
  readonly shared: Buffer;

  /**
   * `max` bounds the pool's memory (max x size): past it, sockets read into the shared buffer and
   * their bytes are copied out, so connections left holding a buffer (their last read was large)
   * cannot add up.
   */
  constructor(readonly size = 64 * 1024, readonly max = 64) {
    this.shared = Buffer.allocUnsafeSlow(size);
  }

  /** A buffer nothing else holds, or the shared one when the pool is at its bound. */
  take(): Buffer {
    const buf = this.free.pop();
    if (buf) return buf;
    if (this.owned >= this.max) return this.shared;
    this.owned += 1;
    return Buffer.allocUnsafeSlow(this.size);
  }

  /** Back for reuse: the caller no longer holds it, and no socket reads into or writes from it. */
  give(buf: Buffer): void {
    if (buf !== this.shared) this.free.push(buf);
  }

  /** A buffer that will not come back (its write failed): left to the GC, its place freed. */
  forget(buf: Buffer): void {
    if (buf !== this.shared) this.owned -= 1;
  }

  /** Free buffers waiting for reuse. */
  get idle(): number {
    return this.free.length;
  }

  /** Pool buffers in existence (at most `max`). */
  get total(): number {
    return this.owned;
  }
}

/** The first `bytes` of a buffer that will be read into again, in memory of their own. */
function copyOut(buf: Buffer, bytes: number): Buffer {
  const chunk = Buffer.allocUnsafe(bytes);
  buf.copy(chunk, 0, 0, bytes);
  return chunk;
}

/**
 * A chunk read from a socket. `release` (when set) must be called once the chunk is no longer
 * referenced: `true` when its write completed (the buffer is reused), `false` when it failed.
 */
export type ChunkHandler = (chunk: Buffer, release: ((written: boolean) => void) | undefined) => boolean;

/** Node's `onread` options for one socket: reads go through `onChunk`, which returns false to pause. */
export interface UserReads {
  readonly buffer: () => Buffer;
  readonly callback: (bytes: number, buf: Uint8Array) => boolean;
  /** Give back the buffer the socket would read into next (call once the socket is closed). */
  readonly close: () => void;
}

/**
 * `fail` gets anything thrown while handling a read: nothing may escape into Node's read loop (it
 * would skip asking for the next buffer and read again into one that may be lent to a write).
 */
export function userReads(pool: ReadBuffers, onChunk: ChunkHandler, fail: (err: unknown) => void): UserReads {
  let next = pool.shared;
  return {
    buffer: () => next,
    callback: (bytes, read) => {
      try {
        const buf = read as Buffer;
        const chunk = buf === pool.shared ? copyOut(buf, bytes) : buf.subarray(0, bytes);
        const release = buf === pool.shared ? undefined : (written: boolean) => (written ? pool.give(buf) : pool.forget(buf));
        // Node asks buffer() for the next read right after this returns (test/unit/gateway/read-buffers.test.ts).
        next = bytes > SMALL_READ ? pool.take() : pool.shared;
        return onChunk(chunk, release);
      } catch (err) {
        // `next` is safe to read into: either the buffer just read (the throw came before it was lent)
        // or a new one (it came after).
        fail(err);
        return false;
      }
    },
    close: () => {
      pool.give(next);
      next = pool.shared;
    },
  };
}

/**
 * What quiet sockets reading through ownedReads read into. Each read is copied out before the next
 * can happen (everything runs on this thread), so every such socket shares it: the plain upstream
 * pools' connections and the client connections the HTTP/1.1 lane reads (gateway/direct-reads.ts).
 */
export const COPIED_READS = Buffer.allocUnsafeSlow(64 * 1024);

/**
 * `onread` options for a socket whose chunks are handed on with no word of when they are done with
 * (the HTTP upstream pools: a body chunk goes to the client's write, a partial head or frame is kept).
 * Every chunk belongs to its receiver. A quiet socket reads into `shared` and its bytes are copied
 * out (a small read lands in Node's pooled slab: no ArrayBuffer per read); after a read larger than
 * SMALL_READ the next read goes into a fresh buffer that is given away whole, as Node's own reads
 * are, so a transfer is not copied (`freshBytes` long: TLS sockets read 16 KiB at most). Either way
 * the read skips the Readable stream's machinery (push, 'data', the read-more tick). `fail` as in
 * userReads.
 */
export function ownedReads(shared: Buffer, onChunk: (chunk: Buffer) => boolean, fail: (err: unknown) => void, freshBytes = shared.length): Omit<UserReads, 'close'> {
  let next = shared;
  return {
    buffer: () => next,
    callback: (bytes, read) => {
      try {
        const buf = read as Buffer;
        const chunk = buf === shared ? copyOut(buf, bytes) : buf.subarray(0, bytes);
        next = bytes > SMALL_READ ? Buffer.allocUnsafeSlow(freshBytes) : shared;
        return onChunk(chunk);
      } catch (err) {
        fail(err);
        return false;
      }
    },
  };
}
