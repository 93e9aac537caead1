// Load generators, run as a child process (pinned away from the proxy) that prints one JSON line:
//   node loadgen.js closed PORT CONNECTIONS SECONDS          as fast as possible (when wrk is absent)
//   node loadgen.js open PORT CONNECTIONS SECONDS RATE       constant rate; latency measured from the
//                                                            intended send time (no coordinated omission)
// Every loop is bounded by its duration. The target is 127.0.0.1, or BENCH_TARGET (an address in a
// network namespace the bench made); the Host header is `bench`, or BENCH_HOST.

import { Pool } from 'undici';

export interface LoadResult {
  readonly requests: number;
  readonly errors: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  /** rategen only. */
  readonly p999?: number;
  readonly max?: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function summarize(lat: number[], errors: number, seconds: number): LoadResult {
  const s = Float64Array.from(lat).sort();
  return { requests: lat.length, errors, seconds, rps: lat.length / seconds, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99) };
}

const TARGET = process.env['BENCH_TARGET'] ?? '127.0.0.1';
const HOST = process.env['BENCH_HOST'] ?? 'bench';

function once(pool: Pool): Promise<boolean> {
  return pool.request({ path: '/', method: 'GET', headers: { host: HOST } }).then(async (r) => {
    await r.body.dump();
    return r.statusCode === 200;
  }, () => false);
}

async function closed(port: number, connections: number, seconds: number): Promise<LoadResult> {
  const pool = new Pool(`http://${TARGET}:${port}`, { connections, pipelining: 1 });
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      if (await once(pool)) lat.push(performance.now() - t);
      else errors += 1;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: connections }, worker));
  const r = summarize(lat, errors, (performance.now() - t0) / 1000);
  await pool.close();
  return r;
}

async function open(port: number, connections: number, seconds: number, rate: number): Promise<LoadResult> {
  const pool = new Pool(`http://${TARGET}:${port}`, { connections, pipelining: 1 });
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const total = Math.floor(seconds * rate);
  const interval = 1000 / rate;
  let sent = 0;
  const inflight: Promise<void>[] = [];
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && t0 + sent * interval <= now) {
        const intended = t0 + sent * interval;
        sent += 1;
        inflight.push(once(pool).then((ok) => {
          if (ok) lat.push(performance.now() - intended);
          else errors += 1;
        }));
      }
      if (sent >= total) return resolve();
      setTimeout(tick, Math.max(0, Math.min(1, t0 + sent * interval - performance.now())));
    };
    tick();
  });
  await Promise.all(inflight);
  const r = summarize(lat, errors, (performance.now() - t0) / 1000);
  await pool.close();
  return r;
}

async function main(): Promise<void> {
  const [mode, port, conns, secs, rate] = process.argv.slice(2);
  const r = mode === 'open'
    ? await open(Number(port), Number(conns), Number(secs), Number(rate))
    : await closed(Number(port), Number(conns), Number(secs));
  process.stdout.write(JSON.stringify(r) + '\n');
}

if (require.main === module) void main();
