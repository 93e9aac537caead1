// The Kubernetes manifests in deploy/, read as plain objects: every YAML file, what each kustomization
// reaches, and small accessors for the fields the tests check.

import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

export const REPO = path.resolve(__dirname, '../../..');
export const DEPLOY = path.join(REPO, 'deploy');

/** Parsed YAML: the tests read fields by name and compare them. */
export type Obj = Record<string, any>;

export interface Manifest {
  /** Path relative to the repository, e.g. deploy/gateways/rbac.yaml. */
  readonly file: string;
  readonly obj: Obj;
}

/** Every document of a YAML text, as objects; throws on a syntax error. */
export function parseDocs(text: string, file = '(text)'): Obj[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  }).filter((o) => o !== null && o !== undefined);
}

export function yamlFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(e.name) ? [p] : [];
  }).sort();
}

const rel = (p: string) => path.relative(REPO, p);

/** The resource files a kustomization reaches (following directories), relative to the repository. */
export function kustomizedFiles(dir: string): string[] {
  const k = parseDocs(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'))[0]!;
  return (k['resources'] as string[]).flatMap((r) => {
    const p = path.join(dir, r);
    return fs.existsSync(p) && fs.statSync(p).isDirectory() ? kustomizedFiles(p) : [rel(p)];
  });
}

/** Every object in the resource files under deploy/ (kustomizations excluded). */
export function deployManifests(): Manifest[] {
  return yamlFiles(DEPLOY)
    .filter((f) => path.basename(f) !== 'kustomization.yaml')
    .flatMap((f) => parseDocs(fs.readFileSync(f, 'utf8'), rel(f)).map((obj) => ({ file: rel(f), obj })));
}

export function find(all: readonly Manifest[], kind: string, name: string): Obj {
  const m = all.find((x) => x.obj['kind'] === kind && x.obj['metadata']?.['name'] === name);
  if (!m) throw new Error(`no ${kind} ${name} in deploy/`);
  return m.obj;
}

/** `kind namespace/name` of an object, the identity kustomize keeps. */
export function identity(o: Obj): string {
  return `${o['kind']} ${o['metadata']?.['namespace'] ?? ''}/${o['metadata']?.['name']}`;
}

/** The value after a flag in an argument list (`--flag VALUE`), or undefined. */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/**
 * Paths (a.b[0].c) where `want` has a value that `got` lacks or differs in (numbers and strings alike;
 * `got` may have more fields, and longer lists, than `want`).
 */
export function missingFrom(got: unknown, want: unknown, at = ''): string[] {
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length < want.length) return [at];
    return want.flatMap((w, i) => missingFrom(got[i], w, `${at}[${i}]`));
  }
  if (typeof want === 'object' && want !== null) {
    if (typeof got !== 'object' || got === null) return [at];
    return Object.entries(want).flatMap(([k, w]) => missingFrom((got as Obj)[k], w, at ? `${at}.${k}` : k));
  }
  return String(got) === String(want) ? [] : [at];
}
