// Connection-level routing: compiled TCP/TLS listeners, the filter-chain and tcp-route decisions
// (tables), and the TCP proxy's connect timeout with an upstream that never answers, the bytes it
// holds while connecting, the addresses it asks for only when an access log prints them, and a TLS
// client terminated before it (read directly into 16 KiB buffers).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { compile, subnetSet, type GatewayIdentity } from '../../../src/config/compile';
import type { FilterChain, L4Route } from '../../../src/config/snapshot';
import type { Resource } from '../../../src/config/types';
import { selectChain, selectTcpRoute, wildcardsFor } from '../../../src/gateway/tcp/match';
import { TcpProxy, type UpstreamConnector } from '../../../src/gateway/tcp/proxy';
import { directReadsWork, switchedSockets } from '../../../src/gateway/direct-reads';
import { Registry } from '../../../src/registry/registry';
import { AccessLog, type AccessRecord } from '../../../src/telemetry/access-log';
import { Metrics } from '../../../src/telemetry/metrics';
import { makeCa, makeLeaf } from '../../../src/tls/certs';
import { Telemetry } from '../../../src/telemetry/telemetry';
import { res, set } from '../../helpers/resources';
import { seededBytes } from '../../helpers/bytes';
import { listenLoopback, portOf, waitFor } from '../../helpers/upstream';

const id: GatewayIdentity = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', portMap: new Map(), bind: '0.0.0.0' };

function route(name: string, cidrs: string[] = []): L4Route {
  return {
    name, destinationSubnets: subnetSet(cidrs), destinations: [], totalWeight: 0,
    origin: { resource: 'VirtualService default/x', file: 'x.yaml', line: 1, path: 'spec.tcp[0]' },
  };
}

function chain(name: string, serverNames: string[], cidrs: string[] = []): FilterChain {
  return { name, serverNames, destinationSubnets: subnetSet(cidrs), action: { type: 'passthrough', route: route(name) } };
}

/**
 * A TcpProxy on a loopback listener that sends every connection to `host` (port 9000 of a STATIC
 * ServiceEntry at 127.0.0.1, with `more` resources beside it), its access records collected.
 */
async function tcpGateway(o: {
  host: string; targetPort?: number; more?: Resource[]; accessLog?: AccessLog; directReads?: boolean; connector?: UpstreamConnector;
  /** Terminate TLS first (a TLSSocket made by hand over each connection, as tls-listener.ts does). */
  tls?: tls.SecureContext;
}) {
  const se = res('ServiceEntry', o.host.split('.')[0]!, {
    hosts: [o.host], ports: [{ number: 9000, name: 'tcp', protocol: 'TCP', ...(o.targetPort ? { targetPort: o.targetPort } : {}) }],
    resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }],
  });
  const registry = new Registry(undefined);
  registry.reconcile(compile(set([se, ...(o.more ?? [])]), id, 1).snapshot);
  const telemetry = new Telemetry(o.accessLog ?? new AccessLog(), new Metrics({ workload: 'w', namespace: 'n', labels: {} }, false));
  const records: AccessRecord[] = [];
  telemetry.accessLog.write = (r: AccessRecord) => void records.push(r);
  const proxy = new TcpProxy({ registry, telemetry, log: pino({ level: 'silent' }), random: () => 0, idleTimeoutMs: 0, directReads: o.directReads }, o.connector);
  const cluster = `outbound|9000||${o.host}`;
  const info = { route: { ...route('r'), destinations: [{ cluster, host: o.host, port: 9000, weight: 100 }], totalWeight: 100 } };
  const context = o.tls;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    if (!context) return proxy.handle(s, info);
    const secure = new tls.TLSSocket(s, { isServer: true, secureContext: context });
    secure.on('error', () => secure.destroy());
    secure.once('secure', () => proxy.handle(secure, info));
  });
  await listenLoopback(server);
  return { registry, telemetry, records, server, cluster, proxy };
}

describe('L4 routing decisions', () => {
  it('wildcard candidates go from the most to the least specific', () => {
    assert.deepEqual(wildcardsFor('a.b.example.com'), ['*.b.example.com', '*.example.com', '*.com']);
    assert.deepEqual(wildcardsFor('localhost'), []);
  });

  const chains = [
    chain('wild-example', ['*.example.com']),
    chain('wild-b', ['*.b.example.com']),
    chain('exact', ['a.b.example.com', 'other.org']),
    chain('any', []),
    chain('subnet-only', ['inner.example.com'], ['10.0.0.0/8']),
  ];
  const cases: { name: string; sni: string | undefined; local?: string; want: string | undefined }[] = [
    { name: 'exact beats every wildcard', sni: 'a.b.example.com', want: 'exact' },
    { name: 'exact match is case-insensitive', sni: 'OTHER.org', want: 'exact' },
    { name: 'longest wildcard wins', sni: 'x.b.example.com', want: 'wild-b' },
    { name: 'shorter wildcard for other names', sni: 'x.example.com', want: 'wild-example' },
    { name: 'wildcards match deeper names', sni: 'x.y.z.example.com', want: 'wild-example' },
    { name: 'a wildcard does not match its bare domain', sni: 'example.com', want: 'any' },
    { name: 'no SNI goes to the chain without names', sni: undefined, want: 'any' },
    { name: 'unknown SNI goes to the chain without names', sni: 'unknown.net', want: 'any' },
    { name: 'a chain naming the destination subnet beats the others', sni: 'inner.example.com', local: '10.1.2.3', want: 'subnet-only' },
    { name: 'subnet chains are skipped for other addresses', sni: 'inner.example.com', local: '127.0.0.1', want: 'wild-example' },
    { name: 'inside the subnet only its chains count', sni: 'a.b.example.com', local: '10.1.2.3', want: undefined },
    { name: 'IPv4-mapped IPv6 addresses match IPv4 subnets', sni: 'inner.example.com', local: '::ffff:10.9.9.9', want: 'subnet-only' },
  ];
  for (const c of cases) {
    it(`chain: ${c.name}`, () => {
      assert.equal(selectChain(chains, c.sni, c.local ?? '127.0.0.1')?.name, c.want);
    });
  }

  it('chain: without a catch-all chain, no SNI and unknown SNI find nothing (NR)', () => {
    const named = chains.filter((c) => c.name !== 'any');
    assert.equal(selectChain(named, undefined, '127.0.0.1'), undefined);
    assert.equal(selectChain(named, 'unknown.net', '127.0.0.1'), undefined);
    assert.equal(selectChain([], 'a.b.example.com', '127.0.0.1'), undefined);
  });

  it('tcp route: the first whose destinationSubnets admit the address', () => {
    const routes = [route('ten', ['10.0.0.0/8']), route('v6', ['fd00::/8']), route('rest')];
    assert.equal(selectTcpRoute(routes, '10.0.0.1')?.name, 'ten');
    assert.equal(selectTcpRoute(routes, 'fd00::1')?.name, 'v6');
    assert.equal(selectTcpRoute(routes, '192.168.1.1')?.name, 'rest');
    assert.equal(selectTcpRoute(routes.slice(0, 2), '192.168.1.1'), undefined);
    assert.equal(selectTcpRoute(undefined, '10.0.0.1'), undefined);
  });

  it('the local address (a getsockname) is asked for only when a route or chain names subnets', () => {
    let asked = 0;
    const local = (address: string) => () => {
      asked += 1;
      return address;
    };
    const cases: { name: string; pick: () => string | undefined; want: string | undefined; asks: boolean }[] = [
      { name: 'tcp routes without subnets', pick: () => selectTcpRoute([route('a'), route('b')], local('10.0.0.1'))?.name, want: 'a', asks: false },
      { name: 'a tcp route with subnets', pick: () => selectTcpRoute([route('ten', ['10.0.0.0/8']), route('rest')], local('10.0.0.1'))?.name, want: 'ten', asks: true },
      { name: 'chains without subnets', pick: () => selectChain(chains.filter((c) => c.name !== 'subnet-only'), 'x.example.com', local('10.1.2.3'))?.name, want: 'wild-example', asks: false },
      { name: 'a chain with subnets', pick: () => selectChain(chains, 'inner.example.com', local('10.1.2.3'))?.name, want: 'subnet-only', asks: true },
    ];
    for (const c of cases) {
      asked = 0;
      assert.equal(c.pick(), c.want, c.name);
      assert.equal(asked > 0, c.asks, `${c.name}: asked ${asked} times`);
    }
  });
});

describe('compile: TCP and TLS listeners', () => {
  const gw = res('Gateway', 'gw', {
    selector: { istio: 'ingressgateway' },
    servers: [
      { port: { number: 31400, name: 'tcp', protocol: 'TCP' }, hosts: ['*'] },
      { port: { number: 27017, name: 'mongo', protocol: 'MONGO' }, hosts: ['*'] },
      { port: { number: 443, name: 'tls', protocol: 'TLS' }, hosts: ['*.example.com', 'exact.org'], tls: { mode: 'PASSTHROUGH' } },
      { port: { number: 443, name: 'https-a', protocol: 'HTTPS' }, hosts: ['a.example.net'], tls: { mode: 'SIMPLE', credentialName: 'a-cred' } },
      { port: { number: 8443, name: 'https-all', protocol: 'HTTPS' }, hosts: ['*'], tls: { mode: 'SIMPLE', credentialName: 'all-cred' } },
      { port: { number: 15443, name: 'tls-auto', protocol: 'TLS' }, hosts: ['*'], tls: { mode: 'AUTO_PASSTHROUGH' } },
    ],
  });
  const se = res('ServiceEntry', 'echo', { hosts: ['echo.internal'], ports: [{ number: 9000, name: 'tcp', protocol: 'TCP' }], resolution: 'STATIC', endpoints: [{ address: '127.0.0.1' }] });
  const vs = res('VirtualService', 'l4', {
    hosts: ['*'],
    gateways: ['gw'],
    tcp: [
      { match: [{ port: 31400, destinationSubnets: ['10.0.0.0/8'] }, { port: 27017 }], route: [{ destination: { host: 'echo.internal', port: { number: 9000 } } }] },
      { match: [{ port: 31400 }], route: [{ destination: { host: 'echo.internal' }, weight: 80 }, { destination: { host: 'echo.internal' }, weight: 20 }] },
      { match: [{ port: 9999 }], route: [{ destination: { host: 'echo.internal' } }] },
    ],
    tls: [
      { match: [{ port: 443, sniHosts: ['a.example.com', 'b.example.com'] }], route: [{ destination: { host: 'echo.internal' } }] },
      { match: [{ port: 443, sniHosts: ['*.example.com'] }], route: [{ destination: { host: 'echo.internal' } }] },
      { match: [{ port: 443, sniHosts: ['nothere.io'] }], route: [{ destination: { host: 'echo.internal' } }] },
    ],
  });
  const https = res('VirtualService', 'web', { hosts: ['a.example.net', 'www.other.net'], gateways: ['gw'], http: [{ route: [{ destination: { host: 'echo.internal' } }] }] });
  const { snapshot, notes } = compile(set([gw, se, vs, https]), id, 1);

  it('TCP and opaque protocols become TCP listeners with their routes in order', () => {
    const l = snapshot.listeners.get(31400)!;
    assert.equal(l.family, 'TCP');
    assert.deepEqual(l.tcpRoutes!.map((r) => [r.name, r.destinationSubnets.cidrs]), [['default.l4.0', ['10.0.0.0/8']], ['default.l4.1', []]]);
    assert.equal(l.tcpRoutes![1]!.totalWeight, 100);
    assert.equal(l.tcpRoutes![0]!.destinations[0]!.cluster, 'outbound|9000||echo.internal');
    assert.deepEqual(snapshot.listeners.get(27017)!.tcpRoutes!.map((r) => r.name), ['default.l4.0']);
  });

  it('TLS passthrough: one chain per tls match, SNI names intersected with the server hosts', () => {
    const l = snapshot.listeners.get(443)!;
    assert.equal(l.family, 'TLS');
    const passthrough = l.chains!.filter((c) => c.action.type === 'passthrough');
    assert.deepEqual(passthrough.map((c) => [c.name, c.serverNames]), [
      ['default.l4.0.0', ['a.example.com', 'b.example.com']],
      ['default.l4.1.0', ['*.example.com']],
    ]);
  });

  it('HTTPS termination shares the port as a chain by server hosts, with its own route table', () => {
    const chains = snapshot.listeners.get(443)!.chains!;
    const term = chains.find((c) => c.action.type === 'terminate')!;
    assert.deepEqual(term.serverNames, ['a.example.net']);
    assert.ok(term.action.type === 'terminate' && term.action.protocol === 'HTTP');
    if (term.action.type !== 'terminate') return;
    assert.equal(term.action.routes!.name, 'https.443.https-a.gw.default');
    assert.deepEqual([...term.action.routes!.exact.keys()], ['a.example.net']);
    const all = snapshot.listeners.get(8443)!.chains!;
    assert.deepEqual(all.map((c) => c.serverNames), [[]]);
  });

  it('unsupported TLS modes are skipped with a warning', () => {
    assert.equal(snapshot.listeners.get(15443), undefined);
    assert.ok(notes.some((n) => /tls\.mode AUTO_PASSTHROUGH is not supported/.test(n.message)), JSON.stringify(notes));
  });
});

describe('TCP proxy: an upstream that never accepts', () => {
  /** A TCP proxy in front of an upstream socket that never connects (it never emits 'connect'). */
  async function neverConnecting(connectTimeout: string) {
    const dr = res('DestinationRule', 'slow', { host: 'slow.internal', trafficPolicy: { connectionPool: { tcp: { connectTimeout } } } });
    const { registry, telemetry, records, server, cluster } = await tcpGateway({ host: 'slow.internal', more: [dr], connector: () => {
      const socket = new net.Socket();
      // A real socket still connecting resets quietly; this handle-less stand-in would report an error.
      socket.resetAndDestroy = () => socket.destroy();
      return { socket, ready: 'connect' };
    } });
    const client = net.connect(portOf(server), '127.0.0.1');
    client.on('error', () => {});
    return { registry, telemetry, records, server, client, service: registry.get(cluster)!.def.service };
  }

  it('a client that resets while connecting is logged DC and counted opened and closed with DC', async () => {
    // (A FIN is a half-close and waits for the upstream, as after the connect.)
    const { telemetry, records, server, client, service } = await neverConnecting('5s');
    await new Promise((r) => client.once('connect', r));
    await new Promise((r) => setTimeout(r, 50));
    client.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 50));
    server.close();
    assert.equal(records.length, 1);
    assert.deepEqual(records[0]!.responseFlags, ['DC']);
    const series = telemetry.metrics.tcpSeries(service, 'DC');
    assert.deepEqual([series.opened, series.closed], [1, 1]);
  });

  it('closes the client and logs UF when the upstream never accepts within connectTimeout', async () => {
    const t0 = Date.now();
    const { registry, records, server, client } = await neverConnecting('150ms');
    await new Promise((r) => client.once('close', r));
    const took = Date.now() - t0;
    server.close();
    assert.ok(took >= 140 && took < 2000, `closed after ${took} ms`);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(records.length, 1);
    assert.deepEqual(records[0]!.responseFlags, ['UF']);
    assert.equal(records[0]!.upstreamTransportFailureReason, 'connection timeout');
    assert.equal(registry.get('outbound|9000||slow.internal')!.stats.get('upstream_cx_connect_timeout'), 1);
  });
});

describe("TCP proxy: the client's bytes while the upstream connects", () => {
  for (const directReads of [true, false]) {
    it(`are held, bounded, and sent first once it is there, byte-exact and then the FIN (${directReads ? 'direct reads' : "the socket's stream"})`, async () => {
      await directReadsWork();
      // The upstream: collects what arrives, answers the FIN with its own.
      const received: Buffer[] = [];
      const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('data', (c: Buffer) => received.push(c));
        s.on('end', () => s.end());
      });
      await listenLoopback(upstream);
      // Connected at once, but "ready" only when the test says so (as a TLS upstream's handshake).
      let upstreamSocket: net.Socket | undefined;
      const { records, server } = await tcpGateway({ host: 'late.internal', directReads, connector: () => {
        upstreamSocket = net.connect(portOf(upstream), '127.0.0.1');
        return { socket: upstreamSocket, ready: 'secureConnect' };
      } });
      const switched = switchedSockets();
      const client = net.connect({ port: portOf(server), host: '127.0.0.1', allowHalfOpen: true });
      client.on('error', () => {});
      try {
        // More than the kernel's buffers on both sides hold (a few MiB each): if the gateway took it
        // all while waiting, nothing would be left on the client's side.
        const sent = seededBytes(24 * 1024 * 1024, 2);
        client.end(sent);
        await waitFor(() => upstreamSocket !== undefined, { timeoutMs: 2000, intervalMs: 5 });
        await new Promise((r) => setTimeout(r, 300));
        assert.ok(client.writableLength > 0, 'the client was held back while the upstream connected');
        assert.equal(received.length, 0);
        upstreamSocket!.emit('secureConnect');
        const ended = new Promise((r) => client.once('end', r));
        client.resume();
        await ended; // the upstream's FIN, after it saw ours
        assert.ok(Buffer.concat(received).equals(sent), 'byte-exact, in order');
        await waitFor(() => records.length === 1, { timeoutMs: 2000, intervalMs: 5 });
        assert.equal(records[0]!.bytesReceived, sent.length);
        assert.equal(switchedSockets() - switched, directReads ? 1 : 0);
      } finally {
        client.destroy();
        server.close();
        upstream.close();
      }
    });
  }
});

describe('TCP proxy: a TLS client terminated before it', () => {
  before(() => directReadsWork());

  it('reads the decrypted bytes directly, into the 16 KiB pool (a TLS read is at most 16 KiB), byte-exact', async () => {
    const received: Buffer[] = [];
    const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', (c: Buffer) => received.push(c));
      s.on('end', () => s.end());
    });
    await listenLoopback(upstream);
    const ca = await makeCa({ commonName: 'tcp-tls-ca', days: 1 });
    const leaf = await makeLeaf(ca, { commonName: 'tcp.test', names: ['tcp.test'], days: 1, usage: 'server' });
    const { server, proxy } = await tcpGateway({ host: 'sink.internal', targetPort: portOf(upstream), directReads: true, tls: tls.createSecureContext({ cert: leaf.cert, key: leaf.key }) });
    const switched = switchedSockets();
    const client = tls.connect({ port: portOf(server), host: '127.0.0.1', servername: 'tcp.test', ca: ca.cert });
    client.on('error', () => {});
    try {
      await new Promise((r) => client.once('secureConnect', r));
      const sent = seededBytes(4 * 1024 * 1024, 4);
      const ended = new Promise((r) => client.once('end', r));
      client.end(sent);
      client.resume();
      await ended; // the upstream's FIN, after it saw ours
      assert.ok(Buffer.concat(received).equals(sent), 'byte-exact, in order');
      assert.equal(switchedSockets() - switched, 1, 'the TLS client was read directly');
      assert.ok(proxy.tlsReadBuffers.total > 0, 'its large reads went into the 16 KiB pool');
      assert.equal(proxy.tlsReadBuffers.size, 16 * 1024);
    } finally {
      client.destroy();
      server.close();
      upstream.close();
    }
  });
});

describe('TCP proxy: the connection addresses, only for an access log', () => {
  for (const logged of [true, false]) {
    it(`${logged ? 'are in the record when the log is on' : 'are never asked of the kernel when the log is off'}`, async () => {
      const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('data', (c: Buffer) => s.write(c));
        s.on('end', () => s.end());
      });
      await listenLoopback(upstream);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-tcp-addr-'));
      const log = new AccessLog(logged ? { file: path.join(dir, 'access.log'), encoding: 'TEXT', format: '' } : undefined);
      const { records, server } = await tcpGateway({ host: 'echo.internal', targetPort: portOf(upstream), accessLog: log });
      // Every address lookup a socket makes goes through these two (node:net's getters cache them there).
      const proto = net.Socket.prototype as unknown as Record<'_getsockname' | '_getpeername', () => unknown>;
      const original = { sock: proto._getsockname, peer: proto._getpeername };
      let lookups = 0;
      const client = net.connect({ port: portOf(server), host: '127.0.0.1', allowHalfOpen: true });
      // Every socket but the test's client: the gateway's two (and the echo server's, which asks nothing).
      proto._getsockname = function (this: unknown) { if (this !== client) lookups += 1; return original.sock.call(this); };
      proto._getpeername = function (this: unknown) { if (this !== client) lookups += 1; return original.peer.call(this); };
      try {
        client.on('error', () => {});
        const echoed: Buffer[] = [];
        client.on('data', (c: Buffer) => echoed.push(c));
        let clientPort: number | undefined;
        client.once('connect', () => { clientPort = client.localPort; });
        const ended = new Promise((r) => client.once('end', r));
        client.end('hello');
        await ended;
        assert.equal(Buffer.concat(echoed).toString(), 'hello');
        await waitFor(() => records.length === 1, { timeoutMs: 2000, intervalMs: 5 });
        const r = records[0]!;
        assert.deepEqual([r.bytesReceived, r.bytesSent, r.upstreamHost], [5, 5, `127.0.0.1:${portOf(upstream)}`]);
        if (logged) {
          assert.equal(r.downstreamLocalAddress, `127.0.0.1:${portOf(server)}`);
          assert.equal(r.downstreamRemoteAddress, `127.0.0.1:${clientPort}`);
          assert.match(r.upstreamLocalAddress ?? '', /^127\.0\.0\.1:\d+$/);
          assert.ok(lookups > 0);
        } else {
          assert.deepEqual([r.downstreamLocalAddress, r.downstreamRemoteAddress, r.upstreamLocalAddress], [undefined, undefined, undefined]);
          assert.equal(lookups, 0, 'getsockname/getpeername calls during the connection');
        }
      } finally {
        proto._getsockname = original.sock;
        proto._getpeername = original.peer;
        client.destroy();
        server.close();
        upstream.close();
        await log.close();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
