// The gateway run on a ConfigMap mounted as a directory, in kubelet's exact layout
// (`..<timestamp>/routes.yaml`, `..data -> ..<timestamp>`, `routes.yaml -> ..data/routes.yaml`):
// the first config applies (each key read once), and kubelet's atomic `..data` swap is picked up.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { httpGet, waitFor } from '../helpers/upstream';
import { startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { httpGatewayYaml, loopbackServiceEntryYaml } from '../../src/sample/configs';

function routes(port: number): string {
  return `${httpGatewayYaml()}${loopbackServiceEntryYaml('svc', 'svc.example.internal', 80, 'HTTP', port)}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{destination: {host: svc.example.internal}}]
`;
}

function writeVersion(dir: string, stamp: string, text: string): void {
  fs.mkdirSync(path.join(dir, stamp));
  fs.writeFileSync(path.join(dir, stamp, 'routes.yaml'), text);
}

describe('config from a mounted ConfigMap directory', function () {
  this.timeout(60_000);
  let a: HttpbinServer;
  let b: HttpbinServer;
  let gw: TestGateway | undefined;
  let cm: string;

  before(async () => {
    a = await startHttpbin({ name: 'a' });
    b = await startHttpbin({ name: 'b' });
    cm = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-configmap-'));
    writeVersion(cm, '..2024_01_01_00_00_00.123', routes(a.port));
    fs.symlinkSync('..2024_01_01_00_00_00.123', path.join(cm, '..data'));
    fs.symlinkSync(path.join('..data', 'routes.yaml'), path.join(cm, 'routes.yaml'));
    gw = await startGateway({}, { opts: { configPaths: [cm] } });
  });
  after(async () => {
    await gw?.stop();
    await a?.close();
    await b?.close();
    fs.rmSync(cm, { recursive: true, force: true });
  });

  const served = async () => String((await httpGet(gw!.port(80), '/get')).headers['x-served-by']);

  it('applies the first config: each key read once, no duplicate errors', async () => {
    assert.equal(gw!.app.lastReload?.result, 'applied', (gw!.app.lastReload?.errors ?? []).join('\n'));
    assert.deepEqual(gw!.app.lastReload?.errors, []);
    assert.equal(await served(), 'a');
  });

  it('follows kubelet\'s atomic swap of ..data', async () => {
    writeVersion(cm, '..2024_01_01_00_05_00.456', routes(b.port));
    fs.symlinkSync('..2024_01_01_00_05_00.456', path.join(cm, '..data_tmp'));
    fs.renameSync(path.join(cm, '..data_tmp'), path.join(cm, '..data'));
    fs.rmSync(path.join(cm, '..2024_01_01_00_00_00.123'), { recursive: true });
    await waitFor(async () => (await served()) === 'b', { timeoutMs: 3000, intervalMs: 25 });
    assert.equal(gw!.app.lastReload?.result, 'applied', (gw!.app.lastReload?.errors ?? []).join('\n'));
  });
});
