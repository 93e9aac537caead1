// HPACK: the RFC 7541 examples, nghttp2 (node:http2's encoder) as an oracle for the decoder over
// hundreds of header blocks that use its dynamic table and Huffman coding, our encoder read back by
// both, and the decoder's bounds: malformed or random blocks are an HpackError, nothing else.

import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { HUFFMAN, HeaderListTooLarge, HpackDecoder, HpackError, hpackEncode, huffmanDecode, huffmanEncode } from '../../../src/gateway/http/hpack';
import { mulberry32 } from '../../helpers/random';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('HPACK', () => {
  it('the Huffman code is complete and canonical: Kraft sum 1, EOS is 30 one bits', () => {
    let kraft = 0;
    for (let s = 0; s <= 256; s++) kraft += 2 ** -HUFFMAN.lengths[s]!;
    assert.equal(kraft, 1);
    assert.equal(HUFFMAN.lengths[256], 30);
    assert.equal(HUFFMAN.codes[256], 0x3fffffff);
    // Spot checks from RFC 7541 Appendix B.
    assert.deepEqual([HUFFMAN.codes[48], HUFFMAN.lengths[48]], [0x0, 5]); // '0'
    assert.deepEqual([HUFFMAN.codes[32], HUFFMAN.lengths[32]], [0x14, 6]); // ' '
    assert.deepEqual([HUFFMAN.codes[0], HUFFMAN.lengths[0]], [0x1ff8, 13]);
    assert.deepEqual([HUFFMAN.codes[255], HUFFMAN.lengths[255]], [0x3ffffee, 26]);
  });

  it('RFC 7541 C.2.4, C.3 and C.4: Huffman strings, and requests sharing one dynamic table', () => {
    for (const [text, coded] of [
      ['www.example.com', 'f1e3c2e5f23a6ba0ab90f4ff'], ['no-cache', 'a8eb10649cbf'],
      ['custom-key', '25a849e95ba97d7f'], ['custom-value', '25a849e95bb8e8b4bf'],
    ] as const) {
      assert.equal(huffmanEncode(text).toString('hex'), coded);
      assert.equal(huffmanDecode(hex(coded), 0, coded.length / 2), text);
    }
    const want = [
      [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']],
      [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache']],
      [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']],
    ];
    const plain = new HpackDecoder();
    const blocks = [
      '828684410f7777772e6578616d706c652e636f6d',
      '828684be58086e6f2d6361636865',
      '828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565',
    ];
    blocks.forEach((b, i) => assert.deepEqual(plain.decode(hex(b)), want[i]));
    const huff = new HpackDecoder();
    ['828684418cf1e3c2e5f23a6ba0ab90f4ff', '828684be5886a8eb10649cbf', '828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf']
      .forEach((b, i) => assert.deepEqual(huff.decode(hex(b)), want[i]));
  });

  it('decodes what nghttp2 encodes: 400 requests over one connection (dynamic table, eviction, Huffman, every allowed byte)', async () => {
    const rnd = mulberry32(7411);
    const pick = (s: string) => s[Math.floor(rnd() * s.length)]!;
    let allowed = '\t';
    for (let c = 0x20; c <= 0xff; c++) if (c !== 0x7f) allowed += String.fromCharCode(c);
    const sent: Record<string, string>[] = [];
    for (let i = 0; i < 400; i++) {
      const h: Record<string, string> = { ':path': `/p/${i}`, 'x-seq': String(i), 'x-repeat': 'the same value every time' };
      // Values of every allowed byte, short and long (a long one evicts much of the 4096-byte table).
      const len = rnd() < 0.1 ? 1000 + Math.floor(rnd() * 2000) : 1 + Math.floor(rnd() * 40);
      let v = '';
      for (let k = 0; k < len; k++) v += rnd() < 0.7 ? pick('abcdefghijklmnopqrstuvwxyz0123456789-') : pick(allowed);
      h['x-random'] = v.replace(/^[\t ]+|[\t ]+$/g, '') || 'x';
      if (i % 3 === 0) h['cookie'] = `session=${i % 7}`;
      if (i % 5 === 0) h['authorization'] = `Bearer token-${i}`;
      sent.push(h);
    }
    const got: [string, string][][] = [];
    const server = net.createServer((socket) => {
      const decoder = new HpackDecoder();
      let buf = Buffer.alloc(0);
      let prefaceSeen = false;
      let block: Buffer[] = [];
      socket.write(hex('000000040000000000')); // our (empty) SETTINGS
      socket.on('error', () => {});
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (!prefaceSeen) {
          if (buf.length < 24) return;
          buf = buf.subarray(24);
          prefaceSeen = true;
        }
        while (buf.length >= 9) {
          const len = buf.readUIntBE(0, 3);
          if (buf.length < 9 + len) break;
          const [type, flags] = [buf[3]!, buf[4]!];
          const payload = buf.subarray(9, 9 + len);
          buf = buf.subarray(9 + len);
          if (type === 4 && !(flags & 1)) socket.write(hex('000000040100000000'));
          if (type === 1 || type === 9) {
            block.push(type === 1 && flags & 0x20 ? payload.subarray(5) : payload);
            if (flags & 4) {
              got.push(decoder.decode(Buffer.concat(block)));
              block = [];
            }
          }
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
    try {
      for (const h of sent) client.request(h, { endStream: true }).on('error', () => {});
      const deadline = Date.now() + 10_000;
      while (got.length < sent.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(got.length, sent.length);
      for (const fields of got) {
        const map = Object.fromEntries(fields.filter(([n]) => n !== 'cookie' && n !== 'authorization'));
        const want = sent[Number(map['x-seq'])]!;
        for (const name of [':path', 'x-seq', 'x-repeat', 'x-random']) assert.equal(map[name], want[name], `${name} of request ${map['x-seq']}`);
        assert.equal(fields.find(([n]) => n === 'cookie')?.[1], want['cookie']);
        assert.equal(fields.find(([n]) => n === 'authorization')?.[1], want['authorization']);
      }
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('our encoder: static indexes, literals, credentials never indexed; read back as sent', () => {
    const fields: [string, string][] = [
      [':method', 'GET'], [':scheme', 'http'], [':path', '/a?b'], [':authority', 'app.test'],
      ['authorization', 'Bearer x'], ['cookie', 'a=b'], ['x-long', 'v'.repeat(300)], ['accept-encoding', 'gzip, deflate'], ['x-latin1', 'caf\u00e9'],
    ];
    const block = hpackEncode(fields);
    assert.equal(block[0], 0x82, ':method GET is static index 2');
    assert.equal(block[1], 0x86, ':scheme http is static index 6');
    assert.equal(block[2], 0x04, ':path: literal without indexing, static name 4');
    const auth = block.indexOf(Buffer.from('Bearer x')) - 3;
    assert.equal(block[auth], 0x1f, 'authorization: never indexed (0001), name index 23 = 15 + 8');
    assert.equal(block[auth + 1], 8);
    assert.deepEqual(new HpackDecoder().decode(block), fields);
  });

  const bad: [string, string][] = [
    ['index 0', '80'],
    ['an index beyond both tables', 'be'],
    ['a truncated integer', '7f'],
    ['an integer too large', '7fffffffffff0f'],
    ['a string longer than the block', '400a6162'],
    ['Huffman padding of more than 7 bits', '4081ff0161'],
    ['Huffman padding that is not all ones', '408100' + '0161'],
    ['EOS inside a Huffman string', '4084ffffffff0161'],
    ['a table size update above the setting', '3fe21f'],
    ['a table size update after a field', '8220'],
    ['an integer padded with zero continuation octets (it would read as NaN)', '3f' + '80'.repeat(200) + '00'],
  ];
  for (const [name, block] of bad) {
    it(`refuses ${name} with an HpackError`, () => {
      assert.throws(() => new HpackDecoder().decode(hex(block)), HpackError);
    });
  }

  it('a header list over the limit is HeaderListTooLarge, decoded to its end (the table follows); a table size update shrinks and evicts', () => {
    const d = new HpackDecoder(4096, 100);
    // An indexed field (literal with incremental indexing, 0x40) in an oversized block still enters the table.
    const big = Buffer.concat([Buffer.from([0x40, 3]), Buffer.from('x-a'), Buffer.from([80]), Buffer.from('a'.repeat(80)), Buffer.from([0x40, 3]), Buffer.from('x-b'), Buffer.from([1]), Buffer.from('b')]);
    assert.throws(() => d.decode(big), (err: Error) => err instanceof HeaderListTooLarge && !(err instanceof HpackError));
    assert.deepEqual(d.decode(hex('be')), [['x-b', 'b']], 'both entries went into the table: index 62 is the newest');
    assert.throws(() => d.decode(hex('bf')), HeaderListTooLarge, 'index 63 is x-a (over the limit alone)');
    const t = new HpackDecoder();
    t.decode(hex('400a637573746f6d2d6b65790c637573746f6d2d76616c7565')); // custom-key: custom-value, indexed
    assert.deepEqual(t.decode(hex('be')), [['custom-key', 'custom-value']]);
    assert.throws(() => t.decode(hex('20be')), HpackError, 'size 0 empties the table');
  });

  it('a Huffman string of any length decodes (no limit from the call stack): 200,000 symbols, all 256 octets', () => {
    let text = '';
    for (let i = 0; i < 200_000; i++) text += String.fromCharCode(i % 7 === 0 ? (i / 7) % 256 : 97 + (i % 26));
    const coded = huffmanEncode(text);
    assert.equal(huffmanDecode(coded, 0, coded.length), text);
  });

  it('20,000 random and mutated blocks: each decodes or is an HpackError, never anything else', () => {
    const rnd = mulberry32(99);
    const seeds = [hex('828684418cf1e3c2e5f23a6ba0ab90f4ff'), hex('828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf'), hpackEncode([[':status', '200'], ['x', 'y'.repeat(50)]])];
    const d = new HpackDecoder(4096, 8192);
    let ok = 0;
    for (let i = 0; i < 20_000; i++) {
      let b: Buffer;
      if (i % 2 === 0) {
        b = Buffer.alloc(Math.floor(rnd() * 64));
        for (let k = 0; k < b.length; k++) b[k] = Math.floor(rnd() * 256);
      } else {
        b = Buffer.from(seeds[i % seeds.length]!);
        for (let k = 0; k < 3; k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
        if (rnd() < 0.3) b = b.subarray(0, Math.floor(rnd() * b.length));
      }
      try {
        d.decode(b);
        ok += 1;
      } catch (err) {
        assert.ok(err instanceof HpackError, `block ${b.toString('hex')}: ${String(err)}`);
      }
    }
    assert.ok(ok > 100 && ok < 20_000, `${ok} decoded`);
  });
});
