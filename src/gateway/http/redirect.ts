// Envoy's redirect: scheme, authority, port and path of the Location header (pure).

import type { HTTPRedirect } from '../../config/types';
import { splitPath } from './route-match';

const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/** Location for a VirtualService `redirect`: unset parts come from the request; default ports are omitted. */
export function redirectLocation(r: HTTPRedirect, requestHost: string, requestPath: string, requestScheme: string): string {
  const scheme = (r.scheme ?? requestScheme).toLowerCase();
  let host = r.authority ?? requestHost;
  let port: number | undefined;
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(host);
  if (m) {
    host = m[1]!;
    port = m[2] !== undefined ? Number(m[2]) : undefined;
  }
  if (r.port !== undefined) port = r.port;
  else if (r.derivePort === 'FROM_PROTOCOL_DEFAULT' || r.scheme !== undefined) port = undefined;
  const portPart = port !== undefined && port !== DEFAULT_PORTS[scheme] ? `:${port}` : '';
  let path = requestPath;
  if (r.uri !== undefined) {
    const { query } = splitPath(requestPath);
    path = r.uri.includes('?') || !query ? r.uri : `${r.uri}?${query}`;
  }
  return `${scheme}://${host}${portPart}${path}`;
}
