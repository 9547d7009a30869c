// A client that reads promptly is never cut off as too slow, however far the server's own work
// on the updates falls behind: here every update's lookup of its subscription waits on a lock
// while more updates come than a subscriber's buffer holds. Once the lock goes, the clients
// (graphql-ws and SSE, with the contract's DeliveryUpdated) get them all, in order. And when
// more updates wait than the server executes ahead of a client (LOOKAHEAD), for longer than
// the stall limit, the client waiting for them is not taken for one that stopped reading.
import pg from 'pg';
import { expect, it } from 'vitest';
import { LOOKAHEAD } from '../../src/live/shared-execution.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { apiWithLiveBuffer, collectSse, collectWs, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually } from '../helpers/receiver.js';

const BUFFER = 20;
const DELIVERIES = 3;
const CHANGES = 60; // three times the buffer

const fixture = apiWithLiveBuffer(BUFFER);

it('keeps a client that reads promptly while updates wait on the server\'s own reads', async () => {
  await promptClientsGetAll(fixture.hl, CHANGES, 0);
}, 90_000);

it('keeps it when more than the server executes ahead wait, for longer than the stall limit', async () => {
  const stallMs = 1_000;
  const slow = await startTestHookline({ HOOKLINE_ROLE: 'api', HOOKLINE_LIVE_BUFFER: '1000', HOOKLINE_LIVE_STALL: `${stallMs}ms` });
  try {
    await promptClientsGetAll(slow, LOOKAHEAD + 50, 2.5 * stallMs);
  } finally {
    await slow.stop();
  }
}, 90_000);

/** `changes` updates of three deliveries while their executions wait on a lock, kept `holdMs` more. */
async function promptClientsGetAll(hl: TestHookline, changes: number, holdMs: number) {
  const locker = new pg.Client({ connectionString: hl.databaseUrl });
  const writer = new pg.Client({ connectionString: hl.databaseUrl });
  await locker.connect();
  await writer.connect();
  try {
    await changesWhileLocked(hl, locker, writer, changes, holdMs);
  } finally {
    await locker.end();
    await writer.end();
  }
}

async function changesWhileLocked(hl: TestHookline, locker: pg.Client, writer: pg.Client, changes: number, holdMs: number) {
  const tenant = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: fixture.receiver.url, events: ['invoice.*'] } },
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
  for (let i = 0; i < changes; i++) {
    await writer.query('update webhook_deliveries set attempts = attempts + 1, updated_at = clock_timestamp() where id = $1', [ids[i % DELIVERIES]]);
  }
  // (A client cut off meanwhile may leave no one here listening, and the rest unheard.)
  await eventually(() => dispatched >= changes || ws.closed || sse.closed, 15_000, 10);
  await new Promise((resolve) => setTimeout(resolve, holdMs));
  await locker.query('rollback');

  for (const stream of [ws, sse]) {
    await stream.waitFor((items) => items.length >= changes || stream.closed, 30_000);
    expect(stream.errors).toEqual([]);
    expect(stream.closed).toBe(false);
    expect(stream.items).toHaveLength(changes);
    for (const [n, id] of ids.entries()) {
      const mine = stream.items.filter((i) => i.id === id);
      expect(mine.map((i) => i.attempts)).toEqual(Array.from({ length: Math.ceil((changes - n) / DELIVERIES) }, (_, k) => k + 1));
      expect(mine.every((i) => i.subscription?.id === subscriptionId), `delivery ${n}`).toBe(true);
    }
  }
  ws.stop();
  sse.stop();
}
