// A key revoked while its Server-Sent Events stream is still being set up (hearing delivery
// changes waits, up to seconds, for transactions open since before) ends that stream too:
// it must not go on streaming the tenant's deliveries to a key that no longer works. So does
// one revoked while the stream's request was still having its key looked up.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { poolOf } from '../../src/db/query.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse } from '../helpers/live.js';
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
    await eventually(() => hl.services.live!.apiKeyIdsInUse().includes(key.id)); // its key checked, its set-up waiting
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

it('ends a stream whose key was revoked while its request\'s key lookup was answering', async () => {
  const tenant = await hl.createTenant();
  await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['*'] },
  }, tenant.apiKey);
  const key = (await hl.gql('mutation { createApiKey(name: "dashboard") { id apiKey } }', {}, tenant.apiKey)).data.createApiKey;

  // The database answers the stream's key lookup (valid: its snapshot predates the revocation),
  // and the answer reaches the request a second late, after the process acted on the
  // revocation's notice. Only the answer's arrival is delayed; the database is the real one.
  const pool = poolOf(hl.dataSource) as unknown as { query: (...args: unknown[]) => Promise<unknown> };
  const query = pool.query;
  let delayed = false;
  pool.query = async function (this: unknown, ...args: unknown[]) {
    const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string } | undefined)?.text;
    const result = await query.apply(this, args);
    if (!delayed && text?.includes('from api_keys where key_hash')) {
      delayed = true;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    return result;
  };
  try {
    const stream = collectSse(hl.url, key.apiKey);
    await eventually(() => delayed); // the lookup answered; its answer is on its way, for a second
    expect((await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: key.id }, tenant.apiKey)).data).toEqual({ revokeApiKey: true });
    pool.query = query;
    await stream.ready;
    await stream.waitFor(() => stream.closed, 5_000);
    expect(hl.services.live!.apiKeyIdsInUse()).not.toContain(key.id);

    const before = receiver.received.length;
    await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { n: 2 } }) { deliveries { id } } }', {}, tenant.apiKey);
    await receiver.waitFor(before + 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(stream.items).toEqual([]);
    stream.stop();
  } finally {
    pool.query = query;
  }
});
