import assert from 'node:assert/strict';
import net from 'node:net';
import { startTcpEcho, type TcpEchoServer } from '../../../src/sample/tcp-echo';

/** Connect, write the parts (one write each, with a pause between), half-close, read until the server ends. */
function exchange(port: number, parts: readonly (string | Buffer)[]): Promise<{ reply: string; raw: Buffer; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    let ended = false;
    sock.on('data', (c: Buffer) => got.push(c));
    sock.on('end', () => {
      ended = true;
      sock.end();
    });
    sock.on('close', () => {
      const raw = Buffer.concat(got);
      resolve({ reply: raw.toString(), raw, ended });
    });
    sock.on('error', reject);
    sock.once('connect', async () => {
      for (const p of parts) {
        sock.write(p);
        await new Promise((r) => setTimeout(r, 20));
      }
      sock.end();
    });
  });
}

describe('sample tcp-echo', () => {
  let echo: TcpEchoServer;
  before(async () => {
    echo = await startTcpEcho({ prefix: 'one' });
  });
  after(() => echo.close());

  it('answers every line with the prefix', async () => {
    const r = await exchange(echo.port, ['hello\nwor', 'ld\n', 'a\nb\n']);
    assert.equal(r.reply, 'one hello\none world\none a\none b\n');
  });

  it('after the client half-closes, still answers (a last unterminated line too), then ends', async () => {
    const r = await exchange(echo.port, ['first\nlast without newline']);
    assert.equal(r.reply, 'one first\none last without newline\n');
    assert.equal(r.ended, true);
  });

  it('keeps a multi-byte character split across writes whole', async () => {
    const bytes = Buffer.from('caf\u00e9\n');
    const r = await exchange(echo.port, [bytes.subarray(0, 4), bytes.subarray(4)]);
    assert.equal(r.reply, 'one caf\u00e9\n');
  });

  it('echoes the bytes as they came, whatever they are (Istio\'s sample does not decode)', async () => {
    const line = Buffer.from([0x66, 0xff, 0xfe, 0x80, 0xc3, 0x00, 0x0d, 0x0a]); // not UTF-8, a NUL, CRLF
    const r = await exchange(echo.port, [line.subarray(0, 5), line.subarray(5), Buffer.from([0xe9])]);
    assert.deepEqual(r.raw, Buffer.concat([Buffer.from('one '), line, Buffer.from('one '), Buffer.from([0xe9, 0x0a])]));
  });

  it('a client that does not read pauses reading, with one drain listener at most', async () => {
    const own = await startTcpEcho({ prefix: 'one' });
    const watched = new Promise<net.Socket>((r) => own.server.once('connection', r));
    const sock = net.connect({ port: own.port, host: '127.0.0.1', allowHalfOpen: true });
    sock.on('error', () => {});
    sock.pause(); // read nothing for now
    try {
      const line = `${'x'.repeat(99)}\n`;
      const lines = 100_000; // ~10 MB of replies: more than the socket buffers take
      sock.write(line.repeat(lines));
      sock.end();
      const server = await watched;
      let most = 0;
      const started = Date.now();
      while (Date.now() - started < 1000) {
        most = Math.max(most, server.listenerCount('drain'));
        await new Promise((r) => setImmediate(r));
      }
      assert.ok(most <= 1, `${most} drain listeners`);
      assert.equal(server.isPaused(), true);
      let got = 0;
      sock.on('data', (c: Buffer) => void (got += c.length));
      sock.resume();
      await new Promise((r) => sock.once('end', r));
      assert.equal(got, lines * ('one '.length + line.length));
    } finally {
      sock.destroy();
      await own.close();
    }
  });

  it('answers a client that only sends, once it reads: nothing lost to backpressure', async () => {
    const lines = 50_000;
    const payload = Array.from({ length: lines }, (_, i) => `line ${i}\n`).join('');
    const r = await exchange(echo.port, [payload]);
    const got = r.reply.split('\n');
    assert.equal(got.length, lines + 1);
    assert.equal(got[0], 'one line 0');
    assert.equal(got[lines - 1], `one line ${lines - 1}`);
  });

  it('close() also ends open connections', async () => {
    const own = await startTcpEcho({ prefix: 'two' });
    const sock = net.connect(own.port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise((r) => sock.once('connect', r));
    const closed = new Promise((r) => sock.once('close', r));
    await own.close();
    await closed;
  });
});
