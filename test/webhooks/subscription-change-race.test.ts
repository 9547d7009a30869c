// Deactivating a subscription and the record of a retry of one of its deliveries
// being sent meanwhile are one after the other, never interleaved: the change
// holds the subscription from its start, so the record (which reads it FOR SHARE)
// waits and then sees it inactive, and the retry waits paused with the others.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { QUEUE_SESSION_SETTINGS, recordAttempts, releaseClaims } from '../../src/dispatcher/queue.js';
import { poolOf } from '../../src/db/query.js';
import { lockWaiters } from '../helpers/database.js';
import { failedOutcome } from '../helpers/outcomes.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';

let hl: TestHookline;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' }); // no dispatcher: the test plays the worker
});
afterAll(() => hl?.stop());

/** A tenant, a subscription of it to `url`, and an event for deliveries the test writes itself. */
async function subscriptionWithEvent(url: string) {
  const tenant = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url, events: ['test.event'] } },
    tenant.apiKey,
  );
  const subscriptionId = created.data.createWebhookSubscription.subscription.id as string;
  const [{ id: eventId }] = await hl.dataSource.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
    [tenant.id],
  );
  return { tenant, subscriptionId, eventId: eventId as string };
}

it('a retry recorded while its subscription is being deactivated waits for the change and stays paused', async () => {
  const { tenant, subscriptionId, eventId } = await subscriptionWithEvent('http://127.0.0.1:9/hook');
  const insert = (status: string, lockedBy: string | null) =>
    hl.dataSource.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at, locked_by, lease_expires_at)
       values ($1, $2, $3, 'test.event', 'http://127.0.0.1:9/hook', $4, now() + interval '1 hour', $5::text,
               case when $5::text is null then null else now() + interval '1 minute' end)
       returning id, lease_expires_at::text as lease`,
      [tenant.id, eventId, subscriptionId, status, lockedBy],
    );
  const [waiting] = await insert('PENDING', null);
  const [sending] = await insert('SENDING', 'w1');

  // Another transaction holds the waiting delivery's row: the deactivation stops there, midway.
  const blocker = new pg.Client({ connectionString: hl.databaseUrl });
  const worker = new pg.Client({ connectionString: hl.databaseUrl });
  await blocker.connect();
  await worker.connect();
  try {
    await worker.query(QUEUE_SESSION_SETTINGS);
    const [{ pid: workerPid }] = (await worker.query('select pg_backend_pid() as pid')).rows;
    const lockedOut = () => lockWaiters(poolOf(hl.dataSource));
    await blocker.query('begin');
    await blocker.query('select 1 from webhook_deliveries where id = $1 for update', [waiting.id]);
    const deactivating = hl.gql(
      'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { active } }',
      { id: subscriptionId, input: { active: false } },
      tenant.apiKey,
    );
    await eventually(async () => (await lockedOut()).some((pid) => pid !== workerPid), 10_000, 20); // the change, midway
    // The worker records a failed attempt of the delivery it was sending: not on the state
    // before the change under way, nor waiting for it, but left for later, the row as it was.
    const outcome = failedOutcome({ deliveryId: sending.id, tenantId: tenant.id, subscriptionId, lease: sending.lease });
    expect((await recordAttempts(worker, 'w1', [outcome])).map((o) => o.deliveryId), 'left for later').toEqual([sending.id]);
    expect((await lockedOut()).includes(workerPid), 'and not waiting').toBe(false);
    expect((await hl.dataSource.query('select status from webhook_deliveries where id = $1', [sending.id]))[0].status).toBe('SENDING');
    await blocker.query('commit');
    expect((await deactivating).data.updateWebhookSubscription).toEqual({ active: false });
    expect(await recordAttempts(worker, 'w1', [outcome])).toEqual([]);
  } finally {
    await blocker.end();
    await worker.end();
  }
  const rows = await hl.dataSource.query('select id, status, paused from webhook_deliveries where id = any($1) order by id', [[waiting.id, sending.id]]);
  expect(rows).toEqual(
    [{ id: waiting.id, status: 'PENDING', paused: true }, { id: sending.id, status: 'PENDING', paused: true }].sort((a, b) => a.id.localeCompare(b.id)),
  );
});

it('a retry and a new address of its subscription at the same moment both go through, in turn', async () => {
  // A retry took the delivery, then its subscription; a change of address takes the
  // subscription, then its deliveries: each could wait for the other (a deadlock, one of
  // them refused). Both now take the subscription first.
  const { tenant, subscriptionId, eventId } = await subscriptionWithEvent('http://127.0.0.1:9/old');
  const [failed] = await hl.dataSource.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, attempts, next_attempt_at)
     values ($1, $2, $3, 'test.event', 'http://127.0.0.1:9/old', 'FAILED', 3, null) returning id`,
    [tenant.id, eventId, subscriptionId],
  );
  const blocker = new pg.Client({ connectionString: hl.databaseUrl });
  await blocker.connect();
  try {
    // The delivery is held elsewhere for a moment, so the retry and the change meet.
    await blocker.query('begin');
    await blocker.query('select 1 from webhook_deliveries where id = $1 for update', [failed.id]);
    const retrying = hl.gql('mutation($id: ID!) { retryDelivery(id: $id) { status } }', { id: failed.id }, tenant.apiKey);
    await eventually(async () => (await lockWaiters(poolOf(hl.dataSource))).length === 1, 10_000, 20);
    const moving = hl.gql(
      'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { url } }',
      { id: subscriptionId, input: { url: 'http://127.0.0.1:9/new' } },
      tenant.apiKey,
    );
    await eventually(async () => (await lockWaiters(poolOf(hl.dataSource))).length === 2, 10_000, 20);
    await blocker.query('commit');
    const [retried, moved] = await Promise.all([retrying, moving]);
    expect(retried.errors, JSON.stringify(retried.errors)).toBeUndefined();
    expect(moved.errors, JSON.stringify(moved.errors)).toBeUndefined();
    expect(retried.data.retryDelivery.status).toBe('PENDING');
  } finally {
    await blocker.end();
  }
  // The change came second: the delivery put back goes to the new address.
  const [row] = await hl.dataSource.query('select status, target_url from webhook_deliveries where id = $1', [failed.id]);
  expect(row).toEqual({ status: 'PENDING', target_url: 'http://127.0.0.1:9/new' });
});

it('a new address leaves a delivery being sent shown going where it goes; its next try, or its return untried, takes the new one', async () => {
  const { tenant, subscriptionId, eventId } = await subscriptionWithEvent('http://127.0.0.1:9/old');
  const sending = async () =>
    (
      await hl.dataSource.query(
        `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at, locked_by, lease_expires_at)
         values ($1, $2, $3, 'test.event', 'http://127.0.0.1:9/old', 'SENDING', now(), 'w1', now() + interval '1 minute')
         returning id, lease_expires_at::text as lease`,
        [tenant.id, eventId, subscriptionId],
      )
    )[0] as { id: string; lease: string };
  const [delivered, failing, untried] = [await sending(), await sending(), await sending()];
  const moved = await hl.gql(
    'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { url } }',
    { id: subscriptionId, input: { url: 'http://127.0.0.1:9/new' } },
    tenant.apiKey,
  );
  expect(moved.errors).toBeUndefined();
  const worker = new pg.Client({ connectionString: hl.databaseUrl });
  await worker.connect();
  try {
    const claim = (d: { id: string; lease: string }) => ({ deliveryId: d.id, tenantId: tenant.id, subscriptionId, lease: d.lease });
    const success = { ...failedOutcome(claim(delivered)), status: 'DELIVERED' as const, statusCode: 200, error: null, nextAttemptAt: null };
    expect(await recordAttempts(worker, 'w1', [success, failedOutcome(claim(failing))])).toEqual([]);
    expect(await releaseClaims(worker, 'w1', [untried.id])).toEqual([]);
  } finally {
    await worker.end();
  }
  const rows = await hl.dataSource.query('select id, status, target_url from webhook_deliveries where id = any($1)', [[delivered.id, failing.id, untried.id]]);
  const byId = new Map(rows.map((r: any) => [r.id, { status: r.status, target_url: r.target_url }]));
  // Delivered where its attempt went, not where it never went.
  expect(byId.get(delivered.id)).toEqual({ status: 'DELIVERED', target_url: 'http://127.0.0.1:9/old' });
  expect(byId.get(failing.id)).toEqual({ status: 'PENDING', target_url: 'http://127.0.0.1:9/new' });
  expect(byId.get(untried.id)).toEqual({ status: 'PENDING', target_url: 'http://127.0.0.1:9/new' });
});
