// A client that reads promptly is never cut off as too slow, however far the server's own work
// on the updates falls behind: here every update's lookup of its subscription waits on a lock
// while more updates come than a subscriber's buffer holds. Once the lock goes, the clients
// (graphql-ws and SSE, with the contract's DeliveryUpdated) get them all, in order.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, collectWs, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const BUFFER = 20;
const DELIVERIES = 3;
const CHANGES = 60; // three times the buffer

let hl: TestHookline;
let receiver: Receiver;
let locker: pg.Client;
let writer: pg.Client;

beforeAll(async () => {
  // No dispatcher: the deliveries change only as this test changes them.
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api', HOOKLINE_LIVE_BUFFER: String(BUFFER) });
  receiver = await startReceiver();
  locker = new pg.Client({ connectionString: hl.databaseUrl });
  writer = new pg.Client({ connectionString: hl.databaseUrl });
  await locker.connect();
  await writer.connect();
});
afterAll(async () => {
  await locker?.end();
  await writer?.end();
  await hl?.stop();
  await receiver?.close();
});

it('keeps a client that reads promptly while updates wait on the server\'s own reads', async () => {
  const tenant = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: receiver.url, events: ['invoice.*'] } },
    tenant.apiKey,
  );
  const subscriptionId = created.data.createWebhookSubscription.subscription.id;
  const ids: string[] = [];
  for (let i = 0; i < DELIVERIES; i++) {
    const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'invoice.created', data: { amount: i, customer: 'Acme' } } }, tenant.apiKey);
    ids.push(res.data.triggerEvent.deliveries[0].id);
  }

  const subscribed = moreSubscribers(hl, 2);
  const ws = collectWs(hl.wsClient(tenant.apiKey));
  const sse = collectSse(hl.url, tenant.apiKey);
  await sse.ready;
  await subscribed();
  let dispatched = 0;
  hl.services.live!.target.addEventListener(`delivery:${tenant.id}`, () => dispatched++);

  // Every execution's `subscription { id }` waits for this lock; the changes still come.
  await locker.query('begin');
  await locker.query('lock table webhook_subscriptions in access exclusive mode');
  for (let i = 0; i < CHANGES; i++) {
    await writer.query('update webhook_deliveries set attempts = attempts + 1, updated_at = clock_timestamp() where id = $1', [ids[i % DELIVERIES]]);
  }
  // (A client cut off meanwhile may leave no one here listening, and the rest unheard.)
  await eventually(() => dispatched >= CHANGES || ws.closed || sse.closed, 15_000, 10);
  await locker.query('rollback');

  for (const stream of [ws, sse]) {
    await stream.waitFor((items) => items.length >= CHANGES || stream.closed, 30_000);
    expect(stream.errors).toEqual([]);
    expect(stream.closed).toBe(false);
    expect(stream.items).toHaveLength(CHANGES);
    for (const [n, id] of ids.entries()) {
      const mine = stream.items.filter((i) => i.id === id);
      expect(mine.map((i) => i.attempts)).toEqual(Array.from({ length: CHANGES / DELIVERIES }, (_, k) => k + 1));
      expect(mine.every((i) => i.subscription?.id === subscriptionId), `delivery ${n}`).toBe(true);
    }
  }
  ws.stop();
  sse.stop();
}, 90_000);
