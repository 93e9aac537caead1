// Like Istio's tcp-echo sample: every line received is answered `<prefix> <line>`. Half-close aware:
// when the client ends its side, pending replies are still written, then the server ends too.

import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpEchoServer {
  readonly port: number;
  readonly server: net.Server;
  close(): Promise<void>;
}

export async function startTcpEcho(opts: { port?: number; host?: string; prefix: string }): Promise<TcpEchoServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => sockets.delete(socket));
    let pending = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      pending += chunk;
      let nl = pending.indexOf('\n');
      while (nl >= 0) {
        socket.write(`${opts.prefix} ${pending.slice(0, nl)}\n`);
        pending = pending.slice(nl + 1);
        nl = pending.indexOf('\n');
      }
      if (pending.length > 64 * 1024) pending = pending.slice(-64 * 1024);
    });
    socket.on('end', () => {
      if (pending) socket.write(`${opts.prefix} ${pending}\n`);
      socket.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
