// Config files on disk: a ConfigMap mounted as a directory (kubelet's layout of symbolic links) is
// read once per key, and the atomic swap kubelet does on an update is seen by the watcher.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { FileWatcher, listConfigFiles, signatureOf } from '../../../src/sources/files';
import { loadConfig } from '../../../src/config/pipeline';
import { formatIssue } from '../../../src/config/format';
import { waitFor } from '../../helpers/upstream';

const gateway = (host: string) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["${host}"]
`;
const service = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80}]
`;

/**
 * What kubelet writes for a ConfigMap volume: the data in a timestamped directory, `..data` a link to
 * it, and one link per key through `..data`.
 */
function writeVersion(dir: string, stamp: string, files: Record<string, string>): void {
  const versioned = path.join(dir, stamp);
  fs.mkdirSync(versioned);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(versioned, name), text);
}

function mountConfigMap(dir: string, files: Record<string, string>): void {
  writeVersion(dir, '..2024_01_01_00_00_00.123', files);
  fs.symlinkSync('..2024_01_01_00_00_00.123', path.join(dir, '..data'));
  for (const name of Object.keys(files)) fs.symlinkSync(path.join('..data', name), path.join(dir, name));
}

/** kubelet's update: a new timestamped directory, `..data_tmp` pointing at it renamed over `..data`, the old one removed. */
function swapConfigMap(dir: string, stamp: string, files: Record<string, string>): void {
  const old = fs.readlinkSync(path.join(dir, '..data'));
  writeVersion(dir, stamp, files);
  fs.symlinkSync(stamp, path.join(dir, '..data_tmp'));
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  fs.rmSync(path.join(dir, old), { recursive: true });
}

describe('config files: a ConfigMap mounted as a directory', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshgate-cm-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lists each key once, by its top-level name (not through ..data or the timestamped directory)', () => {
    mountConfigMap(dir, { 'gw.yaml': gateway('a.example.com'), 'svc.yaml': service });
    assert.deepEqual(listConfigFiles([dir]), [path.join(dir, 'gw.yaml'), path.join(dir, 'svc.yaml')]);
  });

  it('loads it with no duplicate errors', async () => {
    mountConfigMap(dir, { 'gw.yaml': gateway('a.example.com'), 'svc.yaml': service });
    const loaded = await loadConfig([dir]);
    assert.deepEqual(loaded.issues.map(formatIssue), []);
    assert.equal(loaded.resourceCount, 2);
    assert.deepEqual(loaded.set!.gateways[0]!.spec.servers[0]!.hosts, ['a.example.com']);
  });

  it('reads a file named twice (the directory and the file itself, or two links to it) once', () => {
    fs.writeFileSync(path.join(dir, 'gw.yaml'), gateway('a.example.com'));
    fs.symlinkSync('gw.yaml', path.join(dir, 'alias.yaml'));
    assert.deepEqual(listConfigFiles([dir, path.join(dir, 'gw.yaml')]), [path.join(dir, 'alias.yaml')]);
  });

  it('reads a file with two hard links once, and the signature follows its content', () => {
    fs.writeFileSync(path.join(dir, 'gw.yaml'), gateway('a.example.com'));
    fs.linkSync(path.join(dir, 'gw.yaml'), path.join(dir, 'same.yaml'));
    fs.writeFileSync(path.join(dir, 'svc.yaml'), service);
    assert.deepEqual(listConfigFiles([dir]), [path.join(dir, 'gw.yaml'), path.join(dir, 'svc.yaml')]);
    const before = signatureOf([dir]);
    fs.appendFileSync(path.join(dir, 'same.yaml'), '# edited through the other name\n');
    assert.notEqual(signatureOf([dir]), before);
  });

  it('lists a named file whatever its name, and under a directory only YAML and JSON files, in subdirectories too', () => {
    fs.writeFileSync(path.join(dir, 'gw.yaml'), gateway('a.example.com'));
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not config');
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'svc.json'), '{}');
    const named = path.join(dir, 'sub', 'extra.conf');
    fs.writeFileSync(named, service);
    assert.deepEqual(listConfigFiles([dir, named]), [path.join(dir, 'gw.yaml'), path.join(dir, 'sub', 'svc.json'), named]);
  });

  it('skips what it cannot stat (a dangling link) and lists the rest', () => {
    fs.writeFileSync(path.join(dir, 'gw.yaml'), gateway('a.example.com'));
    fs.symlinkSync('nowhere.yaml', path.join(dir, 'broken.yaml'));
    assert.deepEqual(listConfigFiles([dir, path.join(dir, 'missing.yaml')]), [path.join(dir, 'gw.yaml')]);
  });

  it('after an atomic swap of ..data the signature changes and the new version loads', async () => {
    mountConfigMap(dir, { 'gw.yaml': gateway('a.example.com') });
    const before = signatureOf([dir]);
    swapConfigMap(dir, '..2024_01_01_00_05_00.456', { 'gw.yaml': gateway('b.example.com') });
    assert.notEqual(signatureOf([dir]), before);
    const loaded = await loadConfig([dir]);
    assert.deepEqual(loaded.issues.map(formatIssue), []);
    assert.deepEqual(loaded.set!.gateways[0]!.spec.servers[0]!.hosts, ['b.example.com']);
  });

  it('the watcher reports the swap', async () => {
    mountConfigMap(dir, { 'gw.yaml': gateway('a.example.com') });
    let changes = 0;
    const w = new FileWatcher([dir], () => { changes += 1; }, pino({ level: 'silent' }), 50);
    w.start();
    try {
      swapConfigMap(dir, '..2024_01_01_00_05_00.456', { 'gw.yaml': gateway('b.example.com') });
      await waitFor(() => changes > 0, { timeoutMs: 3000 });
    } finally {
      w.stop();
    }
  });
});
