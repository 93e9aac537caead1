// The process metrics meshgate exports: prom-client's own set, loaded module by module so that the
// garbage-collection histogram (a hook on every collection) is there only with --gc-metrics and the
// event-loop delay histogram (a 10 ms timer) only with --loop-delay-metrics.

import assert from 'node:assert/strict';
import client from 'prom-client';
import { Metrics, processMetrics } from '../../../src/telemetry/metrics';

const GC = 'nodejs_gc_duration_seconds';
const LAG = 'nodejs_eventloop_lag_seconds';
const DELAY_HISTOGRAM = ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'].map((g) => `nodejs_eventloop_lag_${g}_seconds`);

async function names(r: client.Registry): Promise<string[]> {
  return (await r.getMetricsAsJSON()).map((m) => m.name).sort();
}

describe('process metrics', () => {
  it("are prom-client's default metrics, every one of them, with the GC and loop-delay histograms only when asked", async () => {
    const theirs = new client.Registry();
    client.collectDefaultMetrics({ register: theirs });
    const all = await names(theirs);
    assert.ok(all.includes(GC) && all.includes('process_cpu_seconds_total') && all.includes(LAG), all.join(' '));
    assert.ok(DELAY_HISTOGRAM.every((n) => all.includes(n)), all.join(' '));

    const both = new client.Registry();
    processMetrics(both, { gc: true, loopDelay: true });
    assert.deepEqual(await names(both), all);

    const plain = new client.Registry();
    processMetrics(plain);
    assert.deepEqual(await names(plain), all.filter((n) => n !== GC && !DELAY_HISTOGRAM.includes(n)));
  });

  it('a gateway exports no GC or loop-delay histogram by default, and each when asked', async () => {
    const id = { workload: 'w', namespace: 'n', labels: {} };
    const plain = await new Metrics(id).render();
    assert.match(plain, /^process_cpu_seconds_total /m);
    assert.doesNotMatch(plain, new RegExp(`^# TYPE ${GC} `, 'm'));
    assert.doesNotMatch(plain, /^# TYPE nodejs_eventloop_lag_p99_seconds /m);
    const asked = await new Metrics(id, { gc: true, loopDelay: true }).render();
    assert.match(asked, new RegExp(`^# TYPE ${GC} histogram$`, 'm'));
    assert.match(asked, /^# TYPE nodejs_eventloop_lag_p99_seconds gauge$/m);
  });

  it('measures the loop lag during the scrape, not at the one before', async () => {
    const m = new Metrics({ workload: 'w', namespace: 'n', labels: {} });
    const lag = (text: string) => Number(new RegExp(`^${LAG} (\\S+)$`, 'm').exec(text)?.[1]);
    // A callback queued before the scrape holds the loop for 60 ms: the scrape's own waits behind it.
    setImmediate(() => {
      const end = Date.now() + 60;
      while (Date.now() < end) { /* busy */ }
    });
    const first = lag(await m.render());
    assert.ok(first >= 0.05 && first < 5, `lag ${first} s`);
    const second = lag(await m.render());
    assert.ok(second >= 0 && second < 0.05, `lag ${second} s`);
  });
});
