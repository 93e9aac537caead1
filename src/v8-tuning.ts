// Two V8 defaults that suit a browser tab and cost a long-running proxy, switched off at start
// (`meshgate run`; V8 reads both when it uses them, so setting them at run time works, and
// NODE_OPTIONS would not take them). Figures: docs/benchmarks.md, "V8 settings".
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

import v8 from 'node:v8';

const V8_FLAGS: readonly string[] = ['--no-allocation-site-pretenuring', '--liftoff-only'];

/** Apply V8_FLAGS to this process (before the first upstream connection compiles llhttp). */
export function tuneV8(): void {
  for (const flag of V8_FLAGS) v8.setFlagsFromString(flag);
}
