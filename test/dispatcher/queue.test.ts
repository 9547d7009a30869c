// The claim's plan: it must walk the due index in order on the dispatcher's
// connections (a claim for one tenant: that tenant's due index), also when
// PostgreSQL's statistics say few rows are due, and when they are fresh but a
// generic plan cannot know how many are.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import {
  DUE_TENANTS_SQL,
  FIRST_TENANT,
  QUEUE_SESSION_SETTINGS,
  RECORD_SQL,
  UNMARK_CLAIMED_TEST_EVENTS,
  claimSize,
  claimSql,
  dueTenants,
  heartbeat,
  reclaimLostDeliveries,
  WORKER_LOST,
} from '../../src/dispatcher/queue.js';
import { createTestDatabase } from '../helpers/database.js';

let databaseUrl: string;
let client: pg.Client;

/** A tenant with one subscription (to `url`, every event) and one test.event, written with SQL. */
async function tenantWithEvent(name: string, url: string) {
  const { rows: [tenant] } = await client.query(`insert into tenants (name) values ($1) returning id`, [name]);
  const { rows: [subscription] } = await client.query(
    `insert into webhook_subscriptions (tenant_id, url, events, secret) values ($1, $2, '{*}', 'whsec_plans-plans-plans') returning id`,
    [tenant.id, url],
  );
  const { rows: [event] } = await client.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
    [tenant.id],
  );
  return { tenant, subscription, event };
}

beforeAll(async () => {
  databaseUrl = await createTestDatabase();
  client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  // A backlog in a table never analyzed: the planner's estimate of the due rows is a few dozen.
  const { tenant, subscription, event } = await tenantWithEvent('Plans', 'https://example.com/hook');
  await client.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at)
     select $1, $2, $3, 'test.event', 'https://example.com/hook', 'PENDING', now() - interval '1 hour' + i * interval '1 ms'
       from generate_series(1, 20000) i`,
    [tenant.id, event.id, subscription.id],
  );
});
afterAll(async () => {
  await client?.end();
});

/** A tenant with nothing in the table: another tenant's claim beside the backlog. */
const QUIET_TENANT = randomUUID();

async function claimPlan(limit: number, tenantId?: string): Promise<string> {
  const { rows } = await client.query(`explain (generic_plan, costs off) ${claimSql(limit, tenantId)}`);
  return rows.map((r) => r['QUERY PLAN']).join('\n');
}

it('a claim of any size walks the due index in order with the queue\'s session settings', async () => {
  await client.query(QUEUE_SESSION_SETTINGS);
  for (const limit of [1, 16, 128, 256]) {
    const plan = await claimPlan(limit);
    expect(plan).toMatch(/Index Scan using webhook_deliveries_due on webhook_deliveries d\b/);
    expect(plan).not.toMatch(/Bitmap/);
    expect(await claimPlan(limit, QUIET_TENANT)).toMatch(/LockRows\n\s+->  Index Scan using webhook_deliveries_due_tenant on webhook_deliveries d\b/);
  }
});

it('without them, the stale estimate makes PostgreSQL read and sort every due row (why the settings exist)', async () => {
  await client.query('reset all');
  const plan = await claimPlan(128);
  expect(plan).toMatch(/Bitmap Heap Scan on webhook_deliveries d\b/);
});

it('and with fresh statistics of a table that is all backlog (the tests above ran on stale ones)', async () => {
  await client.query('analyze webhook_deliveries');
  await client.query('reset all');
  await client.query(QUEUE_SESSION_SETTINGS);
  for (const limit of [1, 64, 256]) {
    const plan = await claimPlan(limit);
    expect(plan).toMatch(/Index Scan using webhook_deliveries_due on webhook_deliveries d\b/);
    expect(plan).not.toMatch(/Seq Scan on webhook_deliveries|Bitmap/);
  }
  // Another tenant's claim walks that tenant's due rows alone, in order.
  for (const limit of [1, 64, 256]) {
    const plan = await claimPlan(limit, QUIET_TENANT);
    expect(plan).toMatch(/LockRows\n\s+->  Index Scan using webhook_deliveries_due_tenant on webhook_deliveries d\b/);
    expect(plan).not.toMatch(/Seq Scan on webhook_deliveries|Bitmap/);
  }
  // (Without sequential scans off, the generic plan of the claim before its check of the
  // subscription's row read the whole table and sorted it; with that check, costed per row, the
  // planner walks the index of itself. The setting stays, for the next change of the claim.)
});

it('the dispatcher\'s connections have those settings', async () => {
  const dispatcher = new Dispatcher({ config: loadConfig({ DATABASE_URL: databaseUrl }), databaseUrl, log: pino({ level: 'silent' }) });
  const pool = (dispatcher as unknown as { pool: pg.Pool }).pool;
  try {
    const { rows: [settings] } = await pool.query(
      `select current_setting('plan_cache_mode') as plans, current_setting('enable_bitmapscan') as bitmap,
              current_setting('enable_seqscan') as seq`,
    );
    expect(settings).toEqual({ plans: 'force_generic_plan', bitmap: 'off', seq: 'off' });
  } finally {
    await pool.end();
    await (dispatcher as unknown as { agent: { close(): Promise<void> } }).agent.close();
  }
});

it('claim sizes are powers of two within the room, at most 256', () => {
  expect([0, 1, 2, 3, 100, 128, 255, 256, 1000].map(claimSize)).toEqual([1, 1, 2, 2, 64, 128, 128, 256, 256]);
});

it('the record finds a batch\'s rows by primary key, however many rows are being sent', async () => {
  await client.query(`reset all; ${QUEUE_SESSION_SETTINGS}`);
  // Statistics that say no row is SENDING (as when a worker connects to an idle queue).
  await client.query('analyze webhook_deliveries');
  const { rows } = await client.query(`explain (generic_plan, costs off) ${RECORD_SQL}`);
  const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
  expect(plan).toMatch(/Index Scan using webhook_deliveries_pkey on webhook_deliveries d\b/);
  expect(plan).not.toMatch(/webhook_deliveries_leased/);
});

it('only a SENDING delivery can be held by a worker (what the record relies on)', async () => {
  const { rows: [row] } = await client.query(`select id from webhook_deliveries where status = 'PENDING' limit 1`);
  await expect(client.query(`update webhook_deliveries set locked_by = 'w' where id = $1`, [row.id])).rejects.toThrow(
    /webhook_deliveries_locked_only_sending/,
  );
  await client.query(`update webhook_deliveries set status = 'SENDING', locked_by = 'w' where id = $1`, [row.id]);
  await client.query(`update webhook_deliveries set status = 'PENDING', locked_by = null where id = $1`, [row.id]);
});

it('an insert that leaves deliveries due names their tenants to the dispatchers', async () => {
  const listener = new pg.Client({ connectionString: databaseUrl });
  await listener.connect();
  const payloads: string[] = [];
  listener.on('notification', (n) => payloads.push(n.payload ?? ''));
  await listener.query('listen hookline_deliveries_due');
  try {
    const { rows: tenants } = await client.query(`insert into tenants (name) values ('Named 1'), ('Named 2') returning id`);
    const { rows: [event] } = await client.query(
      `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
      [tenants[0].id],
    );
    const insert = (rows: Array<[string, string, boolean]>) =>
      client.query(
        `insert into webhook_deliveries (tenant_id, event_id, event, target_url, status, paused, next_attempt_at)
         select t, $4, 'test.event', 'https://example.com/hook', s, p, now() from unnest($1::uuid[], $2::text[], $3::boolean[]) as r(t, s, p)`,
        [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2]), event.id],
      );
    const [one, two] = [tenants[0].id as string, tenants[1].id as string];
    await insert([[one, 'PENDING', false], [two, 'PENDING', false], [two, 'PENDING', false]]);
    await insert([[one, 'SENDING', false], [two, 'PENDING', true]]); // nothing claimable: no notification
    await insert([[two, 'PENDING', false]]);
    // Notifications come in commit order: once this one is heard, so are the inserts'.
    await client.query(`select pg_notify('hookline_deliveries_due', 'end')`);
    while (!payloads.includes('end')) await new Promise((r) => setTimeout(r, 10));
    expect(payloads.slice(0, -1).map((p) => p.split(',').sort().join(','))).toEqual([[one, two].sort().join(','), two]);
  } finally {
    await listener.end();
  }
});

it('with retries scheduled for later, the general claim still walks the due index, and a tenant\'s claim its own', async () => {
  // Fresh statistics of a table like the benchmark's item 6 (delivered rows, rows due tomorrow,
  // the backlog). There, with 400,000 and 100,000 on a database of its own, PostgreSQL 18
  // planned the general claim as a skip scan of the tenants' due index and a sort of every due
  // row, until that index left the general claim out (migration 0009's `tenant_id is not null`).
  const { rows: [row] } = await client.query(`select tenant_id, event_id, subscription_id from webhook_deliveries limit 1`);
  await client.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, attempts, delivered_at)
     select $1, $2, $3, 'test.event', 'https://example.com/hook', 'DELIVERED', 1, now() from generate_series(1, 150000)`,
    [row.tenant_id, row.event_id, row.subscription_id],
  );
  await client.query(
    `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at)
     select $1, $2, $3, 'test.event', 'https://example.com/hook', 'PENDING', now() + interval '1 day' + i * interval '100 ms'
       from generate_series(1, 50000) i`,
    [row.tenant_id, row.event_id, row.subscription_id],
  );
  await client.query('vacuum analyze webhook_deliveries');
  await client.query(`reset all; ${QUEUE_SESSION_SETTINGS}`);
  for (const limit of [1, 64, 256]) {
    const plan = await claimPlan(limit);
    expect(plan).toMatch(/LockRows\n\s+->  Index Scan using webhook_deliveries_due on webhook_deliveries d\b/);
    expect(plan).not.toMatch(/webhook_deliveries_due_tenant/);
    expect(await claimPlan(limit, QUIET_TENANT)).toMatch(/LockRows\n\s+->  Index Scan using webhook_deliveries_due_tenant on webhook_deliveries d\b/);
  }
}, 120_000);

it('the look for tenants with deliveries due walks the tenants, one probe each, not their rows', async () => {
  const { rows: tenants } = await client.query(`insert into tenants (name) values ('Due'), ('Later'), ('Paused') returning id`);
  const [due, later, paused] = tenants.map((t) => t.id as string);
  const { rows: [event] } = await client.query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`,
    [due],
  );
  await client.query(
    `insert into webhook_deliveries (tenant_id, event_id, event, target_url, status, paused, next_attempt_at)
     values ($1, $4, 'test.event', 'https://example.com/hook', 'PENDING', false, now() - interval '1 second'),
            ($2, $4, 'test.event', 'https://example.com/hook', 'PENDING', false, now() + interval '1 hour'),
            ($3, $4, 'test.event', 'https://example.com/hook', 'PENDING', true, now() - interval '1 second')`,
    [due, later, paused, event.id],
  );
  const { rows: waiting } = await client.query(
    `select distinct tenant_id as id, bool_or(next_attempt_at <= now()) as due from webhook_deliveries
      where status = 'PENDING' and not paused group by tenant_id order by tenant_id`,
  );
  const expected = waiting.filter((t) => t.due).map((t) => t.id as string);
  expect(expected).toContain(due);
  expect(expected).not.toContain(later);
  expect(expected).not.toContain(paused);

  // One look at every tenant with deliveries waiting, then from the start again.
  expect(await dueTenants(client, FIRST_TENANT, 1_000)).toEqual({ due: expected, next: FIRST_TENANT });
  // Walks of one tenant each go on where the last stopped, and meet the same tenants.
  const found: string[] = [];
  let from = FIRST_TENANT;
  for (let i = 0; i < waiting.length; i++) {
    const look = await dueTenants(client, from, 1);
    expect(look.next).toBe(waiting[i].id);
    found.push(...look.due);
    from = look.next;
  }
  expect(found).toEqual(expected);
  expect((await dueTenants(client, from, 1)).next).toBe(FIRST_TENANT);

  // Whatever the backlog (20,000 of the first tenant's due here): probes of the tenants' due
  // index, no scan of the due rows.
  await client.query(`reset all; ${QUEUE_SESSION_SETTINGS}`);
  const { rows } = await client.query(`explain (generic_plan, costs off) ${DUE_TENANTS_SQL}`);
  const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
  expect(plan).not.toMatch(/webhook_deliveries_due on|Hash|Sort|Seq Scan|Bitmap/);
  expect(plan.match(/Index (Only )?Scan using webhook_deliveries_due_tenant on webhook_deliveries d(_1)?\n\s+Index Cond: \(tenant_id > (\$1|w.tenant_id)\)/g)).toHaveLength(2);
});

it('deliveries of dead workers go back to the queue, and those of live ones only long past their lease', async () => {
  await client.query(`reset all; ${QUEUE_SESSION_SETTINGS}`);
  const { rows: [row] } = await client.query(`select tenant_id, event_id, subscription_id from webhook_deliveries limit 1`);
  // `self` reclaims: heard from just now, first without a gap for 10 s only (less than the 20 s
  // the others may be silent), then for a minute.
  await client.query(
    `insert into hookline_workers (id, seen_at, heard_since, lost_after_ms) values
       ('stale', now() - interval '1 minute', now() - interval '1 hour', 20000),
       ('fresh', now(), now() - interval '1 hour', 20000),
       ('self', now(), now() - interval '10 seconds', 20000),
       ('silent-self', now() - interval '1 minute', now() - interval '1 hour', 20000)`,
  );
  // Worker, lease (from now): what it holds.
  const cases: Array<[string, string]> = [
    ['stale', '1 hour'], // silent for longer than it said it may be: dead, whatever its lease
    ['unknown', '-1 second'], // unknown here (stopped), lease expired
    ['unknown', '1 hour'], // unknown here, lease running: left to it
    ['fresh', '-1 second'], // heard from, its record a little late: left to it
    ['fresh', '-1 hour'], // heard from, its record very late: back
    ['self', '1 hour'], // the one reclaiming: never its own
  ];
  const ids: string[] = [];
  for (const [worker, lease] of cases) {
    const { rows: [d] } = await client.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, locked_by, lease_expires_at, attempts)
       values ($1, $2, $3, 'test.event', 'https://example.com/hook', 'SENDING', $4, now() + $5::interval, 1) returning id`,
      [row.tenant_id, row.event_id, row.subscription_id, worker, lease],
    );
    ids.push(d.id);
  }
  const states = async () =>
    (
      await client.query(
        `select d.status, d.attempts from unnest($1::uuid[]) with ordinality as x(id, n) join webhook_deliveries d on d.id = x.id order by x.n`,
        [ids],
      )
    ).rows.map((r) => `${r.status}/${r.attempts}`);
  // A reclaimer silent itself (a partition held its statement up, say) judges no one by silence.
  expect(await reclaimLostDeliveries(client, 'silent-self')).toBe(2);
  expect(await states()).toEqual(['SENDING/1', 'PENDING/1', 'SENDING/1', 'SENDING/1', 'PENDING/1', 'SENDING/1']);
  // Nor one heard from without a gap for less time than the others may be silent (after an outage).
  expect(await reclaimLostDeliveries(client, 'self')).toBe(0);
  await client.query(`update hookline_workers set heard_since = now() - interval '1 minute' where id = 'self'`);
  expect(await reclaimLostDeliveries(client, 'self')).toBe(1);
  // Nothing counted: whether the lost attempts were even started is unknown.
  expect(await states()).toEqual(['PENDING/1', 'PENDING/1', 'SENDING/1', 'SENDING/1', 'PENDING/1', 'SENDING/1']);
  // Its heartbeat restarts heard_since only after a silence of half its lost_after_ms.
  const heardSince = async () => (await client.query(`select heard_since from hookline_workers where id = 'self'`)).rows[0].heard_since.getTime();
  const before = await heardSince();
  await heartbeat(client, 'self', 20_000);
  expect(await heardSince()).toBe(before);
  await client.query(`update hookline_workers set seen_at = now() - interval '11 seconds' where id = 'self'`);
  await heartbeat(client, 'self', 20_000);
  expect(await heardSince()).toBeGreaterThan(before + 30_000);
  await client.query(`update webhook_deliveries set status = 'CANCELED', locked_by = null, lease_expires_at = null, next_attempt_at = null where id = any($1::uuid[])`, [ids]);
});

it("a late outcome (its lease expired, the delivery taken back meanwhile) is shown as the delivery's last error, unless a later attempt's is", async () => {
  // Taken back as a lost worker's, the delivery said its worker was lost, though that
  // attempt was made, answered and logged (a review saw a 410 shown so).
  await client.query(`reset all; ${QUEUE_SESSION_SETTINGS}`);
  const { rows: [row] } = await client.query(`select tenant_id, event_id, subscription_id from webhook_deliveries limit 1`);
  const claimed = async () => {
    const { rows: [d] } = await client.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, locked_by, lease_expires_at)
       values ($1, $2, $3, 'test.event', 'https://example.com/hook', 'SENDING', 'late-worker', now() - interval '1 second')
       returning id, lease_expires_at::text as lease`,
      [row.tenant_id, row.event_id, row.subscription_id],
    );
    // Taken back (reclaimLostDeliveries' update).
    await client.query(
      `update webhook_deliveries set status = 'PENDING', locked_by = null, lease_expires_at = null, next_attempt_at = now() + interval '1 hour',
              last_error = coalesce(last_error, $2) where id = $1`,
      [d.id, WORKER_LOST],
    );
    return d as { id: string; lease: string };
  };
  const record = (d: { id: string; lease: string }, startedAt: Date, statusCode: number) =>
    client.query(RECORD_SQL, [
      [d.id], [row.tenant_id], ['PENDING'], [startedAt], [12], [statusCode], [`HTTP ${statusCode}`], [null], [new Date(Date.now() + 60_000)],
      'late-worker', [d.lease],
    ]);
  const state = async (id: string) =>
    (await client.query('select status, attempts, last_error, last_status_code from webhook_deliveries where id = $1', [id])).rows[0];

  const alone = await claimed();
  await record(alone, new Date(Date.now() - 5_000), 410);
  expect(await state(alone.id)).toEqual({ status: 'PENDING', attempts: 1, last_error: 'HTTP 410', last_status_code: 410 });

  // An attempt made after it, recorded first, stays what the delivery shows.
  const overtaken = await claimed();
  await client.query(
    `insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code, error) values ($1, 1, $2, now(), 5, 503, 'HTTP 503')`,
    [overtaken.id, row.tenant_id],
  );
  await client.query(`update webhook_deliveries set attempts = 1, last_error = 'HTTP 503', last_status_code = 503 where id = $1`, [overtaken.id]);
  await record(overtaken, new Date(Date.now() - 5_000), 410);
  expect(await state(overtaken.id)).toEqual({ status: 'PENDING', attempts: 2, last_error: 'HTTP 503', last_status_code: 503 });
  await client.query(
    `update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where id = any($1::uuid[])`,
    [[alone.id, overtaken.id]],
  );
});

it("turning a subscription off finds its claimed test events without walking every claim's leftovers (dead entries of the lease index)", async () => {
  // Under a steady load each claim and record leaves an entry in webhook_deliveries_leased until the
  // next vacuum; the statement walked them all, and a deactivation grew to seconds (a review's
  // measure), holding up the tenant's events meanwhile. Counted in buffers, not time.
  const { tenant, subscription, event } = await tenantWithEvent('Turned off', 'https://example.com/off');
  await client.query('alter table webhook_deliveries set (autovacuum_enabled = false)');
  try {
    const { rows: made } = await client.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at)
       select $1, $2, $3, 'test.event', 'https://example.com/off', 'PENDING', now() from generate_series(1, 30000) returning id`,
      [tenant.id, event.id, subscription.id],
    );
    const ids = made.map((r) => r.id);
    // Claimed and recorded, as a drain does (no vacuum between), and one test event claimed now.
    await client.query(`update webhook_deliveries set status = 'SENDING', locked_by = 'w', lease_expires_at = now() + interval '1 minute' where id = any($1::uuid[])`, [ids]);
    await client.query(`update webhook_deliveries set status = 'DELIVERED', locked_by = null, lease_expires_at = null, next_attempt_at = null where id = any($1::uuid[])`, [ids]);
    await client.query(`update webhook_deliveries set status = 'SENDING', locked_by = 'w', lease_expires_at = now() + interval '1 minute', test_event = true where id = $1`, [ids[0]]);
    await client.query('reset all');
    await client.query('begin');
    const { rows } = await client.query(`explain (analyze, buffers, format json) ${UNMARK_CLAIMED_TEST_EVENTS('tenant_id = $1 and subscription_id = $2')}`, [tenant.id, subscription.id]);
    await client.query('rollback');
    const plan = rows[0]['QUERY PLAN'][0];
    const buffers = plan.Plan['Shared Hit Blocks'] + plan.Plan['Shared Read Blocks'];
    expect(buffers, JSON.stringify(plan.Plan)).toBeLessThan(100);
    await client.query(`update webhook_deliveries set status = 'CANCELED', lease_expires_at = null, locked_by = null, test_event = false where id = $1`, [ids[0]]);
  } finally {
    await client.query('alter table webhook_deliveries reset (autovacuum_enabled)');
  }
});
