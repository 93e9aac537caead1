// Test payloads: bytes that differ for every seed and every offset, so a lost, repeated or reordered
// chunk changes the digest.

import { createHash } from 'node:crypto';

export function seededBytes(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  const whole = size - (size % 4);
  for (let i = 0; i < whole; i += 4) b.writeUInt32LE(((i + 1) * (2654435761 + seed * 40503)) >>> 0, i);
  for (let i = whole; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
