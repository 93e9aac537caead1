// How config problems are printed, and the `meshgate validate` command's work.

import type { ConfigIssue } from './types';
import { loadConfig } from './pipeline';

/** `file:line:col: Kind namespace/name: field.path: message` */
export function formatIssue(i: ConfigIssue): string {
  const who = i.kind ? ` ${i.kind} ${i.namespace}/${i.name}:` : '';
  const path = i.path ? ` ${i.path}:` : '';
  return `${i.file}:${i.line}:${i.col}:${who}${path} ${i.message}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export async function validatePaths(paths: readonly string[]): Promise<{ issues: ConfigIssue[]; output: string; exitCode: number }> {
  const loaded = await loadConfig(paths);
  const issues = [...loaded.issues].sort((a, b) => (a.file === b.file ? a.line - b.line || a.col - b.col : a.file < b.file ? -1 : 1));
  const errors = issues.filter((i) => i.severity === 'error').length;
  const warnings = issues.length - errors;
  const lines = issues.map(formatIssue);
  const files = loaded.files.length;
  if (issues.length === 0) lines.push(`ok: ${plural(loaded.resourceCount, 'resource')} in ${plural(files, 'file')}, no problems`);
  else lines.push(`${plural(errors, 'error')}, ${plural(warnings, 'warning')} in ${plural(files, 'file')}`);
  return { issues, output: lines.join('\n') + '\n', exitCode: errors > 0 ? 1 : 0 };
}
