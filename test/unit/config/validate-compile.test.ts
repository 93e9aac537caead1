// `meshgate validate` reports what compiling adds, as run would log it, once per problem; and
// leaves out what depends on how run is started.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validatePaths } from '../../../src/config/format';

const gateway = (name: string, selector: string, credential: string, mode = 'SIMPLE') => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ${name}, namespace: istio-system}
spec:
  selector: {istio: ${selector}}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [${name}.example.com]
    tls: {mode: ${mode}${credential ? `, credentialName: ${credential}` : ''}}
---
`;

const secret = (name: string, ns = 'istio-system') => `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: ${ns}}
type: kubernetes.io/tls
stringData: {tls.crt: "", tls.key: ""}
---
`;

describe('validate: what compiling adds', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-validate-compile-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const run = async (text: string, namespace?: string) => {
    fs.writeFileSync(path.join(dir, 'c.yaml'), text);
    return validatePaths([dir], namespace);
  };
  const missing = (out: string) => [...out.matchAll(/no Secret ([\w-]+\/[\w-]+)/g)].map((m) => m[1]).sort();

  it('a credentialName naming no Secret, for every gateway the Gateways select, each once, at its field', async () => {
    const r = await run(gateway('a', 'ingressgateway', 'a-cred') + gateway('b', 'egressgateway', 'b-cred') + gateway('c', 'ingressgateway', 'c-cred') + secret('c-cred'));
    assert.equal(r.exitCode, 0, 'warnings only');
    assert.deepEqual(missing(r.output), ['istio-system/a-cred', 'istio-system/b-cred']);
    assert.match(r.output, new RegExp(`^${dir}/c\\.yaml:9:\\d+: Gateway istio-system/a: spec\\.servers\\[0\\]\\.tls\\.credentialName: warning: credentialName a-cred: no Secret`, 'm'));
    // A Secret that is there but empty is said too, as run says it.
    assert.match(r.output, /Gateway istio-system\/c: spec\.servers\[0\]\.tls\.credentialName: warning: Secret istio-system\/c-cred has no tls\.crt\/tls\.key/);
    assert.match(r.output.trim().split('\n').at(-1)!, /^0 errors, 3 warnings in 1 file$/);
  });

  it('looks for Secrets in --namespace, the gateways\' own', async () => {
    const text = gateway('a', 'ingressgateway', 'a-cred') + secret('a-cred', 'gateways');
    assert.deepEqual(missing((await run(text)).output), ['istio-system/a-cred']);
    assert.deepEqual(missing((await run(text, 'gateways')).output), []);
  });

  it('leaves out what depends on how run is started (ISTIO_MUTUAL without --mesh-certs)', async () => {
    const r = await run(gateway('m', 'egressgateway', '', 'ISTIO_MUTUAL'));
    assert.doesNotMatch(r.output, /mesh certificates|mesh-certs/);
    assert.match(r.output, /^ok: 1 resource in 1 file, no problems$/m);
  });

  it('compiles nothing while the config has errors (run would reject it first)', async () => {
    const r = await run(gateway('a', 'ingressgateway', 'a-cred').replace('hosts:', 'hostz:'));
    assert.equal(r.exitCode, 1);
    assert.deepEqual(missing(r.output), []);
  });
});
