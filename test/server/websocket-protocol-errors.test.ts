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
const ADMIN_TOKEN = 'ws-protocol-admin-token-0123';

beforeAll(async () => {
  service = await spawnService({ DATABASE_URL: await createTestDatabase(), HOOKLINE_ROLE: 'api', LOG_LEVEL: 'debug', ADMIN_TOKEN });
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

it("closes an accepted socket flooding subscribe and complete with 4503 and a reason, nothing on stderr; a dashboard's pace passes", async () => {
  // Unbounded, one socket's flood (1.8 million pairs in 14 s) held every other tenant's requests for seconds.
  const created = await fetch(`${service.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ query: 'mutation { createTenant(name: "Flood") { apiKey } }' }),
  });
  const { apiKey } = (await created.json()).data.createTenant;
  const open = async () => {
    const socket = new WebSocket(wsUrl(), 'graphql-transport-ws');
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    const acked = new Promise((resolve) => socket.on('message', (data) => String(data).includes('connection_ack') && resolve(undefined)));
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${apiKey}` } }));
    await acked;
    return socket;
  };
  const pair = (id: string) => [
    JSON.stringify({ id, type: 'subscribe', payload: { query: 'subscription { deliveryUpdated { id } }' } }),
    JSON.stringify({ id, type: 'complete' }),
  ];
  const paced = await open();
  for (let i = 0; i < 100; i++) for (const message of pair(`p${i}`)) paced.send(message);
  const flood = await open();
  const closed = new Promise<[number, string]>((resolve) => flood.once('close', (code, reason) => resolve([code, String(reason)])));
  for (let i = 0; i < 2_000; i++) for (const message of pair(`f${i}`)) flood.send(message);
  expect(await closed).toEqual([4503, `RATE_LIMITED: more than 1000 messages a second on this connection; retry later`]);
  // The paced one is still open and served.
  const answered = new Promise((resolve) => paced.on('message', (data) => String(data).includes('"id":"last"') && resolve(undefined)));
  paced.send(JSON.stringify({ id: 'last', type: 'subscribe', payload: { query: '{ __typename }' } }));
  await answered;
  expect(paced.readyState).toBe(WebSocket.OPEN);
  paced.close();
  await new Promise((r) => setTimeout(r, 300));
  expect(service.output().stderr).toBe('');
});
