// The process metrics meshgate exports: prom-client's own set, loaded module by module so that the
// garbage-collection histogram (a hook on every collection) is there only with --gc-metrics.

import assert from 'node:assert/strict';
import client from 'prom-client';
import { Metrics, processMetrics } from '../../../src/telemetry/metrics';

const GC = 'nodejs_gc_duration_seconds';

async function names(r: client.Registry): Promise<string[]> {
  return (await r.getMetricsAsJSON()).map((m) => m.name).sort();
}

describe('process metrics', () => {
  it("are prom-client's default metrics, every one of them, with the GC histogram only when asked", async () => {
    const theirs = new client.Registry();
    client.collectDefaultMetrics({ register: theirs });
    const all = await names(theirs);
    assert.ok(all.includes(GC) && all.includes('process_cpu_seconds_total') && all.includes('nodejs_eventloop_lag_p99_seconds'), all.join(' '));

    const withGc = new client.Registry();
    processMetrics(withGc, true);
    assert.deepEqual(await names(withGc), all);

    const without = new client.Registry();
    processMetrics(without, false);
    assert.deepEqual(await names(without), all.filter((n) => n !== GC));
  });

  it('a gateway exports no GC histogram by default, and one with gcMetrics', async () => {
    const id = { workload: 'w', namespace: 'n', labels: {} };
    const plain = await new Metrics(id).render();
    assert.match(plain, /^process_cpu_seconds_total /m);
    assert.doesNotMatch(plain, new RegExp(`^# TYPE ${GC} `, 'm'));
    assert.match(await new Metrics(id, true, true).render(), new RegExp(`^# TYPE ${GC} histogram$`, 'm'));
  });
});
