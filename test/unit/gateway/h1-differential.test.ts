// Differential tests of our two HTTP/1.1 parsers against node:http's own (llhttp, strict): every
// request head the lane serves itself, and every response head the upstream pool accepts, must read
// the same way to llhttp: accepted, the same request line or status, the same headers, the same
// framing (where the message ends), the same keep-alive. A difference is a message that node:http
// and meshgate would split differently (request smuggling, response splitting), or one the lane
// serves that node:http would have refused. Seeded mutations of valid messages: a failure names its
// case and input, and reproduces.

import assert from 'node:assert/strict';
import { parseRequestHead, type ParsedHead } from '../../../src/gateway/http/h1-lane';
import { chunkSizeOf, parseResponseHead, type ResponseHead } from '../../../src/registry/h1-pool';
import { trimOws } from '../../../src/gateway/http/wire';
import { llhttpParse } from '../../helpers/llhttp';
import { mulberry32 } from '../../helpers/random';

/** Bytes that make parsers disagree: whitespace, line ends, separators, controls, obs-text. */
const SHARP = [' ', '\t', '\r', '\n', '\r\n', ':', ',', ';', '"', '\0', '\x01', '\x0b', '\x0c', '\x7f', '\x80', '\xa0', '\xff', '+', '-', '0', '9', 'a', 'Z', '/', '?', '#', '%', '\\'];

/** Whole lines worth inserting: framing, connection management, and near misses of both. */
const REQUEST_LINES = [
  'Content-Length: 5', 'Content-Length: 0', 'Content-Length: 5, 5', 'Content-Length: +5', 'Content-Length: 05', 'content-length:5',
  'Content-Length : 5', ' Content-Length: 5', 'Content-Length:\t5\t', 'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip, chunked',
  'Transfer-Encoding: chunked, identity', 'transfer-encoding:chunked', 'Connection: close', 'Connection: keep-alive', 'Connection: Upgrade',
  'Connection: close, upgrade', 'Upgrade: websocket', 'Expect: 100-continue', 'Host: b', 'host:', 'Host: a b', 'X-A: 1', 'X-A:', ' x',
  '\tX-A: 1', 'X-A: 1\r\n 2', 'X A: 1', ':x', 'X-A: a\x00b', 'X-A: caf\xe9', 'Keep-Alive: timeout=5', 'Proxy-Connection: close',
];

const REQUEST_BASES = [
  'GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n',
  'POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello',
  'PUT /x HTTP/1.1\r\nHost: a:8080\r\nConnection: close\r\nContent-Length: 0\r\n\r\n',
  'DELETE /d HTTP/1.1\r\nUser-Agent: curl/8.0\r\nHost: a\r\nX-Trace:  t1 \t\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\r\n',
];

/** One random edit of `text`: a sharp byte in, a byte out or changed, a line in, out or repeated, a case flip. */
function mutate(text: string, rand: () => number, lines: readonly string[]): string {
  const at = Math.floor(rand() * (text.length + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const lineStarts = [...text.matchAll(/\r\n/g)].map((m) => m.index! + 2).filter((i) => i < text.length);
  switch (Math.floor(rand() * 7)) {
    case 0: return text.slice(0, at) + pick(SHARP) + text.slice(at);
    case 1: return text.slice(0, at) + text.slice(at + 1);
    case 2: return text.slice(0, at) + pick(SHARP) + text.slice(at + 1);
    case 3: { // a whole line, at a line start
      const start = lineStarts.length > 0 ? pick(lineStarts) : text.length;
      return `${text.slice(0, start)}${pick(lines)}\r\n${text.slice(start)}`;
    }
    case 4: { // a line repeated
      if (lineStarts.length < 2) return text;
      const start = pick(lineStarts);
      const end = text.indexOf('\r\n', start);
      return end < 0 ? text : text.slice(0, start) + text.slice(start, end + 2) + text.slice(start);
    }
    case 5: { // a line removed
      if (lineStarts.length < 2) return text;
      const start = pick(lineStarts);
      const end = text.indexOf('\r\n', start);
      return end < 0 ? text : text.slice(0, start) + text.slice(end + 2);
    }
    default: { // an ASCII letter's case flipped
      const c = text[at] ?? '';
      if (!/[A-Za-z]/.test(c)) return text;
      const flipped = c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase();
      return text.slice(0, at) + flipped + text.slice(at + 1);
    }
  }
}

/** `text` after one to three random edits. */
function edited(text: string, rand: () => number, lines: readonly string[]): string {
  const edits = 1 + Math.floor(rand() * 3);
  for (let k = 0; k < edits; k++) text = mutate(text, rand, lines);
  return text;
}

/** Header names and values as node reports them (values without surrounding SP and HTAB). */
function pairs(raw: readonly string[]): string[] {
  return raw.map((s, i) => (i % 2 === 1 ? trimOws(s) : s));
}

/** Where the lane and llhttp disagree about `buf`, or undefined. */
function requestDisagreement(buf: Buffer, got: ParsedHead): string | undefined {
  const whole = llhttpParse('request', buf.subarray(0, got.length));
  if (whole.error) return `llhttp refuses what the lane serves: ${whole.error}`;
  if (!whole.complete) return `llhttp does not end the request at the lane's length ${got.length}`;
  const short = llhttpParse('request', buf.subarray(0, got.length - 1));
  if (short.complete) return 'llhttp ends the request before the lane does';
  if (whole.method !== got.method) return `method: llhttp ${whole.method}, lane ${got.method}`;
  if (whole.url !== got.url) return `target: llhttp ${JSON.stringify(whole.url)}, lane ${JSON.stringify(got.url)}`;
  if (whole.versionMinor !== 1) return `llhttp reads HTTP/1.${whole.versionMinor}`;
  if (whole.upgrade) return 'llhttp sees an upgrade';
  if (JSON.stringify(pairs(whole.rawHeaders)) !== JSON.stringify(got.rawHeaders)) {
    return `headers: llhttp ${JSON.stringify(whole.rawHeaders)}, lane ${JSON.stringify(got.rawHeaders)}`;
  }
  // The lane may close where llhttp keeps alive (`close` followed by a tab: OWS, as Envoy reads it),
  // never the other way.
  if (!whole.keepAlive && got.keepAlive) return 'keep-alive: llhttp closes, the lane keeps the connection';
  if (whole.bodyBytes !== (got.body?.length ?? 0)) return `body: llhttp ${whole.bodyBytes} bytes, lane ${got.body?.length ?? 0}`;
  return undefined;
}

describe('HTTP/1.1 lane against llhttp (node:http\'s parser)', () => {
  it('every base request is served by the lane and read alike by llhttp', () => {
    for (const text of REQUEST_BASES) {
      const buf = Buffer.from(text, 'latin1');
      const got = parseRequestHead(buf, 8192);
      assert.equal(typeof got, 'object', `the lane serves ${JSON.stringify(text)}`);
      assert.equal(requestDisagreement(buf, got as ParsedHead), undefined, JSON.stringify(text));
    }
  });

  it('seeded edits of valid requests (30000 cases): whatever the lane serves, llhttp reads the same way', () => {
    const rand = mulberry32(0x5eed_11);
    let served = 0;
    let refusedByLlhttp = 0;
    for (let i = 0; i < 30_000; i++) {
      const text = edited(REQUEST_BASES[i % REQUEST_BASES.length]!, rand, REQUEST_LINES);
      // A pipelined request after it: where the first one ends matters.
      const buf = Buffer.from(`${text}GET /next HTTP/1.1\r\nHost: a\r\n\r\n`, 'latin1');
      const got = parseRequestHead(buf, 8192);
      if (typeof got !== 'object') {
        if (llhttpParse('request', buf).error) refusedByLlhttp++;
        continue;
      }
      served++;
      const why = requestDisagreement(buf, got);
      assert.equal(why, undefined, `case ${i}: ${JSON.stringify(text)}`);
    }
    // The sample reaches both sides: many served, many that node:http itself refuses.
    assert.ok(served > 5_000, `served ${served}`);
    assert.ok(refusedByLlhttp > 5_000, `refused by llhttp ${refusedByLlhttp}`);
  });
});

const RESPONSE_LINES = [
  'Content-Length: 5', 'Content-Length: 0', 'Content-Length: 5, 5', 'Content-Length: +5', 'Content-Length: 05', 'content-length:5',
  'Content-Length : 5', 'Content-Length:\t5\t', 'Content-Length: 99999999999999999999', 'Transfer-Encoding: chunked',
  'Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: chunked, gzip', 'Transfer-Encoding: identity', 'transfer-encoding:chunked',
  'Connection: close', 'Connection: keep-alive', 'Connection: close, keep-alive', 'Keep-Alive: timeout=5', 'Keep-Alive: max=1',
  'Upgrade: h2c', 'X-A: 1', 'X-A:', ' x', '\tX-A: 1', 'X-A: 1\r\n 2', 'X A: 1', ':x', 'X-A: caf\xe9', 'Set-Cookie: a=1; Path=/',
];

const RESPONSE_BASES: { text: string; method: string }[] = [
  { text: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n', method: 'GET' },
  { text: 'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nServer: envoy\r\n\r\n', method: 'GET' },
  { text: 'HTTP/1.1 204 No Content\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\n\r\n', method: 'DELETE' },
  { text: 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n', method: 'GET' },
  { text: 'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nKeep-Alive: timeout=5\r\n\r\n', method: 'HEAD' },
  { text: 'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n', method: 'POST' },
  { text: 'HTTP/1.1 100 Continue\r\n\r\n', method: 'PUT' },
];

/** Where the pool and llhttp disagree about a response head `text` (with its blank line) answering `method`. */
function responseDisagreement(text: string, method: string, got: ResponseHead | 'interim'): string | undefined {
  const head = Buffer.from(`${text}\r\n\r\n`, 'latin1');
  const headRequest = method === 'HEAD';
  const parse = (body: string, eof = false) => llhttpParse('response', Buffer.concat([head, Buffer.from(body, 'latin1')]), { headRequest, eof });
  const alone = parse('');
  if (alone.error) return `llhttp refuses what the pool accepts: ${alone.error}`;
  if (!alone.headEnd) return 'llhttp does not end the head where the pool does';
  if (got === 'interim') return alone.status !== undefined && alone.status >= 100 && alone.status < 200 && alone.status !== 101 ? undefined : `interim: llhttp status ${alone.status}`;
  if (alone.status !== got.status) return `status: llhttp ${alone.status}, pool ${got.status}`;
  if (alone.upgrade) return 'llhttp sees an upgrade';
  if (JSON.stringify(pairs(alone.rawHeaders)) !== JSON.stringify(got.rawHeaders)) {
    return `headers: llhttp ${JSON.stringify(alone.rawHeaders)}, pool ${JSON.stringify(got.rawHeaders)}`;
  }
  // llhttp decides keep-alive before it learns the response answers a HEAD: a head without a length
  // reads to it as a body to the close (so node's client drops the connection). A HEAD answer has no
  // body whatever its headers say (RFC 9112 6.3), so the pool reuses it; that case alone is exempt.
  const asGet = headRequest ? parseResponseHead(text, 'GET') : undefined;
  const headWithoutLength = typeof asGet === 'object' && !(asGet instanceof Error) && asGet.body === 'close';
  if (alone.keepAlive === false && !got.close && !headWithoutLength) return 'keep-alive: llhttp closes, the pool would reuse the connection';
  const body = got.body;
  if (body === 'none' || body === 0) {
    if (!alone.complete) return 'llhttp expects a body the pool does not read';
  } else if (typeof body === 'number') {
    const whole = parse('x'.repeat(body));
    const short = parse('x'.repeat(body - 1));
    if (!whole.complete || whole.bodyBytes !== body || short.complete) return `length: the pool reads ${body} bytes, llhttp ${whole.bodyBytes}`;
  } else if (body === 'chunked') {
    const chunks = parse('5\r\nhello\r\n0\r\n\r\n');
    if (chunks.error || !chunks.complete || chunks.bodyBytes !== 5) return `chunked: llhttp ${chunks.error ?? (chunks.complete ? `${chunks.bodyBytes} bytes` : 'not ended')}`;
  } else {
    const open = parse('abc');
    const closed = parse('abc', true);
    if (open.complete || closed.error || !closed.complete || closed.bodyBytes !== 3) return 'close-delimited: llhttp frames the body otherwise';
  }
  return undefined;
}

/** More than one Content-Length line in a head (when the pool accepted it, they agree). */
function repeatedLength(headText: string): boolean {
  return (headText.match(/\r\ncontent-length:/gi)?.length ?? 0) > 1;
}

describe('HTTP/1.1 upstream pool against llhttp (node:http\'s parser)', () => {
  it('keep-alive on HTTP/1.0: only a plain token keeps the connection (llhttp reads a tab after it as another token)', () => {
    const head = (text: string) => parseResponseHead(`HTTP/1.0 200 OK\r\n${text}\r\nContent-Length: 0`, 'GET') as ResponseHead;
    assert.equal(head('Connection: keep-alive').close, false);
    assert.equal(head('Connection:\tkeep-alive ').close, false);
    assert.equal(head('Connection: keep-alive\t').close, true);
    assert.equal(llhttpParse('response', Buffer.from('HTTP/1.0 200 OK\r\nConnection: keep-alive\t\r\nContent-Length: 0\r\n\r\n')).keepAlive, false);
    assert.equal(head('Connection: close, keep-alive').close, true, 'close wins, in any order');
    assert.equal(head('Connection: keep-alive, close').close, true);
  });

  it('a Content-Length repeated with one value is taken (llhttp refuses it); two values are refused', () => {
    const same = parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5', 'GET');
    assert.ok(!(same instanceof Error) && same !== 'interim' && same.body === 5);
    assert.equal(llhttpParse('response', Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello')).error, 'HPE_UNEXPECTED_CONTENT_LENGTH');
    assert.ok(parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6', 'GET') instanceof Error);
  });

  it('every base response is accepted by the pool and read alike by llhttp', () => {
    for (const { text, method } of RESPONSE_BASES) {
      const got = parseResponseHead(text.slice(0, -4), method);
      assert.ok(!(got instanceof Error), `the pool accepts ${JSON.stringify(text)}: ${got instanceof Error ? got.message : ''}`);
      assert.equal(responseDisagreement(text.slice(0, -4), method, got), undefined, JSON.stringify(text));
    }
  });

  it('seeded edits of valid responses (30000 cases): whatever the pool accepts, llhttp reads the same way', () => {
    const rand = mulberry32(0x5eed_22);
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 30_000; i++) {
      const base = RESPONSE_BASES[i % RESPONSE_BASES.length]!;
      const text = edited(base.text, rand, RESPONSE_LINES);
      // The pool parses what comes before the first blank line.
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) continue;
      const headText = text.slice(0, end);
      const got = parseResponseHead(headText, base.method);
      // One known, deliberate difference: the pool takes a Content-Length repeated with the same
      // value (RFC 9110 8.6 allows it; the framing is not in doubt), llhttp refuses any repeat.
      if (!(got instanceof Error) && repeatedLength(headText)) continue;
      if (got instanceof Error) {
        refused++;
        continue;
      }
      accepted++;
      assert.equal(responseDisagreement(headText, base.method, got), undefined, `case ${i}: ${JSON.stringify(headText)} (${base.method})`);
    }
    assert.ok(accepted > 5_000, `accepted ${accepted}`);
    assert.ok(refused > 5_000, `refused ${refused}`);
  });
});

describe('chunk-size lines against llhttp', () => {
  const CHUNK_SHARP = ['5', '0', 'a', 'F', 'g', ' ', '\t', ';', '=', '"', '\\', ',', '-', '+', 'x', '\x80', '\xff', 'ext', 'a=b', '"q"'];
  const llhttpChunk = (line: string, size: number) => llhttpParse('response', Buffer.from(
    `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${line}\r\n${'x'.repeat(size)}\r\n0\r\n\r\n`, 'latin1'));

  it('a table: sizes, extensions, and the whitespace llhttp refuses', () => {
    const cases: [string, number | undefined][] = [
      ['5', 5], ['1A', 26], ['00005', 5], ['5;name', 5], ['5;name=value', 5], ['5;a=b;c', 5], ['5;q="a \\" ;b"', 5],
      ['5 ', undefined], ['5\t', undefined], ['5 ;a', undefined], ['5; a', undefined], ['5;', undefined], ['5;a=', undefined],
      ['5;a="x', undefined], ['-5', undefined], ['+5', undefined], ['0x5', undefined], ['', undefined], ['1234567890abc', undefined],
    ];
    for (const [line, want] of cases) {
      assert.equal(chunkSizeOf(line), want, JSON.stringify(line));
      if (want !== undefined && want > 0) assert.equal(llhttpChunk(line, want).bodyBytes, want, `llhttp takes ${JSON.stringify(line)}`);
    }
  });

  it('seeded random lines (30000 cases): whatever the pool takes, llhttp takes with the same size', () => {
    const rand = mulberry32(0x5eed_33);
    let taken = 0;
    for (let i = 0; i < 30_000; i++) {
      let line = i % 2 === 0 ? '5' : '5;a=b';
      const edits = Math.floor(rand() * 6);
      for (let k = 0; k < edits; k++) {
        const at = Math.floor(rand() * (line.length + 1));
        line = line.slice(0, at) + CHUNK_SHARP[Math.floor(rand() * CHUNK_SHARP.length)]! + line.slice(at);
      }
      const size = chunkSizeOf(line);
      if (size === undefined || size === 0 || size > 4096) continue; // 0 is the last chunk; large ones cost time, not coverage
      taken++;
      const r = llhttpChunk(line, size);
      assert.ok(!r.error && r.complete && r.bodyBytes === size, `case ${i}: ${JSON.stringify(line)}: llhttp ${r.error ?? r.bodyBytes}`);
    }
    assert.ok(taken > 3_000, `taken ${taken}`);
  });
});
