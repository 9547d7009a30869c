// A delivery's states never go backwards on a live stream, also while a LISTEN connection that
// came back announces again what it missed: a change committed while that look-up runs is heard
// before its answer, which must then not follow with the older state it read. Here one delivery
// changes all the time (its attempts count up) while the connection is cut again and again, and
// thousands of other changed deliveries make each look-up take a while.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { collectSse, collectWs, moreSubscribers } from '../helpers/live.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const OTHERS = 5_000;
const OUTAGES = 4;

let hl: TestHookline;
let receiver: Receiver;
let writer: pg.Client;
let admin: pg.Client;

beforeAll(async () => {
  // No dispatcher: the delivery changes only as this test changes it.
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  receiver = await startReceiver();
  writer = new pg.Client({ connectionString: hl.databaseUrl });
  admin = new pg.Client({ connectionString: hl.databaseUrl });
  await writer.connect();
  await admin.connect();
});
afterAll(async () => {
  await writer?.end();
  await admin?.end();
  await hl?.stop();
  await receiver?.close();
});

it('never sends a delivery\'s older state after a newer one across reconnects', async () => {
  const tenant = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }',
    { input: { url: receiver.url, events: ['invoice.*'] } },
    tenant.apiKey,
  );
  expect(created.errors).toBeUndefined();
  const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'invoice.created', data: { amount: 1, customer: 'Acme' } } }, tenant.apiKey);
  const id: string = res.data.triggerEvent.deliveries[0].id;
  await admin.query(
    `insert into webhook_deliveries
     select (jsonb_populate_record(null::webhook_deliveries, to_jsonb(d) || jsonb_build_object('id', gen_random_uuid()))).*
       from webhook_deliveries d, generate_series(1, $2) where d.id = $1`,
    [id, OTHERS],
  );

  const subscribed = moreSubscribers(hl, 2);
  const ws = collectWs(hl.wsClient(tenant.apiKey), { deliveryId: id });
  const sse = collectSse(hl.url, tenant.apiKey, { deliveryId: id });
  await sse.ready;
  await subscribed();

  // The delivery changes, one commit after another, until the outages are over.
  let writing = true;
  let attempts = 0;
  const writes = (async () => {
    while (writing) {
      const { rows } = await writer.query<{ attempts: number }>(
        'update webhook_deliveries set attempts = attempts + 1, updated_at = clock_timestamp() where id = $1 returning attempts',
        [id],
      );
      attempts = rows[0]!.attempts;
    }
  })();
  const target = hl.services.live!.target;
  for (let i = 0; i < OUTAGES; i++) {
    const resumes = target.resumes;
    // Heard live before each cut.
    const written = Math.max(1, attempts);
    await ws.waitFor((items) => items.some((u) => u.attempts >= written));
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and datname = current_database()`);
    await eventually(() => target.resumes > resumes, 20_000, 10);
  }
  writing = false;
  await writes;

  for (const stream of [ws, sse]) {
    await stream.waitFor((items) => items.some((u) => u.attempts === attempts) || stream.closed, 20_000);
    expect(stream.errors).toEqual([]);
    const seen = stream.items.map((u) => u.attempts as number);
    const backwards = seen.flatMap((n, k) => (k && n < seen[k - 1]! ? [`${seen[k - 1]} then ${n}`] : []));
    expect(backwards).toEqual([]);
    expect(seen.at(-1)).toBe(attempts);
  }
  ws.stop();
  sse.stop();
}, 120_000);
