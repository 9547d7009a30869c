// Deliveries a worker claimed and has not started yet (waiting for one of the subscription's
// slots) are "waiting" ones: deleting the subscription cancels them, deactivating it pauses
// them, as for those still in the queue. Only attempts under way finish. Workers in other
// processes hear it too (a NOTIFY), so the test runs two: an api process and a worker.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { killAllServices, spawnService, type ServiceProcess } from '../helpers/processes.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const TRIGGER = 'mutation($n: Int!) { triggerEvent(input: { event: "test.event", data: { n: $n } }) { deliveries { id } } }';

let api: TestHookline;
let worker: ServiceProcess;
let receiver: Receiver;

beforeAll(async () => {
  const databaseUrl = await createTestDatabase();
  api = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
  // Two attempts at a time per subscription, and up to twice that claimed: two wait, claimed.
  worker = await spawnService({
    DATABASE_URL: databaseUrl,
    HOOKLINE_ROLE: 'worker',
    HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
    HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2',
  });
  await worker.waitReady();
  receiver = await startReceiver((request) => ({ status: request.path === '/gone' ? 410 : 200, delayMs: 1_500 }));
});
afterAll(async () => {
  await killAllServices();
  await api?.stop();
  await receiver?.close();
});

async function setUp(path: string) {
  const tenant = await api.createTenant();
  const created = await api.gql(CREATE, { input: { url: `${receiver.url}/${path}`, events: ['test.event'] } }, tenant.apiKey);
  expect(created.errors).toBeUndefined();
  const subscriptionId: string = created.data.createWebhookSubscription.subscription.id;
  const ids: string[] = [];
  for (let n = 0; n < 6; n++) ids.push((await api.gql(TRIGGER, { n }, tenant.apiKey)).data.triggerEvent.deliveries[0].id);
  // Two under way, two claimed and waiting for their slots, two in the queue.
  await eventually(async () => {
    const [{ sending }] = await api.dataSource.query(`select count(*)::int as sending from webhook_deliveries where subscription_id = $1 and status = 'SENDING'`, [subscriptionId]);
    return receiver.received.filter((r) => r.path === `/${path}`).length === 2 && sending === 4;
  });
  return { tenant, subscriptionId, ids, arrived: () => receiver.received.filter((r) => r.path === `/${path}`).length };
}

const statuses = async (ids: string[]) =>
  (await api.dataSource.query('select status, paused from webhook_deliveries where id = any($1) order by status', [ids])) as Array<{ status: string; paused: boolean }>;

it('deleting the subscription cancels the deliveries claimed but not started; the two under way finish', async () => {
  const { tenant, subscriptionId, ids, arrived } = await setUp('deleted');
  const deleted = await api.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscriptionId }, tenant.apiKey);
  expect(deleted.errors).toBeUndefined();
  await eventually(async () => (await statuses(ids)).filter((d) => d.status === 'DELIVERED').length === 2, 10_000);
  await eventually(async () => (await statuses(ids)).filter((d) => d.status === 'CANCELED').length === 4, 10_000);
  await new Promise((r) => setTimeout(r, 2_000)); // a claimed one, sent anyway, would arrive by now
  expect(arrived()).toBe(2);
});

it('deactivating it pauses them (not sent), and reactivating sends them', async () => {
  const { tenant, subscriptionId, ids, arrived } = await setUp('deactivated');
  const update = (active: boolean) =>
    api.gql('mutation($id: ID!, $active: Boolean!) { updateWebhookSubscription(id: $id, input: { active: $active }) { id } }', { id: subscriptionId, active }, tenant.apiKey);
  expect((await update(false)).errors).toBeUndefined();
  await eventually(async () => {
    const rows = await statuses(ids);
    return rows.filter((d) => d.status === 'DELIVERED').length === 2 && rows.filter((d) => d.status === 'PENDING' && d.paused).length === 4;
  }, 10_000);
  await new Promise((r) => setTimeout(r, 2_000));
  expect(arrived()).toBe(2);

  expect((await update(true)).errors).toBeUndefined();
  await eventually(async () => (await statuses(ids)).every((d) => d.status === 'DELIVERED'), 20_000);
  expect(arrived()).toBe(6);
}, 40_000);

it('a 410 Gone, which deactivates it, pauses the claimed ones too', async () => {
  const { ids, arrived } = await setUp('gone');
  await eventually(async () => {
    const rows = await statuses(ids);
    return rows.filter((d) => d.status === 'PENDING' && d.paused).length === 6;
  }, 10_000);
  await new Promise((r) => setTimeout(r, 2_000));
  expect(arrived()).toBe(2);
});
