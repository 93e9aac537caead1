// Buffered, ordered, bounded appends of text lines to a file descriptor (the access log).
//
// Why not pino.destination: its write() measures the UTF-8 length of the whole pending buffer on
// every line (flattening a growing string each time), which cost ~18 % of a proxied request's CPU.
// Here a line costs an array push; lines are joined and encoded once per write.
//
// - Lines are written when `flushChars` are waiting or on flush() (a timer calls it), whichever first.
// - One write is in flight at a time, so lines reach the file in the order they were written.
// - A file that does not keep up (stalled disk, full pipe) never grows memory without bound: past
//   `maxPendingChars` waiting, new lines are dropped and counted (`dropped`).
// - Writes run on libuv's thread pool (a stalled disk never blocks the event loop); EAGAIN from a
//   non-blocking pipe (stdout under a container runtime) is retried after a short pause.

import fs from 'node:fs';

export interface LineWriterOptions {
  /** Write once this many characters are waiting. */
  readonly flushChars: number;
  /** Drop new lines while this many characters are waiting. */
  readonly maxPendingChars: number;
  /** Pause before retrying a write that failed with EAGAIN. */
  readonly retryMs: number;
}

export const DEFAULT_LINE_WRITER: LineWriterOptions = { flushChars: 8 * 1024, maxPendingChars: 16 * 1024 * 1024, retryMs: 10 };

export class LineWriter {
  private pending: string[] = [];
  private pendingChars = 0;
  private writing = false;
  private closed = false;
  /** Lines dropped because the file did not keep up. */
  dropped = 0;
  /** Writes that failed (other than EAGAIN); their lines are lost, later lines still go out. */
  errors = 0;
  private onIdle: (() => void)[] = [];

  constructor(readonly fd: number, private readonly opts: LineWriterOptions = DEFAULT_LINE_WRITER) {}

  write(line: string): void {
    if (this.closed) return;
    if (this.pendingChars + line.length > this.opts.maxPendingChars) {
      this.dropped += 1;
      return;
    }
    this.pending.push(line);
    this.pendingChars += line.length;
    if (!this.writing && this.pendingChars >= this.opts.flushChars) this.startWrite();
  }

  /** Start writing what is waiting (no-op while a write is in flight: it continues when that one ends). */
  flush(): void {
    if (!this.writing && this.pending.length > 0) this.startWrite();
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

  private startWrite(): void {
    const buf = Buffer.from(this.pending.length === 1 ? this.pending[0]! : this.pending.join(''), 'utf8');
    this.pending = [];
    this.pendingChars = 0;
    this.writing = true;
    this.writeFrom(buf, 0);
  }

  private writeFrom(buf: Buffer, offset: number): void {
    fs.write(this.fd, buf, offset, buf.length - offset, null, (err, n) => {
      if (err && (err as NodeJS.ErrnoException).code === 'EAGAIN') {
        setTimeout(() => this.writeFrom(buf, offset), this.opts.retryMs).unref();
        return;
      }
      if (err) this.errors += 1;
      else if (offset + n < buf.length) return this.writeFrom(buf, offset + n); // a short write: the rest
      this.writing = false;
      if (this.pending.length > 0 && (this.pendingChars >= this.opts.flushChars || this.onIdle.length > 0)) return this.startWrite();
      const waiting = this.onIdle;
      this.onIdle = [];
      for (const resolve of waiting) resolve();
    });
  }
}
