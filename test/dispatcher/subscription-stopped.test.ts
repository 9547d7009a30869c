// Deliveries a worker claimed and has not started yet (waiting for one of the subscription's
// slots) are "waiting" ones: deleting the subscription cancels them, deactivating it pauses
// them, as for those still in the queue. Only attempts under way finish. Workers in other
// processes hear it too (a NOTIFY), so the test runs two: an api process and a worker.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SUBSCRIPTION_STOPPED_CHANNEL } from '../../src/migrations/0003-events-deliveries.js';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { killAllServices, spawnService, type ServiceProcess } from '../helpers/processes.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const TRIGGER = 'mutation($n: Int!) { triggerEvent(input: { event: "test.event", data: { n: $n } }) { deliveries { id } } }';

let api: TestHookline;
let worker: ServiceProcess;
let receiver: Receiver;
const gates = new Map<string, { held: Promise<void> }>();

beforeAll(async () => {
  const databaseUrl = await createTestDatabase();
  api = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
  // Two attempts at a time per subscription, and up to twice that claimed: two wait, claimed.
  worker = await spawnService({
    DATABASE_URL: databaseUrl,
    HOOKLINE_ROLE: 'worker',
    HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
    HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2',
    HOOKLINE_DISABLE_ON_GONE: 'true',
  });
  await worker.waitReady();
  // Each set-up's path answers when its test says (after the change it makes has been seen):
  // so the attempts under way are still under way then, however slow the machine.
  receiver = await startReceiver(async (request) => {
    if (request.path === '/gone') return { status: 410, delayMs: 1_500 };
    const gate = gates.get(request.path);
    if (!gate) return { status: 200, delayMs: 1_500 };
    await gate.held;
    return { status: 200 };
  });
});
afterAll(async () => {
  await killAllServices();
  await api?.stop();
  await receiver?.close();
});

async function setUp(path: string) {
  let release = () => {};
  if (path !== 'gone') gates.set(`/${path}`, { held: new Promise<void>((r) => (release = r)) });
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
  return { tenant, subscriptionId, ids, release, arrived: () => receiver.received.filter((r) => r.path === `/${path}`).length };
}

/**
 * Deletes the subscription `id` names (as given) and expects the four claimed or queued
 * deliveries CANCELED, then, the two under way answered, nothing more sent.
 */
async function expectDeletionCancels(setUpDone: Awaited<ReturnType<typeof setUp>>, id = setUpDone.subscriptionId) {
  const { tenant, ids, release, arrived } = setUpDone;
  const deleted = await api.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id }, tenant.apiKey);
  expect(deleted.errors).toBeUndefined();
  await eventually(async () => (await statuses(ids)).filter((d) => d.status === 'CANCELED').length === 4, 10_000);
  release();
  await eventually(async () => (await statuses(ids)).filter((d) => d.status === 'DELIVERED').length === 2, 10_000);
  await new Promise((r) => setTimeout(r, 2_000)); // a claimed one, sent anyway, would arrive by now
  expect(arrived()).toBe(2);
}

const statuses = async (ids: string[]) =>
  (await api.dataSource.query('select status, paused from webhook_deliveries where id = any($1) order by status', [ids])) as Array<{ status: string; paused: boolean }>;

it('deleting the subscription cancels the deliveries claimed but not started; the two under way finish', async () => {
  await expectDeletionCancels(await setUp('deleted'));
});

it('the same when the id is given in upper case (a uuid in any case is the same subscription)', async () => {
  const done = await setUp('deleted-upper');
  await expectDeletionCancels(done, done.subscriptionId.toUpperCase());
});

it('a subscription deleted while its claim is held up (canceling another\'s orphan, slowly) has nothing sent', async () => {
  const tenant = await api.createTenant();
  const create = async (path: string, active = true) =>
    (await api.gql(CREATE, { input: { url: `${receiver.url}/${path}`, events: ['test.event'], active } }, tenant.apiKey)).data.createWebhookSubscription.subscription.id as string;
  // An orphan: a delivery of a deleted subscription, put back in the queue.
  const first = await create('orphan');
  const [orphan] = (await api.gql(TRIGGER, { n: 0 }, tenant.apiKey)).data.triggerEvent.deliveries.map((d: { id: string }) => d.id);
  await eventually(async () => (await statuses([orphan])).every((d) => d.status === 'DELIVERED'));
  expect((await api.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: first }, tenant.apiKey)).errors).toBeUndefined();
  const second = await create('held-up', false);
  for (let n = 0; n < 3; n++) {
    await api.dataSource.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, next_attempt_at)
       select tenant_id, event_id, $2, event, $3, 'PENDING', true, now() from webhook_deliveries where id = $1`,
      [orphan, second, `${receiver.url}/held-up`],
    );
  }
  // A slow database: canceling the orphan takes 3 s.
  await api.dataSource.query(`create or replace function test_slow_cancel() returns trigger language plpgsql as $$
    begin if old.status = 'SENDING' and new.status = 'CANCELED' then perform pg_sleep(3); end if; return new; end $$`);
  await api.dataSource.query('create trigger test_slow_cancel before update on webhook_deliveries for each row execute function test_slow_cancel()');
  try {
    // One claim takes the orphan and the second subscription's three.
    await api.dataSource.transaction(async (m) => {
      await m.query(`update webhook_deliveries set status = 'PENDING', next_attempt_at = now(), delivered_at = null where id = $1`, [orphan]);
      await m.query('update webhook_subscriptions set active = true where id = $1', [second]);
      await m.query('update webhook_deliveries set paused = false where subscription_id = $1', [second]);
      await m.query('select pg_notify($1, $2)', ['hookline_deliveries_due', tenant.id]);
    });
    await eventually(async () => {
      const [{ n }] = await api.dataSource.query(`select count(*)::int as n from webhook_deliveries where status = 'SENDING' and (subscription_id = $1 or id = $2)`, [second, orphan]);
      return n === 4;
    });
    await new Promise((r) => setTimeout(r, 300)); // the orphan's cancel is under way
    expect((await api.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: second }, tenant.apiKey)).errors).toBeUndefined();
    await new Promise((r) => setTimeout(r, 5_000));
    expect(receiver.received.filter((r) => r.path === '/held-up')).toHaveLength(0);
  } finally {
    await api.dataSource.query('drop trigger test_slow_cancel on webhook_deliveries');
  }
  await eventually(async () => (await api.dataSource.query('select status from webhook_deliveries where subscription_id = $1', [second])).every((r: { status: string }) => r.status === 'CANCELED'), 20_000);
}, 60_000);

it('the same when the worker\'s LISTEN connection was down as it happened', async () => {
  const done = await setUp('deleted-unheard');
  await api.dataSource.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-dispatcher-listen' and datname = current_database()`);
  await expectDeletionCancels(done);
});

it('a new address while the worker\'s LISTEN connection was down: the claimed ones go to it, once the worker listens again', async () => {
  const { tenant, subscriptionId, ids, release, arrived } = await setUp('changed-unheard');
  // The LISTEN connection cut, and kept from coming back until the change has committed (the
  // database takes no new connections meanwhile; the processes' open ones go on working).
  const database = pg.escapeIdentifier(new URL(api.databaseUrl).pathname.slice(1));
  const admin = new pg.Client({ connectionString: api.databaseUrl.replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  try {
    await admin.query(`alter database ${database} allow_connections false`);
    await api.dataSource.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-dispatcher-listen' and datname = current_database()`);
    const moved = await api.gql(
      'mutation($id: ID!, $url: String!) { updateWebhookSubscription(id: $id, input: { url: $url }) { id } }',
      { id: subscriptionId, url: `${receiver.url}/changed-unheard-new` },
      tenant.apiKey,
    );
    expect(moved.errors).toBeUndefined();
  } finally {
    await admin.query(`alter database ${database} allow_connections true`);
    await admin.end();
  }
  // The worker listens again (and hands back what it claimed) before the two under way finish.
  await eventually(async () => {
    const [{ n }] = await api.dataSource.query(`select count(*)::int as n from pg_stat_activity where application_name = 'hookline-dispatcher-listen' and datname = current_database()`);
    return n === 1;
  });
  await new Promise((r) => setTimeout(r, 500));
  release();
  await eventually(async () => (await statuses(ids)).every((d) => d.status === 'DELIVERED'), 20_000);
  expect(arrived()).toBe(2); // the two under way as the address changed
  expect(receiver.received.filter((r) => r.path === '/changed-unheard-new')).toHaveLength(4);
}, 40_000);

it('deactivating it pauses them (not sent), and reactivating sends them', async () => {
  const { tenant, subscriptionId, ids, release, arrived } = await setUp('deactivated');
  const update = (active: boolean) =>
    api.gql('mutation($id: ID!, $active: Boolean!) { updateWebhookSubscription(id: $id, input: { active: $active }) { id } }', { id: subscriptionId, active }, tenant.apiKey);
  expect((await update(false)).errors).toBeUndefined();
  await eventually(async () => (await statuses(ids)).filter((d) => d.status === 'PENDING' && d.paused).length === 4, 10_000);
  release();
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

it("claimed deliveries handed back while another transaction holds their subscription's row go back once it is let go, not at their lease", async () => {
  // The hand-back skips a held subscription (rather than keep the others waiting): it tries again
  // every second. Left to the lease, they waited 35 s and more (a 410's record holding the row as
  // its deactivation's notice arrived, in a run of this file).
  const { subscriptionId, ids, release } = await setUp('handed-back');
  const holder = new pg.Client({ connectionString: api.databaseUrl });
  await holder.connect();
  try {
    // The four it holds (two under way, two claimed), with the leases of their claims.
    const claims = async () =>
      (await api.dataSource.query(`select id, lease_expires_at::text as lease from webhook_deliveries where id = any($1) and status = 'SENDING'`, [ids])) as Array<{ id: string; lease: string }>;
    const before = await claims();
    expect(before).toHaveLength(4);
    const unchanged = async () => {
      const now = new Map((await claims()).map((c) => [c.id, c.lease]));
      return before.filter((c) => now.get(c.id) === c.lease).length;
    };
    await holder.query('begin');
    await holder.query('select 1 from webhook_subscriptions where id = $1 for no key update', [subscriptionId]);
    // As a deactivation's notice would (sent apart: a notice in the holder's transaction waits for its commit).
    await api.dataSource.query('select pg_notify($1, $2)', [SUBSCRIPTION_STOPPED_CHANNEL, subscriptionId]);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await unchanged(), 'the claimed two not handed back while the row is held').toBe(4);
    await holder.query('commit');
    // Handed back within a few seconds (back in the queue, or claimed anew): not at the lease's end.
    await eventually(async () => (await unchanged()) === 2, 5_000);
  } finally {
    await holder.query('rollback').catch(() => {});
    await holder.end();
    release();
  }
}, 30_000);
