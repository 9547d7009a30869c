// A WebSocket client on a bare TCP socket, for tests that need a client the
// library would not let them be: one that stops reading and stays stopped
// (the `ws` client resumes its socket by itself).
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export interface Frame {
  opcode: number;
  payload: Buffer;
}

export interface RawWebSocket {
  socket: Socket;
  sendText(text: string): void;
  /** Reads frames until one satisfies the predicate (frames are kept in `frames`). */
  readUntil(predicate: (frame: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  frames: Frame[];
}

export async function openRawWebSocket(url: string, protocol: string): Promise<RawWebSocket> {
  const { hostname, port, pathname } = new URL(url);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(
    `GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
  );
  let buffer = Buffer.alloc(0);
  let upgraded = false;
  const frames: Frame[] = [];
  const waiters = new Set<() => void>();
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    if (!upgraded) {
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!buffer.subarray(0, end).toString().startsWith('HTTP/1.1 101')) throw new Error(`no upgrade: ${buffer.subarray(0, end)}`);
      buffer = buffer.subarray(end + 4);
      upgraded = true;
    }
    for (;;) {
      if (buffer.length < 2) break;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) break;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) break;
        length = Number(buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffer.length < offset + length) break;
      frames.push({ opcode: buffer[0]! & 0x0f, payload: buffer.subarray(offset, offset + length) });
      buffer = buffer.subarray(offset + length);
    }
    for (const wake of waiters) wake();
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    frames,
    sendText(text) {
      const payload = Buffer.from(text);
      const mask = randomBytes(4);
      const header =
        payload.length < 126
          ? Buffer.from([0x81, 0x80 | payload.length])
          : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
      const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
      socket.write(Buffer.concat([header, mask, masked]));
    },
    async readUntil(predicate, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      let seen = 0;
      for (;;) {
        for (; seen < frames.length; seen++) if (predicate(frames[seen]!)) return frames[seen]!;
        if (Date.now() > deadline) throw new Error(`no such frame in ${timeoutMs} ms (${frames.length} frames read)`);
        await Promise.race([new Promise<void>((r) => (waiters.add(r), setTimeout(r, 50))), closed]);
      }
    },
  };
}

export const closeCodeOf = (frame: Frame) => ({ code: frame.payload.readUInt16BE(0), reason: frame.payload.subarray(2).toString() });
