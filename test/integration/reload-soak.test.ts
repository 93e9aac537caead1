// Reload soak: ~20 hot reloads of every kind (route weights, a second VirtualService added and
// removed, DestinationRule edits and identical rewrites, invalid edits, a listener added and removed,
// SIGHUP-style reloads) while HTTP/1.1 keep-alive clients, slow requests, a throttled long download,
// h2c sessions, HTTPS clients, long-lived TCP connections and a WebSocket-style tunnel run through
// the unchanged ports. Nothing on those ports may fail, reset or be closed; every change applies
// atomically (a request started after a change was seen is routed by it); broken edits are rejected
// while the last good config keeps serving. Apply latency and event-loop delay are printed.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { makeCa, makeLeaf, tlsSecretYaml, type CaPem, type Pem } from '../helpers/certs';
import { httpGet } from '../helpers/upstream';
import { patternByte, startHttpbin, type HttpbinServer } from '../../src/sample/httpbin';
import { startTcpEcho, type TcpEchoServer } from '../../src/sample/tcp-echo';
import type { ReloadOutcome } from '../../src/app';
import { versionedServiceEntryYaml } from '../../src/sample/configs';

const RELOAD_GAP_MS = 200; // pause between one reload's effect being seen and the next write
const STEP_TIMEOUT_MS = 3000;
const DOWNLOAD_BYTES = 8 * 1024 * 1024;
const DOWNLOAD_RATE = 1024 * 1024; // bytes/s the client reads: the download spans the whole soak
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The Gateway; the extra HTTP server on 9090 is put first or last in the list. */
function gatewayYaml(extra: 'none' | 'first' | 'last'): string {
  const extraServer = `  - port: {number: 9090, name: http-extra, protocol: HTTP}
    hosts: ["*"]
`;
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
${extra === 'first' ? extraServer : ''}  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
${extra === 'last' ? extraServer : ''}`;
}

function servicesYaml(a: number, b: number, echo: number): string {
  return `${versionedServiceEntryYaml('httpbin', 'httpbin.internal', 8000, { a, b })}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.internal]
  ports: [{number: 9000, name: tcp, protocol: TCP, targetPort: ${echo}}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`;
}

/** The main VirtualService: HTTP split a/b by weight, the TCP route to tcp-echo. `broken` adds an unknown field. */
function vsYaml(weightA: number, broken = false): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: main, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - {destination: {host: httpbin.internal, subset: a}, weight: ${weightA}}
    - {destination: {host: httpbin.internal, subset: b}, weight: ${100 - weightA}}
${broken ? '    timeot: 1s\n' : ''}  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo.internal, port: {number: 9000}}}]
`;
}

/** A second VirtualService, for a host of its own, marking its answers. */
const VS2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second, namespace: default}
spec:
  hosts: [extra.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: httpbin.internal, subset: a}}]
    headers: {response: {set: {x-vs2: "yes"}}}
`;

function drYaml(variant: 0 | 1, broken = false): string {
  const policy = broken
    ? '{loadBalancer: {simple: NOT_A_POLICY}}'
    : variant === 0 ? '{loadBalancer: {simple: ROUND_ROBIN}}' : '{loadBalancer: {simple: LEAST_REQUEST}, connectionPool: {http: {idleTimeout: 30s}}}';
  return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin.internal
  trafficPolicy: ${policy}
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
`;
}

/** One traffic kind's tally. */
class Tally {
  ok = 0;
  readonly failures: string[] = [];
  fail(msg: string): void {
    if (this.failures.length < 50) this.failures.push(msg);
  }
}

/** Which subset the weighted route sends to since when (a change counts from when a probe saw it). */
interface Epoch {
  /** When the change was written: requests started before it must be routed by the old config. */
  readonly written: number;
  /** When a probe saw it: requests started after it must be routed by this one. */
  readonly since: number;
  readonly target: 'a' | 'b';
}

describe('reload soak: ~20 reloads of every kind under mixed traffic', function () {
  this.timeout(60_000);
  let dir: string;
  let gw: TestGateway;
  let a: HttpbinServer;
  let b: HttpbinServer;
  let echo: TcpEchoServer;
  let ca: CaPem;
  let leaves: Pem[];
  const agents: (http.Agent | https.Agent)[] = [];
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ClientHttp2Session>();
  let eld: IntervalHistogram | undefined;
  let eldStep: IntervalHistogram | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-soak-'));
    ca = await makeCa(dir, 'ca');
    leaves = [await makeLeaf(dir, ca, 'httpbin', ['httpbin.example.com']), await makeLeaf(dir, ca, 'httpbin2', ['httpbin.example.com'])];
    a = await startHttpbin({ name: 'a' });
    b = await startHttpbin({ name: 'b' });
    echo = await startTcpEcho({ prefix: 'one' });
    gw = await startGateway({
      'gateway.yaml': gatewayYaml('none'),
      'services.yaml': servicesYaml(a.port, b.port, echo.port),
      'secrets.yaml': tlsSecretYaml('httpbin-credential', 'istio-system', leaves[0]!),
      'dr.yaml': drYaml(0),
      'vs.yaml': vsYaml(100),
    }, { serverPorts: [80, 31400, 8443, 9090] });
  });

  after(async () => {
    eld?.disable();
    eldStep?.disable();
    for (const s of sessions) s.destroy();
    for (const s of sockets) s.destroy();
    for (const ag of agents) ag.destroy();
    await gw?.stop();
    await a?.close();
    await b?.close();
    await echo?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every request, stream and connection on unchanged ports through ~20 reloads', async () => {
    const P80 = gw.port(80);
    const PTCP = gw.port(31400);
    const PTLS = gw.port(8443);
    const PEXTRA = gw.port(9090);
    assert.deepEqual([...gw.app.listeners.ports()].sort(), [P80, PTCP, PTLS].sort());
    // The listening sockets of the unchanged ports: the very same objects must stay, listening.
    const liveServers = () => (gw.app.listeners as unknown as { live: Map<number, { server: net.Server }> }).live;
    const baseServers = new Map([P80, PTCP, PTLS].map((p) => [p, liveServers().get(p)?.server]));
    for (const [p, s] of baseServers) assert.ok(s?.listening, `listener ${p}`);

    let running = true;
    const deadline = Date.now() + 20_000; // a hard stop for every loop, whatever happens
    const go = () => running && Date.now() < deadline;
    const epochs: Epoch[] = [{ written: 0, since: 0, target: 'a' }];
    /** The subsets a request started at t may be routed to: both while a change was being applied. */
    const targetsAt = (t: number): string[] => {
      const i = epochs.findLastIndex((e) => e.since <= t);
      const next = epochs[i + 1];
      return next && next.written <= t ? [epochs[i]!.target, next.target] : [epochs[i]!.target];
    };
    // Every answer on the weighted route, checked against the epochs once the soak is over (a change's
    // epoch is known only when a probe sees it, after requests already routed by it have finished).
    const answers: { what: string; started: number; name: string }[] = [];
    /** Check a /get answer on the weighted route: 200, the JSON names the backend that sent it, the routing is current. */
    const checkGet = (tally: Tally, what: string, started: number, status: number, servedBy: unknown, body: string) => {
      if (status !== 200) return tally.fail(`${what}: status ${status} ${body.slice(0, 100)}`);
      let name: unknown;
      try {
        name = (JSON.parse(body) as { name?: unknown }).name;
      } catch {
        return tally.fail(`${what}: body not JSON (${body.length} bytes): ${body.slice(0, 80)}`);
      }
      if (name !== servedBy || (name !== 'a' && name !== 'b')) return tally.fail(`${what}: body names ${String(name)}, x-served-by ${String(servedBy)}`);
      if (answers.length < 200_000) answers.push({ what, started, name });
      tally.ok++;
    };

    /** One GET through `get` (http.get or https.get), judged by checkGet; `onSocket` sees the connection used. */
    const checkedGet = (get: typeof http.get, options: http.RequestOptions, tally: Tally, what: string, onSocket?: (s: net.Socket) => void) => {
      const started = Date.now();
      return new Promise<void>((done) => {
        const req = get(options, (res) => {
          onSocket?.(res.socket);
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => done(checkGet(tally, what, started, res.statusCode ?? 0, res.headers['x-served-by'], body)));
          res.on('error', (err) => done(tally.fail(`${what}: response ${err.message}`)));
        });
        req.setTimeout(5000, () => req.destroy(new Error('timeout')));
        req.on('error', (err) => done(tally.fail(`${what}: ${err.message}`)));
      });
    };

    eld = monitorEventLoopDelay({ resolution: 5 });
    eld.enable();
    eldStep = monitorEventLoopDelay({ resolution: 5 });
    eldStep.enable();

    // (a) 8 keep-alive HTTP/1.1 clients, one connection each, looping fast requests.
    const fast = new Tally();
    const fastSockets: Set<net.Socket>[] = [];
    const fastLoops = Array.from({ length: 8 }, async (_, k) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      agents.push(agent);
      const seen = new Set<net.Socket>();
      fastSockets.push(seen);
      for (let i = 0; i < 20_000 && go(); i++) {
        await checkedGet(http.get, { host: '127.0.0.1', port: P80, path: '/get', agent }, fast, `fast#${k}`, (sock) => seen.add(sock));
      }
    });

    // (b) slow requests in flight across reloads, and a long download read slowly.
    const slow = new Tally();
    const slowAgent = new http.Agent({ keepAlive: true, maxSockets: 3 });
    agents.push(slowAgent);
    const slowLoops = Array.from({ length: 3 }, async (_, k) => {
      for (let i = 0; i < 30 && go(); i++) {
        await checkedGet(http.get, { host: '127.0.0.1', port: P80, path: '/delay/1', agent: slowAgent }, slow, `slow#${k}`);
      }
    });
    const download = new Promise<{ bytes: number; badAt: number; ms: number; error?: string }>((done) => {
      const t0 = Date.now();
      let bytes = 0;
      let badAt = -1;
      const req = http.get({ host: '127.0.0.1', port: P80, path: `/stream-bytes/${DOWNLOAD_BYTES}`, agent: false }, (res) => {
        if (res.statusCode !== 200) return done({ bytes, badAt, ms: 0, error: `status ${res.statusCode}` });
        res.on('data', (c: Buffer) => {
          if (badAt < 0) for (let i = 0; i < c.length; i++) if (c[i] !== patternByte(bytes + i)) { badAt = bytes + i; break; }
          bytes += c.length;
          const ahead = bytes / DOWNLOAD_RATE * 1000 - (Date.now() - t0);
          if (ahead > 20) {
            res.pause();
            setTimeout(() => res.resume(), ahead);
          }
        });
        res.on('end', () => done({ bytes, badAt, ms: Date.now() - t0 }));
        res.on('error', (err) => done({ bytes, badAt, ms: Date.now() - t0, error: err.message }));
      });
      req.setTimeout(20_000, () => req.destroy(new Error('timeout')));
      req.on('error', (err) => done({ bytes, badAt, ms: Date.now() - t0, error: err.message }));
    });

    // (c) 2 h2c sessions, 4 concurrent streams each, looping.
    const h2 = new Tally();
    const h2Loops = Array.from({ length: 2 }, async (_, k) => {
      const session = http2.connect(`http://127.0.0.1:${P80}`);
      sessions.add(session);
      let ended = false;
      session.on('error', (err) => h2.fail(`h2#${k}: session error ${err.message}`));
      session.on('goaway', (code) => h2.fail(`h2#${k}: GOAWAY ${code}`));
      session.on('close', () => { if (!ended) h2.fail(`h2#${k}: session closed during the soak`); });
      await Promise.all(Array.from({ length: 4 }, async (_, s) => {
        for (let i = 0; i < 20_000 && go() && !session.closed && !session.destroyed; i++) {
          const started = Date.now();
          await new Promise<void>((done) => {
            const stream = session.request({ ':path': '/get' });
            let status = 0;
            let servedBy: unknown;
            let body = '';
            const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 5000);
            stream.setEncoding('utf8');
            stream.on('response', (h) => { status = Number(h[':status']); servedBy = h['x-served-by']; });
            stream.on('data', (c: string) => (body += c));
            stream.on('end', () => { clearTimeout(timer); done(checkGet(h2, `h2#${k}.${s}`, started, status, servedBy, body)); });
            stream.on('error', (err) => { clearTimeout(timer); done(h2.fail(`h2#${k}.${s}: stream ${err.message}`)); });
            stream.on('close', () => { clearTimeout(timer); if (stream.rstCode) done(h2.fail(`h2#${k}.${s}: RST ${stream.rstCode}`)); else done(); });
            stream.end();
          });
        }
      }));
      ended = true;
      session.close();
    });

    // HTTPS (terminated on 8443): 2 keep-alive clients.
    const tlsT = new Tally();
    const tlsLoops = Array.from({ length: 2 }, async (_, k) => {
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca.cert, servername: 'httpbin.example.com' });
      agents.push(agent);
      for (let i = 0; i < 20_000 && go(); i++) {
        await checkedGet(https.get, { host: '127.0.0.1', port: PTLS, path: '/get', agent, servername: 'httpbin.example.com', headers: { host: 'httpbin.example.com' } } as https.RequestOptions, tlsT, `https#${k}`);
      }
    });

    /**
     * A long-lived line exchange: a line every 50 ms, each answered `expect(line)` in order. After the
     * soak it waits for the answers still due, then closes; anything else ending it is a failure.
     */
    const lineTalker = (tally: Tally, what: string, connect: () => net.Socket, handshake: string | undefined, expect: (line: string) => string) =>
      new Promise<void>((finish) => {
        const sock = connect();
        sockets.add(sock);
        let buf = '';
        let ready = handshake === undefined;
        let seq = 0;
        const due: string[] = [];
        let closing = false;
        let timer: NodeJS.Timeout | undefined;
        const end = () => {
          clearInterval(timer);
          closing = true;
          sock.destroy();
          finish();
        };
        sock.setEncoding('latin1');
        sock.on('error', (err) => { if (!closing) tally.fail(`${what}: ${err.message}`); });
        sock.on('close', () => {
          if (!closing) tally.fail(`${what}: closed by the other side after ${tally.ok} lines, ${due.length} unanswered`);
          end();
        });
        sock.on('connect', () => { if (handshake) sock.write(handshake); });
        sock.on('data', (c: string) => {
          buf += c;
          if (!ready) {
            const head = buf.indexOf('\r\n\r\n');
            if (head < 0) return;
            if (!buf.startsWith('HTTP/1.1 101 ')) { tally.fail(`${what}: no 101: ${buf.slice(0, 60)}`); return end(); }
            buf = buf.slice(head + 4);
            ready = true;
          }
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl + 1);
            buf = buf.slice(nl + 1);
            const want = due.shift();
            if (want === undefined || line !== want) tally.fail(`${what}: got ${JSON.stringify(line)}, expected ${JSON.stringify(want)}`);
            else tally.ok++;
          }
        });
        timer = setInterval(() => {
          if (!ready) return;
          if (go()) {
            const line = `${what}-${seq++}\n`;
            due.push(expect(line));
            sock.write(line);
            return;
          }
          clearInterval(timer);
          const stopBy = Date.now() + 3000;
          const wait = setInterval(() => {
            if (due.length > 0 && Date.now() < stopBy && !sock.destroyed) return;
            clearInterval(wait);
            if (due.length > 0) tally.fail(`${what}: ${due.length} lines never answered`);
            if (buf !== '') tally.fail(`${what}: trailing bytes ${JSON.stringify(buf)}`);
            end();
          }, 20);
        }, 50);
      });

    // (d) long-lived TCP connections through the TCP listener.
    const tcp = new Tally();
    const tcpLoops = Array.from({ length: 4 }, (_, k) =>
      lineTalker(tcp, `tcp${k}`, () => net.connect(PTCP, '127.0.0.1'), undefined, (l) => `one ${l}`));
    // (e) WebSocket-style upgrade tunnels to httpbin /ws (raw echo after the 101).
    const ws = new Tally();
    const wsHead = 'GET /ws HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    const wsLoops = Array.from({ length: 2 }, (_, k) =>
      lineTalker(ws, `ws${k}`, () => net.connect(P80, '127.0.0.1'), wsHead, (l) => l));

    // The reloads. Each step writes (or calls reload), then waits for its effect and the reload's outcome.
    const probeAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(probeAgent);
    const probe = (port: number, headers: http.OutgoingHttpHeaders = {}, agent: http.Agent | false = probeAgent) =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders } | { error: string }>((done) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/get', headers, agent }, (res) => {
          res.resume();
          res.on('end', () => done({ status: res.statusCode ?? 0, headers: res.headers }));
          res.on('error', (err) => done({ error: err.message }));
        });
        req.setTimeout(2000, () => req.destroy(new Error('timeout')));
        req.on('error', (err: NodeJS.ErrnoException) => done({ error: err.code ?? err.message }));
      });
    const servedBy = async () => { const r = await probe(P80); return 'status' in r ? r.headers['x-served-by'] : undefined; };

    // Reload runs timed from the App itself: reload() is looked up on the instance on every call (the
    // watcher's, the coalesced rerun's). A call made while one runs only joins it: not a run of its own.
    const reloadLog: { start: number; end: number; result: string; reason: string }[] = [];
    const app = gw.app as unknown as { reload: (reason: string) => Promise<ReloadOutcome>; reloading: Promise<ReloadOutcome> | undefined };
    const origReload = app.reload.bind(gw.app);
    app.reload = (reason: string) => {
      if (app.reloading) return origReload(reason);
      const rec = { start: Date.now(), end: 0, result: '', reason };
      reloadLog.push(rec);
      return origReload(reason).then((o) => { rec.end = Date.now(); rec.result = o.result; return o; });
    };

    interface StepResult { kind: string; applyMs: number; reloadMs: number; outcome: string; loopMaxMs: number; error?: string }
    const steps: StepResult[] = [];
    let weightA = 100;
    let drVariant: 0 | 1 = 0;
    let rejectedExpected = 0;
    const step = async (kind: string, act: () => void | Promise<unknown>, visible: (() => Promise<boolean>) | undefined, result: ReloadOutcome['result'] | ReloadOutcome['result'][]) => {
      const prev = gw.app.lastReload;
      const reloadsBefore = reloadLog.length;
      eldStep!.reset();
      const t0 = Date.now();
      let applyMs = -1;
      let error: string | undefined;
      try {
        const act$ = act();
        const end = t0 + STEP_TIMEOUT_MS;
        if (visible) {
          while (!(await visible())) {
            if (Date.now() > end) throw new Error('new behaviour never visible');
            await sleep(5);
          }
          applyMs = Date.now() - t0;
        }
        await act$;
        while (gw.app.lastReload === prev) {
          if (Date.now() > end) throw new Error('no reload outcome');
          await sleep(5);
        }
        if (applyMs < 0) applyMs = Date.now() - t0;
        if (![result].flat().includes(gw.app.lastReload!.result)) throw new Error(`outcome ${gw.app.lastReload!.result}, expected ${String(result)}: ${gw.app.lastReload!.errors.join('; ')}`);
      } catch (err) {
        error = (err as Error).message;
      }
      const r = reloadLog.slice(reloadsBefore).find((x) => x.end > 0);
      steps.push({ kind, applyMs, reloadMs: r ? r.end - r.start : -1, outcome: gw.app.lastReload?.result ?? '?', loopMaxMs: eldStep!.max / 1e6, ...(error ? { error } : {}) });
      // Listeners on the unchanged ports: the same server objects, still listening.
      for (const [p, s] of baseServers) {
        if (liveServers().get(p)?.server !== s || !s?.listening) steps.at(-1)!.error = `${steps.at(-1)!.error ?? ''} listener ${p} replaced or closed`;
      }
      await sleep(RELOAD_GAP_MS);
    };
    let writtenAt = 0;
    const writeWeight = (w: number) => {
      weightA = w;
      writtenAt = Date.now();
      gw.write('vs.yaml', vsYaml(w));
    };
    /** The weight's backend serves now (recording when the routing switched). */
    const weightSeen = (w: number) => async () => {
      const want = w === 100 ? 'a' : 'b';
      if ((await servedBy()) !== want) return false;
      if (epochs.at(-1)!.target !== want) epochs.push({ written: writtenAt, since: Date.now(), target: want });
      return true;
    };
    const weight = (w: number) => step(`weight ${w}/${100 - w}`, () => writeWeight(w), weightSeen(w), 'applied');
    const vs2 = (present: boolean) => step(present ? 'add VS' : 'remove VS', () => {
      if (present) gw.write('vs2.yaml', VS2);
      else fs.rmSync(path.join(gw.dir, 'vs2.yaml'));
    }, async () => {
      const r = await probe(P80, { host: 'extra.example.com' });
      return 'status' in r && r.status === 200 && (r.headers['x-vs2'] === 'yes') === present;
    }, 'applied');
    const drTouch = (changed: boolean) => step(changed ? 'DR change' : 'DR rewrite same', () => {
      if (changed) drVariant = drVariant === 0 ? 1 : 0;
      gw.write('dr.yaml', drYaml(drVariant));
    }, undefined, changed ? 'applied' : 'unchanged');
    const invalid = (file: 'vs' | 'dr') => step(`invalid ${file.toUpperCase()}`, () => {
      rejectedExpected++;
      gw.write(`${file}.yaml`, file === 'vs' ? vsYaml(weightA, true) : drYaml(drVariant, true));
    }, undefined, 'rejected');
    // The repaired file equals the last good config: nothing to apply.
    const fixDr = () => step('DR fixed', () => gw.write('dr.yaml', drYaml(drVariant)), undefined, 'unchanged');
    const extraInFlight: Promise<unknown>[] = [];
    const listener = (where: 'none' | 'first' | 'last') => step(where !== 'none' ? `add listener (${where})` : 'remove listener', async () => {
      if (where === 'none') {
        // A slow request in flight on the listener being removed: the drain lets it finish.
        const slowOnExtra = new Promise<void>((done) => {
          const started = Date.now();
          const req = http.get({ host: '127.0.0.1', port: PEXTRA, path: '/delay/1', agent: false }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () => done(checkGet(slow, 'slow on removed listener', started, res.statusCode ?? 0, res.headers['x-served-by'], body)));
            res.on('error', (err) => done(slow.fail(`slow on removed listener: response ${err.message}`)));
          });
          req.setTimeout(5000, () => req.destroy(new Error('timeout')));
          req.on('error', (err) => done(slow.fail(`slow on removed listener: ${err.message}`)));
        });
        extraInFlight.push(slowOnExtra);
        await sleep(100); // the request is at the backend
      }
      gw.write('gateway.yaml', gatewayYaml(where));
    }, async () => {
      const present = where !== 'none';
      const r = await probe(PEXTRA, {}, false);
      return present ? 'status' in r && r.status === 200 : 'error' in r && r.error === 'ECONNREFUSED';
    }, 'applied');
    const sighup = () => step('SIGHUP (no change)', () => gw.app.reload('SIGHUP'), undefined, 'unchanged');
    // A change written and SIGHUP at once: SIGHUP applies it before the watcher looks; the watcher's
    // own reload that follows finds nothing to do.
    const sighupChange = async (w: number) => {
      const n = reloadLog.length;
      await step(`SIGHUP + weight ${w}`, () => {
        writeWeight(w);
        return gw.app.reload('SIGHUP');
      }, weightSeen(w), 'applied');
      await sleep(700); // the watcher polls every 500 ms
      const trailing = reloadLog.slice(n + 1);
      if (reloadLog[n]?.reason !== 'SIGHUP' || trailing.some((r) => r.result !== 'unchanged')) {
        steps.at(-1)!.error = `reloads after SIGHUP: ${reloadLog.slice(n).map((r) => `${r.reason}=${r.result}`).join()}`;
      }
    };
    // Certificate rotation: a new TLS connection gets the new leaf; kept-alive HTTPS clients go on.
    const peerFingerprint = () => new Promise<string>((done) => {
      const s = tls.connect({ host: '127.0.0.1', port: PTLS, servername: 'httpbin.example.com', ca: ca.cert }, () => {
        done(s.getPeerX509Certificate()?.fingerprint256 ?? '');
        s.destroy();
      });
      s.setTimeout(2000, () => s.destroy());
      s.on('error', () => done(''));
    });
    let leafIndex = 0;
    const rotate = () => step('cert rotation', () => {
      leafIndex = 1 - leafIndex;
      gw.write('secrets.yaml', tlsSecretYaml('httpbin-credential', 'istio-system', leaves[leafIndex]!));
    }, async () => (await peerFingerprint()) === new X509Certificate(leaves[leafIndex]!.cert).fingerprint256, 'applied');
    // Five changes written 10 ms apart: they coalesce, the last one wins and stays.
    const burst = async () => {
      const t0 = Date.now();
      const n = reloadLog.length;
      eldStep!.reset();
      let error: string | undefined;
      for (const w of [0, 100, 0, 100, 0]) {
        gw.write('vs.yaml', vsYaml(w));
        await sleep(10);
      }
      weightA = 0;
      const settled = async () => (await servedBy()) === 'b' && reloadLog.every((r) => r.end > 0);
      while (!(await settled()) && Date.now() < t0 + STEP_TIMEOUT_MS) await sleep(5);
      const applyMs = Date.now() - t0;
      epochs.push({ written: t0, since: Date.now(), target: 'b' });
      await sleep(700);
      if (!(await settled())) error = 'the last write of the burst did not win';
      if (gw.app.lastReload?.result === 'rejected') error = 'rejected';
      const r = reloadLog.slice(n);
      steps.push({ kind: `burst x5 (${r.length} reloads)`, applyMs, reloadMs: Math.max(...r.map((x) => x.end - x.start)), outcome: r.map((x) => x.result).join('+'), loopMaxMs: eldStep!.max / 1e6, ...(error ? { error } : {}) });
    };

    const lastGood: string[] = [];
    const soakStart = Date.now();
    try {
      await sleep(300); // every client connected and busy
      await weight(0);
      await vs2(true);
      await drTouch(true);
      await invalid('vs');
      lastGood.push(String(await servedBy()));
      await weight(100); // also repairs vs.yaml
      await listener('last');
      await vs2(false);
      await listener('none');
      await sighup();
      await drTouch(false);
      await weight(0);
      await vs2(true);
      await invalid('dr');
      lastGood.push(String(await servedBy()));
      await fixDr();
      await listener('first');
      await weight(100);
      await rotate();
      await listener('none');
      await drTouch(true);
      await vs2(false);
      await sighup();
      await sighupChange(0);
      await invalid('vs');
      lastGood.push(String(await servedBy()));
      await weight(100); // repairs
      await rotate();
      await burst();
    } finally {
      running = false;
      await Promise.all([...fastLoops, ...slowLoops, ...h2Loops, ...tlsLoops, ...tcpLoops, ...wsLoops, ...extraInFlight]);
    }
    const soakMs = Date.now() - soakStart;
    const dl = await download;
    const loopMax = eld.max / 1e6;
    eld.disable();

    // A fresh connection on every unchanged port still works after the soak.
    assert.equal((await httpGet(P80, '/get')).status, 200);
    const metrics = (await httpGet(gw.app.ports.metrics, '/stats/prometheus')).body;
    const rejectedMetric = Number(/meshgate_config_reloads_total\{result="rejected"\} (\d+)/.exec(metrics)?.[1] ?? 0);

    const fmt = (xs: number[]) => {
      const s = [...xs].filter((x) => x >= 0).sort((p, q) => p - q);
      return s.length === 0 ? '-' : `min ${s[0]} median ${s[Math.floor(s.length / 2)]} max ${s.at(-1)} ms`;
    };
    console.log(`    soak: ${steps.length} reload steps in ${soakMs} ms; reload runs ${reloadLog.length}`);
    // One line per step when asked (MESHGATE_TEST_VERBOSE=1) or when a step went wrong.
    for (const s of steps) {
      if (!process.env['MESHGATE_TEST_VERBOSE'] && !s.error) continue;
      console.log(`      ${s.kind.padEnd(20)} apply ${String(s.applyMs).padStart(4)} ms  reload() ${String(s.reloadMs).padStart(3)} ms  ${s.outcome.padEnd(9)} loop max ${s.loopMaxMs.toFixed(1)} ms${s.error ? `  ERROR ${s.error}` : ''}`);
    }
    console.log(`    apply latency (write -> visible/outcome): ${fmt(steps.map((s) => s.applyMs))}; reload() duration: ${fmt(steps.map((s) => s.reloadMs))}`);
    console.log(`    event-loop delay over the soak: max ${loopMax.toFixed(1)} ms, p99 ${(eld.percentile(99) / 1e6).toFixed(1)} ms, mean ${(eld.mean / 1e6).toFixed(1)} ms`);
    console.log(`    ok: fast ${fast.ok}, slow ${slow.ok}, h2 ${h2.ok}, https ${tlsT.ok}, tcp lines ${tcp.ok}, ws lines ${ws.ok}; download ${dl.bytes} B in ${dl.ms} ms`);
    console.log(`    keep-alive connections per fast client: ${fastSockets.map((s) => s.size).join(',')}; rejected metric ${rejectedMetric}; upstream pools ${gw.app.registry.sizes().pools}`);

    const routing = new Tally(); // requests routed by a config older or newer than the one current when they started
    for (const x of answers) {
      const want = targetsAt(x.started);
      if (want.includes(x.name)) routing.ok++;
      else routing.fail(`${x.what}: started ${x.started} routed to ${x.name}, expected ${want.join('|')} (${JSON.stringify(epochs)})`);
    }
    const failed = (name: string, t: Tally) => assert.deepEqual(t.failures, [], `${name}: ${t.failures.length} failures, ok ${t.ok}`);
    assert.deepEqual(steps.filter((s) => s.error).map((s) => `${s.kind}: ${s.error}`), []);
    failed('fast HTTP/1.1', fast);
    failed('slow', slow);
    failed('h2c', h2);
    failed('https', tlsT);
    failed('tcp', tcp);
    failed('websocket', ws);
    failed('routing (atomicity)', routing);
    assert.equal(dl.error, undefined, `download: ${dl.error}`);
    assert.equal(dl.bytes, DOWNLOAD_BYTES);
    assert.equal(dl.badAt, -1, `download corrupt at byte ${dl.badAt}`);
    assert.ok(dl.ms > 5000, `the download spanned the reloads (${dl.ms} ms)`);
    for (const s of fastSockets) assert.equal(s.size, 1, 'a keep-alive connection was closed during the soak');
    // Traffic really flowed through the soak (not a silent stall).
    assert.ok(fast.ok > 1000 && h2.ok > 200 && tlsT.ok > 50 && slow.ok >= 15, `fast ${fast.ok} h2 ${h2.ok} https ${tlsT.ok} slow ${slow.ok}`);
    assert.ok(tcp.ok > 4 * 100 && ws.ok > 2 * 100, `tcp ${tcp.ok} ws ${ws.ok}`);
    // Invalid edits: rejected, and the last good config kept serving (the target before each one).
    assert.deepEqual(lastGood, ['b', 'b', 'b']);
    assert.equal(rejectedMetric, rejectedExpected, `meshgate_config_reloads_total{result="rejected"}`);
    assert.deepEqual([...gw.app.listeners.ports()].sort(), [P80, PTCP, PTLS].sort());
  });
});
