// Roles apart: an `api` process and a `worker` process on one database. The
// worker's changes reach a live client of the api process through PostgreSQL.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs, moreSubscribers, statusesOf } from '../helpers/live.js';
import { killAllServices, spawnService } from '../helpers/processes.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

let api: TestHookline;
let receiver: Receiver;
let databaseUrl: string;

beforeAll(async () => {
  databaseUrl = await createTestDatabase();
  api = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
  receiver = await startReceiver((_r, i) => ({ status: i === 0 ? 503 : 200 }));
});
afterAll(async () => {
  await killAllServices();
  await api?.stop();
  await receiver?.close();
});

it('a client of the api process sees every change the worker process makes', async () => {
  expect(api.dispatcher).toBeUndefined(); // the api role sends nothing itself
  const worker = await spawnService({
    DATABASE_URL: databaseUrl,
    HOOKLINE_ROLE: 'worker',
    HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
    HOOKLINE_RETRY_SCHEDULE: '100ms',
  });
  await worker.waitReady();
  expect((await fetch(`${worker.url}/graphql`, { method: 'POST' })).status).toBe(404); // no API on a worker

  const tenant = await api.createTenant();
  await api.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['test.event'] },
  }, tenant.apiKey);
  const subscribed = moreSubscribers(api);
  const client = api.wsClient(tenant.apiKey);
  const live = collectWs(client);
  await subscribed();
  const res = await api.gql('mutation { triggerEvent(input: { event: "test.event", data: { hello: "world" } }) { deliveries { id } } }', {}, tenant.apiKey);
  const id = res.data.triggerEvent.deliveries[0].id;
  await live.waitFor((items) => items.some((i) => i.id === id && i.status === 'DELIVERED'), 20_000);
  expect(statusesOf(live.items, id)).toEqual(['PENDING:0', 'SENDING:0', 'PENDING:1', 'SENDING:1', 'DELIVERED:2']);
  expect(await worker.metric('hookline_delivery_attempts_total')).toBe(2);
  await client.dispose();
}, 60_000);
