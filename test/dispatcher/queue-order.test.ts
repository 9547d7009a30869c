// The queue's statements under contention: which deliveries a claim takes when a
// subscription has more due than its share, that a delivery without a subscription
// is never left out, that recording a failed attempt cannot undo a
// subscription's (de)activation committed while the record ran, and that
// workers told 410 Gone by one endpoint at once retire it together, and that an
// attempt recorded after its lease expired leaves a later claim of it alone.
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { QUEUE_SESSION_SETTINGS, claimDeliveries, reclaimLostDeliveries, recordAttempts, recordOutcomes, releaseClaims, signOff, type AttemptOutcome } from '../../src/dispatcher/queue.js';
import { failedOutcome } from '../helpers/outcomes.js';
import { createTestDatabase } from '../helpers/database.js';

let databaseUrl: string;
let db: pg.Client;
let tenantId: string;
let eventId: string;

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query(QUEUE_SESSION_SETTINGS);
  return client;
}

beforeAll(async () => {
  databaseUrl = await createTestDatabase();
  db = await connect();
  ({ rows: [{ id: tenantId }] } = await db.query(`insert into tenants (name) values ('Queue order') returning id`));
  ({ rows: [{ id: eventId }] } = await db.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
    [tenantId],
  ));
});
afterAll(async () => {
  await db?.end();
});
// Every test starts with an empty queue.
beforeEach(async () => {
  await db.query(`delete from webhook_deliveries`);
});

async function subscription(active = true): Promise<string> {
  const { rows: [row] } = await db.query(
    `insert into webhook_subscriptions (tenant_id, url, events, secret, active) values ($1, 'https://example.com/hook', '{*}', 'whsec_order-order-order', $2) returning id`,
    [tenantId, active],
  );
  return row.id;
}

async function delivery(fields: { id?: string; subscriptionId: string | null; dueAgo?: string; status?: string; lockedBy?: string }): Promise<string> {
  const { rows: [row] } = await db.query(
    `insert into webhook_deliveries (id, tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at, locked_by, lease_expires_at)
     values (coalesce($1::uuid, gen_random_uuid()), $2, $3, $4, 'test.event', 'https://example.com/hook', $5, now() - $6::interval, $7,
             case when $7::text is null then null else now() + interval '1 minute' end)
     returning id`,
    [fields.id ?? null, tenantId, eventId, fields.subscriptionId, fields.status ?? 'PENDING', fields.dueAgo ?? '1 minute', fields.lockedBy ?? null],
  );
  return row.id;
}

const claim = (perSubscription: number, busy = new Map<string, number>(), tenants = { share: 100, busy: new Map<string, number>() }) =>
  claimDeliveries(db, { workerId: 'w1', limit: 8, leaseMs: 60_000, subscriptions: { share: perSubscription, busy }, tenants });

it('takes a subscription\'s longest-due deliveries first when it has more due than its share', async () => {
  const s = await subscription();
  // The ids would put them the other way round.
  const older = await delivery({ id: 'ffffffff-ffff-4fff-bfff-ffffffffffff', subscriptionId: s, dueAgo: '10 minutes' });
  const newer = await delivery({ id: '00000000-0000-4000-8000-000000000000', subscriptionId: s, dueAgo: '1 minute' });
  const first = await claim(1);
  expect(first.map((d) => d.id)).toEqual([older]);
  expect((await claim(1, new Map([[s, 0]]))).map((d) => d.id)).toEqual([newer]);
});

it('takes at most a tenant\'s share, less what the worker holds of it, across its subscriptions', async () => {
  const [s1, s2] = [await subscription(), await subscription()];
  for (let i = 0; i < 3; i++) {
    await delivery({ subscriptionId: s1, dueAgo: `${10 - i} minutes` });
    await delivery({ subscriptionId: s2, dueAgo: `${10 - i} minutes` });
  }
  // Each subscription's share (8) would allow all six; the tenant's (4, of which 1 held) allows 3.
  const claimed = await claim(8, new Map(), { share: 4, busy: new Map([[tenantId, 1]]) });
  expect(claimed).toHaveLength(3);
  // At its share, the tenant is left out altogether.
  expect(await claim(8, new Map(), { share: 4, busy: new Map([[tenantId, 4]]) })).toEqual([]);
});

it('claims a delivery whose subscription was deleted while other subscriptions are at their share', async () => {
  const busy = await subscription();
  await delivery({ subscriptionId: busy });
  const orphan = await delivery({ subscriptionId: null });
  const claimed = await claim(1, new Map([[busy, 1]]));
  // Claimed with no secret: the dispatcher cancels it rather than leave it due for ever.
  expect(claimed.map((d) => ({ id: d.id, secret: d.secret }))).toEqual([{ id: orphan, secret: null }]);
});

/** The lease of a delivery's claim, as the claim returns it. */
async function leaseOf(deliveryId: string): Promise<string> {
  const { rows: [row] } = await db.query('select lease_expires_at::text as lease from webhook_deliveries where id = $1', [deliveryId]);
  return row.lease;
}

function failedAttempt(deliveryId: string, subscriptionId: string | null, lease: string): AttemptOutcome {
  return failedOutcome({ deliveryId, tenantId, subscriptionId, lease });
}

/**
 * A subscription's (de)activation runs in `other`'s open transaction as
 * subscriptions.ts does it (the subscription, then its PENDING deliveries), while
 * a worker records a failed attempt of one of its deliveries that was being sent.
 */
async function recordDuring(change: { active: boolean }, subscriptionId: string, deliveryId: string) {
  const other = await connect();
  const worker = await connect();
  try {
    await other.query('begin');
    await other.query(`update webhook_subscriptions set active = $2 where id = $1`, [subscriptionId, change.active]);
    await other.query(`update webhook_deliveries set paused = $2 where subscription_id = $1 and status = 'PENDING'`, [subscriptionId, !change.active]);
    const outcome = failedAttempt(deliveryId, subscriptionId, await leaseOf(deliveryId));
    // The record does not act on the state before the change under way, nor wait for it
    // (holding up the rest of its batch): it leaves the outcome for later, the row as it was.
    expect((await recordAttempts(worker, 'w1', [outcome])).map((o) => o.deliveryId)).toEqual([deliveryId]);
    const { rows: [held] } = await db.query(`select status, locked_by from webhook_deliveries where id = $1`, [deliveryId]);
    expect(held).toEqual({ status: 'SENDING', locked_by: 'w1' });
    await other.query('commit');
    expect(await recordAttempts(worker, 'w1', [outcome])).toEqual([]);
  } finally {
    await other.end();
    await worker.end();
  }
  const { rows: [row] } = await db.query(`select status, paused, locked_by from webhook_deliveries where id = $1`, [deliveryId]);
  return row;
}

it('a retry recorded while its subscription is being reactivated is not left paused', async () => {
  const s = await subscription(false);
  const d = await delivery({ subscriptionId: s, status: 'SENDING', lockedBy: 'w1' });
  expect(await recordDuring({ active: true }, s, d)).toEqual({ status: 'PENDING', paused: false, locked_by: null });
});

it('a retry recorded while its subscription is being deactivated waits with its other deliveries', async () => {
  const s = await subscription(true);
  const d = await delivery({ subscriptionId: s, status: 'SENDING', lockedBy: 'w1' });
  expect(await recordDuring({ active: false }, s, d)).toEqual({ status: 'PENDING', paused: true, locked_by: null });
});

it('two workers recording a 410 Gone of one subscription at once both finish, and its retries wait', async () => {
  const pools = ['w1', 'w2'].map(() => new pg.Pool({ connectionString: databaseUrl, max: 2, onConnect: (c) => c.query(QUEUE_SESSION_SETTINGS) }));
  try {
    for (let round = 0; round < 10; round++) {
      const s = await subscription(true);
      const ids = [await delivery({ subscriptionId: s, status: 'SENDING', lockedBy: 'w1' }), await delivery({ subscriptionId: s, status: 'SENDING', lockedBy: 'w2' })];
      const gone = async (id: string) => ({ ...failedAttempt(id, s, await leaseOf(id)), statusCode: 410, error: 'HTTP 410', gone: true, targetUrl: 'https://example.com/hook' });
      const outcomes = [await gone(ids[0]!), await gone(ids[1]!)];
      // One may find the subscription held by the other's record: it tries again, as the dispatcher does.
      const record = async (pool: pg.Pool, worker: string, outcome: AttemptOutcome) => {
        for (let left = [outcome]; left.length; await new Promise((r) => setTimeout(r, 10))) {
          ({ deferred: left } = await recordOutcomes(pool, worker, left, 'the endpoint answered 410 Gone'));
        }
      };
      await Promise.all([record(pools[0]!, 'w1', outcomes[0]!), record(pools[1]!, 'w2', outcomes[1]!)]);
      const { rows: [sub] } = await db.query('select active, disabled_reason from webhook_subscriptions where id = $1', [s]);
      expect(sub).toEqual({ active: false, disabled_reason: 'the endpoint answered 410 Gone' });
      const { rows } = await db.query('select status, paused from webhook_deliveries where id = any($1) order by id', [ids]);
      expect(rows).toEqual([{ status: 'PENDING', paused: true }, { status: 'PENDING', paused: true }]);
    }
  } finally {
    await Promise.all(pools.map((p) => p.end()));
  }
});

it('an outcome recorded after its lease expired leaves a new claim of the same worker alone', async () => {
  const s = await subscription();
  const d = await delivery({ subscriptionId: s, dueAgo: '1 minute' });
  const [first] = await claim(8);
  expect(first!.id).toBe(d);
  // Its record is held up past the lease: the delivery goes back to the queue, and the same worker claims it again.
  await db.query(`update webhook_deliveries set lease_expires_at = now() - interval '1 second' where id = $1`, [d]);
  await db.query(`update webhook_deliveries set status = 'PENDING', lease_expires_at = null, locked_by = null where status = 'SENDING' and lease_expires_at < now()`);
  const [second] = await claim(8);
  expect(second!.id).toBe(d);
  expect(second!.lease).not.toBe(first!.lease);

  // The first attempt's outcome arrives now: logged, but the second claim keeps the delivery.
  await recordAttempts(db, 'w1', [failedAttempt(d, s, first!.lease)]);
  const { rows: [held] } = await db.query('select status, locked_by, lease_expires_at::text as lease from webhook_deliveries where id = $1', [d]);
  expect(held).toEqual({ status: 'SENDING', locked_by: 'w1', lease: second!.lease });

  // The second attempt's outcome is recorded as usual.
  await recordAttempts(db, 'w1', [{ ...failedAttempt(d, s, second!.lease), status: 'DELIVERED', statusCode: 204, error: null, nextAttemptAt: null }]);
  const { rows: [done] } = await db.query('select status, locked_by, attempts, last_status_code from webhook_deliveries where id = $1', [d]);
  expect(done).toEqual({ status: 'DELIVERED', locked_by: null, attempts: 2, last_status_code: 204 });
  // Both attempts were made, and both are in the log, each with a number of its own.
  const { rows: log } = await db.query('select number, status_code from delivery_attempts where delivery_id = $1 order by number', [d]);
  expect(log).toEqual([
    { number: 1, status_code: 500 },
    { number: 2, status_code: 204 },
  ]);
});

it('an outcome recorded twice (the statement run again after its answer was lost) counts once', async () => {
  const s = await subscription();
  const d = await delivery({ subscriptionId: s });
  const [claimed] = await claim(8);
  const outcome = { ...failedAttempt(d, s, claimed!.lease), startedAt: new Date('2026-11-29T03:00:00.123Z') };
  await recordAttempts(db, 'w1', [outcome]);
  await recordAttempts(db, 'w1', [outcome]);
  const { rows: [row] } = await db.query('select attempts, status from webhook_deliveries where id = $1', [d]);
  expect(row).toEqual({ attempts: 1, status: 'PENDING' });
  const { rows: log } = await db.query('select number from delivery_attempts where delivery_id = $1', [d]);
  expect(log).toEqual([{ number: 1 }]);
});

it('a late outcome and the new claim\'s outcome in one batch are both counted and logged', async () => {
  const s = await subscription();
  const d = await delivery({ subscriptionId: s });
  const [first] = await claim(8);
  await db.query(`update webhook_deliveries set status = 'PENDING', lease_expires_at = null, locked_by = null where id = $1`, [d]);
  const [second] = await claim(8);
  expect(second!.id).toBe(d);
  await recordAttempts(db, 'w1', [
    { ...failedAttempt(d, s, first!.lease), startedAt: new Date(Date.now() - 5_000) },
    { ...failedAttempt(d, s, second!.lease), status: 'DELIVERED', statusCode: 204, error: null, nextAttemptAt: null },
  ]);
  const { rows: [row] } = await db.query('select attempts, status from webhook_deliveries where id = $1', [d]);
  expect(row).toEqual({ attempts: 2, status: 'DELIVERED' });
  const { rows: log } = await db.query('select number, status_code from delivery_attempts where delivery_id = $1 order by number', [d]);
  expect(log).toEqual([
    { number: 1, status_code: 500 },
    { number: 2, status_code: 204 },
  ]);
});

it("a subscription another transaction holds holds up none of the others' deliveries going back to the queue: they go, its own once it is let go", async () => {
  // An operator's open transaction, say, or a change of a subscription with a large backlog.
  // Waited for (FOR SHARE), one held row kept a whole record, hand-back, reclaim or sign-off
  // waiting, every tenant's deliveries of it, till the statement's timeout.
  const [held, free] = [await subscription(), await subscription()];
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2, onConnect: (c) => c.query(QUEUE_SESSION_SETTINGS) });
  const holder = await connect();
  const within = <T>(promise: Promise<T>) =>
    Promise.race([promise, new Promise<never>((_, fail) => setTimeout(() => fail(new Error('waited for the held subscription')), 3_000))]);
  const state = async (ids: string[]) =>
    (await db.query('select id, status, locked_by from webhook_deliveries where id = any($1)', [ids])).rows.map((r) => [r.id === ids[0] ? 'held' : 'free', r.status, r.locked_by]).sort();
  try {
    await holder.query('begin');
    // As an update of it does (FOR UPDATE would also hold up the inserts of its deliveries' foreign key).
    await holder.query('select 1 from webhook_subscriptions where id = $1 for no key update', [held]);

    // A 410 Gone of each, in one batch: the free one is retired and recorded, the held one's left for later.
    let ids = [await delivery({ subscriptionId: held, status: 'SENDING', lockedBy: 'w1' }), await delivery({ subscriptionId: free, status: 'SENDING', lockedBy: 'w1' })];
    const gone = async (id: string, s: string) => ({ ...failedAttempt(id, s, await leaseOf(id)), statusCode: 410, error: 'HTTP 410', gone: true, targetUrl: 'https://example.com/hook' });
    const result = await within(recordOutcomes(pool, 'w1', [await gone(ids[0]!, held), await gone(ids[1]!, free)], 'the endpoint answered 410 Gone'));
    expect(result.gone).toEqual([free]);
    expect(result.deferred.map((o) => o.deliveryId)).toEqual([ids[0]]);
    expect(await state(ids)).toEqual([['free', 'PENDING', null], ['held', 'SENDING', 'w1']]);

    // Claimed deliveries handed back.
    ids = [await delivery({ subscriptionId: held, status: 'SENDING', lockedBy: 'w1' }), await delivery({ subscriptionId: free, status: 'SENDING', lockedBy: 'w1' })];
    expect(await within(releaseClaims(pool, 'w1', ids)), 'the one left, to hand back later').toEqual([ids[0]]);
    expect(await state(ids)).toEqual([['free', 'PENDING', null], ['held', 'SENDING', 'w1']]);

    // Deliveries of a dispatcher that stopped, their leases run out, reclaimed by another.
    await db.query(`delete from webhook_deliveries where status = 'SENDING'`);
    ids = [await delivery({ subscriptionId: held, status: 'SENDING', lockedBy: 'gone' }), await delivery({ subscriptionId: free, status: 'SENDING', lockedBy: 'gone' })];
    await db.query(`update webhook_deliveries set lease_expires_at = now() - interval '1 second' where id = any($1)`, [ids]);
    await db.query(`insert into hookline_workers (id, lost_after_ms) values ('w2', 20000) on conflict (id) do update set seen_at = now()`);
    expect(await within(reclaimLostDeliveries(pool, 'w2'))).toBe(1);
    expect(await state(ids)).toEqual([['free', 'PENDING', null], ['held', 'SENDING', 'gone']]);

    // A dispatcher signing off.
    await db.query(`delete from webhook_deliveries where status = 'SENDING'`);
    ids = [await delivery({ subscriptionId: held, status: 'SENDING', lockedBy: 'w3' }), await delivery({ subscriptionId: free, status: 'SENDING', lockedBy: 'w3' })];
    await within(signOff(pool, 'w3'));
    expect(await state(ids)).toEqual([['free', 'PENDING', null], ['held', 'SENDING', 'w3']]);

    // Let go: what was left goes too.
    await holder.query('commit');
    await db.query(`update webhook_deliveries set lease_expires_at = now() - interval '1 second' where id = $1`, [ids[0]]);
    expect(await reclaimLostDeliveries(pool, 'w2')).toBe(1);
    expect(await state(ids)).toEqual([['free', 'PENDING', null], ['held', 'PENDING', null]]);
  } finally {
    await holder.query('rollback').catch(() => {});
    await holder.end();
    await pool.end();
  }
});
