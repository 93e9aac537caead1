// `meshgate certs`: a development CA (reused when it already exists in the output directory) and
// server/client certificates signed by it, written as PEM files with a kubernetes.io/tls Secret; with
// --mesh, a proxy's mesh identity (spiffe://) signed by a mesh CA shared through --ca-dir.

import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { loadCa, makeCa, makeLeaf, type CaMaterial } from './certs';
import { MESH_CERT_NAMES } from './secrets';

export interface DevCertOptions {
  readonly out: string;
  readonly serverNames: readonly string[];
  readonly clientName?: string;
  readonly caName: string;
  readonly days: number;
  readonly secretName: string;
  readonly secretNamespace: string;
  readonly newCa: boolean;
}

type Writer = (name: string, text: string, secret?: boolean) => void;

function writerFor(dir: string, written: string[]): Writer {
  fs.mkdirSync(dir, { recursive: true });
  return (name, text, secret = false) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text, { mode: secret ? 0o600 : 0o644 });
    if (secret) fs.chmodSync(file, 0o600); // an existing file keeps its mode otherwise
    written.push(file);
  };
}

/** The CA kept in `dir` (ca.crt, ca.key), made and written there when missing or when asked anew. */
async function caIn(dir: string, o: { caName: string; days: number; newCa: boolean }, write: Writer): Promise<CaMaterial> {
  const file = (name: string) => path.join(dir, name);
  if (!o.newCa && fs.existsSync(file('ca.crt')) && fs.existsSync(file('ca.key'))) {
    return loadCa(fs.readFileSync(file('ca.crt'), 'utf8'), fs.readFileSync(file('ca.key'), 'utf8'));
  }
  const ca = await makeCa({ commonName: o.caName, days: o.days });
  write('ca.crt', ca.cert);
  write('ca.key', ca.key, true);
  return ca;
}

export interface MeshCertOptions {
  readonly out: string;
  /** Where the mesh CA lives (shared by every proxy of the mesh). */
  readonly caDir: string;
  readonly identity: string;
  readonly dnsNames: readonly string[];
  readonly caName: string;
  readonly days: number;
  readonly newCa: boolean;
}

/**
 * A proxy's mesh identity, in Istio's file-mounted layout (`run --mesh-certs DIR`): root-cert.pem (the
 * mesh CA), cert-chain.pem (a certificate for the spiffe:// identity, for both ends of mTLS), key.pem.
 */
export async function writeMeshCertificates(o: MeshCertOptions): Promise<string[]> {
  const written: string[] = [];
  const ca = await caIn(o.caDir, o, writerFor(o.caDir, written));
  const leaf = await makeLeaf(ca, { commonName: o.identity, names: o.dnsNames, uris: [o.identity], days: o.days, usage: 'both' });
  const write = writerFor(o.out, written);
  write(MESH_CERT_NAMES.ca, ca.cert);
  write(MESH_CERT_NAMES.cert, leaf.cert);
  write(MESH_CERT_NAMES.key, leaf.key, true);
  return written;
}

/** Write the files; keys are readable by the owner only. Returns the paths written. */
export async function writeDevCertificates(o: DevCertOptions): Promise<string[]> {
  const written: string[] = [];
  const write = writerFor(o.out, written);
  const ca = await caIn(o.out, o, write);
  const server = await makeLeaf(ca, { commonName: o.serverNames[0]!, names: o.serverNames, days: o.days, usage: 'server' });
  write('server.crt', server.cert);
  write('server.key', server.key, true);
  if (o.clientName) {
    const client = await makeLeaf(ca, { commonName: o.clientName, names: [o.clientName], days: o.days, usage: 'client' });
    write('client.crt', client.cert);
    write('client.key', client.key, true);
  }
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: o.secretName, namespace: o.secretNamespace },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': b64(server.cert), 'tls.key': b64(server.key), 'ca.crt': b64(ca.cert) },
  };
  write('secret.yaml', stringify(secret, { lineWidth: 0 }), true);
  return written;
}
