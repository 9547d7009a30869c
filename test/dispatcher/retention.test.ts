// HOOKLINE_RETENTION: events past it whose deliveries are all finished and unchanged as long
// are deleted with their deliveries, attempts and idempotency key, in every tenant; an event with
// a delivery on its way, one changed within the retention (retried by hand), or a key that still
// answers, is kept, and the sweep goes on past it. A delivery another writer holds is left alone
// without waiting. One sweep at a time across processes; a lost connection fails only the sweep.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { poolOf } from '../../src/db/query.js';
import { sweepRetention } from '../../src/dispatcher/retention.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';

const DAY = 86_400_000;
let hl: TestHookline;
let db: pg.Client;

beforeAll(async () => {
  // No dispatcher: the deliveries change only as the test changes them.
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  db = new pg.Client({ connectionString: hl.databaseUrl });
  await db.connect();
});
afterAll(async () => {
  await db?.end();
  await hl?.stop();
});

async function tenantWithSubscription() {
  const tenant = await hl.createTenant();
  const res = await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }', {
    input: { url: 'http://127.0.0.1:9/never', events: ['test.event'] },
  }, tenant.apiKey);
  expect(res.errors).toBeUndefined();
  return tenant;
}

const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate event { id } deliveries { id } } }';

/** An event (test.event reaches the subscription; invoice.sent nothing), its delivery set as given, `ageMs` old. */
async function event(apiKey: string, state: { status?: string; ageMs: number; changedMs?: number; name?: string; idempotencyKey?: string }) {
  const name = state.name ?? 'test.event';
  const data = name === 'test.event' ? {} : { invoice_id: 'i', invoice_number: 'n', sent_at: 't' };
  const res = await hl.gql(TRIGGER, { input: { event: name, data, idempotencyKey: state.idempotencyKey } }, apiKey);
  expect(res.errors).toBeUndefined();
  const { event: { id }, deliveries } = res.data.triggerEvent;
  await db.query(`update webhook_events set created_at = now() - $2 * interval '1 millisecond' where id = $1`, [id, state.ageMs]);
  for (const d of deliveries) {
    await db.query(
      `update webhook_deliveries set status = $2, created_at = now() - $3 * interval '1 millisecond', updated_at = now() - $4 * interval '1 millisecond',
              next_attempt_at = case when $2 = 'PENDING' then now() else null end where id = $1`,
      [d.id, state.status ?? 'PENDING', state.ageMs, state.changedMs ?? state.ageMs],
    );
    await db.query(`insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code) select id, 1, tenant_id, updated_at, 5, 200 from webhook_deliveries where id = $1`, [d.id]);
  }
  return { id, delivery: deliveries[0]?.id as string | undefined };
}

/** Runs `fn` with another client's transaction open (what it locks held), then rolls that back. */
async function whileAnotherTransaction(fn: (other: pg.Client) => Promise<void>) {
  const other = new pg.Client({ connectionString: hl.databaseUrl });
  await other.connect();
  try {
    await other.query('begin');
    await fn(other);
    await other.query('rollback');
  } finally {
    await other.end();
  }
}

const exists = async (table: string, id: string) => (await db.query(`select 1 from ${table} where id = $1`, [id])).rowCount === 1;
const attempts = async (deliveryId: string) => (await db.query('select count(*)::int as n from delivery_attempts where delivery_id = $1', [deliveryId])).rows[0].n;

it('deletes finished events past the retention with their deliveries and attempts, in every tenant, and keeps the rest', async () => {
  const a = await tenantWithSubscription();
  const b = await tenantWithSubscription();
  // Oldest first, those the sweep must go past: with batches of 2, they fill the first one.
  const pending = await event(a.apiKey, { status: 'PENDING', ageMs: 5 * DAY });
  const retried = await event(a.apiKey, { status: 'FAILED', ageMs: 5 * DAY - 1000, changedMs: 3_600_000 });
  const delivered = await event(a.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  const failed = await event(a.apiKey, { status: 'FAILED', ageMs: 3 * DAY });
  const canceled = await event(a.apiKey, { status: 'CANCELED', ageMs: 3 * DAY });
  const unheard = await event(a.apiKey, { name: 'invoice.sent', ageMs: 3 * DAY }); // no delivery at all
  const recent = await event(a.apiKey, { status: 'DELIVERED', ageMs: 3_600_000 });
  const theirs = await event(b.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  expect(await attempts(delivered.delivery!)).toBe(1);

  const result = await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { batch: 2, pauseMs: 0 });
  expect(result).toEqual({ swept: true, events: 5, deliveries: 4 });
  for (const gone of [delivered, failed, canceled, unheard, theirs]) {
    expect(await exists('webhook_events', gone.id)).toBe(false);
    if (gone.delivery) {
      expect(await exists('webhook_deliveries', gone.delivery)).toBe(false);
      expect(await attempts(gone.delivery)).toBe(0);
    }
  }
  for (const kept of [pending, retried, recent]) {
    expect(await exists('webhook_events', kept.id)).toBe(true);
    expect(await exists('webhook_deliveries', kept.delivery!)).toBe(true);
  }
  // What is kept is still served; what is gone is NOT_FOUND, as for any unknown id.
  expect((await hl.gql('query($id: ID!) { delivery(id: $id) { id status } }', { id: retried.delivery }, a.apiKey)).data.delivery).toMatchObject({ status: 'FAILED' });
  expect((await hl.gql('query($id: ID!) { delivery(id: $id) { id } }', { id: delivered.delivery }, a.apiKey)).data.delivery).toBeNull();
  const retry = await hl.gql('mutation($id: ID!) { retryDelivery(id: $id) { id } }', { id: failed.delivery }, a.apiKey);
  expect(retry.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
});

it('never waits for a row another writer holds: an event with a delivery being retried is kept, and gone once that is over and old', async () => {
  const tenant = await tenantWithSubscription();
  const failed = await event(tenant.apiKey, { status: 'FAILED', ageMs: 3 * DAY });
  const other = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  // A retry under way (its row updated, not yet committed) when the sweep reaches the event; it
  // is rolled back after: the retry did not happen after all.
  await whileAnotherTransaction(async (retrying) => {
    await retrying.query(`update webhook_deliveries set status = 'PENDING', next_attempt_at = now(), updated_at = now() where id = $1`, [failed.delivery]);
    // Done while the retry still holds its row: nothing waited (no deadlock, no convoy).
    expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toEqual({ swept: true, events: 1, deliveries: 1 });
    expect(await exists('webhook_events', other.id)).toBe(false);
    expect(await exists('webhook_deliveries', failed.delivery!)).toBe(true);
  });
  // Still FAILED and old: the next sweep takes it.
  expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toMatchObject({ events: 1, deliveries: 1 });
  expect(await exists('webhook_deliveries', failed.delivery!)).toBe(false);
});

it('never waits for an idempotency key or an event row another transaction holds either: that event is kept this time, the rest go', async () => {
  const tenant = await tenantWithSubscription();
  const withKey = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY, idempotencyKey: 'held-key' });
  await db.query(`update idempotency_keys set expires_at = now() - interval '2 days' where event_id = $1`, [withKey.id]);
  const rowHeld = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  const free = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  await whileAnotherTransaction(async (holder) => {
    // Its expired key being taken over by a new event, in a transaction not yet committed.
    await holder.query(`update idempotency_keys set expires_at = now() + interval '1 day' where key = 'held-key'`);
    await holder.query('select 1 from webhook_events where id = $1 for share', [rowHeld.id]);
    expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toMatchObject({ swept: true, events: 1, deliveries: 1 });
    expect(await exists('webhook_events', free.id)).toBe(false);
    expect(await exists('webhook_events', withKey.id)).toBe(true);
    expect(await exists('webhook_events', rowHeld.id)).toBe(true);
  });
  expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toMatchObject({ events: 2 });
});

it('keeps an event its idempotency key still answers with (the API\'s clock may be behind), and deletes the key with it', async () => {
  const tenant = await tenantWithSubscription();
  const { id } = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY, idempotencyKey: 'order-1' });
  // Its key expires in a minute: a repeat now answers with the event, so it stays.
  await db.query(`update idempotency_keys set expires_at = now() + interval '1 minute' where event_id = $1`, [id]);
  expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toMatchObject({ events: 0 });
  const repeat = await hl.gql(TRIGGER, { input: { event: 'test.event', data: {}, idempotencyKey: 'order-1' } }, tenant.apiKey);
  expect(repeat.data.triggerEvent).toMatchObject({ duplicate: true, event: { id } });
  // Expired (and past the margin for clocks): the event goes, and its key with it.
  await db.query(`update idempotency_keys set expires_at = now() - interval '2 hours' where event_id = $1`, [id]);
  expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toMatchObject({ events: 1 });
  expect((await db.query('select 1 from idempotency_keys where event_id = $1', [id])).rowCount).toBe(0);
  const fresh = await hl.gql(TRIGGER, { input: { event: 'test.event', data: {}, idempotencyKey: 'order-1' } }, tenant.apiKey);
  expect(fresh.data.triggerEvent.duplicate).toBe(false);
});

it('deletes in transactions of a bounded number of deliveries, each counted as it commits; a lost connection fails the sweep, not the process', async () => {
  const tenant = await tenantWithSubscription();
  for (let i = 0; i < 3; i++) await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  const batches: Array<[number, number]> = [];
  const result = await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0, batchDeliveries: 1, onBatch: (e, d) => batches.push([e, d]) });
  expect(result).toMatchObject({ events: 3, deliveries: 3 });
  expect(batches).toEqual([[1, 1], [1, 1], [1, 1]]);

  // Its session ended (a failover, say) between two batches: the sweep fails with what it had done counted.
  for (let i = 0; i < 3; i++) await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  const counted: number[] = [];
  const sweep = sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 1_000, batchDeliveries: 1, onBatch: (e) => counted.push(e) });
  await eventually(() => counted.length === 1, 10_000);
  await db.query(`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and objid = (hashtextextended('hookline retention sweep', 0) & 4294967295)::oid`);
  await expect(sweep).rejects.toThrow();
  expect(counted).toEqual([1]);
  // The lock went with the session: the next sweep runs, and finishes the work.
  expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY, { pauseMs: 0 })).toMatchObject({ swept: true, events: 2 });
});

it('sweeps one process at a time: another finds the lock taken and does nothing', async () => {
  const tenant = await tenantWithSubscription();
  const old = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  const other = new pg.Client({ connectionString: hl.databaseUrl });
  await other.connect();
  try {
    await other.query(`select pg_advisory_lock(hashtextextended('hookline retention sweep', 0))`);
    expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY)).toEqual({ swept: false, events: 0, deliveries: 0 });
    expect(await exists('webhook_events', old.id)).toBe(true);
  } finally {
    await other.end();
  }
  expect(await sweepRetention(poolOf(hl.dataSource), 2 * DAY)).toMatchObject({ swept: true });
  expect(await exists('webhook_events', old.id)).toBe(false);
});

it('runs in a process with a dispatcher when HOOKLINE_RETENTION is set, and counts what it deleted', async () => {
  const tenant = await tenantWithSubscription();
  const old = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: 3 * DAY });
  const recent = await event(tenant.apiKey, { status: 'DELIVERED', ageMs: DAY });
  const worker = await startTestHookline({ HOOKLINE_ROLE: 'worker', HOOKLINE_RETENTION: '2d' }, { databaseUrl: hl.databaseUrl, retentionFirstSweepMs: 100 });
  try {
    await eventually(async () => !(await exists('webhook_events', old.id)), 10_000);
    expect(await exists('webhook_events', recent.id)).toBe(true);
    await eventually(async () => (await worker.metric('hookline_retention_deleted_total')) >= 2, 5_000);
  } finally {
    await worker.stop();
  }
});
