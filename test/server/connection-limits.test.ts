// Connections open at once are capped, in all and per client address: idle keep-alive
// connections (held 65 s, renewed by one request a minute) could be opened by the thousand with
// no key, until the process had no file descriptors left and its database pool failed to connect.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';

let hl: TestHookline;
const sockets: Socket[] = [];

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_MAX_CONNECTIONS_PER_ADDRESS: '3', HOOKLINE_MAX_CONNECTIONS: '5' });
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await hl?.stop();
});

/** A keep-alive connection from `localAddress` that asks GET /healthz once; resolves with the answer's status line, or 'closed'. */
function healthz(localAddress: string): Promise<string> {
  const { port } = new URL(hl.url);
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port), localAddress }, () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n'));
    sockets.push(socket);
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk;
      if (text.includes('\r\n\r\n')) resolve(text.split('\r\n')[0]!);
    });
    socket.on('error', () => resolve('closed'));
    socket.on('close', () => resolve('closed'));
  });
}

it('closes one connection more than an address may hold, and leaves other addresses alone', async () => {
  for (let i = 0; i < 3; i++) expect(await healthz('127.0.0.1')).toBe('HTTP/1.1 200 OK');
  expect(await healthz('127.0.0.1')).toBe('closed');
  expect(await healthz('127.0.0.2')).toBe('HTTP/1.1 200 OK');
});

it('closes one more than the process may hold, whatever the address', async () => {
  // 3 from 127.0.0.1 and 1 from 127.0.0.2 are held: one more fits, then none.
  expect(await healthz('127.0.0.3')).toBe('HTTP/1.1 200 OK');
  expect(await healthz('127.0.0.4')).toBe('closed');
  // A connection let go gives its place back.
  sockets[0]!.destroy();
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(await healthz('127.0.0.1')).toBe('HTTP/1.1 200 OK');
});
