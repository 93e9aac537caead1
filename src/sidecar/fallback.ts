// Per-port capture, the fallback when the SO_ORIGINAL_DST addon is not available: iptables redirects
// each listed application port to a listener of its own (the i-th port to base + i), so the port is
// known from the listener and the host from the request (HTTP Host, TLS SNI). `meshgate iptables` and
// `meshgate run` both take the same --fallback-ports list and --fallback-base, so they agree.
//
// Limits (documented in the README): only the listed ports are captured (others go out directly);
// the original IP address is unknown, so passthrough (ALLOW_ANY) resolves the Host or SNI instead,
// and opaque TCP is routed only when one service owns the port.

export interface FallbackPort {
  /** The port the application connects to. */
  readonly app: number;
  /** The listener iptables redirects it to. */
  readonly listen: number;
}

export const DEFAULT_FALLBACK_BASE = 15100;

/** The listeners for `ports` (in the order given), or an Error for a bad list. */
export function fallbackPorts(ports: readonly number[], base = DEFAULT_FALLBACK_BASE): FallbackPort[] | Error {
  const seen = new Set<number>();
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) return new Error(`fallback port ${p} is not a port`);
    if (seen.has(p)) return new Error(`fallback port ${p} is listed twice`);
    seen.add(p);
  }
  if (!Number.isInteger(base) || base < 1 || base + ports.length - 1 > 65535) return new Error(`fallback base ${base} leaves no room for ${ports.length} listeners`);
  const out = ports.map((app, i) => ({ app, listen: base + i }));
  const clash = out.find((f) => seen.has(f.listen));
  if (clash) return new Error(`fallback listener ${clash.listen} is also an application port; pick another --fallback-base`);
  return out;
}
