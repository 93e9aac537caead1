// The response head as Envoy writes it, byte for byte where Node would differ: header names in
// lower case (`date`, not Node's `Date`), no `Connection: keep-alive` / `Keep-Alive: timeout=N` on a
// persistent HTTP/1.1 connection, `connection: close` when the connection ends, HTTP/1.0 keep-alive
// acknowledged, `transfer-encoding: chunked` in lower case. Read from raw sockets, since curl and
// Node's client hide the case. Loopback only.

import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { singleRouteYaml } from '../../src/sample/configs';

/** Responses read off one raw connection, in order: the head's lines, and whether the peer closed. */
class RawConnection {
  private buf = '';
  closed = false;
  private readonly socket: net.Socket;
  private wake: (() => void) | undefined;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => { this.buf += d; this.wake?.(); });
    this.socket.on('error', () => {});
    this.socket.on('close', () => { this.closed = true; this.wake?.(); });
  }

  send(text: string): void {
    this.socket.write(text);
  }

  /** The next response's head lines (status line first) and body, read by content-length or chunks. */
  async response(): Promise<{ head: string[]; body: string }> {
    const deadline = Date.now() + 3000;
    for (;;) {
      const parsed = this.take();
      if (parsed) return parsed;
      if (this.closed || Date.now() > deadline) throw new Error(`no whole response; got ${JSON.stringify(this.buf)}`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  private take(): { head: string[]; body: string } | undefined {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const head = this.buf.slice(0, end).split('\r\n');
    const rest = this.buf.slice(end + 4);
    const field = (name: string) => head.find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
    const length = field('content-length');
    if (length !== undefined) {
      if (rest.length < Number(length)) return undefined;
      this.buf = rest.slice(Number(length));
      return { head, body: rest.slice(0, Number(length)) };
    }
    if (field('transfer-encoding') === 'chunked') {
      const last = rest.indexOf('0\r\n\r\n');
      if (last < 0) return undefined;
      this.buf = rest.slice(last + 5);
      return { head, body: rest.slice(0, last + 5) };
    }
    if (!this.closed) return undefined; // delimited by the close
    this.buf = '';
    return { head, body: rest };
  }

  async waitClosed(): Promise<boolean> {
    const deadline = Date.now() + 2000;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

const names = (head: string[]) => head.slice(1).map((l) => l.slice(0, l.indexOf(':')));
const value = (head: string[], name: string) => head.slice(1).filter((l) => l.startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).trim());

describe('response head as Envoy writes it (HTTP/1)', () => {
  let upstream: http.Server;
  let gw: TestGateway;
  let port: number;

  before(async () => {
    upstream = http.createServer((req, res) => {
      if (req.url === '/chunked') {
        res.writeHead(200, { 'Content-Type': 'text/plain' }); // Node's own capitalised names, no length
        res.write('one ');
        setTimeout(() => res.end('two'), 10);
      } else if (req.url === '/dated') {
        res.writeHead(200, { Date: 'Mon, 01 Jan 2024 00:00:00 GMT', 'Content-Length': '2' });
        res.end('ok');
      } else {
        res.sendDate = false;
        res.writeHead(200, { 'Content-Length': '2', 'X-Upstream-Mixed-Case': 'yes' });
        res.end('ok');
      }
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    gw = await startGateway({
      'gw.yaml': singleRouteYaml({
        upstreamPort: (upstream.address() as AddressInfo).port,
        prefix: '/',
        routeExtras: 'headers: {response: {set: {X-Route-Set: on}, add: {X-Route-Add: on}}}',
      }),
    });
    port = gw.port(80);
  });
  after(async () => {
    await gw?.stop();
    upstream?.closeAllConnections();
    await new Promise<void>((r) => upstream?.close(() => r()));
  });

  it('keep-alive HTTP/1.1: lower-case names, a date, no Connection or Keep-Alive header; the connection serves the next request', async () => {
    const c = new RawConnection(port);
    try {
      c.send('GET /plain HTTP/1.1\r\nHost: a.example\r\n\r\n');
      const first = await c.response();
      assert.equal(first.head[0], 'HTTP/1.1 200 OK');
      for (const n of names(first.head)) assert.equal(n, n.toLowerCase(), `header name ${n} in ${first.head.join(' | ')}`);
      assert.equal(value(first.head, 'date').length, 1, 'one date, added as the upstream sent none');
      assert.match(value(first.head, 'date')[0]!, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
      assert.deepEqual(value(first.head, 'connection'), []);
      assert.deepEqual(value(first.head, 'keep-alive'), []);
      assert.deepEqual(value(first.head, 'x-upstream-mixed-case'), ['yes']);
      assert.deepEqual(value(first.head, 'x-route-set'), ['on']);
      assert.deepEqual(value(first.head, 'x-route-add'), ['on']);
      assert.equal(first.body, 'ok');
      c.send('GET /plain HTTP/1.1\r\nHost: a.example\r\n\r\n');
      assert.equal((await c.response()).head[0], 'HTTP/1.1 200 OK', 'same connection, second request');
    } finally {
      c.destroy();
    }
  });

  it("the upstream's date is passed on, not doubled", async () => {
    const c = new RawConnection(port);
    try {
      c.send('GET /dated HTTP/1.1\r\nHost: a.example\r\n\r\n');
      const r = await c.response();
      assert.deepEqual(value(r.head, 'date'), ['Mon, 01 Jan 2024 00:00:00 GMT']);
      assert.ok(!r.head.some((l) => l.startsWith('Date:')), r.head.join(' | '));
    } finally {
      c.destroy();
    }
  });

  it('a chunked answer: transfer-encoding: chunked in lower case, body intact', async () => {
    const c = new RawConnection(port);
    try {
      c.send('GET /chunked HTTP/1.1\r\nHost: a.example\r\n\r\n');
      const r = await c.response();
      assert.deepEqual(value(r.head, 'transfer-encoding'), ['chunked']);
      assert.ok(!r.head.some((l) => /^Transfer-Encoding:/.test(l)), r.head.join(' | '));
      assert.deepEqual(value(r.head, 'content-type'), ['text/plain']);
      const text = r.body.split('\r\n').filter((_, i) => i % 2 === 1).join('');
      assert.equal(text, 'one two');
    } finally {
      c.destroy();
    }
  });

  it('Connection: close from the client gets connection: close, then the close', async () => {
    const c = new RawConnection(port);
    try {
      c.send('GET /plain HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
      const r = await c.response();
      assert.deepEqual(value(r.head, 'connection'), ['close']);
      assert.ok(await c.waitClosed(), 'closed');
    } finally {
      c.destroy();
    }
  });

  it('HTTP/1.0: connection: close by default; with keep-alive asked, connection: keep-alive and the connection stays', async () => {
    const plain = new RawConnection(port);
    try {
      plain.send('GET /plain HTTP/1.0\r\nHost: a.example\r\n\r\n');
      const r = await plain.response();
      assert.deepEqual(value(r.head, 'connection'), ['close']);
      assert.ok(await plain.waitClosed(), 'closed');
    } finally {
      plain.destroy();
    }
    const ka = new RawConnection(port);
    try {
      ka.send('GET /plain HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n');
      const r = await ka.response();
      assert.deepEqual(value(r.head, 'connection'), ['keep-alive']);
      assert.deepEqual(value(r.head, 'keep-alive'), []);
      ka.send('GET /plain HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n');
      assert.equal((await ka.response()).head[0], 'HTTP/1.1 200 OK', 'second request on the same connection');
    } finally {
      ka.destroy();
    }
  });

  it("the gateway's own replies too: a 400 from the router and one from the HTTP parser carry a lower-case date", async () => {
    const c = new RawConnection(port);
    try {
      c.send('GET /plain HTTP/1.1\r\nHost: [bad\r\n\r\n');
      const bad = await c.response();
      assert.match(bad.head[0]!, /^HTTP\/1\.1 400 /);
      assert.equal(value(bad.head, 'date').length, 1, bad.head.join(' | '));
      for (const n of names(bad.head)) assert.equal(n, n.toLowerCase(), `header name ${n}`);
    } finally {
      c.destroy();
    }
    const raw = new RawConnection(port);
    try {
      raw.send('GET /plain HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n');
      const r = await raw.response();
      assert.match(r.head[0]!, /^HTTP\/1\.1 400 /);
      assert.equal(value(r.head, 'date').length, 1, r.head.join(' | '));
      assert.deepEqual(value(r.head, 'connection'), ['close']);
    } finally {
      raw.destroy();
    }
  });
});
