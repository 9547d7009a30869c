// A subscription's new address, headers or secret reach every attempt not yet begun: one attempt
// never mixes two versions of its subscription (the address of the new with the headers of the
// old, handing a credential meant for one endpoint to another), and deliveries a dispatcher had
// claimed, but not started, go back to the queue to be claimed again as the subscription now is.
import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import { poolOf } from '../../src/db/query.js';
import { lockWaiters } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function started(env: Record<string, string>, respond?: Receiver['respond']) {
  const hl = await startTestHookline(env);
  cleanups.push(() => hl.stop());
  const receiver = await startReceiver(respond);
  cleanups.push(() => receiver.close());
  const { id: tenantId, apiKey } = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret subscription { id } } }',
    { input: { url: `${receiver.url}/old`, events: ['test.event'], headers: { 'x-endpoint': 'old-credential' } } },
    apiKey,
  );
  expect(created.errors).toBeUndefined();
  return { hl, receiver, tenantId, apiKey, subscriptionId: created.data.createWebhookSubscription.subscription.id as string };
}

it.each([
  ['triggerEvent', (hl: TestHookline, apiKey: string) => hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n: 1 } } }, apiKey)],
  // With a key, each call is written on its own (not in a batch), by another statement.
  [
    'triggerEvent with an idempotency key',
    (hl: TestHookline, apiKey: string) => hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n: 2 }, idempotencyKey: 'change-race' } }, apiKey),
  ],
  [
    'sendTestEvent',
    (hl: TestHookline, apiKey: string, subscriptionId: string) =>
      hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }', { id: subscriptionId }, apiKey),
  ],
] as const)('an event handed off as its subscription changes goes with one version of it (%s): the new address with the new headers', async (_, send) => {
  // An `all` process whose dispatcher is idle sends what it creates at once (the hand-off).
  const { hl, receiver, apiKey, subscriptionId } = await started({});
  const changer = new pg.Client({ connectionString: hl.databaseUrl });
  await changer.connect();
  cleanups.push(() => changer.end());
  // A change under way, holding the row as updateWebhookSubscription does: the insert's read of
  // the subscription waits for it, and reads the row again once it commits.
  await changer.query('begin');
  await changer.query('select from webhook_subscriptions where id = $1 for update', [subscriptionId]);
  await changer.query(`update webhook_subscriptions set url = $2, headers = '{"x-endpoint": "new-credential"}' where id = $1`, [
    subscriptionId,
    `${receiver.url}/new`,
  ]);
  const trigger = send(hl, apiKey, subscriptionId);
  await eventually(async () => (await lockWaiters(poolOf(hl.dataSource))).length > 0);
  await changer.query('commit');
  expect((await trigger).errors).toBeUndefined();
  const [request] = await receiver.waitFor(1);
  expect({ path: request!.path, endpoint: request!.headers['x-endpoint'] }).toEqual({ path: '/new', endpoint: 'new-credential' });
});

it('deliveries claimed but not started when the address, headers or secret change are sent as the subscription now is', async () => {
  // One slot: the worker claims ahead of it, and the claimed deliveries wait for the slot.
  let release!: () => void;
  let held = new Promise<void>((done) => (release = done));
  const { hl, receiver, apiKey, subscriptionId } = await started({ HOOKLINE_DISPATCH_CONCURRENCY: '1' }, async () => {
    await held;
    return { status: 204 };
  });
  const triggered = await Promise.all(
    Array.from({ length: 6 }, (_, n) => hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n } } }, apiKey)),
  );
  for (const t of triggered) expect(t.errors).toBeUndefined();
  await receiver.waitFor(1); // one on the wire, its answer held
  const claimed = async () =>
    Number((await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where status = 'SENDING'`))[0].n);
  await eventually(async () => (await claimed()) > 1); // more claimed, waiting for the slot

  const updated = await hl.gql(
    'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { url } }',
    { id: subscriptionId, input: { url: `${receiver.url}/new`, headers: { 'x-endpoint': 'new-credential' } } },
    apiKey,
  );
  expect(updated.errors).toBeUndefined();
  const rotated = await hl.gql('mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }', { id: subscriptionId }, apiKey);
  expect(rotated.errors).toBeUndefined();
  const newest = rotated.data.rotateWebhookSecret.secret as string;
  // Let the change be heard before the slot frees.
  await new Promise((r) => setTimeout(r, 300));
  release();
  held = Promise.resolve();
  const requests = await receiver.waitFor(6);
  // The one on the wire went as it was; every other went to the new address, with the new headers.
  expect(requests.slice(1).map((r) => ({ path: r.path, endpoint: r.headers['x-endpoint'] }))).toEqual(
    Array.from({ length: 5 }, () => ({ path: '/new', endpoint: 'new-credential' })),
  );
  // X-Signature is made with the newest secret.
  const { WebhookSignature } = await import('../../src/index.js');
  for (const r of requests.slice(1)) expect(WebhookSignature.verifyRaw(newest, r.body, r.headers['x-signature'] as string)).toBe(true);
});

it('a claim that reads a delivery\'s new address with its subscription\'s old headers (a change racing it) hands it back, to go as the subscription now is', async () => {
  const { hl, receiver, tenantId, subscriptionId } = await started({});
  // The state such a claim sees: the delivery's address already changed, the subscription (as
  // of the claim's snapshot) still the old one. Made here by writing the address alone.
  const [{ id: eventId }] = await hl.dataSource.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{"n":3}', now()) returning id`,
    [tenantId],
  );
  await hl.dataSource.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at)
     values ($1, $2, $3, 'test.event', $4, 'PENDING', now())`,
    [tenantId, eventId, subscriptionId, `${receiver.url}/stale`],
  );
  const [request] = await receiver.waitFor(1);
  expect({ path: request!.path, endpoint: request!.headers['x-endpoint'] }).toEqual({ path: '/old', endpoint: 'old-credential' });
  const row = await eventually(async () => {
    const [delivery] = await hl.dataSource.query('select status, attempts, target_url from webhook_deliveries where event_id = $1', [eventId]);
    return delivery.status === 'DELIVERED' && delivery;
  });
  expect(row).toEqual({ status: 'DELIVERED', attempts: 1, target_url: `${receiver.url}/old` });
});

it.each([
  ['a late notice of its deactivation', 'notice', '/inactive', 'DELIVERED'],
  ['a new address', 'url', '/inactive-new', 'DELIVERED'],
  ['its deletion', 'delete', null, 'CANCELED'],
] as const)('a test event claimed for an inactive subscription, then %s: goes as the subscription now is', async (_, change, path, status) => {
  let release!: () => void;
  const held = new Promise<void>((done) => (release = done));
  const { hl, receiver, apiKey } = await started({ HOOKLINE_DISPATCH_CONCURRENCY: '1' }, async (request) => {
    if (request.path === '/old') await held; // the one slot, held
    return { status: 204 };
  });
  const inactive = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: `${receiver.url}/inactive`, events: ['invoice.created'], active: false } },
    apiKey,
  );
  const inactiveId = inactive.data.createWebhookSubscription.subscription.id as string;
  expect((await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: {} } }, apiKey)).errors).toBeUndefined();
  await receiver.waitFor(1); // the slot taken
  const sent = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }', { id: inactiveId }, apiKey);
  expect(sent.errors).toBeUndefined();
  const testId = sent.data.sendTestEvent.id as string;
  await eventually(async () => (await hl.dataSource.query('select status from webhook_deliveries where id = $1', [testId]))[0].status === 'SENDING');
  if (change === 'notice') await hl.dataSource.query('select pg_notify($1, $2)', ['hookline_subscription_stopped', inactiveId]);
  if (change === 'url') {
    const moved = await hl.gql('mutation($id: ID!, $url: String!) { updateWebhookSubscription(id: $id, input: { url: $url }) { id } }', { id: inactiveId, url: `${receiver.url}/inactive-new` }, apiKey);
    expect(moved.errors).toBeUndefined();
  }
  if (change === 'delete') expect((await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: inactiveId }, apiKey)).errors).toBeUndefined();
  await new Promise((r) => setTimeout(r, 300));
  release();
  const row = await eventually(async () => {
    const [delivery] = await hl.dataSource.query('select status, paused from webhook_deliveries where id = $1', [testId]);
    return delivery.status === status && delivery;
  });
  expect(row).toEqual({ status, paused: false });
  await new Promise((r) => setTimeout(r, 200));
  const arrived = receiver.received.filter((r) => r.path.startsWith('/inactive')).map((r) => r.path);
  expect(arrived).toEqual(path ? [path] : []);
});

it('a test event for an inactive subscription handed back as its claim reads it (its address changed meanwhile) stays unpaused, and goes', async () => {
  const { hl, receiver, tenantId, apiKey } = await started({});
  const inactive = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: `${receiver.url}/inactive`, events: ['invoice.created'], active: false } },
    apiKey,
  );
  const inactiveId = inactive.data.createWebhookSubscription.subscription.id as string;
  // What sendTestEvent writes (unpaused, for an inactive subscription), its address changing as it is claimed.
  const [{ id: eventId }] = await hl.dataSource.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{"n":4}', now()) returning id`,
    [tenantId],
  );
  await hl.dataSource.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, test_event, next_attempt_at)
     values ($1, $2, $3, 'test.event', $4, 'PENDING', false, true, now())`,
    [tenantId, eventId, inactiveId, `${receiver.url}/stale`],
  );
  const row = await eventually(async () => {
    const [delivery] = await hl.dataSource.query('select status, paused from webhook_deliveries where event_id = $1', [eventId]);
    return delivery.status === 'DELIVERED' && delivery;
  });
  expect(row).toEqual({ status: 'DELIVERED', paused: false });
  expect(receiver.received.map((r) => r.path)).toEqual(['/inactive']);
});
