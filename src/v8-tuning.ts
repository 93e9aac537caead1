// Three V8 defaults that suit a browser tab and cost a long-running proxy, switched off at start
// (`meshgate run`; V8 reads each when it uses it, so setting them at run time works, and
// NODE_OPTIONS would not take them). Figures: docs/benchmarks.md, "V8 settings" (the first two) and
// "TCP throughput and the garbage collector" (the third).
//
// - Allocation-site pretenuring: when objects from one allocation site often survive a young
//   collection, V8 allocates that site's objects straight into the old generation from then on. A
//   proxy's per-request objects that happen to be in flight across a scavenge trip it, and from then
//   on every request's objects are born old and die old: at 1000 req/s the old generation grew about
//   5 MiB/s between full collections (RSS a sawtooth from 81 to 105 MiB). Off, RSS stays flat and
//   a request costs ~15-20 % less CPU at saturation.
// - Wasm tier-up: undici parses responses with llhttp compiled to WebAssembly. V8 first compiles it
//   with its baseline compiler (Liftoff) and then recompiles the hot parser function with TurboFan,
//   which mallocs ~35 MiB for a moment a second or so after the first requests: every process's peak
//   RSS was ~108 MiB for that alone. Liftoff's code costs no measurable CPU per request here.
// - Concurrent array-buffer sweeping: every ordinary socket read is a fresh ArrayBuffer whose bytes
//   count as external memory until a helper thread, after the scavenge that found it dead, frees it
//   and takes the count down. Our helper threads run at a lower priority (helper-threads.ts), so on
//   a busy core that job waits behind the event loop; the count climbs past V8's external-memory
//   limit, and each crossing costs a full mark-compact: ~44 per 2 GB sent through one TCP
//   connection, 2.7x the user CPU and ~25 % off its throughput. Swept on the main thread at the end
//   of the scavenge instead, the count falls at once: no full collection (as a bare Node pipe at
//   normal priority). Upstream TCP reads avoid fresh buffers altogether (gateway/tcp/read-buffers.ts).

import v8 from 'node:v8';

/**
 * The node command-line flags meshgate runs with (bin/meshgate's shebang, package.json `start`, the
 * image's NODE_OPTIONS): a 2 MiB young generation, ~30 MiB less peak RSS (docs/benchmarks.md). Those
 * three cannot import this; a unit test keeps them in step. The bench and the tests start meshgate
 * with these too, so they measure what users run.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

const V8_FLAGS: readonly string[] = ['--no-allocation-site-pretenuring', '--liftoff-only', '--no-concurrent-array-buffer-sweeping'];

/** Apply V8_FLAGS to this process (before the first upstream connection compiles llhttp). */
export function tuneV8(): void {
  for (const flag of V8_FLAGS) v8.setFlagsFromString(flag);
}
