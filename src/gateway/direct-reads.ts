// Reads of accepted client sockets without node's stream machinery.
//
// Why: a socket that net.Server accepted reads through its Readable stream. Each read mallocs a
// 64 KiB backing store and shrinks it to the bytes read, wraps them in a new ArrayBuffer and Buffer,
// pushes them, emits 'data' and queues a read-more tick. At 1000 requests a second that is ~4.5 µs
// a request, ~9 % of the gateway's CPU (docs/benchmarks.md, "Reads from clients"). Sockets node
// connects can skip all of it with net.connect's `onread` (a buffer the socket reads into and a
// callback per read); our upstream sockets do (tcp/read-buffers.ts). Node does not offer `onread` to
// the sockets a server accepts.
//
// How: `onread` is two things inside node. The socket keeps the buffer, its generator and the
// callback under three symbols, which its read handler (onStreamRead) consults on every read; and
// the socket's handle reads into that buffer once told to (`useUserBuffer`). Both are reached here:
// the symbols are found on a socket made with `onread`, and the handle's method is called on the
// accepted socket. That is node's internal surface, so it is proved before use: at start-up a real
// loopback connection is switched over and must deliver its bytes through the callback and its end
// as 'end' (`directReadsWork`). Until that passes, or if it fails, every socket reads through its
// stream as before.
//
// TLS sockets the gateway terminates (HTTPS, TLS SIMPLE/MUTUAL, a sidecar's inbound mTLS) read the
// same way once their handshake is done: their TLSWrap handle asks for a buffer for the decrypted
// bytes as a TCP handle does for the raw ones. That is proved on its own, over a loopback TLS 1.2
// connection with a pre-shared key; without it TLS sockets keep their streams.
//
// A handle cannot be told to stop reading into user buffers. A connection the HTTP/1.1 lane hands to
// node:http (or any stream consumer) is switched back by `toStream`: the callback from then on
// pushes each read into the socket's Readable, so 'data', unshift, pause and node:http's parser
// (which consumes the handle and then reads past these listeners itself) work as on any socket.

import net, { type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { connect as tlsConnect, createSecureContext, TLSSocket, type TLSSocketOptions } from 'node:tls';
import { asError } from '../errors';
import { COPIED_READS, ownedReads } from './tcp/read-buffers';

/**
 * The most a TLS socket reads at once: node's TLS layer hands on decrypted bytes 16 KiB at a time
 * (a record's plaintext), and splits them when a buffer is smaller. Fresh read buffers for TLS
 * sockets are this size, not 64 KiB, so a chunk does not hold four times its bytes.
 */
export const TLS_READ_BYTES = 16 * 1024;

/** What net.connect's `onread` takes; what a socket switched here reads through. */
export interface SocketReads {
  /** The buffer the next read goes into; asked again after every read. */
  readonly buffer: () => Buffer;
  /** `bytes` were read into `buf`; false pauses the socket (its resume() reads again). */
  readonly callback: (bytes: number, buf: Uint8Array) => boolean;
}

/** The symbols a net.Socket keeps its `onread` under. */
interface OnreadSymbols {
  /** The buffer being read into (true before the first one is made). */
  readonly current: symbol;
  readonly generator: symbol;
  readonly callback: symbol;
}

interface ReadingHandle {
  readonly useUserBuffer?: (buf: Uint8Array) => void;
  /** Set by node:http when its parser reads the handle itself. */
  readonly _consumed?: boolean;
}

/** The socket's libuv handle, as node's own code reaches it. */
function handleOf(socket: Socket): ReadingHandle | undefined {
  return (socket as unknown as { _handle?: ReadingHandle | null })._handle ?? undefined;
}

/** Found by value on a socket made with `onread` (a generator, so the first read's buffer is `true`). */
function findSymbols(): OnreadSymbols | undefined {
  const generator = (): Buffer => Buffer.alloc(0);
  const callback = (): boolean => true;
  let probe: Socket | undefined;
  try {
    // @types/node leaves `onread` out of the constructor's options; node documents it there.
    probe = new net.Socket({ onread: { buffer: generator, callback } } as net.SocketConstructorOpts);
    const own = probe as unknown as Record<symbol, unknown>;
    let current: symbol | undefined;
    let gen: symbol | undefined;
    let cb: symbol | undefined;
    for (const s of Object.getOwnPropertySymbols(probe)) {
      if (own[s] === generator) gen = s;
      else if (own[s] === callback) cb = s;
      else if (own[s] === true && s.description === 'kBuffer') current = s;
    }
    return current && gen && cb ? { current, generator: gen, callback: cb } : undefined;
  } catch {
    return undefined;
  } finally {
    probe?.destroy();
  }
}

let symbols: OnreadSymbols | undefined;
let proven: Promise<boolean> | undefined;
/** TLS sockets passed their own proof (after the plain one). */
let tlsProven = false;
/** Sockets switched over in this process (tests check the path is taken, not silently skipped). */
let switched = 0;

export function switchedSockets(): number {
  return switched;
}

/**
 * Make `socket`, a socket a server accepted (or a TLS socket over one, once secure), read through
 * `reads` from now on. Returns what it had already read into its stream (handle those bytes first),
 * or false: it keeps reading through its stream (not proven on this node, a TLS socket before its
 * handshake ends or where TLS was not proven, a handle some parser consumes, or one switched
 * before). The socket is left reading (resumed); from now on its pause() and resume() stop and
 * start the reads, as for a socket made with `onread`. Its end still comes as 'end', a read error
 * as 'error'.
 */
export function readThrough(socket: Socket, reads: SocketReads): { readonly waiting: Buffer | undefined } | false {
  return symbols ? switchReads(socket, reads, symbols, tlsProven) : false;
}

function switchReads(socket: Socket, reads: SocketReads, s: OnreadSymbols, tls: boolean): { readonly waiting: Buffer | undefined } | false {
  if (socket.destroyed) return false;
  // A TLS socket reads decrypted bytes into the buffer (its TLSWrap asks for one as a TCP handle
  // does): proven separately (`tls`), and switched only once its handshake is done.
  if (socket instanceof TLSSocket && (!tls || !(socket as { _secureEstablished?: boolean })._secureEstablished)) return false;
  const handle = handleOf(socket);
  const own = socket as unknown as Record<symbol, unknown>;
  if (!handle || typeof handle.useUserBuffer !== 'function' || handle._consumed || own[s.current]) return false;
  // What the stream already holds (bytes a sniffer unshifted): read() on a paused stream takes it all.
  socket.pause();
  const held = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
  const first = reads.buffer();
  own[s.current] = first;
  own[s.generator] = reads.buffer;
  own[s.callback] = reads.callback;
  handle.useUserBuffer(first);
  switched += 1;
  // Left reading (resume() starts the handle again if a full stream had stopped it). Leaving it
  // paused would cost two epoll_ctl calls when the caller resumes, ~2 % of a short connection.
  socket.resume();
  return { waiting: held ?? undefined };
}

/** A client connection's reads while the lane reads it: to `onChunk`, or (after toStream) its stream. */
export interface LaneReads {
  /** Bytes read before the switch, to be handled before any chunk. */
  readonly waiting: Buffer | undefined;
  /** From now on every read is pushed into the socket's stream ('data', unshift, node:http). */
  toStream(): void;
}

/**
 * `readThrough` for a connection that may later go to a stream consumer. Every chunk is its
 * receiver's own (ownedReads: small reads copied out of one shared buffer, a large one given away
 * whole), so switching to the stream leaves no buffer shared with anything. `onChunk` returns false
 * to pause.
 */
export function laneReads(socket: Socket, onChunk: (chunk: Buffer) => boolean): LaneReads | false {
  let direct = true;
  const fresh = socket instanceof TLSSocket ? TLS_READ_BYTES : COPIED_READS.length;
  const reads = ownedReads(COPIED_READS, (chunk) => (direct ? onChunk(chunk) : socket.push(chunk)), (err) => socket.destroy(asError(err)), fresh);
  const taken = readThrough(socket, reads);
  if (!taken) return false;
  return {
    waiting: taken.waiting,
    toStream: () => {
      direct = false;
    },
  };
}

/**
 * Are direct reads proven on this node? The first call runs the proof (once per process): a
 * loopback connection is accepted, switched over, and must deliver a few bytes through the callback
 * and then its end, within 3 s. Then the same over TLS (`directTlsReads`). Never rejects.
 */
export function directReadsWork(): Promise<boolean> {
  proven ??= provePlain().catch(() => undefined).then(async (found) => {
    symbols = found;
    if (!found) return false;
    tlsProven = await proveTls(found).catch(() => false);
    return true;
  });
  return proven;
}

/** Whether TLS sockets read directly too (known once directReadsWork has resolved). */
export function directTlsReads(): boolean {
  return tlsProven;
}

const PROOF = Buffer.from('meshgate direct reads', 'latin1');

/** The plain proof: the symbols, when a switched loopback connection delivered through them. */
async function provePlain(): Promise<OnreadSymbols | undefined> {
  const found = findSymbols();
  if (!found) return undefined;
  const ok = await proveOn(found, (raw, ready) => ready(raw), (port, send) => {
    const client = net.connect(port, '127.0.0.1', () => send(client));
    return client;
  });
  return ok ? found : undefined;
}

/**
 * The TLS proof: a TLS 1.2 handshake with a pre-shared key (no certificate to make), the server
 * side a TLSSocket made by hand over the accepted socket as tls-listener.ts makes its own, switched
 * once secure as the HTTP/1.1 lane and the TCP proxy switch theirs.
 */
async function proveTls(found: OnreadSymbols): Promise<boolean> {
  const key = randomBytes(32);
  const suite = { ciphers: 'PSK-AES128-GCM-SHA256', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;
  const context = createSecureContext(suite);
  return proveOn(found, (raw, ready) => {
    const secure = new TLSSocket(raw, { isServer: true, secureContext: context, pskCallback: () => key } as TLSSocketOptions);
    secure.once('secure', () => ready(secure));
    return secure;
  }, (port, send) => {
    const client = tlsConnect({
      port, host: '127.0.0.1', ...suite,
      pskCallback: () => ({ psk: key, identity: 'meshgate' }),
      checkServerIdentity: () => undefined,
    }, () => send(client));
    client.resume(); // the server's close_notify
    return client;
  });
}

/**
 * One proof: `accept` turns each accepted socket into the one to switch (itself, or a TLSSocket
 * over it) and calls `ready` when it may be switched; `connect` dials the port and calls `send` once
 * connected. The switched socket must deliver PROOF through the callback, nothing as 'data', then
 * 'end', within 3 s.
 */
function proveOn(
  found: OnreadSymbols,
  accept: (raw: Socket, ready: (socket: Socket) => void) => Socket | void,
  connect: (port: number, send: (client: Socket) => void) => Socket,
): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const sockets: Socket[] = [];
    let settled = false;
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      server.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 3000);
    // Whatever throws in here (a TLS build without the suite, a node that changed) fails the proof.
    const guarded = <A extends unknown[]>(fn: (...args: A) => void) => (...args: A): void => {
      try {
        fn(...args);
      } catch {
        done(false);
      }
    };
    const send = (client: Socket) => void client.end(PROOF);
    const server = net.createServer({ allowHalfOpen: true }, guarded((raw: Socket) => {
      sockets.push(raw);
      raw.on('error', () => done(false));
      const wrapped = accept(raw, guarded((accepted: Socket) => {
        const got: Buffer[] = [];
        let viaStream = false;
        accepted.on('data', () => {
          viaStream = true;
        });
        const taken = switchReads(accepted, {
          buffer: () => COPIED_READS,
          callback: (bytes, buf) => {
            got.push(Buffer.from(buf.subarray(0, bytes)));
            return true;
          },
        }, found, true);
        if (!taken) return done(false);
        if (taken.waiting) got.unshift(taken.waiting);
        accepted.on('end', () => done(!viaStream && Buffer.concat(got).equals(PROOF)));
      }));
      if (wrapped) {
        sockets.push(wrapped);
        wrapped.on('error', () => done(false));
      }
    }));
    server.on('error', () => done(false));
    server.listen(0, '127.0.0.1', guarded(() => {
      const address = server.address();
      if (!address || typeof address === 'string') return done(false);
      const client = connect(address.port, guarded(send));
      sockets.push(client);
      client.on('error', () => done(false));
    }));
  });
}
