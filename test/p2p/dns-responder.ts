/**
 * A tiny authoritative DNS responder on UDP 127.0.0.1 for tests: A and AAAA records from a mutable
 * table (an address with a `:` is IPv6), NXDOMAIN for unknown names, an empty answer (NODATA) for a
 * name without records of the type asked. Enough for `dns.Resolver.resolve4` and `resolve6`.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export interface DnsResponder {
  /** `127.0.0.1:PORT`, for `Resolver.setServers`. */
  server: string;
  records: Map<string, string[]>;
  /** Names asked, in order. */
  queries: string[];
  /** Record types asked (`A`, `AAAA`, or the number), in the same order. */
  types: string[];
  close(): Promise<void>;
}

export async function startDnsResponder(records: Record<string, string[]> = {}): Promise<DnsResponder> {
  const table = new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v]));
  const queries: string[] = [];
  const types: string[] = [];
  const sock: Socket = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const reply = answer(msg, table, queries, types);
    if (reply) sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = (sock.address() as AddressInfo).port;
  return { server: `127.0.0.1:${port}`, records: table, queries, types, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

function answer(msg: Buffer, table: Map<string, string[]>, queries: string[], types: string[]): Buffer | undefined {
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
  types.push(qtype === 1 ? 'A' : qtype === 28 ? 'AAAA' : String(qtype));
  const ips = table.get(name);
  const answers: Buffer[] = [];
  for (const ip of ips ?? []) {
    const v6 = ip.includes(':');
    if (qtype !== (v6 ? 28 : 1)) continue;
    const data = v6 ? ipv6Bytes(ip) : Buffer.from(ip.split('.').map(Number));
    const rr = Buffer.alloc(12 + data.length);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    rr.writeUInt16BE(qtype, 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(5, 6); // TTL
    rr.writeUInt16BE(data.length, 10);
    data.copy(rr, 12);
    answers.push(rr);
  }
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  // QR, AA, RD copied; RCODE 3 (NXDOMAIN) for unknown names.
  header.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | (ips ? 0 : 3), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(answers.length, 6);
  return Buffer.concat([header, question, ...answers]);
}

/** `fd00::1` -> 16 bytes (`::` expanded). */
function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
