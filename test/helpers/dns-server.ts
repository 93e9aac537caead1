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
