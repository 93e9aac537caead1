import assert from 'node:assert/strict';
import { inboundSourceAddress } from '../../../src/sidecar/capture';

describe('inbound source address', () => {
  const cases: [string, string, string | undefined][] = [
    ['inbound|8080||', '10.1.2.3', '127.0.0.6'],
    ['InboundPassthroughCluster', '10.1.2.3', '127.0.0.6'],
    ['inbound|8080||', 'fd00::5', '::6'], // a 127.0.0.6 source cannot reach an IPv6 destination (bind EINVAL)
    ['InboundPassthroughCluster', '::1', '::6'],
    ['outbound|80||a.default.svc.cluster.local', '10.1.2.3', undefined],
    ['PassthroughCluster', 'fd00::5', undefined],
  ];
  for (const [cluster, dst, want] of cases) it(`${cluster} to ${dst}: ${want ?? 'none'}`, () => assert.equal(inboundSourceAddress(cluster, dst), want));
});
