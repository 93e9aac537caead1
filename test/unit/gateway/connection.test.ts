// connectionOf: the socket a request came on, for HTTP/2 too, where node:http2 only hands out
// proxies of it (what is remembered about a connection, its original destination and TLS
// identities, is keyed by the socket the listener accepted).

import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { bindSession, connectionOf, serveH2Socket } from '../../../src/gateway/http/connection';

describe('connectionOf', () => {
  it('an HTTP/2 request names the socket its session was served from; HTTP/1 its own socket', async () => {
    const accepted: net.Socket[] = [];
    const h2 = http2.createServer();
    h2.on('session', bindSession);
    h2.on('request', (req, res) => {
      const conn = connectionOf(req as unknown as http.IncomingMessage);
      res.end(`${conn === accepted[0]} ${conn === (req.socket as unknown)}`);
    });
    const listener = net.createServer((s) => { accepted.push(s); serveH2Socket(h2, s); });
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    const port = (listener.address() as net.AddressInfo).port;
    try {
      const client = http2.connect(`http://127.0.0.1:${port}`);
      const body = await new Promise<string>((resolve, reject) => {
        const r = client.request({ ':path': '/' });
        let b = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => { b += c; });
        r.on('end', () => resolve(b));
        r.on('error', reject);
        r.end();
      });
      client.close();
      assert.equal(body, 'true false', 'the accepted socket, not the stream\'s proxy');
    } finally {
      listener.close();
      for (const s of accepted) s.destroy();
    }

    const h1 = http.createServer((req, res) => res.end(String(connectionOf(req) === req.socket)));
    await new Promise<void>((r) => h1.listen(0, '127.0.0.1', r));
    try {
      const got = await new Promise<string>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port: (h1.address() as net.AddressInfo).port, agent: false }, (res) => {
          let b = '';
          res.on('data', (c: Buffer) => { b += c.toString(); });
          res.on('end', () => resolve(b));
        }).on('error', reject);
      });
      assert.equal(got, 'true');
    } finally {
      h1.close();
    }
  });
});
