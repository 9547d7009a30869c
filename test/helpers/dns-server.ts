// A DNS server on loopback UDP for the resolver's tests: it answers A and AAAA queries for
// the names it holds, never answers names under `hang.test` (a DNS server that does not
// answer), nor AAAA queries for names under `v6hang.test` (one that drops them), and answers
// NXDOMAIN for everything else.
import dgram from 'node:dgram';
import net from 'node:net';

export interface DnsServer {
  /** 'address:port', for ResolverOptions.servers. */
  server: string;
  /** Questions received, as `<name> <A|AAAA|type number>`. */
  questions: string[];
  close(): Promise<void>;
}

const A = 1;
const AAAA = 28;

function readName(message: Buffer, offset: number): [name: string, end: number] {
  const labels: string[] = [];
  let at = offset;
  while (message[at]! !== 0) {
    const length = message[at]!;
    labels.push(message.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += 1 + length;
  }
  return [labels.join('.'), at + 1];
}

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
  return Buffer.from(groups.flatMap((group) => { const n = parseInt(group, 16); return [n >> 8, n & 0xff]; }));
}

export async function startDnsServer(records: Record<string, string[]>): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const questions: string[] = [];
  socket.on('message', (message, remote) => {
    const [name, end] = readName(message, 12);
    const type = message.readUInt16BE(end);
    questions.push(`${name} ${type === A ? 'A' : type === AAAA ? 'AAAA' : type}`);
    if (name.toLowerCase().endsWith('.hang.test')) return;
    if (name.toLowerCase().endsWith('.v6hang.test') && type === AAAA) return;
    const known = records[name.toLowerCase()];
    const answers = (known ?? []).filter((address) => net.isIP(address) === (type === A ? 4 : type === AAAA ? 6 : -1));
    const header = Buffer.alloc(12);
    header.writeUInt16BE(message.readUInt16BE(0), 0); // id
    // A response, authoritative, recursion desired copied, recursion available; NXDOMAIN for unknown names.
    header.writeUInt16BE(0x8480 | (message.readUInt16BE(2) & 0x0100) | (known ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    const records_ = answers.map((address) => {
      const data = type === A ? Buffer.from(address.split('.').map(Number)) : ipv6Bytes(address);
      const record = Buffer.alloc(12);
      record.writeUInt16BE(0xc00c, 0); // the question's name
      record.writeUInt16BE(type, 2);
      record.writeUInt16BE(1, 4); // IN
      record.writeUInt32BE(60, 6);
      record.writeUInt16BE(data.length, 10);
      return Buffer.concat([record, data]);
    });
    socket.send(Buffer.concat([header, message.subarray(12, end + 4), ...records_]), remote.port, remote.address);
  });
  await new Promise<void>((done) => socket.bind(0, '127.0.0.1', done));
  return {
    server: `127.0.0.1:${socket.address().port}`,
    questions,
    close: () => new Promise((done) => socket.close(() => done())),
  };
}
