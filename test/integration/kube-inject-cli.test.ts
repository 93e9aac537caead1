// `meshgate kube-inject` as users run it (the built binary): a file, stdin, -o, flags, errors; and the
// arguments it writes are ones the real `meshgate iptables` and `meshgate run` take.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_CAPTURE, natRules } from '../../src/sidecar/iptables';
import { runMeshgate } from '../helpers/gateway';
import { REPO, deployManifests, parseDocs, type Obj } from '../helpers/manifests';

const SLEEP = path.resolve(REPO, '../shared/istio-samples/samples/sleep/sleep.yaml');

function pod(yamlText: string, kind = 'Deployment'): Obj {
  return parseDocs(yamlText).find((o) => o['kind'] === kind)!['spec']['template']['spec'];
}

function container(spec: Obj, name: string): Obj {
  return [...(spec['initContainers'] ?? []), ...spec['containers']].find((c: Obj) => c['name'] === name);
}

describe('meshgate kube-inject (command line)', function () {
  this.timeout(30_000);
  const sleep = fs.readFileSync(SLEEP, 'utf8');
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-inject-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('-f FILE and -f - (stdin) print the same injected YAML; the other documents unchanged', async () => {
    const file = await runMeshgate(['kube-inject', '-f', SLEEP]);
    assert.equal(file.code, 0, file.stderr);
    assert.equal(file.stderr, '');
    const stdin = await runMeshgate(['kube-inject', '-f', '-'], sleep);
    assert.equal(stdin.code, 0, stdin.stderr);
    assert.equal(stdin.stdout, file.stdout);
    const spec = pod(file.stdout);
    assert.deepEqual(spec['containers'].map((c: Obj) => c['name']), ['sleep', 'istio-proxy']);
    assert.deepEqual(spec['initContainers'].map((c: Obj) => c['name']), ['istio-init']);
    assert.ok(file.stdout.startsWith(sleep.slice(0, sleep.indexOf('kind: Deployment'))), 'the ServiceAccount and the Service as they were');
  });

  it('injecting its own output again changes nothing and says so on stderr', async () => {
    const once = await runMeshgate(['kube-inject', '-f', SLEEP]);
    const twice = await runMeshgate(['kube-inject', '--filename', '-'], once.stdout);
    assert.equal(twice.code, 0);
    assert.equal(twice.stdout, once.stdout);
    assert.equal(twice.stderr, 'meshgate kube-inject: Deployment sleep: not injected (already injected)\n');
  });

  it('-o FILE, --image and --native-sidecar', async () => {
    const out = path.join(dir, 'sleep-injected.yaml');
    const r = await runMeshgate(['kube-inject', '-f', SLEEP, '-o', out, '--image', 'registry.example.com/meshgate:dev', '--native-sidecar']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    const spec = pod(fs.readFileSync(out, 'utf8'));
    assert.deepEqual(spec['initContainers'].map((c: Obj) => [c['name'], c['image'], c['restartPolicy']]),
      [['istio-init', 'registry.example.com/meshgate:dev', undefined], ['istio-proxy', 'registry.example.com/meshgate:dev', 'Always']]);
    assert.deepEqual(spec['containers'].map((c: Obj) => c['name']), ['sleep']);
  });

  it('metrics merging: Prometheus pointed at the agent (:15020/stats/prometheus), the application\'s own annotations in the proxy\'s env', async () => {
    const template = (yamlText: string) => parseDocs(yamlText).find((o) => o['kind'] === 'Deployment')!['spec']['template'];
    const prom = (t: Obj) => Object.fromEntries(Object.entries(t['metadata']['annotations']).filter(([k]) => k.startsWith('prometheus.io/')));
    const envOf = (t: Obj) => (container(t['spec'], 'istio-proxy')['env'] as Obj[]).map((e) => [e['name'], e['value']]);
    const agent = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15020', 'prometheus.io/path': '/stats/prometheus' };
    const plain = template((await runMeshgate(['kube-inject', '-f', SLEEP])).stdout);
    assert.deepEqual(prom(plain), agent);
    assert.deepEqual(envOf(plain), [['MESHGATE_NAMESPACE', undefined]]);

    const file = path.join(dir, 'jvm.yaml');
    const deployment = (ann: string) => `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    metadata:\n      annotations:\n${ann}    spec:\n      containers:\n      - name: orders\n        image: orders:1\n`;
    fs.writeFileSync(file, deployment('        prometheus.io/scrape: "true"\n        prometheus.io/path: /manage/prometheus\n        prometheus.io/port: "8383"\n'));
    const jvm = await runMeshgate(['kube-inject', '-f', file]);
    assert.equal(jvm.code, 0, jvm.stderr);
    assert.deepEqual(prom(template(jvm.stdout)), agent);
    assert.deepEqual(envOf(template(jvm.stdout)), [['MESHGATE_NAMESPACE', undefined], ['ISTIO_PROMETHEUS_ANNOTATIONS', '{"scrape":"true","path":"/manage/prometheus","port":"8383"}']]);

    fs.writeFileSync(file, deployment('        prometheus.istio.io/merge-metrics: "false"\n        prometheus.io/port: "8383"\n'));
    const off = template((await runMeshgate(['kube-inject', '-f', file])).stdout);
    assert.deepEqual(prom(off), { 'prometheus.io/port': '8383' });
    assert.deepEqual(envOf(off), [['MESHGATE_NAMESPACE', undefined]]);
  });

  it('--help names the flags; no -f, a missing file or bad YAML exit 2 with the reason', async () => {
    const help = await runMeshgate(['kube-inject', '--help']);
    assert.equal(help.code, 0);
    for (const f of ['-f, --filename', '-o, --output', '--image', '--native-sidecar', 'MESHGATE_IMAGE']) assert.ok(help.stdout.includes(f), f);
    assert.match((await runMeshgate(['help'])).stdout, /kube-inject +add the meshgate sidecar/);
    const none = await runMeshgate(['kube-inject']);
    assert.deepEqual([none.code, none.stderr], [2, "meshgate: kube-inject: -f FILE is required ('-' for stdin)\n"]);
    const missing = await runMeshgate(['kube-inject', '-f', path.join(dir, 'nope.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /ENOENT.*nope\.yaml/);
    const bad = await runMeshgate(['kube-inject', '-f', '-'], 'kind: Pod\nspec: [unclosed\n');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^meshgate: YAML: /);
  });

  it('istio-init\'s arguments, given to the real `meshgate iptables` (printing instead of --apply), are istio-iptables\' default rules', async () => {
    const args = (container(pod((await runMeshgate(['kube-inject', '-f', SLEEP])).stdout), 'istio-init')['args'] as string[]);
    assert.deepEqual(args.slice(0, 2), ['iptables', '--apply']);
    const printed = await runMeshgate(['iptables', ...args.slice(2)]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal(printed.stdout, natRules(DEFAULT_CAPTURE, 4));
  });

  it('includeOutboundIPRanges: "" gives the real `meshgate iptables` no outbound redirect at all (istio-iptables -i \'\')', async () => {
    const file = path.join(dir, 'pod.yaml');
    fs.writeFileSync(file, 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    traffic.sidecar.istio.io/includeOutboundIPRanges: ""\nspec:\n  containers:\n  - name: app\n    image: app\n');
    const out = await runMeshgate(['kube-inject', '-f', file]);
    assert.equal(out.code, 0, out.stderr);
    const args = (parseDocs(out.stdout)[0]!['spec']['initContainers'] as Obj[]).find((c) => c['name'] === 'istio-init')!['args'] as string[];
    assert.equal(args[args.indexOf('--include-outbound-cidrs') + 1], '');
    const printed = await runMeshgate(['iptables', ...args.slice(2)]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal(printed.stdout, natRules({ ...DEFAULT_CAPTURE, includeOutboundCidrs: [] }, 4));
    assert.doesNotMatch(printed.stdout, /^-A ISTIO_OUTPUT .*-j ISTIO_REDIRECT$/m);
    assert.match(printed.stdout, /^-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT$/m, 'inbound capture stays');
  });

  it('every flag the sidecar and the gateway Deployments pass to `meshgate run` is one it lists (--source: the Kubernetes source adds it)', async () => {
    const help = (await runMeshgate(['run', '--help'])).stdout;
    const sidecar = container(pod((await runMeshgate(['kube-inject', '-f', SLEEP])).stdout), 'istio-proxy')['args'] as string[];
    const gateways = deployManifests().map((m) => m.obj).filter((o) => o['kind'] === 'Deployment').map((d) => d['spec']['template']['spec']['containers'][0]['args'] as string[]);
    for (const args of [sidecar, ...gateways]) {
      assert.equal(args[0], 'run');
      const unknown = args.filter((a) => a.startsWith('--') && !new RegExp(`^ +${a}\\b`, 'm').test(help));
      assert.deepEqual(unknown.filter((f) => f !== '--source'), [], args.join(' '));
    }
  });
});
