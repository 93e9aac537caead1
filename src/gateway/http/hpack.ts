// HPACK (RFC 7541): header compression for our own HTTP/2 framing (registry/h2c-pool.ts).
//
// The decoder is complete (static and dynamic table, size updates, Huffman) since it reads whatever
// an upstream's encoder chooses; it is bounded (table size, string and header-list size) and throws
// HpackError on anything malformed, which the connection turns into COMPRESSION_ERROR.
// The encoder is stateless: static-table indexes where a whole field or a name matches, else
// literals without indexing (never indexed for credentials), no Huffman. The peer's dynamic table is
// never touched, so a peer's SETTINGS_HEADER_TABLE_SIZE needs no answer; fewer bytes on the wire
// would cost encoder state per connection and CPU per request on a hop that runs on loopback or a
// pod network.

export class HpackError extends Error {
  override readonly name = 'HpackError';
}

/**
 * A well-formed header block whose list is over the limit. It was decoded to its end, so the table
 * still follows the peer's: one stream's error, not the connection's.
 */
export class HeaderListTooLarge extends Error {
  override readonly name = 'HeaderListTooLarge';
}

/** RFC 7541 Appendix A, index 1..61 (index 0 unused). */
const STATIC: readonly (readonly [string, string])[] = [
  ['', ''],
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''],
  ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
  ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''],
  ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''],
  ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
  ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
];
const STATIC_COUNT = STATIC.length - 1;

/**
 * The Huffman code of RFC 7541 Appendix B is canonical: codes are handed out by length, shortest
 * first, and by symbol value within a length. So the lengths alone define it. Each row: a code
 * length and the symbols (0-255, 256 is EOS) that have it.
 */
const HUFFMAN_LENGTHS: readonly (readonly [number, readonly (number | string)[]])[] = [
  [5, ['0', '1', '2', 'a', 'c', 'e', 'i', 'o', 's', 't']],
  [6, [' ', '%', '-', '.', '/', '3', '4', '5', '6', '7', '8', '9', '=', 'A', '_', 'b', 'd', 'f', 'g', 'h', 'l', 'm', 'n', 'p', 'r', 'u']],
  [7, [':', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'Y', 'j', 'k', 'q', 'v', 'w', 'x', 'y', 'z']],
  [8, ['&', '*', ',', ';', 'X', 'Z']],
  [10, ['!', '"', '(', ')', '?']],
  [11, ["'", '+', '|']],
  [12, ['#', '>']],
  [13, [0, '$', '@', '[', ']', '~']],
  [14, ['^', '}']],
  [15, ['<', '`', '{']],
  [19, ['\\', 195, 208]],
  [20, [128, 130, 131, 162, 184, 194, 224, 226]],
  [21, [153, 161, 167, 172, 176, 177, 179, 209, 216, 217, 227, 229, 230]],
  [22, [129, 132, 133, 134, 136, 146, 154, 156, 160, 163, 164, 169, 170, 173, 178, 181, 185, 186, 187, 189, 190, 196, 198, 228, 232, 233]],
  [23, [1, 135, 137, 138, 139, 140, 141, 143, 147, 149, 150, 151, 152, 155, 157, 158, 165, 166, 168, 174, 175, 180, 182, 183, 188, 191, 197, 231, 239]],
  [24, [9, 142, 144, 145, 148, 159, 171, 206, 215, 225, 236, 237]],
  [25, [199, 207, 234, 235]],
  [26, [192, 193, 200, 201, 202, 205, 210, 213, 218, 219, 238, 240, 242, 243, 255]],
  [27, [203, 204, 211, 212, 214, 221, 222, 223, 241, 244, 245, 246, 247, 248, 250, 251, 252, 253, 254]],
  [28, [2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 127, 220, 249]],
  [30, [10, 13, 22, 256]],
];

const EOS = 256;

/**
 * The decoding table: a state machine over 4-bit nibbles. A state is a node of the code tree (the
 * bits read since the last symbol); per state and nibble: the next state, the symbol completed on
 * the way (or -1), and whether the state so far is all 1 bits (valid padding) and short enough.
 */
interface Huffman {
  /** code and length of each symbol, for the tests and an encoder */
  readonly codes: Uint32Array;
  readonly lengths: Uint8Array;
  /** [state * 16 + nibble] -> next state */
  readonly next: Uint16Array;
  /** [state * 16 + nibble] -> symbol emitted (0-255), -1 none, -2 error (EOS in the data) */
  readonly emit: Int16Array;
  /** state may end the string: at most 7 bits, all ones (a prefix of EOS) */
  readonly accepting: Uint8Array;
}

function buildHuffman(): Huffman {
  const lengths = new Uint8Array(257);
  for (const [len, symbols] of HUFFMAN_LENGTHS) {
    for (const s of symbols) lengths[typeof s === 'string' ? s.charCodeAt(0) : s] = len;
  }
  const codes = new Uint32Array(257);
  let code = 0;
  let prevLen = 0;
  for (const [len, symbols] of HUFFMAN_LENGTHS) {
    code <<= len - prevLen;
    prevLen = len;
    const sorted = symbols.map((s) => (typeof s === 'string' ? s.charCodeAt(0) : s)).sort((a, b) => a - b);
    for (const s of sorted) codes[s] = code++;
  }
  // The code tree: node 0 is the root; children[node*2+bit]; a leaf holds its symbol.
  const children: number[] = [-1, -1];
  const leaf: number[] = [-1];
  const depth: number[] = [0];
  const ones: boolean[] = [true];
  for (let s = 0; s <= 256; s++) {
    let node = 0;
    for (let i = lengths[s]! - 1; i >= 0; i--) {
      const bit = (codes[s]! >>> i) & 1;
      let child = children[node * 2 + bit]!;
      if (child === -1) {
        child = leaf.length;
        leaf.push(-1);
        children.push(-1, -1);
        depth.push(depth[node]! + 1);
        ones.push(ones[node]! && bit === 1);
        children[node * 2 + bit] = child;
      }
      node = child;
    }
    leaf[node] = s;
  }
  // States are the internal nodes; walk 4 bits from each.
  const internal: number[] = [];
  const stateOf = new Map<number, number>();
  for (let n = 0; n < leaf.length; n++) {
    if (leaf[n] === -1) {
      stateOf.set(n, internal.length);
      internal.push(n);
    }
  }
  const next = new Uint16Array(internal.length * 16);
  const emit = new Int16Array(internal.length * 16).fill(-1);
  const accepting = new Uint8Array(internal.length);
  internal.forEach((n, st) => {
    accepting[st] = ones[n]! && depth[n]! <= 7 ? 1 : 0;
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = n;
      let out = -1;
      for (let i = 3; i >= 0; i--) {
        node = children[node * 2 + ((nibble >>> i) & 1)]!;
        if (leaf[node] !== -1) {
          // A nibble completes at most one symbol: every code is at least 5 bits long.
          out = leaf[node] === EOS ? -2 : leaf[node]!;
          node = 0;
        }
      }
      next[st * 16 + nibble] = stateOf.get(node)!;
      emit[st * 16 + nibble] = out;
    }
  });
  return { codes, lengths, next, emit, accepting };
}

export const HUFFMAN: Huffman = buildHuffman();

/** Decode a Huffman-coded string (latin1: one char per octet). */
export function huffmanDecode(buf: Buffer, start: number, end: number): string {
  const { next, emit, accepting } = HUFFMAN;
  // The shortest code is 5 bits: at most 8 symbols per 5 octets.
  const out = Buffer.allocUnsafe(Math.floor(((end - start) * 8) / 5));
  let n = 0;
  let state = 0;
  for (let i = start; i < end; i++) {
    const byte = buf[i]!;
    let k = state * 16 + (byte >>> 4);
    let e = emit[k]!;
    if (e >= 0) out[n++] = e;
    else if (e === -2) throw new HpackError('EOS in a Huffman-coded string');
    state = next[k]!;
    k = state * 16 + (byte & 15);
    e = emit[k]!;
    if (e >= 0) out[n++] = e;
    else if (e === -2) throw new HpackError('EOS in a Huffman-coded string');
    state = next[k]!;
  }
  if (!accepting[state]) throw new HpackError('Huffman padding is not an EOS prefix of at most 7 bits');
  return out.toString('latin1', 0, n);
}

/** Huffman-encode a latin1 string (the tests use it; the encoder below sends raw literals). */
export function huffmanEncode(s: string): Buffer {
  const { codes, lengths } = HUFFMAN;
  const bytes: number[] = [];
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) & 0xff;
    const len = lengths[c]!;
    let code = codes[c]!;
    let left = len;
    while (left > 0) {
      const take = Math.min(left, 8 - bits);
      acc = (acc << take) | ((code >>> (left - take)) & ((1 << take) - 1));
      bits += take;
      left -= take;
      code &= (1 << left) - 1;
      if (bits === 8) {
        bytes.push(acc & 0xff);
        acc = 0;
        bits = 0;
      }
    }
  }
  if (bits > 0) bytes.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) & 0xff);
  return Buffer.from(bytes);
}

export type HeaderList = [string, string][];

/** Decodes header blocks of one connection (the dynamic table lives as long as it). */
export class HpackDecoder {
  /** Newest first. */
  private table: [string, string][] = [];
  private size = 0;
  private maxSize: number;

  /**
   * `settingsMax`: our SETTINGS_HEADER_TABLE_SIZE (the most the peer may set the table to);
   * `maxListBytes`: the largest decoded header list accepted (names + values + 32 each, RFC 9113).
   */
  constructor(private readonly settingsMax = 4096, private readonly maxListBytes = 65536) {
    this.maxSize = settingsMax;
  }

  /** Decode one whole header block (HEADERS plus its CONTINUATIONs). */
  decode(buf: Buffer): HeaderList {
    const out: HeaderList = [];
    let pos = 0;
    let listBytes = 0;
    let fieldsSeen = false;
    const int = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let v = buf[pos++]! & mask;
      if (v < mask) return v;
      let shift = 0;
      for (;;) {
        if (pos >= buf.length) throw new HpackError('truncated integer');
        const b = buf[pos++]!;
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        // Zero continuation octets would go on for ever (and 0 * 2**1100 is NaN): 5 octets hold 31 bits.
        if (v > 0x7fffffff || shift > 35) throw new HpackError('integer too large or too long');
        if ((b & 0x80) === 0) return v;
      }
    };
    const str = (): string => {
      if (pos >= buf.length) throw new HpackError('truncated string');
      const huffman = (buf[pos]! & 0x80) !== 0;
      const len = int(7);
      if (pos + len > buf.length) throw new HpackError('string longer than the block');
      const s = huffman ? huffmanDecode(buf, pos, pos + len) : buf.toString('latin1', pos, pos + len);
      pos += len;
      return s;
    };
    const entry = (index: number): readonly [string, string] => {
      if (index === 0) throw new HpackError('index 0');
      if (index <= STATIC_COUNT) return STATIC[index]!;
      const e = this.table[index - STATIC_COUNT - 1];
      if (!e) throw new HpackError(`index ${index} beyond the tables`);
      return e;
    };
    const add = (name: string, value: string): void => {
      listBytes += name.length + value.length + 32;
      if (listBytes <= this.maxListBytes) out.push([name, value]);
    };
    while (pos < buf.length) {
      const b = buf[pos]!;
      if (b & 0x80) {
        const [name, value] = entry(int(7));
        add(name, value);
        fieldsSeen = true;
      } else if (b & 0x40) {
        const index = int(6);
        const name = index ? entry(index)[0] : str();
        const value = str();
        this.insert(name, value);
        add(name, value);
        fieldsSeen = true;
      } else if (b & 0x20) {
        // Dynamic table size update: only at the start of a block, within our setting.
        if (fieldsSeen) throw new HpackError('table size update after a header field');
        const size = int(5);
        if (size > this.settingsMax) throw new HpackError(`table size ${size} above the ${this.settingsMax} allowed`);
        this.maxSize = size;
        this.evict(0);
      } else {
        // Literal without indexing (0000) or never indexed (0001): same shape, a 4-bit prefix.
        const index = int(4);
        const name = index ? entry(index)[0] : str();
        add(name, str());
        fieldsSeen = true;
      }
    }
    if (listBytes > this.maxListBytes) throw new HeaderListTooLarge(`a header list of ${listBytes} bytes, over ${this.maxListBytes}`);
    return out;
  }

  private insert(name: string, value: string): void {
    const size = name.length + value.length + 32;
    this.evict(size);
    if (size <= this.maxSize) {
      this.table.unshift([name, value]);
      this.size += size;
    }
  }

  /** Drop the oldest entries until `room` more bytes fit (an entry larger than the table empties it). */
  private evict(room: number): void {
    while (this.table.length > 0 && this.size + room > this.maxSize) {
      const [n, v] = this.table.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}

/** Static-table index by name, and by value for the few names listed with values (no key built per field). */
const STATIC_NAME = new Map<string, number>();
const STATIC_FIELD = new Map<string, Map<string, number>>();
for (let i = STATIC_COUNT; i >= 1; i--) {
  const [n, v] = STATIC[i]!;
  STATIC_NAME.set(n, i);
  if (v === '') continue;
  let values = STATIC_FIELD.get(n);
  if (!values) STATIC_FIELD.set(n, values = new Map());
  values.set(v, i);
}
/** Never put into any table by a peer or an intermediary (RFC 7541 7.1.3). */
const SENSITIVE = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);

/** Encode header fields (names lower case, values latin1 strings) to a header block. */
export function hpackEncode(fields: readonly (readonly [string, string])[]): Buffer {
  let size = 0;
  for (const [n, v] of fields) size += n.length + v.length + 12;
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  const int = (first: number, prefixBits: number, v: number): void => {
    const mask = (1 << prefixBits) - 1;
    if (v < mask) {
      out[pos++] = first | v;
      return;
    }
    out[pos++] = first | mask;
    v -= mask;
    while (v >= 128) {
      out[pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    out[pos++] = v;
  };
  const str = (s: string): void => {
    int(0, 7, s.length);
    pos += out.write(s, pos, 'latin1');
  };
  for (const [name, value] of fields) {
    const full = STATIC_FIELD.get(name)?.get(value);
    if (full !== undefined) {
      int(0x80, 7, full);
      continue;
    }
    const index = STATIC_NAME.get(name) ?? 0;
    int(SENSITIVE.has(name) ? 0x10 : 0x00, 4, index);
    if (index === 0) str(name);
    str(value);
  }
  return out.subarray(0, pos);
}
