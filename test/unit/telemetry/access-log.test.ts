import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { AccessLog, compileTextFormat, formatterFor, ISTIO_TEXT_FORMAT, type AccessRecord } from '../../../src/telemetry/access-log';

const rec: AccessRecord = {
  startTime: Date.parse('2024-01-09T15:35:47.283Z'),
  method: 'GET', path: '/politics', protocol: 'HTTP/1.1', responseCode: 301, responseFlags: [],
  responseCodeDetails: 'via_upstream', bytesReceived: 0, bytesSent: 0, durationMs: 2, upstreamServiceTimeMs: 2,
  requestHeaders: { 'x-forwarded-for': '172.30.239.55', 'user-agent': 'curl/7.87.0-DEV', 'x-request-id': '6c01d65f-a157-97cd-8782-320a40026901' },
  responseHeaders: { 'x-envoy-upstream-service-time': '2' },
  authority: 'edition.cnn.com', upstreamHost: '151.101.195.5:80', upstreamCluster: 'outbound|80||edition.cnn.com',
  upstreamLocalAddress: '172.30.239.16:55636', downstreamLocalAddress: '172.30.239.16:80',
  downstreamRemoteAddress: '172.30.239.55:59224', routeName: 'default.forward-cnn-from-egress-gateway.0',
};

describe('access log formats', () => {
  it('renders Istio\'s default TEXT format field for field (istio.io egress-gateway line)', () => {
    assert.equal(compileTextFormat(ISTIO_TEXT_FORMAT)(rec),
      '[2024-01-09T15:35:47.283Z] "GET /politics HTTP/1.1" 301 - via_upstream - "-" 0 0 2 2 "172.30.239.55" "curl/7.87.0-DEV" '
      + '"6c01d65f-a157-97cd-8782-320a40026901" "edition.cnn.com" "151.101.195.5:80" outbound|80||edition.cnn.com '
      + '172.30.239.16:55636 172.30.239.16:80 172.30.239.55:59224 - default.forward-cnn-from-egress-gateway.0\n');
  });

  it('renders a 404 NR local reply with dashes for what is absent', () => {
    const nr: AccessRecord = {
      startTime: 0, method: 'GET', path: '/', protocol: 'HTTP/1.1', responseCode: 404, responseFlags: ['NR'],
      responseCodeDetails: 'route_not_found', bytesReceived: 0, bytesSent: 0, durationMs: 0,
      requestHeaders: { 'x-forwarded-for': '10.244.0.1', 'user-agent': 'curl/8.5.0', 'x-request-id': 'id' },
      authority: 'notes.example', downstreamLocalAddress: '10.244.0.218:443', downstreamRemoteAddress: '10.244.0.1:17789',
    };
    assert.equal(compileTextFormat(ISTIO_TEXT_FORMAT)(nr),
      '[1970-01-01T00:00:00.000Z] "GET / HTTP/1.1" 404 NR route_not_found - "-" 0 0 0 - "10.244.0.1" "curl/8.5.0" "id" '
      + '"notes.example" "-" - - 10.244.0.218:443 10.244.0.1:17789 - -\n');
  });

  it('joins several flags with commas', () => {
    assert.equal(compileTextFormat('%RESPONSE_FLAGS%')({ ...rec, responseFlags: ['UF', 'URX'] }), 'UF,URX');
  });

  it('JSON encoding uses Istio\'s keys, numbers as numbers and null for absent values', () => {
    const line = formatterFor({ file: '/dev/stdout', encoding: 'JSON', format: '' })(rec);
    const obj = JSON.parse(line) as Record<string, unknown>;
    assert.equal(Object.keys(obj).length, 24);
    assert.equal(Object.keys(obj)[0], 'start_time');
    assert.equal(obj['response_code'], 301);
    assert.equal(obj['upstream_cluster'], 'outbound|80||edition.cnn.com');
    assert.equal(obj['response_flags'], null);
    assert.equal(obj['requested_server_name'], null);
  });

  it('a user TEXT format gets a newline and REQ(a?b) falls back', () => {
    const f = formatterFor({ file: 'x', encoding: 'TEXT', format: '%REQ(X-MISSING?USER-AGENT)% %UNKNOWN_OPERATOR%' });
    assert.equal(f(rec), 'curl/7.87.0-DEV -\n');
  });

  it('a user JSON format is an object of key to operator', () => {
    const f = formatterFor({ file: 'x', encoding: 'JSON', format: '{"code":"%RESPONSE_CODE%","who":"%REQ(USER-AGENT)%"}' });
    assert.deepEqual(JSON.parse(f(rec)), { code: 301, who: 'curl/7.87.0-DEV' });
  });

  it('an access log file that cannot be opened is no access log, and the process still exits cleanly (regression: pino\'s exit hook threw "sonic boom is not ready yet")', () => {
    const mod = path.resolve(__dirname, '../../../src/telemetry/access-log.js');
    const script = `const { AccessLog } = require(${JSON.stringify(mod)});
const a = new AccessLog({ file: '/etc/hostname/not-a-dir/access.log', encoding: 'TEXT', format: '' });
a.write({});
setTimeout(() => { a.close(); process.exit(0); }, 50);`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0);
  });

  it('lost lines stay counted when accessLogFile changes (the metrics are counters)', async function () {
    if (!fs.existsSync('/dev/full')) this.skip();
    // /dev/full fails every write with ENOSPC.
    const log = new AccessLog({ file: '/dev/full', encoding: 'TEXT', format: '' });
    log.write(rec);
    const { waitFor } = await import('../../helpers/upstream');
    await waitFor(() => { log.flush(); return log.losses.errors === 1; }, { timeoutMs: 3000 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-al-'));
    try {
      log.configure({ file: path.join(dir, 'access.log'), encoding: 'TEXT', format: '' });
      log.write(rec);
      assert.deepEqual(log.losses, { dropped: 0, errors: 1 });
      await log.close();
      assert.match(fs.readFileSync(path.join(dir, 'access.log'), 'utf8'), /"GET \/politics HTTP\/1\.1" 301 /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('close() gives up after its time limit when the file does not take the last lines (a pipe nobody reads)', async function () {
    if (spawnSync('sh', ['-c', 'command -v mkfifo']).status !== 0) this.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-al-'));
    const fifo = path.join(dir, 'pipe');
    spawnSync('mkfifo', [fifo]);
    // A reader that never reads (non-blocking, so opening it does not wait for a writer).
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const log = new AccessLog({ file: fifo, encoding: 'TEXT', format: '%REQ(X-PAD)%' });
    try {
      const padded = { ...rec, requestHeaders: { 'x-pad': 'p'.repeat(1023) } };
      for (let i = 0; i < 100; i++) log.write(padded); // 100 KiB: more than the 64 KiB pipe holds
      log.flush();
      const t0 = Date.now();
      assert.equal(await log.close(300), false);
      const took = Date.now() - t0;
      assert.ok(took >= 280 && took < 2000, `close took ${took} ms`);
    } finally {
      // Read everything so the write blocked in the thread pool finishes, then clean up.
      const buf = Buffer.alloc(65536);
      let quiet = 0;
      while (quiet < 10) {
        let n = 0;
        try { n = fs.readSync(reader, buf); } catch { n = 0; }
        quiet = n > 0 ? 0 : quiet + 1;
        await new Promise((r) => setTimeout(r, 20));
      }
      fs.closeSync(reader);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('close() reports true when everything got out', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-al-'));
    try {
      const log = new AccessLog({ file: path.join(dir, 'a.log'), encoding: 'TEXT', format: '' });
      log.write(rec);
      assert.equal(await log.close(2000), true);
      assert.match(fs.readFileSync(path.join(dir, 'a.log'), 'utf8'), /"GET \/politics HTTP\/1\.1" 301 /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
