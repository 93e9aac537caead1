// Development certificates for TLS tests, made by the same code as `meshgate certs`
// (src/tls/certs.ts) and written to files for curl and openssl.

import fs from 'node:fs';
import path from 'node:path';
import * as certs from '../../src/tls/certs';

export interface Pem {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
}

export interface CaPem extends Pem {
  readonly material: certs.CaMaterial;
}

function write(dir: string, name: string, cert: string, key: string): Pem {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  fs.writeFileSync(certFile, cert);
  fs.writeFileSync(keyFile, key, { mode: 0o600 });
  return { certFile, keyFile, cert, key };
}

export async function makeCa(dir: string, name: string): Promise<CaPem> {
  const material = await certs.makeCa({ commonName: name, days: 2 });
  return { ...write(dir, name, material.cert, material.key), material };
}

/** A leaf for DNS names, signed by `ca`; `client` makes a client certificate. */
export async function makeLeaf(dir: string, ca: CaPem, name: string, dnsNames: readonly string[], client = false): Promise<Pem> {
  const leaf = await certs.makeLeaf(ca.material, { commonName: dnsNames[0] ?? name, names: dnsNames, days: 2, usage: client ? 'client' : 'server' });
  return write(dir, name, leaf.cert, leaf.key);
}

/** A kubernetes.io/tls Secret as `kubectl create secret tls` writes it (plus ca.crt when given). */
export function tlsSecretYaml(name: string, namespace: string, leaf: Pem, ca?: Pem): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: ${namespace}}
type: kubernetes.io/tls
data:
  tls.crt: ${b64(leaf.cert)}
  tls.key: ${b64(leaf.key)}
${ca ? `  ca.crt: ${b64(ca.cert)}\n` : ''}---
`;
}
