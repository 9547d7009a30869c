// A key revoked while its Server-Sent Events stream is still being set up (hearing delivery
// changes waits, up to seconds, for transactions open since before) ends that stream too:
// it must not go on streaming the tenant's deliveries to a key that no longer works.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse } from '../helpers/live.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

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

it('ends a stream whose key is revoked while it starts, and sends it nothing', async () => {
  const tenant = await hl.createTenant();
  await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['*'] },
  }, tenant.apiKey);
  const key = (await hl.gql('mutation { createApiKey(name: "dashboard") { id apiKey } }', {}, tenant.apiKey)).data.createApiKey;

  // A transaction that read live_listeners (as one writing deliveries while no one listened
  // does) and is still open: the stream's set-up waits for it.
  const open = new pg.Client({ connectionString: hl.databaseUrl });
  await open.connect();
  await open.query('begin');
  await open.query('select count(*) from live_listeners');
  try {
    const stream = collectSse(hl.url, key.apiKey);
    await new Promise((r) => setTimeout(r, 300)); // its key checked, its set-up waiting
    expect((await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: key.id }, tenant.apiKey)).data).toEqual({ revokeApiKey: true });
    await open.query('rollback');
    await stream.ready;
    await stream.waitFor(() => stream.closed, 5_000);

    const res = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { deliveries { id } } }', {}, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    await receiver.waitFor(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(stream.items).toEqual([]);
    stream.stop();
  } finally {
    await open.end();
  }
});
