// A cluster definition for the load-balancer and outlier tests, and a seeded random source.

import type { ClusterDef, LbPolicy } from '../../src/config/snapshot';

/** A plain HTTP cluster with the given load balancer and no limits (Envoy's defaults). */
export function clusterDef(lb: LbPolicy, extra: Partial<ClusterDef> = {}): ClusterDef {
  return {
    name: 'c', host: 'h', port: 80, service: { host: 'h', name: 'h', namespace: 'default' }, protocol: 'HTTP', resolution: 'STATIC', lb,
    connectTimeoutMs: 1000, endpoints: [], policy: {},
    breaker: { maxConnections: 4294967295, maxPendingRequests: 4294967295, maxRequests: 4294967295, maxRetries: 4294967295, maxRequestsPerConnection: 0, idleTimeoutMs: 3_600_000 },
    ...extra,
  };
}

/** A deterministic uniform source in [0, 1) (a linear congruential generator). */
export function seeded(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}
