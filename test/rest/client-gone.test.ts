// A REST client that hangs up before its body is whole is no fault of the service's: logged at
// debug, not as an error, and never as the database's absence (a reset's ECONNRESET looked like one).
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';

let hl: TestHookline;
const lines: string[] = [];

beforeAll(async () => {
  hl = await startTestHookline({}, { log: createLogger('debug', { write: (line: string) => void lines.push(line) }) });
});
afterAll(async () => {
  await hl?.stop();
});

it('logs a client that resets its connection mid-body at debug, as gone', async () => {
  const { apiKey } = await hl.createTenant();
  const { port } = new URL(hl.url);
  lines.length = 0;
  const socket = net.connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(
    `POST /api/v1/tenant/webhooks/deliveries HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${apiKey}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"event": "in',
  );
  await new Promise((r) => setTimeout(r, 200)); // the request reached its handler, reading the body
  socket.resetAndDestroy();
  await eventually(() => lines.some((line) => line.includes('client went away')), 5_000);
  const entries = lines.map((line) => JSON.parse(line) as { level: number | string; msg: string });
  expect(entries.filter((entry) => /REST request failed|cannot be reached/.test(entry.msg))).toEqual([]);
  // Still serving.
  const res = await fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, { headers: { authorization: `Bearer ${apiKey}` } });
  expect(res.status).toBe(200);
});
