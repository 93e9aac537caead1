// %BYTES_RECEIVED% (and istio_request_bytes) count the body bytes that arrived, as Envoy counts them,
// not the bytes a Content-Length announced: an upload the client abandons is logged with what it sent.
// A request cut short by the client's FIN is logged once (DC) and never answered 400 after it.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { listenLoopback, portOf, waitFor } from '../helpers/upstream';
import { singleRouteYaml } from '../../src/sample/configs';

describe('bytes received of an abandoned upload', function () {
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
    gw = await startGateway({ 'routes.yaml': singleRouteYaml({ upstreamPort: portOf(upstream) }) });
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

  it('a streamed body (larger than a retry keeps), reset: the bytes the upstream got, not the Content-Length', async () => {
    const line = await abandon('/streamed', 1_000_000, 100_000, () => arrived.get('/streamed') === 100_000);
    assert.equal(bytesReceived(line), 100_000, line);
  });

  it('a small body, read whole before it is sent (retries replay it), cut short by a FIN: the bytes that came, one line, no 400', async () => {
    answered = '';
    const line = await abandon('/small', 5000, 3000);
    assert.equal(bytesReceived(line), 3000, line);
    assert.equal(arrived.get('/small'), undefined);
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

  it('the same in istio_request_bytes: the head and the bytes that came', async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.app.ports.metrics}/stats/prometheus`)).text();
    const sums = [...text.matchAll(/^istio_request_bytes_sum\{[^}]*response_code="0"[^}]*\} (\d+)$/gm)].map((m) => Number(m[1]));
    assert.equal(sums.length, 1, text);
    assert.ok(sums[0]! > 103_000 && sums[0]! < 104_000, `istio_request_bytes_sum ${sums[0]} (100 000 + 3000 body bytes and two heads)`);
  });
});
