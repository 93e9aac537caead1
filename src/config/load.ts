// YAML files -> resources with the position of every field. Multi-document files, `kind: List`,
// directories (recursive). Kinds meshgate does not read are skipped and listed (`skipped`).
// Never throws on bad input: syntax errors become issues and the other documents still load.

import fs from 'node:fs';
import { LineCounter, parseAllDocuments, isMap, isSeq, isPair, isScalar, type Node } from 'yaml';
import type { ConfigIssue, ObjectMeta, Resource, SourcePos } from './types';
import { listConfigFiles } from '../sources/files';
import { asError } from '../errors';

export const ISTIO_KINDS = new Set(['Gateway', 'VirtualService', 'DestinationRule', 'ServiceEntry', 'WorkloadEntry', 'Sidecar']);
export const ISTIO_VERSIONS = new Set(['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3']);
const CORE_KINDS = new Set(['Service', 'Secret', 'ConfigMap']);

/** Max size of one config file: larger files are refused (bounded parsing). */
export const MAX_FILE_BYTES = 8 * 1024 * 1024;

/** An object of a kind meshgate does not read (Deployment, ServiceAccount, ...), left out. */
export interface SkippedObject {
  readonly file: string;
  readonly line: number;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

export interface LoadResult {
  readonly resources: Resource[];
  readonly issues: ConfigIssue[];
  /** One line per skipped object (`file:line: skipped Kind ns/name (not a kind meshgate reads)`). */
  readonly infos: string[];
  /** The skipped objects themselves, for the summaries (skippedKinds). */
  readonly skipped?: SkippedObject[];
  readonly files: string[];
}

/** The kinds of skipped objects with their counts, alphabetical: `Deployment x6, ServiceAccount x4`. */
export function skippedKinds(skipped: readonly SkippedObject[]): string {
  const counts = new Map<string, number>();
  for (const s of skipped) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
  return [...counts].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([k, n]) => `${k} x${n}`).join(', ');
}

function issue(pos: SourcePos, message: string, r?: { kind: string; namespace: string; name: string }, path = '', severity: 'error' | 'warning' = 'error'): ConfigIssue {
  return { severity, file: pos.file, line: pos.line, col: pos.col, kind: r?.kind ?? '', namespace: r?.namespace ?? '', name: r?.name ?? '', path, message };
}

/**
 * Where the text of a literal block scalar (`key: |`) starts: the line after its header, at its
 * indentation. Its lines are the file's lines one for one (YAML inside YAML, as the mesh config,
 * is reported from there). Undefined for other scalars, whose text does not map line for line.
 */
function blockTextStart(node: unknown, text: string, posOf: (offset: number) => SourcePos): SourcePos | undefined {
  if (!isScalar(node) || node.type !== 'BLOCK_LITERAL' || !node.range) return undefined;
  const nl = text.indexOf('\n', node.range[0]);
  if (nl < 0) return undefined;
  const indent = /(?:[ \t]*\r?\n)*( *)/y; // blank lines, then the first text line's indentation
  indent.lastIndex = nl + 1;
  return { ...posOf(nl + 1), col: (indent.exec(text)?.[1]?.length ?? 0) + 1 };
}

/**
 * Record the position of every field under `node`: a map key's position stands for its field. A
 * field holding a literal block scalar also gets `path|`: where its text starts (blockTextStart).
 */
function collectPositions(node: Node | null | undefined, path: string, out: Map<string, SourcePos>, posOf: (offset: number) => SourcePos, text: string, depth = 0): void {
  if (!node || depth > 64) return;
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const child = path ? `${path}.${key}` : key;
      const keyNode = pair.key as Node | null;
      const at = keyNode?.range?.[0] ?? (pair.value as Node | null)?.range?.[0];
      if (at !== undefined) out.set(child, posOf(at));
      const block = blockTextStart(pair.value, text, posOf);
      if (block) out.set(`${child}|`, block);
      collectPositions(pair.value as Node | null, child, out, posOf, text, depth + 1);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      const child = `${path}[${i}]`;
      const at = (item as Node | null)?.range?.[0];
      if (at !== undefined) out.set(child, posOf(at));
      collectPositions(item as Node | null, child, out, posOf, text, depth + 1);
    });
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A field set to null is a field left out, as the Kubernetes API server prunes it: null mapping
 * values are dropped, recursively (list items stay, for the schema to report). Own keys only are
 * made (`__proto__` stays a key).
 */
export function withoutNulls(v: unknown, depth = 0): unknown {
  if (typeof v !== 'object' || v === null || depth > 64) return v;
  if (Array.isArray(v)) return v.map((x) => withoutNulls(x, depth + 1));
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, withoutNulls(x, depth + 1)]));
}

/** Parse one file's text. `order` continues across files so resources keep their load order. */
export function loadText(text: string, file: string, orderStart = 0): LoadResult & { nextOrder: number } {
  const resources: Resource[] = [];
  const issues: ConfigIssue[] = [];
  const infos: string[] = [];
  const skipped: SkippedObject[] = [];
  let order = orderStart;
  const lc = new LineCounter();
  let docs;
  try {
    docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true });
  } catch (err) {
    issues.push(issue({ file, line: 1, col: 1 }, `cannot parse YAML: ${asError(err).message}`));
    return { resources, issues, infos, skipped, files: [file], nextOrder: order };
  }
  const posOf = (offset: number): SourcePos => {
    const p = lc.linePos(offset);
    return { file, line: p.line, col: p.col };
  };
  const list = Array.isArray(docs) ? docs : [docs];
  for (const doc of list) {
    const start = posOf(doc.contents?.range?.[0] ?? doc.range?.[0] ?? 0);
    if (doc.errors.length > 0) {
      for (const e of doc.errors) issues.push(issue(e.linePos ? { file, line: e.linePos[0].line, col: e.linePos[0].col } : start, `YAML syntax: ${e.message.split('\n')[0]}`));
      continue;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      issues.push(issue(start, `YAML: ${asError(err).message}`));
      continue;
    }
    if (value === null || value === undefined) continue;
    // A `kind: List` gets one position map per item, collected from the item's own node, so loading
    // stays linear in the document's size (not items x fields).
    const items: { value: unknown; pos: SourcePos; positions: Map<string, SourcePos> }[] = [];
    const listItems = isObject(value) && value['kind'] === 'List' && Array.isArray(value['items']) ? value['items'] : undefined;
    const itemsNode = listItems && isMap(doc.contents) ? doc.contents.get('items', true) : undefined;
    if (listItems) {
      const nodes = isSeq(itemsNode) ? itemsNode.items : [];
      listItems.forEach((item, i) => {
        const node = nodes[i] as Node | null | undefined;
        const positions = new Map<string, SourcePos>();
        collectPositions(node, '', positions, posOf, text);
        const at = node?.range?.[0];
        items.push({ value: item, pos: at !== undefined ? posOf(at) : start, positions });
      });
    } else {
      const positions = new Map<string, SourcePos>();
      collectPositions(doc.contents as Node, '', positions, posOf, text);
      items.push({ value, pos: start, positions });
    }
    for (const it of items) {
      order += 1;
      const r = toResource(it.value, it.pos, '', it.positions, order, issues, infos, skipped);
      if (r) resources.push(r);
    }
  }
  return { resources, issues, infos, skipped, files: [file], nextOrder: order };
}

/** One parsed document (or API object) -> a resource, or undefined with an issue or info line. */
export function toResource(
  value: unknown, pos: SourcePos, prefix: string, allPositions: Map<string, SourcePos>, order: number,
  issues: ConfigIssue[], infos: string[], skipped?: SkippedObject[],
): Resource | undefined {
  if (!isObject(value)) {
    issues.push(issue(pos, 'a document must be a mapping with apiVersion, kind and metadata'));
    return undefined;
  }
  const kind = typeof value['kind'] === 'string' ? value['kind'] : '';
  const apiVersion = typeof value['apiVersion'] === 'string' ? value['apiVersion'] : '';
  const md = isObject(value['metadata']) ? value['metadata'] : {};
  const name = typeof md['name'] === 'string' ? md['name'] : '';
  const namespace = typeof md['namespace'] === 'string' && md['namespace'] ? md['namespace'] : 'default';
  const who = { kind, namespace, name };
  if (!kind) {
    issues.push(issue(pos, 'missing kind', who, 'kind'));
    return undefined;
  }
  const istio = ISTIO_KINDS.has(kind);
  const core = CORE_KINDS.has(kind) && apiVersion === 'v1';
  if (!istio && !core) {
    infos.push(`${pos.file}:${pos.line}: skipped ${kind} ${namespace}/${name || '?'} (not a kind meshgate reads)`);
    skipped?.push({ file: pos.file, line: pos.line, kind, namespace, name });
    return undefined;
  }
  if (istio && !ISTIO_VERSIONS.has(apiVersion)) {
    issues.push(issue(pos, `apiVersion "${apiVersion}" is not served for ${kind}; use networking.istio.io/v1, v1beta1 or v1alpha3`, who, 'apiVersion'));
    return undefined;
  }
  if (!name) {
    issues.push(issue(pos, 'missing metadata.name', who, 'metadata.name'));
    return undefined;
  }
  // With no prefix the map is the object's own (the loader builds one per object): no copy.
  let positions = allPositions;
  if (prefix) {
    positions = new Map<string, SourcePos>();
    for (const [k, p] of allPositions) if (k.startsWith(prefix)) positions.set(k.slice(prefix.length), p);
  }
  const metadata: ObjectMeta = {
    name,
    namespace,
    labels: isObject(md['labels']) ? (md['labels'] as Record<string, string>) : undefined,
    annotations: isObject(md['annotations']) ? (md['annotations'] as Record<string, string>) : undefined,
    creationTimestamp: typeof md['creationTimestamp'] === 'string' ? md['creationTimestamp'] : undefined,
  };
  let spec: unknown;
  if (kind === 'Secret' || kind === 'ConfigMap') {
    spec = { type: value['type'], data: value['data'], stringData: value['stringData'] };
  } else {
    spec = withoutNulls(value['spec'] ?? {});
  }
  return { kind, apiVersion, metadata, spec, source: pos, positions, order };
}

/** Load YAML files and directories (recursive). */
export async function loadPaths(paths: readonly string[]): Promise<LoadResult> {
  const resources: Resource[] = [];
  const issues: ConfigIssue[] = [];
  const infos: string[] = [];
  const skipped: SkippedObject[] = [];
  const files = listConfigFiles(paths);
  for (const p of paths) {
    if (!fs.existsSync(p)) issues.push(issue({ file: p, line: 1, col: 1 }, 'no such file or directory'));
  }
  let order = 0;
  for (const file of files) {
    let text: string;
    try {
      const st = await fs.promises.stat(file);
      if (st.size > MAX_FILE_BYTES) {
        issues.push(issue({ file, line: 1, col: 1 }, `file is larger than ${MAX_FILE_BYTES} bytes; refused`));
        continue;
      }
      text = await fs.promises.readFile(file, 'utf8');
    } catch (err) {
      issues.push(issue({ file, line: 1, col: 1 }, `cannot read: ${asError(err).message}`));
      continue;
    }
    const r = loadText(text, file, order);
    order = r.nextOrder;
    resources.push(...r.resources);
    issues.push(...r.issues);
    infos.push(...r.infos);
    skipped.push(...(r.skipped ?? []));
  }
  return { resources, issues, infos, skipped, files };
}
