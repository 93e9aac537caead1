// The x-forwarded-client-cert value a gateway sets for a request on a connection whose client
// presented a verified certificate: Istio's gateway default, Envoy's SANITIZE_SET with subject, URI
// and DNS (`By=<our URI SAN>;Hash=<sha256 of the client's DER>;Subject="<RFC 2253>";URI=...;DNS=...`).
// Without a verified client certificate there is no value, and the client's own header is dropped.

import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';

const cache = new WeakMap<object, string | null>();

/** The XFCC value for this connection, or undefined (plaintext, no certificate, not verified). */
export function clientCertDetails(socket: object): string | undefined {
  const known = cache.get(socket);
  if (known !== undefined) return known ?? undefined;
  const value = compute(socket as Partial<TLSSocket>);
  cache.set(socket, value ?? null);
  return value;
}

function compute(socket: Partial<TLSSocket>): string | undefined {
  if (!socket.encrypted || socket.authorized !== true || typeof socket.getPeerX509Certificate !== 'function') return undefined;
  const peer = socket.getPeerX509Certificate();
  if (!peer) return undefined;
  const parts: string[] = [];
  const own = socket.getX509Certificate?.();
  for (const uri of own ? sans(own, 'URI') : []) parts.push(`By=${uri}`);
  parts.push(`Hash=${peer.fingerprint256.replaceAll(':', '').toLowerCase()}`);
  parts.push(`Subject="${rfc2253(peer.subject)}"`);
  const uris = sans(peer, 'URI');
  // Envoy keeps the URI key even when the certificate has none.
  for (const uri of uris.length > 0 ? uris : ['']) parts.push(`URI=${uri}`);
  for (const dns of sans(peer, 'DNS')) parts.push(`DNS=${dns}`);
  return parts.join(';');
}

/** A certificate's subjectAltName entries of one kind (`URI:spiffe://...`, `DNS:a.example`). */
function sans(cert: X509Certificate, kind: 'URI' | 'DNS'): string[] {
  const out: string[] = [];
  for (const entry of (cert.subjectAltName ?? '').split(', ')) {
    if (entry.startsWith(`${kind}:`)) out.push(entry.slice(kind.length + 1).replace(/^"|"$/g, ''));
  }
  return out;
}

/** Node gives the subject one attribute per line, in certificate order; RFC 2253 writes them last first, comma-separated. */
function rfc2253(subject: string): string {
  return subject.split('\n').filter(Boolean).reverse().join(',').replaceAll('"', '\\"');
}
