// Cached server TLS policies: servers that share a certificate share a context only when every
// setting the policy is built from is the same (the client-SAN rule above all).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ServerContexts } from '../../../src/tls/server-context';
import type { ServerCredentialSource } from '../../../src/tls/secrets';
import { makeCa, makeLeaf } from '../../helpers/certs';

describe('server TLS policies', function () {
  this.timeout(20_000);
  let dir: string;
  let source: ServerCredentialSource;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-srvctx-'));
    const ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'srv', ['a.example.com', 'b.example.com']);
    source = { kind: 'secret', name: 'shared', cert: leaf.cert, key: leaf.key, ca: ca.cert };
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('two MUTUAL servers with one certificate keep their own subjectAltNames', () => {
    const contexts = new ServerContexts(pino({ level: 'silent' }));
    const open = contexts.policyFor({ mode: 'MUTUAL', credentialName: 'shared' }, source, ['http/1.1']);
    const strict = contexts.policyFor({ mode: 'MUTUAL', credentialName: 'shared', subjectAltNames: ['allowed.client'] }, source, ['http/1.1']);
    assert.ok(!(open instanceof Error) && !(strict instanceof Error));
    assert.deepEqual(open.subjectAltNames, []);
    assert.deepEqual(strict.subjectAltNames, ['allowed.client'], 'the first server\'s cached policy must not stand in for the second');
  });

  it('a reload that adds subjectAltNames gets a policy that checks them', () => {
    const contexts = new ServerContexts(pino({ level: 'silent' }));
    contexts.policyFor({ mode: 'MUTUAL', credentialName: 'shared' }, source, undefined);
    const after = contexts.policyFor({ mode: 'MUTUAL', credentialName: 'shared', subjectAltNames: ['x.client'] }, source, undefined);
    assert.ok(!(after instanceof Error));
    assert.deepEqual(after.subjectAltNames, ['x.client']);
  });
});
