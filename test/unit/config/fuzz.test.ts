// Structural fuzzing of the config pipeline. The Istio samples and meshgate's own config files are
// parsed, mutated (a node replaced by a value of the wrong shape, an extreme number, a pathological
// duration, regex or host; keys deleted, renamed, added; documents duplicated, kinds swapped; the
// mesh config's embedded YAML too), written back as YAML and put through what `meshgate validate`
// and a reload do: load, pipeline.checkLoaded (validate, certificate checks), validateEach (the
// Kubernetes source), compile. Deterministic: a fixed seed, a bounded count and a time budget.
// Checked: nothing throws; every problem names a file, a line inside it and (when it names a
// resource) a field path; what validation accepts compiles to a usable snapshot; no case takes 1 s.
// To explore: FUZZ_SEED, FUZZ_CASES, FUZZ_BUDGET_MS; FUZZ_DUMP=dir writes failing cases; FUZZ_STATS=1.

import assert from 'node:assert/strict';
import { mulberry32 } from '../../helpers/random';
import { MAX_TIMER_MS } from '../../../src/config/names';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseAllDocuments, parseDocument, stringify } from 'yaml';
import { loadText, type LoadResult } from '../../../src/config/load';
import { checkLoaded, validateEach } from '../../../src/config/pipeline';
import { compile, type GatewayIdentity } from '../../../src/config/compile';
import { formatIssue } from '../../../src/config/format';
import { SCHEMAS, schemaRoot, type Schema } from '../../../src/config/schema';
import type { ConfigIssue } from '../../../src/config/types';
import { listConfigFiles } from '../../../src/sources/files';

const ROOT = path.resolve(__dirname, '../../../..');
const SEED_DIRS = [
  path.resolve(ROOT, '../shared/istio-samples/samples'),
  path.join(ROOT, 'config'),
  path.join(ROOT, 'test/fixtures/config'),
];

const SEED = Number(process.env['FUZZ_SEED'] ?? 0x6d657368);
const CASES = Number(process.env['FUZZ_CASES'] ?? 2500);
const BUDGET_MS = Number(process.env['FUZZ_BUDGET_MS'] ?? 15_000);
const SLOW_MS = 1000;

const gatewayId: GatewayIdentity = { labels: { istio: 'ingressgateway', app: 'istio-ingressgateway' }, namespace: 'istio-system', portMap: new Map(), bind: '0.0.0.0' };
const sidecarId: GatewayIdentity = {
  labels: { app: 'productpage', version: 'v1' }, namespace: 'default', portMap: new Map(), bind: '127.0.0.1', capturePort: 15001, inboundPort: 15006,
};
const fallbackId: GatewayIdentity = { ...sidecarId, fallback: [{ app: 9080, listen: 15100 }, { app: 80, listen: 15101 }] };

// ------------------------------------------------------------------ deterministic randomness

type Rng = () => number;


const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <T>(rng: Rng, list: readonly T[]): T => list[int(rng, list.length)]!;
const chance = (rng: Rng, p: number) => rng() < p;

// ------------------------------------------------------------------ seeds

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

interface SeedFile { readonly file: string; readonly text: string; readonly docs: Json[] }

function loadSeeds(): SeedFile[] {
  const out: SeedFile[] = [];
  for (const file of listConfigFiles(SEED_DIRS.filter((d) => fs.existsSync(d)))) {
    const text = fs.readFileSync(file, 'utf8');
    const docs: Json[] = [];
    for (const d of parseAllDocuments(text)) {
      if (d.errors.length > 0) continue;
      const v = d.toJS({ maxAliasCount: 100 }) as Json;
      if (v !== null && v !== undefined) docs.push(v);
    }
    out.push({ file, text, docs });
  }
  return out;
}

const clone = (v: Json): Json => (v === null || typeof v !== 'object' ? v : JSON.parse(JSON.stringify(v)));

/** Every (container, key) slot under `v`: what a mutation may replace or delete. */
function slotsOf(v: Json, out: { parent: Json[] | Obj; key: number | string; depth: number }[] = [], depth = 0): typeof out {
  if (depth > 40) return out;
  if (Array.isArray(v)) v.forEach((c, i) => { out.push({ parent: v, key: i, depth }); slotsOf(c, out, depth + 1); });
  else if (isObj(v)) for (const k of Object.keys(v)) { out.push({ parent: v, key: k, depth }); slotsOf(v[k]!, out, depth + 1); }
  return out;
}

// ------------------------------------------------------------------ the values a mutation puts in

const DURATIONS = [
  '-1s', '1e400s', '9999999999h', '1.5.5s', '0', '0s', '.5s', '5.s', '5', 's', '1h-1m', '1d', '1 s', ' 1s', '1S', '+1s', '0x10s',
  `1${'0'.repeat(400)}s`, `0.${'0'.repeat(300)}1ns`, '1s'.repeat(3000), '1µs', '1us1ns1ms1s1m1h', 'NaNs', 'Infinitys', '-0s', '999999999999999999999ms',
];
const REGEXES = [
  '(', ')', '[', '[a-', '*', '+', '?', '(?=x)', '(?!x)', '(?<=x)', '\\', '\\8', '\\C', '\\p{Foo}', '\\pN', '[[:foo:]]', 'a{1001}', 'a{1000}',
  'a{2,1}', '(a*)*b', '(a|a)*b', '((a{100}){100}){100}', '(?:(?:(?:a{10}){10}){10}){10}', 'a{1000}{1000}', `${'('.repeat(1200)}a${')'.repeat(1200)}`,
  '(?P<n>a)(?P<n>b)', '(?i)ǅ', '.*', '^/api/.*$', '[\\d-z]', '\u0000', '(?', 'x**', `${'[a-z]{0,100}'.repeat(20)}`, '\\Q*\\E', '(?U)a+',
];
const HOSTS = [
  '*', '', '..', '.', '/', '*/', '*/*', './*', '~/*', 'ns/', '/host', '*.', '*.*', '**', 'a*', 'a.*.b', '*.example.com', '-a-.com', 'a..b',
  'ÜNÏCÖDÉ.例え.テスト', 'xn--e1afmkfd.xn--p1ai', `${'a'.repeat(300)}.com`, `${'a.'.repeat(200)}com`, '1.2.3.4', '::1', '[::1]', '1.2.3.4/33', '0.0.0.0/0',
  '::/0', '300.1.1.1', 'mesh', 'reviews', 'reviews.default.svc.cluster.local', 'host:80', 'istio-system/gw', 'UPPER.Example.COM', '\t', ' a ',
];
const NUMBERS: Json[] = [0, -1, 1, 80, 443, 65535, 65536, 2 ** 31, 2 ** 32, 2 ** 53 + 2, -(2 ** 53), 1e308, -1e308, 1.5, 0.1, -0, 5e-324, NaN, Infinity, -Infinity];
const STRINGS: Json[] = [
  '', ' ', 'x', 'null', 'true', '80', '0x50', '1e3', '-1', 'NaN', '~', 'a'.repeat(20_000), 'ünï\u200bcödé', '\u0000', '\ud800', '${x}', '%{x}', '%START_TIME%',
  '[%', 'a/b', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'HTTP', 'TLS', 'HTTPS', 'TCP', 'PASSTHROUGH', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL',
  'AUTO_PASSTHROUGH', 'DNS', 'STATIC', 'NONE', 'REGISTRY_ONLY', 'JSON', 'default', 'istio-system',
];

function nested(rng: Rng, depth: number): Json {
  let v: Json = pick(rng, [null, 1, 'x', [], {}] as Json[]);
  for (let i = 0; i < depth; i++) v = chance(rng, 0.5) ? [v] : { a: v };
  return v;
}

/** An object with keys JavaScript treats specially, as own keys (a literal `__proto__` would set the prototype). */
function specialKeys(): Json {
  return JSON.parse('{"__proto__": {"polluted": 1}, "constructor": {"prototype": 1}, "toString": 1, "valueOf": "x", "": 1}') as Json;
}

function randomValue(rng: Rng, current: Json, donors: readonly Json[]): Json {
  switch (int(rng, 14)) {
    case 0: return null;
    case 1: return pick(rng, NUMBERS);
    case 2: return chance(rng, 0.5);
    case 3: return pick(rng, STRINGS);
    case 4: return pick(rng, DURATIONS);
    case 5: return pick(rng, REGEXES);
    case 6: return pick(rng, HOSTS);
    case 7: return [];
    case 8: {
      // A huge list of small items (a huge list of huge items only measures the YAML parser).
      const item = current !== undefined && JSON.stringify(current).length <= 200 ? current : 'x';
      return Array.from({ length: pick(rng, [2, 50, 500, 1000]) }, () => clone(item ?? 'x'));
    }
    case 9: return chance(rng, 0.7) ? {} : specialKeys();
    case 10: return nested(rng, pick(rng, [10, 60, 70, 200]));
    case 11: return [clone(current)];
    case 12: return { [pick(rng, ['exact', 'prefix', 'regex', 'number', 'name', 'host', 'mode'])]: clone(current) };
    default: return transplant(rng, donors);
  }
}

/**
 * A value of the same sort as the one replaced (a duration for a duration, a host for a host, a
 * number for a number): the mutation most likely to pass the schema and reach compile.
 */
function sameSort(rng: Rng, key: string | number, current: Json): Json | undefined {
  if (typeof current === 'number') return pick(rng, NUMBERS);
  if (typeof current === 'boolean') return !current;
  if (typeof current !== 'string') return undefined;
  if (/^(regex|match)$/.test(String(key))) return pick(rng, REGEXES);
  if (/^[\d.]+(ns|us|µs|ms|s|m|h)$/.test(current)) return pick(rng, DURATIONS);
  if (/host|^\d+$/i.test(String(key)) || current.includes('.')) return pick(rng, HOSTS);
  return pick(rng, STRINGS);
}

/** A random subtree from another seed document: a realistic value in the wrong place. */
function transplant(rng: Rng, donors: readonly Json[]): Json {
  const d = pick(rng, donors);
  const slots = slotsOf(d);
  if (slots.length === 0) return clone(d);
  const s = pick(rng, slots);
  return clone((s.parent as Record<string | number, Json>)[s.key]!);
}

// ------------------------------------------------------------------ schema-guided values

/** A value for a field of schema `s`: mostly of its type, at its edges (boundaries, huge, pathological). */
function valueFor(rng: Rng, s: Schema, donors: readonly Json[], depth = 0): Json {
  if (chance(rng, 0.1) || depth > 6) return randomValue(rng, null, donors);
  switch (s.t) {
    case 'dur': return pick(rng, [...DURATIONS, '1s', '0.001ms', '1000h', '2562047h', '2562048h', '720h', '24h1ns']);
    case 'regex': return pick(rng, REGEXES);
    case 'int':
    case 'num': return pick(rng, [...NUMBERS, ...[s.min, s.max].filter((x): x is number => x !== undefined).flatMap((x) => [x, x - 1, x + 1])]);
    case 'str': return pick(rng, [...HOSTS, ...STRINGS]);
    case 'bool': return chance(rng, 0.5);
    case 'enum': return pick(rng, [...s.v, 'bogus', s.v[0]!.toLowerCase()]);
    case 'intOrStr': return pick(rng, [...NUMBERS, 'http', 'web', '', '8080']);
    case 'any': return randomValue(rng, null, donors);
    case 'arr': {
      const n = depth === 0 ? pick(rng, [0, 1, 2, 3, 300]) : pick(rng, [0, 1, 2]);
      return Array.from({ length: n }, () => valueFor(rng, s.of, donors, depth + 1));
    }
    case 'map': {
      const o: Obj = {};
      for (const k of [pick(rng, ['a', 'app', 'version', 'tls.crt', 'mesh', 'X-Header', '']), ...(chance(rng, 0.3) ? ['b'] : [])]) o[k] = valueFor(rng, s.of, donors, depth + 1);
      return o;
    }
    case 'obj': {
      const o: Obj = {};
      const names = Object.keys(s.f);
      for (const k of s.req ?? []) o[k] = valueFor(rng, s.f[k]!, donors, depth + 1);
      for (let i = 0, n = int(rng, 3); i < n; i++) {
        const k = pick(rng, names);
        o[k] = valueFor(rng, s.f[k]!, donors, depth + 1);
      }
      return o;
    }
  }
}

/** The mapping nodes of a document with the object schema each one is checked against. */
function schemaSlots(v: Json, s: Schema, out: { node: Obj; schema: Extract<Schema, { t: 'obj' }> }[] = [], depth = 0): typeof out {
  if (depth > 30) return out;
  if (s.t === 'obj' && isObj(v)) {
    out.push({ node: v, schema: s });
    for (const [k, x] of Object.entries(v)) if (Object.hasOwn(s.f, k)) schemaSlots(x, s.f[k]!, out, depth + 1);
  } else if (s.t === 'arr' && Array.isArray(v)) {
    for (const x of v) schemaSlots(x, s.of, out, depth + 1);
  } else if (s.t === 'map' && isObj(v)) {
    for (const x of Object.values(v)) schemaSlots(x, s.of, out, depth + 1);
  }
  return out;
}

/** Set one field the schema knows, somewhere in the document, to an edge value of its type. */
function mutateBySchema(rng: Rng, doc: Json, donors: readonly Json[]): boolean {
  if (!isObj(doc) || typeof doc['kind'] !== 'string') return false;
  const schema = SCHEMAS[doc['kind']];
  if (!schema || !Object.hasOwn(SCHEMAS, doc['kind'])) return false;
  const root = schemaRoot(doc['kind']) ? (doc['spec'] ??= {}) : doc;
  const slots = schemaSlots(root, schema);
  if (slots.length === 0) return false;
  // Every field the schema knows at those places; the scalar ones with edge values to find are preferred.
  const fields = slots.flatMap(({ node, schema: os }) => Object.keys(os.f).map((k) => ({ node, k, s: os.f[k]! })));
  const want = pick(rng, ['dur', 'regex', 'int', 'num', 'str', 'intOrStr', '']);
  const of = fields.filter((f) => f.s.t === want);
  const { node, k, s } = pick(rng, of.length > 0 ? of : fields);
  node[k] = valueFor(rng, s, donors);
  return true;
}

// ------------------------------------------------------------------ mutations

const KINDS = ['Gateway', 'VirtualService', 'DestinationRule', 'ServiceEntry', 'WorkloadEntry', 'Sidecar', 'Service', 'Secret', 'ConfigMap', 'List', 'Deployment', ''];
const API_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3', 'v1', 'networking.istio.io/v2', ''];

function mutateNode(rng: Rng, doc: Json, donors: readonly Json[], keys: readonly string[]): void {
  const slots = slotsOf(doc);
  if (slots.length === 0) return;
  // Deeper nodes are where the schema is most detailed: bias towards them.
  const s = chance(rng, 0.5) ? pick(rng, slots) : slots.reduce((a, b) => (b.depth > a.depth && chance(rng, 0.3) ? b : a), pick(rng, slots));
  const parent = s.parent as Record<string | number, Json>;
  const op = int(rng, 10);
  if (op === 0 && !Array.isArray(s.parent)) {
    delete parent[s.key]; // a required key, often
  } else if (op === 1 && !Array.isArray(s.parent)) {
    const k = String(s.key);
    const typo = k.length > 1 ? k.slice(0, -1) : `${k}x`;
    (s.parent as Obj)[typo] = parent[s.key]!;
    delete parent[s.key];
  } else if (op === 2 && isObj(parent[s.key])) {
    (parent[s.key] as Obj)[pick(rng, keys)] = randomValue(rng, null, donors);
  } else if (op === 3 && Array.isArray(s.parent)) {
    s.parent.splice(s.key as number, 0, clone(parent[s.key]!)); // a duplicate list item (names, ports, subsets)
  } else {
    const like = chance(rng, 0.5) ? sameSort(rng, s.key, parent[s.key]!) : undefined;
    parent[s.key] = like !== undefined ? like : randomValue(rng, parent[s.key]!, donors);
  }
}

/** The embedded mesh config of ConfigMap istio-system/istio: mutated as YAML inside YAML. */
function mutateMesh(rng: Rng, doc: Obj, donors: readonly Json[], keys: readonly string[]): void {
  const data = doc['data'];
  if (!isObj(data) || typeof data['mesh'] !== 'string') return;
  let mesh: Json;
  try {
    mesh = parseDocument(data['mesh']).toJS() as Json;
  } catch {
    return;
  }
  if (!isObj(mesh)) mesh = {};
  const meshKeys = ['accessLogFile', 'accessLogEncoding', 'accessLogFormat', 'connectTimeout', 'outboundTrafficPolicy', 'dnsRefreshRate', 'protocolDetectionTimeout',
    'enableAutoMtls', 'enableTracing', 'defaultHttpRetryPolicy', 'defaultConfig', 'unknownField'];
  for (let i = 0, n = 1 + int(rng, 3); i < n; i++) {
    if (chance(rng, 0.5)) mesh[pick(rng, meshKeys)] = randomValue(rng, null, donors);
    else mutateNode(rng, mesh, donors, keys);
  }
  // Mostly a block scalar (`mesh: |-`); sometimes one line (a quoted scalar on the key's own line).
  const broken = chance(rng, 0.3);
  data['mesh'] = chance(rng, 0.4) ? `${JSON.stringify(mesh)}${broken ? ' ]' : ''}` : `${stringify(mesh)}${broken ? '\n  bad: [indent' : ''}`;
}

function mutateDocs(rng: Rng, docs: Json[], donors: readonly Json[], keys: readonly string[]): Json[] {
  const n = 1 + int(rng, 4);
  for (let i = 0; i < n; i++) {
    if (docs.length === 0) return docs;
    const di = int(rng, docs.length);
    const doc = docs[di]!;
    const op = docs.some((d) => isObj(d) && d['kind'] === 'ConfigMap') && chance(rng, 0.3) ? 7 : int(rng, 20);
    if (op === 0) {
      docs.push(clone(doc)); // the same kind/namespace/name twice
    } else if (op === 1 && isObj(doc)) {
      doc['kind'] = pick(rng, KINDS);
      if (chance(rng, 0.5)) doc['apiVersion'] = pick(rng, API_VERSIONS);
    } else if (op === 2 && isObj(doc)) {
      delete doc[pick(rng, ['kind', 'apiVersion', 'metadata', 'spec', 'data'])];
    } else if (op === 3 && isObj(doc) && isObj(doc['metadata'])) {
      const md = doc['metadata'];
      if (chance(rng, 0.5)) md['name'] = pick(rng, [...HOSTS, null, 1, [], {}] as Json[]);
      else md['namespace'] = pick(rng, ['', 'istio-system', 'default', 'bookinfo', '*', '.', '~', null, 7] as Json[]);
    } else if (op === 4) {
      docs.push(clone(pick(rng, donors))); // documents from another file
    } else if (op === 5) {
      docs[di] = { apiVersion: 'v1', kind: 'List', items: [clone(doc), chance(rng, 0.5) ? clone(pick(rng, donors)) : randomValue(rng, null, donors)] };
    } else if (op === 6 && chance(rng, 0.2)) {
      docs[di] = randomValue(rng, doc, donors); // the whole document
    } else if (op === 7 && docs.some((d) => isObj(d) && d['kind'] === 'ConfigMap')) {
      mutateMesh(rng, docs.find((d) => isObj(d) && d['kind'] === 'ConfigMap') as Obj, donors, keys);
    } else if (op >= 8 && op <= 13 && mutateBySchema(rng, doc, donors)) {
      // done
    } else {
      mutateNode(rng, doc, donors, keys);
    }
  }
  return docs;
}

/** Text-level damage, now and then: what a structural mutation cannot produce (syntax, aliases, duplicate keys). */
function mutateText(rng: Rng, text: string): string {
  const lines = text.split('\n');
  const i = int(rng, lines.length);
  switch (int(rng, 6)) {
    case 0: lines.splice(i, 0, lines[i] ?? ''); break; // duplicate key
    case 1: lines.splice(i, 1); break;
    case 2: lines[i] = `\t${lines[i]}`; break;
    case 3: return text.slice(0, int(rng, text.length));
    case 4: lines[i] = `${lines[i]} &a`; lines.push('extra: *a', 'more: *nope'); break;
    default: lines.splice(i, 0, '<<: {merged: 1}'); break;
  }
  return lines.join('\n');
}

function serialise(rng: Rng, docs: Json[]): string {
  return docs.map((d) => stringify(d, { lineWidth: chance(rng, 0.5) ? 0 : 80, aliasDuplicateObjects: false })).join('---\n');
}

// ------------------------------------------------------------------ one case, as `validate` and a reload run it

interface Failure { readonly what: string; readonly detail: string; readonly files: Record<string, string> }

const lineCounts = new WeakMap<Record<string, string>, Map<string, number>>();

function checkIssue(i: ConfigIssue, files: Record<string, string>): string | undefined {
  const text = files[i.file];
  if (text === undefined) return `names file "${i.file}", not one of the config files`;
  let counts = lineCounts.get(files);
  // Lines of text (a final newline ends the last line, it does not start one); the end of the file is line+1, column 1.
  if (!counts) lineCounts.set(files, counts = new Map(Object.entries(files).map(([f, t]) => [f, t.split('\n').length - (t.endsWith('\n') ? 1 : 0)])));
  const lines = counts.get(i.file)!;
  const atEnd = i.line === lines + 1 && i.col === 1;
  if (!Number.isInteger(i.line) || i.line < 1 || (i.line > lines && !atEnd)) return `line ${i.line} is outside ${i.file} (1..${lines})`;
  if (!Number.isInteger(i.col) || i.col < 1) return `column ${i.col} is not positive`;
  if (i.kind && !i.path) return 'names a resource but no field path';
  if (i.severity !== 'error' && i.severity !== 'warning') return `severity ${String(i.severity)}`;
  if (typeof i.message !== 'string' || i.message === '') return 'no message';
  if (/\[object Object\]|number null|\bundefined\b/.test(i.message)) return 'the message shows a value wrongly';
  formatIssue(i);
  return undefined;
}

/** Node's timers hold 32-bit milliseconds: a longer delay fires after 1 ms. */

/**
 * What the data path does with a compiled snapshot must be possible: every `...Ms` value a timer
 * Node can set (a finite 0..2^31-1), every port (listeners, clusters, endpoints) one that can be
 * bound or dialled (an integer 1..65535); every number finite; no data field a function.
 */
function snapshotProblems(snapshot: unknown): string[] {
  const out: string[] = [];
  const seen = new Set<unknown>();
  const walk = (v: unknown, where: string, depth: number): void => {
    if (typeof v !== 'object' || v === null || seen.has(v) || depth > 30 || out.length > 5) return;
    seen.add(v);
    const entries: [string, unknown][] = v instanceof Map ? [...v.entries()].map(([k, x]) => [String(k), x])
      : Array.isArray(v) ? v.map((x, i) => [String(i), x]) : Object.entries(v);
    for (const [k, x] of entries) {
      const at = `${where}.${k}`;
      if (typeof x === 'number' && /Ms$/.test(k) && !(Number.isFinite(x) && x >= 0 && x <= MAX_TIMER_MS)) out.push(`${at} = ${x} (not a timer delay)`);
      if (typeof x === 'number' && !Number.isFinite(x)) out.push(`${at} = ${x} (not a finite number)`);
      if (typeof x === 'function' && !/^(check|matches|replaceAll)$/.test(k)) out.push(`${at} is a function (a prototype member read as data)`);
      if (typeof x === 'number' && /^(port|listen|originalDstPort)$/.test(k) && !(Number.isInteger(x) && x >= 1 && x <= 65535)) out.push(`${at} = ${x} (not a port)`);
      walk(x, at, depth + 1);
    }
  };
  walk(snapshot, 'snapshot', 0);
  return out;
}

const stats = { cases: 0, accepted: 0, acceptedPerObject: 0, issues: 0, slowestMs: 0 };

function runCase(files: Record<string, string>, fail: (what: string, detail: string) => void): void {
  stats.cases += 1;
  // loadConfig on texts instead of paths: each file loaded (order continues across files), then checkLoaded.
  const loaded: LoadResult = { resources: [], issues: [], infos: [], files: [] };
  let order = 0;
  for (const [file, text] of Object.entries(files)) {
    const r = loadText(text, file, order);
    order = r.nextOrder;
    loaded.resources.push(...r.resources);
    loaded.issues.push(...r.issues);
    loaded.infos.push(...r.infos);
    loaded.files.push(file);
  }
  const config = checkLoaded(loaded);
  const issues = config.issues;
  const resources = loaded.resources;
  for (const i of issues) {
    const bad = checkIssue(i, files);
    if (bad) fail('bad report', `${bad}: ${JSON.stringify(i).slice(0, 400)}`);
  }
  stats.issues += issues.length;
  if (!issues.some((i) => i.severity === 'error')) {
    stats.accepted += 1;
    for (const [label, id] of [['gateway', gatewayId], ['sidecar', sidecarId], ['fallback', fallbackId]] as const) {
      try {
        const problems = snapshotProblems(compile(config.set!, id, 1).snapshot);
        if (problems.length > 0) fail(`compile (${label}) made an unusable snapshot`, problems.join('; '));
      } catch (err) {
        fail(`compile (${label}) threw on a config validation accepted`, (err as Error).stack?.split('\n').slice(0, 4).join(' | ') ?? String(err));
      }
    }
  }
  // The Kubernetes source: objects with errors are left out, the rest must compile.
  const each = validateEach(resources);
  for (const i of [...each.issues, ...each.rejected.flatMap((r) => r.issues)]) {
    const bad = checkIssue(i, files);
    if (bad) fail('bad report (per-object)', `${bad}: ${JSON.stringify(i).slice(0, 400)}`);
  }
  if (each.set && !each.issues.some((i) => i.severity === 'error')) {
    stats.acceptedPerObject += 1;
    try {
      compile(each.set, gatewayId, 1);
      compile(each.set, sidecarId, 1);
    } catch (err) {
      fail('compile threw on the objects per-object validation kept', (err as Error).stack?.split('\n').slice(0, 4).join(' | ') ?? String(err));
    }
  }
}

// ------------------------------------------------------------------ the test


describe('config pipeline fuzz (mutated Istio samples)', function () {
  this.timeout(60_000);
  // Mocha sets an unlimited stack trace depth: the YAML parser's errors (thousands for one stray tab)
  // would each capture a deep stack, timing mocha rather than meshgate. Node's default, as in production.
  let stackTraceLimit: number;
  before(() => { stackTraceLimit = Error.stackTraceLimit; Error.stackTraceLimit = 10; });
  after(() => { Error.stackTraceLimit = stackTraceLimit; });

  it(`never throws, reports every problem with file, line and path, compiles what it accepts, ${CASES} cases`, () => {
    const seeds = loadSeeds();
    assert.ok(seeds.length >= 30, `found ${seeds.length} seed files`);
    const donors = seeds.flatMap((s) => s.docs);
    const keys = [...new Set(donors.flatMap((d) => slotsOf(d).map((s) => s.key).filter((k): k is string => typeof k === 'string')))].sort();
    const rng = mulberry32(SEED);
    const failures = new Map<string, Failure & { count: number; case: number }>();
    const started = performance.now();
    let ran = 0;
    for (let c = 0; c < CASES && performance.now() - started < BUDGET_MS; c++) {
      const seed = pick(rng, seeds);
      const files: Record<string, string> = {};
      if (seed.docs.length === 0 || chance(rng, 0.03)) {
        files[`fuzz-${c}.yaml`] = mutateText(rng, seed.text);
      } else {
        const docs = mutateDocs(rng, seed.docs.map(clone), donors, keys);
        let text = serialise(rng, docs);
        if (chance(rng, 0.05)) text = mutateText(rng, text);
        if (docs.length > 1 && chance(rng, 0.2)) {
          const cut = 1 + int(rng, docs.length - 1);
          files[`fuzz-${c}-a.yaml`] = serialise(rng, docs.slice(0, cut));
          files[`fuzz-${c}-b.yaml`] = serialise(rng, docs.slice(cut));
        } else {
          files[`fuzz-${c}.yaml`] = text;
        }
      }
      // The YAML parser reads ~1 MB/s here: large documents would only time it, not the config code.
      if (Object.values(files).reduce((n, t) => n + t.length, 0) > 200_000) continue;
      const fail = (what: string, detail: string) => {
        const key = `${what}: ${detail.replace(/fuzz-\d+(-[ab])?\.yaml/g, 'F').replace(/\d+/g, 'N').slice(0, 200)}`;
        const f = failures.get(key);
        if (f) f.count += 1;
        else failures.set(key, { what, detail, files, count: 1, case: c });
      };
      const t0 = performance.now();
      try {
        runCase(files, fail);
      } catch (err) {
        fail('exception escaped', (err as Error).stack?.split('\n').slice(0, 5).join(' | ') ?? String(err));
      }
      const took = performance.now() - t0;
      stats.slowestMs = Math.max(stats.slowestMs, Math.round(took));
      if (took > SLOW_MS) fail('slow case', `${Math.round(took)} ms`);
      ran += 1;
    }
    const report = [...failures.values()].slice(0, 8).map((f) => {
      const yaml = Object.entries(f.files).map(([n, t]) => `# ${n}\n${t.length > 3000 ? `${t.slice(0, 3000)}\n# ... (${t.length} chars)` : t}`).join('\n');
      return `--- ${f.what} (x${f.count}, first at case ${f.case}): ${f.detail}\n${yaml}`;
    });
    const dump = process.env['FUZZ_DUMP'];
    if (dump) {
      fs.mkdirSync(dump, { recursive: true });
      [...failures.values()].forEach((f, n) => fs.writeFileSync(path.join(dump, `failure-${n}.yaml`), `# ${f.what}: ${f.detail}\n${Object.entries(f.files).map(([k, t]) => `# ${k}\n${t}`).join('\n---\n')}`));
    }
    if (process.env['FUZZ_STATS']) console.log(`    ${JSON.stringify({ ...stats, ms: Math.round(performance.now() - started) })}`);
    assert.equal(failures.size, 0, `${failures.size} distinct failures in ${ran} cases:\n${report.join('\n')}`);
    assert.ok(ran >= Math.min(CASES, 500), `only ${ran} cases ran within ${BUDGET_MS} ms`);
  });

  it('a key named like an Object.prototype member (constructor, toString, __proto__) is checked as any other key', () => {
    const donors = loadSeeds().flatMap((s) => s.docs).filter((d) => isObj(d) && typeof d['kind'] === 'string' && Object.hasOwn(SCHEMAS, d['kind']));
    const rng = mulberry32(SEED ^ 0x70726f74);
    const plain = 'zzfuzzkey';
    const report = (text: string, from: string) => checkLoaded(loadText(text, 'keys.yaml')).issues
      .map((i) => `${i.line}:${i.col}: ${i.severity} ${i.path}: ${i.message}`.split(from).join(plain).replace(/ \(did you mean "[^"]*"\?\)/, ''));
    const mismatches: string[] = [];
    for (let c = 0; c < 300; c++) {
      const doc = pick(rng, donors) as Obj;
      const key = pick(rng, ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf']);
      const value = pick(rng, [1, 'x', true, [], {}, null] as Json[]);
      const withKey = (k: string): string => {
        const d = clone(doc) as Obj;
        const data = d['data'];
        if (isObj(data) && typeof data['mesh'] === 'string') {
          data['mesh'] = `${data['mesh']}\n${k}: 1\n`; // the mesh config's own keys
        } else {
          const slots = schemaSlots(schemaRoot(String(d['kind'])) ? (d['spec'] ??= {}) : d, SCHEMAS[String(d['kind'])]!);
          if (slots.length === 0) return stringify(d);
          // As YAML loads it: an own key, not the object's prototype.
          Object.defineProperty(slots[int(rng, slots.length)]!.node, k, { value: clone(value), enumerable: true, writable: true, configurable: true });
        }
        return stringify(d);
      };
      const a = withKey(key);
      const b = a.split(`${key}:`).join(`${plain}:`); // the same document with an ordinary unknown key
      const got = report(a, key);
      const want = report(b, plain);
      if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push(`key ${key}:\n${a}\ngot:  ${JSON.stringify(got)}\nwant: ${JSON.stringify(want)}`);
    }
    assert.deepEqual(mismatches.slice(0, 3), []);
  });
});
