// Buffered, ordered, bounded appends of text lines to a file descriptor (the access log).
//
// - Each line is encoded at once into a batch buffer (reused from write to write): no line waits as
//   a string, so none is still alive when the young generation is collected (pending strings that
//   survive a scavenge are copied, and their batch join and encode cost more again).
// - A batch is written when it is full or on flush() (a timer calls it), whichever first. Batches
//   are large (64 KiB): each write is a hand-off to libuv's thread pool, a wake-up and two context
//   switches on a busy core, which 8 KiB batches paid ~550 times a second at saturation.
// - One write is in flight at a time, so lines reach the file in the order they were written.
// - A file that does not keep up (stalled disk, full pipe) never grows memory without bound: past
//   `maxPendingBytes` waiting, new lines are dropped and counted (`dropped`).
// - Writes run on libuv's thread pool (a stalled disk never blocks the event loop); EAGAIN from a
//   non-blocking pipe (stdout under a container runtime) is retried after a short pause.

import fs from 'node:fs';

export interface LineWriterOptions {
  /** Size of one batch buffer: a batch is written once full (or on flush()). */
  readonly batchBytes: number;
  /** Drop new lines while this many bytes wait to be written. */
  readonly maxPendingBytes: number;
  /** Pause before retrying a write that failed with EAGAIN. */
  readonly retryMs: number;
}

export const DEFAULT_LINE_WRITER: LineWriterOptions = { batchBytes: 64 * 1024, maxPendingBytes: 16 * 1024 * 1024, retryMs: 10 };

/** UTF-8 needs at most three bytes per UTF-16 code unit (a surrogate pair: four for two). */
const MAX_BYTES_PER_UNIT = 3;

/** Batch buffers kept for reuse once written (more are left to the garbage collector). */
const SPARE_BATCHES = 2;

export class LineWriter {
  /** The batch being filled, and how much of it is. */
  private batch: Buffer;
  private used = 0;
  /** Filled batches (or lines too long for one) waiting to be written, oldest first; `batch` is the buffer to reuse after. */
  private queue: { readonly bytes: Buffer; readonly batch?: Buffer }[] = [];
  /** Bytes waiting: the queue's and the current batch's. */
  private pendingBytes = 0;
  private readonly spares: Buffer[] = [];
  private writing = false;
  /** flush() was called while a write was in flight: the batch in progress goes out after it. */
  private flushWanted = false;
  private closed = false;
  /** Lines dropped because the file did not keep up. */
  dropped = 0;
  /** Writes that failed (other than EAGAIN); their lines are lost, later lines still go out. */
  errors = 0;
  private onIdle: (() => void)[] = [];

  constructor(readonly fd: number, private readonly opts: LineWriterOptions = DEFAULT_LINE_WRITER) {
    this.batch = Buffer.allocUnsafe(opts.batchBytes);
  }

  write(line: string): void {
    if (this.closed) return;
    const most = line.length * MAX_BYTES_PER_UNIT;
    if (this.pendingBytes + most > this.opts.maxPendingBytes) {
      this.dropped += 1;
      return;
    }
    if (this.used + most > this.batch.length) {
      this.rotate();
      if (most > this.batch.length) {
        // Longer than a batch: a buffer of its own, in its turn.
        const own = Buffer.from(line, 'utf8');
        this.queue.push({ bytes: own });
        this.pendingBytes += own.length;
        return this.startWrite();
      }
    }
    const n = this.batch.write(line, this.used, 'utf8');
    this.used += n;
    this.pendingBytes += n;
  }

  /**
   * Start writing what is waiting. While a write is in flight the batch in progress stays open (it
   * goes out when that write ends): a file that does not keep up then fills whole batches rather
   * than leaving a new, mostly empty 64 KiB buffer behind at every timer tick.
   */
  flush(): void {
    if (this.writing) {
      this.flushWanted = true;
      return;
    }
    this.rotate();
  }

  /** Resolves once everything written so far has reached the file descriptor (or failed). */
  drained(): Promise<void> {
    this.flush();
    if (!this.writing) return Promise.resolve();
    return new Promise((resolve) => this.onIdle.push(resolve));
  }

  /** Write what is waiting, then stop accepting lines. The caller closes the descriptor after. */
  async close(): Promise<void> {
    await this.drained();
    this.closed = true;
  }

  /** Queue the current batch (when it holds anything) and start a fresh one; starts a write when idle. */
  private rotate(): void {
    if (this.used === 0) return;
    this.queue.push({ bytes: this.batch.subarray(0, this.used), batch: this.batch });
    this.batch = this.spares.pop() ?? Buffer.allocUnsafe(this.opts.batchBytes);
    this.used = 0;
    this.startWrite();
  }

  private startWrite(): void {
    if (this.writing) return;
    const next = this.queue.shift();
    if (!next) {
      const waiting = this.onIdle;
      this.onIdle = [];
      for (const resolve of waiting) resolve();
      return;
    }
    this.writing = true;
    this.writeFrom(next.bytes, 0, next.batch);
  }

  private writeFrom(buf: Buffer, offset: number, batch: Buffer | undefined): void {
    fs.write(this.fd, buf, offset, buf.length - offset, null, (err, n) => {
      if (err && (err as NodeJS.ErrnoException).code === 'EAGAIN') {
        setTimeout(() => this.writeFrom(buf, offset, batch), this.opts.retryMs).unref();
        return;
      }
      if (err) this.errors += 1;
      else if (offset + n < buf.length) return this.writeFrom(buf, offset + n, batch); // a short write: the rest
      this.pendingBytes -= buf.length;
      if (batch && this.spares.length < SPARE_BATCHES) this.spares.push(batch);
      this.writing = false;
      if (this.queue.length === 0 && (this.flushWanted || this.onIdle.length > 0)) {
        this.flushWanted = false;
        this.rotate(); // the batch in progress, asked for while this write was in flight
      }
      this.startWrite();
    });
  }
}
