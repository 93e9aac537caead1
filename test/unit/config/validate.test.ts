import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadText } from '../../../src/config/load';
import { validate } from '../../../src/config/validate';
import { formatIssue, validatePaths } from '../../../src/config/format';
import { listConfigFiles } from '../../../src/sources/files';

const FIXTURES = path.resolve(__dirname, '../../../../test/fixtures/config');
const SAMPLES = path.resolve(__dirname, '../../../../../shared/istio-samples/samples');

function check(yaml: string): string[] {
  const loaded = loadText(yaml, 'x.yaml');
  const { issues } = validate(loaded.resources);
  return [...loaded.issues, ...issues].map(formatIssue);
}

const vs = (http: string) => `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: v
spec:
  hosts: [a.example.com]
  http:
${http}`;

describe('config validation', () => {
  it('every Istio sample file loads on its own with no error', () => {
    const files = listConfigFiles([SAMPLES]);
    assert.ok(files.length >= 30, `found ${files.length} sample files`);
    for (const f of files) {
      const loaded = loadText(fs.readFileSync(f, 'utf8'), f);
      const errors = [...loaded.issues, ...validate(loaded.resources).issues].filter((i) => i.severity === 'error');
      assert.deepEqual(errors.map(formatIssue), [], f);
    }
  });

  it('skips kinds it does not read with one info line each (bookinfo.yaml)', () => {
    const f = path.join(SAMPLES, 'bookinfo/platform/kube/bookinfo.yaml');
    const loaded = loadText(fs.readFileSync(f, 'utf8'), f);
    assert.equal(loaded.resources.filter((r) => r.kind === 'Service').length, 4);
    assert.ok(loaded.infos.some((l) => /skipped Deployment default\/reviews-v1 \(not a kind meshgate reads\)/.test(l)));
    assert.ok(loaded.infos.some((l) => /skipped ServiceAccount default\/bookinfo-details/.test(l)));
  });

  it('validate says how many objects of other kinds it skipped, by kind; Services are read, not skipped', async () => {
    const f = path.join(SAMPLES, 'bookinfo/platform/kube/bookinfo.yaml');
    const { output, exitCode } = await validatePaths([f]);
    assert.equal(exitCode, 0);
    assert.equal(output, 'ok: 4 resources in 1 file (10 other objects skipped: Deployment x6, ServiceAccount x4), no problems\n');
    // With problems, the summary line says it too; one object is "1 other object".
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-skipped-'));
    try {
      const bad = path.join(dir, 'bad.yaml');
      fs.writeFileSync(bad, `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n---\n${vs('  - timeout: 5\n    route: [{destination: {host: a}}]')}\n`);
      const r = await validatePaths([bad]);
      assert.equal(r.exitCode, 1);
      assert.match(r.output, /\n1 error, 1 warning in 1 file \(1 other object skipped: Deployment x1\)\n$/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints every mistake of a file with file, line, column and field path', async () => {
    const { output, exitCode } = await validatePaths([path.join(FIXTURES, 'mistakes.yaml')]);
    const f = path.join(FIXTURES, 'mistakes.yaml');
    assert.equal(exitCode, 1);
    assert.deepEqual(output.trimEnd().split('\n'), [
      `${f}:10:5: VirtualService default/reviews: spec.gateways[0]: warning: gateway default/no-such-gateway does not exist`,
      `${f}:14:9: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex "(?=lookahead)" (RE2 syntax): invalid or unsupported Perl syntax: \`(?=\``,
      `${f}:15:5: VirtualService default/reviews: spec.http[0].timeot: unknown field "timeot" (did you mean "timeout"?)`,
      `${f}:18:9: VirtualService default/reviews: spec.http[0].route[0].destination.host: warning: host reviews.default.svc.cluster.local is not in the registry (no ServiceEntry or Service): requests get 503 NC`,
      `${f}:19:9: VirtualService default/reviews: spec.http[0].route[0].destination.subset: warning: subset "v9" is not defined by a DestinationRule for reviews.default.svc.cluster.local: requests get 503 NC`,
      `${f}:20:7: VirtualService default/reviews: spec.http[0].route[0].weight: 150 is out of range 0..100`,
      `${f}:22:9: VirtualService default/reviews: spec.http[0].route[1].destination.host: warning: host reviews.default.svc.cluster.local is not in the registry (no ServiceEntry or Service): requests get 503 NC`,
      `${f}:35:9: DestinationRule default/reviews: spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be a duration such as "1s", "500ms" or "1m", got string "ten seconds"`,
      `${f}:41:1: DestinationRule default/reviews: metadata.name: duplicate DestinationRule default/reviews (first defined at ${f}:25)`,
      '5 errors, 4 warnings in 1 file',
    ]);
  });

  it('warnings alone exit 0: VirtualService hosts that miss the gateway, unknown host and subset', async () => {
    const { output, exitCode } = await validatePaths([path.join(FIXTURES, 'warnings.yaml')]);
    assert.equal(exitCode, 0);
    assert.match(output, /warnings\.yaml:20:14: VirtualService default\/elsewhere: spec\.gateways\[0\]: warning: no host of this VirtualService \(b\.example\.com\) matches a host of gateway default\/gw/);
    assert.match(output, /0 errors, 3 warnings in 1 file\n$/);
  });

  it('a YAML syntax error is reported with its line and the file is rejected', async () => {
    const { output, exitCode } = await validatePaths([path.join(FIXTURES, 'syntax.yaml')]);
    assert.equal(exitCode, 1);
    assert.match(output, /syntax\.yaml:\d+:\d+: YAML syntax: /);
  });

  const table: [string, string, RegExp][] = [
    ['wrong type', vs('  - timeout: 5\n    route: [{destination: {host: a}}]'), /spec\.http\[0\]\.timeout: must be a duration/],
    ['two StringMatch kinds', vs('  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: a}}]'), /uri: only one of exact, prefix, regex may be set/],
    ['route and redirect together', vs('  - route: [{destination: {host: a}}]\n    redirect: {uri: /x}'), /only one of route, redirect, directResponse, delegate may be set/],
    ['no action', vs('  - match: [{uri: {exact: /a}}]'), /a route needs one of route, redirect, directResponse or delegate/],
    ['missing destination host', vs('  - route: [{destination: {subset: v1}}]'), /destination\.host: required field "host" is missing/],
    ['bad enum with suggestion', `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: a
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}}`, /must be one of .* got string "ROUND_ROBBIN" \(did you mean "ROUND_ROBIN"\?\)/],
    ['port out of range', `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  servers: [{port: {number: 70000, protocol: HTTP, name: http}, hosts: ["*"]}]`, /port\.number: 70000 is out of range 1\.\.65535/],
    ['duplicate subset', `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: a
  subsets: [{name: v1}, {name: v1}]`, /spec\.subsets\[1\]\.name: duplicate subset name "v1"/],
    ['unsupported apiVersion', 'apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\nspec: {}', /apiVersion "networking\.istio\.io\/v2" is not served/],
    ['weights summing to zero', vs('  - route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]'), /weights of several destinations sum to 0/],
    ['deprecated consecutiveErrors warns', `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: a
  trafficPolicy: {outlierDetection: {consecutiveErrors: 1}}`, /warning: consecutiveErrors is deprecated/],
  ];
  for (const [name, yaml, want] of table) {
    it(`reports ${name}`, () => {
      const lines = check(yaml);
      assert.ok(lines.some((l) => want.test(l)), lines.join('\n'));
    });
  }

  it('reads the mesh config from ConfigMap istio-system/istio', () => {
    const loaded = loadText(`apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
    accessLogEncodin: TEXT
`, 'mesh.yaml');
    const { set, issues } = validate(loaded.resources);
    assert.equal(set.mesh.accessLogFile, '/dev/stdout');
    assert.equal(set.mesh.accessLogEncoding, 'JSON');
    assert.equal(set.mesh.outboundTrafficPolicy?.mode, 'REGISTRY_ONLY');
    const typo = issues.find((i) => i.path === 'data.mesh.accessLogEncodin')!;
    assert.equal(typo.severity, 'warning');
    assert.match(typo.message, /did you mean "accessLogEncoding"/);
  });

  it('a `./name` gateway reference is the VirtualService\'s namespace: no "does not exist" warning', () => {
    const gwAndVs = (ref: string) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  servers: [{port: {number: 80, protocol: HTTP, name: http}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: ["${ref}"]
  http: [{route: [{destination: {host: productpage}}]}]`;
    const gatewayWarnings = (ref: string) => check(gwAndVs(ref)).filter((l) => l.includes('spec.gateways[0]'));
    assert.deepEqual(gatewayWarnings('./bookinfo-gateway'), []);
    assert.deepEqual(gatewayWarnings('bookinfo/bookinfo-gateway'), []);
    assert.deepEqual(gatewayWarnings('other/bookinfo-gateway'), ['x.yaml:12:14: VirtualService bookinfo/bookinfo: spec.gateways[0]: warning: gateway other/bookinfo-gateway does not exist']);
  });

  // Regressions found by the fuzz test (fuzz.test.ts).

  it('a Gateway without servers is an error at spec.servers, not an exception out of `meshgate validate` (certificate checks)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-gw-'));
    try {
      const f = path.join(dir, 'gw.yaml');
      fs.writeFileSync(f, 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n');
      const { output, exitCode } = await validatePaths([f]);
      assert.equal(exitCode, 1);
      assert.equal(output, `${f}:4:1: Gateway default/gw: spec.servers: required field "servers" is missing\n1 error, 0 warnings in 1 file\n`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a duration longer than Go\'s time.Duration holds (9999999999h, 1e21 ms) is an error at its field', () => {
    for (const d of ['9999999999h', '999999999999999999999ms', '2562048h']) {
      const lines = check(vs(`  - route: [{destination: {host: a}}]\n    timeout: ${d}`));
      assert.ok(lines.some((l) => l.startsWith(`x.yaml:9:5: VirtualService default/v: spec.http[0].timeout: must be a duration such as "1s", "500ms" or "1m", got string "${d}"`)), `${d}:\n${lines.join('\n')}`);
    }
    assert.deepEqual(check(vs('  - route: [{destination: {host: a}}]\n    timeout: 2562047h')).filter((l) => l.includes('timeout')), []);
  });

  it('keys named like Object.prototype members (constructor, toString, __proto__) are unknown fields, in specs and in the mesh config', () => {
    const lines = check(vs('  - route: [{destination: {host: a, constructor: 1}}]\n    toString: x\n    __proto__: {timeout: 5}'));
    assert.ok(lines.includes('x.yaml:8:37: VirtualService default/v: spec.http[0].route[0].destination.constructor: unknown field "constructor"'), lines.join('\n'));
    assert.ok(lines.includes('x.yaml:9:5: VirtualService default/v: spec.http[0].toString: unknown field "toString"'), lines.join('\n'));
    assert.ok(lines.includes('x.yaml:10:5: VirtualService default/v: spec.http[0].__proto__: unknown field "__proto__"'), lines.join('\n'));
    const mesh = check('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    hasOwnProperty: 1\n');
    assert.deepEqual(mesh, ['x.yaml:5:3: ConfigMap istio-system/istio: data.mesh.hasOwnProperty: warning: mesh field "hasOwnProperty" is not used by meshgate']);
  });

  it('a malformed destination subset or gateway entry is its schema error only, not a warning about "[object Object]"', () => {
    const subset = check(vs('  - route: [{destination: {host: a, subset: {v: 1}}}]'));
    assert.deepEqual(subset.filter((l) => l.includes('subset')), ['x.yaml:8:37: VirtualService default/v: spec.http[0].route[0].destination.subset: must be a string, got a mapping']);
    const gateway = check(vs('  - route: [{destination: {host: a}}]').replace('  hosts: [a.example.com]', '  hosts: [a.example.com]\n  gateways: [[{name: gw}]]'));
    assert.deepEqual(gateway.filter((l) => l.includes('gateways')), ['x.yaml:7:14: VirtualService default/v: spec.gateways[0]: must be a string, got a list']);
  });

  it('NaN and infinite numbers are named in messages, not shown as "null"', () => {
    const lines = check(vs('  - route: [{destination: {host: a}, weight: .inf}, {destination: {host: b}, weight: .nan}]'));
    assert.ok(lines.some((l) => l.endsWith('spec.http[0].route[0].weight: must be an integer, got number Infinity')), lines.join('\n'));
    assert.ok(lines.some((l) => l.endsWith('spec.http[0].route[1].weight: must be an integer, got number NaN')), lines.join('\n'));
  });

  it('never throws on junk', () => {
    const junk = ['', '---', '[]', 'kind: Gateway', 'kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: 7',
      'kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: {http: [null, 3, {route: "x"}], gateways: 5}',
      'a: &a [*a]', '\u0000\u0001', 'kind: List\nitems: [1, {kind: Gateway}]', '{{{{'];
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const atoms = ['hosts', 'http', 'route', 'destination', 'host', ':', '- ', '[', ']', '{', '}', '\n', '  ', 'x', '5', 'null', 'match', 'uri', 'regex', '"(?', '*'];
    for (let i = 0; i < 300; i++) {
      let s = 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: f}\nspec:\n  ';
      for (let j = 0; j < 30; j++) s += atoms[Math.floor(rnd() * atoms.length)];
      junk.push(s);
    }
    for (const j of junk) assert.doesNotThrow(() => check(j), j);
  });
});
