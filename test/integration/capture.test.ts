// Transparent capture in a network namespace the test makes and removes: `meshgate iptables --apply`
// installs istio-iptables' rules, a capture listener running as uid 1337 recovers each redirected
// connection's original destination (IPv4 and IPv6) through the SO_ORIGINAL_DST addon, the proxy's
// own traffic is not captured, a direct connection to the listener is caught by the loop guard, and
// `--cleanup` removes the rules. Needs root, ip, iptables and the addon: skipped loudly otherwise.

import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MESHGATE_BIN, runMeshgate } from '../helpers/gateway';
import { missingForCapture } from '../helpers/netns';

const NS = `mgcap${process.pid}`;
const MODULE = path.resolve(__dirname, '../../src/sidecar/original-dst.js');


function inNs(args: string[], timeoutMs = 5000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('ip', ['netns', 'exec', NS, ...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
    child.stdin?.end(); // nc -N sends its FIN once its input ends
  });
}

const LISTENER = `
const net = require('net');
const { originalDestination, isOwnListener } = require(${JSON.stringify(MODULE)});
const server = net.createServer((s) => {
  s.on('error', () => {});
  const dst = originalDestination(s);
  if (dst instanceof Error) return s.end('error ' + (dst.errno ?? dst.message) + '\\n');
  if (isOwnListener(dst, s, new Set([15001]))) return s.end('loop\\n');
  s.end('orig=' + dst.address + ' ' + dst.port + ' uid=' + process.getuid() + '\\n');
});
server.listen({ port: 15001, host: '::' }, () => console.log('ready'));
`;

describe('transparent capture (netns, iptables, SO_ORIGINAL_DST)', function () {
  this.timeout(60_000);
  let listener: ChildProcess | undefined;
  let dir: string;
  let made = false;

  before(function () {
    const missing = missingForCapture();
    if (missing.length > 0) {
      console.warn(`    SKIPPED transparent capture tests: missing ${missing.join(', ')}`);
      this.skip();
    }
  });

  before(async function () {
    if (this.currentTest?.isPending()) return;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-capture-'));
    fs.chmodSync(dir, 0o755);
    fs.writeFileSync(path.join(dir, 'listener.js'), LISTENER, { mode: 0o644 });
    execFileSync('ip', ['netns', 'add', NS]);
    made = true;
    const ip = (...a: string[]) => execFileSync('ip', ['-n', NS, ...a]);
    ip('link', 'set', 'lo', 'up');
    // A veth pair inside the namespace gives 10.9.9.0/24 and fd09::/64 a route (nothing answers there).
    ip('link', 'add', 'cap0', 'type', 'veth', 'peer', 'name', 'cap1');
    ip('addr', 'add', '10.9.9.1/24', 'dev', 'cap0');
    ip('addr', 'add', 'fd09::1/64', 'dev', 'cap0', 'nodad');
    ip('link', 'set', 'cap0', 'up');
    ip('link', 'set', 'cap1', 'up');
    const applied = await inNs([process.execPath, MESHGATE_BIN, 'iptables', '--apply', '--ipv6']);
    assert.equal(applied.code, 0, applied.out);
    listener = spawn('ip', ['netns', 'exec', NS, 'setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', process.execPath, path.join(dir, 'listener.js')], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => reject(new Error(`capture listener did not start: ${out}`)), 10_000);
      listener!.stdout!.on('data', (c: Buffer) => { out += c.toString(); if (out.includes('ready')) { clearTimeout(t); resolve(); } });
      listener!.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
    });
  });

  after(() => {
    listener?.kill('SIGKILL');
    if (made) execFileSync('ip', ['netns', 'del', NS]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('applies istio-iptables\' rules in the namespace, IPv4 and IPv6', async () => {
    const v4 = (await inNs(['iptables-save', '-t', 'nat'])).out;
    const v6 = (await inNs(['ip6tables-save', '-t', 'nat'])).out;
    for (const saved of [v4, v6]) {
      assert.match(saved, /^-A OUTPUT -j ISTIO_OUTPUT$/m);
      assert.match(saved, /^-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001$/m);
      assert.match(saved, /^-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN$/m);
      assert.match(saved, /^-A ISTIO_OUTPUT -j ISTIO_REDIRECT$/m);
      assert.doesNotMatch(saved, /PREROUTING -p tcp -j ISTIO_INBOUND/, 'no inbound capture unless asked');
    }
  });

  it('recovers the original IPv4 and IPv6 destinations of redirected connections', async () => {
    const v4 = await inNs(['nc', '-N', '-w', '3', '10.9.9.9', '8080'], 8000);
    assert.equal(v4.out.trim(), 'orig=10.9.9.9 8080 uid=1337');
    const v6 = await inNs(['nc', '-N', '-w', '3', 'fd09::9', '443'], 8000);
    assert.equal(v6.out.trim(), 'orig=fd09::9 443 uid=1337');
  });

  it('leaves the proxy\'s own (uid 1337) connections alone', async () => {
    const own = await inNs(['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', 'nc', '-N', '-w', '1', '10.9.9.9', '8080'], 8000);
    assert.doesNotMatch(own.out, /orig=/);
  });

  it('the loop guard catches a direct connection to the capture port', async () => {
    const direct = await inNs(['nc', '-N', '-w', '3', '127.0.0.1', '15001'], 8000);
    assert.equal(direct.out.trim(), 'loop');
  });

  it('--cleanup removes every rule and chain', async () => {
    const r = await inNs([process.execPath, MESHGATE_BIN, 'iptables', '--cleanup', '--ipv6']);
    assert.equal(r.code, 0, r.out);
    const v4 = await inNs(['iptables-save', '-t', 'nat']);
    const v6 = await inNs(['ip6tables-save', '-t', 'nat']);
    assert.doesNotMatch(v4.out + v6.out, /ISTIO_/);
  });

  it('`meshgate iptables --help` names the flags', async () => {
    const r = await runMeshgate(['iptables', '--help']);
    assert.equal(r.code, 0);
    for (const f of ['--apply', '--cleanup', '--proxy-uid', '--exclude-outbound-cidrs', '--include-inbound-ports']) assert.ok(r.stdout.includes(f), f);
  });
});
