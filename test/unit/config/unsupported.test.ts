// Istio fields meshgate accepts without acting on them are warnings at their field, never silent;
// the config still loads (warnings only).

import assert from 'node:assert/strict';
import { loadText } from '../../../src/config/load';
import { validate } from '../../../src/config/validate';
import { unsupportedFields } from '../../../src/config/unsupported';

describe('config: fields meshgate does not support', () => {
  it('names each one set, where it is set, with what meshgate does instead (table)', () => {
    const cases: [string, unknown, string[]][] = [
      ['Gateway', { servers: [{ port: { number: 80 } }, { bind: '10.0.0.1', tls: { credentialNames: ['a', 'b'], verifyCertificateHash: ['ab'] } }] },
        ['spec.servers[1].bind', 'spec.servers[1].tls.credentialNames', 'spec.servers[1].tls.verifyCertificateHash']],
      ['Gateway', { servers: [{ tls: { credentialNames: ['only-one'] } }] }, []], // one credential is served
      ['VirtualService', { http: [{ match: [{ uri: { prefix: '/' } }, { statPrefix: 's' }], delegate: { name: 'x' }, retries: { backoff: '1s' } }], tcp: [{ match: [{ sourceSubnet: '10.0.0.0/8' }] }] },
        ['spec.http[0].delegate', 'spec.http[0].match[1].statPrefix', 'spec.http[0].retries.backoff', 'spec.tcp[0].match[0].sourceSubnet']],
      ['DestinationRule', { trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }, []],
      ['DestinationRule', {
        trafficPolicy: { loadBalancer: { simple: 'PASSTHROUGH' }, portLevelSettings: [{ tls: { caCrl: 'x' } }], retryBudget: {} },
        subsets: [{ name: 'a', trafficPolicy: { proxyProtocol: {}, portLevelSettings: [{ connectionPool: { http: { useClientProtocol: true } } }] } }],
      }, [
        'spec.trafficPolicy.loadBalancer.simple', 'spec.trafficPolicy.retryBudget', 'spec.trafficPolicy.portLevelSettings[0].tls.caCrl',
        'spec.subsets[0].trafficPolicy.proxyProtocol', 'spec.subsets[0].trafficPolicy.portLevelSettings[0].connectionPool.http.useClientProtocol',
      ]],
      ['ServiceEntry', { resolution: 'DYNAMIC_DNS', subjectAltNames: ['x'], endpoints: [{ address: '1.2.3.4', network: 'n1' }] },
        ['spec.resolution', 'spec.subjectAltNames', 'spec.endpoints[0].network']],
      ['ServiceEntry', { resolution: 'DNS' }, []],
      ['WorkloadEntry', { address: '1.2.3.4', serviceAccount: 'sa', locality: 'us/a' }, ['spec.locality', 'spec.serviceAccount']],
      ['Sidecar', { ingress: [{}], egress: [{ port: { number: 80 }, hosts: ['./*'] }], outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } }, ['spec.ingress', 'spec.egress[0].port']],
      ['Sidecar', { egress: [{ hosts: ['./*'] }] }, []],
      ['Service', { ports: [{ port: 80 }] }, []],
      ['MeshConfig', { protocolDetectionTimeout: '5s' }, []], // honoured
      ['MeshConfig', { protocolDetectionTimeout: '0s' }, ['spec.protocolDetectionTimeout']],
      ['MeshConfig', { dnsRefreshRate: '30s', outboundTrafficPolicy: { mode: 'ALLOW_ANY' }, enableAutoMtls: false }, []], // DNS TTLs are respected, as Istio's
      ['MeshConfig', { enableAutoMtls: true, enableTracing: true, defaultHttpRetryPolicy: { retryRemoteLocalities: true } },
        ['spec.enableAutoMtls', 'spec.enableTracing', 'spec.defaultHttpRetryPolicy.retryRemoteLocalities']],
      ['Sidecar', { ingress: [] }, []],
      ['VirtualService', { http: [{ retries: { retryIgnorePreviousHosts: true, retryRemoteLocalities: false } }] }, []],
      ['VirtualService', { http: [{ retries: { retryIgnorePreviousHosts: false } }] }, ['spec.http[0].retries.retryIgnorePreviousHosts']],
      ['MeshConfig', { outboundTrafficPolicy: { mode: 'ALLOW_ANY_DYNAMIC_DNS', egressProxy: { host: 'x' } }, accessLogFile: '/dev/stdout' },
        ['spec.outboundTrafficPolicy.mode', 'spec.outboundTrafficPolicy.egressProxy']],
    ];
    for (const [kind, spec, want] of cases) {
      const got = unsupportedFields(kind, spec);
      assert.deepEqual(got.map((u) => u.path).sort(), [...want].sort(), `${kind} ${JSON.stringify(spec)}`);
      for (const u of got) assert.match(u.message, /^warning: .+ is not supported by meshgate: \S/);
    }
    assert.match(unsupportedFields('DestinationRule', { trafficPolicy: { loadBalancer: { simple: 'PASSTHROUGH' } } })[0]!.message, /^warning: simple: "PASSTHROUGH" is not supported by meshgate: PASSTHROUGH balances as LEAST_REQUEST/);
  });

  it('the mesh config\'s, at their line in data.mesh', () => {
    const loaded = loadText(`apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: /dev/stdout
    protocolDetectionTimeout: 0s
    outboundTrafficPolicy:
      mode: ALLOW_ANY
      egressProxy: {host: squid.example, port: {number: 3128}}
`, 'mesh.yaml');
    const { issues } = validate(loaded.resources);
    assert.deepEqual(issues.map((i) => [i.severity, i.line, i.path]), [
      ['warning', 7, 'data.mesh.protocolDetectionTimeout'], ['warning', 10, 'data.mesh.outboundTrafficPolicy.egressProxy'],
    ]);
    assert.match(issues[0]!.message, /protocolDetectionTimeout: "0s" is not supported by meshgate: 0 \(no timeout\) is not taken: protocol detection waits 1 s/);
  });

  it('validation reports them as warnings at the field\'s line; the config stays valid', () => {
    const loaded = loadText(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    bind: 10.0.0.1
`, 'g.yaml');
    const { issues } = validate(loaded.resources);
    assert.deepEqual(issues.map((i) => [i.severity, i.line, i.col, i.path]), [['warning', 9, 5, 'spec.servers[0].bind']]);
    assert.match(issues[0]!.message, /^warning: bind is not supported by meshgate: every server listens on the address of --bind$/);
  });
});
