// kubeconfig exec credential plugins, run for real: a small Node script stands in for
// `aws eks get-token` / `gke-gcloud-auth-plugin`.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExecCredentialSource, parseExecCredential } from '../../../src/kube/exec-credential';
import type { ExecPlugin } from '../../../src/kube/connection';

const V1 = 'client.authentication.k8s.io/v1';

describe('exec credential plugins', () => {
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-exec-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A plugin script: prints what `body` returns for this run (the run number counts in a file). */
  function plugin(name: string, body: string, extra: Partial<ExecPlugin> = {}): ExecPlugin {
    const file = path.join(dir, `${name}.js`);
    fs.writeFileSync(file, `const fs = require('fs');
const counter = ${JSON.stringify(path.join(dir, `${name}.count`))};
const n = (fs.existsSync(counter) ? Number(fs.readFileSync(counter, 'utf8')) : 0) + 1;
fs.writeFileSync(counter, String(n));
const info = JSON.parse(process.env.KUBERNETES_EXEC_INFO || '{}');
${body}
`);
    return { command: process.execPath, args: [file], env: { PLUGIN_ENV: 'set' }, apiVersion: V1, ...extra };
  }

  const cred = (token: string, exp?: string) => JSON.stringify({ apiVersion: V1, kind: 'ExecCredential', status: { token, ...(exp ? { expirationTimestamp: exp } : {}) } });

  it('parses an ExecCredential, and says what is wrong with one it cannot use', () => {
    assert.deepEqual(parseExecCredential(cred('t1', '2026-11-23T10:00:00Z'), V1), { token: 't1', expiresAt: Date.parse('2026-11-23T10:00:00Z') });
    assert.deepEqual(parseExecCredential(cred('t1'), V1), { token: 't1' });
    const bad: [string, RegExp][] = [
      ['nope', /not JSON/],
      [JSON.stringify({ kind: 'Secret' }), /not an ExecCredential/],
      [cred('t').replace(V1, 'client.authentication.k8s.io/v1beta1'), /answered apiVersion/],
      [JSON.stringify({ apiVersion: V1, kind: 'ExecCredential', status: { clientCertificateData: 'x', clientKeyData: 'y' } }), /client certificate; meshgate takes token credentials/],
      [JSON.stringify({ apiVersion: V1, kind: 'ExecCredential', status: {} }), /no status.token/],
      [cred('t', 'tomorrow'), /is not a time/],
    ];
    for (const [out, re] of bad) assert.match((parseExecCredential(out, V1) as Error).message, re);
  });

  it('runs the plugin with KUBERNETES_EXEC_INFO and its env, caches the token until shortly before it expires, shares one run among concurrent callers', async () => {
    let now = Date.parse('2026-11-23T10:00:00Z');
    const p = plugin('rotating', `
if (info.kind !== 'ExecCredential' || info.spec.interactive !== false || process.env.PLUGIN_ENV !== 'set') { console.error('bad env'); process.exit(3); }
console.log(JSON.stringify({ apiVersion: info.apiVersion, kind: 'ExecCredential', status: { token: 'tok-' + n, expirationTimestamp: '2026-11-23T10:15:00Z' } }));`);
    const src = new ExecCredentialSource(p, { timeoutMs: 10_000, renewBeforeMs: 10_000, maxOutputBytes: 65536 }, () => now);
    const [a, b, c] = await Promise.all([src.token(), src.token(), src.token()]);
    assert.deepEqual([a, b, c], ['tok-1', 'tok-1', 'tok-1']);
    assert.equal(src.runs, 1);
    now += 14 * 60_000; // 10:14, still more than 10 s before 10:15
    assert.equal(await src.token(), 'tok-1');
    now += 55_000; // 10:14:55, within the renewal margin
    assert.equal(await src.token(), 'tok-2');
    src.invalidate('tok-2'); // the API server said 401
    assert.equal(await src.token(), 'tok-3');
    assert.equal(src.runs, 3);
  });

  it('a failing plugin is an error with its stderr and installHint; a hung one times out; a missing one is "not found"', async () => {
    const failing = new ExecCredentialSource(plugin('failing', `console.error('no credentials for profile ops'); process.exit(1);`, { installHint: 'Run aws configure first.' }));
    await assert.rejects(failing.token(), /exec credential plugin .*: Command failed.*: no credentials for profile ops; Run aws configure first\./);
    const hung = new ExecCredentialSource(plugin('hung', 'setTimeout(() => {}, 60_000);'), { timeoutMs: 300, renewBeforeMs: 0, maxOutputBytes: 65536 });
    await assert.rejects(hung.token(), /no answer within 300 ms/);
    const missing = new ExecCredentialSource({ command: path.join(dir, 'no-such-plugin'), args: [], env: {}, apiVersion: V1 });
    await assert.rejects(missing.token(), /no-such-plugin": not found/);
    const wrong = new ExecCredentialSource(plugin('wrong', `console.log('hello');`));
    await assert.rejects(wrong.token(), /its output is not JSON/);
  });
});
