// A due delivery another transaction holds locked (an operator's UPDATE, a long outbox
// transaction) is passed by the claim (SKIP LOCKED), yet is the next due row: the worker must
// wait a little before claiming again, not claim in a loop until the lock goes.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;
beforeAll(async () => {
  hl = await startTestHookline();
  receiver = await startReceiver();
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

const commits = async () =>
  Number((await hl.dataSource.query('select xact_commit from pg_stat_database where datname = current_database()'))[0].xact_commit);

it('claims a few times a second, not in a loop, while the next due delivery is locked; then sends it', async () => {
  const tenant = await hl.createTenant();
  await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['test.event'] },
  }, tenant.apiKey);
  const res = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { deliveries { id } } }', {}, tenant.apiKey);
  const id: string = res.data.triggerEvent.deliveries[0].id;
  await receiver.waitFor(1);
  await eventually(async () => (await hl.dataSource.query('select status from webhook_deliveries where id = $1', [id]))[0].status === 'DELIVERED');

  const holder = new pg.Client({ connectionString: hl.databaseUrl });
  await holder.connect();
  try {
    // Due again in a moment, and locked until the end of the measure.
    await holder.query(`update webhook_deliveries set status = 'PENDING', next_attempt_at = now() + interval '200 milliseconds', delivered_at = null where id = $1`, [id]);
    await holder.query('begin');
    await holder.query('select 1 from webhook_deliveries where id = $1 for update', [id]);
    await new Promise((r) => setTimeout(r, 500));
    const before = await commits();
    await new Promise((r) => setTimeout(r, 2_000));
    const during = (await commits()) - before;
    // Claiming in a loop made about 900 transactions a second here; waiting 20 ms between, under 100.
    expect(during).toBeLessThan(400);
    await holder.query('rollback');
  } finally {
    await holder.end();
  }
  await receiver.waitFor(2, 10_000);
});
