// HTTP/1.1 wire helpers shared by the downstream lane (h1-lane.ts) and the upstream pool
// (registry/h1-pool.ts): the character rules both parsers apply, and the idle timer both keep.

/** RFC 9110 token (a method, a header name). */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A byte a header value may not carry (field-vchar, SP, HTAB and obs-text are allowed). */
export const HEADER_VALUE_BAD = /[^\t\x20-\x7e\x80-\xff]/;
/** In a head: a control character other than HTAB, CR and LF, or a CR or LF outside a CRLF. */
export const BAD_HEAD_BYTES = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
export const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
/** A Transfer-Encoding whose last coding is chunked (the body is framed by chunks). */
export const CHUNKED_LAST = /(^|,)[\t ]*chunked[\t ]*$/i;

/**
 * A Content-Length value's digits as they follow the colon, or undefined. OWS may come before them,
 * only spaces after: llhttp refuses a tab there, so both our parsers do (the digit limits are theirs).
 */
export function contentLengthDigits(afterColon: string): string | undefined {
  return /^[ \t]*(\d+) *$/.exec(afterColon)?.[1];
}

/** Strip optional whitespace (SP, HTAB) at both ends: String.trim would also take latin1 NBSP. */
export function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * Closes a connection idle for `ms`, with one timer per connection: when it fires on a busy
 * connection, or one active since, it is set again for the time left. No timer work per request:
 * the owner calls touch() when a request ends.
 */
export class IdleTimer {
  private lastActive = Date.now();
  private timer: NodeJS.Timeout;

  constructor(private ms: number, private readonly busy: () => boolean, private readonly close: () => void) {
    this.timer = this.arm(ms);
  }

  touch(): void {
    this.lastActive = Date.now();
  }

  /** Lower the idle limit (an upstream's Keep-Alive timeout hint). */
  limit(ms: number): void {
    this.ms = Math.min(this.ms, ms);
  }

  /** Idle for the limit already (the timer may not have fired yet). */
  expired(): boolean {
    return Date.now() - this.lastActive >= this.ms;
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private arm(ms: number): NodeJS.Timeout {
    const t = setTimeout(() => {
      const left = this.lastActive + this.ms - Date.now();
      if (this.busy()) this.timer = this.arm(this.ms);
      else if (left > 0) this.timer = this.arm(left);
      else this.close();
    }, ms);
    t.unref();
    return t;
  }
}
