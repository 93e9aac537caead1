// Raw HTTP/2 frames for tests that must send what well-behaved clients never do.

/** One frame: 9-byte header (length, type, flags, stream id) and the payload. */
export function h2frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** The client connection preface (RFC 9113 3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** HPACK integer with an n-bit prefix (RFC 7541 5.1). */
export function hpackInt(bits: number, first: number, n: number): Buffer {
  const max = (1 << bits) - 1;
  if (n < max) return Buffer.from([first | n]);
  const out = [first | max];
  for (n -= max; n >= 128; n >>= 7) out.push((n & 127) | 128);
  out.push(n);
  return Buffer.from(out);
}

/** An HPACK string literal, without Huffman coding. */
export const hpackString = (s: string): Buffer => Buffer.concat([hpackInt(7, 0, Buffer.byteLength(s)), Buffer.from(s)]);

/** Literal header field without indexing, new name (0x00), or with incremental indexing (0x40). */
export const hpackLiteral = (name: string, value: string, indexing = false): Buffer =>
  Buffer.concat([Buffer.from([indexing ? 0x40 : 0]), hpackString(name), hpackString(value)]);
