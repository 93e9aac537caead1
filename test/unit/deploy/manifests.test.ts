// deploy/: the Kubernetes manifests, checked offline (no test here reaches a cluster). Ports and
// nodePorts, labels and selectors, probes, uid 1337, drain timing, RBAC verbs and resources, the CRDs,
// and that the kustomizations list every file.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ISTIO_KINDS } from '../../../src/config/load';
import { DEFAULT_IMAGE } from '../../../src/inject/inject';
import { DEPLOY, REPO, deployManifests, find, flagValue, kustomizedFiles, parseDocs, yamlFiles, type Obj } from '../../helpers/manifests';

const all = deployManifests();
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);

interface GatewayCase {
  readonly name: string;
  readonly istio: string;
  readonly serviceType: string;
  /** [name, port, targetPort, nodePort] of every Service port. */
  readonly ports: readonly (readonly [string, number, number, number | undefined])[];
}

const GATEWAYS: readonly GatewayCase[] = [
  {
    name: 'istio-ingressgateway', istio: 'ingressgateway', serviceType: 'NodePort',
    ports: [['status-port', 15021, 15021, undefined], ['http2', 80, 8080, 31380], ['https', 443, 8443, 31390], ['tcp', 31400, 31400, 31400]],
  },
  {
    name: 'istio-egressgateway', istio: 'egressgateway', serviceType: 'ClusterIP',
    ports: [['http2', 80, 8080, undefined], ['https', 443, 8443, undefined]],
  },
];

function subset(small: Obj | undefined, big: Obj | undefined): boolean {
  return Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);
}

describe('deploy/ manifests', () => {
  it('every file parses, every object has apiVersion, kind and name; namespaced ones are in istio-system', () => {
    assert.ok(all.length >= 20, `only ${all.length} objects`);
    for (const { file, obj } of all) {
      assert.ok(obj['apiVersion'] && obj['kind'] && obj['metadata']?.['name'], `${file}: ${JSON.stringify(obj).slice(0, 80)}`);
      if (!CLUSTER_SCOPED.has(obj['kind'])) assert.equal(obj['metadata']['namespace'], 'istio-system', `${file}: ${obj['kind']} ${obj['metadata']['name']}`);
    }
  });

  it('the kustomizations list exactly the files and directories beside them, and deploy/ reaches them all', () => {
    for (const k of yamlFiles(DEPLOY).filter((f) => path.basename(f) === 'kustomization.yaml')) {
      const dir = path.dirname(k);
      const listed = [...(parseDocs(fs.readFileSync(k, 'utf8'))[0]!['resources'] as string[])].sort();
      const present = fs.readdirSync(dir).filter((f) => f !== 'kustomization.yaml' && (/\.ya?ml$/.test(f) || fs.existsSync(path.join(dir, f, 'kustomization.yaml')))).sort();
      assert.deepEqual(listed, present, path.relative(REPO, k));
    }
    const reached = kustomizedFiles(DEPLOY).sort();
    assert.deepEqual(reached, [...new Set(all.map((m) => m.file))].sort());
    assert.equal(new Set(reached).size, reached.length, 'a file reached twice');
  });

  it('one image everywhere: the kustomization, the Deployments and kube-inject\'s default are meshgate:<package version>', () => {
    const version = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version as string;
    assert.equal(DEFAULT_IMAGE, `meshgate:${version}`);
    const k = parseDocs(fs.readFileSync(path.join(DEPLOY, 'kustomization.yaml'), 'utf8'))[0]!;
    assert.deepEqual(k['images'], [{ name: 'meshgate', newName: 'meshgate', newTag: version }]);
    for (const g of GATEWAYS) assert.equal(find(all, 'Deployment', g.name)['spec']['template']['spec']['containers'][0]['image'], DEFAULT_IMAGE);
  });

  for (const g of GATEWAYS) {
    describe(g.name, () => {
      const deployment = find(all, 'Deployment', g.name);
      const service = find(all, 'Service', g.name);
      const pdb = find(all, 'PodDisruptionBudget', g.name);
      const pod = deployment['spec']['template'];
      const [container] = pod['spec']['containers'] as Obj[];
      const args = container!['args'] as string[];
      const containerPorts = (container!['ports'] as Obj[]).map((p) => p['containerPort'] as number);

      it(`labels istio: ${g.istio} and app: ${g.name}; Deployment, Service and PodDisruptionBudget select the same pods`, () => {
        const labels = { app: g.name, istio: g.istio };
        for (const o of [deployment, service, pdb]) assert.ok(subset(labels, o['metadata']['labels']), `${o['kind']} labels`);
        assert.ok(subset(labels, pod['metadata']['labels']), 'pod labels');
        assert.deepEqual(deployment['spec']['selector']['matchLabels'], labels);
        assert.deepEqual(service['spec']['selector'], labels);
        assert.deepEqual(pdb['spec']['selector']['matchLabels'], labels);
        assert.ok(subset(pod['spec']['topologySpreadConstraints'][0]['labelSelector']['matchLabels'], pod['metadata']['labels']));
      });

      it(`Service ${g.serviceType} ports and nodePorts; every targetPort is a containerPort`, () => {
        assert.equal(service['spec']['type'], g.serviceType);
        const ports = (service['spec']['ports'] as Obj[]).map((p) => [p['name'], p['port'], p['targetPort'], p['nodePort']]);
        assert.deepEqual(ports, g.ports);
        for (const [, , target] of g.ports) assert.ok(containerPorts.includes(target), `targetPort ${target}`);
      });

      it(`runs meshgate run --source kubernetes --labels istio=${g.istio}, its namespace its own, port map matching the Service`, () => {
        assert.equal(args[0], 'run');
        assert.equal(flagValue(args, '--source'), 'kubernetes');
        assert.equal(flagValue(args, '--labels'), `istio=${g.istio}`);
        // No --namespace: in a pod the gateway's namespace is the service account's, so a kustomize
        // `namespace:` override moves it along with the Deployment.
        assert.equal(flagValue(args, '--namespace'), undefined);
        const map = flagValue(args, '--port-map')!.split(',').map((kv) => kv.split('=').map(Number));
        assert.deepEqual(map, [[80, 8080], [443, 8443]]);
        for (const [port, listen] of map) assert.ok(g.ports.some(([, p, t]) => p === port && t === listen), `${port}=${listen}`);
      });

      it("readiness and liveness probes on 15021; Prometheus scrape annotations for the agent port 15020 (as Istio's gateways), 15090 declared", () => {
        assert.deepEqual(container!['readinessProbe']['httpGet'], { path: '/healthz/ready', port: 15021 });
        assert.deepEqual(container!['livenessProbe']['httpGet'], { path: '/healthz/live', port: 15021 });
        assert.ok(containerPorts.includes(15021) && containerPorts.includes(15090));
        assert.deepEqual(
          Object.fromEntries(Object.entries(pod['metadata']['annotations']).filter(([k]) => k.startsWith('prometheus.io/'))),
          { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15020', 'prometheus.io/path': '/stats/prometheus' });
        assert.equal(pod['metadata']['annotations']['sidecar.istio.io/inject'], 'false');
      });

      it('uid/gid 1337, non-root, no privilege escalation, no capabilities, read-only root', () => {
        const podSc = pod['spec']['securityContext'];
        assert.deepEqual([podSc['runAsUser'], podSc['runAsGroup'], podSc['runAsNonRoot']], [1337, 1337, true]);
        const sc = container!['securityContext'];
        assert.deepEqual([sc['allowPrivilegeEscalation'], sc['privileged'], sc['readOnlyRootFilesystem'], sc['capabilities']], [false, false, true, { drop: ['ALL'] }]);
      });

      it('drains on rollout: maxUnavailable 0, maxSurge 1; preStop sleep + --drain-seconds fit in terminationGracePeriodSeconds', () => {
        assert.deepEqual(deployment['spec']['strategy'], { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
        const [cmd, seconds] = container!['lifecycle']['preStop']['exec']['command'] as string[];
        assert.equal(cmd, 'sleep');
        const drain = Number(flagValue(args, '--drain-seconds'));
        const grace = pod['spec']['terminationGracePeriodSeconds'] as number;
        assert.ok(drain > 0 && Number(seconds) > 0);
        assert.ok(grace >= Number(seconds) + drain && grace <= Number(seconds) + drain + 10, `grace ${grace}, preStop ${seconds}, drain ${drain}`);
      });

      it('PodDisruptionBudget leaves room to evict one pod; resources have requests and limits', () => {
        assert.ok(pdb['spec']['minAvailable'] < deployment['spec']['replicas'], 'minAvailable must be below replicas or a node drain blocks');
        for (const k of ['requests', 'limits']) assert.ok(container!['resources'][k]['cpu'] && container!['resources'][k]['memory'], k);
      });

      it('its service account exists and is bound to the reader, the mesh config and the gateway secrets', () => {
        const sa = pod['spec']['serviceAccountName'];
        find(all, 'ServiceAccount', sa);
        const bound = all.map((m) => m.obj).filter((o) => /Binding$/.test(o['kind']))
          .filter((b) => (b['subjects'] as Obj[]).some((s) => s['kind'] === 'ServiceAccount' && s['name'] === sa && s['namespace'] === 'istio-system'))
          .map((b) => `${b['roleRef']['kind']}/${b['roleRef']['name']}`).sort();
        assert.deepEqual(bound, ['ClusterRole/meshgate-reader', 'Role/meshgate-gateway-secrets', 'Role/meshgate-mesh-config']);
      });
    });
  }

  describe('RBAC', () => {
    const roles = all.map((m) => m.obj).filter((o) => o['kind'] === 'ClusterRole' || o['kind'] === 'Role');
    /** `Kind/name: group/resource` for every rule, the read-only verbs checked on the way. */
    const grants = () => roles.flatMap((r) => (r['rules'] as Obj[]).flatMap((rule) => {
      assert.deepEqual([...rule['verbs']].sort(), ['get', 'list', 'watch'], `${r['metadata']['name']}: verbs`);
      assert.equal(rule['resourceNames'], undefined);
      return (rule['apiGroups'] as string[]).flatMap((g) => (rule['resources'] as string[]).map((res) => `${r['kind']}/${r['metadata']['name']}: ${g || 'core'}/${res}`));
    })).sort();

    it('get, list and watch on what the Kubernetes source reads, nothing more; secrets and configmaps only in istio-system', () => {
      const granted = grants();
      const istio = ['destinationrules', 'gateways', 'serviceentries', 'sidecars', 'virtualservices', 'workloadentries'];
      assert.deepEqual(granted, [
        ...istio.map((r) => `ClusterRole/meshgate-reader: networking.istio.io/${r}`),
        'ClusterRole/meshgate-reader: core/services',
        'ClusterRole/meshgate-reader: core/pods',
        'ClusterRole/meshgate-reader: discovery.k8s.io/endpointslices',
        'Role/meshgate-gateway-secrets: core/secrets',
        'Role/meshgate-mesh-config: core/configmaps',
      ].sort());
      for (const r of roles.filter((x) => x['kind'] === 'Role')) assert.equal(r['metadata']['namespace'], 'istio-system');
      assert.ok(!granted.some((g) => g.includes('*')));
    });

    it('bindings name roles and service accounts that exist (a RoleBinding only a Role of its namespace)', () => {
      for (const b of all.map((m) => m.obj).filter((o) => /Binding$/.test(o['kind']))) {
        const role = find(all, b['roleRef']['kind'], b['roleRef']['name']);
        if (b['kind'] === 'RoleBinding') assert.equal(role['metadata']['namespace'], b['metadata']['namespace']);
        else assert.equal(b['roleRef']['kind'], 'ClusterRole');
        for (const s of b['subjects'] as Obj[]) {
          assert.equal(s['kind'], 'ServiceAccount');
          assert.equal(find(all, 'ServiceAccount', s['name'])['metadata']['namespace'], s['namespace']);
        }
      }
    });
  });

  describe('CRDs', () => {
    const crds = all.filter((m) => m.obj['kind'] === 'CustomResourceDefinition').map((m) => m.obj);

    it('one for each kind meshgate reads, named <plural>.networking.istio.io, in deploy/crds/', () => {
      assert.deepEqual(crds.map((c) => c['spec']['names']['kind']).sort(), [...ISTIO_KINDS].sort());
      for (const m of all.filter((x) => x.obj['kind'] === 'CustomResourceDefinition')) {
        const c = m.obj;
        assert.equal(m.file, `deploy/crds/${c['spec']['names']['singular']}.yaml`);
        assert.equal(c['metadata']['name'], `${c['spec']['names']['plural']}.networking.istio.io`);
        assert.equal(c['spec']['group'], 'networking.istio.io');
        assert.equal(c['spec']['scope'], 'Namespaced');
        assert.equal(c['spec']['names']['listKind'], `${c['spec']['names']['kind']}List`);
        assert.equal(c['spec']['names']['singular'], c['spec']['names']['kind'].toLowerCase());
      }
    });

    it('v1, v1beta1 and v1alpha3 served, v1 stored; a structural schema that keeps spec and status as they are', () => {
      for (const c of crds) {
        const versions = c['spec']['versions'] as Obj[];
        assert.deepEqual(versions.map((v) => [v['name'], v['served'], v['storage']]), [['v1', true, true], ['v1beta1', true, false], ['v1alpha3', true, false]]);
        for (const v of versions) {
          const schema = v['schema']['openAPIV3Schema'];
          assert.equal(schema['type'], 'object');
          for (const field of ['spec', 'status']) assert.deepEqual(schema['properties'][field], { type: 'object', 'x-kubernetes-preserve-unknown-fields': true });
          assert.deepEqual(v['subresources'], { status: {} });
        }
      }
    });
  });
});
