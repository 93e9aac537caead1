// The metrics port with --workers: the primary adds up what the workers count, with prom-client's
// aggregators (each metric's own: counters and histograms summed, what every worker has alike
// reported once). A worker that dies takes its counters with it and its replacement starts from
// zero; Prometheus would read the lower sum as a counter reset (rate() and increase() jump). So the
// primary keeps each worker's last answer, and when a worker exits the counters and histograms
// (buckets, _sum, _count) of that answer stay in the sums as a baseline; its gauges go, they
// described a process that is gone.
//
// The primary asks every worker on each scrape and every SNAPSHOT_MS in between. What a worker
// counted after its last answer is lost when it dies: at most SNAPSHOT_MS (plus the time to
// answer) of its traffic; more only with thousands of label sets (snapshots then come less often,
// see startSnapshots) or if its event loop was stuck and stopped answering before the end. A
// `kill -9` or a crash leaves no chance to send final figures, hence the periodic snapshot.

import type { Worker } from 'node:cluster';
import client, { AggregatorRegistry, type Registry } from 'prom-client';

/** How often the primary refreshes its copy of every worker's metrics between scrapes. */
export const SNAPSHOT_MS = 2000;
/** How long a scrape waits for the workers' answers; one that is late counts with its last answer. */
const ANSWER_WAIT_MS = 2000;

const ASK = 'meshgate:metrics?';
const ANSWER = 'meshgate:metrics';

/** One metric of `Registry.getMetricsAsJSON()`, as it comes through the IPC channel. */
interface MetricJson {
  name: string;
  help: string;
  type: string;
  aggregator?: string;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}

interface Answer { type: typeof ANSWER; seq: number; metrics?: MetricJson[] }

/** prom-client's aggregator functions by name (exported by prom-client, not in its typings). */
const aggregators = (client as unknown as { aggregators: Record<string, (metrics: MetricJson[]) => MetricJson | undefined> }).aggregators;

const isCounter = (m: MetricJson) => m.type === 'counter' || m.type === 'histogram';
const isSummed = (m: MetricJson) => (m.aggregator ?? 'sum') === 'sum';

/**
 * The metrics of several processes as one, metric by metric with its aggregator. A counter reported
 * once ('first': events every worker sees, such as config reloads) takes the highest count, the one
 * of the worker that has lived longest, rather than whichever worker is first.
 */
function combine(sets: readonly MetricJson[][]): MetricJson[] {
  const byName = new Map<string, MetricJson[]>();
  for (const set of sets) {
    for (const m of set) {
      const group = byName.get(m.name);
      if (group) group.push(m);
      else byName.set(m.name, [m]);
    }
  }
  const out: MetricJson[] = [];
  for (const group of byName.values()) {
    const first = group[0]!;
    const how = isCounter(first) && first.aggregator === 'first' ? 'max' : first.aggregator ?? 'sum';
    const m = aggregators[how]?.(group);
    if (m) out.push(m);
  }
  return out;
}

interface LiveWorker {
  readonly index: number;
  readonly worker: Worker;
  /** Its latest answer, and the number of the question it answered. */
  metrics: MetricJson[];
  seq: number;
  /** It has said it answers (answer 0, at its start); until then it is starting and has counted nothing. */
  answered: boolean;
}

/** In the primary: the workers' metrics, kept between scrapes and past the workers' deaths. */
export class WorkerMetrics {
  readonly contentType = client.Registry.PROMETHEUS_CONTENT_TYPE;
  private readonly live = new Map<number, LiveWorker>(); // by cluster worker id
  /** Summed counters and histograms of the workers that have exited. */
  private retired: MetricJson[] = [];
  /**
   * Counters reported once have no baseline to add (every worker counts the same events). When the
   * workers that counted the most are all gone, the drop is carried here, per series, so the series
   * goes on from where it was.
   */
  private readonly carried = new Map<string, { last: number; offset: number }>();
  /** Questions waiting for answers, by number. */
  private readonly waiting = new Map<number, (w: LiveWorker) => void>();
  private seq = 0;

  /** A newly forked worker: its answers are kept from now on. */
  add(index: number, worker: Worker): void {
    const w: LiveWorker = { index, worker, metrics: [], seq: 0, answered: false };
    this.live.set(worker.id, w);
    worker.on('message', (m: Partial<Answer> | null) => {
      if (m?.type !== ANSWER || typeof m.seq !== 'number') return;
      w.answered = true;
      if (m.metrics && m.seq > w.seq) {
        w.metrics = m.metrics;
        w.seq = m.seq;
      }
      this.waiting.get(m.seq)?.(w);
    });
  }

  /**
   * Has the worker said it answers? It does so just before it installs its signal handlers (the
   * same turn), so until then a SIGHUP would end it rather than reload it.
   */
  started(worker: Worker): boolean {
    return this.live.get(worker.id)?.answered === true;
  }

  /** A worker exited: the counters and histograms of its last answer stay in the sums, its gauges go. */
  retire(worker: Worker): void {
    const w = this.live.get(worker.id);
    if (!w) return;
    this.live.delete(worker.id);
    this.retired = combine([this.retired, w.metrics.filter((m) => isCounter(m) && isSummed(m))]);
    for (const answered of this.waiting.values()) answered(w); // no answer will come
  }

  /**
   * Asks every worker for its metrics; resolves once all have answered (true) or after `waitMs`
   * (false). A worker still starting is asked but not waited for: it may not listen yet.
   */
  refresh(waitMs = ANSWER_WAIT_MS): Promise<boolean> {
    const seq = ++this.seq;
    const asked = new Set<LiveWorker>();
    for (const w of this.live.values()) {
      if (!w.worker.isConnected()) continue; // dead, its exit not yet seen: its last answer stands
      w.worker.send({ type: ASK, seq }, () => {}); // an error: it is exiting
      if (w.answered) asked.add(w);
    }
    if (asked.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (all: boolean) => {
        clearTimeout(timeout);
        this.waiting.delete(seq);
        resolve(all);
      };
      const timeout = setTimeout(() => done(false), waitMs);
      this.waiting.set(seq, (w) => {
        asked.delete(w);
        if (asked.size === 0) done(true);
      });
    });
  }

  /**
   * Refreshes every SNAPSHOT_MS, so that a worker that dies between scrapes loses little; less often
   * when a refresh is slow (thousands of label sets), so that this never takes more than about 2% of
   * the time.
   */
  startSnapshots(): void {
    let waitMs = SNAPSHOT_MS;
    const tick = () => setTimeout(() => {
      const start = Date.now();
      void this.refresh().then((all) => {
        if (all) waitMs = Math.max(SNAPSHOT_MS, 50 * (Date.now() - start));
        tick();
      });
    }, waitMs).unref();
    tick();
  }

  /** The text of a scrape: the live workers' last answers (by index) and the exited workers' counts, added up. */
  render(): Promise<string> {
    const byIndex = [...this.live.values()].sort((a, b) => a.index - b.index);
    const all = combine([...byIndex.map((w) => w.metrics), this.retired]);
    for (const m of all) if (isCounter(m) && !isSummed(m)) this.carry(m);
    return AggregatorRegistry.aggregate([all]).metrics(); // one set: this only renders it
  }

  private carry(m: MetricJson): void {
    for (const v of m.values) {
      const key = `${v.metricName ?? m.name}${JSON.stringify(v.labels)}`;
      const c = this.carried.get(key) ?? { last: 0, offset: 0 };
      v.value += c.offset;
      if (v.value < c.last) {
        c.offset += c.last - v.value;
        v.value = c.last;
      }
      c.last = v.value;
      this.carried.set(key, c);
    }
  }
}

/** In a worker: answer the primary's questions with this registry's metrics. */
export function answerMetrics(registry: Registry): void {
  process.on('message', (m: { type?: unknown; seq?: unknown } | null) => {
    if (m?.type !== ASK || typeof m.seq !== 'number') return;
    const seq = m.seq;
    const send = (answer: Answer) => { if (process.connected) process.send?.(answer, undefined, {}, () => {}); };
    registry.getMetricsAsJSON().then(
      (metrics) => send({ type: ANSWER, seq, metrics: metrics as unknown as MetricJson[] }),
      () => send({ type: ANSWER, seq }), // nothing new to give: the primary keeps the last answer
    );
  });
  process.send?.({ type: ANSWER, seq: 0 } satisfies Answer); // listening from now on: wait for my answers
}
