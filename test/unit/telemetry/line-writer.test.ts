import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { LineWriter } from '../../../src/telemetry/line-writer';
import { Metrics } from '../../../src/telemetry/metrics';

function lines(n: number, tag: string): string[] {
  return Array.from({ length: n }, (_, i) => `${tag} line ${i} ${'x'.repeat(i % 97)} é\n`);
}

describe('LineWriter (access-log batching)', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-lw-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes every line, in order, in batches (UTF-8 intact)', async () => {
    const file = path.join(dir, 'a.log');
    const fd = fs.openSync(file, 'a');
    const w = new LineWriter(fd, { batchBytes: 4096, maxPendingBytes: 1 << 24, retryMs: 5 });
    const all = lines(5000, 'a');
    for (const l of all) w.write(l);
    // Below the threshold nothing is forced out until flush/drained.
    await w.close();
    fs.closeSync(fd);
    assert.equal(fs.readFileSync(file, 'utf8'), all.join(''));
    assert.equal(w.dropped, 0);
    assert.equal(w.errors, 0);
  });

  it('a line longer than a batch goes out in its turn, between the lines around it', async () => {
    const file = path.join(dir, 'long.log');
    const fd = fs.openSync(file, 'a');
    const w = new LineWriter(fd, { batchBytes: 256, maxPendingBytes: 1 << 24, retryMs: 5 });
    const all = [...lines(30, 'before'), `${'é'.repeat(1000)}\n`, ...lines(30, 'after')];
    for (const l of all) w.write(l);
    await w.close();
    fs.closeSync(fd);
    assert.equal(fs.readFileSync(file, 'utf8'), all.join(''));
  });

  it('holds a short tail until flush() and writes it then', async () => {
    const file = path.join(dir, 'b.log');
    const fd = fs.openSync(file, 'a');
    const w = new LineWriter(fd, { batchBytes: 1 << 20, maxPendingBytes: 1 << 24, retryMs: 5 });
    w.write('one\n');
    w.write('two\n');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(fs.readFileSync(file, 'utf8'), '', 'nothing written below the threshold');
    await w.drained();
    assert.equal(fs.readFileSync(file, 'utf8'), 'one\ntwo\n');
    fs.closeSync(fd);
  });

  it('a pipe nobody reads yet (EAGAIN) loses nothing: lines arrive in order once the reader starts', async function () {
    this.timeout(15_000);
    const out = path.join(dir, 'c.log');
    // The child's stdin is a non-blocking pipe on our side; the reader starts after 400 ms, so the
    // 64 KiB pipe buffer fills and writes fail with EAGAIN until then.
    const child = spawn('sh', ['-c', `sleep 0.4; cat > ${JSON.stringify(out)}`], { stdio: ['pipe', 'ignore', 'ignore'] });
    const fd = (child.stdin as unknown as { _handle: { fd: number } })._handle.fd;
    assert.ok(fd > 2);
    const w = new LineWriter(fd, { batchBytes: 8192, maxPendingBytes: 1 << 24, retryMs: 5 });
    const all = lines(20_000, 'c'); // ~1.3 MB
    for (const l of all) w.write(l);
    await w.drained();
    child.stdin!.end();
    await new Promise((r) => child.once('exit', r));
    assert.equal(fs.readFileSync(out, 'utf8'), all.join(''));
    assert.equal(w.dropped, 0);
  });

  it('a file that does not keep up costs bounded memory: lines past maxPendingBytes are dropped and counted', async function () {
    this.timeout(15_000);
    const out = path.join(dir, 'd.log');
    const child = spawn('sh', ['-c', `sleep 0.5; cat > ${JSON.stringify(out)}`], { stdio: ['pipe', 'ignore', 'ignore'] });
    const fd = (child.stdin as unknown as { _handle: { fd: number } })._handle.fd;
    const w = new LineWriter(fd, { batchBytes: 1024, maxPendingBytes: 64 * 1024, retryMs: 5 });
    // More than the pipe buffer plus maxPendingBytes, written at once while nobody reads.
    const all = lines(20_000, 'd');
    for (const l of all) w.write(l);
    assert.ok(w.dropped > 0, 'some lines were dropped');
    await w.drained();
    child.stdin!.end();
    await new Promise((r) => child.once('exit', r));
    const got = fs.readFileSync(out, 'utf8');
    // What arrived is exactly the accepted lines, whole and in their order.
    const arrived = got.split(/(?<=\n)/);
    assert.equal(arrived.length, all.length - w.dropped);
    let i = 0;
    for (const l of arrived) {
      while (i < all.length && all[i] !== l) i += 1;
      assert.ok(i < all.length, `line out of order or altered: ${JSON.stringify(l)}`);
      i += 1;
    }
  });

  it('a file that stalls while the timer keeps flushing holds whole batches, not a new buffer per flush', async function () {
    this.timeout(15_000);
    const out = path.join(dir, 'stall.log');
    const child = spawn('sh', ['-c', `sleep 1; cat > ${JSON.stringify(out)}`], { stdio: ['pipe', 'ignore', 'ignore'] });
    const fd = (child.stdin as unknown as { _handle: { fd: number } })._handle.fd;
    const w = new LineWriter(fd, { batchBytes: 64 * 1024, maxPendingBytes: 1 << 24, retryMs: 5 });
    const before = process.memoryUsage().arrayBuffers;
    // A light load against a stalled pipe: one short line per flush (the access log's timer), 3000 times.
    const all = lines(3000, 's');
    for (const l of all) {
      w.write(l);
      w.flush();
    }
    const grown = process.memoryUsage().arrayBuffers - before;
    // ~160 KB of lines: a few 64 KiB batches. One buffer per flush would be 3000 x 64 KiB (~190 MiB).
    assert.ok(grown < 8 * 1024 * 1024, `${(grown / 1048576).toFixed(1)} MiB of buffers held`);
    await w.drained();
    child.stdin!.end();
    await new Promise((r) => child.once('exit', r));
    assert.equal(fs.readFileSync(out, 'utf8'), all.join(''));
    assert.equal(w.dropped, 0);
  });

  it('a descriptor that fails counts errors and never throws', async () => {
    fs.writeFileSync(path.join(dir, 'e.log'), '');
    const fd = fs.openSync(path.join(dir, 'e.log'), 'r'); // read-only: writes fail with EBADF
    const w = new LineWriter(fd, { batchBytes: 10, maxPendingBytes: 1 << 20, retryMs: 5 });
    w.write('a line longer than ten\n');
    await w.drained();
    w.write('another line longer than ten\n');
    await w.drained();
    assert.equal(w.errors, 2);
    fs.closeSync(fd);
  });

  it('losses are scraped as meshgate_access_log_* counters', async () => {
    const m = new Metrics({ workload: 'w', namespace: 'n', labels: {} }, false);
    assert.match(await m.render(), /^meshgate_access_log_dropped_lines_total 0$/m);
    m.accessLogLosses = () => ({ dropped: 7, errors: 2 });
    const text = await m.render();
    assert.match(text, /^meshgate_access_log_dropped_lines_total 7$/m);
    assert.match(text, /^meshgate_access_log_write_errors_total 2$/m);
  });
});
