// Like Istio's tcp-echo sample: every line received is answered `<prefix> <line>`. Half-close aware:
// when the client ends its side, pending replies (and a last unterminated line) are still written,
// then the server ends too. A client that does not read is not buffered for: reading pauses.

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

function serve(socket: net.Socket, prefix: string): void {
  let pending = '';
  const reply = (line: string): void => {
    if (!socket.write(`${prefix} ${line}\n`)) {
      socket.pause();
      socket.once('drain', () => socket.resume());
    }
  };
  socket.setEncoding('utf8'); // a multi-byte character split across chunks stays whole
  socket.on('data', (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      reply(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
    if (pending.length > MAX_LINE) {
      reply(pending);
      pending = '';
    }
  });
  socket.on('end', () => {
    if (pending) reply(pending);
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
