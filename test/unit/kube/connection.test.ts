// Where the API is and how to authenticate: kubeconfig parsing and the in-cluster service account.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gatewayNamespace, inClusterConnection, parseKubeconfig, parseKubeconfigs, resolveConnection } from '../../../src/kube/connection';

const b64 = (s: string) => Buffer.from(s).toString('base64');

function kubeconfig(cluster: string, user: string, extra = ''): string {
  return `apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: other
  context: { cluster: nowhere, user: nobody }
- name: dev
  context:
    cluster: c1
    user: u1
${extra}
clusters:
- name: c1
  cluster:
${cluster}
users:
- name: u1
  user:
${user}
`;
}

describe('kubeconfig', () => {
  const files: Record<string, string> = { '/k/ca.pem': 'CA-FROM-FILE', '/k/sub/client.pem': 'CERT-FROM-FILE', '/abs/key.pem': 'KEY-FROM-FILE' };
  const read = (p: string) => files[p];

  it('current context: server, CA, client certificate and key as data, the context namespace', () => {
    const c = parseKubeconfig(kubeconfig(
      `    server: https://10.0.0.1:6443/\n    certificate-authority-data: ${b64('CA')}`,
      `    client-certificate-data: ${b64('CERT')}\n    client-key-data: ${b64('KEY')}`,
      '    namespace: team-a',
    ), '/k/config', read);
    assert.deepEqual(c, {
      server: 'https://10.0.0.1:6443', ca: 'CA', cert: 'CERT', key: 'KEY', insecureSkipTlsVerify: false, namespace: 'team-a',
      describe: 'kubeconfig /k/config (context dev)',
    });
  });

  it('file paths relative to the kubeconfig, a token, insecure-skip-tls-verify', () => {
    const c = parseKubeconfig(kubeconfig(
      '    server: https://api.example:443\n    certificate-authority: ca.pem\n    insecure-skip-tls-verify: true',
      '    client-certificate: sub/client.pem\n    client-key: /abs/key.pem\n    token: abc.def',
    ), '/k/config', read);
    assert.equal(c.ca, 'CA-FROM-FILE');
    assert.equal(c.cert, 'CERT-FROM-FILE');
    assert.equal(c.key, 'KEY-FROM-FILE');
    assert.equal(c.token, 'abc.def');
    assert.equal(c.insecureSkipTlsVerify, true);
  });

  it('an exec credential plugin: command (relative to the kubeconfig when it has a path), args, env, apiVersion, installHint', () => {
    const exec = (command: string) => parseKubeconfig(kubeconfig('    server: https://eks.example', `    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: ${command}
      args: [eks, get-token, --cluster-name, prod]
      env: [{name: AWS_PROFILE, value: ops}]
      installHint: install the aws CLI
      interactiveMode: Never`), '/k/config', read).exec;
    assert.deepEqual(exec('aws'), {
      command: 'aws', args: ['eks', 'get-token', '--cluster-name', 'prod'], env: { AWS_PROFILE: 'ops' },
      apiVersion: 'client.authentication.k8s.io/v1beta1', installHint: 'install the aws CLI',
    });
    assert.equal(exec('./bin/get-token')?.command, '/k/bin/get-token');
    assert.equal(exec('/usr/local/bin/get-token')?.command, '/usr/local/bin/get-token');
  });

  const errors: [string, string, RegExp][] = [
    ['not YAML', ': : :\n  - [', /cannot parse|not a mapping/],
    ['no current context', 'apiVersion: v1\nkind: Config\n', /no current-context/],
    ['context missing', 'current-context: x\ncontexts: []\n', /context "x" is not defined/],
    ['cluster missing', kubeconfig('    insecure-skip-tls-verify: true', '    token: t').replace('name: c1', 'name: c2'), /cluster "c1" of context "dev" is not defined/],
    ['no server', kubeconfig('    insecure-skip-tls-verify: true', '    token: t'), /has no server/],
    ['auth-provider plugin', kubeconfig('    server: https://x', '    auth-provider:\n      name: gcp'), /auth-provider plugin \(removed from kubectl/],
    ['exec without apiVersion', kubeconfig('    server: https://x', '    exec:\n      command: aws'), /exec: apiVersion "": meshgate speaks/],
    ['exec without command', kubeconfig('    server: https://x', '    exec:\n      apiVersion: client.authentication.k8s.io/v1'), /exec: no command/],
    ['exec env not name/value', kubeconfig('    server: https://x', '    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n      env: [{name: A}]'), /env must be a list of \{name, value\}/],
    ['unreadable CA file', kubeconfig('    server: https://x\n    certificate-authority: missing.pem', '    token: t'), /cannot read certificate-authority \/k\/missing.pem/],
  ];
  for (const [what, text, re] of errors) {
    it(`a clear error: ${what}`, () => assert.throws(() => parseKubeconfig(text, '/k/config', read), re));
  }

  it('tls-server-name: the name for SNI and for checking the server certificate', () => {
    const c = parseKubeconfig(kubeconfig('    server: https://10.0.0.1:6443\n    tls-server-name: kubernetes.default.svc', '    token: t'), '/k/config', read);
    assert.equal(c.tlsServerName, 'kubernetes.default.svc');
    assert.equal(c.server, 'https://10.0.0.1:6443');
  });

  it('resolveConnection reads --kubeconfig; files of a KUBECONFIG list that do not exist are skipped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-kc-'));
    try {
      const file = path.join(dir, 'config');
      fs.writeFileSync(file, kubeconfig('    server: http://127.0.0.1:1', '    token: t'));
      assert.equal(resolveConnection(file).server, 'http://127.0.0.1:1');
      assert.equal(resolveConnection(`${file}${path.delimiter}/nonexistent`).server, 'http://127.0.0.1:1');
      assert.equal(resolveConnection(`/nonexistent${path.delimiter}${file}`).server, 'http://127.0.0.1:1');
      assert.throws(() => resolveConnection(path.join(dir, 'nope')), /kubeconfig .*nope: cannot read/);
      assert.throws(() => resolveConnection(`/nonexistent${path.delimiter}/nonexistent2`), /cannot read: none of the files exists/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('kubeconfig: several files (KUBECONFIG=a:b), merged as kubectl merges them', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-kc-merge-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (rel: string, text: string): string => {
    const p = path.join(dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, text);
    return p;
  };

  it('the context in the first file, its cluster and user in the second (relative paths from the second file\'s directory)', () => {
    const first = write('a/config', `apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: { cluster: c1, user: u1, namespace: team-a }
`);
    write('b/ca.pem', 'CA-OF-B');
    write('b/token', 'TOKEN-OF-B');
    const second = write('b/config', `apiVersion: v1
kind: Config
current-context: elsewhere
contexts:
- name: elsewhere
  context: { cluster: c1, user: nobody }
clusters:
- name: c1
  cluster:
    server: https://10.0.0.2:6443
    certificate-authority: ca.pem
    tls-server-name: kubernetes.default.svc
users:
- name: u1
  user:
    tokenFile: token
`);
    const c = resolveConnection([first, second].join(path.delimiter));
    assert.deepEqual(c, {
      server: 'https://10.0.0.2:6443', ca: 'CA-OF-B', tlsServerName: 'kubernetes.default.svc', tokenFile: path.join(dir, 'b/token'),
      insecureSkipTlsVerify: false, namespace: 'team-a', describe: `kubeconfig ${first}${path.delimiter}${second} (context dev)`,
    });
  });

  it('the first file that defines a name wins, whole (not merged field by field); current-context from the first file that sets it', () => {
    const a = { file: '/a/config', text: `clusters:
- name: c1
  cluster: { server: https://first.example }
users:
- name: u1
  user: { token: first-token }
` };
    const b = { file: '/b/config', text: `current-context: dev
contexts:
- name: dev
  context: { cluster: c1, user: u1 }
clusters:
- name: c1
  cluster: { server: https://second.example, insecure-skip-tls-verify: true }
users:
- name: u1
  user: { token: second-token, client-certificate-data: ${b64('CERT')} }
` };
    const c = parseKubeconfigs([a, b], () => undefined);
    assert.equal(c.server, 'https://first.example');
    assert.equal(c.insecureSkipTlsVerify, false);
    assert.equal(c.token, 'first-token');
    assert.equal(c.cert, undefined);
    assert.equal(c.describe, `kubeconfig /a/config${path.delimiter}/b/config (context dev)`);
    // An empty file in the list is an empty config.
    assert.equal(parseKubeconfigs([{ file: '/e/config', text: '' }, b], () => undefined).server, 'https://second.example');
  });

  it('errors name the file that defined the entry and the field', () => {
    const ctx = { file: '/a/config', text: 'current-context: dev\ncontexts:\n- name: dev\n  context: { cluster: c1, user: u1 }\n' };
    const cluster = (body: string) => ({ file: '/b/config', text: `clusters:\n- name: c1\n  cluster: ${body}\n` });
    const users = { file: '/c/config', text: 'users:\n- name: u1\n  user: { client-key: key.pem }\n' };
    assert.throws(() => parseKubeconfigs([ctx, cluster('{ insecure-skip-tls-verify: true }')], () => undefined), /^Error: kubeconfig \/b\/config: cluster "c1" has no server/);
    assert.throws(() => parseKubeconfigs([ctx, cluster('{ server: https://x, certificate-authority: ca.pem }')], () => undefined), /kubeconfig \/b\/config: cannot read certificate-authority \/b\/ca.pem/);
    assert.throws(() => parseKubeconfigs([ctx, cluster('{ server: https://x }'), users], () => undefined), /kubeconfig \/c\/config: cannot read client-key \/c\/key.pem/);
    assert.throws(() => parseKubeconfigs([ctx, users], () => undefined), /cluster "c1" of context "dev" is not defined/);
    assert.throws(() => parseKubeconfigs([cluster('{ server: https://x }'), users], () => undefined), /kubeconfig \/b\/config:\/c\/config: no current-context/);
    assert.throws(() => parseKubeconfigs([ctx, { file: '/d/config', text: ': : :\n  - [' }], () => undefined), /kubeconfig \/d\/config: (cannot parse|not a mapping)/);
  });
});

describe('in-cluster config', () => {
  const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
  const files: Record<string, string> = { [`${sa}/token`]: 'TOKEN', [`${sa}/ca.crt`]: 'CLUSTER-CA', [`${sa}/namespace`]: 'istio-system\n' };

  it('KUBERNETES_SERVICE_HOST/PORT, the token file (re-read by the client), the CA and the namespace', () => {
    const c = inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, sa, (p) => files[p]);
    assert.deepEqual(c, {
      server: 'https://10.96.0.1:443', ca: 'CLUSTER-CA', tokenFile: `${sa}/token`, insecureSkipTlsVerify: false, namespace: 'istio-system',
      describe: 'in-cluster (service account)',
    });
  });

  it('an IPv6 service host is bracketed', () => {
    assert.equal(inClusterConnection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' }, sa, (p) => files[p]).server, 'https://[fd00::1]:6443');
  });

  it('outside a cluster, or without a token: a clear error', () => {
    assert.throws(() => inClusterConnection({}, sa, (p) => files[p]), /not running in a cluster.*--kubeconfig/);
    assert.throws(() => inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, sa, () => undefined), /cannot read the service account token/);
  });
});

describe("the gateway's namespace", () => {
  it('the flag, else the service account namespace in a pod, else istio-system', () => {
    assert.equal(gatewayNamespace('gw-ns', { namespace: 'pod-ns' }), 'gw-ns');
    assert.equal(gatewayNamespace('', { namespace: 'pod-ns' }), 'pod-ns');
    assert.equal(gatewayNamespace('', { }), 'istio-system');
    assert.equal(gatewayNamespace('', undefined), 'istio-system');
  });
});
