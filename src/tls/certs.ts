// Development certificates (`meshgate certs`, the README's HTTPS demo, the tests): a CA and leaves
// signed by it, ECDSA P-256 with SHA-256, made with @peculiar/x509 over Node's WebCrypto.

import 'reflect-metadata'; // @peculiar/x509's dependency injection needs it, before the import below
import { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as never);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface Issued {
  readonly cert: string;
  readonly key: string;
}

export interface CaMaterial extends Issued {
  readonly keys: CryptoKeyPair;
  readonly certificate: x509.X509Certificate;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function validity(days: number, from?: Date): { notBefore: Date; notAfter: Date } {
  const notBefore = from ?? new Date(Date.now() - 60_000); // a minute of slack for clock skew
  return { notBefore, notAfter: new Date(notBefore.getTime() + days * 86_400_000) };
}

function serial(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');
}

export async function makeCa(opts: { commonName: string; days: number }): Promise<CaMaterial> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${opts.commonName}, O=meshgate development CA`,
    ...validity(opts.days),
    keys: keys as never,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
    ],
  });
  return { cert: certificate.toString('pem'), key: await keyPem(keys.privateKey), keys, certificate };
}

const USAGES = {
  server: [x509.ExtendedKeyUsage.serverAuth],
  client: [x509.ExtendedKeyUsage.clientAuth],
  both: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
};

/**
 * A certificate for DNS names, IP addresses and URIs (a mesh workload's spiffe:// identity), signed
 * by `ca`: a server's, a client's, or both (a mesh proxy is each in turn).
 */
export async function makeLeaf(
  ca: CaMaterial,
  opts: { commonName: string; names: readonly string[]; uris?: readonly string[]; days: number; usage: keyof typeof USAGES; validFrom?: Date },
): Promise<Issued> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const sans = [
    ...opts.names.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n })),
    ...(opts.uris ?? []).map((u) => ({ type: 'url' as const, value: u })),
  ];
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.commonName}`,
    issuer: ca.certificate.subject,
    ...validity(opts.days, opts.validFrom),
    publicKey: keys.publicKey as never,
    signingKey: ca.keys.privateKey as never,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension(USAGES[opts.usage]),
      ...(sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey as never),
    ],
  });
  return { cert: certificate.toString('pem'), key: await keyPem(keys.privateKey) };
}

/** Load a CA made earlier (PEM certificate and PKCS#8 key), to sign more leaves with it. */
export async function loadCa(certPem: string, keyPem: string): Promise<CaMaterial> {
  const certificate = new x509.X509Certificate(certPem);
  const der = x509.PemConverter.decodeFirst(keyPem);
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
  const publicKey = await certificate.publicKey.export(ALG, ['verify']) as unknown as CryptoKey;
  return { cert: certPem, key: keyPem, keys: { privateKey, publicKey }, certificate };
}
