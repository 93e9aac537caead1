// The bench upstream when nginx is absent: answers every request 200 with a fixed body, keep-alive.
//   node upstream.js PORT BODY_BYTES [ADDRESS]   (default 127.0.0.1)

import http from 'node:http';

const [port, size] = process.argv.slice(2, 4).map(Number);
const body = Buffer.alloc(size ?? 600, 'x');
const server = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 120_000;
server.listen(port, process.argv[4] ?? '127.0.0.1');
