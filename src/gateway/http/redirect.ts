// Envoy's redirects: the Location header of a VirtualService `redirect` and of a Gateway server's
// `httpsRedirect` (pure).

import type { HTTPRedirect } from '../../config/types';
import { splitPath } from './route-match';

/** Host and `:port` of a Host header (IPv6 literals in brackets); port '' when there is none. */
function splitHostPort(host: string): { name: string; port: string } {
  const colon = host.startsWith('[') ? host.indexOf(':', host.indexOf(']')) : host.lastIndexOf(':');
  return colon < 0 ? { name: host, port: '' } : { name: host.slice(0, colon), port: host.slice(colon) };
}

/**
 * Location for a VirtualService `redirect`, as Envoy builds it: scheme, then the authority (the
 * redirect's, else the request's Host), then `:port` when the redirect names one, then the path
 * (query kept unless the new uri has its own). The request's own port stays unless a port is given,
 * or the scheme changes and it was the default port of the request's scheme (:80 for http, :443 for
 * https): `http://a.test:8080` redirected to https stays on :8080, as it does behind Envoy.
 */
export function redirectLocation(r: HTTPRedirect, requestHost: string, requestPath: string, requestScheme: string): string {
  const scheme = (r.scheme ?? requestScheme).toLowerCase();
  const request = splitHostPort(requestHost);
  // Istio turns FROM_REQUEST_PORT into a port redirect to the port the request came in on.
  const port = r.port !== undefined ? `:${r.port}` : r.derivePort === 'FROM_REQUEST_PORT' ? request.port : '';
  let host = r.authority;
  if (host === undefined) {
    const schemeChanged = scheme !== requestScheme;
    const defaultPort = (requestScheme === 'https' && request.port === ':443') || (requestScheme === 'http' && request.port === ':80');
    host = port !== '' || (schemeChanged && defaultPort) ? request.name : requestHost;
  }
  let path = requestPath;
  if (r.uri !== undefined) {
    const { query } = splitPath(requestPath);
    path = r.uri.includes('?') || !query ? r.uri : `${r.uri}?${query}`;
  }
  return `${scheme}://${host}${port}${path}`;
}

/** Location for a Gateway server's `tls.httpsRedirect` (Envoy's require_tls): the Host as sent, the path as sent. */
export function httpsRedirectLocation(requestHost: string, requestPath: string): string {
  return `https://${requestHost}${requestPath}`;
}
