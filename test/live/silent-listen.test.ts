// The LISTEN connection of live updates only reads: when its server goes silent (a failover
// that loses the host, a network cut, no reset), nothing fails on it. It must be found out and
// replaced all the same, or the process looks healthy while its subscribers hear nothing more
// and a revoked API key it has cached goes on working.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { silenceableProxy } from '../helpers/silent-proxy.js';

let writer: TestHookline;
let watcher: TestHookline;
let receiver: Receiver;
let proxy: Awaited<ReturnType<typeof silenceableProxy>>;

beforeAll(async () => {
  const databaseUrl = await createTestDatabase();
  proxy = await silenceableProxy(new URL(databaseUrl));
  writer = await startTestHookline({}, { databaseUrl });
  // Its connections through the proxy; its LISTEN connection must answer every half second.
  watcher = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: proxy.url, livenessMs: 500 });
  receiver = await startReceiver();
});
afterAll(async () => {
  await watcher?.stop();
  await writer?.stop();
  await proxy?.close();
  await receiver?.close();
});

it('a LISTEN connection gone silent is replaced: subscribers hear what changed, and a key revoked meanwhile stops working', async () => {
  const tenant = await writer.createTenant();
  const created = await writer.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: receiver.url, events: ['test.event'] } },
    tenant.apiKey,
  );
  expect(created.errors).toBeUndefined();
  const second = (await writer.gql<any>('mutation { createApiKey(name: "second") { id apiKey } }', {}, tenant.apiKey)).data.createApiKey;
  const trigger = async () => {
    const res = await writer.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: {} } }, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    return res.data.triggerEvent.deliveries[0].id as string;
  };
  const delivered = (id: string) => (items: any[]) => items.some((i) => i.id === id && i.status === 'DELIVERED');
  const viewer = () => watcher.gql('{ viewer { id } }', {}, second.apiKey);

  // A query of its own longer than the check's limit (a replay, say) is no silence.
  const target = watcher.services.live!.target;
  const connections = target.connections;
  await target.query('select pg_sleep(1.5)', [], 3_000);
  expect(target.connections).toBe(connections);

  const subscribed = moreSubscribers(watcher, 1);
  const client = watcher.wsClient(tenant.apiKey);
  const updates = collectWs(client);
  await subscribed();
  const before = await trigger();
  await updates.waitFor(delivered(before), 15_000);
  expect((await viewer()).errors).toBeUndefined(); // the second key, cached by the watcher now

  // Its LISTEN connection goes silent for good (its other connections, and new ones, work).
  expect(proxy.silenceConnectionsOf('hookline-live')).toBe(1);
  const during = await trigger();
  expect((await writer.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: second.id }, tenant.apiKey)).data).toEqual({ revokeApiKey: true });
  await updates.waitFor(delivered(during), 15_000);
  await eventually(async () => (await viewer()).errors?.[0]?.extensions?.code === 'UNAUTHENTICATED', 10_000);
  await client.dispose();

  // And a process stopping while its LISTEN connection is silent stops.
  await eventually(() => watcher.services.live!.target.caughtUp, 10_000);
  proxy.silenceConnectionsOf('hookline-live');
  const stopped = await Promise.race([watcher.stop().then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000))]);
  expect(stopped, 'stopped within 10 s').toBe(true);
}, 60_000);
