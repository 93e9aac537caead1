// Per-object validation (the Kubernetes source): an object with errors is left out with its issues,
// the rest is validated and kept; and the Secrets a config refers to.

import assert from 'node:assert/strict';
import { validateEach } from '../../../src/config/pipeline';
import type { Resource } from '../../../src/config/types';
import { referencedSecrets } from '../../../src/sources/kubernetes';
import { res } from '../../helpers/resources';

const gw = res('Gateway', 'gw', { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] }, 'istio-system');
const good = res('VirtualService', 'good', { hosts: ['a.example.com'], gateways: ['istio-system/gw'], http: [{ route: [{ destination: { host: 'a' } }] }] });
const badSchema = res('VirtualService', 'bad-schema', { hosts: ['b.example.com'], gateways: ['istio-system/gw'], http: [{ route: [{ destination: { host: 'b' } }], timeout: 'soon' }] });
const badRule = res('DestinationRule', 'bad-rule', { host: 'a', subsets: [{ name: 'v1' }, { name: 'v1' }] });
const cm = (mesh: string): Resource => ({ ...res('ConfigMap', 'istio', {}, 'istio-system'), apiVersion: 'v1', spec: { data: { mesh } } });

describe('validateEach: per-object rejection', () => {
  it('leaves out exactly the objects with errors, with their issues; the rest is in the set', () => {
    const out = validateEach([gw, good, badSchema, badRule]);
    assert.deepEqual(out.rejected.map((r) => `${r.kind} ${r.namespace}/${r.name}`).sort(), ['DestinationRule default/bad-rule', 'VirtualService default/bad-schema']);
    const schema = out.rejected.find((r) => r.name === 'bad-schema')!;
    assert.deepEqual(schema.issues.filter((i) => i.severity === 'error').map((i) => i.path), ['spec.http[0].timeout']);
    assert.ok(!out.issues.some((i) => i.name === 'bad-schema'), 'its warnings go with it');
    assert.deepEqual(out.set!.virtualServices.map((v) => v.metadata.name), ['good']);
    assert.deepEqual(out.set!.destinationRules, []);
    assert.equal(out.issues.filter((i) => i.severity === 'error').length, 0);
    assert.equal(out.resourceCount, 2);
  });

  it('a broken mesh config leaves out the ConfigMap (mesh defaults) and nothing else', () => {
    const out = validateEach([gw, good, cm('accessLogEncoding: XML\n')]);
    assert.deepEqual(out.rejected.map((r) => r.kind), ['ConfigMap']);
    assert.deepEqual(out.set!.mesh, {});
    assert.equal(out.set!.virtualServices.length, 1);
  });

  it('a Gateway without servers is left out alone, not thrown on by the certificate checks (found by the fuzz test)', () => {
    const noServers = res('Gateway', 'empty', { selector: { istio: 'ingressgateway' } }, 'istio-system');
    let out: ReturnType<typeof validateEach> | undefined;
    assert.doesNotThrow(() => { out = validateEach([gw, good, noServers]); });
    assert.deepEqual(out!.rejected.map((r) => `${r.kind} ${r.namespace}/${r.name}: ${r.issues.map((i) => i.path).join(', ')}`), ['Gateway istio-system/empty: spec.servers']);
    assert.deepEqual(out!.set!.gateways.map((g) => g.metadata.name), ['gw']);
  });

  it('warnings (a missing host, an unknown gateway) reject nothing', () => {
    const lonely = res('VirtualService', 'lonely', { hosts: ['c.example.com'], gateways: ['nowhere'], http: [{ route: [{ destination: { host: 'nothing-here' } }] }] });
    const out = validateEach([gw, lonely]);
    assert.deepEqual(out.rejected, []);
    assert.ok(out.issues.length >= 2 && out.issues.every((i) => i.severity === 'warning'));
    assert.equal(out.set!.virtualServices.length, 1);
  });
});

describe('referencedSecrets', () => {
  it('Gateway credentialName(s) with their -cacert companions, DestinationRule tls at every level; nothing from malformed specs', () => {
    const names = referencedSecrets(
      [
        { spec: { servers: [{ tls: { credentialName: 'a' } }, { tls: { credentialNames: ['b', 'c'] } }, { port: {} }] } },
        { spec: { servers: 'not a list' } },
        { metadata: { name: 'no-spec' } },
      ],
      [{ spec: { trafficPolicy: { tls: { credentialName: 'd' }, portLevelSettings: [{ tls: { credentialName: 'e' } }] }, subsets: [{ trafficPolicy: { tls: { credentialName: 'f' } } }] } }],
    );
    assert.deepEqual([...names].sort(), ['a', 'a-cacert', 'b', 'b-cacert', 'c', 'c-cacert', 'd', 'd-cacert', 'e', 'e-cacert', 'f', 'f-cacert']);
  });
});
