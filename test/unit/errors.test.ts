import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { retryableError } from '../../src/gateway/http/proxy';
import { asError, ERRORS, fromUpstreamError, GatewayError } from '../../src/errors';

describe('error catalogue', () => {
  it('docs/errors.md lists every code with the same status, flag, details and body', () => {
    const doc = fs.readFileSync(path.resolve(__dirname, '../../../docs/errors.md'), 'utf8');
    const rows = new Map<string, string[]>();
    for (const line of doc.split('\n')) {
      const cells = line.split(' | ').map((c) => c.replace(/^\| |\|$/g, '').trim());
      if (cells.length >= 8 && /^[A-Z_]+$/.test(cells[0]!)) rows.set(cells[0]!, cells);
    }
    assert.deepEqual([...rows.keys()].sort(), Object.keys(ERRORS).sort());
    for (const [code, spec] of Object.entries(ERRORS)) {
      const c = rows.get(code)!;
      assert.equal(Number(c[1]), spec.status, code);
      assert.equal(c[2], spec.flag, code);
      assert.equal(c[3], `\`${spec.details}\``, code);
      assert.equal(c[4], spec.body ? `\`${spec.body}\`` : '(empty)', code);
    }
  });

  const mapped: [unknown, string][] = [
    [Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), 'CONNECT_FAILURE'],
    [Object.assign(new Error('t'), { code: 'UND_ERR_CONNECT_TIMEOUT' }), 'CONNECT_TIMEOUT'],
    [Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }), 'UPSTREAM_RESET'],
    [Object.assign(new Error('bad'), { code: 'HPE_INVALID_CONSTANT' }), 'UPSTREAM_PROTOCOL_ERROR'],
    [Object.assign(new Error('refused stream'), { code: 'UND_ERR_REFUSED_STREAM' }), 'UPSTREAM_REFUSED_STREAM'],
    [Object.assign(new Error('rst'), { code: 'UND_ERR_H2_RESET' }), 'UPSTREAM_REMOTE_RESET'],
    [Object.assign(new Error('malformed'), { code: 'ERR_H2_MALFORMED' }), 'UPSTREAM_PROTOCOL_ERROR'], // our HTTP/2 client: 502 UPE
    [Object.assign(new Error('alpn'), { code: 'ERR_H2_ALPN' }), 'CONNECT_FAILURE'], // a mesh peer that would not speak h2: 503 UF
    [new Error('mystery'), 'UPSTREAM_RESET'],
    [new GatewayError('OVERFLOW'), 'OVERFLOW'],
  ];
  for (const [err, code] of mapped) {
    it(`maps ${(err as { code?: string }).code ?? (err as Error).message} to ${code}`, () => {
      const g = fromUpstreamError(err);
      assert.equal(g.code, code);
      if (!(err instanceof GatewayError)) assert.equal(g.cause, err);
    });
  }

  it('a refused HTTP/2 stream is retried under refused-stream only; a remote reset under reset', () => {
    const policy = (retryOn: string) => ({ retryOn: retryOn.split(','), attempts: 2, perTryTimeoutMs: 0, retriableStatusCodes: [] }) as unknown as Parameters<typeof retryableError>[1];
    assert.equal(retryableError('UPSTREAM_REFUSED_STREAM', policy('connect-failure,refused-stream')), true);
    assert.equal(retryableError('UPSTREAM_REFUSED_STREAM', policy('connect-failure,reset')), false);
    assert.equal(retryableError('UPSTREAM_REMOTE_RESET', policy('reset')), true);
    assert.equal(retryableError('UPSTREAM_REMOTE_RESET', policy('connect-failure,refused-stream')), false);
  });

  it('asError: an Error as it is; any other thrown value as an Error with its text', () => {
    const e = new TypeError('boom');
    assert.equal(asError(e), e);
    for (const [thrown, message] of [['a string', 'a string'], [undefined, 'undefined'], [null, 'null'], [42, '42'], [{ code: 'X' }, '[object Object]']] as const) {
      const got = asError(thrown);
      assert.ok(got instanceof Error);
      assert.equal(got.message, message);
    }
  });
});
