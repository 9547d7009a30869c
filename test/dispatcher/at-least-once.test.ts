// At least once, and exactly once without a crash (CONTRACT.md, "Delivery"),
// with workers as real processes: `tsx src/main.ts` with HOOKLINE_ROLE=worker
// on a shared database, killed with SIGKILL mid-batch, or two side by side on
// one backlog. The API runs in-process (HOOKLINE_ROLE=api, no dispatcher) and
// only writes events and deliveries.
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { killAllServices, spawnService, type ServiceProcess } from '../helpers/processes.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = `mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }`;
const TRIGGER = `mutation TriggerEvent($input: TriggerEventInput!) {
  triggerEvent(input: $input) { event { id } deliveries { id } }
}`;
const DELIVERY_TIMEOUT = '2s'; // lease = 2 * timeout + 5 s = 9 s

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  // Workers first (they hold connections), then the API, receivers and clients.
  await killAllServices();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(async () => {
  await killAllServices();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Scenario {
  databaseUrl: string;
  api: TestHookline;
  key: string;
  db: pg.Client;
}

/** A fresh database, an API-only Hookline on it, a tenant, and a direct connection to inspect the queue. */
async function scenario(): Promise<Scenario> {
  const databaseUrl = await createTestDatabase();
  const api = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
  cleanups.push(() => api.stop());
  expect(api.dispatcher, 'the api role runs no dispatcher').toBeUndefined();
  const { apiKey: key } = await api.createTenant();
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  cleanups.push(() => db.end());
  return { databaseUrl, api, key, db };
}

async function receiverWith(respond: Receiver['respond']): Promise<Receiver> {
  const receiver = await startReceiver(respond);
  cleanups.push(() => receiver.close());
  return receiver;
}

async function subscribe(s: Scenario, url: string): Promise<string> {
  const res = await s.api.gql(CREATE, { input: { url, events: ['invoice.created'] } }, s.key);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.createWebhookSubscription.subscription.id;
}

/** Triggers `count` events, `concurrency` at a time; returns the event ids. */
async function triggerEvents(s: Scenario, count: number, concurrency = 20, tag = 'inv'): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < count; start += concurrency) {
    const batch = Array.from({ length: Math.min(concurrency, count - start) }, async (_, i) => {
      const n = start + i;
      const res = await s.api.gql(
        TRIGGER,
        { input: { event: 'invoice.created', data: { invoice_id: `${tag}-${n}`, amount: n, customer: 'Acme Corp' } } },
        s.key,
      );
      if (res.errors) throw new Error(JSON.stringify(res.errors));
      return res.data.triggerEvent.event.id as string;
    });
    ids.push(...(await Promise.all(batch)));
  }
  return ids;
}

function startWorker(databaseUrl: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  return spawnService({
    DATABASE_URL: databaseUrl,
    HOOKLINE_ROLE: 'worker',
    HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
    HOOKLINE_DELIVERY_TIMEOUT: DELIVERY_TIMEOUT,
    HOOKLINE_DISPATCH_CONCURRENCY: '32',
    LOG_LEVEL: 'warn',
    ...env,
  });
}

async function statusCounts(db: pg.Client): Promise<Record<string, number>> {
  const { rows } = await db.query('select status, count(*)::int as n from webhook_deliveries group by status');
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

/** How many requests arrived per value of a header. */
function countBy(receiver: Receiver, header: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of receiver.received) {
    const value = String(r.headers[header]);
    counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  return counts;
}

describe('at least once, with worker processes', () => {
  it('a worker killed with SIGKILL mid-batch loses nothing', { timeout: 60_000 }, async () => {
    const s = await scenario();
    let answered = 0;
    const receiver = await receiverWith(async () => {
      await sleep(300);
      answered++;
      return { status: 200, body: 'ok' };
    });
    await subscribe(s, `${receiver.url}/slow`);
    const eventIds = await triggerEvents(s, 200, 20);
    expect(new Set(eventIds).size).toBe(200);
    expect(await statusCounts(s.db)).toEqual({ PENDING: 200 });

    const first = await startWorker(s.databaseUrl);
    // Some delivered (and recorded), some in flight, most still waiting.
    await eventually(() => receiver.received.length >= 40 && answered >= 20, 30_000, 10);
    const exit = await first.kill('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    const killedAt = Date.now();
    const seenAtKill = receiver.received.length;

    const { rows: sending } = await s.db.query<{ id: string }>(`select id from webhook_deliveries where status = 'SENDING'`);
    const inFlightAtKill = new Set(sending.map((r) => r.id));
    const atKill = await statusCounts(s.db);
    expect(inFlightAtKill.size, `in flight at the kill: ${JSON.stringify(atKill)}`).toBeGreaterThan(0);
    expect(atKill.PENDING ?? 0, 'the kill came mid-batch').toBeGreaterThan(0);

    const second = await startWorker(s.databaseUrl);
    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 200, 45_000, 200).catch(async (error) => {
      throw new Error(`${error.message}; statuses ${JSON.stringify(await statusCounts(s.db))}\n${second.output().stderr}`);
    });
    const drainedMs = Date.now() - killedAt;

    // The receiver saw every event, each with a body that names it.
    const seenEvents = new Set(receiver.received.map((r) => JSON.parse(r.body).id as string));
    expect([...seenEvents].sort()).toEqual([...eventIds].sort());
    // Duplicates only for deliveries that were in flight when the worker died.
    const perDelivery = countBy(receiver, 'webhook-id');
    expect(perDelivery.size).toBe(200);
    const duplicated = [...perDelivery].filter(([, n]) => n > 1).map(([id]) => id);
    expect(duplicated.filter((id) => !inFlightAtKill.has(id)), 'attempted twice without a crash').toEqual([]);
    expect(Math.max(...perDelivery.values())).toBeLessThanOrEqual(2);
    // Deliveries that were not in flight were attempted once and logged once.
    const { rows } = await s.db.query<{ id: string; attempts: number; logged: number }>(
      `select d.id, d.attempts, (select count(*)::int from delivery_attempts a where a.delivery_id = d.id) as logged
         from webhook_deliveries d`,
    );
    for (const row of rows) {
      expect(row.logged, `attempt log of ${row.id}`).toBeGreaterThanOrEqual(1);
      if (!inFlightAtKill.has(row.id)) expect(row, `delivery ${row.id}`).toMatchObject({ attempts: 1, logged: 1 });
    }
    // Contract: a delivery whose process died is attempted again within 60 seconds.
    expect(drainedMs).toBeLessThan(60_000);

    console.info(
      `[at-least-once] kill after ${seenAtKill} requests (statuses ${JSON.stringify(atKill)}); ` +
        `all 200 delivered ${drainedMs} ms after the kill; receiver got ${receiver.received.length} requests: ` +
        `${receiver.received.length - 200} duplicates, all among the ${inFlightAtKill.size} in flight at the kill`,
    );
  });

  it('two workers share one backlog without attempting any delivery twice', { timeout: 45_000 }, async () => {
    const s = await scenario();
    const receiver = await receiverWith(() => ({ status: 204, delayMs: 5 }));
    for (const path of ['a', 'b', 'c']) await subscribe(s, `${receiver.url}/${path}`);
    // A backlog before the workers start: 100 events x 3 subscriptions.
    await triggerEvents(s, 100, 20, 'backlog');
    expect(await statusCounts(s.db)).toEqual({ PENDING: 300 });

    const workers = await Promise.all([startWorker(s.databaseUrl), startWorker(s.databaseUrl)]);
    await Promise.all(workers.map((w) => w.waitReady()));
    // And more while both listen, so both wake on the same notifications.
    await triggerEvents(s, 50, 10, 'live');
    const total = 450;

    await eventually(async () => (await statusCounts(s.db)).DELIVERED === total, 30_000, 100).catch(async (error) => {
      throw new Error(`${error.message}; statuses ${JSON.stringify(await statusCounts(s.db))}`);
    });
    await sleep(300); // anything attempted twice would arrive now

    // Each delivery arrived exactly once.
    const perDelivery = countBy(receiver, 'webhook-id');
    expect(perDelivery.size).toBe(total);
    expect([...perDelivery].filter(([, n]) => n !== 1)).toEqual([]);
    expect(receiver.received).toHaveLength(total);
    // And the database says the same: one attempt each, logged once.
    const { rows } = await s.db.query<{ id: string; attempts: number; logged: number }>(
      `select d.id, d.attempts, (select count(*)::int from delivery_attempts a where a.delivery_id = d.id) as logged
         from webhook_deliveries d`,
    );
    expect(rows).toHaveLength(total);
    expect(rows.filter((r) => r.attempts !== 1 || r.logged !== 1)).toEqual([]);
    const { rows: logTotal } = await s.db.query<{ n: number }>('select count(*)::int as n from delivery_attempts');
    expect(logTotal[0]!.n).toBe(total);

    // Each worker's own count of its attempts: together, exactly one per delivery.
    const counts = await Promise.all(workers.map((w) => w.metric('hookline_delivery_attempts_total')));
    expect(counts.reduce((a, b) => a + b, 0)).toBe(total);
    console.info(`[at-least-once] two workers, ${total} deliveries: attempts per worker ${counts.join(' + ')}`);
  });

  // The test PostgreSQL is shared by every test file, so it is not restarted here; what a restart
  // does to a worker, every connection cut at once, is done to this database's connections instead.
  it('a worker whose database connections are all cut mid-batch recovers and loses nothing', { timeout: 40_000 }, async () => {
    const s = await scenario();
    let answered = 0;
    const receiver = await receiverWith(async () => {
      await sleep(100);
      answered++;
      return { status: 200 };
    });
    await subscribe(s, `${receiver.url}/hooks`);
    const eventIds = await triggerEvents(s, 150, 25);

    const worker = await startWorker(s.databaseUrl);
    const cut = async () => {
      const { rows } = await s.db.query<{ n: number }>(
        `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid() and application_name like 'hookline-dispatcher%'`,
      );
      return rows[0]!.n;
    };
    await eventually(() => answered >= 20, 30_000, 10);
    const cutFirst = await cut();
    expect(cutFirst, 'the worker had connections to cut').toBeGreaterThan(0);
    await eventually(() => answered >= 70, 15_000, 10);
    await cut();

    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 150, 30_000, 200).catch(async (error) => {
      throw new Error(`${error.message}; statuses ${JSON.stringify(await statusCounts(s.db))}\n${worker.output().stderr}`);
    });
    const seenEvents = new Set(receiver.received.map((r) => JSON.parse(r.body).id as string));
    expect([...seenEvents].sort()).toEqual([...eventIds].sort());
    expect(worker.child.exitCode, 'the worker survived losing its connections').toBeNull();
    await worker.waitReady(5_000);
    console.info(
      `[at-least-once] connections cut twice (${cutFirst} the first time): ${receiver.received.length} requests ` +
        `for 150 deliveries, ${receiver.received.length - 150} duplicates`,
    );
  });

  // A worker that is claiming when the database goes away must not leave deliveries to their lease
  // (9 s here, 35 s by default, over 10 minutes with HOOKLINE_DELIVERY_TIMEOUT=5m) although it is alive.
  // The claim reads the events' bodies in the same statement, so a claim either completes with all it
  // needs or claims nothing; the worker then retries. (Steps after a claim that can still fail, such as
  // canceling orphans, are retried and, failing that, hand the batch back at once.) A lock on
  // webhook_events holds the worker inside its claim while its connections are cut.
  it('a worker that loses its database just after a claim does not leave the claimed deliveries to their lease', { timeout: 30_000 }, async () => {
    const s = await scenario();
    const receiver = await receiverWith(() => ({ status: 204 }));
    await subscribe(s, `${receiver.url}/hooks`);
    const eventIds = await triggerEvents(s, 20, 20);
    await s.db.query('update webhook_deliveries set paused = true'); // held back until the worker is up
    const worker = await startWorker(s.databaseUrl);
    await worker.waitReady();

    const locker = new pg.Client({ connectionString: s.databaseUrl });
    await locker.connect();
    cleanups.push(() => locker.end());
    await locker.query('begin');
    await locker.query('lock table webhook_events in access exclusive mode');
    await s.db.query('update webhook_deliveries set paused = false'); // due now: the next poll claims them
    // The claim, which reads the events' bodies, waits on the lock.
    await eventually(async () => {
      const { rows } = await s.db.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
          where datname = current_database() and application_name = 'hookline-dispatcher' and wait_event_type = 'Lock'`,
      );
      return rows[0]!.n > 0;
    }, 10_000, 20);
    expect(await statusCounts(s.db)).toEqual({ PENDING: 20 }); // nothing half-claimed

    // The database goes away under the worker, as in a restart, and comes back at once.
    const { rows: cut } = await s.db.query<{ n: number }>(
      `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
        where datname = current_database() and application_name like 'hookline-dispatcher%'`,
    );
    expect(cut[0]!.n).toBeGreaterThan(0);
    await locker.query('rollback');
    const cutAt = Date.now();

    // The worker is alive and knows what it claimed: well within the 9 s lease, all are delivered.
    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 20, 5_000, 100).catch(async (error) => {
      throw new Error(
        `${error.message}: ${JSON.stringify(await statusCounts(s.db))} ${Date.now() - cutAt} ms after the cut ` +
          `(the worker, alive: ${worker.child.exitCode === null}, left its claimed deliveries to their lease)`,
      );
    });
    const seenEvents = new Set(receiver.received.map((r) => JSON.parse(r.body).id as string));
    expect([...seenEvents].sort()).toEqual([...eventIds].sort());
    expect(receiver.received).toHaveLength(20);
  });

  it('an all-role process killed while sending what its own insert claimed loses nothing', { timeout: 45_000 }, async () => {
    const s = await scenario();
    // The first attempt hangs (the process dies meanwhile); the next one is answered.
    const receiver = await receiverWith(async () =>
      receiver.received.length === 1 ? new Promise<never>(() => {}) : { status: 200, body: 'ok' },
    );
    await subscribe(s, `${receiver.url}/all`);
    const all = await startWorker(s.databaseUrl, { HOOKLINE_ROLE: 'all' });
    await all.waitReady();
    // Idle: its first claim (at start) came back empty.
    await eventually(async () => (await all.metric('hookline_queue_claims_total')) >= 1, 10_000, 20);
    await sleep(200);

    const res = await fetch(`${all.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.key}` },
      body: JSON.stringify({ query: TRIGGER, variables: { input: { event: 'invoice.created', data: { invoice_id: 'inv-all', amount: 1, customer: 'Acme' } } } }),
    });
    const body = (await res.json()) as any;
    expect(body.errors).toBeUndefined();
    const deliveryId = body.data.triggerEvent.deliveries[0].id as string;
    await receiver.waitFor(1, 10_000);
    expect(await all.metric('hookline_deliveries_handed_off_total')).toBe(1); // claimed by the insert, no claim of its own
    const { rows: before } = await s.db.query(`select status, locked_by from webhook_deliveries where id = $1`, [deliveryId]);
    expect(before[0]).toMatchObject({ status: 'SENDING', locked_by: expect.any(String) });

    await all.kill('SIGKILL');
    const killedAt = Date.now();
    // Not heard from for 9 s (what it said it may be silent for: the lease, shorter here than 20 s), it is taken for dead.
    await startWorker(s.databaseUrl);
    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 1, 30_000, 100);
    expect(Date.now() - killedAt).toBeLessThan(60_000); // the contract's bound
    expect(receiver.received.map((r) => r.headers['webhook-id'])).toEqual([deliveryId, deliveryId]);
    const { rows } = await s.db.query(
      `select attempts, (select count(*)::int from delivery_attempts a where a.delivery_id = d.id) as logged
         from webhook_deliveries d where id = $1`,
      [deliveryId],
    );
    // The lost attempt left no outcome: the one that landed is the first recorded.
    expect(rows[0]).toEqual({ attempts: 1, logged: 1 });
  });

  it('a worker killed during an attempt, with a 5-minute delivery timeout (a 10-minute lease), is taken for dead when no longer heard from', { timeout: 60_000 }, async () => {
    const s = await scenario();
    const receiver = await receiverWith(async () =>
      receiver.received.length === 1 ? new Promise<never>(() => {}) : { status: 200, body: 'ok' },
    );
    await subscribe(s, `${receiver.url}/long`);
    const first = await startWorker(s.databaseUrl, { HOOKLINE_DELIVERY_TIMEOUT: '5m' });
    const [eventId] = await triggerEvents(s, 1);
    await receiver.waitFor(1, 10_000);
    // Another worker, heard from all along, takes the first for dead once it has been silent
    // for 20 s (what it said it may be), and sends the delivery again: not after the lease.
    const second = await startTestHookline(
      { HOOKLINE_ROLE: 'worker', HOOKLINE_DELIVERY_TIMEOUT: '5m' },
      { databaseUrl: s.databaseUrl, dispatcher: { workerLostAfterMs: 4_000, reclaimIntervalMs: 500 } },
    );
    cleanups.push(() => second.stop());
    await first.kill('SIGKILL');
    const killedAt = Date.now();
    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 1, 45_000, 100);
    expect(Date.now() - killedAt).toBeLessThan(30_000); // the contract: 60 s
    const { rows } = await s.db.query(`select attempts from webhook_deliveries where event_id = $1`, [eventId]);
    expect(rows[0]).toEqual({ attempts: 1 }); // the lost attempt's outcome is unknown: not counted
  });

  it('a worker still heard from keeps an attempt that lasts longer than a lost worker is given', { timeout: 30_000 }, async () => {
    const s = await scenario();
    // Lost after 3 s (room for a busy machine's stalls), an answer after 6 s.
    const receiver = await receiverWith(() => ({ status: 200, delayMs: 6_000 }));
    await subscribe(s, `${receiver.url}/slow-but-alive`);
    const timings = { workerLostAfterMs: 3_000, reclaimIntervalMs: 300 };
    for (let i = 0; i < 2; i++) {
      const worker = await startTestHookline(
        { HOOKLINE_ROLE: 'worker', HOOKLINE_DELIVERY_TIMEOUT: '30s' },
        { databaseUrl: s.databaseUrl, dispatcher: timings },
      );
      cleanups.push(() => worker.stop());
    }
    await triggerEvents(s, 1);
    await receiver.waitFor(1, 10_000);
    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 1, 15_000, 100);
    expect(receiver.received).toHaveLength(1);
    const { rows } = await s.db.query(`select attempts from webhook_deliveries`);
    expect(rows).toEqual([{ attempts: 1 }]);
  });
});

describe('a worker that cannot say it runs', () => {
  it('starts none of what it claimed once others may have taken it for dead', { timeout: 45_000 }, async () => {
    const s = await scenario();
    const receiver = await receiverWith(() => ({ status: 200, delayMs: 3_000 }));
    await subscribe(s, `${receiver.url}/fenced`);
    // One slot per subscription: of two deliveries, A sends one (3 s) and holds the other, ready.
    const env = { HOOKLINE_ROLE: 'worker', HOOKLINE_DELIVERY_TIMEOUT: '10s', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1' };
    const timings = { workerLostAfterMs: 1_500, reclaimIntervalMs: 300 };
    const a = await startTestHookline(env, { databaseUrl: s.databaseUrl, dispatcher: timings });
    cleanups.push(() => a.stop());
    const events = await triggerEvents(s, 2, 1);
    const [sending] = await receiver.waitFor(1, 10_000);
    // A's heartbeats now fail (its claims and records would not): others take it for dead.
    await s.db.query(`
      create function refuse_worker() returns trigger language plpgsql as $$
      begin
        if new.id = '${a.dispatcher!.workerId}' then raise exception 'refused'; end if;
        return new;
      end $$;
      create trigger refuse_worker before insert or update on hookline_workers for each row execute function refuse_worker();`);
    const b = await startTestHookline(env, { databaseUrl: s.databaseUrl, dispatcher: timings });
    cleanups.push(() => b.stop());
    await eventually(async () => (await statusCounts(s.db)).DELIVERED === 2, 30_000, 100);
    await sleep(4_000); // A's attempt has ended, and its slot freed, long since
    // The one A held, ready (whichever of the two it did not start: a claim's rows come in no
    // set order), was sent by B alone; the one A was sending is sent again (its worker was taken
    // for dead while it was in flight).
    const { rows } = await s.db.query(`select id from webhook_deliveries where event_id = any($1) and id <> $2`, [events, sending!.headers['webhook-id']]);
    expect(rows).toHaveLength(1);
    expect(countBy(receiver, 'webhook-id').get(rows[0].id)).toBe(1);
  });
});
