// How config problems are printed, and the `meshgate validate` command's work.

import type { ConfigIssue } from './types';
import type { CompileNote } from './compile';
import { checkForValidate, type LoadedConfig } from './pipeline';
import { loadPaths, skippedKinds } from './load';

/** `file:line:col: Kind namespace/name: field.path: message` */
export function formatIssue(i: ConfigIssue): string {
  const who = i.kind ? ` ${i.kind} ${i.namespace}/${i.name}:` : '';
  const path = i.path ? ` ${i.path}:` : '';
  return `${i.file}:${i.line}:${i.col}:${who}${path} ${i.message}`;
}

/**
 * A compile note as `run` logs it: with a position, as a config issue is printed
 * (`file:line:col: Kind namespace/name: field.path: message`); else `Kind namespace/name: message`.
 */
export function formatNote(n: CompileNote): string {
  if (!n.at) return `${n.resource}: ${n.message}`;
  return `${n.at.file}:${n.at.line}:${n.at.col}: ${n.resource}:${n.path ? ` ${n.path}:` : ''} ${n.message}`;
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export interface ValidationReport {
  readonly issues: ConfigIssue[];
  readonly output: string;
  readonly exitCode: number;
}

/** `meshgate validate --config PATH...`: the files as `run` would load and compile them (gateway namespace `namespace`). */
export async function validatePaths(paths: readonly string[], namespace = 'istio-system'): Promise<ValidationReport> {
  const loaded = checkForValidate(await loadPaths(paths), namespace);
  return validationReport(loaded, `in ${plural(loaded.files.length, 'file')}`);
}

/** The problems sorted by place, one line each, then a summary (`where` says what was read); exit 1 on errors. */
export function validationReport(loaded: LoadedConfig, where: string): ValidationReport {
  const issues = [...loaded.issues].sort((a, b) => (a.file === b.file ? a.line - b.line || a.col - b.col : a.file < b.file ? -1 : 1));
  const errors = issues.filter((i) => i.severity === 'error').length;
  const warnings = issues.length - errors;
  const lines = issues.map(formatIssue);
  // Objects of other kinds (Deployment, ServiceAccount, ...) are not resources: said in the summary, not hidden.
  const skipped = loaded.skipped.length > 0 ? ` (${plural(loaded.skipped.length, 'other object')} skipped: ${skippedKinds(loaded.skipped)})` : '';
  if (issues.length === 0) lines.push(`ok: ${plural(loaded.resourceCount, 'resource')} ${where}${skipped}, no problems`);
  else lines.push(`${plural(errors, 'error')}, ${plural(warnings, 'warning')} ${where}${skipped}`);
  return { issues, output: lines.join('\n') + '\n', exitCode: errors > 0 ? 1 : 0 };
}
