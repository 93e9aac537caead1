// DestinationRule load balancing through the real gateway: consistent hash by header (sticky, and
// spread over keys) and by cookie (the gateway sets the cookie when the client has none).

import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { curl, withHttpbin } from '../helpers/upstream';
import { workloadEntry } from '../helpers/yaml';
import { httpGatewayYaml } from '../../src/sample/configs';
import type { HttpbinServer } from '../../src/sample/httpbin';

describe('load balancing: consistent hash', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  const pods: HttpbinServer[] = [];

  before(async () => {
    for (const name of ['pod-a', 'pod-b', 'pod-c']) pods.push(await withHttpbin(name));
    const rule = (name: string, hash: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: default}
spec:
  host: ${name}
  trafficPolicy: {loadBalancer: {consistentHash: ${hash}}}
---
`;
    const service = (name: string) => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
`;
    gw = await startGateway({
      'pods.yaml': pods.map((p) => workloadEntry(p.name, { http: p.port }, { app: 'web' })).join(''),
      'services.yaml': service('by-header') + service('by-cookie')
        + rule('by-header', '{httpHeaderName: x-user}') + rule('by-cookie', '{httpCookie: {name: session, path: /, ttl: 3600s}}'),
      'routes.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [header.example.com, cookie.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {exact: header.example.com}}]
    route: [{destination: {host: by-header, port: {number: 8000}}}]
  - route: [{destination: {host: by-cookie, port: {number: 8000}}}]
`,
    });
  });
  after(async () => {
    await gw?.stop();
    for (const p of pods) await p.close();
  });

  const servedBy = async (host: string, extra: string[]) => {
    const r = await curl(['-s', '-i', '-H', `Host: ${host}`, ...extra, `http://127.0.0.1:${gw.port(80)}/get`]);
    return { pod: /\r\nx-served-by: (\S+)\r\n/.exec(r.stdout)?.[1], head: r.stdout.split('\r\n\r\n')[0]! };
  };

  it('by header: one user always reaches the same pod; many users reach every pod', async () => {
    for (const user of ['jason', 'mary', 'ravi']) {
      const pods = new Set<string | undefined>();
      for (let i = 0; i < 10; i++) pods.add((await servedBy('header.example.com', ['-H', `x-user: ${user}`])).pod);
      assert.equal(pods.size, 1, `${user} went to ${[...pods].join(', ')}`);
    }
    const seen = new Set<string | undefined>();
    for (let i = 0; i < 60; i++) seen.add((await servedBy('header.example.com', ['-H', `x-user: user-${i}`])).pod);
    assert.equal(seen.size, 3, `60 users reached ${[...seen].join(', ')}`);
  });

  it('by cookie: the gateway sets the session cookie, and requests carrying it stick to one pod', async () => {
    const first = await servedBy('cookie.example.com', []);
    const m = /\r\nset-cookie: session="([0-9a-f]+)"; Max-Age=3600; Path=\/; HttpOnly/i.exec(first.head);
    assert.ok(m, first.head);
    const pods = new Set<string | undefined>([first.pod]);
    for (let i = 0; i < 10; i++) {
      const r = await servedBy('cookie.example.com', ['-H', `Cookie: session="${m![1]}"`]);
      assert.doesNotMatch(r.head, /set-cookie/i, 'no new cookie once the client has one');
      pods.add(r.pod);
    }
    assert.equal(pods.size, 1, [...pods].join(', '));
  });
});

describe('load balancing: endpoint weights', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  const pods: HttpbinServer[] = [];

  before(async () => {
    for (const name of ['heavy', 'light']) pods.push(await withHttpbin(name));
    const entry = (host: string) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${host.split('.')[0]}, namespace: default}
spec:
  hosts: [${host}]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${pods[0]!.port}}, weight: 9}
  - {address: 127.0.0.1, ports: {http: ${pods[1]!.port}}, weight: 1}
---
`;
    gw = await startGateway({
      'entries.yaml': entry('rr.example.com') + entry('lr.example.com') + `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: rr, namespace: default}
spec:
  host: rr.example.com
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
`,
      'routes.yaml': `${httpGatewayYaml()}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weighted, namespace: default}
spec:
  hosts: [rr.example.com, lr.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {exact: rr.example.com}}]
    route: [{destination: {host: rr.example.com, port: {number: 8000}}}]
  - route: [{destination: {host: lr.example.com, port: {number: 8000}}}]
`,
    });
  });
  after(async () => {
    await gw?.stop();
    for (const p of pods) await p.close();
  });

  // Requests one at a time, so no endpoint is busier than another: both policies follow the weights.
  for (const [policy, host] of [['ROUND_ROBIN', 'rr.example.com'], ['LEAST_REQUEST (the default)', 'lr.example.com']] as const) {
    it(`${policy}: endpoint weights 9:1 send 90 of 100 requests to the heavy one (+- 3)`, async () => {
      let heavy = 0;
      for (let i = 0; i < 100; i++) {
        const r = await curl(['-s', '-i', '-H', `Host: ${host}`, `http://127.0.0.1:${gw.port(80)}/get`]);
        const pod = /\r\nx-served-by: (\S+)\r\n/.exec(r.stdout)?.[1];
        assert.ok(pod === 'heavy' || pod === 'light', r.stdout.slice(0, 200));
        if (pod === 'heavy') heavy += 1;
      }
      assert.ok(heavy >= 87 && heavy <= 93, `heavy got ${heavy} of 100`);
    });
  }
});
