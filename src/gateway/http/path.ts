// The request target as Envoy routes it (pure): absolute-form (`GET http://host/path`, as sent to a
// forward proxy) is taken apart into authority and path (Envoy's allow_absolute_url), and the path
// is normalized as Istio's default `pathNormalization: BASE` asks (Envoy's normalize_path, RFC 3986
// 6.2.2): escaped unreserved characters decoded, `\` read as `/`, `.` and `..` segments resolved.
// Routing, the upstream request and the access log all see the normalized path, so
// `/public/../admin` cannot slip past a route for `/public`.

export type RequestTarget =
  | { readonly path: string; readonly authority?: string; readonly error?: undefined }
  | { readonly error: string };

const ABSOLUTE = /^(https?):\/\/([^/?#]*)(.*)$/i;
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** The path and (absolute-form only) authority a request line's target names, normalized. */
export function requestTarget(url: string): RequestTarget {
  if (url.startsWith('/')) {
    const path = normalizePath(url);
    return path === undefined ? { error: 'path_normalization_failed' } : { path };
  }
  const abs = ABSOLUTE.exec(url);
  if (abs) {
    const authority = abs[2]!;
    if (authority === '') return { error: 'invalid_url' };
    const rest = abs[3]!.startsWith('/') ? abs[3]! : `/${abs[3]!}`;
    const path = normalizePath(rest.split('#')[0]!);
    return path === undefined ? { error: 'path_normalization_failed' } : { path, authority };
  }
  if (url === '*') return { path: url }; // OPTIONS * : nothing to normalize
  return { error: 'invalid_url' };
}

/** RFC 3986 normalization of a path starting with '/' (the query is left as sent); undefined when it is not one. */
export function normalizePath(target: string): string | undefined {
  const q = target.indexOf('?');
  const raw = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q);
  // Fast path: nothing to decode or resolve.
  if (!/[%\\]|\/\.{1,2}(\/|$)/.test(raw)) return target;
  const decoded = raw.replace(/\\/g, '/').replace(/%([0-9A-Fa-f]{2})/g, (escape, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : escape;
  });
  if (!decoded.startsWith('/')) return undefined;
  const out: string[] = [];
  const segments = decoded.slice(1).split('/');
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === '.' || seg === '..') {
      if (seg === '..') out.pop();
      if (last) out.push(''); // `/a/b/..` is `/a/`
      return;
    }
    out.push(seg);
  });
  return `/${out.join('/')}${query}`;
}
