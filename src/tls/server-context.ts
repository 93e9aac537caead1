// Secure contexts for terminating Gateway servers, built on first use and cached by their inputs.
// A Secret change arrives as a new snapshot (new inputs, new context); certificate files are
// watched, and a change drops the contexts built from them. Either way only new handshakes use the
// new certificate: connections already open are never cut.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ServerTLSSettings, TLSProtocol } from '../config/types';
import type { ServerCredentialSource } from './secrets';
import { needsClientCertificate } from './secrets';
import { asError } from '../errors';

/** What a handshake needs besides the context: whether and how to check the client. */
export interface ServerTlsPolicy {
  readonly context: tls.SecureContext;
  readonly requestCert: boolean;
  /** MUTUAL: a client without a valid certificate fails the handshake. */
  readonly rejectUnauthorized: boolean;
  /** The client certificate must carry one of these SANs (DNS, URI, IP or email), when non-empty. */
  readonly subjectAltNames: readonly string[];
}

const VERSIONS: Readonly<Record<TLSProtocol, tls.SecureVersion | undefined>> = {
  TLS_AUTO: undefined, TLSV1_0: 'TLSv1', TLSV1_1: 'TLSv1.1', TLSV1_2: 'TLSv1.2', TLSV1_3: 'TLSv1.3',
};

/** Contexts kept; the oldest goes first (each Secret rotation adds one). */
const MAX_CONTEXTS = 256;

/** File-watch poll interval: certificate rotation (cert-manager, kubelet secret volumes) is not urgent. */
const WATCH_INTERVAL_MS = 1000;

export class ServerContexts {
  private readonly cache = new Map<string, ServerTlsPolicy>();
  /** Watched file -> cache keys built from it. */
  private readonly watched = new Map<string, Set<string>>();

  constructor(private readonly log: Logger) {}

  /** The policy for a server, or an Error saying why there is none (missing or unreadable material). */
  policyFor(settings: ServerTLSSettings | undefined, source: ServerCredentialSource, alpn: readonly string[] | undefined): ServerTlsPolicy | Error {
    if (source.kind === 'missing') return new Error(source.message);
    // Everything the policy is built from is in the key: two servers sharing a certificate but not
    // their client-SAN rules must never share a cached policy.
    const key = JSON.stringify([source, settings?.minProtocolVersion, settings?.maxProtocolVersion, settings?.cipherSuites, settings?.mode, settings?.subjectAltNames, alpn]);
    const cached = this.cache.get(key);
    if (cached) return cached;
    try {
      const material = source.kind === 'secret' ? source : {
        cert: fs.readFileSync(source.cert, 'utf8'),
        key: fs.readFileSync(source.key, 'utf8'),
        ca: source.ca ? fs.readFileSync(source.ca, 'utf8') : undefined,
      };
      const mutual = needsClientCertificate(settings);
      const context = tls.createSecureContext({
        cert: material.cert,
        key: material.key,
        ...(mutual && material.ca ? { ca: material.ca } : {}),
        // Istio's gateway defaults: TLS 1.2 to 1.3.
        minVersion: VERSIONS[settings?.minProtocolVersion ?? 'TLS_AUTO'] ?? 'TLSv1.2',
        maxVersion: VERSIONS[settings?.maxProtocolVersion ?? 'TLS_AUTO'] ?? 'TLSv1.3',
        ...(settings?.cipherSuites?.length ? { ciphers: settings.cipherSuites.join(':') } : {}),
        // A session may be resumed only under the policy it was made under. Without an id context
        // OpenSSL refuses every resumption when it asks for client certificates (alert 80), and a
        // client that offers its ticket again fails each new connection.
        sessionIdContext: createHash('sha256').update(key).digest('hex').slice(0, 32),
      });
      const policy: ServerTlsPolicy = {
        context,
        requestCert: mutual,
        rejectUnauthorized: settings?.mode === 'MUTUAL' || settings?.mode === 'ISTIO_MUTUAL',
        subjectAltNames: settings?.subjectAltNames ?? [],
      };
      if (this.cache.size >= MAX_CONTEXTS) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(key, policy);
      if (source.kind === 'files') for (const f of [source.cert, source.key, source.ca]) if (f) this.watch(f, key);
      return policy;
    } catch (err) {
      return new Error(`cannot build the TLS context from ${source.kind === 'secret' ? `Secret ${source.name}` : `files ${source.cert}, ${source.key}`}: ${asError(err).message}`);
    }
  }

  private watch(file: string, key: string): void {
    let keys = this.watched.get(file);
    if (!keys) {
      this.watched.set(file, keys = new Set());
      fs.watchFile(file, { interval: WATCH_INTERVAL_MS, persistent: false }, (cur, prev) => {
        if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
        const stale = this.watched.get(file);
        if (!stale) return;
        for (const k of stale) this.cache.delete(k);
        stale.clear();
        this.log.info({ file }, 'certificate file changed; new handshakes use the new material');
      });
    }
    keys.add(key);
  }

  /** Drop everything (shutdown, tests). */
  close(): void {
    for (const file of this.watched.keys()) fs.unwatchFile(file);
    this.watched.clear();
    this.cache.clear();
  }
}

/** Does a peer certificate carry one of the wanted subject alt names? */
export function peerHasSan(cert: tls.PeerCertificate | undefined, wanted: readonly string[]): boolean {
  if (wanted.length === 0) return true;
  const text = cert?.subjectaltname ?? '';
  const sans = text.split(',').map((p) => p.trim().replace(/^(DNS|URI|IP Address|email):/, ''));
  return wanted.some((w) => sans.includes(w));
}
