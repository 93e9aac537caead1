// TCP routes on a Gateway TCP server, end to end: Istio's tcp-echo samples unchanged (all-v1, then the
// 80/20 shift applied as a hot reload), half-close, resets, idle timeout, failures and their log
// lines, the TCP metrics. Real gateway, real tcp-echo backends on loopback, nc and raw sockets.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { switchedSockets } from '../../src/gateway/direct-reads';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { freePort, waitFor } from '../helpers/upstream';
import { workloadEntry } from '../helpers/yaml';
import { startTcpEcho, type TcpEchoServer } from '../../src/sample/tcp-echo';
import { loopbackServiceEntryYaml, singleRouteYaml } from '../../src/sample/configs';
import { seededBytes, sha256 } from '../helpers/bytes';

const SAMPLES = path.resolve(__dirname, '../../../../shared/istio-samples/samples/tcp-echo');
const sample = (name: string) => fs.readFileSync(path.join(SAMPLES, name), 'utf8');

/** A sample file's YAML documents, split so one of them can be replaced as `kubectl apply` would. */
function documents(text: string): string[] {
  return text.split(/^---\s*$/m).filter((d) => /^kind:/m.test(d));
}

interface Talk {
  readonly out: string;
  /** How the gateway side ended: 'end' (FIN), 'reset', 'close'. */
  readonly ending: 'end' | 'reset' | 'close' | 'timeout';
}

/** Connect, write `data` (then FIN when `halfClose`), collect everything until the other side closes. */
function talk(port: number, data: string, opts: { halfClose?: boolean; timeoutMs?: number } = {}): Promise<Talk> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ending: Talk['ending'] = 'close';
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => {
      sock.write(data);
      if (opts.halfClose !== false) sock.end();
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => {
      ending = 'end';
      sock.end();
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      ending = err.code === 'ECONNRESET' ? 'reset' : 'close';
    });
    const timer = setTimeout(() => {
      ending = 'timeout';
      sock.destroy();
    }, opts.timeoutMs ?? 5000);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ out: Buffer.concat(chunks).toString('utf8'), ending });
    });
  });
}

/** The istio.io task's client: `(date; sleep 1) | nc -N HOST PORT` (-N: FIN after stdin ends). */
function ncDate(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', `(date; sleep 1) | nc -N 127.0.0.1 ${port}`], { timeout: 10_000 }, (err, stdout) => {
      if (err) reject(err);
      else resolve(stdout);
    });
  });
}

describe('TCP gateway: tcp-echo samples, byte proxying, failures', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let v1: TcpEchoServer;
  let v2: TcpEchoServer;
  let port: number;
  const [gatewayDoc, ruleDoc, vsAllV1] = documents(sample('tcp-echo-all-v1.yaml'));

  before(async () => {
    v1 = await startTcpEcho({ prefix: 'one' });
    v2 = await startTcpEcho({ prefix: 'two' });
    gw = await startGateway({
      // The sample's Service (its Deployments are skipped) with two stand-in pods on loopback.
      'tcp-echo.yaml': sample('tcp-echo.yaml'),
      'pods.yaml': workloadEntry('tcp-echo-v1', { tcp: v1.port }, { app: 'tcp-echo', version: 'v1' })
        + workloadEntry('tcp-echo-v2', { tcp: v2.port }, { app: 'tcp-echo', version: 'v2' }),
      'tcp-echo-gateway.yaml': `${gatewayDoc}---\n${ruleDoc}`,
      'tcp-echo-vs.yaml': vsAllV1!,
    }, { serverPorts: [31400], opts: { tcpIdleTimeoutMs: 60_000 } });
    port = gw.port(31400);
  });
  after(async () => {
    await gw?.stop();
    await v1?.close();
    await v2?.close();
  });

  it('tcp-echo-all-v1: `(date; sleep 1) | nc` prints "one <date>" every time', async () => {
    const switched = switchedSockets();
    const outs = await Promise.all([ncDate(port), ncDate(port), ncDate(port)]);
    assert.equal(switchedSockets() - switched, 3, "the clients' bytes were read directly (direct-reads.ts)");
    for (const out of outs) assert.match(out, /^one \S+ .*\d{4}\n$/);
    const lines = await gw.waitForLines(3);
    const line = lines.find((l) => l.includes('"- - -" 0 - '));
    assert.ok(line, lines.join('\n'));
    // Istio's TCP line: no method/path/protocol, code 0, bytes both ways, cluster and upstream host.
    assert.match(line!, new RegExp(`^\\[[^\\]]+\\] "- - -" 0 - - - "-" \\d+ \\d+ \\d+ - "-" "-" "-" "-" "127\\.0\\.0\\.1:${v1.port}" outbound\\|9000\\|v1\\|tcp-echo\\.default\\.svc\\.cluster\\.local 127\\.0\\.0\\.1:\\d+ 127\\.0\\.0\\.1:${port} 127\\.0\\.0\\.1:\\d+ - -$`));
  });

  it('tcp-echo-20-v2 applied while running: about 20% "two", and open connections keep their route', async () => {
    // A connection opened before the change (all v1) ...
    const early = net.connect({ port, host: '127.0.0.1' });
    const earlyLines: string[] = [];
    early.setEncoding('utf8');
    early.on('data', (c: string) => earlyLines.push(c));
    early.write('before\n');
    await waitFor(() => earlyLines.join('').includes('one before'), { timeoutMs: 3000 });
    const version = gw.app.store.current.version;
    gw.write('tcp-echo-vs.yaml', sample('tcp-echo-20-v2.yaml'));
    await waitFor(() => gw.app.store.current.version > version, { timeoutMs: 5000 });
    // ... still reaches v1 after it.
    early.write('after\n');
    await waitFor(() => earlyLines.join('').includes('one after'), { timeoutMs: 3000 });
    early.end();
    // 400 new connections: two ~ Binomial(400, 0.2), mean 80, sd 8; accept 48..112 (4 sd).
    let two = 0;
    let one = 0;
    for (let batch = 0; batch < 8; batch++) {
      const outs = await Promise.all(Array.from({ length: 50 }, () => talk(port, 'x\n')));
      for (const o of outs) {
        if (o.out === 'two x\n') two++;
        else if (o.out === 'one x\n') one++;
      }
    }
    assert.equal(one + two, 400, `${one} one, ${two} two`);
    assert.ok(two >= 48 && two <= 112, `two: ${two} of 400`);
    // Back to all-v1 for the tests that follow.
    const v = gw.app.store.current.version;
    gw.write('tcp-echo-vs.yaml', vsAllV1!);
    await waitFor(() => gw.app.store.current.version > v, { timeoutMs: 5000 });
  });

  it('half-close: a client that shuts its write side still receives the rest of the reply', async () => {
    const r = await talk(port, 'first\nsecond\nlast-without-newline', { halfClose: true });
    assert.equal(r.out, 'one first\none second\none last-without-newline\n');
    assert.equal(r.ending, 'end');
  });

  it('counts the TCP metrics with Istio names and labels', async () => {
    await talk(port, 'metrics\n');
    await waitFor(async () => (await gw.app.metrics.render()).includes('istio_tcp_connections_closed_total'), { timeoutMs: 3000 });
    const text = await gw.app.metrics.render();
    const labels = ['reporter="source"', 'destination_service="tcp-echo.default.svc.cluster.local"', 'destination_service_name="tcp-echo"',
      'destination_service_namespace="default"', 'request_protocol="tcp"', 'response_flags="-"', 'connection_security_policy="unknown"'];
    for (const name of ['istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total', 'istio_tcp_sent_bytes_total', 'istio_tcp_received_bytes_total']) {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.every((x) => l.includes(x)));
      assert.ok(line, `${name} missing:\n${text.split('\n').filter((l) => l.startsWith('istio_tcp')).join('\n')}`);
      assert.ok(Number(line!.split(' ').at(-1)) > 0, line);
    }
  });
});

describe('TCP gateway: resets, timeouts and failures', function () {
  this.timeout(30_000);
  let gw: TestGateway;
  let resetter: net.Server;
  let silent: net.Server;
  let deadPort: number;
  const seenByUpstream: string[] = [];

  before(async () => {
    // An upstream that resets every connection once it has read something.
    resetter = net.createServer((s) => {
      s.on('error', () => {});
      s.once('data', () => s.resetAndDestroy());
    });
    // An upstream that never answers: it records how each connection ended.
    silent = net.createServer((s) => {
      s.on('error', (err: NodeJS.ErrnoException) => seenByUpstream.push(err.code ?? 'error'));
      s.on('end', () => seenByUpstream.push('end'));
    });
    await new Promise<void>((r) => resetter.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    deadPort = await freePort();
    const entry = (host: string, p: number) => loopbackServiceEntryYaml(host, `${host}.internal`, 7000, 'TCP', p);
    const tcpServer = (n: number) => `{port: {number: ${n}, name: tcp-${n}, protocol: TCP}, hosts: ["*"]}`;
    const route = (n: number, host: string) => `  - match: [{port: ${n}}]\n    route: [{destination: {host: ${host}, port: {number: 7000}}}]\n`;
    gw = await startGateway({
      'all.yaml': `${entry('resetter', (resetter.address() as net.AddressInfo).port)}${entry('silent', (silent.address() as net.AddressInfo).port)}${entry('dead', deadPort)}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: empty, namespace: default}
spec: {hosts: [empty.internal], ports: [{number: 7000, name: tcp, protocol: TCP}], resolution: STATIC, workloadSelector: {labels: {app: none}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [${[9001, 9002, 9003, 9004, 9005, 9006].map(tcpServer).join(', ')}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
${route(9001, 'resetter.internal')}${route(9002, 'silent.internal')}${route(9003, 'dead.internal')}${route(9004, 'empty.internal')}${route(9005, 'nowhere.internal')}`,
    }, { serverPorts: [9001, 9002, 9003, 9004, 9005, 9006], opts: { tcpIdleTimeoutMs: 400 } });
  });
  after(async () => {
    await gw?.stop();
    resetter?.close();
    silent?.close();
  });

  it('an upstream reset reaches the client as a reset', async () => {
    const r = await talk(gw.port(9001), 'hello\n', { halfClose: false });
    assert.equal(r.ending, 'reset');
  });

  it('a client reset reaches the upstream as a reset', async () => {
    const before = seenByUpstream.length;
    const sock = net.connect(gw.port(9002), '127.0.0.1');
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write('x');
    await new Promise((r) => setTimeout(r, 100));
    sock.resetAndDestroy();
    await waitFor(() => seenByUpstream.length > before, { timeoutMs: 3000 });
    assert.equal(seenByUpstream[before], 'ECONNRESET');
  });

  it('closes a connection idle for the idle timeout', async () => {
    const t0 = Date.now();
    const r = await talk(gw.port(9002), 'x', { halfClose: false, timeoutMs: 5000 });
    const took = Date.now() - t0;
    assert.notEqual(r.ending, 'timeout');
    assert.ok(took >= 350 && took < 3000, `closed after ${took} ms`);
  });

  it('refused upstream: connection closed, logged UF with the cluster and host', async () => {
    const r = await talk(gw.port(9003), 'x\n', { halfClose: false });
    assert.equal(r.out, '');
    await waitFor(() => gw.accessLines().some((l) => / 0 UF /.test(l)), { timeoutMs: 3000 });
    const line = gw.accessLines().find((l) => / 0 UF /.test(l))!;
    assert.match(line, new RegExp(`"- - -" 0 UF - - "ECONNREFUSED" 0 0 \\d+ - "-" "-" "-" "-" "127\\.0\\.0\\.1:${deadPort}" outbound\\|7000\\|\\|dead\\.internal `));
  });

  it('no endpoint: UH; unknown host: NC; no route on the port: NR', async () => {
    await talk(gw.port(9004), 'x\n', { halfClose: false });
    await talk(gw.port(9005), 'x\n', { halfClose: false });
    await talk(gw.port(9006), 'x\n', { halfClose: false });
    await waitFor(() => gw.accessLines().filter((l) => / 0 (UH|NC|NR) /.test(l)).length >= 3, { timeoutMs: 3000 });
    const lines = gw.accessLines();
    assert.ok(lines.some((l) => /"- - -" 0 UH - - "-" 0 0 \d+ - "-" "-" "-" "-" "-" outbound\|7000\|\|empty\.internal /.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /"- - -" 0 NC - - "-" 0 0 \d+ - "-" "-" "-" "-" "-" outbound\|7000\|\|nowhere\.internal /.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => new RegExp(`"- - -" 0 NR filter_chain_not_found - "-" 0 0 \\d+ - "-" "-" "-" "-" "-" - - 127\\.0\\.0\\.1:${gw.port(9006)} `).test(l)), lines.join('\n'));
  });
});

describe('TCP gateway: backpressure', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let sink: net.Server;
  let held: net.Socket | undefined;

  before(async () => {
    // An upstream that reads nothing until told, then answers the sha256 of everything it got.
    sink = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pause();
      held = s;
      const hash = createHash('sha256');
      s.on('data', (c: Buffer) => hash.update(c));
      s.on('end', () => s.end(hash.digest('hex')));
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    gw = await startGateway({ 'sink.yaml': singleRouteYaml({ upstreamPort: (sink.address() as net.AddressInfo).port, protocol: 'TCP' }) });
  });
  after(async () => {
    await gw?.stop();
    sink?.close();
  });

  it('a slow upstream holds the client back (the gateway stops reading), then every byte arrives in order', async () => {
    const data = seededBytes(64 * 1024 * 1024, 0); // well past what the kernel buffers of both connections hold
    const sent = sha256(data);
    const client = net.connect({ port: gw.port(80), host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => {});
    await new Promise<void>((r) => client.once('connect', () => r()));
    let answer = '';
    client.on('data', (c: Buffer) => { answer += c.toString(); });
    const ended = new Promise<void>((r) => client.once('end', () => r()));
    client.end(data);
    await waitFor(() => held !== undefined, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 700));
    // Loopback buffers take some MiB; a gateway reading on regardless would have taken the rest.
    assert.ok(client.writableLength > 16 * 1024 * 1024, `client still holds ${client.writableLength} bytes`);
    held!.resume();
    await ended;
    assert.equal(answer, sent);
    client.destroy();
  });
});

describe('TCP gateway: backpressure towards the client (upstream reads into recycled buffers)', function () {
  this.timeout(60_000);
  const total = 64 * 1024 * 1024;
  let data: Buffer;
  let expected: string;
  let gw: TestGateway;
  let source: net.Server;
  let sending: net.Socket | undefined;

  before(async () => {
    data = seededBytes(total, 1000); // unlike any client's "seed N"
    expected = sha256(data);
    // An upstream that answers the client's first line: "all" gets `data`, "seed N" 8 MiB of its
    // own pattern for N; then it closes.
    source = net.createServer((s) => {
      s.on('error', () => {});
      sending = s;
      s.once('data', (c: Buffer) => {
        const m = /^seed (\d+)\n/.exec(c.toString());
        s.end(m ? pattern(Number(m[1])) : data);
      });
    });
    await new Promise<void>((r) => source.listen(0, '127.0.0.1', r));
    gw = await startGateway({ 'source.yaml': singleRouteYaml({ upstreamPort: (source.address() as net.AddressInfo).port, protocol: 'TCP' }) });
  });
  after(async () => {
    await gw?.stop();
    source?.close();
  });

  it('a client that keeps stopping holds the upstream back each time, and every byte arrives in order', async () => {
    const client = net.connect({ port: gw.port(80), host: '127.0.0.1' });
    client.on('error', () => {});
    const hash = createHash('sha256');
    let got = 0;
    client.on('data', (c: Buffer) => {
      hash.update(c);
      got += c.length;
    });
    const ended = new Promise<void>((r) => client.once('end', () => r()));
    client.write('all\n');
    // Three stops: each time the gateway must stop reading the upstream (which then holds most of
    // the data itself) and start again when the client reads on.
    for (let stop = 0; stop < 3; stop++) {
      await waitFor(() => got >= (stop + 1) * 4 * 1024 * 1024, { timeoutMs: 10_000 });
      client.pause();
      await new Promise((r) => setTimeout(r, 500));
      const upstreamHolds = sending?.writableLength ?? 0;
      assert.ok(upstreamHolds > 16 * 1024 * 1024, `stop ${stop}: the upstream still holds ${upstreamHolds} bytes (client has ${got})`);
      client.resume();
    }
    await ended;
    assert.equal(got, total);
    assert.equal(hash.digest('hex'), expected);
    client.destroy();
  });

  it('16 clients at once, some slow, each get their own bytes (no read buffer reused while still being written)', async () => {
    const one = (seed: number) => new Promise<boolean>((resolve, reject) => {
      const client = net.connect({ port: gw.port(80), host: '127.0.0.1' });
      client.on('error', reject);
      const hash = createHash('sha256');
      let chunks = 0;
      client.on('data', (c: Buffer) => {
        hash.update(c);
        // Every other client stops for 20 ms every 20 chunks, so its writes queue in the gateway.
        if (seed % 2 === 1 && ++chunks % 20 === 0) {
          client.pause();
          setTimeout(() => client.resume(), 20);
        }
      });
      client.on('end', () => {
        resolve(hash.digest('hex') === sha256(pattern(seed)));
        client.destroy();
      });
      client.write(`seed ${seed}\n`);
    });
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => one(i + 1)));
    assert.deepEqual(results, Array(16).fill(true));
  });
});

/** 8 MiB that differ for every seed. */
const pattern = (seed: number): Buffer => seededBytes(8 * 1024 * 1024, seed);
