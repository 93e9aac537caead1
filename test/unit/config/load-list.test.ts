// `kind: List` documents (what `kubectl get -o yaml` prints): every item is a resource with its own
// field positions, and loading stays linear in the document's size.

import assert from 'node:assert/strict';
import { loadText } from '../../../src/config/load';
import { validate } from '../../../src/config/validate';
import { formatIssue } from '../../../src/config/format';

/** A List of n DestinationRules; item `bad` misspells a field. Returns the text and the bad field's line. */
function listOf(n: number, bad: number): { text: string; badLine: number } {
  const lines = ['apiVersion: v1', 'kind: List', 'items:'];
  let badLine = 0;
  for (let i = 0; i < n; i++) {
    lines.push(
      '- apiVersion: networking.istio.io/v1',
      '  kind: DestinationRule',
      '  metadata:',
      `    name: dr-${i}`,
      '    namespace: default',
      '  spec:',
      `    host: svc-${i}.default.svc.cluster.local`,
      '    trafficPolicy:',
      '      loadBalancer: {simple: ROUND_ROBIN}',
      '      connectionPool:',
      '        tcp: {maxConnections: 100, connectTimeout: 1s}',
      '        http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1}',
      '    subsets:',
      '    - name: v1',
      '      labels: {version: v1}',
    );
    if (i === bad) {
      lines.push('    trafficPolicyy: {}');
      badLine = lines.length;
    }
  }
  return { text: lines.join('\n') + '\n', badLine };
}

describe('loading a kind: List', () => {
  it('4000 items load and validate in well under 10 s (linear), each a resource', function () {
    this.timeout(60_000);
    const { text } = listOf(4000, -1);
    const t0 = process.hrtime.bigint();
    const loaded = loadText(text, 'list.yaml');
    const { issues } = validate(loaded.resources);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.deepEqual([...loaded.issues, ...issues].map(formatIssue), []);
    assert.equal(loaded.resources.length, 4000);
    assert.ok(ms < 10_000, `took ${Math.round(ms)} ms`);
  });

  it('reports an error inside a late item at its own line and column, naming the item', function () {
    this.timeout(60_000);
    const { text, badLine } = listOf(4000, 3990);
    const loaded = loadText(text, 'list.yaml');
    const errors = validate(loaded.resources).issues.filter((i) => i.severity === 'error').map(formatIssue);
    assert.deepEqual(errors, [`list.yaml:${badLine}:5: DestinationRule default/dr-3990: spec.trafficPolicyy: unknown field "trafficPolicyy" (did you mean "trafficPolicy"?)`]);
    // Each item's fields have their own positions, and the item's source is its `- ` entry.
    const late = loaded.resources[3990]!;
    assert.equal(late.source.line, 3 + 3990 * 15 + 1);
    assert.equal(late.source.col, 3);
    assert.deepEqual(late.positions.get('spec.host'), { file: 'list.yaml', line: 3 + 3990 * 15 + 7, col: 5 });
    assert.equal(late.positions.has('items[3990]'), false);
    assert.deepEqual(loaded.resources[0]!.positions.get('spec.subsets[0].labels.version'), { file: 'list.yaml', line: 3 + 15, col: 16 });
  });

  it('a List item that is not an object, or misses its kind, is reported at the item', () => {
    const loaded = loadText('apiVersion: v1\nkind: List\nitems:\n- 7\n- {metadata: {name: x}}\n', 'l.yaml');
    assert.deepEqual(loaded.issues.map(formatIssue), [
      'l.yaml:4:3: a document must be a mapping with apiVersion, kind and metadata',
      'l.yaml:5:3: kind: missing kind',
    ]);
  });
});
