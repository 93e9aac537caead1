// The composition root: builds the store, registry, telemetry, listeners and admin servers, and runs
// the reload cycle (load -> validate -> compile -> prepare -> swap -> reconcile listeners).

import type { Server } from 'node:http';
import os from 'node:os';
import pino, { type Logger } from 'pino';
import { ConfigStore } from './config/store';
import { DEFAULT_PROTOCOL_DETECTION_MS, type GatewayIdentity } from './config/compile';
import type { Snapshot } from './config/snapshot';
import type { Dict } from './config/types';
import { formatIssue, formatNote } from './config/format';
import { skippedKinds, type SkippedObject } from './config/load';
import { Registry } from './registry/registry';
import { DnsResolver, type DnsFamily } from './serviceentry/dns';
import { AccessLog } from './telemetry/access-log';
import { Metrics, type ProcessMetricOptions } from './telemetry/metrics';
import { Telemetry } from './telemetry/telemetry';
import { ownPeerHeaders } from './telemetry/peer-metadata';
import { WORKLOAD_NAME_LABEL } from './serviceentry/services';
import { HttpProxy } from './gateway/http/proxy';
import { UpgradeProxy } from './gateway/http/upgrade';
import { directReadsWork, directTlsReads } from './gateway/direct-reads';
import { DEFAULT_TCP_IDLE_TIMEOUT_MS, TcpProxy } from './gateway/tcp/proxy';
import { TlsListener } from './gateway/tls-listener';
import { DEFAULT_HELLO_TIMEOUT_MS } from './tls/client-hello';
import { ServerContexts } from './tls/server-context';
import type { MeshCertFiles } from './tls/secrets';
import type { FallbackPort } from './sidecar/fallback';
import { DEFAULT_HTTP_LIMITS, ListenerManager, type HttpLimits } from './gateway/listener-manager';
import { adminHandler, envoyLevel, listenHttp, metricsHandler, pinoLevel, statusHandler, type AdminState, type MetricsSource } from './admin/servers';
import { agentHandler, mergedApplication } from './admin/agent';
import { FileSource, type ConfigSource } from './sources/source';
import { KubeSource, type KubeSourceOptions } from './sources/kubernetes';
import { compileChecked, type RejectedObject } from './config/pipeline';
import { asError } from './errors';

export interface AppOptions {
  /** The file source's paths (unused with `kubernetes`). */
  readonly configPaths: readonly string[];
  /** Read the config from the Kubernetes API instead of files. */
  readonly kubernetes?: Omit<KubeSourceOptions, 'log' | 'namespace'>;
  readonly labels: Dict<string>;
  readonly namespace: string;
  readonly portMap: ReadonlyMap<number, number>;
  readonly bind: string;
  readonly adminPort: number;
  readonly statusPort: number;
  readonly metricsPort: number;
  /** The agent port (Istio's 15020: merged metrics, /quitquitquit); none when undefined. */
  readonly agentPort?: number;
  /** ISTIO_PROMETHEUS_ANNOTATIONS: where the application's own metrics are, for the agent port to merge. */
  readonly prometheusAnnotations?: string;
  /** Drain and exit (admin and agent /quitquitquit); the CLI sends itself SIGTERM. */
  readonly onQuit?: () => void;
  /** ready() changed: --workers tells the primary, whose agent port answers /healthz/ready for every worker. */
  readonly onReadyChange?: (ready: boolean) => void;
  /** The log level was changed (admin /logging): --workers passes it to every worker. */
  readonly onLogLevel?: (pinoLevel: string) => void;
  readonly logLevel: string;
  readonly serverName: string;
  readonly dnsServers?: readonly string[];
  /** Address families ServiceEntry DNS asks for (`--dns-family`): v4 (A only, the default, as Istio's V4_ONLY), v6, or both (dual stack). */
  readonly dnsFamily?: DnsFamily;
  readonly drainMs: number;
  readonly watch: boolean;
  readonly limits?: Partial<HttpLimits>;
  /**
   * Read client connections (plain, and TLS ones terminated here) without node's stream machinery
   * (gateway/direct-reads.ts), once proven on this node at start; default true. False: every client
   * socket reads through its stream.
   */
  readonly directReads?: boolean;
  /** The process metrics that cost while nobody scrapes (`--gc-metrics`, `--loop-delay-metrics`: off by default, see telemetry/metrics.ts processMetrics). */
  readonly processMetrics?: ProcessMetricOptions;
  /** Sidecar mode: the capture listener's port (istio-proxy's 15001); gateway mode when absent. */
  readonly capturePort?: number;
  /** Sidecar mode: the inbound capture port (15006), when inbound traffic is captured. */
  readonly inboundPort?: number;
  /** TCP proxy idle timeout (Envoy's default: 1 h); a DestinationRule connectionPool.tcp.idleTimeout overrides it. */
  readonly tcpIdleTimeoutMs?: number;
  /** Time a TLS client has to send its ClientHello (Envoy's listener filter timeout, 15 s). */
  readonly tlsHelloTimeoutMs?: number;
  /** Which of the admin, status and metrics servers this process runs (all by default; workers share them). */
  readonly serve?: { readonly admin: boolean; readonly status: boolean; readonly metrics: boolean; readonly agent?: boolean };
  /** Sidecar mode, per-port capture (no SO_ORIGINAL_DST addon): application port -> listener. */
  readonly fallback?: readonly FallbackPort[];
  /** The mesh identity for ISTIO_MUTUAL (`--mesh-certs`): cert-chain.pem, key.pem, root-cert.pem. */
  readonly meshCerts?: MeshCertFiles;
  /** Override the process logger (tests). */
  readonly logger?: Logger;
}

export type ReloadResult = 'applied' | 'rejected' | 'unchanged';

export interface ReloadOutcome {
  readonly result: ReloadResult;
  readonly version: number;
  readonly errors: readonly string[];
  readonly warnings: readonly string[];
  /** Kubernetes objects left out because of their errors (`Kind namespace/name`). */
  readonly rejectedObjects?: readonly string[];
}

/** At most this many rejected objects get their own metric series. */
const MAX_REJECTED_SERIES = 200;

function emptySnapshot(): Snapshot {
  return {
    version: 0,
    createdAt: new Date(0).toISOString(),
    mesh: {
      accessLogFile: '', accessLogEncoding: 'TEXT', accessLogFormat: '', connectTimeoutMs: 10_000,
      outboundPolicy: 'ALLOW_ANY', dnsRefreshRateMs: 60_000, protocolDetectionMs: DEFAULT_PROTOCOL_DETECTION_MS, disableShadowHostSuffix: false,
      defaultRetry: { attempts: 2, perTryTimeoutMs: 0, retryOn: [], retriableStatusCodes: [] },
    },
    listeners: new Map(),
    clusters: new Map(),
    services: new Map(),
    fingerprint: '',
    resourceCount: 0,
  };
}

export class App {
  readonly log: Logger;
  readonly store = new ConfigStore(emptySnapshot());
  readonly registry: Registry;
  readonly metrics: Metrics;
  readonly accessLog = new AccessLog();
  readonly telemetry: Telemetry;
  readonly listeners: ListenerManager;
  readonly dns: DnsResolver;
  readonly tlsContexts: ServerContexts;
  private readonly identity: GatewayIdentity;
  private readonly servers: Server[] = [];
  readonly source: ConfigSource;
  /** The rejection messages logged last time, so an object's errors are logged once, not per reload. */
  private loggedRejections = new Set<string>();
  /** The skipped-objects lines logged last time: a file's line is logged once, and again when it changes. */
  private loggedSkips = new Set<string>();
  private isReady = false;
  /** Envoy's /healthcheck/fail: readiness fails while traffic is still served (taken out of a load balancer). */
  private healthFailed = false;
  private stopping = false;
  private reloading: Promise<ReloadOutcome> | undefined;
  private reloadAgain = false;
  private lastOutcome: ReloadOutcome | undefined;
  private readonly counters = { applied: 0, rejected: 0, unchanged: 0 };
  ports = { admin: 0, status: 0, metrics: 0, agent: 0 };

  constructor(readonly opts: AppOptions) {
    this.log = opts.logger ?? pino({ level: opts.logLevel, base: { component: 'meshgate' } }, pino.destination(2));
    this.identity = {
      labels: opts.labels, namespace: opts.namespace, portMap: opts.portMap, bind: opts.bind,
      ...(opts.capturePort !== undefined ? { capturePort: opts.capturePort } : {}),
      ...(opts.inboundPort !== undefined ? { inboundPort: opts.inboundPort } : {}),
      ...(opts.meshCerts ? { meshCerts: opts.meshCerts } : {}),
      ...(opts.fallback ? { fallback: opts.fallback } : {}),
    };
    this.source = opts.kubernetes
      ? new KubeSource({ ...opts.kubernetes, namespace: opts.namespace, log: this.log })
      : new FileSource(opts.configPaths, opts.watch, this.log);
    this.tlsContexts = new ServerContexts(this.log);
    this.dns = new DnsResolver({
      servers: opts.dnsServers ? [...opts.dnsServers] : undefined,
      family: opts.dnsFamily ?? 'v4',
      onListenerError: (name, err) => this.log.error({ name, err: asError(err).message }, 'DNS: applying a new answer failed; the name keeps being refreshed'),
    });
    this.registry = new Registry({
      watch: (name, onChange) => this.dns.watch(name, (addrs) => onChange(addrs)),
      current: (name) => this.dns.current(name),
      lookup: (name) => this.dns.lookup(name),
    }, Math.random, {
      onEndpointsChanged: (c) => this.metrics.endpoints.set({ cluster: c.name }, c.endpoints.length),
      onEjection: (c, e, reason) => {
        this.metrics.outlierEjections.inc({ cluster: c.name, reason });
        this.log.warn({ cluster: c.name, endpoint: e.hostPort, reason, until: new Date(e.ejectedUntil).toISOString() }, 'outlier detection ejected an endpoint');
      },
    });
    // Istio's workload name: the injector's (service.istio.io/workload-name, the pod's Deployment or
    // other controller), else the app label, else the gateway's own name.
    const workload = opts.labels[WORKLOAD_NAME_LABEL] || (opts.labels['app'] ?? (opts.labels['istio'] ? `istio-${opts.labels['istio']}` : 'meshgate'));
    // Our identity in metrics and toward mesh peers: a gateway without an `app` label (ours default
    // to istio=ingressgateway) is its workload, as Istio's gateway pods (app: istio-ingressgateway).
    const identityLabels = opts.labels['app'] === undefined ? { ...opts.labels, app: workload } : opts.labels;
    // The reporter follows each request: "destination" for a sidecar's inbound, else "source".
    this.metrics = new Metrics({ workload, namespace: opts.namespace, labels: identityLabels }, opts.processMetrics ?? {});
    this.metrics.accessLogLosses = () => this.accessLog.losses;
    this.metrics.serverState = () => ({
      state: this.stopping || this.healthFailed ? 'DRAINING' : this.isReady ? 'LIVE' : 'PRE_INITIALIZING',
      clusters: this.registry.all().length,
      listeners: this.listeners.ports().length,
    });
    this.telemetry = new Telemetry(this.accessLog, this.metrics);
    // Istio's metadata exchange toward mesh services: who we are, as an Istio proxy says it (the pod's
    // name is its hostname in Kubernetes).
    const peerHeaders = ownPeerHeaders({
      sidecar: opts.capturePort !== undefined, ip: ownAddress(), name: os.hostname(), namespace: opts.namespace, workload, labels: identityLabels,
    });
    const deps = { store: this.store, registry: this.registry, telemetry: this.telemetry, serverName: opts.serverName, random: Math.random, peerHeaders, log: this.log };
    const tcp = new TcpProxy({
      registry: this.registry, telemetry: this.telemetry, log: this.log, random: Math.random,
      idleTimeoutMs: opts.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS,
      directReads: opts.directReads !== false,
    });
    this.listeners = new ListenerManager({
      proxy: new HttpProxy(deps),
      upgrade: new UpgradeProxy(deps),
      tcp,
      tls: new TlsListener({
        tcp, contexts: this.tlsContexts, log: this.log,
        helloTimeoutMs: opts.tlsHelloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS, handshakeTimeoutMs: 10_000,
      }),
      telemetry: this.telemetry,
      log: this.log,
      limits: { ...DEFAULT_HTTP_LIMITS, ...opts.limits, directReads: opts.directReads !== false },
      serverName: opts.serverName,
    });
  }

  /** The outcome of the last reload attempt. */
  get lastReload(): ReloadOutcome | undefined {
    return this.lastOutcome;
  }

  /** Ready to be sent traffic: the first config applied and bound, and the health checks not failed by hand. */
  ready(): boolean {
    return this.isReady && !this.healthFailed;
  }

  private reportedReady = false;

  /** Tell opts.onReadyChange when ready() has changed (--workers: the primary's agent port answers for all). */
  private readinessMayHaveChanged(): void {
    const now = this.ready();
    if (now === this.reportedReady) return;
    this.reportedReady = now;
    this.opts.onReadyChange?.(now);
  }

  /** Start admin servers, apply the first config, bind listeners, start watching. */
  async start(): Promise<ReloadOutcome> {
    // Proven once per process, before the first listener takes a connection.
    if (this.opts.directReads !== false) {
      if (!(await directReadsWork())) {
        this.log.warn(`direct client reads did not pass their start-up check on node ${process.version}; client connections read through node's streams`);
      } else if (!directTlsReads()) {
        this.log.info(`direct reads of TLS connections did not pass their start-up check on node ${process.version}; TLS connections read through node's streams`);
      }
    }
    const state: AdminState = {
      store: this.store,
      registry: this.registry,
      metrics: this.metrics,
      listeners: this.listeners,
      ready: () => this.ready(),
      serverStats: () => ({
        'meshgate.config.reloads_applied': this.counters.applied,
        'meshgate.config.reloads_rejected': this.counters.rejected,
        'meshgate.config.reloads_unchanged': this.counters.unchanged,
        'meshgate.config.version': this.store.current.version,
      }),
      dumpExtras: () => ({ lastReload: this.lastOutcome, ...this.source.describe() }),
      logging: {
        levels: () => ({ meshgate: envoyLevel(this.log.level) }),
        set: (_name, level) => {
          this.log.level = pinoLevel(level);
          this.opts.onLogLevel?.(this.log.level);
        },
      },
      failHealthChecks: (fail) => {
        if (fail !== this.healthFailed) this.log.warn(fail ? 'admin /healthcheck/fail: readiness now fails (traffic is still served)' : 'admin /healthcheck/ok: readiness restored');
        this.healthFailed = fail;
        this.readinessMayHaveChanged();
      },
      quit: this.opts.onQuit,
    };
    const serve = this.opts.serve ?? { admin: true, status: true, metrics: true, agent: this.opts.agentPort !== undefined };
    const none = { server: undefined, port: 0 };
    const admin = serve.admin ? await listenHttp(adminHandler(state), this.opts.adminPort, '127.0.0.1') : none;
    const status = serve.status ? await listenHttp(statusHandler(state), this.opts.statusPort, '0.0.0.0') : none;
    const own: MetricsSource = async () => ({ text: await this.metrics.render(), contentType: this.metrics.contentType });
    const metrics = serve.metrics ? await listenHttp(metricsHandler(own), this.opts.metricsPort, '0.0.0.0') : none;
    const agentPort = this.opts.agentPort;
    const agent = serve.agent && agentPort !== undefined ? await listenHttp(agentHandler({
      render: own,
      ready: () => this.ready(),
      quit: this.opts.onQuit,
      app: mergedApplication(this.opts.prometheusAnnotations, agentPort, this.log),
      log: this.log,
    }), agentPort, '0.0.0.0') : none;
    for (const x of [admin, status, metrics, agent]) if (x.server) this.servers.push(x.server);
    this.ports = { admin: admin.port, status: status.port, metrics: metrics.port, agent: agent.port };
    const served = [admin.server && `admin on 127.0.0.1:${admin.port}`, status.server && `status on :${status.port}`,
      metrics.server && `metrics on :${metrics.port}`, agent.server && `agent (merged metrics) on :${agent.port}`].filter(Boolean);
    if (served.length > 0) this.log.info(this.ports, served.join(', '));
    // Kubernetes: readiness stays false until every watched kind has been listed once.
    this.source.start((reason) => void this.reload(reason));
    await this.source.whenSynced();
    return this.reload('start');
  }

  /** Reload from the source. Concurrent calls coalesce: one more run after the current one. */
  reload(reason: string): Promise<ReloadOutcome> {
    if (this.stopping) return Promise.resolve(this.lastOutcome ?? { result: 'unchanged', version: this.store.current.version, errors: [], warnings: [] });
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = this.doReload(reason).finally(() => {
      this.reloading = undefined;
      if (this.reloadAgain) {
        this.reloadAgain = false;
        void this.reload('coalesced change');
      }
    });
    return this.reloading;
  }

  private async doReload(reason: string): Promise<ReloadOutcome> {
    const loaded = await this.source.load();
    for (const info of loaded.infos) this.log.debug(info);
    this.reportSkipped(loaded.skipped);
    const rejectedObjects = this.reportRejected(loaded.rejected ?? []);
    const errors = loaded.issues.filter((i) => i.severity === 'error').map(formatIssue);
    const warnings = loaded.issues.filter((i) => i.severity === 'warning').map(formatIssue);
    const current = this.store.current;
    // A config that cannot be compiled (a bug, or input validation let through) is rejected like an invalid one.
    const compiled = errors.length > 0 || !loaded.set ? undefined : compileChecked(loaded.set, this.identity, current.version + 1);
    if (compiled && !compiled.result) errors.push(...compiled.issues.map(formatIssue));
    if (!compiled?.result) {
      for (const e of errors) this.log.error(e);
      this.log.error({ reason, errors: errors.length }, `config rejected: ${errors.length} error(s); still serving version ${current.version}`);
      return this.finish({ result: 'rejected', version: current.version, errors, warnings, rejectedObjects });
    }
    const { snapshot, notes } = compiled.result;
    if (snapshot.fingerprint === current.fingerprint) {
      this.log.debug({ reason, version: current.version }, `config unchanged: still version ${current.version}`);
      return this.finish({ result: 'unchanged', version: current.version, errors, warnings, rejectedObjects });
    }
    for (const w of warnings) this.log.warn(w);
    for (const n of notes) this.log[n.severity === 'warning' ? 'warn' : 'info'](formatNote(n));
    // Prepare dependencies first, then publish with one assignment, then bind.
    this.registry.reconcile(snapshot);
    this.accessLog.configure({ file: snapshot.mesh.accessLogFile, encoding: snapshot.mesh.accessLogEncoding, format: snapshot.mesh.accessLogFormat });
    this.store.swap(snapshot);
    const { failed } = await this.listeners.reconcile(snapshot);
    this.metrics.listeners.set(this.listeners.ports().length);
    this.metrics.configVersion.set(snapshot.version);
    this.metrics.certificateExpiry.reset();
    for (const c of loaded.certificates) {
      this.metrics.certificateExpiry.set({ gateway: c.gateway, server: c.server, source: c.source, subject: c.facts.subject }, Math.floor(c.facts.notAfter.getTime() / 1000));
    }
    for (const f of failed) errors.push(`listener port ${f.port}: ${f.error}`);
    this.isReady = failed.length === 0 || this.isReady;
    this.readinessMayHaveChanged();
    this.log.info({ reason, version: snapshot.version, resources: snapshot.resourceCount, listeners: this.listeners.ports(), clusters: snapshot.clusters.size },
      `config version ${snapshot.version} applied`);
    return this.finish({ result: 'applied', version: snapshot.version, errors, warnings, rejectedObjects });
  }

  /**
   * Objects of kinds meshgate does not read (Deployment, ServiceAccount, ...): one info line per file
   * that has any, with the kinds and counts (each object has its own debug line above). A file's line
   * is logged when the file is first loaded and again when what it skips changes, not on every reload.
   */
  private reportSkipped(skipped: readonly SkippedObject[]): void {
    const byFile = new Map<string, SkippedObject[]>();
    for (const s of skipped) {
      const list = byFile.get(s.file);
      if (list) list.push(s);
      else byFile.set(s.file, [s]);
    }
    const logged = new Set<string>();
    for (const [file, list] of byFile) {
      const line = `${file}: skipped ${list.length} object${list.length === 1 ? ' of a kind' : 's of kinds'} meshgate does not read: ${skippedKinds(list)}`;
      logged.add(line);
      if (!this.loggedSkips.has(line)) this.log.info({ file, skipped: list.length }, line);
    }
    this.loggedSkips = logged;
  }

  /**
   * Objects the Kubernetes source left out: one gauge series each, and each problem logged once
   * (while it lasts), naming the object; the rest of the config applies without them.
   */
  private reportRejected(rejected: readonly RejectedObject[]): string[] {
    this.metrics.rejectedObjects.reset();
    const logged = new Set<string>();
    for (const [i, r] of rejected.entries()) {
      if (i < MAX_REJECTED_SERIES) this.metrics.rejectedObjects.set({ kind: r.kind, namespace: r.namespace, name: r.name }, 1);
      for (const issue of r.issues) {
        const line = formatIssue(issue);
        logged.add(line);
        if (this.loggedRejections.has(line)) continue;
        if (issue.severity === 'error') this.log.error({ kind: r.kind, namespace: r.namespace, name: r.name }, line);
        else this.log.warn(line);
      }
      if (!r.issues.some((x) => this.loggedRejections.has(formatIssue(x)))) {
        this.log.error({ kind: r.kind, namespace: r.namespace, name: r.name }, r.keptLastGood
          ? `${r.kind} ${r.namespace}/${r.name}: this version is rejected (its errors are above); its last good version keeps serving`
          : `${r.kind} ${r.namespace}/${r.name} left out of the config (its errors are above); the rest applies`);
      }
    }
    this.loggedRejections = logged;
    return rejected.map((r) => `${r.kind} ${r.namespace}/${r.name}`);
  }

  private finish(o: ReloadOutcome): ReloadOutcome {
    this.counters[o.result] += 1;
    this.metrics.reloads.inc({ result: o.result });
    this.lastOutcome = o;
    return o;
  }

  /** SIGTERM: stop accepting, finish in-flight work up to the drain deadline, close everything. */
  async stop(): Promise<void> {
    this.isReady = false;
    this.stopping = true; // no reload (a watch event, a coalesced one) binds anything from now on
    this.readinessMayHaveChanged();
    await this.source.stop();
    await this.reloading?.catch(() => undefined);
    const deadline = Date.now() + this.opts.drainMs;
    await this.listeners.shutdown(this.opts.drainMs);
    // Pools finish what they still carry, within what is left of the deadline; then they are cut.
    const left = Math.max(100, deadline - Date.now());
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      this.registry.close().then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), left); }),
    ]);
    if (timer) clearTimeout(timer);
    if (!closed) await this.registry.destroy();
    this.dns.close();
    this.tlsContexts.close();
    for (const s of this.servers) {
      s.closeAllConnections();
      s.close();
    }
    if (!(await this.accessLog.close())) this.log.warn('access log: its last lines were not written within 5 s (is anything reading the file or pipe?); exiting without them');
  }
}

/** This host's first non-loopback IPv4 address (the pod IP in Kubernetes), for the peer metadata's node id. */
function ownAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
