// A logger for tests that read what the gateway logged.

import { Writable } from 'node:stream';
import pino from 'pino';

/** A pino logger at `level` whose JSON lines land in `lines`, one entry per line. */
export function capturedLogger(level: pino.Level): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(...chunk.toString().split('\n').filter(Boolean)); done(); } });
  return { logger: pino({ level }, sink), lines };
}
