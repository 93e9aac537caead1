import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { AccessLog, checkFormat, inspectFormat, compileTextFormat, formatterFor, ISTIO_TEXT_FORMAT, type AccessRecord } from '../../../src/telemetry/access-log';

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
    assert.equal(obj['response_flags'], '-'); // Envoy's RESPONSE_FLAGS is "-" when there are none, in JSON too
    assert.equal(obj['requested_server_name'], null);
  });

  it('a user TEXT format gets a newline and REQ(a?b) falls back', () => {
    const f = formatterFor({ file: 'x', encoding: 'TEXT', format: '%REQ(X-MISSING?USER-AGENT)% %REQ(X-MISSING)%' });
    assert.equal(f(rec), 'curl/7.87.0-DEV -\n');
  });

  const v6: AccessRecord = {
    ...rec, path: '/a/b?x=1&y=2', requestHeaders: { ...rec.requestHeaders, 'x-envoy-original-path': '/orig?q' },
    upstreamHost: '[2001:db8::5]:8080', upstreamLocalAddress: '[fd00::16]:55636',
    downstreamLocalAddress: '[::1]:8080', downstreamRemoteAddress: '[::1]:59224',
  };
  const textCases: [string, AccessRecord, string][] = [
    // Length limits: the value cut to N characters (REQ, RESP, REQ_WITHOUT_QUERY).
    ['%REQ(USER-AGENT):4%', rec, 'curl'],
    ['%REQ(X-MISSING?USER-AGENT):6%', rec, 'curl/7'],
    ['%REQ(USER-AGENT):100%', rec, 'curl/7.87.0-DEV'],
    ['%REQ(X-MISSING):3%', rec, '-'],
    ['%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME):1%', { ...rec, responseHeaders: { 'x-envoy-upstream-service-time': '25' } }, '2'],
    // START_TIME with an strftime-style format, in UTC.
    ['%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%', rec, '2024-01-09T15:35:47.283Z'],
    ['%START_TIME(%Y/%m/%d %H:%M:%S %z)%', rec, '2024/01/09 15:35:47 +0000'],
    ['%START_TIME(%s)%', rec, '1704814547'],
    ['%START_TIME(%s.%3f)%', rec, '1704814547.283'],
    ['%START_TIME(%6f %9f %f %1f)%', rec, '283000 283000000 283000000 2'],
    ['%START_TIME(%F %T)%', rec, '2024-01-09 15:35:47'],
    ['%START_TIME(%E3S)%', rec, '47.283'],
    ['%START_TIME(100%%)%', rec, '100%'],
    ['%START_TIME(%Y-%m-%dT%H:%M:%S)%', { ...rec, startTime: Date.parse('1999-12-31T23:59:59.999Z') }, '1999-12-31T23:59:59'],
    ['[%START_TIME%]', rec, '[2024-01-09T15:35:47.283Z]'],
    // Operators the record has the data for.
    ['%RESPONSE_DURATION%', { ...rec, responseDurationMs: 1 }, '1'],
    ['%RESPONSE_DURATION%', rec, '-'],
    ['%UPSTREAM_REMOTE_ADDRESS%', rec, '151.101.195.5:80'],
    ['%REQ_WITHOUT_QUERY(:PATH)%', v6, '/a/b'],
    ['%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%', v6, '/orig'],
    ['%REQ_WITHOUT_QUERY(:PATH):3%', v6, '/a/'],
    ['%REQ_WITHOUT_QUERY(X-MISSING)%', v6, '-'],
    ['%DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_LOCAL_PORT% %UPSTREAM_REMOTE_PORT% %UPSTREAM_LOCAL_PORT%', rec, '59224 80 80 55636'],
    ['%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%', rec, '172.30.239.55:59224'],
    ['%HOSTNAME%', rec, os.hostname()],
    ['%ENVIRONMENT(MESHGATE_TEST_ENV)% %ENVIRONMENT(MESHGATE_TEST_ENV):3% %ENVIRONMENT(MESHGATE_NO_SUCH_ENV)%', rec, 'value val -'],
    // *_WITHOUT_PORT: no brackets around an IPv6 address, as Envoy.
    ['%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%', rec, '172.30.239.55'],
    ['%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%', v6, '::1'],
    ['%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%', v6, '::1 2001:db8::5 fd00::16'],
    ['%DOWNSTREAM_REMOTE_PORT% %UPSTREAM_REMOTE_PORT%', v6, '59224 8080'],
    ['%DOWNSTREAM_REMOTE_ADDRESS% %UPSTREAM_HOST%', v6, '[::1]:59224 [2001:db8::5]:8080'],
    // `%%` is a literal percent sign.
    ['100%% %RESPONSE_CODE%', rec, '100% 301'],
  ];
  for (const [format, r, want] of textCases) {
    it(`TEXT ${format} -> ${JSON.stringify(want)}`, () => {
      process.env['MESHGATE_TEST_ENV'] = 'value';
      try {
        assert.equal(compileTextFormat(format)(r), want);
      } finally {
        delete process.env['MESHGATE_TEST_ENV'];
      }
    });
  }

  // Unknown operators are warnings (meshgate's list of Envoy's may lag): never a refused config.
  const unknownCases: [string, 'TEXT' | 'JSON', RegExp[]][] = [
    ['%UNKNOWN_OPERATOR%', 'TEXT', [/unknown operator %UNKNOWN_OPERATOR% at position 0: logged as -/]],
    ['a %RESPONSE_CODE% %RESPONSE_CODES%', 'TEXT', [/unknown operator %RESPONSE_CODES% at position 18/]],
    ['%UNKNOWN_A% %UNKNOWN_B%', 'TEXT', [/%UNKNOWN_A%/, /%UNKNOWN_B%/]],
    ['{"a":"%RESPONSE_CODE%","b":{"c":"%NOPE%"}}', 'JSON', [/b\.c: unknown operator %NOPE%/]],
  ];
  for (const [format, encoding, want] of unknownCases) {
    it(`inspectFormat ${encoding} ${JSON.stringify(format).slice(0, 60)} -> ${want.length} warning(s), no error`, () => {
      const { errors, warnings } = inspectFormat(format, encoding);
      assert.deepEqual(errors, []);
      assert.equal(warnings.length, want.length, warnings.join('\n'));
      want.forEach((re, i) => assert.match(warnings[i]!, re));
    });
  }

  const problemCases: [string, 'TEXT' | 'JSON', RegExp[]][] = [
    ['', 'TEXT', []],
    [ISTIO_TEXT_FORMAT, 'TEXT', []],
    ['%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)% %REQ(USER-AGENT):10% %REQ_WITHOUT_QUERY(:PATH)% %RESPONSE_DURATION% 100%%', 'TEXT', []],
    ['%REQ%', 'TEXT', [/%REQ% needs a header/]],
    ['%REQ(A?B?C)%', 'TEXT', [/more than one alternative/]],
    ['%PROTOCOL(x)%', 'TEXT', [/%PROTOCOL\(x\)% takes no parameter/]],
    ['%PROTOCOL%:3', 'TEXT', []], // ":3" outside the percent signs is text
    ['%PROTOCOL:3%', 'TEXT', [/%PROTOCOL:3% does not allow a length/]],
    ['%START_TIME(%Q)%', 'TEXT', [/START_TIME: %Q is not supported/]],
    ['100% done', 'TEXT', [/"%" at position 3 does not start an operator/]],
    ['{"a":"%UPSTREAM_HOST% via %UPSTREAM_CLUSTER%","n":7}', 'JSON', []],
  ];
  for (const [format, encoding, want] of problemCases) {
    it(`checkFormat ${encoding} ${JSON.stringify(format).slice(0, 60)} -> ${want.length} problem(s)`, () => {
      const got = checkFormat(format, encoding);
      assert.equal(got.length, want.length, got.join('\n'));
      want.forEach((re, i) => assert.match(got[i]!, re));
    });
  }

  it('a custom JSON format fills in text mixed with operators and plain text; a lone operator keeps its type', () => {
    const f = formatterFor({
      file: 'x', encoding: 'JSON',
      format: '{"via":"%UPSTREAM_HOST% via %UPSTREAM_CLUSTER%","static":"static","code":"%RESPONSE_CODE%","flags":"%RESPONSE_FLAGS%",'
        + '"sni":"%REQUESTED_SERVER_NAME%","sni_text":"sni=%REQUESTED_SERVER_NAME%","nested":{"ua":"%REQ(USER-AGENT):4%"},"pct":"100%%"}',
    });
    assert.deepEqual(JSON.parse(f(rec)), {
      via: '151.101.195.5:80 via outbound|80||edition.cnn.com', static: 'static', code: 301, flags: '-',
      sni: null, sni_text: 'sni=-', nested: { ua: 'curl' }, pct: '100%',
    });
    assert.equal(JSON.parse(f({ ...rec, responseFlags: ['UF', 'URX'] })).flags, 'UF,URX');
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

  it('is enabled only with a file it could open (callers skip work for a log that writes nothing)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-al-enabled-'));
    const open = new AccessLog({ file: path.join(dir, 'a.log'), encoding: 'TEXT', format: '' });
    const unopenable = new AccessLog({ file: '/etc/hostname/not-a-dir/access.log', encoding: 'TEXT', format: '' });
    assert.deepEqual([new AccessLog().enabled, new AccessLog({ file: '', encoding: 'TEXT', format: '' }).enabled, unopenable.enabled, open.enabled], [false, false, false, true]);
    await open.close();
    fs.rmSync(dir, { recursive: true, force: true });
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

  describe('lines made in batches (the records wait for the next flush or a batch of 64)', () => {
    let dir: string;
    beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-al-')); });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
    const lines = (file: string) => fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');

    it('every record gets its line, in the order logged, across batches and the last partial one', async () => {
      const file = path.join(dir, 'a.log');
      const log = new AccessLog({ file, encoding: 'TEXT', format: '%REQ(:PATH)%' });
      for (let i = 0; i < 150; i++) log.write({ ...rec, path: `/${i}` });
      assert.equal(await log.close(2000), true);
      assert.deepEqual(lines(file), Array.from({ length: 150 }, (_, i) => `/${i}`));
    });

    it('lines reach the file on their own within the flush delay, also those logged after a flush', async () => {
      const file = path.join(dir, 'a.log');
      const log = new AccessLog({ file, encoding: 'TEXT', format: '%REQ(:PATH)%' });
      const { waitFor } = await import('../../helpers/upstream');
      log.write({ ...rec, path: '/1' });
      await waitFor(() => lines(file).length === 1, { timeoutMs: 2000 });
      await new Promise((r) => setTimeout(r, 400)); // the timer that wrote /1 is long gone
      log.write({ ...rec, path: '/2' });
      log.write({ ...rec, path: '/3' });
      await waitFor(() => lines(file).length === 3, { timeoutMs: 2000 });
      assert.deepEqual(lines(file), ['/1', '/2', '/3']);
      assert.equal(await log.close(2000), true);
    });

    it('a record is written in the format, and to the file, in effect when it was logged', async () => {
      const a = path.join(dir, 'a.log');
      const b = path.join(dir, 'b.log');
      const log = new AccessLog({ file: a, encoding: 'TEXT', format: 'one %REQ(:PATH)%' });
      log.write({ ...rec, path: '/1' });
      log.write({ ...rec, path: '/2' });
      log.configure({ file: a, encoding: 'TEXT', format: 'two %REQ(:PATH)%' });
      log.write({ ...rec, path: '/3' });
      log.configure({ file: b, encoding: 'TEXT', format: 'two %REQ(:PATH)%' });
      log.write({ ...rec, path: '/4' });
      assert.equal(await log.close(2000), true);
      assert.deepEqual(lines(a), ['one /1', 'one /2', 'two /3']);
      assert.deepEqual(lines(b), ['two /4']);
    });

    it('a record the formatter throws on costs its own line only', async () => {
      const file = path.join(dir, 'a.log');
      const log = new AccessLog({ file, encoding: 'TEXT', format: '%REQ(:PATH)% %REQ(USER-AGENT)%' });
      const poisoned = { ...rec, path: '/bad', requestHeaders: new Proxy({}, { get: () => { throw new Error('boom'); } }) };
      log.write({ ...rec, path: '/a' });
      log.write(poisoned);
      log.write({ ...rec, path: '/b' });
      assert.equal(await log.close(2000), true);
      assert.deepEqual(lines(file), ['/a curl/7.87.0-DEV', '/b curl/7.87.0-DEV']);
    });
  });
});

