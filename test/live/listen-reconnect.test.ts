// The LISTEN connection lost again while it is being set up (here: while it
// waits for a transaction that read live_listeners before it) still comes
// back, and delivery updates reach subscribers again.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs } from '../helpers/live.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  receiver = await startReceiver();
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

const killLive = () =>
  hl.dataSource.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and datname = current_database()`,
  );

it('comes back after a second loss during its set-up, and streams again', async () => {
  const tenant = await hl.createTenant();
  await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: receiver.url, events: ['test.event'] } },
    tenant.apiKey,
  );
  const client = hl.wsClient(tenant.apiKey);
  const updates = collectWs(client);
  await eventually(() => hl.services.live!.target.isListening('hookline_delivery_updates'));

  // A transaction that read live_listeners: a new LISTEN waits for it (up to 5 s) before it is set up.
  const reader = new pg.Client({ connectionString: hl.databaseUrl });
  await reader.connect();
  try {
    await reader.query('begin');
    await reader.query('select count(*) from live_listeners');
    expect((await killLive()).length).toBe(1);
    await new Promise((r) => setTimeout(r, 500)); // the new connection is waiting for the reader now
    expect((await killLive()).length).toBe(1);
    await reader.query('commit');
  } finally {
    await reader.end();
  }

  await eventually(() => hl.services.live!.target.isListening('hookline_delivery_updates'), 15_000);
  const res = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: {} }) { deliveries { id } } }', {}, tenant.apiKey);
  const id = res.data.triggerEvent.deliveries[0].id;
  await updates.waitFor((items) => items.some((i: any) => i.id === id), 15_000);
  const [{ n }] = await hl.dataSource.query(
    `select count(*)::int as n from pg_stat_activity where application_name = 'hookline-live' and datname = current_database()`,
  );
  expect(n).toBe(1);
  await client.dispose();
}, 60_000);
