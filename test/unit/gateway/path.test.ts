import assert from 'node:assert/strict';
import { normalizePath, requestTarget } from '../../../src/gateway/http/path';

describe('request target: path normalization (pathNormalization BASE) and absolute-form', () => {
  const normalized: [string, string][] = [
    ['/', '/'],
    ['/productpage', '/productpage'],
    ['/a/b?x=/../y', '/a/b?x=/../y'], // the query is left alone
    ['/public/../admin', '/admin'],
    ['/public/./x', '/public/x'],
    ['/public/%2e%2e/admin', '/admin'],
    ['/public/%2E./admin', '/admin'],
    ['/public/..', '/'],
    ['/a/b/..', '/a/'],
    ['/a/.', '/a/'],
    ['/..', '/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a//b', '/a//b'], // BASE does not merge slashes
    ['/a//../b', '/a/b'],
    ['/public\\..\\admin', '/admin'],
    ['/%7Euser/%41', '/~user/A'], // escaped unreserved characters decoded
    ['/a%2Fb/%20x', '/a%2Fb/%20x'], // reserved and other escapes kept as sent
    ['/a/..%2fadmin', '/a/..%2fadmin'],
    ['/.hidden/..foo', '/.hidden/..foo'],
  ];
  for (const [input, want] of normalized) it(`${input} -> ${want}`, () => assert.equal(normalizePath(input), want));

  it('absolute-form: authority and path from the URL, path normalized', () => {
    assert.deepEqual(requestTarget('http://web.example.com/public/x'), { path: '/public/x', authority: 'web.example.com' });
    assert.deepEqual(requestTarget('HTTP://web.example.com:8080'), { path: '/', authority: 'web.example.com:8080' });
    assert.deepEqual(requestTarget('http://a.test?q=1'), { path: '/?q=1', authority: 'a.test' });
    assert.deepEqual(requestTarget('https://a.test/x/../y#frag'), { path: '/y', authority: 'a.test' });
  });

  it('origin-form and OPTIONS *', () => {
    assert.deepEqual(requestTarget('/x/./y'), { path: '/x/y' });
    assert.deepEqual(requestTarget('*'), { path: '*' });
  });

  it('targets that are neither: an error (400)', () => {
    for (const bad of ['foo', 'http:///x', 'ftp://a/b', '']) assert.ok(requestTarget(bad).error, bad);
  });
});
