// The workload a Pod belongs to, named as Istio names it for telemetry (istio/istio pkg/kube/util.go
// GetWorkloadMetaFromPod / GetDeployMetaFromPod): tables of Pods as the API returns them, malformed
// input that must not throw, and the Kubernetes source's slimmed Pods keeping what the name needs.

import assert from 'node:assert/strict';
import pino from 'pino';
import { kubeServiceDefs, workloadNameOf, type PodObject } from '../../../src/kube/registry';
import type { KubeObject } from '../../../src/kube/reflector';
import { KubeSource } from '../../../src/sources/kubernetes';

/** A Pod a controller made: generated name, the controller's owner reference (controller: true). */
function controlled(name: string, kind: string, owner: string, labels: Record<string, string> = {}, apiVersion = 'apps/v1'): PodObject {
  const generateName = name.slice(0, name.lastIndexOf('-') + 1) || `${owner}-`;
  const ref = { apiVersion, kind, name: owner, uid: '5f1c1b0e-0000-4000-8000-000000000001', controller: true, blockOwnerDeletion: true };
  return { metadata: { name, namespace: 'shop', generateName, labels, ownerReferences: [ref] } };
}

describe('workloadNameOf (Istio GetWorkloadMetaFromPod)', () => {
  const table: [string, PodObject, string][] = [
    ['Deployment pod: the ReplicaSet name without -<pod-template-hash>',
      controlled('reviews-v1-7d4b9c8f5-x2x9z', 'ReplicaSet', 'reviews-v1-7d4b9c8f5', { app: 'reviews', 'pod-template-hash': '7d4b9c8f5' }), 'reviews-v1'],
    ['Deployment whose name ends in digits',
      controlled('api-2024-5c8f6d7b9-abcde', 'ReplicaSet', 'api-2024-5c8f6d7b9', { 'pod-template-hash': '5c8f6d7b9' }), 'api-2024'],
    ['bare ReplicaSet pod (no pod-template-hash): the ReplicaSet name',
      controlled('frontend-b7xk2', 'ReplicaSet', 'frontend', { tier: 'frontend' }), 'frontend'],
    ['ReplicaSet whose name does not end with the pod-template-hash: the ReplicaSet name',
      controlled('legacy-9z8y7', 'ReplicaSet', 'legacy', { 'pod-template-hash': '7d4b9c8f5' }), 'legacy'],
    ['Argo Rollout: the ReplicaSet name without -<rollouts-pod-template-hash>',
      controlled('canary-demo-6cf78c66c5-q8f2k', 'ReplicaSet', 'canary-demo-6cf78c66c5', { 'rollouts-pod-template-hash': '6cf78c66c5' }), 'canary-demo'],
    ['StatefulSet: its own name',
      controlled('web-0', 'StatefulSet', 'web', { 'controller-revision-hash': 'web-6d4f9c7b8', 'statefulset.kubernetes.io/pod-name': 'web-0' }), 'web'],
    ['DaemonSet: its own name',
      controlled('fluentd-7xq2p', 'DaemonSet', 'fluentd', { 'controller-revision-hash': '5b8d9f7c6', 'pod-template-generation': '3' }), 'fluentd'],
    ['ReplicationController: its own name',
      controlled('nginx-rc-4kq9d', 'ReplicationController', 'nginx-rc', { app: 'nginx' }, 'v1'), 'nginx-rc'],
    ['OpenShift DeploymentConfig: the deploymentconfig label of a ReplicationController pod',
      controlled('ruby-1-abcde', 'ReplicationController', 'ruby-1', { deploymentconfig: 'ruby', deployment: 'ruby-1' }, 'v1'), 'ruby'],
    ['Job: its own name',
      controlled('pi-xk2dn', 'Job', 'pi', { 'batch.kubernetes.io/job-name': 'pi', 'job-name': 'pi' }, 'batch/v1'), 'pi'],
    ['Job named -<7 digits>: not a CronJob\'s, its own name',
      controlled('migrate-1234567-abcde', 'Job', 'migrate-1234567', { 'job-name': 'migrate-1234567' }, 'batch/v1'), 'migrate-1234567'],
    ['CronJob-created Job (-<8 digits>, minutes since the epoch): the CronJob',
      controlled('hello-28462710-6kq9x', 'Job', 'hello-28462710', { 'batch.kubernetes.io/job-name': 'hello-28462710', 'job-name': 'hello-28462710' }, 'batch/v1'), 'hello'],
    ['CronJob-created Job (-<10 digits>): the CronJob, dashes in its name kept',
      controlled('db-backup-nightly-1700000000-zz9x1', 'Job', 'db-backup-nightly-1700000000', {}, 'batch/v1'), 'db-backup-nightly'],
    ['Job named -<11 digits>: not a CronJob\'s',
      controlled('load-17000000001-abcde', 'Job', 'load-17000000001', {}, 'batch/v1'), 'load-17000000001'],
    ['a controller of another kind (a custom resource): its name',
      controlled('kafka-0', 'StrimziPodSet', 'kafka', {}, 'core.strimzi.io/v1beta2'), 'kafka'],
    ['bare Pod: its own name', { metadata: { name: 'debug', namespace: 'shop', labels: { run: 'debug' } } }, 'debug'],
    ['bare Pod that looks like a Deployment\'s (name and pod-template-hash): no heuristic on the name, its own name',
      { metadata: { name: 'reviews-v1-7d4b9c8f5-x2x9z', namespace: 'shop', labels: { 'pod-template-hash': '7d4b9c8f5' } } }, 'reviews-v1-7d4b9c8f5-x2x9z'],
    ['a controller but no generateName (named by hand): its own name, as Istio',
      { metadata: { name: 'handmade', namespace: 'shop', ownerReferences: [{ kind: 'ReplicaSet', name: 'rs', controller: true }] } }, 'handmade'],
    ['owner references none of which is the controller: its own name',
      { metadata: { name: 'owned-abcde', generateName: 'owned-', ownerReferences: [{ kind: 'ReplicaSet', name: 'rs' }, { kind: 'Job', name: 'j', controller: false }] } }, 'owned-abcde'],
    ['the first controlling reference counts, not the references before it',
      { metadata: { name: 'x-abcde', generateName: 'x-', labels: { 'pod-template-hash': 'abc12' },
        ownerReferences: [{ kind: 'Node', name: 'node-1' }, { kind: 'ReplicaSet', name: 'shop-abc12', controller: true }, { kind: 'Job', name: 'other', controller: true }] } }, 'shop'],
    ['a controller without a name: its own name',
      { metadata: { name: 'anon-abcde', generateName: 'anon-', ownerReferences: [{ kind: 'StatefulSet', controller: true }] } }, 'anon-abcde'],
    ['service.istio.io/workload-name wins over the controller',
      controlled('reviews-v1-7d4b9c8f5-x2x9z', 'ReplicaSet', 'reviews-v1-7d4b9c8f5', { 'pod-template-hash': '7d4b9c8f5', 'service.istio.io/workload-name': 'reviews' }), 'reviews'],
    ['service.istio.io/workload-name on a bare Pod', { metadata: { name: 'p', labels: { 'service.istio.io/workload-name': 'named' } } }, 'named'],
  ];
  for (const [what, pod, want] of table) it(`${what} -> ${want}`, () => assert.equal(workloadNameOf(pod), want));

  const malformed: [string, unknown, string][] = [
    ['null', null, ''],
    ['undefined', undefined, ''],
    ['a string', 'pod', ''],
    ['no metadata', {}, ''],
    ['metadata null', { metadata: null }, ''],
    ['metadata not an object', { metadata: 'x' }, ''],
    ['no name at all, a controller without a name', { metadata: { generateName: 'g-', ownerReferences: [{ kind: 'ReplicaSet', controller: true }] } }, ''],
    ['name not a string', { metadata: { name: 42 } }, ''],
    ['ownerReferences null', { metadata: { name: 'p-1', generateName: 'p-', ownerReferences: null } }, 'p-1'],
    ['ownerReferences not a list', { metadata: { name: 'p-1', generateName: 'p-', ownerReferences: { kind: 'ReplicaSet', name: 'rs', controller: true } } }, 'p-1'],
    ['ownerReferences with null, numbers and strings', { metadata: { name: 'p-1', generateName: 'p-', ownerReferences: [null, 7, 'rs', [], { controller: true, kind: 'DaemonSet', name: 'ds' }] } }, 'ds'],
    ['controller "true" as a string is no controller', { metadata: { name: 'p-1', generateName: 'p-', ownerReferences: [{ kind: 'DaemonSet', name: 'ds', controller: 'true' }] } }, 'p-1'],
    ['kind and name of the wrong type', { metadata: { name: 'p-1', generateName: 'p-', ownerReferences: [{ kind: 5, name: { x: 1 }, controller: true }] } }, 'p-1'],
    ['generateName not a string', { metadata: { name: 'p-1', generateName: 5, ownerReferences: [{ kind: 'DaemonSet', name: 'ds', controller: true }] } }, 'p-1'],
    ['labels null', { metadata: { name: 'p-1', generateName: 'p-', labels: null, ownerReferences: [{ kind: 'ReplicaSet', name: 'rs-abc', controller: true }] } }, 'rs-abc'],
    ['labels a list', { metadata: { name: 'p-1', generateName: 'p-', labels: ['pod-template-hash'], ownerReferences: [{ kind: 'ReplicaSet', name: 'rs-abc', controller: true }] } }, 'rs-abc'],
    ['pod-template-hash not a string', { metadata: { name: 'p-1', generateName: 'p-', labels: { 'pod-template-hash': 123 }, ownerReferences: [{ kind: 'ReplicaSet', name: 'rs-123', controller: true }] } }, 'rs-123'],
    ['workload-name label not a string', { metadata: { name: 'p-1', labels: { 'service.istio.io/workload-name': 1 } } }, 'p-1'],
    ['labels inherited from the prototype are not the Pod\'s',
      { metadata: { name: 'p-1', generateName: 'p-', labels: Object.create({ 'pod-template-hash': 'abc' }), ownerReferences: [{ kind: 'ReplicaSet', name: 'rs-abc', controller: true }] } }, 'rs-abc'],
  ];
  for (const [what, pod, want] of malformed) {
    it(`malformed: ${what} -> ${JSON.stringify(want)}, no throw`, () => assert.equal(workloadNameOf(pod as PodObject), want));
  }

  it('kubeServiceDefs does not throw on malformed Pods either', () => {
    const pods = malformed.map(([, p]) => p).concat([{ metadata: { name: 'p', namespace: 'default' }, status: { podIP: '10.0.0.1', podIPs: [null, { ip: 5 }] } }]) as PodObject[];
    assert.doesNotThrow(() => kubeServiceDefs([], [], pods));
  });
});

describe('Kubernetes source: slimmed Pods keep what the workload name needs', () => {
  const source = new KubeSource({
    connection: { server: 'http://127.0.0.1:9', insecureSkipTlsVerify: false, describe: 'test' },
    watchNamespaces: [], namespace: 'istio-system', log: pino({ level: 'silent' }),
  });
  const slim = source.reflectors.find((r) => r.target.type.kind === 'Pod')!.target.slim!;

  /** A Deployment's Pod the way the API returns it. */
  const apiPod = (ownerReferences: unknown): KubeObject => ({
    kind: 'Pod', apiVersion: 'v1',
    metadata: {
      name: 'reviews-v1-7d4b9c8f5-x2x9z', generateName: 'reviews-v1-7d4b9c8f5-', namespace: 'shop', uid: 'pod-uid', resourceVersion: '123',
      labels: { app: 'reviews', version: 'v1', 'pod-template-hash': '7d4b9c8f5' },
      annotations: { 'kubectl.kubernetes.io/restartedAt': '2024-01-01T00:00:00Z' },
      ownerReferences,
      managedFields: [{ manager: 'kube-controller-manager', operation: 'Update' }],
    },
    spec: { containers: [{ name: 'reviews', image: 'reviews:v1' }], nodeName: 'node-1' },
    status: { phase: 'Running', podIP: '10.0.0.7', podIPs: [{ ip: '10.0.0.7' }] },
  });

  it('generateName and the controlling owner reference (kind, name) are kept; other references and fields are not', () => {
    const got = slim(apiPod([
      { apiVersion: 'v1', kind: 'Node', name: 'node-1', uid: 'n' },
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'reviews-v1-7d4b9c8f5', uid: 'rs', controller: true, blockOwnerDeletion: true },
    ]));
    assert.deepEqual(got, {
      metadata: {
        name: 'reviews-v1-7d4b9c8f5-x2x9z', namespace: 'shop', generateName: 'reviews-v1-7d4b9c8f5-',
        labels: { app: 'reviews', version: 'v1', 'pod-template-hash': '7d4b9c8f5' },
        ownerReferences: [{ kind: 'ReplicaSet', name: 'reviews-v1-7d4b9c8f5', controller: true }],
      },
      status: { podIP: '10.0.0.7', podIPs: [{ ip: '10.0.0.7' }] },
    });
    assert.equal(workloadNameOf(got as PodObject), 'reviews-v1');
  });

  it('the slimmed Pod gives its endpoint the workload', () => {
    const pod = slim(apiPod([{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'reviews-v1-7d4b9c8f5', uid: 'rs', controller: true }]));
    const [def] = kubeServiceDefs(
      [{ metadata: { name: 'reviews', namespace: 'shop' }, spec: { ports: [{ name: 'http', port: 9080 }] } }],
      [{ metadata: { name: 'reviews-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'reviews' } }, addressType: 'IPv4', ports: [{ name: 'http', port: 9080 }],
        endpoints: [{ addresses: ['10.0.0.7'], targetRef: { kind: 'Pod', name: 'reviews-v1-7d4b9c8f5-x2x9z', namespace: 'shop' } }] }],
      [pod as PodObject],
    );
    assert.deepEqual(def?.endpoints.map((e) => e.workload), [{ name: 'reviews-v1', namespace: 'shop' }]);
  });

  it('malformed owner references: nothing kept, no throw', () => {
    for (const refs of [null, undefined, 'x', {}, [null, 3, { kind: 'ReplicaSet', name: 'rs', controller: 'yes' }]]) {
      const got = slim(apiPod(refs)) as PodObject;
      assert.equal(got.metadata?.ownerReferences, undefined, JSON.stringify(refs));
      assert.equal(workloadNameOf(got), 'reviews-v1-7d4b9c8f5-x2x9z');
    }
    assert.doesNotThrow(() => slim({ metadata: { name: 'p', ownerReferences: [{ controller: true, kind: 1 }] } } as KubeObject));
    assert.deepEqual((slim({ metadata: { name: 'p', ownerReferences: [{ controller: true, kind: 1 }] } } as KubeObject) as PodObject).metadata?.ownerReferences,
      [{ kind: '', name: '', controller: true }]);
  });
});
