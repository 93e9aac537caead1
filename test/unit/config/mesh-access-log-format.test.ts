// The mesh config's accessLogFormat is checked as Envoy checks it, reported at the field with
// file:line: what Envoy rejects is an error; an unknown operator a warning (never a refused config).

import assert from 'node:assert/strict';
import { loadText } from '../../../src/config/load';
import { validate } from '../../../src/config/validate';
import { formatIssue } from '../../../src/config/format';

function meshIssues(mesh: string): string[] {
  const yaml = `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
${mesh.split('\n').map((l) => `    ${l}`).join('\n')}
`;
  const loaded = loadText(yaml, 'mesh.yaml');
  const { issues } = validate(loaded.resources);
  return [...loaded.issues, ...issues].map(formatIssue);
}

describe('mesh config accessLogFormat', () => {
  const cases: [string, string, string[]][] = [
    ['a good TEXT format', 'accessLogFile: /dev/stdout\naccessLogFormat: "[%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%] %REQ(USER-AGENT):10% %REQ_WITHOUT_QUERY(:PATH)%"', []],
    ['an unknown operator, at its line', 'accessLogFile: /dev/stdout\naccessLogFormat: "%START_TIME% %RESPONSE_CODES%"',
      ['mesh.yaml:7:22: ConfigMap istio-system/istio: data.mesh.accessLogFormat: warning: unknown operator %RESPONSE_CODES% at position 13: logged as -']],
    ['two problems, each reported', 'accessLogFormat: "%FOO% %PROTOCOL:2%"',
      ['mesh.yaml:6:22: ConfigMap istio-system/istio: data.mesh.accessLogFormat: %PROTOCOL:2% does not allow a length (only REQ, RESP, REQ_WITHOUT_QUERY, ENVIRONMENT and the like do)',
        'mesh.yaml:6:22: ConfigMap istio-system/istio: data.mesh.accessLogFormat: warning: unknown operator %FOO% at position 0: logged as -']],
    ['a JSON template: operators inside its values', 'accessLogEncoding: JSON\naccessLogFormat: \'{"code": "%RESPONSE_CODE%", "x": "%BOGUS% here"}\'',
      ['mesh.yaml:7:22: ConfigMap istio-system/istio: data.mesh.accessLogFormat: warning: x: unknown operator %BOGUS% at position 0: logged as -']],
    ['JSON encoding with a format that is not a JSON object: a warning (Istio logs with its default JSON keys)', 'accessLogEncoding: JSON\naccessLogFormat: "%RESPONSE_CODE%"',
      ['mesh.yaml:7:22: ConfigMap istio-system/istio: data.mesh.accessLogFormat: warning: with accessLogEncoding JSON the format must be a JSON object of key to operator; Istio\'s default JSON format is used']],
  ];
  for (const [name, mesh, want] of cases) {
    it(name, () => {
      assert.deepEqual(meshIssues(mesh), want);
    });
  }

  it('what Envoy rejects is an error (the config is rejected; the last good one keeps serving); an unknown operator a warning', () => {
    const loaded = loadText(`apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFormat: "%NOPE% %REQ%"
`, 'mesh.yaml');
    const { issues } = validate(loaded.resources);
    assert.deepEqual(issues.map((i) => [i.severity, i.path, i.line]), [['error', 'data.mesh.accessLogFormat', 6], ['warning', 'data.mesh.accessLogFormat', 6]]);
  });
});
