// The pilot-agent shim's command line (src/pilot-agent.ts): Istio's `request` and `wait` flags and
// defaults, the --debug-port allow-list widened by meshgate's port env variables, and the URL asked.

import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import {
  UsageError, allowedPorts, checkDebugPort, connectTarget, defaultDebugPort, defaultReadyUrl, envPort, main, parseCommand, requestUrl,
  usage, type Command, type Env,
} from '../../src/pilot-agent';

const NO_ENV: Env = {};
const MOVED: Env = { MESHGATE_ADMIN_PORT: '19000', MESHGATE_STATUS_PORT: '19021', MESHGATE_AGENT_PORT: '19020' };

/** Run main() on captured streams. */
async function run(argv: string[], env: Env = NO_ENV): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await main(argv, env, { stdout, stderr });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

describe('pilot-agent shim: command line', () => {
  it('env ports: integers 1..65535, otherwise ignored (table)', () => {
    const cases: [string | undefined, number | undefined][] = [
      [undefined, undefined], ['', undefined], ['  ', undefined], ['15000', 15000], [' 16000 ', 16000], ['1', 1], ['65535', 65535],
      ['0', undefined], ['65536', undefined], ['-1', undefined], ['15000x', undefined], ['1e4', undefined], ['0x3a98', undefined],
    ];
    for (const [value, want] of cases) assert.equal(envPort({ P: value }, 'P'), want, `P=${JSON.stringify(value)}`);
  });

  it('defaults: admin port and readiness URL from MESHGATE_ADMIN_PORT / MESHGATE_STATUS_PORT, else 15000 and 15021', () => {
    assert.equal(defaultDebugPort(NO_ENV), 15000);
    assert.equal(defaultDebugPort(MOVED), 19000);
    assert.equal(defaultDebugPort({ MESHGATE_ADMIN_PORT: '0' }), 15000);
    assert.equal(defaultReadyUrl(NO_ENV), 'http://localhost:15021/healthz/ready');
    assert.equal(defaultReadyUrl(MOVED), 'http://localhost:19021/healthz/ready');
    assert.equal(defaultReadyUrl({ MESHGATE_STATUS_PORT: 'x' }), 'http://localhost:15021/healthz/ready');
  });

  it("allow-list: Istio's ports plus those meshgate's env names, sorted, no duplicates (table)", () => {
    const cases: [Env, number[]][] = [
      [NO_ENV, [15000, 15004, 15020, 15021]],
      [MOVED, [15000, 15004, 15020, 15021, 19000, 19020, 19021]],
      [{ MESHGATE_ADMIN_PORT: '15000', MESHGATE_STATUS_PORT: '8021' }, [8021, 15000, 15004, 15020, 15021]],
      [{ MESHGATE_AGENT_PORT: '0', MESHGATE_METRICS_PORT: '15090', OTHER_PORT: '1234' }, [15000, 15004, 15020, 15021]],
    ];
    for (const [env, want] of cases) assert.deepEqual(allowedPorts(env), want, JSON.stringify(env));
    assert.doesNotThrow(() => checkDebugPort(19020, MOVED));
    assert.throws(() => checkDebugPort(19020, NO_ENV), { message: 'debug port 19020 is not in allowed list [15000 15004 15020 15021]' });
    assert.throws(() => checkDebugPort(15090, { MESHGATE_ADMIN_PORT: '16000' }), { message: 'debug port 15090 is not in allowed list [15000 15004 15020 15021 16000]' });
  });

  it('request URL: one leading slash stripped, the query kept, localhost connected as 127.0.0.1 (table)', () => {
    const cases: [number, string, string, string][] = [
      [15000, 'stats', 'http://localhost:15000/stats', '/stats'],
      [15000, '/stats', 'http://localhost:15000/stats', '/stats'],
      [15000, '//stats', 'http://localhost:15000//stats', '//stats'],
      [15020, 'logging?level=debug', 'http://localhost:15020/logging?level=debug', '/logging?level=debug'],
      [15000, '/stats?filter=^cluster\\.&format=json', 'http://localhost:15000/stats?filter=^cluster\\.&format=json', '/stats?filter=^cluster\\.&format=json'],
      [15000, '', 'http://localhost:15000/', '/'],
      [15000, 'config_dump?resource=dynamic active clusters', 'http://localhost:15000/config_dump?resource=dynamic%20active%20clusters', '/config_dump?resource=dynamic%20active%20clusters'],
    ];
    for (const [port, path, href, target] of cases) {
      const url = requestUrl(port, path);
      assert.equal(url.href, href, path);
      assert.equal(`${url.pathname}${url.search}`, target, path);
      assert.deepEqual(connectTarget(url), { host: '127.0.0.1', port });
    }
    assert.deepEqual(connectTarget(new URL('http://LocalHost:8021/healthz/ready')), { host: '127.0.0.1', port: 8021 });
    assert.deepEqual(connectTarget(new URL('http://10.1.2.3/healthz/ready')), { host: '10.1.2.3', port: 80 });
    assert.deepEqual(connectTarget(new URL('http://[::1]:15021/')), { host: '::1', port: 15021 });
  });

  it('request: method, path, optional body, --debug-port in either form anywhere, default port from env (table)', () => {
    const req = (method: string, path: string, body: string, port: number): Command => ({ kind: 'request', method, path, body, port });
    const cases: [string[], Env, Command][] = [
      [['request', 'GET', 'stats'], NO_ENV, req('GET', 'stats', '', 15000)],
      [['request', 'GET', '/clusters'], NO_ENV, req('GET', '/clusters', '', 15000)],
      [['request', 'get', 'stats'], NO_ENV, req('GET', 'stats', '', 15000)],
      [['request', 'POST', 'logging?level=debug'], NO_ENV, req('POST', 'logging?level=debug', '', 15000)],
      [['request', 'POST', 'x', '{"a":1}'], NO_ENV, req('POST', 'x', '{"a":1}', 15000)],
      [['request', 'GET', 'stats'], MOVED, req('GET', 'stats', '', 19000)],
      [['request', '--debug-port', '15020', 'GET', 'stats'], NO_ENV, req('GET', 'stats', '', 15020)],
      [['request', 'GET', 'stats', '--debug-port=15021'], NO_ENV, req('GET', 'stats', '', 15021)],
      [['--debug-port', '15004', 'request', 'GET', 'debug'], NO_ENV, req('GET', 'debug', '', 15004)],
      [['request', 'GET', 'stats', '--debug-port', '19020'], MOVED, req('GET', 'stats', '', 19020)],
      [['request', 'GET', 'stats', '--debug-port', '15000'], MOVED, req('GET', 'stats', '', 15000)],
      [['request', '--', 'POST', 'x', '--not-a-flag'], NO_ENV, req('POST', 'x', '--not-a-flag', 15000)],
      // As Istio (cobra MinimumNArgs(2)): more than three arguments are accepted, the rest unused.
      [['request', 'GET', 'stats', '', 'extra'], NO_ENV, req('GET', 'stats', '', 15000)],
    ];
    for (const [argv, env, want] of cases) assert.deepEqual(parseCommand(argv, env), want, argv.join(' '));
  });

  it('wait: Istio defaults, the readiness URL from env, each flag in either form (table)', () => {
    const wait = (timeoutSeconds: number, requestTimeoutMillis: number, periodMillis: number, url: string): Command =>
      ({ kind: 'wait', timeoutSeconds, requestTimeoutMillis, periodMillis, url });
    const cases: [string[], Env, Command][] = [
      [['wait'], NO_ENV, wait(60, 500, 500, 'http://localhost:15021/healthz/ready')],
      [['wait'], MOVED, wait(60, 500, 500, 'http://localhost:19021/healthz/ready')],
      [['wait', '--timeoutSeconds', '1', '--periodMillis=100'], NO_ENV, wait(1, 500, 100, 'http://localhost:15021/healthz/ready')],
      [['wait', '--requestTimeoutMillis', '0', '--url', 'http://127.0.0.1:9/ready'], MOVED, wait(60, 0, 500, 'http://127.0.0.1:9/ready')],
      [['--timeoutSeconds=5', 'wait'], NO_ENV, wait(5, 500, 500, 'http://localhost:15021/healthz/ready')],
    ];
    for (const [argv, env, want] of cases) assert.deepEqual(parseCommand(argv, env), want, argv.join(' '));
  });

  it('help: none, --help, -h, help, help <command>, <command> --help (table)', () => {
    const cases: [string[], string][] = [
      [[], 'root'], [['--help'], 'root'], [['-h'], 'root'], [['help'], 'root'],
      [['help', 'request'], 'request'], [['help', 'wait'], 'wait'],
      [['request', '--help'], 'request'], [['request', 'GET', '-h'], 'request'], [['wait', '--help'], 'wait'], [['-h', 'wait'], 'wait'],
      // Help wins over a port the allow-list would refuse, as cobra's --help does.
      [['request', '--debug-port', '1', '--help'], 'request'],
    ];
    for (const [argv, topic] of cases) assert.deepEqual(parseCommand(argv, NO_ENV), { kind: 'help', topic }, argv.join(' '));
    const text = usage('root', MOVED);
    for (const said of ["meshgate's compatibility shim for Istio's pilot-agent", 'Only "request" and "wait" exist', 'pilot-agent request <method> <path> [<body>]',
      'pilot-agent wait', 'default 19000', 'http://localhost:19021/healthz/ready']) assert.ok(text.includes(said), said);
    assert.ok(!usage('wait', NO_ENV).includes('--debug-port'));
    assert.ok(!usage('request', NO_ENV).includes('--periodMillis'));
  });

  it('refuses bad command lines with a usage error, and a port outside the allow-list with Istio\'s error (table)', () => {
    const cases: [string[], RegExp, boolean][] = [
      [['proxy', 'router'], /^unknown command "proxy" for "pilot-agent"/, true],
      [['version'], /only "request" and "wait"/, true],
      [['help', 'proxy'], /unknown help topic "proxy"/, true],
      [['--verbose'], /^unknown flag: --verbose$/, true],
      [['request'], /^requires at least 2 arg\(s\), only received 0$/, true],
      [['request', 'GET'], /^requires at least 2 arg\(s\), only received 1$/, true],
      [['request', 'GET', 'stats', '--port', '15000'], /^unknown flag: --port$/, true],
      [['request', 'GET', 'stats', '-p'], /^unknown shorthand flag: 'p' in -p$/, true],
      [['request', 'GET', 'stats', '--debug-port'], /^flag needs an argument: --debug-port$/, true],
      [['request', 'GET', 'stats', '--debug-port', 'admin'], /^invalid argument "admin" for "--debug-port" flag/, true],
      [['request', 'GET', 'stats', '--debug-port=-1'], /^invalid argument "-1" for "--debug-port" flag/, true],
      [['request', 'G T', 'stats'], /^invalid method "G T"$/, true],
      [['request', 'GET', 'stats', '--debug-port', '15090'], /^debug port 15090 is not in allowed list \[15000 15004 15020 15021\]$/, false],
      [['request', 'GET', 'stats', '--debug-port', '0'], /^debug port 0 is not in allowed list/, false],
      [['wait', '--timeoutSeconds', 'soon'], /^invalid argument "soon" for "--timeoutSeconds" flag/, true],
      [['wait', '--periodMillis', '1.5'], /^invalid argument "1.5" for "--periodMillis" flag/, true],
      [['wait', '--url', 'not a url'], /^invalid argument "not a url" for "--url" flag: not a URL$/, true],
      [['wait', '--url', 'https://localhost:15021/healthz/ready'], /only http:\/\/ URLs/, true],
      [['wait', '--debug-port', '15000'], /^unknown flag: --debug-port$/, true],
      [['wait', '30'], /^"wait" takes no arguments/, true],
    ];
    for (const [argv, message, isUsage] of cases) {
      assert.throws(() => parseCommand(argv, NO_ENV), (err: Error) => {
        assert.match(err.message, message, argv.join(' '));
        assert.equal(err instanceof UsageError, isUsage, `${argv.join(' ')}: usage error?`);
        return true;
      }, argv.join(' '));
    }
    // The env widens the list only by the ports it names.
    assert.throws(() => parseCommand(['request', 'GET', 'stats', '--debug-port', '19021'], NO_ENV), /not in allowed list/);
    assert.equal((parseCommand(['request', 'GET', 'stats', '--debug-port', '19021'], MOVED) as { port: number }).port, 19021);
  });

  it('main: help on stdout with exit 0; usage errors and refusals on stderr with exit 1 and nothing on stdout', async () => {
    const help = await run(['--help']);
    assert.equal(help.code, 0);
    assert.equal(help.stderr, '');
    assert.equal(help.stdout, usage('root', NO_ENV));
    const bad = await run(['proxy', 'sidecar']);
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, /^Error: unknown command "proxy" for "pilot-agent".*\nRun 'pilot-agent --help' for usage\.\n$/);
    const refused = await run(['request', 'GET', 'stats', '--debug-port', '8080']);
    assert.equal(refused.code, 1);
    assert.equal(refused.stdout, '');
    assert.equal(refused.stderr, 'Error: debug port 8080 is not in allowed list [15000 15004 15020 15021]\n');
  });
});
