// Where credentialName's CA comes from, as Istio resolves it: a `<name>-cacert` Secret first, else
// `<name>` itself, and in a Secret the key `cacert` before `ca.crt`; for Gateway servers and for
// DestinationRule tls alike. And the DNS wildcard rule for upstream subjectAltNames.

import assert from 'node:assert/strict';
import type { SecretResource } from '../../../src/config/types';
import { serverCredentials, upstreamTls, type UpstreamTls } from '../../../src/tls/secrets';
import { dnsSanMatches } from '../../../src/tls/upstream';

const NS = 'istio-system';

function secret(name: string, data: Record<string, string>, namespace = NS): SecretResource {
  const b64: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) b64[k] = Buffer.from(v).toString('base64');
  return {
    kind: 'Secret', apiVersion: 'v1', metadata: { name, namespace }, spec: { data: b64 },
    source: { file: 'test.yaml', line: 1, col: 1 }, positions: new Map(), order: 0,
  };
}

describe('credentialName CA resolution (Istio precedence)', () => {
  const tlsKeys = { 'tls.crt': 'SERVER CERT', 'tls.key': 'SERVER KEY' };

  it('Gateway MUTUAL: a <name>-cacert Secret wins over ca.crt in <name> (cert-manager layout)', () => {
    const secrets = [secret('cred', { ...tlsKeys, 'ca.crt': 'SERVER ISSUER' }), secret('cred-cacert', { 'ca.crt': 'CLIENT CA' })];
    const got = serverCredentials({ mode: 'MUTUAL', credentialName: 'cred' }, secrets, NS);
    assert.equal(got.kind, 'secret');
    assert.equal(got.kind === 'secret' && got.ca, 'CLIENT CA');
    assert.equal(got.kind === 'secret' && got.cert, 'SERVER CERT');
  });

  it('Gateway MUTUAL: without <name>-cacert the CA comes from <name>, cacert before ca.crt', () => {
    const both = serverCredentials({ mode: 'MUTUAL', credentialName: 'cred' }, [secret('cred', { ...tlsKeys, 'ca.crt': 'K8S CA', cacert: 'GENERIC CA' })], NS);
    assert.equal(both.kind === 'secret' && both.ca, 'GENERIC CA');
    const onlyCaCrt = serverCredentials({ mode: 'OPTIONAL_MUTUAL', credentialName: 'cred' }, [secret('cred', { ...tlsKeys, 'ca.crt': 'K8S CA' })], NS);
    assert.equal(onlyCaCrt.kind === 'secret' && onlyCaCrt.ca, 'K8S CA');
    const generic = serverCredentials({ mode: 'MUTUAL', credentialName: 'g' }, [secret('g', { cert: 'C', key: 'K', cacert: 'G CA' })], NS);
    assert.deepEqual(generic, { kind: 'secret', name: `${NS}/g`, cert: 'C', key: 'K', ca: 'G CA' });
    // In the -cacert Secret too, cacert before ca.crt.
    const sep = serverCredentials({ mode: 'MUTUAL', credentialName: 'cred' }, [secret('cred', tlsKeys), secret('cred-cacert', { 'ca.crt': 'X', cacert: 'Y' })], NS);
    assert.equal(sep.kind === 'secret' && sep.ca, 'Y');
  });

  it('Gateway MUTUAL: a <name>-cacert Secret without a CA key is not skipped (Istio does not fall back)', () => {
    const got = serverCredentials({ mode: 'MUTUAL', credentialName: 'cred' }, [secret('cred', { ...tlsKeys, 'ca.crt': 'SERVER ISSUER' }), secret('cred-cacert', { other: 'x' })], NS);
    assert.equal(got.kind, 'missing');
    assert.match(got.kind === 'missing' ? got.message : '', /Secret istio-system\/cred-cacert has no cacert or ca\.crt/);
  });

  it('Secrets of another namespace are not used', () => {
    const got = serverCredentials({ mode: 'MUTUAL', credentialName: 'cred' }, [secret('cred', { ...tlsKeys, 'ca.crt': 'MINE' }), secret('cred-cacert', { cacert: 'THEIRS' }, 'other')], NS);
    assert.equal(got.kind === 'secret' && got.ca, 'MINE');
  });

  const material = (r: UpstreamTls | Error | undefined) => {
    assert.ok(r && !(r instanceof Error), String(r));
    return (r as UpstreamTls).material;
  };

  it('DestinationRule SIMPLE: the CA may be only in <name>-cacert', () => {
    const got = upstreamTls({ mode: 'SIMPLE', credentialName: 'up' }, [secret('up-cacert', { cacert: 'UP CA' })], NS);
    assert.deepEqual(material(got), { kind: 'secret', name: `${NS}/up`, ca: 'UP CA' });
  });

  it('DestinationRule MUTUAL: client certificate from <name>, CA from <name>-cacert before <name>', () => {
    const secrets = [secret('up', { 'tls.crt': 'CLIENT CERT', 'tls.key': 'CLIENT KEY', 'ca.crt': 'WRONG CA' }), secret('up-cacert', { 'ca.crt': 'UP CA' })];
    assert.deepEqual(material(upstreamTls({ mode: 'MUTUAL', credentialName: 'up' }, secrets, NS)),
      { kind: 'secret', name: `${NS}/up`, ca: 'UP CA', cert: 'CLIENT CERT', key: 'CLIENT KEY' });
    const one = [secret('up', { cert: 'C', key: 'K', 'ca.crt': 'K8S CA', cacert: 'GENERIC CA' })];
    assert.equal(material(upstreamTls({ mode: 'MUTUAL', credentialName: 'up' }, one, NS)).ca, 'GENERIC CA');
  });

  it('DestinationRule: errors name what is missing', () => {
    const none = upstreamTls({ mode: 'SIMPLE', credentialName: 'up' }, [], NS);
    assert.ok(none instanceof Error);
    assert.match(none.message, /no Secret istio-system\/up \(nor istio-system\/up-cacert\)/);
    const noClientCert = upstreamTls({ mode: 'MUTUAL', credentialName: 'up' }, [secret('up-cacert', { cacert: 'UP CA' })], NS);
    assert.ok(noClientCert instanceof Error);
    assert.match(noClientCert.message, /MUTUAL: no Secret istio-system\/up for the client certificate/);
  });
});

describe('upstream subjectAltNames: DNS wildcard rule', () => {
  it('a wildcard SAN covers exactly one whole left-most label', () => {
    const cases: [string, string, boolean][] = [
      ['api.example.com', 'api.example.com', true],
      ['API.Example.com', 'api.example.COM', true],
      ['*.example.com', 'api.example.com', true],
      ['*.example.com', 'API.example.com', true],
      ['*.example.com', 'a.b.example.com', false],
      ['*.example.com', 'example.com', false],
      ['*.example.com', '.example.com', false],
      ['*.example.com', 'api.example.org', false],
      ['*.example.com', 'apiexample.com', false],
      ['*.example.com', '*.example.com', true],
      ['api.example.com', '*.example.com', false],
      ['a*.example.com', 'ab.example.com', false],
      ['*a.example.com', 'ba.example.com', false],
      ['api.*.com', 'api.example.com', false],
      ['*.*.com', 'a.b.com', false],
      ['*', 'api', false],
    ];
    for (const [san, name, want] of cases) assert.equal(dnsSanMatches(san, name), want, `${san} vs ${name}`);
  });
});
