// An exception met while compiling one resource, with the resource and field it came from, so a
// config that validation let through but compile cannot take is rejected naming where (not thrown
// out of the reload as an unhandled error).

import type { Resource } from './types';

export class CompileError extends Error {
  constructor(readonly resource: Resource, readonly path: string, readonly thrown: unknown) {
    super(`${resource.kind} ${resource.metadata.namespace}/${resource.metadata.name}: ${path}: ${thrown instanceof Error ? thrown.message : String(thrown)}`);
    this.name = 'CompileError';
  }
}

/** Run `fn` for resource `r`; an exception from it becomes a CompileError naming `r` and `path` (the innermost one wins). */
export function within<T>(r: Resource, path: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CompileError) throw err;
    throw new CompileError(r, path, err);
  }
}
