// A real UDP DNS server on 127.0.0.1 for tests, with answers set by the test.

import dgram from 'node:dgram';
import * as packet from 'dns-packet';

interface Records {
  a: string[];
  aaaa: string[];
  ttl: number;
}

export class TestDnsServer {
  private readonly socket = dgram.createSocket('udp4');
  private readonly records = new Map<string, Records>();
  private readonly failures = new Map<string, 'SERVFAIL' | 'NXDOMAIN' | 'timeout'>();
  readonly queries = new Map<string, number>();
  port = 0;

  async start(): Promise<this> {
    this.socket.on('error', () => {});
    this.socket.on('message', (msg, rinfo) => this.answer(msg, rinfo));
    await new Promise<void>((resolve) => this.socket.bind(0, '127.0.0.1', () => resolve()));
    this.port = this.socket.address().port;
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  setRecords(name: string, r: Partial<Records>): void {
    this.failures.delete(name);
    this.records.set(name, { a: r.a ?? [], aaaa: r.aaaa ?? [], ttl: r.ttl ?? 30 });
  }

  failWith(name: string, mode: 'SERVFAIL' | 'NXDOMAIN' | 'timeout'): void {
    this.failures.set(name, mode);
  }

  private answer(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    let q: packet.Packet;
    try {
      q = packet.decode(msg);
    } catch {
      return; // malformed: ignore
    }
    const question = q.questions?.[0];
    if (!question) return;
    const name = question.name.toLowerCase();
    this.queries.set(name, (this.queries.get(name) ?? 0) + 1);
    const fail = this.failures.get(name);
    if (fail === 'timeout') return;
    const rec = this.records.get(name);
    const answers: packet.Answer[] = [];
    if (rec && question.type === 'A') for (const ip of rec.a) answers.push({ type: 'A', name: question.name, ttl: rec.ttl, data: ip, class: 'IN' });
    if (rec && question.type === 'AAAA') for (const ip of rec.aaaa) answers.push({ type: 'AAAA', name: question.name, ttl: rec.ttl, data: ip, class: 'IN' });
    const rcode = fail === 'SERVFAIL' ? 'SERVFAIL' : fail === 'NXDOMAIN' || !rec ? 'NXDOMAIN' : 'NOERROR';
    const reply = packet.encode({
      id: q.id, type: 'response', flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | rcodeFlag(rcode),
      questions: q.questions, answers,
    });
    this.socket.send(reply, rinfo.port, rinfo.address);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

function rcodeFlag(rcode: 'NOERROR' | 'SERVFAIL' | 'NXDOMAIN'): number {
  return rcode === 'SERVFAIL' ? 2 : rcode === 'NXDOMAIN' ? 3 : 0;
}

/**
 * Run as a program (`node dns-server.js`, e.g. inside a network namespace): prints `dns PORT`, then
 * takes one JSON command per stdin line: {"set": NAME, "a": [...], "ttl": N} or {"fail": NAME, "mode": "SERVFAIL"}.
 */
async function serveFromStdin(): Promise<void> {
  const server = await new TestDnsServer().start();
  process.stdout.write(`dns ${server.port}\n`);
  let buffered = '';
  process.stdin.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        const c = JSON.parse(line) as { set?: string; a?: string[]; ttl?: number; fail?: string; mode?: 'SERVFAIL' | 'NXDOMAIN' | 'timeout' };
        if (c.set) server.setRecords(c.set, { a: c.a ?? [], ttl: c.ttl ?? 30 });
        if (c.fail) server.failWith(c.fail, c.mode ?? 'SERVFAIL');
        process.stdout.write(`ok ${line}\n`);
      } catch (err) {
        process.stdout.write(`bad ${(err as Error).message}\n`);
      }
    }
  });
  process.stdin.on('end', () => void server.close().then(() => process.exit(0)));
}

if (require.main === module) void serveFromStdin();
