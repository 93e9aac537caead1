// Like Istio's tcp-echo sample: every line received is answered `<prefix> <line>`, the line's bytes as
// they came (not decoded, so any encoding or binary survives). Half-close aware: when the client ends
// its side, pending replies (and a last unterminated line) are still written, then the server ends
// too. A client that does not read is not buffered for: reading pauses until the replies drain.

import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpEchoServer {
  readonly port: number;
  readonly host: string;
  readonly prefix: string;
  readonly server: net.Server;
  close(): Promise<void>;
}

export interface TcpEchoOptions {
  readonly port?: number;
  readonly host?: string;
  readonly prefix: string;
}

/** A line longer than this without a newline is answered as it stands rather than buffered further. */
const MAX_LINE = 64 * 1024;
const NEWLINE = 0x0a;
const NEWLINE_BYTES = Buffer.from([NEWLINE]);

function serve(socket: net.Socket, prefix: string): void {
  const head = Buffer.from(`${prefix} `);
  let pending: Buffer[] = []; // the start of a line whose newline has not come yet
  let pendingLength = 0;
  let draining = false;
  /** Reply to one line; `line` ends with its newline, or gets one. */
  const reply = (line: Buffer): void => {
    const parts = [head, line];
    if (line[line.length - 1] !== NEWLINE) parts.push(NEWLINE_BYTES);
    if (socket.write(Buffer.concat(parts)) || draining) return;
    draining = true; // one listener however many writes were refused
    socket.pause();
    socket.once('drain', () => {
      draining = false;
      socket.resume();
    });
  };
  const flushPending = (): void => {
    if (pendingLength > 0) reply(Buffer.concat(pending));
    pending = [];
    pendingLength = 0;
  };
  socket.on('data', (chunk: Buffer) => {
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl >= 0; nl = chunk.indexOf(NEWLINE, start)) {
      pending.push(chunk.subarray(start, nl + 1));
      pendingLength += nl + 1 - start;
      flushPending();
      start = nl + 1;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingLength += chunk.length - start;
    }
    if (pendingLength > MAX_LINE) flushPending();
  });
  socket.on('end', () => {
    flushPending();
    socket.end(); // after everything written so far
  });
}

export async function startTcpEcho(opts: TcpEchoOptions): Promise<TcpEchoServer> {
  const host = opts.host ?? '127.0.0.1';
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => sockets.delete(socket));
    serve(socket, opts.prefix);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      server.on('error', () => {});
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    host,
    prefix: opts.prefix,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
