/**
 * A tiny authoritative DNS responder on UDP 127.0.0.1 for tests: A records from a mutable table,
 * NXDOMAIN for unknown names, an empty answer for other types. Enough for `dns.Resolver.resolve4`.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export interface DnsResponder {
  /** `127.0.0.1:PORT`, for `Resolver.setServers`. */
  server: string;
  records: Map<string, string[]>;
  /** Names asked, in order. */
  queries: string[];
  close(): Promise<void>;
}

export async function startDnsResponder(records: Record<string, string[]> = {}): Promise<DnsResponder> {
  const table = new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v]));
  const queries: string[] = [];
  const sock: Socket = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const reply = answer(msg, table, queries);
    if (reply) sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = (sock.address() as AddressInfo).port;
  return { server: `127.0.0.1:${port}`, records: table, queries, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

function answer(msg: Buffer, table: Map<string, string[]>, queries: string[]): Buffer | undefined {
  if (msg.length < 12) return undefined;
  const id = msg.readUInt16BE(0);
  const qd = msg.readUInt16BE(4);
  if (qd !== 1) return undefined;
  let off = 12;
  const labels: string[] = [];
  for (;;) {
    const len = msg[off];
    if (len === undefined) return undefined;
    off++;
    if (len === 0) break;
    labels.push(msg.subarray(off, off + len).toString('ascii'));
    off += len;
  }
  const qtype = msg.readUInt16BE(off);
  const question = msg.subarray(12, off + 4);
  const name = labels.join('.').toLowerCase();
  queries.push(name);
  const ips = table.get(name);
  const answers: Buffer[] = [];
  if (ips && qtype === 1) {
    for (const ip of ips) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(5, 6); // TTL
      rr.writeUInt16BE(4, 10);
      ip.split('.').forEach((p, i) => rr.writeUInt8(Number(p), 12 + i));
      answers.push(rr);
    }
  }
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  // QR, AA, RD copied; RCODE 3 (NXDOMAIN) for unknown names.
  header.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | (ips ? 0 : 3), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(answers.length, 6);
  return Buffer.concat([header, question, ...answers]);
}
