// Load-time checks of the certificates a Gateway serves, so a wrong Secret is a warning with file and
// line instead of a mysterious handshake failure: the PEM parses, the key belongs to the
// certificate, it is valid now and not about to expire, and its SANs cover the server's hosts.
// Parsing is @peculiar/x509's; the key comparison is Node's.

import { createPublicKey, X509Certificate as NodeX509 } from 'node:crypto';
import fs from 'node:fs';
import type * as X509 from '@peculiar/x509';
import { positionOf } from '../config/validate';
import type { ConfigIssue, GatewayResource, ResourceSet } from '../config/types';
import { parseServerHost } from '../config/names';
import { secretValue } from './secrets';
import { asError } from '../errors';

export interface CertificateFacts {
  readonly subject: string;
  readonly dnsNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface CertificateProblem {
  readonly severity: 'error' | 'warning';
  readonly message: string;
}

const EXPIRY_WARNING_DAYS = 7;

/** Does a certificate name (exact or `*.suffix`, one label deep) cover a Gateway host? */
export function certificateMatchesHost(dnsNames: readonly string[], host: string): boolean {
  const h = host.toLowerCase();
  return dnsNames.some((raw) => {
    const n = raw.toLowerCase();
    if (n === h) return true;
    if (!n.startsWith('*.')) return false;
    const suffix = n.slice(1); // ".example.com"
    // The host `*.example.com` is covered by the same wildcard; a concrete host only one label deep.
    if (h.startsWith('*.')) return h === n;
    return h.endsWith(suffix) && !h.slice(0, -suffix.length).includes('.');
  });
}

let x509Module: typeof X509 | undefined;

/** @peculiar/x509 (and the reflect-metadata it needs), loaded the first time a certificate is read: ~16 MiB a gateway without TLS never pays. */
function x509(): typeof X509 {
  if (!x509Module) {
    require('reflect-metadata');
    x509Module = require('@peculiar/x509') as typeof X509;
  }
  return x509Module;
}

/** Facts about the first certificate of a PEM chain, or an error when it does not parse. */
export function certificateFacts(certPem: string): CertificateFacts | Error {
  const x = x509();
  try {
    const cert = new x.X509Certificate(certPem);
    const san = cert.getExtension(x.SubjectAlternativeNameExtension);
    const dnsNames = san ? san.names.items.filter((n) => n.type === 'dns').map((n) => n.value) : [];
    return { subject: cert.subject, dnsNames, notBefore: cert.notBefore, notAfter: cert.notAfter };
  } catch (err) {
    return new Error(`the certificate does not parse: ${asError(err).message}`);
  }
}

/** Everything wrong with a server certificate and key for these hosts (`*` hosts are not checked). */
export function inspectServerCertificate(certPem: string, keyPem: string, hosts: readonly string[], now = new Date()): { facts?: CertificateFacts; problems: CertificateProblem[] } {
  const problems: CertificateProblem[] = [];
  const facts = certificateFacts(certPem);
  if (facts instanceof Error) return { problems: [{ severity: 'error', message: facts.message }] };
  try {
    const certKey = new NodeX509(certPem).publicKey.export({ type: 'spki', format: 'der' });
    const ownKey = createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
    if (!certKey.equals(ownKey)) problems.push({ severity: 'error', message: 'the private key does not belong to the certificate' });
  } catch (err) {
    problems.push({ severity: 'error', message: `the private key does not parse: ${asError(err).message}` });
  }
  if (facts.notAfter < now) problems.push({ severity: 'warning', message: `the certificate expired on ${facts.notAfter.toISOString()} (still served, as Istio does; clients will refuse it)` });
  else if (facts.notBefore > now) problems.push({ severity: 'warning', message: `the certificate is not valid before ${facts.notBefore.toISOString()}` });
  else if (facts.notAfter.getTime() - now.getTime() < EXPIRY_WARNING_DAYS * 86_400_000) {
    problems.push({ severity: 'warning', message: `the certificate expires soon, on ${facts.notAfter.toISOString()}` });
  }
  for (const host of hosts) {
    if (host === '*') continue;
    if (!certificateMatchesHost(facts.dnsNames, host)) {
      problems.push({ severity: 'warning', message: `the certificate's SANs (${facts.dnsNames.join(', ') || 'none'}) do not cover host ${host}` });
    }
  }
  return { facts, problems };
}

/** A certificate served by a Gateway server, with where it came from (for the expiry gauge). */
export interface ServedCertificate {
  readonly gateway: string;
  readonly server: string;
  readonly source: string;
  readonly facts: CertificateFacts;
}

/**
 * Check every terminating Gateway server's certificate (Secrets found by name in any namespace,
 * and files); problems become config warnings at the server's `tls` field.
 */
export function certificateIssues(set: ResourceSet): { issues: ConfigIssue[]; served: ServedCertificate[] } {
  const issues: ConfigIssue[] = [];
  const served: ServedCertificate[] = [];
  for (const gw of set.gateways as readonly GatewayResource[]) {
    gw.spec.servers.forEach((server, i) => {
      const t = server.tls;
      if (!t || t.mode === 'PASSTHROUGH' || t.mode === 'AUTO_PASSTHROUGH' || t.mode === 'ISTIO_MUTUAL') return;
      const proto = String(server.port?.protocol ?? '').toUpperCase();
      if (proto !== 'HTTPS' && proto !== 'TLS') return;
      const hosts = server.hosts.map((h) => parseServerHost(h).host);
      const materials: { source: string; path: string; cert: string; key: string }[] = [];
      const name = t.credentialName ?? t.credentialNames?.[0];
      if (name) {
        for (const s of set.secrets.filter((x) => x.metadata.name === name)) {
          const cert = secretValue(s, ['tls.crt', 'cert']);
          const key = secretValue(s, ['tls.key', 'key']);
          if (cert && key) materials.push({ source: `Secret ${s.metadata.namespace}/${name}`, path: `spec.servers[${i}].tls.credentialName`, cert, key });
        }
      } else if (t.serverCertificate && t.privateKey) {
        try {
          materials.push({ source: t.serverCertificate, path: `spec.servers[${i}].tls.serverCertificate`, cert: fs.readFileSync(t.serverCertificate, 'utf8'), key: fs.readFileSync(t.privateKey, 'utf8') });
        } catch (err) {
          const pos = positionOf(gw, `spec.servers[${i}].tls.serverCertificate`);
          issues.push({ severity: 'warning', file: pos.file, line: pos.line, col: pos.col, kind: gw.kind, namespace: gw.metadata.namespace, name: gw.metadata.name, path: `spec.servers[${i}].tls`, message: `warning: ${asError(err).message}` });
        }
      }
      for (const m of materials) {
        const { facts, problems } = inspectServerCertificate(m.cert, m.key, hosts);
        if (facts) served.push({ gateway: `${gw.metadata.namespace}/${gw.metadata.name}`, server: server.port.name ?? String(server.port.number), source: m.source, facts });
        const pos = positionOf(gw, m.path);
        for (const p of problems) {
          // Istio serves what it is given; a bad certificate is a warning, the old config is not kept for it.
          issues.push({ severity: 'warning', file: pos.file, line: pos.line, col: pos.col, kind: gw.kind, namespace: gw.metadata.namespace, name: gw.metadata.name, path: m.path, message: `warning: ${m.source}: ${p.message}` });
        }
      }
    });
  }
  return { issues, served };
}
