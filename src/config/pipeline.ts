// load -> validate, as one call: what `run` reloads and `validate` checks.

import type { ConfigIssue, ResourceSet } from './types';
import { loadPaths } from './load';
import { validate } from './validate';
import { certificateIssues, type ServedCertificate } from '../tls/inspect';

export interface LoadedConfig {
  /** The typed set; undefined when nothing could be loaded at all. */
  readonly set?: ResourceSet;
  readonly issues: readonly ConfigIssue[];
  readonly infos: readonly string[];
  readonly files: readonly string[];
  readonly resourceCount: number;
  /** Certificates the Gateways serve, with their expiry (for the expiry gauge). */
  readonly certificates: readonly ServedCertificate[];
}

export async function loadConfig(paths: readonly string[]): Promise<LoadedConfig> {
  const loaded = await loadPaths(paths);
  const { set, issues } = validate(loaded.resources);
  const certs = set ? certificateIssues(set) : { issues: [], served: [] };
  return {
    set,
    issues: [...loaded.issues, ...issues, ...certs.issues],
    certificates: certs.served,
    infos: loaded.infos,
    files: loaded.files,
    resourceCount: loaded.resources.length,
  };
}
