// The event loop runs on the main thread; V8's garbage collector and optimizing compiler, and libuv's
// pool for file and DNS work, run on helper threads. When the process has one core (pinned, or a pod
// limited to about one CPU) the kernel shares that core fairly between whichever threads are
// runnable, so a concurrent mark or a compile can take half the core from the event loop for tens of
// milliseconds: requests queue behind it and the tail latency grows (measured: p99 at 1000 req/s
// ~14 ms with equal priorities, ~2.7 ms with the helpers at nice 10; docs/benchmarks.md). Raising the
// nice value of every thread but the main one lets the helpers run while the event loop waits, which
// at ordinary load is most of the time; under saturation they still get their share of the weight.
//
// Linux only (setpriority on a thread id changes that thread alone); elsewhere, and with nice 0, it
// does nothing.

import fs from 'node:fs';
import os from 'node:os';

export interface NiceOutcome {
  /** Helper threads whose nice value was raised. */
  readonly lowered: number;
  /** Threads that could not be changed (gone meanwhile, or not permitted). */
  readonly failed: number;
}

/** Raise every thread of this process but the main one to at least `nice` (1-19). */
export function niceHelperThreads(nice: number, taskDir = '/proc/self/task'): NiceOutcome {
  if (process.platform !== 'linux' || nice <= 0) return { lowered: 0, failed: 0 };
  let tids: string[];
  try {
    tids = fs.readdirSync(taskDir);
  } catch {
    return { lowered: 0, failed: 0 };
  }
  let lowered = 0;
  let failed = 0;
  for (const name of tids) {
    const tid = Number(name);
    if (!Number.isInteger(tid) || tid === process.pid) continue; // the main thread's id is the pid
    try {
      if (os.getPriority(tid) < nice) {
        os.setPriority(tid, nice);
        lowered += 1;
      }
    } catch {
      failed += 1;
    }
  }
  return { lowered, failed };
}

/** Parse `--helper-nice`: an integer 0-19 (0 leaves the threads alone). */
export function parseHelperNice(text: string): number {
  const n = /^\d{1,2}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(n >= 0 && n <= 19)) throw new Error(`--helper-nice: "${text}" is not a nice value 0-19`);
  return n;
}

/**
 * Lower the helpers now and once more a few seconds later (threads started late, such as the
 * inspector's). libuv makes its pool's threads on the first queued job, all before that job runs,
 * so one harmless stat first makes sure they exist.
 */
export function lowerHelperThreads(nice: number, report: (outcome: NiceOutcome) => void): void {
  if (process.platform !== 'linux' || nice <= 0) return;
  fs.stat('/', () => {
    report(niceHelperThreads(nice));
    setTimeout(() => niceHelperThreads(nice), 5000).unref();
  });
}
