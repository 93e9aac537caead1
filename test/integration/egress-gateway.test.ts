// The egress-gateway hop of the walkthroughs (seed E4 and E5), with the YAML read unchanged from the
// walkthrough text: meshgate runs with `istio=egressgateway`; the sidecar's side of each hop is played
// by the test (sending what the sidecar sends). Stand-ins for edition.cnn.com listen on 127.0.0.2:80
// (HTTP, answering 301 to https as CNN does) and :443 (TLS), found through a test DNS server.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { TestDnsServer } from '../helpers/dns-server';
import { makeCa, makeLeaf, type CaPem } from '../helpers/certs';
import { curl, waitFor } from '../helpers/upstream';

const SEED = path.resolve(__dirname, '../../../../shared/seed-scenarios/source/000_54cdee40cf656adf.txt');

/** The YAML block that follows `# <name>` in the walkthrough text (it ends at the first blank line). */
function seedYaml(name: string): string {
  const lines = fs.readFileSync(SEED, 'utf8').split('\n');
  const start = lines.indexOf(`# ${name}`);
  assert.ok(start >= 0, `no ${name} in the walkthrough`);
  const end = lines.indexOf('', start);
  return lines.slice(start + 1, end).join('\n') + '\n';
}

describe('egress gateway hop of the walkthroughs (E4 HTTP, E5 TLS passthrough)', function () {
  this.timeout(60_000);
  let dns: TestDnsServer;
  let ca: CaPem;
  let dir: string;
  let plain: http.Server;
  let secure: https.Server;

  before(async function () {
    if (process.getuid?.() !== 0) {
      console.warn('    SKIPPED egress gateway tests: the stand-ins for edition.cnn.com need ports 80 and 443 (root)');
      this.skip();
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-egress-'));
    ca = await makeCa(dir, 'ca');
    const leaf = await makeLeaf(dir, ca, 'cnn', ['edition.cnn.com']);
    plain = http.createServer((req, res) => res.writeHead(301, { location: `https://edition.cnn.com${req.url}`, 'content-length': 0 }).end());
    secure = https.createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => res.end(`politics via ${req.headers.host}\n`));
    await new Promise<void>((r) => plain.listen(80, '127.0.0.2', r));
    await new Promise<void>((r) => secure.listen(443, '127.0.0.2', r));
    dns = await new TestDnsServer().start();
    dns.setRecords('edition.cnn.com', { a: ['127.0.0.2'], ttl: 30 });
  });
  after(async () => {
    plain?.close();
    secure?.close();
    await dns?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function egress(files: Record<string, string>): Promise<TestGateway> {
    return startGateway(files, { serverPorts: [80, 443], opts: { labels: { istio: 'egressgateway' }, dnsServers: [dns.address] } });
  }

  it('E4: the HTTP hop (cnn-service-entry, cnn-egress-gateway, cnn-virtual) reaches edition.cnn.com and logs it', async () => {
    const gw = await egress({
      'cnn-service-entry.yaml': seedYaml('cnn-service-entry.yaml'),
      'cnn-egress-gateway.yaml': seedYaml('cnn-egress-gateway.yaml'),
      'cnn-virtual.yaml': seedYaml('cnn-virtual.yaml'),
    });
    try {
      await waitFor(() => gw.app.registry.get('outbound|80||edition.cnn.com')!.endpoints.length > 0, { timeoutMs: 5000 });
      const r = await curl(['-s', '-i', '-H', 'Host: edition.cnn.com', `http://127.0.0.1:${gw.port(80)}/politics`]);
      assert.match(r.stdout, /^HTTP\/1\.1 301 Moved Permanently\r\n/);
      assert.match(r.stdout, /\r\nlocation: https:\/\/edition\.cnn\.com\/politics\r\n/);
      const lines = await gw.waitForLines(1);
      assert.ok(lines.some((l) => /"GET \/politics HTTP\/1\.1" 301 - via_upstream .* "edition\.cnn\.com" "127\.0\.0\.2:80" outbound\|80\|\|edition\.cnn\.com /.test(l)), lines.join('\n'));
      // The egress gateway's own allow-list: a host its Gateway and VirtualService do not name is refused.
      const other = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: www.example.com', `http://127.0.0.1:${gw.port(80)}/`]);
      assert.equal(other.stdout, '404');
    } finally {
      await gw.stop();
    }
  });

  it('E5: the TLS hop (cnn-https-service-entry, cnn-https-service-rule) passes TLS through by SNI and logs the TCP line', async () => {
    const gw = await egress({
      'cnn-https-service-entry.yaml': seedYaml('cnn-https-service-entry.yaml'),
      'cnn-https-service-rule.yaml': seedYaml('cnn-https-service-rule.yaml'),
    });
    try {
      await waitFor(() => gw.app.registry.get('outbound|443||edition.cnn.com')!.endpoints.length > 0, { timeoutMs: 5000 });
      const r = await curl(['-s', '--resolve', `edition.cnn.com:${gw.port(443)}:127.0.0.1`, '--cacert', ca.certFile, `https://edition.cnn.com:${gw.port(443)}/politics`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `politics via edition.cnn.com:${gw.port(443)}\n`);
      await waitFor(() => { gw.app.accessLog.flush(); return gw.accessLines().some((l) => l.endsWith(' edition.cnn.com -')); }, { timeoutMs: 3000 });
      const line = gw.accessLines().find((l) => l.endsWith(' edition.cnn.com -'))!;
      assert.match(line, /"- - -" 0 - - - "-" \d+ \d+ \d+ - "-" "-" "-" "-" "127\.0\.0\.2:443" outbound\|443\|\|edition\.cnn\.com /);
      const unknown = await curl(['-s', '--resolve', `www.example.com:${gw.port(443)}:127.0.0.1`, '-k', `https://www.example.com:${gw.port(443)}/`]);
      assert.notEqual(unknown.code, 0, 'an SNI the egress gateway does not allow is closed');
    } finally {
      await gw.stop();
    }
  });
});
