// The command line as users run it: a real `meshgate` process, signals, exit codes.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, httpGet, waitFor } from '../helpers/upstream';
import { runMeshgate, spawnMeshgate } from '../helpers/gateway';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { singleRouteYaml } from '../../src/sample/configs';
import { kubeconfigFor } from '../helpers/kube';

const FIXTURES = path.resolve(__dirname, '../../../test/fixtures/config');

const run = runMeshgate;

describe('meshgate command line', function () {
  this.timeout(60_000);

  it('validate: exit 1 with one line per problem, exit 0 when clean', async () => {
    const bad = await run(['validate', '--config', path.join(FIXTURES, 'mistakes.yaml')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /mistakes\.yaml:15:5: VirtualService default\/reviews: spec\.http\[0\]\.timeot: unknown field "timeot" \(did you mean "timeout"\?\)/);
    const warn = await run(['validate', '--config', path.join(FIXTURES, 'warnings.yaml')]);
    assert.equal(warn.code, 0);
    const clean = await run(['validate', '--config', path.resolve(__dirname, '../../../config')]);
    assert.equal(clean.code, 0, clean.stdout);
    assert.match(clean.stdout, /^ok: \d+ resources in \d+ files, no problems$/m);
  });

  it('--help on every command names the flags and their environment variables', async () => {
    const top = await run(['--help']);
    assert.match(top.stdout, /run\s+run the gateway/);
    const r = await run(['run', '--help']);
    assert.equal(r.code, 0);
    for (const flag of ['--config', '--labels', '--namespace', '--port-map', '--admin-port', '--status-port', '--metrics-port', '--log-level']) {
      assert.ok(r.stdout.includes(flag), flag);
    }
    assert.match(r.stdout, /MESHGATE_PORT_MAP/);
    assert.equal((await run(['validate', '--help'])).code, 0);
    const unknown = await run(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(r.stdout, /--dns-family[^]*MESHGATE_DNS_FAMILY/);
    const family = await run(['run', '--config', '/nonexistent', '--dns-family', 'v5']);
    assert.notEqual(family.code, 0);
    assert.match(family.stderr + family.stdout, /--dns-family: "v5" is not v4, v6 or both/);
    // A duration no timer can hold (it would fire at once) is refused, not taken.
    const idle = await run(['run', '--config', '/nonexistent', '--tcp-idle-timeout', '9999h']);
    assert.notEqual(idle.code, 0);
    assert.match(idle.stderr + idle.stdout, /--tcp-idle-timeout: "9999h" is longer than 24 days/);
  });

  it('--help of every command keeps two spaces at least between each flag and its text', async () => {
    const top = await run(['help']);
    const commands = [...top.stdout.matchAll(/^  ([a-z-]+) {2,}\S/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    assert.deepEqual(commands, ['run', 'validate', 'certs', 'iptables', 'kube-inject']);
    for (const c of commands) {
      const h = await run([c, '--help']);
      assert.equal(h.code, 0, c);
      const flagLines = h.stdout.split('\n').filter((l) => /^ {2}-/.test(l));
      assert.ok(flagLines.length >= 2, c);
      for (const l of flagLines) assert.match(l, /^ {2}(-\w, )?--[a-z0-9-]+( VALUE)? {2,}\S/, `${c}: ${l}`);
      // One column per command: every description starts at the same place.
      assert.equal(new Set(flagLines.map((l) => /^ {2}\S.*? {2,}(?=\S)/.exec(l)![0].length)).size, 1, c);
    }
    const ipt = await run(['iptables', '--help']);
    assert.match(ipt.stdout, /--include-outbound-cidrs VALUE {2,}CIDRs to capture/);
  });

  describe('run', () => {
    let child: ChildProcess | undefined;
    let up: HttpbinServer | undefined;
    let dir: string;
    afterEach(async () => {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      await up?.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('a SIGHUP while the first config is still loading does not end the process', async () => {
      // An API server that takes connections and never answers: the Kubernetes source waits for its first sync.
      const silent = net.createServer((c) => c.on('error', () => {}));
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
      try {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-cli-'));
        const kubeconfig = path.join(dir, 'kubeconfig');
        fs.writeFileSync(kubeconfig, kubeconfigFor(`http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`));
        child = spawnMeshgate(dir, await freePort(), ['--source', 'kubernetes', '--kubeconfig', kubeconfig, '--namespace', 'istio-system']);
        let stderr = '';
        child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
        await waitFor(() => /admin on 127\.0\.0\.1:\d+/.test(stderr), { timeoutMs: 10_000 });
        child.kill('SIGHUP');
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(child.signalCode, null, `the process ended on ${child.signalCode}: ${stderr}`);
        assert.equal(child.exitCode, null);
      } finally {
        silent.close();
      }
    });

    it('logs the ports it picked, serves, reloads on SIGHUP, and drains in-flight work on SIGTERM, exit 0', async () => {
      const upstream = up = await startHttpbin({ name: 'up' });
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-cli-'));
      const port = await freePort();
      const config = (prefix: string) => singleRouteYaml({ upstreamPort: upstream.port, prefix });
      fs.writeFileSync(path.join(dir, 'c.yaml'), config('/delay'));
      child = spawnMeshgate(dir, port, ['--drain-seconds', '5']);
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
      await waitFor(() => /config version 1 applied/.test(stderr), { timeoutMs: 10_000 });
      assert.match(stderr, /admin on 127\.0\.0\.1:\d+, status on :\d+, metrics on :\d+/);
      assert.equal((await httpGet(port, '/get')).status, 404);
      fs.writeFileSync(path.join(dir, 'c.yaml'), config('/'));
      child.kill('SIGHUP');
      await waitFor(async () => (await httpGet(port, '/get')).status === 200, { timeoutMs: 5000 });
      const inflight = httpGet(port, '/delay/1');
      await new Promise((r) => setTimeout(r, 200));
      const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const res = await inflight;
      assert.equal(res.status, 200, 'the request in flight at SIGTERM completed');
      assert.equal(await exited, 0);
      await assert.rejects(httpGet(port, '/get'), 'no longer accepting');
    });
  });
});
