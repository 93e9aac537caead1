// `meshgate certs`: a development CA (reused when it already exists in the output directory) and
// server/client certificates signed by it, written as PEM files with a kubernetes.io/tls Secret.

import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { loadCa, makeCa, makeLeaf, type CaMaterial } from './certs';

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

/** Write the files; keys are readable by the owner only. Returns the paths written. */
export async function writeDevCertificates(o: DevCertOptions): Promise<string[]> {
  fs.mkdirSync(o.out, { recursive: true });
  const file = (name: string) => path.join(o.out, name);
  const written: string[] = [];
  const write = (name: string, text: string, secret = false) => {
    fs.writeFileSync(file(name), text, { mode: secret ? 0o600 : 0o644 });
    if (secret) fs.chmodSync(file(name), 0o600); // an existing file keeps its mode otherwise
    written.push(file(name));
  };
  let ca: CaMaterial;
  if (!o.newCa && fs.existsSync(file('ca.crt')) && fs.existsSync(file('ca.key'))) {
    ca = await loadCa(fs.readFileSync(file('ca.crt'), 'utf8'), fs.readFileSync(file('ca.key'), 'utf8'));
  } else {
    ca = await makeCa({ commonName: o.caName, days: o.days });
    write('ca.crt', ca.cert);
    write('ca.key', ca.key, true);
  }
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
