// The Kubernetes kinds meshgate reads (Service, Secret, ConfigMap) are shape-checked like the Istio
// kinds; the mesh ConfigMap's embedded YAML cannot throw out of validation; and a config compile
// cannot take is rejected with a message, not thrown.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadText } from '../../../src/config/load';
import { validate } from '../../../src/config/validate';
import { formatIssue, validatePaths } from '../../../src/config/format';
import { compile, type GatewayIdentity } from '../../../src/config/compile';
import { compileChecked, validateEach } from '../../../src/config/pipeline';
import { CompileError } from '../../../src/config/compile-error';
import { res, set } from '../../helpers/resources';

const id: GatewayIdentity = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map(), bind: '0.0.0.0' };

function errorsOf(yaml: string, file = 'core.yaml'): string[] {
  const loaded = loadText(yaml, file);
  const { issues } = validate(loaded.resources);
  return [...loaded.issues, ...issues].filter((i) => i.severity === 'error').map(formatIssue);
}

const service = (spec: string) => `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: apps
spec:
${spec}`;

describe('validation of the Kubernetes kinds meshgate reads', () => {
  const table: [string, string, string[]][] = [
    ['Service ports as a mapping', service('  ports: {http: 80}'), [
      'core.yaml:7:3: Service apps/web: spec.ports: must be a list, got a mapping',
    ]],
    ['Service port number missing, a string port, a wrong targetPort', service(`  ports:
  - name: http
  - port: "80"
    targetPort: [8080]
    protocol: 6`), [
      'core.yaml:8:5: Service apps/web: spec.ports[0].port: required field "port" is missing',
      'core.yaml:9:5: Service apps/web: spec.ports[1].port: must be an integer, got string "80"',
      'core.yaml:10:5: Service apps/web: spec.ports[1].targetPort: must be a number or a name, got a list',
      'core.yaml:11:5: Service apps/web: spec.ports[1].protocol: must be a string, got number 6',
    ]],
    ['Service targetPort 0 or 1.5 (a number is a port: found by the fuzz test)', service('  ports:\n  - {port: 80, targetPort: 0}\n  - {port: 81, targetPort: 1.5}'), [
      'core.yaml:8:16: Service apps/web: spec.ports[0].targetPort: 0 is out of range 1..65535',
      'core.yaml:9:16: Service apps/web: spec.ports[1].targetPort: must be an integer, got number 1.5',
    ]],
    ['Service port entry with a misspelt field', service('  ports:\n  - port: 80\n    targetport: 8080'), [
      'core.yaml:9:5: Service apps/web: spec.ports[0].targetport: unknown field "targetport" (did you mean "targetPort"?)',
    ]],
    ['Service selector as a list', service('  selector: [app]\n  ports: [{port: 80}]'), [
      'core.yaml:7:3: Service apps/web: spec.selector: must be a mapping, got a list',
    ]],
    ['Service selector value not a string', service('  selector: {app: web, version: {v: 1}}'), [
      'core.yaml:7:24: Service apps/web: spec.selector.version: must be a string, got a mapping',
    ]],
    ['Secret data not a mapping, stringData values not strings', `apiVersion: v1
kind: Secret
metadata: {name: cred, namespace: istio-system}
type: kubernetes.io/tls
data: [a, b]
stringData:
  cert: {pem: x}`, [
      'core.yaml:5:1: Secret istio-system/cred: data: must be a mapping, got a list',
      'core.yaml:7:3: Secret istio-system/cred: stringData.cert: must be a string, got a mapping',
    ]],
    ['ConfigMap data not a mapping of strings', `apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: apps}
data:
  retries: [1, 2]`, [
      'core.yaml:5:3: ConfigMap apps/settings: data.retries: must be a string, got a list',
    ]],
    ['mesh ConfigMap data.mesh not a string: one error, not two', `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: {accessLogFile: /dev/stdout}`, [
      'core.yaml:5:3: ConfigMap istio-system/istio: data.mesh: must be a string, got a mapping',
    ]],
  ];
  for (const [name, yaml, want] of table) {
    it(`reports ${name}, with file:line:col and field path`, () => {
      assert.deepEqual(errorsOf(yaml), want);
    });
  }

  it('accepts well-formed objects, including the API\'s fields meshgate does not read', () => {
    assert.deepEqual(errorsOf(`${service(`  type: ClusterIP
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ipFamilies: [IPv4]
  sessionAffinity: None
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-web, protocol: TCP, appProtocol: http}
  - {name: grpc, port: 9000, targetPort: 9001, nodePort: 30900}`)}
status: {loadBalancer: {}}
---
apiVersion: v1
kind: Secret
metadata: {name: cred, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: apps}
data: {a: "1", b: text}
`), []);
  });

  it('a Service with a malformed shape is left out on its own by the per-object (Kubernetes) mode', () => {
    const loaded = loadText(`${service('  ports: {http: 80}')}\n---\n${service('  ports: [{port: 80}]').replace('name: web', 'name: ok')}`, 'kubernetes');
    const v = validateEach(loaded.resources);
    assert.deepEqual(v.rejected.map((r) => `${r.kind} ${r.namespace}/${r.name}`), ['Service apps/web']);
    assert.deepEqual(v.set!.services.map((s) => s.metadata.name), ['ok']);
    assert.doesNotThrow(() => compile(v.set!, id, 1));
  });
});

describe('core kinds: what validation accepts, compile takes', () => {
  it('random Service, Secret and ConfigMap shapes: either an error, or they compile without throwing', () => {
    let seed = 11;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const ports = ['[{port: 80}]', '[{port: 80, targetPort: web}]', '[{name: http, port: 8080, targetPort: 80}]', '[]', 'null', '{http: 80}', '[80]', '[{}]', '"80"'];
    const selectors = ['{app: web}', '{}', 'null', '[app]', '{app: {v: 1}}', 'web'];
    const clusterIPs = ['10.0.0.1', 'None', 'null', '[]'];
    const types = ['ClusterIP', 'ExternalName', 'null', '{}'];
    const data = ['{tls.crt: eA==, tls.key: eQ==}', '{cert: eA==, key: eQ==}', '{}', 'null', '[]', '{tls.crt: [1]}', 'text'];
    let compiled = 0;
    for (let i = 0; i < 400; i++) {
      const yaml = `apiVersion: v1
kind: Service
metadata: {name: s${i}, namespace: apps}
spec: {ports: ${pick(ports)}, selector: ${pick(selectors)}, clusterIP: ${pick(clusterIPs)}, type: ${pick(types)}, externalName: web.example.com}
---
apiVersion: v1
kind: Secret
metadata: {name: c${i}, namespace: istio-system}
data: ${pick(data)}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g${i}, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: c${i}}}]
`;
      const loaded = loadText(yaml, 'fuzz.yaml');
      const v = validate(loaded.resources);
      if ([...loaded.issues, ...v.issues].some((x) => x.severity === 'error')) continue;
      compiled += 1;
      assert.doesNotThrow(() => compile(v.set, id, 1), yaml);
    }
    assert.ok(compiled > 10, `${compiled} of 400 were valid`);
  });
});

describe('the mesh config inside ConfigMap istio-system/istio', () => {
  // Nine levels of nine aliases each: yaml refuses to expand it (resource exhaustion).
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...'bcdefghi'.split('').map((c, i) => {
    const prev = 'abcdefghi'[i]!;
    return `${c}: &${c} [${Array(9).fill(`*${prev}`).join(',')}]`;
  })];
  const meshCm = `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
${bomb.map((l) => `    ${l}`).join('\n')}
`;

  it('an alias bomb in data.mesh is an error at data.mesh, not an exception', () => {
    const loaded = loadText(meshCm, 'mesh.yaml');
    let out: ReturnType<typeof validate> | undefined;
    assert.doesNotThrow(() => { out = validate(loaded.resources); });
    const errors = out!.issues.filter((i) => i.severity === 'error').map(formatIssue);
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0]!, /^mesh\.yaml:5:3: ConfigMap istio-system\/istio: data\.mesh: YAML: .*alias/i);
    assert.deepEqual(out!.set.mesh, {});
  });

  it('`meshgate validate` prints it with file:line and exits 1 (not 2 with no position)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-mesh-'));
    try {
      fs.writeFileSync(path.join(dir, 'mesh.yaml'), meshCm);
      const { output, exitCode } = await validatePaths([dir]);
      assert.equal(exitCode, 1);
      assert.match(output, new RegExp(`^${path.join(dir, 'mesh.yaml').replace(/[.]/g, '\\.')}:5:3: ConfigMap istio-system/istio: data\\.mesh: YAML: `, 'm'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a one-line (quoted) data.mesh is reported at its key, not on the line after it (past the end of the file)', () => {
    const yaml = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: \'{"accessLogFile": "/dev/stdout"} ]\'\n';
    const loaded = loadText(yaml, 'mesh.yaml');
    const errors = validate(loaded.resources).issues.map(formatIssue);
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0]!, /^mesh\.yaml:5:3: ConfigMap istio-system\/istio: data\.mesh: YAML syntax: /);
  });

  it('the per-object mode reports it against the ConfigMap too', () => {
    const loaded = loadText(meshCm, 'kubernetes');
    assert.doesNotThrow(() => validateEach(loaded.resources));
    assert.deepEqual(validateEach(loaded.resources).rejected.map((r) => r.name), ['istio']);
  });
});

describe('compile failures become rejections (compileChecked)', () => {
  // What validation used to let through: a Service whose ports are a mapping.
  const bad = res('Service', 'web', { selector: { app: 'web' }, ports: { http: 80 } }, 'apps');
  const badWithPos = { ...bad, positions: new Map([['spec.ports', { file: 'svc.yaml', line: 9, col: 3 }]]) };

  it('compile names the resource and field it failed on', () => {
    assert.throws(() => compile(set([badWithPos]), id, 1), (err: unknown) => err instanceof CompileError && err.resource === badWithPos && err.path === 'spec');
  });

  it('compileChecked returns one error issue with file:line, and no result, instead of throwing', () => {
    let out: ReturnType<typeof compileChecked> | undefined;
    assert.doesNotThrow(() => { out = compileChecked(set([badWithPos]), id, 1); });
    assert.equal(out!.result, undefined);
    assert.equal(out!.issues.length, 1);
    assert.match(formatIssue(out!.issues[0]!), /^test\.yaml:\d+:1: Service apps\/web: spec: cannot be compiled \(.*\); config rejected$/);
    assert.equal(out!.issues[0]!.severity, 'error');
  });

  it('a field set to null is left out, as the Kubernetes API prunes it: validation and compile agree (route timeout, match, mesh retry)', () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {exact: null}, ignoreUriCase: true}]
    route: [{destination: {host: a.example.com}}]
    timeout: null
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    defaultHttpRetryPolicy:
      perTryTimeout: null
`;
    const loaded = loadText(yaml, 'nulls.yaml');
    const v = validate(loaded.resources);
    assert.deepEqual(v.issues.filter((i) => i.severity === 'error').map(formatIssue), []);
    const out = compileChecked(v.set, id, 1);
    assert.deepEqual(out.issues.map(formatIssue), []);
    const route = out.result!.snapshot.listeners.get(80)!.routes!.exact.get('a.example.com')!.routes[0]!;
    assert.equal(route.timeoutMs, 0);
    assert.equal(out.result!.snapshot.mesh.defaultRetry.perTryTimeoutMs, 0);
  });

  it('a good config compiles through it unchanged', () => {
    const good = res('Service', 'web', { selector: { app: 'web' }, ports: [{ name: 'http', port: 80 }] }, 'apps');
    const out = compileChecked(set([good]), id, 3);
    assert.deepEqual(out.issues, []);
    assert.equal(out.result!.snapshot.version, 3);
    assert.ok(out.result!.snapshot.clusters.has('outbound|80||web.apps.svc.cluster.local'));
  });
});
