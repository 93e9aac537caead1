// Connection options for TLS origination to an upstream (DestinationRule tls SIMPLE/MUTUAL), shared
// by the HTTP connection pools and the TCP proxy. Built once per compiled setting (files are read
// then), so a connection costs no file I/O.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { isIP } from '../config/names';
import type { UpstreamTls } from './secrets';

export interface UpstreamTlsOptions {
  /** Distinguishes pools that differ only in TLS settings. */
  readonly key: string;
  readonly connect: tls.ConnectionOptions;
}

const built = new WeakMap<UpstreamTls, UpstreamTlsOptions | Error>();

function pem(kind: 'secret' | 'files', value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return kind === 'secret' ? value : fs.readFileSync(value, 'utf8');
}

/** The SANs a certificate carries, without their type prefixes. */
function sansOf(cert: tls.PeerCertificate): string[] {
  return (cert.subjectaltname ?? '').split(',').map((p) => p.trim().replace(/^(DNS|URI|IP Address|email):/, '')).filter(Boolean);
}

/** tls.connect options for an upstream of `host`; an Error when the material cannot be read. */
export function upstreamTlsOptions(t: UpstreamTls, host: string): UpstreamTlsOptions | Error {
  const cached = built.get(t);
  if (cached) return cached;
  let result: UpstreamTlsOptions | Error;
  try {
    const m = t.material;
    const servername = t.sni ?? (isIP(host) ? undefined : host);
    const ca = pem(m.kind, m.ca);
    const cert = pem(m.kind, m.cert);
    const key = pem(m.kind, m.key);
    const connect: tls.ConnectionOptions = {
      ...(servername ? { servername } : {}),
      ...(ca ? { ca } : {}),
      ...(t.mode !== 'SIMPLE' && cert && key ? { cert, key } : {}),
      rejectUnauthorized: !t.insecureSkipVerify,
      checkServerIdentity: (name, peer) => {
        if (t.insecureSkipVerify) return undefined;
        if (t.subjectAltNames.length > 0) {
          const sans = sansOf(peer);
          return t.subjectAltNames.some((w) => sans.includes(w)) ? undefined
            : new Error(`upstream certificate SANs ${sans.join(', ')} match none of ${t.subjectAltNames.join(', ')}`);
        }
        if (t.mode === 'ISTIO_MUTUAL') {
          // A mesh peer is named by its SPIFFE identity, not by the host it serves.
          return sansOf(peer).some((s) => s.startsWith('spiffe://')) ? undefined
            : new Error('the mesh peer presented no spiffe:// identity');
        }
        return tls.checkServerIdentity(servername ?? name, peer);
      },
    };
    const poolKey = createHash('sha256').update(JSON.stringify([t, ca, cert])).digest('hex').slice(0, 16);
    result = { key: poolKey, connect };
  } catch (err) {
    result = new Error(`cannot read upstream TLS material: ${(err as Error).message}`);
  }
  built.set(t, result);
  return result;
}
