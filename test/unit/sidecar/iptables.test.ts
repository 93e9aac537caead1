// The capture rules as istio-iptables writes them (the default document equals the nat table the
// reference guide derives from istio-iptables' goldens), and the Sidecar resource's effect on the
// compiled outbound tables.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_CAPTURE, natRules } from '../../../src/sidecar/iptables';
import { fallbackPorts } from '../../../src/sidecar/fallback';
import { compile } from '../../../src/config/compile';
import { res, set } from '../../helpers/resources';

const GUIDE = path.resolve(__dirname, '../../../../../shared/reference/istio-behaviour.md');

describe('sidecar capture rules (meshgate iptables)', () => {
  it('the default rules are istio-iptables\' (-p 15001 -z 15006 -u 1337 -b \'*\' -d 15090,15021,15020)', () => {
    const guide = fs.readFileSync(GUIDE, 'utf8');
    const golden = /```\n(\*nat\n[\s\S]*?COMMIT)\n```/.exec(guide.slice(guide.indexOf('### d2.')))![1];
    assert.equal(natRules(DEFAULT_CAPTURE, 4).trimEnd(), golden);
  });

  it('IPv6 uses ::1 and ::6 where IPv4 has 127.0.0.1 and 127.0.0.6', () => {
    const v6 = natRules(DEFAULT_CAPTURE, 6);
    assert.match(v6, /^-A ISTIO_OUTPUT -o lo -s ::6\/128 -j RETURN$/m);
    assert.match(v6, /^-A ISTIO_OUTPUT -d ::1\/128 -j RETURN$/m);
    assert.doesNotMatch(v6, /127\.0\.0/);
  });

  it('excluded ports and CIDRs return early; included CIDRs replace the catch-all; no inbound when asked', () => {
    const r = natRules({ ...DEFAULT_CAPTURE, excludeOutboundPorts: [5432], excludeOutboundCidrs: ['10.0.0.0/8', 'fd00::/8'], includeOutboundCidrs: ['10.96.0.0/12'], includeInboundPorts: '' }, 4);
    const lines = r.split('\n');
    assert.equal(lines[lines.indexOf('-A OUTPUT -j ISTIO_OUTPUT') + 1], '-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN');
    assert.ok(lines.includes('-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN'));
    assert.ok(!lines.some((l) => l.includes('fd00::/8')), 'IPv6 CIDRs stay out of the IPv4 table');
    assert.equal(lines.at(-3), '-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT');
    assert.ok(!lines.includes('-A ISTIO_OUTPUT -j ISTIO_REDIRECT'));
    assert.ok(!lines.some((l) => l.startsWith('-A PREROUTING')));
    // Nothing listens on the inbound port: the proxy's calls to its own pod go out as they are.
    assert.ok(!lines.some((l) => l.startsWith('-A ISTIO_OUTPUT') && l.endsWith('-j ISTIO_IN_REDIRECT')), r);
    assert.ok(natRules(DEFAULT_CAPTURE, 4).includes('--uid-owner 1337 -j ISTIO_IN_REDIRECT'), 'with inbound capture the rule stays');
    const some = natRules({ ...DEFAULT_CAPTURE, includeInboundPorts: [8080, 9090] }, 4);
    assert.match(some, /^-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT$/m);
  });

  it('per-port capture: the i-th listed port goes to base + i, nothing to 15001; bad lists are refused', () => {
    const fallback = fallbackPorts([80, 443, 9000], 15100);
    assert.ok(!(fallback instanceof Error));
    assert.deepEqual(fallback, [{ app: 80, listen: 15100 }, { app: 443, listen: 15101 }, { app: 9000, listen: 15102 }]);
    const lines = natRules({ ...DEFAULT_CAPTURE, fallback }, 4).split('\n');
    assert.deepEqual(lines.filter((l) => l.startsWith('-A ISTIO_REDIRECT')), [
      '-A ISTIO_REDIRECT -p tcp --dport 80 -j REDIRECT --to-ports 15100',
      '-A ISTIO_REDIRECT -p tcp --dport 443 -j REDIRECT --to-ports 15101',
      '-A ISTIO_REDIRECT -p tcp --dport 9000 -j REDIRECT --to-ports 15102',
    ]);
    const bad: [number[], number, RegExp][] = [
      [[80, 80], 15100, /listed twice/],
      [[0], 15100, /not a port/],
      [[80, 15101], 15100, /15101 is also an application port/],
      [[80, 81], 65535, /leaves no room/],
    ];
    for (const [ports, base, re] of bad) {
      const r = fallbackPorts(ports, base);
      assert.ok(r instanceof Error && re.test(r.message), `${ports} @${base}: ${String(r)}`);
    }
  });

  it('per-port capture compiles one listener per application port, sharing the outbound tables', () => {
    const se = res('ServiceEntry', 'echo', { hosts: ['echo.internal'], ports: [{ number: 9000, name: 'tcp', protocol: 'TCP' }], resolution: 'STATIC', endpoints: [{ address: '10.0.0.1' }] });
    const two = res('ServiceEntry', 'db', { hosts: ['a.db', 'b.db'], ports: [{ number: 5432, name: 'tcp', protocol: 'TCP' }], resolution: 'STATIC', endpoints: [{ address: '10.0.0.2' }] });
    const fallback = [{ app: 80, listen: 15100 }, { app: 9000, listen: 15101 }];
    const id = { labels: { app: 'sleep' }, namespace: 'default', portMap: new Map<number, number>(), bind: '::', capturePort: 15001, fallback };
    const listeners = compile(set([se, two]), id, 1).snapshot.listeners;
    assert.deepEqual([...listeners.keys()], [15100, 15101]);
    assert.equal(listeners.get(15101)?.fallbackPort, 9000);
    const out = listeners.get(15100)!.outbound!;
    assert.equal(out.tcpByPort.get(9000), 'outbound|9000||echo.internal');
    assert.equal(out.tcpByPort.has(5432), false, 'two services own 5432: no single destination');
  });
});

describe('sidecar outbound compile: the Sidecar resource', () => {
  const id = { labels: { app: 'sleep' }, namespace: 'default', portMap: new Map<number, number>(), bind: '::', capturePort: 15001 };
  const se = (name: string, host: string, ns: string) => res('ServiceEntry', name, { hosts: [host], ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], resolution: 'STATIC', endpoints: [{ address: '10.0.0.1' }] }, ns);
  const services = [se('mine', 'mine.example.com', 'default'), se('theirs', 'theirs.example.com', 'other'), se('shared', 'shared.example.com', 'istio-system')];
  const table = (extra: Parameters<typeof set>[0], mesh = {}) => compile(set([...services, ...extra], mesh), id, 1).snapshot.listeners.get(15001)!.outbound!;

  it('without a Sidecar: every service, the mesh policy', () => {
    const out = table([], { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } });
    assert.deepEqual([...out.http.get(80)!.exact.keys()].sort(), ['mine.example.com', 'shared.example.com', 'theirs.example.com']);
    assert.equal(out.policy, 'REGISTRY_ONLY');
  });

  it('egress.hosts narrows what the proxy sees; its outboundTrafficPolicy overrides the mesh', () => {
    const sidecar = res('Sidecar', 'default', { egress: [{ hosts: ['./*', 'istio-system/*'] }], outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } });
    const out = table([sidecar]);
    assert.deepEqual([...out.http.get(80)!.exact.keys()].sort(), ['mine.example.com', 'shared.example.com']);
    assert.equal(out.policy, 'REGISTRY_ONLY');
  });

  it('a Sidecar selecting this workload wins over the namespace default', () => {
    const ns = res('Sidecar', 'default', { egress: [{ hosts: ['*/*'] }], outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } });
    const mine = res('Sidecar', 'sleep', { workloadSelector: { labels: { app: 'sleep' } }, egress: [{ hosts: ['other/theirs.example.com'] }], outboundTrafficPolicy: { mode: 'ALLOW_ANY' } });
    const out = table([ns, mine]);
    assert.deepEqual([...out.http.get(80)!.exact.keys()], ['theirs.example.com']);
    assert.equal(out.policy, 'ALLOW_ANY');
  });
});

describe('sidecar outbound compile: hosts a request may carry', () => {
  it('a Service is reached by FQDN, short names in the proxy\'s namespace, and its ClusterIP; TCP by ClusterIP and port', () => {
    const id = { labels: {}, namespace: 'default', portMap: new Map<number, number>(), bind: '::', capturePort: 15001 };
    const svc = res('Service', 'my-nginx', { selector: { run: 'my-nginx' }, clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }, { name: 'tcp-db', port: 5432 }] });
    const we = res('WorkloadEntry', 'nginx-pod', { address: '10.244.0.5', labels: { run: 'my-nginx' } });
    const out = compile(set([svc, we]), id, 1).snapshot.listeners.get(15001)!.outbound!;
    const hosts = [...out.http.get(80)!.exact.keys()].sort();
    assert.deepEqual(hosts, ['10.96.0.10', 'my-nginx', 'my-nginx.default', 'my-nginx.default.svc', 'my-nginx.default.svc.cluster.local']);
    assert.equal(out.tcp.get('10.96.0.10|5432'), 'outbound|5432||my-nginx.default.svc.cluster.local');
    assert.ok(out.httpPorts.has(80));
    assert.equal(out.policy, 'ALLOW_ANY');
  });
});
