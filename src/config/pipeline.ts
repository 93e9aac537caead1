// load -> validate, as one call: what `run` reloads and `validate` checks.

import type { ConfigIssue, Dict, Resource, ResourceSet } from './types';
import { loadPaths, type LoadResult, type SkippedObject } from './load';
import { positionOf, validate } from './validate';
import { compile, type CompileResult, type GatewayIdentity } from './compile';
import { CompileError } from './compile-error';
import { certificateIssues, type ServedCertificate } from '../tls/inspect';

export interface LoadedConfig {
  /** The typed set; undefined when nothing could be loaded at all. */
  readonly set?: ResourceSet;
  readonly issues: readonly ConfigIssue[];
  readonly infos: readonly string[];
  /** Objects of kinds meshgate does not read (files only: the Kubernetes source lists only kinds it reads). */
  readonly skipped: readonly SkippedObject[];
  readonly files: readonly string[];
  /** The objects read (every kind in the ResourceSet, Services, Secrets and ConfigMaps included); `run` logs the same count. */
  readonly resourceCount: number;
  /** Certificates the Gateways serve, with their expiry (for the expiry gauge). */
  readonly certificates: readonly ServedCertificate[];
}

export async function loadConfig(paths: readonly string[]): Promise<LoadedConfig> {
  return checkLoaded(await loadPaths(paths));
}

/** What loadConfig does once the files are read: validate, then check the served certificates. */
export function checkLoaded(loaded: LoadResult): LoadedConfig {
  const { set, issues } = validate(loaded.resources);
  const certs = set ? certificatesOf(set, issues) : { issues: [], served: [] };
  return {
    set,
    issues: [...loaded.issues, ...issues, ...certs.issues],
    certificates: certs.served,
    infos: loaded.infos,
    skipped: loaded.skipped ?? [],
    files: loaded.files,
    resourceCount: loaded.resources.length,
  };
}

/** An object left out of the config because it has errors (per-object mode). */
export interface RejectedObject {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly issues: readonly ConfigIssue[];
  /** Its last good version still serves (the Kubernetes source keeps it), rather than nothing. */
  readonly keptLastGood?: boolean;
}

export interface ValidatedObjects extends LoadedConfig {
  readonly rejected: readonly RejectedObject[];
}

export const whoKey = (x: { kind: string; namespace: string; name: string }): string => `${x.kind}/${x.namespace}/${x.name}`;

/**
 * The certificate checks read Gateways in their validated shape: a Gateway with errors (no
 * `servers`, say) has them reported already and is left out of the checks, not thrown on.
 */
function certificatesOf(set: ResourceSet, issues: readonly ConfigIssue[]): ReturnType<typeof certificateIssues> {
  const bad = new Set(issues.filter((i) => i.severity === 'error' && i.kind === 'Gateway').map(whoKey));
  if (bad.size === 0) return certificateIssues(set);
  return certificateIssues({ ...set, gateways: set.gateways.filter((g) => !bad.has(whoKey({ kind: g.kind, namespace: g.metadata.namespace, name: g.metadata.name }))) });
}

/**
 * Per-object mode (the Kubernetes source): an object with errors is left out with its issues, and
 * the rest is validated again without it (a few rounds at most: leaving one out can only remove
 * errors). Errors that name no object stay in `issues`, and the caller rejects the whole set for
 * them as the file source does.
 */
export function validateEach(resources: readonly Resource[], infos: readonly string[] = []): ValidatedObjects {
  let kept = resources;
  const rejected = new Map<string, RejectedObject>();
  let last: { set: ResourceSet; issues: ConfigIssue[]; served: ServedCertificate[] } | undefined;
  for (let round = 0; round < 4; round++) {
    const { set, issues } = validate(kept);
    const certs = certificatesOf(set, issues);
    last = { set, issues: [...issues, ...certs.issues], served: certs.served };
    const byObject = new Map<string, ConfigIssue[]>();
    for (const i of last.issues) if (i.severity === 'error' && i.kind) byObject.set(whoKey(i), [...(byObject.get(whoKey(i)) ?? []), i]);
    const present = new Set(kept.map((r) => whoKey({ kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name })));
    const bad = [...byObject.keys()].filter((k) => present.has(k));
    if (bad.length === 0) break;
    for (const k of bad) {
      const list = byObject.get(k)!;
      const i = list[0]!;
      const own = last.issues.filter((x) => whoKey(x) === k);
      rejected.set(k, { kind: i.kind, namespace: i.namespace, name: i.name, issues: own });
    }
    const out = new Set(bad);
    kept = kept.filter((r) => !out.has(whoKey({ kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name })));
  }
  const gone = new Set(rejected.keys());
  return {
    set: last!.set,
    issues: last!.issues.filter((i) => !gone.has(whoKey(i))),
    certificates: last!.served,
    infos,
    skipped: [],
    files: [],
    resourceCount: kept.length,
    rejected: [...rejected.values()],
  };
}

/**
 * compile, for the reload: a config that passed validation but that compile cannot take (a shape
 * validation missed: a meshgate bug) is not thrown out of the reload. It comes back as one error
 * issue, naming the resource and field when known (`file:line:col: Kind ns/name: path: ...`), so
 * the caller rejects it as any invalid config: the last good config keeps serving.
 */
export function compileChecked(set: ResourceSet, id: GatewayIdentity, version: number, now = new Date()): { result?: CompileResult; issues: ConfigIssue[] } {
  try {
    return { result: compile(set, id, version, now), issues: [] };
  } catch (err) {
    if (err instanceof CompileError) {
      const r = err.resource;
      const pos = positionOf(r, err.path);
      const why = err.thrown instanceof Error ? err.thrown.message : String(err.thrown);
      return {
        issues: [{
          severity: 'error', file: pos.file, line: pos.line, col: pos.col, kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name,
          path: err.path, message: `cannot be compiled (${why}); config rejected`,
        }],
      };
    }
    const why = err instanceof Error ? err.message : String(err);
    return {
      issues: [{ severity: 'error', file: '(compile)', line: 1, col: 1, kind: '', namespace: '', name: '', path: '', message: `the config cannot be compiled (${why}); config rejected` }],
    };
  }
}

/** Warnings that depend on how `run` is started, not on the config (its mesh certificates): validate leaves them out. */
const STARTUP_DEPENDENT = /mesh certificates|--mesh-certs/;

/**
 * What `run` adds to validation when it compiles the config for a gateway: compile errors, and the
 * warnings it logs (a credentialName naming no Secret, servers that cannot share a port, SNI names
 * served twice, ...). `validate` compiles once per distinct Gateway selector (each as a gateway with
 * those labels in `namespace`, where its credential Secrets live), or once as the default ingress
 * gateway when there is no Gateway; the notes come back as config issues, each once.
 */
export function compileIssues(set: ResourceSet, resources: readonly Resource[], namespace: string): ConfigIssue[] {
  const selectors = new Map<string, Dict<string>>();
  for (const g of set.gateways) {
    const labels = g.spec.selector ?? {};
    selectors.set(JSON.stringify(Object.entries(labels).sort()), labels);
  }
  if (selectors.size === 0) selectors.set('default', { istio: 'ingressgateway' });
  const byWho = new Map(resources.map((r) => [`${r.kind} ${r.metadata.namespace}/${r.metadata.name}`, r]));
  const out = new Map<string, ConfigIssue>();
  for (const labels of selectors.values()) {
    const { result, issues } = compileChecked(set, { labels, namespace, portMap: new Map(), bind: '0.0.0.0' }, 1);
    for (const i of issues) out.set(`${i.file}:${i.line}:${i.col}:${i.path}:${i.message}`, i);
    for (const n of result?.notes ?? []) {
      if (n.severity !== 'warning' || STARTUP_DEPENDENT.test(n.message)) continue;
      const r = byWho.get(n.resource);
      const at = n.at ?? r?.source ?? { file: '(compile)', line: 1, col: 1 };
      const issue: ConfigIssue = {
        severity: 'warning', file: at.file, line: at.line, col: at.col,
        kind: r?.kind ?? '', namespace: r?.metadata.namespace ?? '', name: r?.metadata.name ?? '', path: n.path ?? '',
        message: n.message.startsWith('warning: ') ? n.message : `warning: ${n.message}`,
      };
      out.set(`${issue.file}:${issue.line}:${issue.col}:${issue.path}:${issue.message}`, issue);
    }
  }
  return [...out.values()];
}

/**
 * `meshgate validate`: what loadConfig checks, then, when that found no error (run would reject the
 * config before compiling it), what compiling adds (compileIssues). `perObject`: as the Kubernetes
 * source reads the config, object by object (one object's errors leave the rest to compile).
 */
export function checkForValidate(loaded: LoadResult, namespace: string, perObject = false): LoadedConfig {
  if (perObject) {
    // The Kubernetes source leaves out an object with errors and applies the rest (validateEach):
    // every object's errors are reported, and the rest is compiled as `run` would compile it.
    const v = validateEach(loaded.resources, loaded.infos);
    const rejected = v.rejected.flatMap((r) => r.issues);
    const global = v.issues.some((i) => i.severity === 'error'); // errors naming no object reject everything
    return {
      ...v,
      issues: [...loaded.issues, ...rejected, ...v.issues, ...(v.set && !global ? compileIssues(v.set, loaded.resources, namespace) : [])],
      skipped: loaded.skipped ?? [],
      files: loaded.files,
      resourceCount: loaded.resources.length,
    };
  }
  const checked = checkLoaded(loaded);
  if (!checked.set || checked.issues.some((i) => i.severity === 'error')) return checked;
  return { ...checked, issues: [...checked.issues, ...compileIssues(checked.set, loaded.resources, namespace)] };
}

/**
 * The cluster's objects with local files applied over them, as `kubectl apply` would: a file's
 * object replaces the cluster's of the same kind, namespace and name (its problems too), and counts
 * as the newest (conflicts are won by older objects, as in Istio).
 */
export function overlay(cluster: { readonly resources: readonly Resource[]; readonly issues: readonly ConfigIssue[]; readonly infos: readonly string[] }, files: LoadResult): LoadResult {
  const key = (r: Resource) => whoKey({ kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name });
  const local = new Set(files.resources.map(key));
  const kept = cluster.resources.filter((r) => !local.has(key(r)));
  const base = kept.reduce((m, r) => Math.max(m, r.order), 0) + 1;
  return {
    resources: [...kept, ...files.resources.map((r) => ({ ...r, order: base + r.order }))],
    issues: [...cluster.issues.filter((i) => !i.kind || !local.has(whoKey(i))), ...files.issues],
    infos: [...cluster.infos, ...files.infos],
    skipped: files.skipped ?? [],
    files: files.files,
  };
}
