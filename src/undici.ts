// undici, loaded the first time meshgate makes a pool or agent of its own: TLS upstreams, streamed
// uploads, the Kubernetes API client. Plain HTTP/1.1 and h2c upstreams run on our own pools, so a
// gateway that only has those never loads it (~110 modules; ~8 MB less peak RSS at 1000 req/s).

import type * as Undici from 'undici';

let loaded: typeof Undici | undefined;

/** The undici module, required on the first call. */
export function undici(): typeof Undici {
  return (loaded ??= require('undici') as typeof Undici);
}

/** Whether `value` is an undici Pool; false without loading undici when it was never loaded. */
export function isUndiciPool(value: unknown): value is Undici.Pool {
  return loaded !== undefined && value instanceof loaded.Pool;
}
