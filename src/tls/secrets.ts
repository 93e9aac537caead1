// Where a terminating Gateway server's certificate comes from, resolved at compile time (pure):
// `credentialName` names a Secret in the gateway's own namespace (kubernetes.io/tls keys `tls.crt`,
// `tls.key`, `ca.crt`, or Istio's generic keys `cert`, `key`, `cacert`), or `serverCertificate` /
// `privateKey` / `caCertificates` name files the TLS layer reads (and re-reads when they change).
// The CA that checks peers comes, as in Istio, from a separate `<name>-cacert` Secret when one
// exists, else from `<name>` itself; in either, key `cacert` wins over `ca.crt`.

import type { ClientTLSSettings, SecretResource, ServerTLSSettings } from '../config/types';

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
// Istio's order: the generic `cacert` before the kubernetes.io/tls `ca.crt`.
const CA_KEYS = ['cacert', 'ca.crt'];

type FindSecret = (name: string) => SecretResource | undefined;

/**
 * The CA for `credentialName` `name` as Istio resolves it: the Secret `<name>-cacert` if it exists
 * (even when it lacks a CA key: Istio does not fall back then), else the Secret `<name>`.
 */
function caCertificate(find: FindSecret, namespace: string, name: string): { readonly ca?: string; readonly secret?: SecretResource; readonly from: string } {
  const separate = find(`${name}-cacert`);
  const secret = separate ?? find(name);
  const from = `${namespace}/${separate ? `${name}-cacert` : name}`;
  const ca = secret ? secretValue(secret, CA_KEYS) : undefined;
  return { ...(ca ? { ca } : {}), ...(secret ? { secret } : {}), from };
}

export function needsClientCertificate(tls: ServerTLSSettings | undefined): boolean {
  return tls?.mode === 'MUTUAL' || tls?.mode === 'OPTIONAL_MUTUAL' || tls?.mode === 'ISTIO_MUTUAL';
}

/**
 * The mesh identity that stands in for istiod's certificates (`--mesh-certs DIR`, Istio's file-mounted
 * layout): this proxy's certificate chain and key, and the mesh root every peer must chain to.
 * ISTIO_MUTUAL on either side uses them.
 */
export interface MeshCertFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export const MESH_CERT_NAMES = { cert: 'cert-chain.pem', key: 'key.pem', ca: 'root-cert.pem' } as const;

export function serverCredentials(
  tls: ServerTLSSettings | undefined, secrets: readonly SecretResource[], namespace: string, mesh?: MeshCertFiles,
): ServerCredentialSource {
  if (tls?.mode === 'ISTIO_MUTUAL') {
    return mesh ? { kind: 'files', ...mesh } : { kind: 'missing', message: 'ISTIO_MUTUAL needs the mesh certificates (--mesh-certs)' };
  }
  const mutual = needsClientCertificate(tls);
  const name = tls?.credentialName ?? tls?.credentialNames?.[0];
  if (name) {
    const find: FindSecret = (n) => secrets.find((s) => s.metadata.name === n && s.metadata.namespace === namespace);
    const secret = find(name);
    if (!secret) return { kind: 'missing', message: `credentialName ${name}: no Secret ${namespace}/${name}` };
    const cert = secretValue(secret, CERT_KEYS);
    const key = secretValue(secret, KEY_KEYS);
    if (!cert || !key) return { kind: 'missing', message: `Secret ${namespace}/${name} has no tls.crt/tls.key (or cert/key)` };
    const { ca, from } = caCertificate(find, namespace, name);
    if (mutual && !ca) {
      return { kind: 'missing', message: `MUTUAL needs a CA: Secret ${from} has no cacert or ca.crt (the CA is read from Secret ${namespace}/${name}-cacert when it exists, else from ${namespace}/${name})` };
    }
    return { kind: 'secret', name: `${namespace}/${name}`, cert, key, ...(ca ? { ca } : {}) };
  }
  if (tls?.serverCertificate && tls.privateKey) {
    if (mutual && !tls.caCertificates) return { kind: 'missing', message: 'MUTUAL needs caCertificates' };
    return { kind: 'files', cert: tls.serverCertificate, key: tls.privateKey, ...(tls.caCertificates ? { ca: tls.caCertificates } : {}) };
  }
  return { kind: 'missing', message: 'neither credentialName nor serverCertificate/privateKey is set' };
}

/**
 * TLS toward an upstream (DestinationRule `trafficPolicy.tls` SIMPLE or MUTUAL), resolved: PEM text
 * from a Secret in the gateway's namespace, or file paths read when the connection pool is made.
 * Without a CA the system roots verify the upstream, as Istio does since 1.10
 * (VERIFY_CERTIFICATE_AT_CLIENT); the name checked is `sni`, else the service host.
 */
export interface UpstreamTls {
  readonly mode: 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  readonly sni?: string;
  readonly subjectAltNames: readonly string[];
  readonly insecureSkipVerify: boolean;
  readonly material:
    | { readonly kind: 'secret'; readonly name: string; readonly ca?: string; readonly cert?: string; readonly key?: string }
    | { readonly kind: 'files'; readonly ca?: string; readonly cert?: string; readonly key?: string };
}

/**
 * ISTIO_MUTUAL: the mesh certificates, SNI `outbound_.PORT_.SUBSET_.HOST` as Istio sends it unless
 * `sni` is set, and the peer must present a SPIFFE identity (or one of `subjectAltNames`). Without
 * `--mesh-certs` it is an Error: the caller warns and sends plaintext, so Istio YAML still applies
 * to proxies that were not given a mesh identity.
 */
export function upstreamTls(
  t: ClientTLSSettings | undefined, secrets: readonly SecretResource[], namespace: string, mesh?: MeshCertFiles, istioSni?: string,
): UpstreamTls | Error | undefined {
  if (!t || t.mode === undefined || t.mode === 'DISABLE') return undefined;
  if (t.mode === 'ISTIO_MUTUAL') {
    if (!mesh) return new Error('tls.mode ISTIO_MUTUAL needs the mesh certificates (meshgate run --mesh-certs DIR); connections go out in plaintext');
    const sni = t.sni ?? istioSni;
    return { mode: 'ISTIO_MUTUAL', ...(sni ? { sni } : {}), subjectAltNames: t.subjectAltNames ?? [], insecureSkipVerify: false, material: { kind: 'files', ...mesh } };
  }
  const base = { mode: t.mode, sni: t.sni, subjectAltNames: t.subjectAltNames ?? [], insecureSkipVerify: t.insecureSkipVerify === true };
  if (t.credentialName) {
    const find: FindSecret = (n) => secrets.find((s) => s.metadata.name === n && s.metadata.namespace === namespace);
    const secret = find(t.credentialName);
    const { ca, secret: caSecret } = caCertificate(find, namespace, t.credentialName);
    if (!secret && !caSecret) return new Error(`credentialName ${t.credentialName}: no Secret ${namespace}/${t.credentialName} (nor ${namespace}/${t.credentialName}-cacert)`);
    const cert = secret ? secretValue(secret, CERT_KEYS) : undefined;
    const key = secret ? secretValue(secret, KEY_KEYS) : undefined;
    if (t.mode === 'MUTUAL' && (!cert || !key)) {
      return new Error(secret ? `MUTUAL: Secret ${namespace}/${t.credentialName} has no tls.crt/tls.key (or cert/key)` : `MUTUAL: no Secret ${namespace}/${t.credentialName} for the client certificate`);
    }
    return { ...base, material: { kind: 'secret', name: `${namespace}/${t.credentialName}`, ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) } };
  }
  if (t.mode === 'MUTUAL' && (!t.clientCertificate || !t.privateKey)) return new Error('MUTUAL needs clientCertificate and privateKey (or credentialName)');
  return {
    ...base,
    material: {
      kind: 'files',
      ...(t.caCertificates ? { ca: t.caCertificates } : {}),
      ...(t.clientCertificate ? { cert: t.clientCertificate } : {}),
      ...(t.privateKey ? { key: t.privateKey } : {}),
    },
  };
}
