// kube-inject as a pure transformation: which templates get the sidecar, the containers and annotations
// it adds, the istio-init arguments from traffic annotations, and that everything else in the YAML text
// (other documents, comments, field order, other containers) stays as it was.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  AGENT_PORT, DEFAULT_IMAGE, INIT_NAME, PROXY_NAME, STATUS_ANNOTATION, decide, initContainer, injectValue, injectedAnnotations,
  iptablesArgs, kubeInject, parseGoBool, prometheusMerge, proxyContainer, styleOf, type InjectOptions, type PodTemplate,
} from '../../../src/inject/inject';
import { flagValue, parseDocs, type Obj } from '../../helpers/manifests';

const SAMPLES = path.resolve(__dirname, '../../../../../shared/istio-samples/samples');
const OPTS: InjectOptions = { image: DEFAULT_IMAGE, imagePullPolicy: 'IfNotPresent', nativeSidecar: false };
const inject = (text: string, o: Partial<InjectOptions> = {}) => kubeInject(text, { ...OPTS, ...o });
const names = (cs: Obj[] | undefined) => (cs ?? []).map((c) => c['name']);

const tmpl = (meta: PodTemplate['metadata'] = {}, spec: Obj = {}): PodTemplate => ({ metadata: meta, spec: { containers: [{ name: 'app' }], ...spec } });

describe('kube-inject (pure)', () => {
  it('reads sidecar.istio.io/inject as Istio does (table)', () => {
    const cases: [unknown, boolean | undefined][] = [
      [undefined, undefined], ['', undefined], ['true', true], ['TRUE', true], ['y', true], ['yes', true], ['on', true],
      ['false', false], ['no', false], ['off', false], ['n', false], ['disabled', false], [false, false], [true, true],
      // Not trimmed, as Istio's strings.ToLower(value) switch: blanks are a value, and not a yes.
      ['  ', false], [' true ', false], ['true\n', false],
    ];
    for (const [v, want] of cases) assert.equal(injectValue(v), want, String(v));
  });

  it('decides which templates get the sidecar (table)', () => {
    const cases: [string, PodTemplate, string | true][] = [
      ['a plain template', tmpl(), true],
      ['no containers', { metadata: {}, spec: { containers: [] } }, 'no containers in the pod spec'],
      ['no spec', { metadata: {} }, 'no containers in the pod spec'],
      ['label false', tmpl({ labels: { [`sidecar.istio.io/inject`]: 'false' } }), 'label sidecar.istio.io/inject: "false"'],
      ['annotation false', tmpl({ annotations: { 'sidecar.istio.io/inject': 'false' } }), 'annotation sidecar.istio.io/inject: "false"'],
      ['label true wins over annotation false', tmpl({ labels: { 'sidecar.istio.io/inject': 'true' }, annotations: { 'sidecar.istio.io/inject': 'false' } }), true],
      ['annotation true', tmpl({ annotations: { 'sidecar.istio.io/inject': 'true' } }), true],
      ['already injected (status)', tmpl({ annotations: { [STATUS_ANNOTATION]: '{}' } }), 'already injected'],
      ['already injected (container)', tmpl({}, { containers: [{ name: 'app' }, { name: PROXY_NAME }] }), 'already injected'],
      ['already injected (native)', tmpl({}, { initContainers: [{ name: PROXY_NAME }] }), 'already injected'],
      ['hostNetwork', tmpl({}, { hostNetwork: true }), "hostNetwork: capture would redirect the node's own traffic"],
      // Istio's injectRequired: a label that is present wins even when empty (the default: inject).
      ['empty label: the default, the annotation not read', tmpl({ labels: { 'sidecar.istio.io/inject': '' }, annotations: { 'sidecar.istio.io/inject': 'false' } }), true],
      ['null label (`inject:` in YAML): the default, the annotation not read', tmpl({ labels: { 'sidecar.istio.io/inject': null }, annotations: { 'sidecar.istio.io/inject': 'false' } }), true],
      ['no label: the annotation', tmpl({ labels: { app: 'x' }, annotations: { 'sidecar.istio.io/inject': 'false' } }), 'annotation sidecar.istio.io/inject: "false"'],
      ['empty annotation: the default', tmpl({ annotations: { 'sidecar.istio.io/inject': '' } }), true],
      ['a value is not trimmed', tmpl({ labels: { 'sidecar.istio.io/inject': ' true ' } }), 'label sidecar.istio.io/inject: " true "'],
      ['the template\'s own namespace', tmpl({ namespace: 'kube-system' }), 'namespace kube-system: Istio never injects there'],
    ];
    for (const [what, t, want] of cases) assert.deepEqual(decide(t), want === true ? { inject: true } : { inject: false, reason: want }, what);
  });

  it('never injects into kube-system, kube-public, kube-node-lease or local-path-storage, even when asked to', () => {
    const asked = tmpl({ labels: { 'sidecar.istio.io/inject': 'true' } });
    for (const ns of ['kube-system', 'kube-public', 'kube-node-lease', 'local-path-storage']) {
      assert.deepEqual(decide(asked, ns), { inject: false, reason: `namespace ${ns}: Istio never injects there` }, ns);
      assert.deepEqual(decide(tmpl({ namespace: ns }), 'default'), { inject: false, reason: `namespace ${ns}: Istio never injects there` }, `template in ${ns}`);
    }
    for (const ns of [undefined, 'default', 'kube-systemx', 'istio-system']) assert.deepEqual(decide(asked, ns), { inject: true }, String(ns));
    const dep = (ns: string) => `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: ${ns}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: app\n`;
    const r = inject(dep('kube-system'));
    assert.equal(r.text, dep('kube-system'), 'byte for byte');
    assert.deepEqual(r.objects, [{ object: 'Deployment kube-system/d', injected: false, reason: 'namespace kube-system: Istio never injects there' }]);
    assert.deepEqual(inject(dep('apps')).objects, [{ object: 'Deployment apps/d', injected: true }]);
  });

  it('istio-init arguments: istio-iptables\' defaults, then the traffic.sidecar.istio.io annotations (table)', () => {
    const base = ['iptables', '--apply', '--proxy-port', '15001', '--inbound-port', '15006', '--proxy-uid', '1337', '--proxy-gid', '1337'];
    const t = 'traffic.sidecar.istio.io/';
    const cases: [Record<string, string>, string[]][] = [
      [{}, [...base, '--include-outbound-cidrs', '*', '--include-inbound-ports', '*', '--exclude-inbound-ports', '15090,15021,15020']],
      [{ [`${t}includeOutboundIPRanges`]: '10.96.0.0/12, 10.244.0.0/16', [`${t}excludeOutboundIPRanges`]: '169.254.169.254/32', [`${t}excludeOutboundPorts`]: '5432,6379' },
        [...base, '--include-outbound-cidrs', '10.96.0.0/12,10.244.0.0/16', '--exclude-outbound-cidrs', '169.254.169.254/32', '--exclude-outbound-ports', '5432,6379',
          '--include-inbound-ports', '*', '--exclude-inbound-ports', '15090,15021,15020']],
      [{ [`${t}includeInboundPorts`]: '8080, 9090', [`${t}excludeInboundPorts`]: '15021,8443' },
        [...base, '--include-outbound-cidrs', '*', '--include-inbound-ports', '8080,9090', '--exclude-inbound-ports', '15090,15021,15020,8443']],
      [{ [`${t}includeInboundPorts`]: '' }, [...base, '--include-outbound-cidrs', '*', '--include-inbound-ports', '', '--exclude-inbound-ports', '15090,15021,15020']],
      // Present but empty: istio-iptables captures no outbound traffic at all (not '*').
      [{ [`${t}includeOutboundIPRanges`]: '' }, [...base, '--include-outbound-cidrs', '', '--include-inbound-ports', '*', '--exclude-inbound-ports', '15090,15021,15020']],
      [{ [`${t}includeOutboundIPRanges`]: ' ' }, [...base, '--include-outbound-cidrs', '', '--include-inbound-ports', '*', '--exclude-inbound-ports', '15090,15021,15020']],
      [{ [`${t}includeOutboundIPRanges`]: '*' }, [...base, '--include-outbound-cidrs', '*', '--include-inbound-ports', '*', '--exclude-inbound-ports', '15090,15021,15020']],
    ];
    for (const [ann, want] of cases) assert.deepEqual(iptablesArgs(ann), want, JSON.stringify(ann));
  });

  it('includeOutboundPorts and excludeInterfaces, which meshgate iptables lacks: injected with a warning for each, never silently', () => {
    const t = 'traffic.sidecar.istio.io/';
    const pod = (ann: string) => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\n  annotations:\n${ann}spec:\n  containers:\n  - name: app\n    image: app\n`;
    const r = inject(pod(`    ${t}includeOutboundPorts: "5432,6379"\n    ${t}excludeInterfaces: eth1\n`));
    assert.deepEqual(r.objects, [{ object: 'Pod ns/p', injected: true }]);
    assert.deepEqual(r.warnings, [
      `Pod ns/p: annotation ${t}includeOutboundPorts: "5432,6379" is not supported by meshgate iptables and is ignored: outbound traffic to these ports is captured only when its destination is in includeOutboundIPRanges`,
      `Pod ns/p: annotation ${t}excludeInterfaces: "eth1" is not supported by meshgate iptables and is ignored: traffic on these interfaces is captured like any other`,
    ]);
    assert.deepEqual(inject(pod(`    ${t}includeOutboundPorts: ""\n    ${t}excludeOutboundPorts: "5432"\n`)).warnings, [], 'empty: nothing is ignored');
  });

  it('the sidecar: meshgate run --mode sidecar --source kubernetes with the pod\'s labels, uid 1337, Istio\'s port names, ready on 15021', () => {
    const c = proxyContainer(OPTS, tmpl({ labels: { app: 'reviews', version: 'v2' } }), false) as Obj;
    assert.equal(c['name'], PROXY_NAME);
    assert.equal(c['image'], DEFAULT_IMAGE);
    const args = c['args'] as string[];
    assert.deepEqual(args.slice(0, 3), ['run', '--mode', 'sidecar']);
    assert.deepEqual([flagValue(args, '--source'), flagValue(args, '--labels'), flagValue(args, '--capture-port'), flagValue(args, '--inbound-port')],
      ['kubernetes', 'app=reviews,version=v2', '15001', '15006']);
    assert.deepEqual(c['env'], [{ name: 'MESHGATE_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } }]);
    assert.deepEqual((c['ports'] as Obj[]).map((p) => [p['name'], p['containerPort']]),
      [['tcp-outbound', 15001], ['tcp-inbound', 15006], ['status-port', 15021], ['http-envoy-prom', 15090]]);
    for (const p of c['ports'] as Obj[]) assert.ok(p['name'].length <= 15, `${p['name']}: a port name has at most 15 characters`);
    assert.deepEqual(c['readinessProbe']['httpGet'], { path: '/healthz/ready', port: 15021 });
    assert.deepEqual([c['securityContext']['runAsUser'], c['securityContext']['runAsGroup'], c['securityContext']['runAsNonRoot']], [1337, 1337, true]);
    assert.equal(c['restartPolicy'], undefined);
    assert.equal(c['startupProbe'], undefined);
    assert.equal(flagValue(proxyContainer(OPTS, tmpl(), false)['args'] as string[], '--labels'), '', 'no labels: an empty --labels, not the gateway default');
  });

  it("the workload's name (the Deployment's) goes to the sidecar as service.istio.io/workload-name, unless the template sets it", () => {
    const doc = (labels: string) => `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: reviews-v2\n  namespace: ns\nspec:\n  template:\n    metadata:\n      labels:\n${labels}    spec:\n      containers:\n      - name: app\n        image: app\n`;
    const labelsOf = (text: string) => {
      const spec = parseDocs(inject(text).text)[0]!['spec']['template']['spec'];
      const proxy = (spec['containers'] as Obj[]).find((c) => c['name'] === PROXY_NAME)!;
      return flagValue(proxy['args'] as string[], '--labels');
    };
    assert.equal(labelsOf(doc('        app: reviews\n        version: v2\n')), 'app=reviews,version=v2,service.istio.io/workload-name=reviews-v2');
    assert.equal(labelsOf(doc('        app: reviews\n        service.istio.io/workload-name: mine\n')), 'app=reviews,service.istio.io/workload-name=mine');
  });

  it('the sidecar honours Istio\'s proxy annotations (image, CPU and memory); native mode adds restartPolicy Always and a startup probe', () => {
    const ann = { 'sidecar.istio.io/proxyImage': 'reg/meshgate:dev', 'sidecar.istio.io/proxyCPU': '200m', 'sidecar.istio.io/proxyMemory': '256Mi', 'sidecar.istio.io/proxyCPULimit': '2', 'sidecar.istio.io/proxyMemoryLimit': '1Gi' };
    const c = proxyContainer(OPTS, tmpl({ annotations: ann }), true) as Obj;
    assert.equal(c['image'], 'reg/meshgate:dev');
    assert.deepEqual(c['resources'], { requests: { cpu: '200m', memory: '256Mi' }, limits: { cpu: '2', memory: '1Gi' } });
    assert.equal(c['restartPolicy'], 'Always');
    assert.deepEqual(c['startupProbe']['httpGet'], { path: '/healthz/ready', port: 15021 });
    assert.equal(initContainer(OPTS, tmpl({ annotations: ann }))['image'], 'reg/meshgate:dev');
  });

  it('istio-init: root with NET_ADMIN and NET_RAW only, no privilege escalation', () => {
    const c = initContainer(OPTS, tmpl()) as Obj;
    assert.equal(c['name'], INIT_NAME);
    assert.deepEqual(c['securityContext'], {
      runAsUser: 0, runAsGroup: 0, runAsNonRoot: false, allowPrivilegeEscalation: false, privileged: false,
      readOnlyRootFilesystem: false, capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    });
    assert.deepEqual((c['args'] as string[]).slice(0, 2), ['iptables', '--apply']);
  });

  it('annotations: the status, kubectl\'s default container, Prometheus pointed at the agent (15020) or, without merging, at 15090 (table)', () => {
    const merged = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15020', 'prometheus.io/path': '/stats/prometheus' };
    const proxy = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15090', 'prometheus.io/path': '/stats/prometheus' };
    const dflt = { 'kubectl.kubernetes.io/default-container': 'app', 'kubectl.kubernetes.io/default-logs-container': 'app' };
    const status = (native: boolean) => JSON.stringify({ initContainers: native ? [INIT_NAME, PROXY_NAME] : [INIT_NAME], containers: native ? [] : [PROXY_NAME], volumes: [], imagePullSecrets: null, revision: 'meshgate' });
    const off = { 'prometheus.istio.io/merge-metrics': 'false' };
    const cases: [string, PodTemplate, boolean, Record<string, string>][] = [
      ['plain', tmpl(), false, { [STATUS_ANNOTATION]: status(false), ...dflt, ...merged }],
      ['native', tmpl(), true, { [STATUS_ANNOTATION]: status(true), ...dflt, ...merged }],
      ['own port: replaced by the agent\'s', tmpl({ annotations: { 'prometheus.io/port': '9090' } }), false, { [STATUS_ANNOTATION]: status(false), ...dflt, ...merged }],
      ['merging off, no own annotations: the proxy\'s 15090', tmpl({ annotations: off }), false, { [STATUS_ANNOTATION]: status(false), ...dflt, ...proxy }],
      ['merging off, own annotations: kept', tmpl({ annotations: { ...off, 'prometheus.io/port': '9090' } }), false, { [STATUS_ANNOTATION]: status(false), ...dflt }],
      ['own default container', tmpl({ annotations: { 'kubectl.kubernetes.io/default-container': 'x' } }), false,
        { [STATUS_ANNOTATION]: status(false), 'kubectl.kubernetes.io/default-logs-container': 'app', ...merged }],
    ];
    for (const [what, t, native, want] of cases) assert.deepEqual(injectedAnnotations(t, native), want, what);
  });

  it('reads prometheus.istio.io/merge-metrics and prometheus.io/scrape as Go\'s strconv.ParseBool, as Istio does (table)', () => {
    const cases: [string | undefined, boolean | undefined][] = [
      ['true', true], ['True', true], ['TRUE', true], ['t', true], ['T', true], ['1', true],
      ['false', false], ['False', false], ['FALSE', false], ['f', false], ['F', false], ['0', false],
      [undefined, undefined], ['', undefined], ['yes', undefined], ['no', undefined], ['tRUE', undefined], [' false', undefined],
    ];
    for (const [v, want] of cases) assert.equal(parseGoBool(v), want, String(v));
  });

  it('metrics merging, as Istio\'s applyPrometheusMerge: the pod\'s prometheus.io annotations and the proxy\'s ISTIO_PROMETHEUS_ANNOTATIONS (table)', () => {
    const agent = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(AGENT_PORT), 'prometheus.io/path': '/stats/prometheus' };
    const proxy = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15090', 'prometheus.io/path': '/stats/prometheus' };
    const jvm = { 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/manage/prometheus', 'prometheus.io/port': '8383' };
    const off = { 'prometheus.istio.io/merge-metrics': 'false' };
    const cases: [string, Record<string, string>, Record<string, string>, string | undefined][] = [
      ['no annotations: Prometheus to the agent, nothing to carry', {}, agent, undefined],
      ['the application\'s scrape, path and port (a JVM\'s): carried to the agent', jvm, agent, '{"scrape":"true","path":"/manage/prometheus","port":"8383"}'],
      ['only a port: the others empty', { 'prometheus.io/port': '9090' }, agent, '{"scrape":"","path":"","port":"9090"}'],
      ['only a path', { 'prometheus.io/path': '/metrics' }, agent, '{"scrape":"","path":"/metrics","port":""}'],
      ['only scrape "true"', { 'prometheus.io/scrape': 'true' }, agent, '{"scrape":"true","path":"","port":""}'],
      ['scrape "false": left alone', { 'prometheus.io/scrape': 'false', 'prometheus.io/port': '8080' }, {}, undefined],
      ['scrape "False" (a Go false too): left alone', { 'prometheus.io/scrape': 'False' }, {}, undefined],
      ['scrape "0" (a Go false too): left alone', { 'prometheus.io/scrape': '0' }, {}, undefined],
      ['scrape "yes" (not a Go bool: scrape): merged, and carried as written', { 'prometheus.io/scrape': 'yes' }, agent, '{"scrape":"yes","path":"","port":""}'],
      ['merge-metrics "false", no annotations: the proxy\'s 15090 as before', off, proxy, undefined],
      ['merge-metrics "false" with the application\'s: kept', { ...off, ...jvm }, {}, undefined],
      ['merge-metrics "0": off too', { 'prometheus.istio.io/merge-metrics': '0', ...jvm }, {}, undefined],
      ['merge-metrics "true": merged', { 'prometheus.istio.io/merge-metrics': 'true', ...jvm }, agent, '{"scrape":"true","path":"/manage/prometheus","port":"8383"}'],
      ['merge-metrics not a Go bool: the default, merged', { 'prometheus.istio.io/merge-metrics': 'nope' }, agent, undefined],
      ['port already 15020 (re-injected, or the user\'s): nothing changes', { 'prometheus.io/port': '15020', 'prometheus.io/path': '/custom' }, {}, undefined],
      ['port 15020 but scraping off: left alone', { 'prometheus.io/port': '15020', 'prometheus.io/scrape': 'false' }, {}, undefined],
      ['present but empty: nothing to carry (Istio compares with the empty struct)', { 'prometheus.io/port': '', 'prometheus.io/path': '' }, agent, undefined],
    ];
    for (const [what, ann, wantAnn, wantEnv] of cases) {
      const t = tmpl({ annotations: ann });
      assert.deepEqual(prometheusMerge(t), { annotations: wantAnn, ...(wantEnv === undefined ? {} : { scrapeConfig: wantEnv }) }, what);
      const got = injectedAnnotations(t, false);
      for (const [k, v] of Object.entries(wantAnn)) assert.equal(got[k], v, `${what}: ${k}`);
      for (const k of ['prometheus.io/scrape', 'prometheus.io/port', 'prometheus.io/path']) if (!(k in wantAnn)) assert.equal(got[k], undefined, `${what}: ${k} not set`);
      for (const native of [false, true]) {
        const env = proxyContainer(OPTS, t, native)['env'] as Obj[];
        assert.deepEqual(env, [
          { name: 'MESHGATE_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
          ...(wantEnv === undefined ? [] : [{ name: 'ISTIO_PROMETHEUS_ANNOTATIONS', value: wantEnv }]),
        ], `${what} (native ${native})`);
      }
    }
  });

  it('ISTIO_PROMETHEUS_ANNOTATIONS is Go\'s json.Marshal of Istio\'s struct: scrape, path, port in that order, all present, escaped as Go does', () => {
    const env = (ann: Record<string, string>) => prometheusMerge(tmpl({ annotations: ann })).scrapeConfig;
    // The template's order does not matter; the struct's does.
    assert.equal(env({ 'prometheus.io/port': '8383', 'prometheus.io/path': '/m', 'prometheus.io/scrape': 'true' }), '{"scrape":"true","path":"/m","port":"8383"}');
    assert.equal(env({ 'prometheus.io/path': '/m' }), '{"scrape":"","path":"/m","port":""}');
    const odd = '/metrics?a=1&b=<2>"\\\u2028';
    const json = env({ 'prometheus.io/path': odd })!;
    assert.equal(json, '{"scrape":"","path":"/metrics?a=1\\u0026b=\\u003c2\\u003e\\"\\\\\\u2028","port":""}');
    assert.deepEqual(JSON.parse(json), { scrape: '', path: odd, port: '' });
    // A lone surrogate (invalid UTF-8 to Go) is Go's \ufffd; a backslash before "ud800" is only a backslash.
    assert.equal(env({ 'prometheus.io/port': '\ud800x\\ud800' }), '{"scrape":"","path":"","port":"\\ufffdx\\\\ud800"}');
  });

  it('a JVM Deployment: its prometheus.io values overwritten in place with their comments and order, its own in the proxy\'s env', () => {
    const input = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: shop
spec:
  template:
    metadata:
      labels:
        app: orders
      annotations:
        # scraped by the cluster's Prometheus
        prometheus.io/port: "8383" # Spring's management port
        team: payments
        prometheus.io/scrape: 'true'
        prometheus.io/path: /manage/prometheus # actuator
    spec:
      containers:
      - name: orders # the application
        image: orders:1
`;
    const r = inject(input);
    assert.deepEqual(r.objects, [{ object: 'Deployment shop/orders', injected: true }]);
    const block = r.text.slice(r.text.indexOf('      annotations:\n'), r.text.indexOf('    spec:\n'));
    assert.equal(block.split('\n').slice(0, 6).join('\n'), `      annotations:
        # scraped by the cluster's Prometheus
        prometheus.io/port: "15020" # Spring's management port
        team: payments
        prometheus.io/scrape: 'true'
        prometheus.io/path: /stats/prometheus # actuator`);
    assert.match(r.text, /^ {6}- name: orders # the application$/m);
    const t = parseDocs(r.text)[0]!['spec']['template'];
    assert.deepEqual(Object.entries(t['metadata']['annotations']).filter(([k]) => k.startsWith('prometheus.io/')),
      [['prometheus.io/port', '15020'], ['prometheus.io/scrape', 'true'], ['prometheus.io/path', '/stats/prometheus']]);
    const env = (t['spec']['containers'] as Obj[]).find((c) => c['name'] === PROXY_NAME)!['env'];
    assert.deepEqual(env.map((e: Obj) => e['name']), ['MESHGATE_NAMESPACE', 'ISTIO_PROMETHEUS_ANNOTATIONS']);
    assert.equal(env[1]['value'], '{"scrape":"true","path":"/manage/prometheus","port":"8383"}');
  });

  it('overwritten values that were not strings become strings; an anchored one moves to its first alias, which keeps its value', () => {
    const pod = (ann: string, env = '') => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n${ann}spec:\n  containers:\n  - name: app\n    image: app\n${env}`;
    const typed = inject(pod('    prometheus.io/scrape: true\n    prometheus.io/port: 8383\n    prometheus.io/path:\n')).text;
    assert.match(typed, /^ {4}prometheus\.io\/scrape: "true"\n {4}prometheus\.io\/port: "15020"\n {4}prometheus\.io\/path: \/stats\/prometheus\n/m);
    const out = parseDocs(typed)[0]!;
    assert.deepEqual([out['metadata']['annotations']['prometheus.io/scrape'], out['metadata']['annotations']['prometheus.io/port']], ['true', '15020']);
    const proxyEnv = (o: Obj) => (o['spec']['containers'] as Obj[]).find((c) => c['name'] === PROXY_NAME)!['env'][1]['value'];
    // A null path is absent, as Istio reads it; the others as strings.
    assert.equal(proxyEnv(out), '{"scrape":"true","path":"","port":"8383"}');
    const tagged = inject(pod('    prometheus.io/port: !!int 8383\n    prometheus.io/scrape: !!bool true\n')).text;
    assert.match(tagged, /^ {4}prometheus\.io\/port: "15020"\n {4}prometheus\.io\/scrape: "true"\n/m, 'explicit tags dropped with the old values');
    assert.deepEqual(Object.values(parseDocs(tagged)[0]!['metadata']['annotations']).filter((v) => typeof v !== 'string'), []);

    const anchored = parseDocs(inject(pod('    prometheus.io/port: &port "8383"\n', '    env:\n    - name: PORT\n      value: *port\n    - name: AGAIN\n      value: *port\n')).text)[0]!;
    assert.equal(anchored['metadata']['annotations']['prometheus.io/port'], '15020');
    assert.deepEqual(anchored['spec']['containers'][0]['env'], [{ name: 'PORT', value: '8383' }, { name: 'AGAIN', value: '8383' }]);
    assert.equal(proxyEnv(anchored), '{"scrape":"","path":"","port":"8383"}');
  });

  it('merge-metrics "false", scrape "false" and a port already 15020: the application\'s prometheus.io annotations come out as they were', () => {
    const pod = (ann: string) => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n${ann}spec:\n  containers:\n  - name: app\n    image: app\n`;
    for (const ann of [
      '    prometheus.istio.io/merge-metrics: "false"\n    prometheus.io/port: "8383" # mine\n',
      '    prometheus.io/scrape: "false" # not scraped\n    prometheus.io/port: "8383"\n',
      '    prometheus.io/port: "15020" # the agent\n    prometheus.io/path: /custom\n',
    ]) {
      const r = inject(pod(ann)).text;
      assert.ok(r.includes(`  annotations:\n${ann}    sidecar.istio.io/status: `), ann);
      assert.doesNotMatch(r, /ISTIO_PROMETHEUS_ANNOTATIONS|\/stats\/prometheus/, ann);
    }
  });

  it('finds the pod template of each workload kind; other kinds pass through (table)', () => {
    const spec = 'containers:\n- name: app\n  image: app:1\n';
    const indent = (s: string, n: number) => s.split('\n').map((l) => (l ? ' '.repeat(n) + l : l)).join('\n');
    const podAt = (kind: string, pathToTemplate: string[]) => {
      let body = `metadata:\n  labels:\n    app: a\nspec:\n${indent(spec, 2)}`;
      for (const k of [...pathToTemplate].reverse()) body = `${k}:\n${indent(body, 2)}`;
      return `apiVersion: v1\nkind: ${kind}\n${kind === 'Pod' ? '' : 'metadata:\n  name: w\n'}${body}`;
    };
    const cases: [string, string[], 'containers' | 'initContainers' | undefined][] = [
      ['Pod', [], 'containers'],
      ['Deployment', ['spec', 'template'], 'containers'],
      ['StatefulSet', ['spec', 'template'], 'containers'],
      ['DaemonSet', ['spec', 'template'], 'containers'],
      ['ReplicaSet', ['spec', 'template'], 'containers'],
      ['ReplicationController', ['spec', 'template'], 'containers'],
      ['Job', ['spec', 'template'], 'initContainers'],
      ['CronJob', ['spec', 'jobTemplate', 'spec', 'template'], 'initContainers'],
      ['ConfigMap', ['spec', 'template'], undefined],
      ['Service', ['spec', 'template'], undefined],
    ];
    for (const [kind, p, where] of cases) {
      const input = podAt(kind, p);
      const r = inject(input);
      if (!where) {
        assert.equal(r.text, input, kind);
        assert.deepEqual(r.objects, [], kind);
        continue;
      }
      let pod = parseDocs(r.text)[0]!;
      for (const k of p) pod = pod[k];
      assert.equal(pod['spec'][where].some((c: Obj) => c['name'] === PROXY_NAME), true, kind);
      assert.equal(names(pod['spec']['initContainers'])[0], INIT_NAME, kind);
      assert.deepEqual(names(pod['spec']['containers'])[0], 'app', kind);
      assert.equal(r.objects.length, 1, kind);
      assert.equal(r.objects[0]!.injected, true, kind);
    }
  });

  it('a bare Pod with restartPolicy Never or OnFailure gets the native sidecar; Always or unset keeps the regular container (table)', () => {
    const pod = (policy: string | undefined) => `apiVersion: v1
kind: Pod
metadata:
  name: task
spec:
${policy === undefined ? '' : `  restartPolicy: ${policy}\n`}  containers:
  - name: app
    image: app:1
`;
    const cases: [string | undefined, boolean][] = [['Never', true], ['OnFailure', true], ['Always', false], [undefined, false]];
    for (const [policy, native] of cases) {
      const what = `restartPolicy ${policy ?? '(unset)'}`;
      const r = inject(pod(policy));
      const spec = parseDocs(r.text)[0]!['spec'];
      assert.deepEqual(names(spec['initContainers']), native ? [INIT_NAME, PROXY_NAME] : [INIT_NAME], what);
      assert.deepEqual(names(spec['containers']), native ? ['app'] : ['app', PROXY_NAME], what);
      const proxy = [...spec['initContainers'], ...spec['containers']].find((c: Obj) => c['name'] === PROXY_NAME);
      assert.equal(proxy['restartPolicy'], native ? 'Always' : undefined, what);
      assert.equal(spec['restartPolicy'], policy, `${what}: the pod's own policy stays`);
      const status = JSON.parse(parseDocs(r.text)[0]!['metadata']['annotations'][STATUS_ANNOTATION]);
      assert.deepEqual(status.containers, native ? [] : [PROXY_NAME], what);
    }
  });

  it('sleep.yaml: the other documents byte for byte; the Deployment keeps every line, in order, and gains only the sidecar', () => {
    const input = fs.readFileSync(path.join(SAMPLES, 'sleep/sleep.yaml'), 'utf8');
    const r = inject(input);
    assert.deepEqual(r.objects, [{ object: 'Deployment sleep', injected: true }]);
    assert.deepEqual(r.warnings, []);
    const split = (t: string) => t.split(/^(?=---$)/m);
    const [inDocs, outDocs] = [split(input), split(r.text)];
    assert.equal(outDocs.length, inDocs.length);
    for (let i = 0; i < inDocs.length; i++) {
      if (!inDocs[i]!.includes('kind: Deployment')) {
        assert.equal(outDocs[i], inDocs[i]);
        continue;
      }
      // Every input line appears in the output in the same order (the comments and the field order kept).
      const out = outDocs[i]!.split('\n');
      let at = 0;
      for (const line of inDocs[i]!.split('\n')) {
        const found = out.indexOf(line, at);
        assert.ok(found >= 0, `line lost or moved: ${JSON.stringify(line)}`);
        at = found + 1;
      }
    }
    // Take the sidecar out again and the objects are the input's.
    const docs = parseDocs(r.text);
    const pod = docs[2]!['spec']['template'];
    assert.deepEqual(names(pod['spec']['containers']), ['sleep', PROXY_NAME]);
    assert.deepEqual(names(pod['spec']['initContainers']), [INIT_NAME]);
    pod['spec']['containers'].pop();
    delete pod['spec']['initContainers'];
    delete pod['metadata']['annotations'];
    assert.deepEqual(docs, parseDocs(input));
  });

  it('idempotent: injecting the output again changes nothing and says why', () => {
    const input = fs.readFileSync(path.join(SAMPLES, 'bookinfo/platform/kube/bookinfo.yaml'), 'utf8');
    for (const nativeSidecar of [false, true]) {
      const once = inject(input, { nativeSidecar });
      assert.equal(once.objects.filter((o) => o.injected).length, 6);
      const twice = inject(once.text, { nativeSidecar });
      assert.equal(twice.text, once.text);
      assert.deepEqual(twice.objects.map((o) => o.reason), Array(6).fill('already injected'));
    }
  });

  it('opted-out templates and hostNetwork pods come out byte for byte, reported with the reason', () => {
    const doc = (meta: string, extra = '') => `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: ns\nspec:\n  template:\n    metadata:\n${meta}    spec:\n${extra}      containers:\n      - name: app\n        image: app\n`;
    const cases: [string, string][] = [
      [doc('      labels:\n        sidecar.istio.io/inject: "false"\n'), 'label sidecar.istio.io/inject: "false"'],
      [doc('      annotations:\n        sidecar.istio.io/inject: "false"\n'), 'annotation sidecar.istio.io/inject: "false"'],
      [doc('      labels: {}\n', '      hostNetwork: true\n'), "hostNetwork: capture would redirect the node's own traffic"],
    ];
    for (const [input, reason] of cases) {
      const r = inject(input);
      assert.equal(r.text, input);
      assert.deepEqual(r.objects, [{ object: 'Deployment ns/d', injected: false, reason }]);
    }
  });

  it('a List\'s items, flow-style collections made block, a warning when the pod has no service account token', () => {
    const list = 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec:\n    automountServiceAccountToken: false\n    containers: [{name: a, image: b}]\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n';
    const r = inject(list);
    const [out] = parseDocs(r.text);
    assert.deepEqual(names(out!['items'][0]['spec']['containers']), ['a', PROXY_NAME]);
    assert.deepEqual(out!['items'][1], { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } });
    assert.match(r.text, /^ {4}containers:\n {4}- \{ ?name: a, image: b ?\}\n {4}- name: istio-proxy$/m);
    assert.deepEqual(r.warnings, ["Pod p: automountServiceAccountToken is false, but the sidecar reads the Kubernetes API with the pod's service account token"]);
  });

  it('keeps the input\'s sequence indentation and flow padding (table)', () => {
    const cases: [string, { indentSeq: boolean; flowCollectionPadding: boolean }][] = [
      ['a:\n- x\n', { indentSeq: false, flowCollectionPadding: false }],
      ['a:\n  - x\n', { indentSeq: true, flowCollectionPadding: false }],
      ['a: { b: c }\n', { indentSeq: false, flowCollectionPadding: true }],
      ['a: [x, y]\n', { indentSeq: false, flowCollectionPadding: false }],
    ];
    for (const [input, want] of cases) {
      const s = styleOf(input);
      assert.deepEqual({ indentSeq: s.indentSeq, flowCollectionPadding: s.flowCollectionPadding }, want, input);
    }
    const indented = 'kind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: a\n      image: b\n';
    assert.match(inject(indented).text, /^ {2}containers:\n {4}- name: a\n {6}image: b\n {4}- name: istio-proxy$/m);
  });

  it('empty input and comment-only input come back unchanged; a YAML error is an error with its position', () => {
    for (const input of ['', '# nothing\n', '---\n']) assert.equal(inject(input).text, input);
    assert.throws(() => inject('kind: Pod\nmetadata:\n  name: [unclosed\n'), /YAML: .*at line \d+, column \d+/);
  });
});
