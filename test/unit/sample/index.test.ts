import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { SAMPLE_PORTS, startSampleBackends, type SamplePorts } from '../../../src/sample';
import { freePort, httpGet } from '../../helpers/upstream';

async function freePorts(): Promise<SamplePorts> {
  return {
    httpbin: await freePort(),
    helloworldV1: await freePort(),
    helloworldV2: await freePort(),
    tcpEchoV1: await freePort(),
    tcpEchoV2: await freePort(),
  };
}

function tcpLine(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const sock = net.connect(port, '127.0.0.1', () => sock.end(`${line}\n`));
    sock.on('data', (c: Buffer) => void (got += c.toString()));
    sock.on('close', () => resolve(got));
    sock.on('error', reject);
  });
}

/** Resolves once a TCP connection opens (and closes it again), rejects with the connect error. */
function connect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.destroy();
      resolve();
    });
    sock.on('error', reject);
  });
}

describe('sample backends', () => {
  it('the default config routes to the sample ports', () => {
    const configDir = path.resolve(__dirname, '../../../../config');
    const text = fs.readdirSync(configDir).map((f) => fs.readFileSync(path.join(configDir, f), 'utf8')).join('\n');
    for (const port of [SAMPLE_PORTS.httpbin, SAMPLE_PORTS.helloworldV1, SAMPLE_PORTS.helloworldV2]) assert.ok(text.includes(String(port)), `config/ never names ${port}`);
  });

  it('starts httpbin, helloworld v1/v2 and tcp-echo one/two, and closes them', async () => {
    const ports = await freePorts();
    const samples = await startSampleBackends({ ports });
    try {
      assert.equal(samples.describe().length, 5);
      assert.equal((await httpGet(ports.httpbin, '/status/200')).headers['x-served-by'], 'httpbin');
      assert.equal((await httpGet(ports.helloworldV1, '/hello')).body, 'Hello version: helloworld-v1\n');
      assert.equal((await httpGet(ports.helloworldV2, '/hello')).body, 'Hello version: helloworld-v2\n');
      assert.equal(await tcpLine(ports.tcpEchoV1, 'hi'), 'one hi\n');
      assert.equal(await tcpLine(ports.tcpEchoV2, 'hi'), 'two hi\n');
    } finally {
      await samples.close();
    }
    for (const port of Object.values(ports)) await assert.rejects(connect(port), /ECONNREFUSED/);
  });

  it('a port in use fails the start and leaves nothing listening', async () => {
    const ports = await freePorts();
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(ports.tcpEchoV2, '127.0.0.1', r));
    try {
      await assert.rejects(startSampleBackends({ ports }), /EADDRINUSE/);
      for (const port of [ports.httpbin, ports.helloworldV1, ports.helloworldV2, ports.tcpEchoV1]) await assert.rejects(connect(port), /ECONNREFUSED/);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});
