// Pure parts of the agent port and the admin's /logging: tables.

import assert from 'node:assert/strict';
import { APP_SCRAPE_TIMEOUT_MS, appScrapeTarget, isLoopback, scrapeTimeoutMs } from '../../../src/admin/agent';
import { applyLogging, envoyLevel, pinoLevel, type EnvoyLevel, type LogLevels } from '../../../src/admin/servers';

describe('agent: ISTIO_PROMETHEUS_ANNOTATIONS', () => {
  it('reads the application\'s scrape target as Istio does (table)', () => {
    const cases: [string | undefined, unknown][] = [
      [undefined, undefined],
      ['', undefined],
      ['{"scrape":"true","path":"/manage/prometheus","port":"8383"}', { port: '8383', path: '/manage/prometheus' }],
      ['{"scrape":"true","path":"","port":"9090"}', { port: '9090', path: '/metrics' }], // Istio's default path
      ['{"scrape":"true","path":"/m","port":""}', { port: '80', path: '/m' }], // and port
      ['{"scrape":"true"}', { port: '80', path: '/metrics' }],
      ['{"path":"stats","port":"9000"}', { port: '9000', path: '/stats' }],
      ['{"path":"/m?x=1","port":"9000"}', { port: '9000', path: '/m?x=1' }],
      ['{"scrape":"false","path":"/m","port":"8080"}', undefined], // as Istio's agent: not scraped
      ['{"scrape":"False","path":"/m","port":"8080"}', { port: '8080', path: '/m' }], // the agent compares with "false" exactly
    ];
    for (const [env, want] of cases) assert.deepEqual(appScrapeTarget(env, 15020), want, String(env));
  });

  it('refuses what cannot be scraped, with the reason (table)', () => {
    const cases: [string, RegExp][] = [
      ['not json', /not JSON/],
      ['[1]', /not a JSON object/],
      ['"x"', /not a JSON object/],
      ['{"port":8080}', /port is not a string/],
      ['{"port":"http"}', /"http" is not a port/],
      ['{"port":"70000"}', /not a port/],
      ['{"port":"0"}', /not a port/],
      ['{"port":"15020"}', /agent's own \(a scrape would loop\)/],
    ];
    for (const [env, re] of cases) {
      const r = appScrapeTarget(env, 15020);
      assert.ok(r instanceof Error, env);
      assert.match(r.message, re, env);
    }
  });

  it('gives the application Prometheus\'s time budget, never more than the default (table)', () => {
    const cases: [string | string[] | undefined, number][] = [
      [undefined, APP_SCRAPE_TIMEOUT_MS], ['9', 9000], ['0.25', 250], ['120', APP_SCRAPE_TIMEOUT_MS],
      ['x', APP_SCRAPE_TIMEOUT_MS], ['-1', APP_SCRAPE_TIMEOUT_MS], ['0', APP_SCRAPE_TIMEOUT_MS], [['1', '2'], APP_SCRAPE_TIMEOUT_MS],
    ];
    for (const [h, want] of cases) assert.equal(scrapeTimeoutMs(h), want, String(h));
  });

  it('takes /quitquitquit from loopback only (table)', () => {
    const cases: [string | undefined, boolean][] = [
      ['127.0.0.1', true], ['127.0.0.6', true], ['::1', true], ['::ffff:127.0.0.1', true],
      ['10.0.0.5', false], ['::ffff:10.0.0.5', false], ['fe80::1', false], ['1127.0.0.1', false], [undefined, false], ['', false],
    ];
    for (const [a, want] of cases) assert.equal(isLoopback(a), want, String(a));
  });
});

describe('admin /logging', () => {
  const loggers = (): LogLevels & { readonly state: Record<string, EnvoyLevel> } => {
    const state: Record<string, EnvoyLevel> = { meshgate: 'info' };
    return {
      state,
      levels: () => ({ ...state }),
      set: (name, level) => { for (const k of Object.keys(state)) if (name === undefined || name === k) state[k] = level; },
    };
  };

  it('lists and changes levels as Envoy\'s admin does (table)', () => {
    const cases: [string, number, EnvoyLevel][] = [
      ['', 200, 'info'],
      ['level=debug', 200, 'debug'],
      ['level=warning', 200, 'warning'],
      ['meshgate=trace', 200, 'trace'],
      ['paths=meshgate:error', 200, 'error'],
      ['level=critical', 200, 'critical'],
      ['level=off', 200, 'off'],
      ['level=warn', 404, 'info'], // Envoy's name is warning
      ['level=', 200, 'info'], // an empty value is ignored, as Envoy does: the list
      ['level=&meshgate=debug', 200, 'debug'],
      ['http=debug', 404, 'info'], // a logger this process does not have
      ['paths=meshgate:debug,router:debug', 404, 'info'], // all or nothing
      ['paths=meshgate', 404, 'info'],
      ['level=debug&meshgate=info', 404, 'info'],
    ];
    for (const [query, status, level] of cases) {
      const l = loggers();
      const r = applyLogging(l, new URLSearchParams(query));
      assert.equal(r.status, status, query);
      assert.equal(l.state['meshgate'], level, query);
      assert.ok(r.body.endsWith(`active loggers:\n  meshgate: ${level}\n`), query);
      if (status === 404) assert.match(r.body, /^usage: /, query);
    }
  });

  it('maps Envoy\'s level names to pino\'s and back (table)', () => {
    const pairs: [EnvoyLevel, string][] = [['trace', 'trace'], ['debug', 'debug'], ['info', 'info'], ['warning', 'warn'], ['error', 'error'], ['critical', 'fatal'], ['off', 'silent']];
    for (const [envoy, pino] of pairs) {
      assert.equal(pinoLevel(envoy), pino);
      assert.equal(envoyLevel(pino), envoy);
    }
  });
});
