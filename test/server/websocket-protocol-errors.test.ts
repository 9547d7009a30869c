// A client breaking the WebSocket protocol (a message over the size limit, a frame not masked)
// has its socket closed with the code that says so, and the process logs it as one JSON line
// at debug level: nothing on stderr, no stack, whatever any client sends.
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MAX_BODY_BYTES } from '../../src/server/http-body.js';
import { createTestDatabase } from '../helpers/database.js';
import { killAllServices, spawnService, type ServiceProcess } from '../helpers/processes.js';

let service: ServiceProcess;

beforeAll(async () => {
  service = await spawnService({ DATABASE_URL: await createTestDatabase(), HOOKLINE_ROLE: 'api', LOG_LEVEL: 'debug' });
  await service.waitReady();
}, 60_000);
afterAll(killAllServices);

const wsUrl = () => `${service.url.replace('http', 'ws')}/graphql`;

async function logLines(): Promise<Record<string, unknown>[]> {
  await new Promise((r) => setTimeout(r, 300)); // the process's log written out
  // main.ts prints the generated admin token and GraphiQL's address for the operator, not as log lines.
  return service.output().stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line));
}

it('closes a socket sending a message over the size limit with 1009, logging one JSON line and nothing on stderr', async () => {
  const socket = new WebSocket(wsUrl(), 'graphql-transport-ws');
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  socket.send('x'.repeat(MAX_BODY_BYTES + 1));
  expect(await new Promise((resolve) => socket.once('close', resolve))).toBe(1009);
  const lines = (await logLines()).filter((line) => line.msg === 'WebSocket closed: the client broke the protocol');
  expect(lines).toEqual([expect.objectContaining({ level: 20, code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH', reason: 'Max payload size exceeded' })]);
  expect(service.output().stderr).toBe('');
});

it('closes a socket sending a frame not masked with 1002, logging one JSON line and nothing on stderr', async () => {
  const raw = net.connect(service.port, '127.0.0.1');
  let answer = '';
  raw.on('data', (chunk) => (answer += chunk.toString('latin1')));
  const ended = new Promise((resolve) => raw.once('close', resolve));
  raw.write(
    'GET /graphql HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n',
  );
  for (let i = 0; i < 50 && !answer.includes('\r\n\r\n'); i++) await new Promise((r) => setTimeout(r, 20));
  expect(answer).toMatch(/^HTTP\/1\.1 101 /);
  raw.write(Buffer.from([0x81, 0x02, 0x68, 0x69])); // a text frame "hi", not masked as a client's must be
  await ended;
  // The server's close frame: opcode 8, its code 1002 (protocol error).
  const frame = Buffer.from(answer.slice(answer.indexOf('\r\n\r\n') + 4), 'latin1');
  expect(frame[0]! & 0x0f).toBe(8);
  expect(frame.readUInt16BE(2)).toBe(1002);
  const lines = (await logLines()).filter((line) => line.code === 'WS_ERR_EXPECTED_MASK');
  expect(lines).toEqual([expect.objectContaining({ level: 20, msg: 'WebSocket closed: the client broke the protocol' })]);
  expect(service.output().stderr).toBe('');
});
