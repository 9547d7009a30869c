// After an outage of an endpoint: retryFailedDeliveries puts back a subscription's FAILED
// deliveries created since a time, and only those; oldest first and a batch at a time; they go
// out again (attempts keep counting), or wait paused while the subscription is inactive.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RETRY_FAILED_BATCH } from '../../src/webhooks/deliveries.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const TRIGGER = 'mutation($n: Int!) { triggerEvent(input: { event: "test.event", data: { n: $n } }) { deliveries { id subscription { id } } } }';
const RETRY_FAILED = 'mutation($subscriptionId: ID!, $since: DateTime!) { retryFailedDeliveries(subscriptionId: $subscriptionId, since: $since) { count more } }';
const UPDATE = 'mutation($id: ID!, $active: Boolean!) { updateWebhookSubscription(id: $id, input: { active: $active }) { id } }';

let hl: TestHookline;
let receiver: Receiver;
let healthy = false;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '50ms' });
  receiver = await startReceiver(() => ({ status: healthy ? 200 : 503 }));
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

const statuses = async (ids: string[]) =>
  (await hl.dataSource.query('select id, status, attempts, paused from webhook_deliveries where id = any($1) order by id', [ids])) as Array<{
    id: string;
    status: string;
    attempts: number;
    paused: boolean;
  }>;

it('puts back the FAILED deliveries of one subscription since a time, which then go out', async () => {
  const tenant = await hl.createTenant();
  const subscribe = async (path: string) =>
    (await hl.gql(CREATE, { input: { url: `${receiver.url}/${path}`, events: ['test.event'] } }, tenant.apiKey)).data.createWebhookSubscription.subscription.id as string;
  const down = await subscribe('down');
  const other = await subscribe('other');
  const bySubscription = new Map<string, string[]>([[down, []], [other, []]]);
  for (let n = 0; n < 3; n++) {
    for (const d of (await hl.gql(TRIGGER, { n }, tenant.apiKey)).data.triggerEvent.deliveries) bySubscription.get(d.subscription.id)!.push(d.id);
  }
  const all = [...bySubscription.values()].flat();
  await eventually(async () => (await statuses(all)).every((d) => d.status === 'FAILED'));
  // One of them older than the outage asked about.
  const [old, ...recent] = bySubscription.get(down)!;
  await hl.dataSource.query(`update webhook_deliveries set created_at = now() - interval '2 days' where id = $1`, [old]);
  const since = new Date(Date.now() - 86_400_000).toISOString();

  healthy = true;
  const res = await hl.gql(RETRY_FAILED, { subscriptionId: down, since }, tenant.apiKey);
  expect(res.errors).toBeUndefined();
  expect(res.data.retryFailedDeliveries).toEqual({ count: 2, more: false });
  await eventually(async () => (await statuses(recent)).every((d) => d.status === 'DELIVERED'));
  expect((await statuses(recent)).map((d) => d.attempts)).toEqual([3, 3]); // two failed, then this one
  expect((await statuses([old, ...bySubscription.get(other)!])).every((d) => d.status === 'FAILED')).toBe(true);
  const arrived = receiver.received.filter((r) => r.path === '/down' && recent.includes(String(r.headers['webhook-id'])));
  expect(arrived).toHaveLength(2 * 3); // each: two that failed, one now
  expect(receiver.received.filter((r) => r.headers['webhook-id'] === old)).toHaveLength(2); // not sent again

  // Again: nothing left since then.
  expect((await hl.gql(RETRY_FAILED, { subscriptionId: down, since }, tenant.apiKey)).data.retryFailedDeliveries).toEqual({ count: 0, more: false });
});

it(`puts back at most ${RETRY_FAILED_BATCH} a call, oldest first, paused while the subscription is inactive`, async () => {
  const tenant = await hl.createTenant();
  const subscription = (await hl.gql(CREATE, { input: { url: `${receiver.url}/paused`, events: ['test.event'] } }, tenant.apiKey)).data
    .createWebhookSubscription.subscription.id as string;
  expect((await hl.gql(UPDATE, { id: subscription, active: false }, tenant.apiKey)).errors).toBeUndefined();
  const [{ id: eventId }] = await hl.dataSource.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
    [tenant.id],
  );
  const total = RETRY_FAILED_BATCH + 5;
  await hl.dataSource.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, attempts, next_attempt_at, created_at)
     select $1, $2, $3, 'test.event', $4, 'FAILED', 2, null, now() - make_interval(secs => $5 - n) from generate_series(1, $5) as n`,
    [tenant.id, eventId, subscription, `${receiver.url}/paused`, total],
  );
  const since = new Date(Date.now() - 86_400_000).toISOString();
  const first = await hl.gql(RETRY_FAILED, { subscriptionId: subscription, since }, tenant.apiKey);
  expect(first.data.retryFailedDeliveries).toEqual({ count: RETRY_FAILED_BATCH, more: true });
  // The oldest went back, the 5 newest are left.
  const [{ newestBack, oldestLeft }] = await hl.dataSource.query(
    `select max(created_at) filter (where status = 'PENDING') as "newestBack", min(created_at) filter (where status = 'FAILED') as "oldestLeft"
       from webhook_deliveries where subscription_id = $1`,
    [subscription],
  );
  expect(newestBack.getTime()).toBeLessThan(oldestLeft.getTime());
  expect((await hl.gql(RETRY_FAILED, { subscriptionId: subscription, since }, tenant.apiKey)).data.retryFailedDeliveries).toEqual({ count: 5, more: false });
  const rows = await hl.dataSource.query(`select status, paused, count(*)::int as n from webhook_deliveries where subscription_id = $1 group by 1, 2`, [subscription]);
  expect(rows).toEqual([{ status: 'PENDING', paused: true, n: total }]);
  await new Promise((r) => setTimeout(r, 300));
  expect(receiver.received.filter((r) => r.path === '/paused')).toHaveLength(0);
});

it('refuses an unknown or deleted subscription (NOT_FOUND) and a time that is not one (BAD_USER_INPUT)', async () => {
  const tenant = await hl.createTenant();
  const subscription = (await hl.gql(CREATE, { input: { url: `${receiver.url}/gone`, events: ['test.event'] } }, tenant.apiKey)).data
    .createWebhookSubscription.subscription.id as string;
  const since = new Date(0).toISOString();
  expect((await hl.gql(RETRY_FAILED, { subscriptionId: 'not-an-id', since }, tenant.apiKey)).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  expect((await hl.gql(RETRY_FAILED, { subscriptionId: subscription, since: 'yesterday' }, tenant.apiKey)).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  expect((await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription }, tenant.apiKey)).errors).toBeUndefined();
  expect((await hl.gql(RETRY_FAILED, { subscriptionId: subscription, since }, tenant.apiKey)).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
});

it('takes since as an RFC 3339 date-time of the years 0001-9999 only, as a variable or written in the query; a refused call puts nothing back', async () => {
  const tenant = await hl.createTenant();
  const subscription = (await hl.gql(CREATE, { input: { url: `${receiver.url}/since`, events: ['test.event'] } }, tenant.apiKey)).data
    .createWebhookSubscription.subscription.id as string;
  const [{ id: eventId }] = await hl.dataSource.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
    [tenant.id],
  );
  await hl.dataSource.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, attempts, next_attempt_at)
     values ($1, $2, $3, 'test.event', $4, 'FAILED', 2, null)`,
    [tenant.id, eventId, subscription, `${receiver.url}/since`],
  );
  const failed = async () =>
    (await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where subscription_id = $1 and status = 'FAILED'`, [subscription]))[0].n;
  const literal = (since: string) =>
    hl.gql(`mutation { retryFailedDeliveries(subscriptionId: "${subscription}", since: ${JSON.stringify(since)}) { count more } }`, {}, tenant.apiKey);
  // Years PostgreSQL cannot store failed the statement (INTERNAL_SERVER_ERROR); no offset, a day
  // that is not there (moved into March), a date alone: each read one way or another.
  for (const since of ['-010000-01-01T00:00:00Z', '+010000-01-01T00:00:00Z', '0000-12-31T00:00:00Z', '2024-02-30T00:00:00Z', '2024-02-14T10:30:00', '2024-02-14', '2024-02-14T25:00:00Z']) {
    for (const res of [await hl.gql(RETRY_FAILED, { subscriptionId: subscription, since }, tenant.apiKey), await literal(since)]) {
      expect(res.errors?.[0]?.extensions?.code, `${since}: ${JSON.stringify(res.errors)}`).toBe('BAD_USER_INPUT');
      expect(res.errors?.[0]?.message).toContain('DateTime must be an RFC 3339');
    }
  }
  expect((await hl.gql(`mutation { retryFailedDeliveries(subscriptionId: "${subscription}", since: 5) { count } }`, {}, tenant.apiKey)).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  expect(await failed()).toBe(1);
  // The bounds, and an offset, are taken, as a variable and written in the query.
  expect((await hl.gql(RETRY_FAILED, { subscriptionId: subscription, since: '9999-12-31T23:59:59.999Z' }, tenant.apiKey)).data.retryFailedDeliveries).toEqual({ count: 0, more: false });
  expect((await literal('2999-01-01T00:00:00+01:00')).data.retryFailedDeliveries).toEqual({ count: 0, more: false });
  expect(await failed()).toBe(1);
  expect((await literal('0001-01-01T00:00:00Z')).data.retryFailedDeliveries).toEqual({ count: 1, more: false });
});
