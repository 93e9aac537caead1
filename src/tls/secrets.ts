// Where a terminating Gateway server's certificate comes from, resolved at compile time (pure):
// `credentialName` names a Secret in the gateway's own namespace (kubernetes.io/tls keys `tls.crt`,
// `tls.key`, `ca.crt`, or Istio's generic keys `cert`, `key`, `cacert`; for MUTUAL the CA may also
// be in a separate `<name>-cacert` Secret), or `serverCertificate` / `privateKey` /
// `caCertificates` name files the TLS layer reads (and re-reads when they change).

import type { SecretResource, ServerTLSSettings } from '../config/types';

export type ServerCredentialSource =
  | { readonly kind: 'secret'; readonly name: string; readonly cert: string; readonly key: string; readonly ca?: string }
  | { readonly kind: 'files'; readonly cert: string; readonly key: string; readonly ca?: string }
  | { readonly kind: 'missing'; readonly message: string };

/** A Secret's value for the first key present, decoded (`data` is base64, `stringData` plain). */
export function secretValue(secret: SecretResource, keys: readonly string[]): string | undefined {
  for (const k of keys) {
    const plain = secret.spec.stringData?.[k];
    if (typeof plain === 'string') return plain;
    const encoded = secret.spec.data?.[k];
    if (typeof encoded === 'string') return Buffer.from(encoded, 'base64').toString('utf8');
  }
  return undefined;
}

const CERT_KEYS = ['tls.crt', 'cert'];
const KEY_KEYS = ['tls.key', 'key'];
const CA_KEYS = ['ca.crt', 'cacert'];

export function needsClientCertificate(tls: ServerTLSSettings | undefined): boolean {
  return tls?.mode === 'MUTUAL' || tls?.mode === 'OPTIONAL_MUTUAL';
}

export function serverCredentials(tls: ServerTLSSettings | undefined, secrets: readonly SecretResource[], namespace: string): ServerCredentialSource {
  const mutual = needsClientCertificate(tls);
  const name = tls?.credentialName ?? tls?.credentialNames?.[0];
  if (name) {
    const find = (n: string) => secrets.find((s) => s.metadata.name === n && s.metadata.namespace === namespace);
    const secret = find(name);
    if (!secret) return { kind: 'missing', message: `credentialName ${name}: no Secret ${namespace}/${name}` };
    const cert = secretValue(secret, CERT_KEYS);
    const key = secretValue(secret, KEY_KEYS);
    if (!cert || !key) return { kind: 'missing', message: `Secret ${namespace}/${name} has no tls.crt/tls.key (or cert/key)` };
    const caSecret = find(`${name}-cacert`);
    const ca = secretValue(secret, CA_KEYS) ?? (caSecret ? secretValue(caSecret, CA_KEYS) : undefined);
    if (mutual && !ca) return { kind: 'missing', message: `MUTUAL needs a CA: ca.crt in Secret ${namespace}/${name} or a Secret ${namespace}/${name}-cacert` };
    return { kind: 'secret', name: `${namespace}/${name}`, cert, key, ...(ca ? { ca } : {}) };
  }
  if (tls?.serverCertificate && tls.privateKey) {
    if (mutual && !tls.caCertificates) return { kind: 'missing', message: 'MUTUAL needs caCertificates' };
    return { kind: 'files', cert: tls.serverCertificate, key: tls.privateKey, ...(tls.caCertificates ? { ca: tls.caCertificates } : {}) };
  }
  return { kind: 'missing', message: 'neither credentialName nor serverCertificate/privateKey is set' };
}
