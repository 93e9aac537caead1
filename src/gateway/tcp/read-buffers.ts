// Where a TCP session's upstream reads land: recycled 64 KiB buffers instead of a fresh one per read.
//
// Why: an ordinary socket read mallocs a 64 KiB backing store, wraps it in a new ArrayBuffer whose
// bytes V8 counts as external memory, and frees it after the scavenge that finds it dead. At a few
// hundred MB/s that is thousands of mallocs and frees a second, a scavenge forced by the external
// count every ~30 MB, and (Node 20's V8 adds the external bytes allocated since the last full
// collection to the old generation when it decides to start marking) now and then a full one.
// Measured on one connection's download (docs/benchmarks.md, "TCP throughput and the garbage
// collector"): 23 scavenges per 768 MiB without the pool, 1 with it, and ~1.4x the throughput.
//
// How (net.connect's `onread`): a socket reads into the buffer `buffer()` gave it. A quiet socket
// reads into one shared buffer, and what it read is copied out at once, so thousands of idle
// connections hold no read buffer of their own. A read larger than SMALL_READ (a transfer is
// under way) gives the socket a buffer of its own from the pool for its next read; that buffer
// goes to the write as is and returns to the pool when the write completes. (So a connection whose
// last read was large holds one 64 KiB buffer until its next read or its close.)
//
// Only plain TCP upstreams read this way: a TLS socket's reads come out of the TLS layer, and a
// client socket accepted by net.Server cannot be given `onread`.

/** Reads up to this size are copied out of the shared buffer (into Node's pooled small-buffer slab). */
export const SMALL_READ = 4096;

export class ReadBuffers {
  private readonly free: Buffer[] = [];
  /** The buffer quiet sockets read into; never lent to a write. */
  readonly shared: Buffer;

  /** `keep`: free buffers kept for reuse (beyond it they are left to the GC). */
  constructor(readonly size = 64 * 1024, readonly keep = 32) {
    this.shared = Buffer.allocUnsafeSlow(size);
  }

  /** A buffer nothing else holds. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Back for reuse: the caller no longer holds it, and no socket reads into or writes from it. */
  give(buf: Buffer): void {
    if (buf !== this.shared && buf.length === this.size && this.free.length < this.keep) this.free.push(buf);
  }

  /** Free buffers waiting for reuse. */
  get idle(): number {
    return this.free.length;
  }
}

/** A chunk read from a socket; `release` (when set) hands its buffer back once the chunk is written. */
export type ChunkHandler = (chunk: Buffer, release: (() => void) | undefined) => boolean;

/** Node's `onread` options for one socket: reads go through `onChunk`, which returns false to pause. */
export interface UserReads {
  readonly buffer: () => Buffer;
  readonly callback: (bytes: number, buf: Uint8Array) => boolean;
  /** Give back the buffer the socket would read into next (call once the socket is closed). */
  readonly close: () => void;
}

export function userReads(pool: ReadBuffers, onChunk: ChunkHandler): UserReads {
  let next = pool.shared;
  return {
    buffer: () => next,
    callback: (bytes, read) => {
      const buf = read as Buffer;
      let chunk: Buffer;
      let release: (() => void) | undefined;
      if (buf === pool.shared) {
        chunk = Buffer.allocUnsafe(bytes);
        buf.copy(chunk, 0, 0, bytes);
      } else {
        chunk = buf.subarray(0, bytes);
        release = () => pool.give(buf);
      }
      // Node asks buffer() for the next read right after this returns.
      next = bytes > SMALL_READ ? pool.take() : pool.shared;
      return onChunk(chunk, release);
    },
    close: () => {
      pool.give(next);
      next = pool.shared;
    },
  };
}
