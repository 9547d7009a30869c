// What an operator sees of failing deliveries: /metrics counts each failed attempt by a bounded
// reason (the receiver's answer apart from what kept it from answering), every labelled series
// exists from the start at 0 (so that increase() sees the first one), and the log says when a
// delivery ends FAILED, naming it by its ids only.
import { createServer } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;
const lines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '50ms', HOOKLINE_DELIVERY_TIMEOUT: '500ms' }, { log });
  receiver = await startReceiver((request) => {
    if (request.path === '/5xx') return { status: 503 };
    if (request.path === '/429') return { status: 429, headers: { 'retry-after': '0' } };
    if (request.path === '/4xx') return { status: 404 };
    if (request.path === '/hang') return { status: 204, delayMs: 2_000 };
    return { status: 204 };
  });
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

async function series(): Promise<Map<string, number>> {
  const text = await (await fetch(`${hl.url}/metrics`)).text();
  return new Map([...text.matchAll(/^(hookline_(?:delivery_attempts|delivery_failures|queue_claims|retention_deleted)_total\{[^}]*\}) (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
}

it('has every labelled series from the start, at 0', async () => {
  const start = await series();
  for (const name of [
    'hookline_delivery_attempts_total{outcome="success"}',
    'hookline_delivery_attempts_total{outcome="failure"}',
    ...['status_4xx', 'status_429', 'status_5xx', 'status_other', 'timeout', 'connection', 'other'].map((r) => `hookline_delivery_failures_total{reason="${r}"}`),
    'hookline_retention_deleted_total{kind="events"}',
    'hookline_retention_deleted_total{kind="deliveries"}',
  ]) {
    expect(start.get(name), name).toBe(0);
  }
  expect(start.has('hookline_queue_claims_total{result="found"}')).toBe(true);
});

it('counts each failed attempt by its reason, and logs the delivery that ends FAILED by its ids', async () => {
  const { apiKey, id: tenantId } = await hl.createTenant();
  const closed = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
  const targets = [`${receiver.url}/5xx`, `${receiver.url}/429`, `${receiver.url}/4xx`, `${receiver.url}/hang`, `http://127.0.0.1:${closed}/refused?token=secret-in-query`, `${receiver.url}/ok`];
  for (const url of targets) {
    const created = await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', { input: { url, events: ['test.event'] } }, apiKey);
    expect(created.errors).toBeUndefined();
  }
  const before = await series();
  const triggered = await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: {} } }, apiKey);
  expect(triggered.errors).toBeUndefined();
  const ids: string[] = triggered.data.triggerEvent.deliveries.map((d: { id: string }) => d.id);
  // Two attempts each (the schedule has one retry), then FAILED; the last one DELIVERED.
  await eventually(async () => {
    const rows = await hl.dataSource.query('select status from webhook_deliveries where id = any($1)', [ids]);
    return rows.filter((r: { status: string }) => r.status === 'FAILED').length === 5 && rows.some((r: { status: string }) => r.status === 'DELIVERED');
  }, 20_000);
  const after = await series();
  const moved = (name: string) => after.get(name)! - (before.get(name) ?? 0);
  expect(moved('hookline_delivery_attempts_total{outcome="failure"}')).toBe(10);
  expect(moved('hookline_delivery_attempts_total{outcome="success"}')).toBe(1);
  expect(
    Object.fromEntries(['status_5xx', 'status_429', 'status_4xx', 'timeout', 'connection', 'status_other', 'other'].map((r) => [r, moved(`hookline_delivery_failures_total{reason="${r}"}`)])),
  ).toEqual({ status_5xx: 2, status_429: 2, status_4xx: 2, timeout: 2, connection: 2, status_other: 0, other: 0 });

  const failed = lines.filter((l) => l.msg === 'delivery FAILED: its retry schedule is used up' && ids.includes(l.deliveryId as string));
  expect(failed).toHaveLength(5);
  for (const line of failed) expect(line).toMatchObject({ level: 30, tenantId, subscriptionId: expect.any(String), attempts: 2 });
  expect(failed.map((l) => l.reason).sort()).toEqual(['connection', 'status_429', 'status_4xx', 'status_5xx', 'timeout']);
  expect(JSON.stringify(lines)).not.toContain('secret-in-query');
});

it('says once that claiming fails while the database cannot claim (not twice a second), and when it works again', async () => {
  const failing = () => lines.filter((l) => l.msg === 'claiming deliveries failed; trying again every 500 ms');
  const before = failing().length;
  await hl.dataSource.query('alter table webhook_deliveries rename to webhook_deliveries_away');
  try {
    // A claim at least every second (the poll), and every 500 ms once one has failed.
    await new Promise((r) => setTimeout(r, 2_500));
  } finally {
    await hl.dataSource.query('alter table webhook_deliveries_away rename to webhook_deliveries');
  }
  expect(failing().length - before).toBe(1);
  expect(failing().at(-1)).toMatchObject({ level: 50, failures: 1 });
  await eventually(async () => lines.some((l) => l.msg === 'claiming deliveries works again' && (l.failures as number) >= 3), 5_000);
});
