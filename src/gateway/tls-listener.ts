// TLS listeners: read the ClientHello without terminating TLS (Envoy's tls_inspector), pick the filter
// chain by SNI, then either pass the connection through byte for byte (PASSTHROUGH) or terminate
// TLS with the chain's certificate and hand the decrypted stream to HTTP routing (HTTPS, ALPN h2 or
// http/1.1) or to the TCP proxy (TLS servers with SIMPLE/MUTUAL).

import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { FilterChain, ListenerDef } from '../config/snapshot';
import { readClientHello } from '../tls/client-hello';
import { peerHasSan, type ServerContexts, type ServerTlsPolicy } from '../tls/server-context';
import type { ServerCredentialSource } from '../tls/secrets';
import { inheritEnds } from './addresses';
import type { HttpStackEntry, TlsDispatcher } from './listener-manager';
import { selectChain, selectTcpRoute } from './tcp/match';
import type { TcpProxy } from './tcp/proxy';
import { asError } from '../errors';

export interface TlsListenerDeps {
  readonly tcp: TcpProxy;
  readonly contexts: ServerContexts;
  readonly log: Logger;
  /** Envoy's listener_filters_timeout: a client that does not send its ClientHello in time is closed. */
  readonly helloTimeoutMs: number;
  /** The TLS handshake itself, once the chain is known. */
  readonly handshakeTimeoutMs: number;
}

/**
 * What a sidecar's inbound mTLS offers: HTTP/2 and HTTP/1.1 (meshgate clients), and the protocols Istio
 * clients ask for on ISTIO_MUTUAL (`istio-h2`, `istio-http/1.x` for HTTP, `istio` for TCP). Not
 * `istio-peer-exchange`: choosing it would promise Istio's TCP metadata exchange, which meshgate does
 * not speak; a client offering it also offers `istio`.
 */
export const MESH_ALPN: readonly string[] = ['h2', 'http/1.1', 'istio-h2', 'istio-http/1.1', 'istio-http/1.0', 'istio'];

/** Does a ClientHello come from a mesh peer's ISTIO_MUTUAL (its SNI `outbound_.PORT_.SUBSET_.HOST`, or Istio's ALPN)? */
export function isMeshHello(sni: string | undefined, alpn: readonly string[]): boolean {
  return (sni !== undefined && sni.startsWith('outbound_.')) || alpn.some((p) => p === 'istio' || p.startsWith('istio-'));
}

/** Handshake failures are logged once per chain and reason per minute, not once per connection. */
const LOG_EVERY_MS = 60_000;

/**
 * Why a peer certificate failed verification (e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE), or undefined.
 * tls.Server computes `authorized` from this in its own handler, which a TLSSocket made by hand
 * (as we must, to choose the certificate after reading the SNI) never runs; OpenSSL accepts any
 * certificate during the handshake and leaves the verdict here.
 */
function peerVerifyError(socket: tls.TLSSocket): string | undefined {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => unknown } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'cannot verify the client certificate';
  const err = handle.verifyError();
  if (!err) return undefined;
  return typeof err === 'string' ? err : (err as { code?: string }).code ?? String(err);
}

export class TlsListener implements TlsDispatcher {
  private readonly lastLogged = new Map<string, number>();

  constructor(private readonly deps: TlsListenerDeps) {}

  dispatch(socket: Socket, def: () => ListenerDef, http: (chain: string) => HttpStackEntry): void {
    const startTime = Date.now();
    void readClientHello(socket, { timeoutMs: this.deps.helloTimeoutMs }).then((hello) => {
      try {
        if (hello.status === 'closed' && hello.bytes.length === 0) return void socket.destroy(); // a probe
        const sni = hello.status === 'hello' ? hello.sni : undefined;
        const chain = hello.status === 'hello' ? selectChain(def().chains, sni, () => socket.localAddress ?? '') : undefined;
        if (!chain) return this.deps.tcp.reject(socket, { sni, bytesReceived: hello.bytes.length, startTime });
        const action = chain.action;
        if (action.type === 'passthrough') {
          return this.deps.tcp.handle(socket, { route: action.route, sni, replay: hello.bytes, startTime });
        }
        socket.unshift(hello.bytes); // the TLS layer reads the ClientHello again from the socket
        this.terminate(socket, chain, sni, http, startTime);
      } catch (err) {
        this.deps.log.error({ err: asError(err).message }, 'tls dispatch failed; connection closed');
        socket.destroy();
      }
    });
  }

  private terminate(socket: Socket, chain: FilterChain, sni: string | undefined, http: (chain: string) => HttpStackEntry, startTime: number): void {
    if (chain.action.type !== 'terminate') return;
    const action = chain.action;
    const alpn = action.protocol === 'HTTP' ? ['h2', 'http/1.1'] : undefined;
    const policy = this.deps.contexts.policyFor(action.server.tls, action.credentials, alpn);
    if (policy instanceof Error) {
      this.logOnce(chain.name, { chain: chain.name, sni, err: policy.message }, 'no usable certificate; TLS connection closed');
      return void socket.destroy();
    }
    this.handshake(socket, policy, alpn, chain.name, sni, (tlsSocket) => {
      if (action.protocol === 'HTTP') return http(chain.name).connection(tlsSocket, tlsSocket.alpnProtocol);
      this.deps.tcp.handle(tlsSocket, { route: selectTcpRoute(action.tcpRoutes, () => socket.localAddress ?? ''), sni, startTime });
    });
  }

  /**
   * A sidecar's inbound mTLS for mesh peers (Istio's inbound filter chain for ISTIO_MUTUAL clients):
   * the mesh identity, a client certificate from the mesh CA required. The decrypted stream goes to
   * `onSecure`, which routes it as a plaintext inbound connection.
   */
  acceptMesh(socket: Socket, credentials: ServerCredentialSource, sni: string | undefined, onSecure: (tlsSocket: tls.TLSSocket) => void): void {
    const policy = this.deps.contexts.policyFor({ mode: 'ISTIO_MUTUAL' }, credentials, MESH_ALPN);
    if (policy instanceof Error) {
      this.logOnce('virtualInbound', { chain: 'virtualInbound', sni, err: policy.message }, 'no usable mesh certificate; inbound mTLS connection closed');
      return void socket.destroy();
    }
    this.handshake(socket, policy, MESH_ALPN, 'virtualInbound', sni, onSecure);
  }

  /** Terminate TLS with a policy; the client's certificate is checked as the policy says before `onSecure`. */
  private handshake(socket: Socket, policy: ServerTlsPolicy, alpn: readonly string[] | undefined, name: string, sni: string | undefined, onSecure: (tlsSocket: tls.TLSSocket) => void): void {
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: policy.context,
      requestCert: policy.requestCert,
      rejectUnauthorized: policy.rejectUnauthorized,
      ...(alpn ? { ALPNProtocols: [...alpn] } : {}),
    });
    inheritEnds(tlsSocket, socket);
    const timer = setTimeout(() => tlsSocket.destroy(), this.deps.handshakeTimeoutMs);
    let secured = false;
    tlsSocket.on('error', (err: Error) => {
      clearTimeout(timer);
      // After the handshake an error is the connection's (a client's reset), not a TLS failure to report.
      if (!secured) this.logOnce(`${name}|${err.message}`, { chain: name, sni, err: err.message }, 'TLS handshake failed');
      tlsSocket.destroy();
    });
    tlsSocket.once('secure', () => {
      clearTimeout(timer);
      secured = true;
      // tls.Server clears this flag itself on its sockets; ours would stay "connecting" and an HTTP/2
      // session waits for a 'secureConnect' a server socket never emits.
      (tlsSocket as unknown as { secureConnecting: boolean }).secureConnecting = false;
      const peer = policy.requestCert ? tlsSocket.getPeerCertificate() : undefined;
      const presented = peer !== undefined && Object.keys(peer).length > 0;
      // MUTUAL: the handshake already refused a client without a certificate; a presented one must
      // verify against the CA. OPTIONAL_MUTUAL: none is fine, an unverifiable one is not.
      const invalid = presented ? peerVerifyError(tlsSocket) : undefined;
      if (invalid) {
        this.logOnce(`${name}|${invalid}`, { chain: name, sni, err: invalid }, 'client certificate rejected');
        return void tlsSocket.destroy();
      }
      if (presented && !peerHasSan(peer, policy.subjectAltNames)) {
        this.logOnce(`${name}|san`, { chain: name, sni }, 'client certificate has none of the required subjectAltNames; connection closed');
        return void tlsSocket.destroy();
      }
      // As tls.Server would say it: a client certificate was presented and verified (x-forwarded-client-cert reads it).
      tlsSocket.authorized = presented;
      onSecure(tlsSocket);
    });
  }

  private logOnce(key: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if ((this.lastLogged.get(key) ?? 0) + LOG_EVERY_MS > now) return;
    if (this.lastLogged.size > 1000) this.lastLogged.clear();
    this.lastLogged.set(key, now);
    this.deps.log.warn(fields, msg);
  }
}
