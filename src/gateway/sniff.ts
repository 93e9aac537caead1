// First bytes of a plaintext connection: the HTTP/2 connection preface (h2c with prior knowledge)
// or anything else (HTTP/1.x). Bounded: at most the 24 preface bytes are looked at, and a client
// that sends nothing within `timeoutMs` is handed to HTTP/1, whose own timeouts then answer 408.

import type { Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Decide h2c or HTTP/1 from the first bytes, then hand the socket on with those bytes unread. */
/**
 * The socket must come from a server with `allowHalfOpen: true` (as Node's own HTTP servers are),
 * so a client's FIN right after its request does not close our side before the reply.
 */
export function sniffPlaintext(socket: Socket, timeoutMs: number, done: (protocol: 'h2c' | 'http1') => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const finish = (protocol: 'h2c' | 'http1') => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.pause();
    if (seen.length > 0) socket.unshift(seen);
    done(protocol);
  };
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    if (!seen.subarray(0, n).equals(PREFACE.subarray(0, n))) return finish('http1');
    if (seen.length >= PREFACE.length) finish('h2c');
  };
  // A client that half-closes before the protocol is known sent at most a prefix of the preface:
  // no complete request of either kind, so there is nothing to answer.
  const onEnd = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.destroy();
  };
  const timer = setTimeout(() => finish('http1'), timeoutMs);
  socket.on('data', onData);
  socket.once('end', onEnd);
}
