// What `run` logs about a config it loads, checked against what `meshgate validate` prints for the
// same files: objects of kinds meshgate does not read (one info line per file), the resource count,
// and a Gateway credentialName naming a missing Secret (a warning at that field's file:line:col).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { App } from '../../src/app';
import { loadConfig } from '../../src/config/pipeline';
import { validatePaths } from '../../src/config/format';
import { freePort } from '../helpers/upstream';
import { meshConfigYaml } from '../helpers/gateway';

const SAMPLES = path.resolve(__dirname, '../../../../shared/istio-samples/samples');

const MESH = meshConfigYaml('""');

// credentialName is on line 14, column 7.
const HTTPS_GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
`;

const EXTRA = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: extra
`;

interface Line { level: number; msg: string; resources?: number }

describe('run logs what it loads as validate counts it', () => {
  let dir: string;
  let app: App | undefined;
  const logs: Line[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-applog-'));
    logs.length = 0;
  });
  afterEach(async () => {
    await app?.stop();
    app = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(): Promise<App> {
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(l) as Line);
        done();
      },
    });
    app = new App({
      configPaths: [dir], labels: { istio: 'ingressgateway' }, namespace: 'istio-system',
      portMap: new Map([[443, await freePort()]]), bind: '127.0.0.1',
      adminPort: 0, statusPort: 0, metricsPort: 0, serve: { admin: false, status: false, metrics: false },
      logLevel: 'info', serverName: 'istio-envoy', drainMs: 500, watch: false,
      logger: pino({ level: 'info' }, sink),
    });
    return app;
  }

  it('one info line per file with skipped kinds, logged again only when it changes', async () => {
    fs.copyFileSync(path.join(SAMPLES, 'bookinfo/platform/kube/bookinfo.yaml'), path.join(dir, 'bookinfo.yaml'));
    fs.writeFileSync(path.join(dir, 'mesh.yaml'), MESH);
    const a = await start();
    assert.equal((await a.reload('start')).result, 'applied');
    const skippedLine = `${dir}/bookinfo.yaml: skipped 10 objects of kinds meshgate does not read: Deployment x6, ServiceAccount x4`;
    assert.deepEqual(logs.filter((l) => /skipped/.test(l.msg)).map((l) => [l.level, l.msg]), [[30, skippedLine]]);
    // A reload logs a file's line again only when what it skips changes.
    logs.length = 0;
    fs.writeFileSync(path.join(dir, 'extra.yaml'), EXTRA);
    await a.reload('file change');
    assert.deepEqual(logs.filter((l) => /skipped/.test(l.msg)).map((l) => [l.level, l.msg]),
      [[30, `${dir}/extra.yaml: skipped 1 object of a kind meshgate does not read: ServiceAccount x1`]]);
  });

  it('the resource count run logs is the one validate prints (the mesh ConfigMap counted in both)', async () => {
    fs.copyFileSync(path.join(SAMPLES, 'bookinfo/platform/kube/bookinfo.yaml'), path.join(dir, 'bookinfo.yaml'));
    fs.writeFileSync(path.join(dir, 'mesh.yaml'), MESH);
    const a = await start();
    assert.equal((await a.reload('start')).result, 'applied');
    // 4 Services and the mesh ConfigMap.
    assert.equal((await loadConfig([dir])).resourceCount, 5);
    assert.match((await validatePaths([dir])).output, /^ok: 5 resources in 2 files/);
    const applied = logs.find((l) => /config version 1 applied/.test(l.msg));
    assert.equal(applied?.resources, 5);
  });

  it('a credentialName naming no Secret is a warning at the credentialName field', async () => {
    fs.writeFileSync(path.join(dir, 'mesh.yaml'), MESH);
    fs.writeFileSync(path.join(dir, 'https-gateway.yaml'), HTTPS_GATEWAY);
    const a = await start();
    assert.equal((await a.reload('start')).result, 'applied');
    const warnings = logs.filter((l) => l.level === 40).map((l) => l.msg);
    assert.ok(warnings.includes(`${dir}/https-gateway.yaml:14:7: Gateway default/mygateway: spec.servers[0].tls.credentialName: `
      + 'warning: credentialName httpbin-credential: no Secret istio-system/httpbin-credential; TLS handshakes on port 443 for httpbin.example.com will fail'),
      JSON.stringify(warnings));
  });

  it("a DestinationRule's credentialName naming no Secret is a warning at the tls block in force (subset, port level)", async () => {
    fs.writeFileSync(path.join(dir, 'mesh.yaml'), MESH);
    fs.writeFileSync(path.join(dir, 'rule.yaml'), `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: nginx, namespace: istio-system}
spec:
  hosts: [my-nginx.mesh-external.svc.cluster.local]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-mtls-for-nginx, namespace: istio-system}
spec:
  host: my-nginx.mesh-external.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls:
        mode: MUTUAL
        credentialName: client-credential
  subsets:
  - name: other
    trafficPolicy:
      tls: {mode: SIMPLE, credentialName: other-credential}
`);
    const a = await start();
    assert.equal((await a.reload('start')).result, 'applied');
    const warnings = logs.filter((l) => l.level === 40).map((l) => l.msg);
    const at = (text: string) => warnings.find((w) => w.includes(text));
    assert.match(at('outbound|443||my-nginx')!, new RegExp(`^${dir}/rule\\.yaml:20:9: DestinationRule istio-system/originate-mtls-for-nginx: spec\\.trafficPolicy\\.portLevelSettings\\[0\\]\\.tls\\.credentialName: cluster outbound\\|443\\|\\|my-nginx`), JSON.stringify(warnings));
    assert.match(at('outbound|443|other|my-nginx')!, new RegExp(`^${dir}/rule\\.yaml:24:\\d+: DestinationRule istio-system/originate-mtls-for-nginx: spec\\.subsets\\[0\\]\\.trafficPolicy\\.tls\\.credentialName: `), JSON.stringify(warnings));
    assert.equal(at('outbound|80||my-nginx'), undefined, 'port 80 has no tls');
  });
});
