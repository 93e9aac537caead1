// Validation: every problem is collected (never stop at the first), each with file, line, column and
// field path. Errors reject a config; warnings (cross checks between resources) are reported only.
// Never throws, whatever the input.

import { parseDocument, LineCounter } from 'yaml';
import { RE2JS } from 're2js';
import type {
  ConfigIssue, ConfigMapResource, DestinationRuleResource, GatewayResource, MeshConfig, Resource, ResourceSet,
  ServiceEntryResource, ServiceResource, SourcePos, VirtualServiceResource,
} from './types';
import { MESH, SCHEMAS, schemaRoot, type Schema } from './schema';
import { unsupportedFields } from './unsupported';
import { gatewayKey, intersectHosts, parseDuration, parseGatewayRef, parseServerHost, resolveHost, hostMatches, MESH_GATEWAY } from './names';
import { inspectFormat } from '../telemetry/access-log';
import { withoutNulls } from './load';
import { asError } from '../errors';

type Who = { kind: string; namespace: string; name: string };

class Collector {
  readonly issues: ConfigIssue[] = [];
  add(severity: 'error' | 'warning', who: Who, pos: SourcePos, path: string, message: string): void {
    this.issues.push({ severity, file: pos.file, line: pos.line, col: pos.col, kind: who.kind, namespace: who.namespace, name: who.name, path, message });
  }
}

/** Position of a field: the field itself, else its nearest parent, else the resource. */
export function positionOf(r: Resource, path: string): SourcePos {
  let p = path;
  while (p) {
    const pos = r.positions.get(p);
    if (pos) return pos;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    p = cut > 0 ? p.slice(0, cut) : '';
  }
  return r.source;
}

function whoOf(r: Resource): Who {
  return { kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name };
}

/** Edit distance, for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

function suggest(name: string, known: readonly string[]): string {
  let best = '';
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best && bestD <= Math.max(2, Math.floor(name.length / 3)) ? ` (did you mean "${best}"?)` : '';
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  // String(v) for numbers: JSON.stringify says `null` for NaN and Infinity (`.nan`, `.inf`, 1e400).
  return `${typeof v} ${typeof v === 'number' ? String(v) : JSON.stringify(v)}`;
}

/** `path.key`, or `key` at the top (Secret and ConfigMap fields have no `spec.` in front). */
function field(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** Check a value against a schema, reporting each mismatch through `report(path, message)`. */
export function checkSchema(value: unknown, s: Schema, path: string, report: (path: string, message: string) => void, depth = 0): void {
  if (depth > 50) return;
  switch (s.t) {
    case 'any': return;
    case 'str':
      if (typeof value !== 'string') report(path, `must be a string, got ${typeName(value)}`);
      return;
    case 'regex':
      if (typeof value !== 'string') return report(path, `must be a string, got ${typeName(value)}`);
      if (value === '*') return; // Istio's legacy "present" form
      try {
        RE2JS.compile(value);
      } catch (err) {
        report(path, `invalid regex ${JSON.stringify(value)} (RE2 syntax): ${asError(err).message.replace(/^error parsing regexp: /, '')}`);
      }
      return;
    case 'int':
    case 'num': {
      if (typeof value !== 'number' || !Number.isFinite(value) || (s.t === 'int' && !Number.isInteger(value))) {
        return report(path, `must be ${s.t === 'int' ? 'an integer' : 'a number'}, got ${typeName(value)}`);
      }
      if ((s.min !== undefined && value < s.min) || (s.max !== undefined && value > s.max)) {
        report(path, `${value} is out of range ${s.min ?? '-inf'}..${s.max ?? 'inf'}`);
      }
      return;
    }
    case 'bool':
      if (typeof value !== 'boolean') report(path, `must be true or false, got ${typeName(value)}`);
      return;
    case 'dur':
      if (typeof value !== 'string' || parseDuration(value) === undefined) report(path, `must be a duration such as "1s", "500ms" or "1m", got ${typeName(value)}`);
      return;
    case 'enum':
      if (typeof value !== 'string' || !s.v.includes(value)) report(path, `must be one of ${s.v.join(', ')}, got ${typeName(value)}${typeof value === 'string' ? suggest(value, s.v) : ''}`);
      return;
    case 'intOrStr':
      // A number is held to the integer rules (a targetPort 0 or 1.5 is no port); a name is free.
      if (typeof value === 'number') return checkSchema(value, { t: 'int', min: s.min, max: s.max }, path, report, depth);
      if (typeof value !== 'string') report(path, `must be a number or a name, got ${typeName(value)}`);
      return;
    case 'arr':
      if (!Array.isArray(value)) return report(path, `must be a list, got ${typeName(value)}`);
      value.forEach((v, i) => checkSchema(v, s.of, `${path}[${i}]`, report, depth + 1));
      return;
    case 'map':
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return report(path, `must be a mapping, got ${typeName(value)}`);
      for (const [k, v] of Object.entries(value)) checkSchema(v, s.of, field(path, k), report, depth + 1);
      return;
    case 'obj': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return report(path, `must be a mapping, got ${typeName(value)}`);
      const known = Object.keys(s.f);
      const o = value as Record<string, unknown>;
      for (const [k, v] of Object.entries(o)) {
        // Own fields only: `constructor`, `toString` or `__proto__` is an unknown field, not Object.prototype's.
        const fs = Object.hasOwn(s.f, k) ? s.f[k] : undefined;
        if (!fs) {
          if (!s.open) report(field(path, k), `unknown field "${k}"${suggest(k, known)}`);
        } else if (v !== null && v !== undefined) checkSchema(v, fs, field(path, k), report, depth + 1);
      }
      for (const r of s.req ?? []) if (o[r] === undefined || o[r] === null) report(field(path, r), `required field "${r}" is missing`);
      if (s.atMostOne) {
        const set = s.atMostOne.filter((k) => o[k] !== undefined);
        if (set.length > 1) report(path, `only one of ${s.atMostOne.join(', ')} may be set, got ${set.join(' and ')}`);
      }
      return;
    }
  }
}

// ------------------------------------------------------------------ per-kind rules beyond the schema

function checkVirtualService(r: VirtualServiceResource, err: (path: string, msg: string) => void, warn: (path: string, msg: string) => void): void {
  const spec = r.spec;
  const hasDelegateTarget = !spec.hosts || spec.hosts.length === 0;
  if (hasDelegateTarget && (spec.gateways?.length ?? 0) > 0) err('spec.hosts', 'hosts are required (only delegate VirtualServices omit them, and those have no gateways)');
  const names = new Set<string>();
  (spec.http ?? []).forEach((h, i) => {
    const p = `spec.http[${i}]`;
    if (h.name) {
      if (names.has(h.name)) err(`${p}.name`, `duplicate route name "${h.name}"`);
      names.add(h.name);
    }
    const actions = [h.route && h.route.length > 0 ? 'route' : '', h.redirect ? 'redirect' : '', h.directResponse ? 'directResponse' : '', h.delegate ? 'delegate' : ''].filter(Boolean);
    if (actions.length > 1) err(p, `only one of route, redirect, directResponse, delegate may be set, got ${actions.join(' and ')}`);
    if (actions.length === 0) err(p, 'a route needs one of route, redirect, directResponse or delegate');
    if (h.route && h.route.length > 1) {
      const sum = h.route.reduce((s, d) => s + (typeof d.weight === 'number' ? d.weight : 0), 0);
      if (sum === 0) err(`${p}.route`, 'weights of several destinations sum to 0: no destination would get traffic');
      else if (sum !== 100) warn(`${p}.route`, `warning: weights sum to ${sum}, not 100; they are normalised`);
    }
    if (h.rewrite?.uri !== undefined && h.rewrite.uriRegexRewrite) err(`${p}.rewrite`, 'only one of uri and uriRegexRewrite may be set');
  });
  for (const [list, name] of [[spec.tcp, 'tcp'], [spec.tls, 'tls']] as const) {
    (list ?? []).forEach((t, i) => {
      if (t.route && t.route.length > 1) {
        const sum = t.route.reduce((s, d) => s + (typeof d.weight === 'number' ? d.weight : 0), 0);
        if (sum === 0) err(`spec.${name}[${i}].route`, 'weights of several destinations sum to 0');
      }
    });
  }
}

function checkDestinationRule(r: DestinationRuleResource, err: (path: string, msg: string) => void, warn: (path: string, msg: string) => void): void {
  const names = new Set<string>();
  (r.spec.subsets ?? []).forEach((s, i) => {
    if (names.has(s.name)) err(`spec.subsets[${i}].name`, `duplicate subset name "${s.name}"`);
    names.add(s.name);
  });
  const od = r.spec.trafficPolicy?.outlierDetection;
  if (od?.consecutiveErrors !== undefined) {
    warn('spec.trafficPolicy.outlierDetection.consecutiveErrors', 'warning: consecutiveErrors is deprecated; meshgate applies it as consecutive5xxErrors (Istio ignores it since 1.7)');
  }
}

function checkGateway(r: GatewayResource, err: (path: string, msg: string) => void, warn: (path: string, msg: string) => void): void {
  const names = new Map<string, number>();
  r.spec.servers?.forEach((s, i) => {
    const n = s.port?.name;
    if (n) {
      if (names.has(n)) err(`spec.servers[${i}].port.name`, `duplicate port name "${n}" (also servers[${names.get(n)}])`);
      names.set(n, i);
    }
    if (s.tls?.httpsRedirect && String(s.port?.protocol).toUpperCase() !== 'HTTP') warn(`spec.servers[${i}].tls.httpsRedirect`, 'warning: httpsRedirect only applies to HTTP servers');
    if (Array.isArray(s.hosts) && s.hosts.length === 0) err(`spec.servers[${i}].hosts`, 'at least one host is required');
  });
}

function checkServiceEntry(r: ServiceEntryResource, err: (path: string, msg: string) => void): void {
  const s = r.spec;
  if (s.resolution === 'STATIC' && (s.endpoints?.length ?? 0) === 0 && !s.workloadSelector) err('spec.endpoints', 'resolution STATIC needs endpoints or a workloadSelector');
  if (s.workloadSelector && s.endpoints && s.endpoints.length > 0) err('spec.workloadSelector', 'only one of endpoints and workloadSelector may be set');
  if (s.resolution === 'DNS' && (s.endpoints?.length ?? 0) === 0 && s.hosts?.some((h) => h.startsWith('*'))) {
    err('spec.hosts', 'wildcard hosts cannot be resolved with DNS without endpoints');
  }
  const names = new Set<string>();
  (s.ports ?? []).forEach((p, i) => {
    if (p.name && names.has(p.name)) err(`spec.ports[${i}].name`, `duplicate port name "${p.name}"`);
    if (p.name) names.add(p.name);
  });
}

// ------------------------------------------------------------------ mesh config

/** The mesh config from ConfigMap istio-system/istio `data.mesh` (a YAML string inside YAML). */
export function parseMesh(cm: ConfigMapResource | undefined, c: Collector): { mesh: MeshConfig; pos?: SourcePos } {
  if (!cm) return { mesh: {} };
  const who = whoOf(cm);
  const base = cm.positions.get('data.mesh') ?? cm.source;
  const text = cm.spec.data?.['mesh'];
  if (text === undefined) return { mesh: {}, pos: base };
  if (typeof text !== 'string') {
    c.add('error', who, base, 'data.mesh', 'must be a string holding the mesh config YAML');
    return { mesh: {}, pos: base };
  }
  const lc = new LineCounter();
  // A literal block scalar (`mesh: |`) maps line for line onto the file, from where its text starts
  // (the loader records it as `data.mesh|`); a quoted or folded one does not: its problems are at the key.
  const textStart = cm.positions.get('data.mesh|');
  const at = (offset: number): SourcePos => {
    if (!textStart) return base;
    const p = lc.linePos(offset);
    return { file: base.file, line: textStart.line + p.line - 1, col: textStart.col + p.col - 1 };
  };
  let mesh: MeshConfig;
  let doc: ReturnType<typeof parseDocument>;
  try {
    doc = parseDocument(text, { lineCounter: lc });
    for (const e of doc.errors) c.add('error', who, at(e.pos[0]), 'data.mesh', `YAML syntax: ${e.message.split('\n')[0]}`);
    if (doc.errors.length > 0) return { mesh: {}, pos: base };
    // As the loader: a bounded alias count, so an alias bomb is an error here, not an exception.
    // As the resources' specs: a field set to null is left out (defaulted), not handed to compile.
    mesh = (withoutNulls(doc.toJS({ maxAliasCount: 100 })) ?? {}) as MeshConfig;
  } catch (err) {
    c.add('error', who, base, 'data.mesh', `YAML: ${asError(err).message}`);
    return { mesh: {}, pos: base };
  }
  if (typeof mesh !== 'object' || Array.isArray(mesh)) {
    c.add('error', who, base, 'data.mesh', 'must be a mapping');
    return { mesh: {}, pos: base };
  }
  const known = MESH.t === 'obj' ? MESH.f : {};
  for (const [k, v] of Object.entries(mesh)) {
    const s = Object.hasOwn(known, k) ? known[k] : undefined;
    if (!s) {
      c.add('warning', who, base, `data.mesh.${k}`, `warning: mesh field "${k}" is not used by meshgate${suggest(k, Object.keys(known))}`);
      continue;
    }
    checkSchema(v, s, `data.mesh.${k}`, (path, message) => c.add('error', who, base, path, message));
  }
  // Fields meshgate reads without acting on them, at their own line.
  for (const u of unsupportedFields('MeshConfig', mesh, 'data.mesh')) {
    const node = doc.getIn(u.path.split('.').slice(2), true) as { range?: readonly number[] } | undefined;
    c.add('warning', who, node?.range ? at(node.range[0]!) : base, u.path, u.message);
  }
  // Problems of the access-log format at the field's own line: what Envoy rejects is an error, an unknown operator a warning.
  const format = mesh.accessLogFormat;
  if (typeof format === 'string' && format !== '') {
    const node = doc.get('accessLogFormat', true) as { range?: readonly number[] } | undefined;
    const fieldPos = node?.range ? at(node.range[0]!) : base;
    const { errors, warnings } = inspectFormat(format, mesh.accessLogEncoding === 'JSON' ? 'JSON' : 'TEXT');
    for (const e of errors) c.add('error', who, fieldPos, 'data.mesh.accessLogFormat', e);
    for (const w of warnings) c.add('warning', who, fieldPos, 'data.mesh.accessLogFormat', `warning: ${w}`);
  }
  return { mesh, pos: base };
}

// ------------------------------------------------------------------ the whole set

export interface ValidationResult {
  readonly set: ResourceSet;
  readonly issues: ConfigIssue[];
}

/**
 * Validate loaded resources and build the typed set. Schema errors and per-kind rules are errors;
 * duplicates are errors; references between resources are warnings. A resource with errors is still
 * placed in the set (the caller rejects the whole config when any error exists).
 */
export function validate(resources: readonly Resource[]): ValidationResult {
  const c = new Collector();
  const seen = new Map<string, Resource>();
  const malformed = new Set<Resource>();
  for (const r of resources) {
    const who = whoOf(r);
    const key = `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`;
    const prev = seen.get(key);
    if (prev) c.add('error', who, r.source, 'metadata.name', `duplicate ${r.kind} ${r.metadata.namespace}/${r.metadata.name} (first defined at ${prev.source.file}:${prev.source.line})`);
    else seen.set(key, r);
    const err = (path: string, msg: string) => c.add('error', who, positionOf(r, path), path, msg);
    const warn = (path: string, msg: string) => c.add('warning', who, positionOf(r, path), path, msg);
    const schema = SCHEMAS[r.kind];
    if (schema) {
      let bad = false;
      checkSchema(r.spec, schema, schemaRoot(r.kind), (path, msg) => {
        bad = true;
        err(path, msg);
      });
      if (bad) {
        malformed.add(r); // the per-kind rules and cross checks assume the right shape
        continue;
      }
    }
    try {
      if (r.kind === 'VirtualService') checkVirtualService(r as VirtualServiceResource, err, warn);
      else if (r.kind === 'DestinationRule') checkDestinationRule(r as DestinationRuleResource, err, warn);
      else if (r.kind === 'Gateway') checkGateway(r as GatewayResource, err, warn);
      else if (r.kind === 'ServiceEntry') checkServiceEntry(r as ServiceEntryResource, err);
      // Istio fields meshgate accepts without acting on them: said, not silently ignored.
      for (const u of unsupportedFields(r.kind, r.spec)) warn(u.path, u.message);
    } catch (e) {
      err('spec', `cannot be checked: ${asError(e).message}`);
    }
  }
  const of = <T>(kind: string) => resources.filter((r) => r.kind === kind) as unknown as T[];
  const cm = of<ConfigMapResource>('ConfigMap').find((m) => m.metadata.name === 'istio' && m.metadata.namespace === 'istio-system');
  // A malformed mesh ConfigMap has its errors already (data.mesh not a string, say).
  const { mesh, pos } = parseMesh(cm && !malformed.has(cm) ? cm : undefined, c);
  const set: ResourceSet = {
    gateways: of('Gateway'), virtualServices: of('VirtualService'), destinationRules: of('DestinationRule'),
    serviceEntries: of('ServiceEntry'), workloadEntries: of('WorkloadEntry'), sidecars: of('Sidecar'),
    services: of('Service'), secrets: of('Secret'), configMaps: of('ConfigMap'), mesh, meshSource: pos,
  };
  crossCheck(set, malformed, c);
  return { set, issues: c.issues };
}

/** Warnings about references between resources: the silent mistakes Istio users meet most. */
function crossCheck(set: ResourceSet, malformed: ReadonlySet<Resource>, c: Collector): void {
  const ok = <T extends Resource>(list: readonly T[]) => list.filter((r) => !malformed.has(r));
  const gateways = new Map(ok(set.gateways).map((g) => [`${g.metadata.namespace}/${g.metadata.name}`, g]));
  // Subsets count from every DestinationRule whose host is readable, malformed or not.
  const drsOk = set.destinationRules.filter((d) => typeof d.spec?.host === 'string' && (d.spec.subsets === undefined || Array.isArray(d.spec.subsets)));
  const hosts: string[] = [];
  for (const se of ok(set.serviceEntries)) for (const h of se.spec.hosts) hosts.push(resolveHost(h, se.metadata.namespace));
  for (const s of set.services) hosts.push(`${s.metadata.name}.${s.metadata.namespace}.svc.cluster.local`);
  const known = (h: string) => hosts.some((k) => hostMatches(k, h));
  const subsetsOf = (host: string): Set<string> | undefined => {
    const drs = drsOk.filter((d) => hostMatches(resolveHost(d.spec.host, d.metadata.namespace), host));
    if (drs.length === 0) return undefined;
    return new Set(drs.flatMap((d) => (d.spec.subsets ?? []).map((s) => s?.name)));
  };
  // A malformed VirtualService is still checked where its shape allows (so every problem is listed).
  for (const vs of set.virtualServices) {
    try {
      crossCheckVirtualService(vs, gateways, known, subsetsOf, c);
    } catch {
      // its schema errors are already reported
    }
  }
}

function crossCheckVirtualService(
  vs: VirtualServiceResource, gateways: ReadonlyMap<string, GatewayResource>, known: (h: string) => boolean,
  subsetsOf: (host: string) => Set<string> | undefined, c: Collector,
): void {
  {
    const who = whoOf(vs);
    const ns = vs.metadata.namespace;
    const warn = (path: string, msg: string) => c.add('warning', who, positionOf(vs, path), path, `warning: ${msg}`);
    const vsHosts = (vs.spec.hosts ?? []).map((h) => resolveHost(h, ns));
    (vs.spec.gateways ?? []).forEach((g, i) => {
      if (typeof g !== 'string') return; // a malformed entry: its schema error says so
      const ref = parseGatewayRef(g, ns);
      if (ref.name === MESH_GATEWAY && ref.namespace === '') return;
      const gw = gateways.get(gatewayKey(ref));
      if (!gw) return warn(`spec.gateways[${i}]`, `gateway ${gatewayKey(ref)} does not exist`);
      const serverHosts = gw.spec.servers.flatMap((s) => s.hosts.map(parseServerHost));
      const overlap = vsHosts.some((h) => serverHosts.some((sh) => intersectHosts(sh.host, h) !== undefined));
      if (!overlap) warn(`spec.gateways[${i}]`, `no host of this VirtualService (${vsHosts.join(', ')}) matches a host of gateway ${gatewayKey(ref)} (${serverHosts.map((s) => s.host).join(', ')}); it gets no traffic there`);
    });
    const dests: { d: { host: string; subset?: string }; path: string }[] = [];
    (vs.spec.http ?? []).forEach((h, i) => (h.route ?? []).forEach((d, j) => dests.push({ d: d.destination, path: `spec.http[${i}].route[${j}].destination` })));
    (vs.spec.tcp ?? []).forEach((h, i) => (h.route ?? []).forEach((d, j) => dests.push({ d: d.destination, path: `spec.tcp[${i}].route[${j}].destination` })));
    (vs.spec.tls ?? []).forEach((h, i) => (h.route ?? []).forEach((d, j) => dests.push({ d: d.destination, path: `spec.tls[${i}].route[${j}].destination` })));
    for (const { d, path } of dests) {
      if (typeof d?.host !== 'string') continue; // malformed: reported by the schema
      const host = resolveHost(d.host, ns);
      if (!known(host)) warn(`${path}.host`, `host ${host} is not in the registry (no ServiceEntry or Service): requests get 503 NC`);
      if (typeof d.subset === 'string' && d.subset) {
        const subs = subsetsOf(host);
        if (!subs?.has(d.subset)) warn(`${path}.subset`, `subset "${d.subset}" is not defined by a DestinationRule for ${host}: requests get 503 NC`);
      }
    }
  }
}

export type { ServiceResource };
