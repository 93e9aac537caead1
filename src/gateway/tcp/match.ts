// Connection-level routing decisions, pure: which VirtualService `tcp` route takes a connection on a
// TCP listener, and which filter chain takes a TLS connection given its SNI. Envoy's rules: the
// destination address narrows first (chains naming a subnet that holds it beat chains naming none),
// then the server name: exact, then the longest `*.suffix`, then a chain without names (which also
// takes connections without SNI).

import type { FilterChain, L4Route, SubnetSet } from '../../config/snapshot';

/**
 * The address the client connected to, or how to get it: a socket's local address costs a system
 * call (getsockname), so callers pass `() => socket.localAddress` and it is asked only when a route
 * or chain names subnets.
 */
export type LocalAddress = string | (() => string);

function subnetAdmits(set: SubnetSet, address: LocalAddress): boolean {
  if (set.cidrs.length === 0) return true;
  return set.re?.check(typeof address === 'string' ? address : address()) ?? false;
}

/** The first route whose destinationSubnets admit the address the client connected to. */
export function selectTcpRoute(routes: readonly L4Route[] | undefined, localAddress: LocalAddress): L4Route | undefined {
  if (!routes) return undefined;
  for (const r of routes) {
    if (subnetAdmits(r.destinationSubnets, localAddress)) return r;
  }
  return undefined;
}

/** `a.b.example.com` -> `*.b.example.com`, `*.example.com`, `*.com`: most specific first. */
export function wildcardsFor(name: string): string[] {
  const out: string[] = [];
  for (let dot = name.indexOf('.'); dot >= 0 && dot < name.length - 1; dot = name.indexOf('.', dot + 1)) {
    out.push(`*${name.slice(dot)}`);
  }
  return out;
}

function byServerName(chains: readonly FilterChain[], sni: string | undefined): FilterChain | undefined {
  if (sni) {
    const name = sni.toLowerCase();
    const exact = chains.find((c) => c.serverNames.includes(name));
    if (exact) return exact;
    for (const w of wildcardsFor(name)) {
      const hit = chains.find((c) => c.serverNames.includes(w));
      if (hit) return hit;
    }
  }
  return chains.find((c) => c.serverNames.length === 0);
}

/** The filter chain for a TLS connection; undefined = `filter_chain_not_found` (NR). */
export function selectChain(chains: readonly FilterChain[] | undefined, sni: string | undefined, localAddress: LocalAddress): FilterChain | undefined {
  if (!chains || chains.length === 0) return undefined;
  const bySubnet = chains.filter((c) => c.destinationSubnets.cidrs.length > 0 && subnetAdmits(c.destinationSubnets, localAddress));
  const candidates = bySubnet.length > 0 ? bySubnet : chains.filter((c) => c.destinationSubnets.cidrs.length === 0);
  return byServerName(candidates, sni);
}
