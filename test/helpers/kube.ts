// Kubernetes objects for tests (as `kubectl apply` would store them) and a meshgate App started on
// the Kubernetes source against the fake API server. Everything it starts is stopped by `stop()`.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { App, type AppOptions } from '../../src/app';
import type { FakeKubeApi, KubeObj } from './fake-kube-api';
import { freePort } from './upstream';
import { capturedLogger } from './log';

export function meshConfigMap(accessLogFile: string): KubeObj {
  return { kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh: `accessLogFile: ${accessLogFile}\n` } };
}

export function gatewayObj(name: string, hosts: string[], ns = 'istio-system'): KubeObj {
  return {
    kind: 'Gateway', apiVersion: 'networking.istio.io/v1', metadata: { name, namespace: ns },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts }] },
  };
}

export function virtualServiceObj(name: string, hosts: string[], gateway: string, http: unknown[], ns = 'default'): KubeObj {
  return { kind: 'VirtualService', apiVersion: 'networking.istio.io/v1', metadata: { name, namespace: ns }, spec: { hosts, gateways: [gateway], http } };
}

export function serviceObj(name: string, ports: { name: string; port: number; targetPort?: number | string }[], ns = 'default'): KubeObj {
  return { kind: 'Service', apiVersion: 'v1', metadata: { name, namespace: ns }, spec: { selector: { app: name }, type: 'ClusterIP', clusterIP: '10.96.0.20', ports } };
}

/** An EndpointSlice for a Service: each endpoint a pod on 127.0.0.1 with its own port. */
export function endpointSliceObj(name: string, service: string, portName: string, endpoints: { pod: string; port: number; ready?: boolean }[], ns = 'default'): KubeObj[] {
  // One slice per distinct port (a slice has one port list for all its endpoints), as for pods
  // whose named targetPort resolves to different numbers.
  return endpoints.map((e, i) => ({
    kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1',
    metadata: { name: `${name}-${i}`, namespace: ns, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: portName, port: e.port, protocol: 'TCP' }],
    endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: e.ready ?? true }, targetRef: { kind: 'Pod', name: e.pod, namespace: ns } }],
  }));
}

export function podObj(name: string, labels: Record<string, string>, ns = 'default'): KubeObj {
  return { kind: 'Pod', apiVersion: 'v1', metadata: { name, namespace: ns, labels }, spec: { containers: [{ name: 'app', image: 'x' }] }, status: { podIP: '127.0.0.1', podIPs: [{ ip: '127.0.0.1' }] } };
}

export function kubeconfigFor(server: string, token?: string): string {
  return `apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster:
    server: ${server}
contexts:
- name: fake
  context: {cluster: fake, user: tester}
users:
- name: tester
  user: ${token ? `{token: ${token}}` : '{}'}
`;
}

export interface KubeGateway {
  readonly app: App;
  /** The listen port of Gateway server port 80. */
  readonly port: number;
  readonly dir: string;
  readonly accessLogPath: string;
  /** The App's log lines (JSON, one per entry). */
  readonly logs: string[];
  /** Resolves when the App's start() does (the first sync and the first config). */
  readonly started: Promise<unknown>;
  stop(): Promise<void>;
}

/** Start meshgate on the Kubernetes source; the mesh ConfigMap is put into the fake first. */
export async function startKubeGateway(fake: FakeKubeApi, opts: Partial<AppOptions> = {}): Promise<KubeGateway> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-kube-'));
  const accessLogPath = path.join(dir, 'access.log');
  fake.upsert(meshConfigMap(accessLogPath));
  const port = await freePort();
  const { logger, lines: logs } = capturedLogger('info');
  const app = new App({
    configPaths: [],
    kubernetes: {
      connection: { server: fake.url, insecureSkipTlsVerify: false, describe: 'the fake API server' },
      watchNamespaces: [],
      tuning: { backoffInitialMs: 20, backoffMaxMs: 200, rediscoverMs: 200, watchTimeoutSeconds: 30 },
      debounceMs: 20,
    },
    labels: { istio: 'ingressgateway' },
    namespace: 'istio-system',
    portMap: new Map([[80, port]]),
    bind: '127.0.0.1',
    adminPort: 0, statusPort: 0, metricsPort: 0,
    logLevel: 'info',
    serverName: 'istio-envoy',
    drainMs: 1000,
    watch: true,
    logger,
    ...opts,
  });
  const started = app.start();
  started.catch(() => undefined);
  return {
    app, port, dir, accessLogPath, logs, started,
    async stop() {
      await app.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
