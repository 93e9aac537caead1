// deploy/ and kube-inject's output through the machine's kubectl (client-go), offline: no cluster and no
// network (test/helpers/kubectl.ts). What kubectl can do without an API server: build the kustomizations
// (`kubectl kustomize`), and decode objects into client-go's types and encode them again (`kubectl set
// ... --local`), which catches wrong types and, in the round trip, misspelt fields (they are dropped).
// `kubectl apply/create --dry-run=client` cannot: they ask the server for its API groups first.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_IMAGE, kubeInject } from '../../src/inject/inject';
import { offlineKubectl, type OfflineKubectl } from '../helpers/kubectl';
import { REPO, deployManifests, identity, kustomizedFiles, missingFrom, parseDocs, type Obj } from '../helpers/manifests';
import { stringify } from 'yaml';

const SLEEP = path.resolve(REPO, '../shared/istio-samples/samples/sleep/sleep.yaml');
const WORKLOADS = new Set(['Deployment', 'Job', 'Pod']);

describe('deploy/ and kube-inject with kubectl, offline', function () {
  let kubectl: OfflineKubectl;

  before(function () {
    const k = offlineKubectl();
    if ('missing' in k) {
      console.warn(`    SKIPPED kubectl checks of deploy/: ${k.missing}`);
      this.skip();
    }
    kubectl = k as OfflineKubectl;
  });
  after(() => kubectl?.close());

  function run(args: string[], input?: string): string {
    const r = kubectl.run(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  /** The object after client-go decoded it into its type and encoded it again. */
  function roundTrip(o: Obj): Obj {
    const input = stringify(o);
    if (o['kind'] === 'Service') {
      const selector = Object.entries(o['spec']['selector'] as Obj).map(([k, v]) => `${k}=${v}`).join(',');
      return JSON.parse(run(['set', 'selector', '--local', '-f', '-', selector, '-o', 'json'], input)) as Obj;
    }
    // set env touches every container and init container; the variable it adds is the only change.
    return JSON.parse(run(['set', 'env', '--local', '-f', '-', 'MESHGATE_OFFLINE_CHECK=1', '-o', 'json'], input)) as Obj;
  }

  for (const dir of ['deploy', 'deploy/crds', 'deploy/gateways']) {
    it(`kubectl kustomize ${dir}/ renders exactly the objects of the files it lists, with the image set`, () => {
      const rendered = parseDocs(run(['kustomize', path.join(REPO, dir)]));
      const files = new Set(kustomizedFiles(path.join(REPO, dir)));
      const ours = deployManifests().filter((m) => files.has(m.file)).map((m) => m.obj);
      assert.deepEqual(rendered.map(identity).sort(), ours.map(identity).sort());
      for (const o of rendered.filter((x) => x['kind'] === 'Deployment')) {
        assert.equal(o['spec']['template']['spec']['containers'][0]['image'], DEFAULT_IMAGE);
      }
    });
  }

  it('client-go decodes every built-in object of deploy/ into its type (kubectl set selector --local), and refuses a mistyped one', () => {
    const builtIn = deployManifests().map((m) => m.obj).filter((o) => !/^(apiextensions\.k8s\.io|networking\.istio\.io)\//.test(o['apiVersion']));
    assert.ok(builtIn.length >= 14);
    for (const o of builtIn) {
      const r = kubectl.run(['set', 'selector', '--local', '-f', '-', 'meshgate-check=1', '-o', 'name'], stringify(o));
      // Decoded: a Service gets the selector, anything else is refused by name; not decoded: "unable to decode".
      if (o['kind'] === 'Service') assert.equal(r.code, 0, r.stderr);
      else assert.match(r.stderr.trim(), /^(error: )?setting a selector is only supported for Services$/, `${identity(o)}: ${r.stderr}`);
    }
    const mistyped = kubectl.run(['set', 'selector', '--local', '-f', '-', 'meshgate-check=1', '-o', 'name'], 'apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: x\nspec:\n  minAvailable: [1]\n');
    assert.match(mistyped.stderr, /unable to decode.*minAvailable/);
  });

  it('Deployments and Services of deploy/ keep every field through client-go\'s types (nothing misspelt or mistyped)', () => {
    const objs = deployManifests().map((m) => m.obj).filter((o) => o['kind'] === 'Service' || WORKLOADS.has(o['kind']));
    assert.equal(objs.length, 4);
    for (const o of objs) assert.deepEqual(missingFrom(roundTrip(o), o), [], identity(o));
  });

  it('kube-inject\'s output keeps every field through client-go\'s types: sleep.yaml, and a Job with the native sidecar', () => {
    const job = 'apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: once\n        image: curlimages/curl\n';
    const inputs = [fs.readFileSync(SLEEP, 'utf8'), job];
    const injected = inputs.flatMap((text) => parseDocs(kubeInject(text, { image: DEFAULT_IMAGE, imagePullPolicy: 'IfNotPresent', nativeSidecar: false }).text))
      .filter((o) => WORKLOADS.has(o['kind']));
    assert.deepEqual(injected.map(identity), ['Deployment /sleep', 'Job /once']);
    for (const o of injected) {
      const back = roundTrip(o);
      assert.deepEqual(missingFrom(back, o), [], identity(o));
      const pod = back['spec']['template']['spec'];
      const names = [...(pod['initContainers'] ?? []), ...pod['containers']].map((c: Obj) => c['name']);
      assert.ok(names.includes('istio-proxy') && names.includes('istio-init'), names.join(','));
    }
  });
});
