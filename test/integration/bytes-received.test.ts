// %BYTES_RECEIVED% (and istio_request_bytes) count the body bytes that arrived, as Envoy counts them,
// not the bytes a Content-Length announced: an upload the client abandons is logged with what it sent.
// A request cut short by the client's FIN is logged once (DC) and never answered 400 after it. A body
// nobody reads (a local reply) counts what came, whichever parser read the request.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { listenLoopback, portOf, rawHttp, waitFor } from '../helpers/upstream';
import { singleRouteYaml } from '../../src/sample/configs';

describe('bytes received: abandoned uploads and bodies nobody reads', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  let upstream: http.Server;
  /** Body bytes the upstream has read, per path. */
  const arrived = new Map<string, number>();

  before(async () => {
    // Reads bodies and never answers: the client gives up first.
    upstream = http.createServer((req) => {
      req.on('data', (c: Buffer) => arrived.set(req.url!, (arrived.get(req.url!) ?? 0) + c.length));
      req.on('error', () => {});
    });
    await listenLoopback(upstream);
    // Under /up to the upstream; anything else is answered 404 NR by the gateway itself.
    gw = await startGateway({ 'routes.yaml': singleRouteYaml({ upstreamPort: portOf(upstream), prefix: '/up' }) });
  });
  after(async () => {
    await gw?.stop();
    upstream?.closeAllConnections();
    upstream?.close();
  });

  /**
   * POST `path` announcing `length` bytes and send `sent` of them; then either reset the connection
   * once `ready` holds, or close it (a FIN comes after the bytes, so they are read first).
   */
  async function abandon(path: string, length: number, sent: number, ready?: () => boolean): Promise<string> {
    const s = net.connect(gw.port(80), '127.0.0.1');
    s.on('error', () => {});
    s.on('data', (b: Buffer) => (answered += b.toString('latin1')));
    await new Promise((r) => s.once('connect', r));
    clientPort = s.localPort!;
    s.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${length}\r\n\r\n`);
    if (ready) {
      s.write(Buffer.alloc(sent, 120));
      await waitFor(ready, { timeoutMs: 5000 });
      s.resetAndDestroy();
    } else {
      s.end(Buffer.alloc(sent, 120));
    }
    return gw.waitForLine(new RegExp(`"POST ${path} HTTP/1\\.1" 0 DC downstream_remote_disconnect `));
  }

  /** What the last abandoning client was answered, and its port. */
  let answered = '';
  let clientPort = 0;

  /** %BYTES_RECEIVED% of a line in Istio's default format. */
  const bytesReceived = (line: string) => Number(/ "-" (\d+) \d+ \d+ /.exec(line)?.[1]);

  /** istio_request_bytes_sum of the requests logged with response code 0 (abandoned): head and body bytes. */
  async function abandonedRequestBytes(): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${gw.app.ports.metrics}/stats/prometheus`)).text();
    return Number(/^istio_request_bytes_sum\{[^}]*response_code="0"[^}]*\} (\d+)$/m.exec(text)?.[1] ?? 0);
  }

  it('a streamed body (larger than a retry keeps), reset: the bytes the upstream got, not the Content-Length; the metric too', async () => {
    const before = await abandonedRequestBytes();
    const line = await abandon('/up/streamed', 1_000_000, 100_000, () => arrived.get('/up/streamed') === 100_000);
    assert.equal(bytesReceived(line), 100_000, line);
    const added = (await abandonedRequestBytes()) - before;
    assert.ok(added > 100_000 && added < 100_500, `istio_request_bytes_sum grew by ${added} (100 000 body bytes and a head)`);
  });

  it('a small body, read whole before it is sent (retries replay it), cut short by a FIN: the bytes that came, one line, no 400', async () => {
    answered = '';
    const before = await abandonedRequestBytes();
    const line = await abandon('/up/small', 5000, 3000);
    assert.equal(bytesReceived(line), 3000, line);
    assert.equal(arrived.get('/up/small'), undefined);
    const added = (await abandonedRequestBytes()) - before;
    assert.ok(added > 3000 && added < 3500, `istio_request_bytes_sum grew by ${added} (3000 body bytes and a head)`);
    // node:http's parser reports the FIN inside the body as an error too: it is not answered 400
    // (the client is gone) nor logged a second time as a 400 DPE of its own.
    await new Promise((r) => setTimeout(r, 400)); // past the access log's flush (250 ms)
    assert.deepEqual(gw.accessLines().filter((l) => l.includes(` 127.0.0.1:${clientPort} `)), [line]);
    assert.equal(answered, '');
  });

  it('half a head and a FIN: closed without an answer', async () => {
    const s = net.connect(gw.port(80), '127.0.0.1');
    let got = '';
    s.on('data', (b: Buffer) => (got += b.toString('latin1')));
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    s.end('GET /half HTTP/1.1\r\nHost: a\r\nX-');
    await new Promise((r) => s.once('close', r));
    assert.equal(got, '');
  });

  it('a body the gateway answers itself (404): the bytes that came, read by the lane or by node:http alike', async () => {
    const body = 'x'.repeat(100);
    // Content-Length: the lane reads it whole with the head; chunked: node:http reads it.
    const lane = await rawHttp(gw.port(80), `POST /lane HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 100\r\n\r\n${body}`, { timeoutMs: 3000 });
    const node = await rawHttp(gw.port(80), `POST /node HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n${body}\r\n0\r\n\r\n`, { timeoutMs: 3000 });
    for (const answer of [lane, node]) assert.match(answer, /^HTTP\/1\.1 404 Not Found\r\n/);
    for (const path of ['/lane', '/node']) {
      const line = await gw.waitForLine(new RegExp(`"POST ${path} HTTP/1\\.1" 404 NR route_not_found `));
      assert.equal(bytesReceived(line), 100, line);
    }
  });
});
