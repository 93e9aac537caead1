// Istio's HTTP metadata exchange: a proxy tells its peer who it is in `x-envoy-peer-metadata` (the
// base64 of a serialized google.protobuf.Struct: NAME, NAMESPACE, WORKLOAD_NAME, LABELS, CLUSTER_ID,
// ...) and `x-envoy-peer-metadata-id` (its node id). The side that reports a request in metrics
// names the other side from it: an Istio sidecar behind a meshgate gateway reports
// source_workload="istio-ingressgateway" instead of "unknown", and meshgate's sidecar inbound side
// names the Istio (or meshgate) client that called it.
//
// Only the Struct shapes the exchange uses are read and written: string values and nested structs
// (LABELS). Decoding is bounded (input size, nesting) and never throws: a malformed header is no
// metadata.

import type { Dict } from '../config/types';

export const PEER_METADATA_HEADER = 'x-envoy-peer-metadata';
export const PEER_METADATA_ID_HEADER = 'x-envoy-peer-metadata-id';

/** A Struct of strings and (one level of) nested structs of strings. */
export type PeerMetadata = { readonly [key: string]: string | Dict<string> };

/** Headers longer than this are not decoded (Istio's are ~1 KB; labels rarely make them 4). */
const MAX_ENCODED = 16 * 1024;
const MAX_DEPTH = 2;

// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/): a key is
// (field << 3 | wire type); Struct.fields is a map, i.e. repeated entries (field 1) of
// {key: string = 1, value: Value = 2}; Value.string_value = 3, Value.struct_value = 5.
const LEN = 2;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function lengthDelimited(field: number, bytes: readonly number[]): number[] {
  return [...varint((field << 3) | LEN), ...varint(bytes.length), ...bytes];
}

function structBytes(fields: PeerMetadata | Dict<string>): number[] {
  const out: number[] = [];
  // Map entries sorted by key, as protobuf's deterministic serialization (and Envoy) writes them.
  for (const key of Object.keys(fields).sort()) {
    const v = fields[key]!;
    const value = typeof v === 'string'
      ? lengthDelimited(3, [...Buffer.from(v, 'utf8')])
      : lengthDelimited(5, structBytes(v));
    out.push(...lengthDelimited(1, [...lengthDelimited(1, [...Buffer.from(key, 'utf8')]), ...lengthDelimited(2, value)]));
  }
  return out;
}

/** The `x-envoy-peer-metadata` value for `fields`. */
export function encodePeerMetadata(fields: PeerMetadata): string {
  return Buffer.from(structBytes(fields)).toString('base64');
}

/** Reads a protobuf message's fields; undefined when it is malformed. */
function fieldsOf(buf: Buffer): { field: number; bytes?: Buffer }[] | undefined {
  const out: { field: number; bytes?: Buffer }[] = [];
  let i = 0;
  const readVarint = (): number | undefined => {
    let n = 0;
    let scale = 1;
    for (let k = 0; k < 10; k++) {
      if (i >= buf.length) return undefined;
      const b = buf[i++]!;
      n += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return n;
      scale *= 128;
    }
    return undefined;
  };
  while (i < buf.length) {
    const key = readVarint();
    if (key === undefined) return undefined;
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      if (readVarint() === undefined) return undefined;
      out.push({ field });
    } else if (wire === 1 || wire === 5) {
      i += wire === 1 ? 8 : 4;
      if (i > buf.length) return undefined;
      out.push({ field });
    } else if (wire === LEN) {
      const n = readVarint();
      if (n === undefined || i + n > buf.length) return undefined;
      out.push({ field, bytes: buf.subarray(i, i + n) });
      i += n;
    } else {
      return undefined; // groups (3, 4) and unknown wire types: not a Struct
    }
  }
  return out;
}

/** obj[key] = value as data, whatever the key (`__proto__` included). */
function put<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function decodeStruct(buf: Buffer, depth: number): Record<string, string | Dict<string>> | undefined {
  const fields = fieldsOf(buf);
  if (!fields) return undefined;
  const out: Record<string, string | Dict<string>> = {};
  for (const entry of fields) {
    if (entry.field !== 1 || !entry.bytes) continue;
    const kv = fieldsOf(entry.bytes);
    if (!kv) return undefined;
    const key = kv.find((f) => f.field === 1)?.bytes?.toString('utf8');
    const value = kv.find((f) => f.field === 2)?.bytes;
    if (key === undefined || value === undefined) continue;
    const parts = fieldsOf(value);
    if (!parts) return undefined;
    const str = parts.find((f) => f.field === 3 && f.bytes);
    const sub = parts.find((f) => f.field === 5 && f.bytes);
    if (str) {
      put(out, key, str.bytes!.toString('utf8'));
    } else if (sub && depth < MAX_DEPTH) {
      const nested = decodeStruct(sub.bytes!, depth + 1);
      if (!nested) return undefined;
      const strings: Record<string, string> = {};
      for (const [k, v] of Object.entries(nested)) if (typeof v === 'string') put(strings, k, v);
      put(out, key, strings);
    }
    // numbers, booleans, lists: not used by the exchange's identity fields
  }
  return out;
}

/** The fields of an `x-envoy-peer-metadata` value; undefined when it is not one. */
export function decodePeerMetadata(value: string | undefined): PeerMetadata | undefined {
  if (!value || value.length > MAX_ENCODED || !/^[A-Za-z0-9+/]+={0,2}$/.test(value)) return undefined;
  return decodeStruct(Buffer.from(value, 'base64'), 1);
}

/** The identity a peer's metadata gives: workload, namespace, labels (for the source_* or destination_* labels). */
export interface PeerWorkload {
  readonly workload: string;
  readonly namespace: string;
  readonly labels: Dict<string>;
  /** CLUSTER_ID, when the peer says it (source_cluster / destination_cluster). */
  readonly cluster?: string;
}

export function peerWorkloadOf(md: PeerMetadata | undefined): PeerWorkload | undefined {
  if (!md) return undefined;
  const text = (k: string) => (Object.hasOwn(md, k) && typeof md[k] === 'string' ? md[k] as string : undefined);
  const labels = Object.hasOwn(md, 'LABELS') && typeof md['LABELS'] === 'object' ? md['LABELS'] as Dict<string> : {};
  const workload = text('WORKLOAD_NAME') || text('NAME');
  const namespace = text('NAMESPACE');
  if (!workload || !namespace) return undefined;
  const cluster = text('CLUSTER_ID');
  return cluster ? { workload, namespace, labels, cluster } : { workload, namespace, labels };
}

const decoded = new Map<string, PeerWorkload | undefined>();

/** peerWorkloadOf(decodePeerMetadata(value)), remembered per value (a few hundred: one per calling workload). */
export function peerWorkloadFromHeader(value: string | string[] | undefined): PeerWorkload | undefined {
  if (typeof value !== 'string') return undefined;
  if (decoded.has(value)) return decoded.get(value);
  if (decoded.size >= 512) decoded.clear();
  const w = peerWorkloadOf(decodePeerMetadata(value));
  decoded.set(value, w);
  return w;
}

/**
 * The upstream's answer to the exchange: the peer metadata in a response's raw headers (undici's
 * `[name, value, ...]` buffers), decoded through the same cache. Undefined when there is none.
 */
export function peerWorkloadFromRaw(raw: readonly Buffer[]): PeerWorkload | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === PEER_METADATA_HEADER.length && name.toString('latin1').toLowerCase() === PEER_METADATA_HEADER) {
      return peerWorkloadFromHeader(raw[i + 1]!.toString('latin1'));
    }
  }
  return undefined;
}

/** The two headers a proxy sends its mesh peers: its metadata and its node id. */
export interface OwnPeerHeaders {
  readonly metadata: string;
  readonly id: string;
}

/**
 * This proxy's headers: the metadata, and Istio's node id `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`
 * (type `sidecar`, or `router` for a gateway).
 */
export function ownPeerHeaders(o: { readonly sidecar: boolean; readonly ip: string; readonly name: string; readonly namespace: string; readonly workload: string; readonly labels: Dict<string> }): OwnPeerHeaders {
  return {
    metadata: encodePeerMetadata(ownPeerMetadata(o)),
    id: `${o.sidecar ? 'sidecar' : 'router'}~${o.ip}~${o.name}.${o.namespace}~${o.namespace}.svc.cluster.local`,
  };
}

/** This proxy's own metadata, as an Istio proxy sends it (the fields Istio's stats read). */
function ownPeerMetadata(o: { readonly name: string; readonly namespace: string; readonly workload: string; readonly labels: Dict<string> }): PeerMetadata {
  return {
    CLUSTER_ID: 'Kubernetes',
    LABELS: o.labels,
    MESH_ID: 'cluster.local',
    NAME: o.name,
    NAMESPACE: o.namespace,
    WORKLOAD_NAME: o.workload,
  };
}
