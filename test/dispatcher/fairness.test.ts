// One slow endpoint cannot starve the others: each subscription gets at most
// its share of the dispatcher's slots. And the dispatcher asks the database for
// work only when there may be some: not while a subscription's share is full,
// nor again after a claim that found everything.
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let slow: Receiver;
let fast: Receiver;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  slow = await startReceiver(() => ({ status: 200, delayMs: 1_500 }));
  fast = await startReceiver();
});

const subscribe = (apiKey: string, url: string, events: string[]) =>
  hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', { input: { url, events } }, apiKey);
const trigger = (apiKey: string, event: string, data: object) =>
  hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate } }', { input: { event, data } }, apiKey);

afterAll(async () => {
  await hl?.stop();
  await Promise.all([slow?.close(), fast?.close()]);
});

/** A receiver that never answers: each attempt to it hangs until its timeout. */
const hangingReceiver = () => startReceiver(() => new Promise(() => {}));

/**
 * Runs `run` with a worker on this file's database, then closes `closeFirst` (so the
 * attempts hanging on them end at once) and stops the worker.
 */
async function withWorker(
  env: Record<string, string>,
  options: Omit<Parameters<typeof startTestHookline>[1] & object, 'databaseUrl'>,
  run: (worker: TestHookline) => Promise<void>,
  closeFirst: Receiver[] = [],
): Promise<void> {
  let worker: TestHookline | undefined;
  try {
    worker = await startTestHookline({ HOOKLINE_ROLE: 'worker', ...env }, { ...options, databaseUrl: hl.databaseUrl });
    await run(worker);
  } finally {
    await Promise.all(closeFirst.map((r) => r.close()));
    await worker?.stop();
  }
}

/** Claims of `worker`'s that found nothing (its metrics). */
async function emptyClaims(worker: TestHookline): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  return Number(/^hookline_queue_claims_total\{result="empty"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

/** Waits for a claim of `worker`'s that found nothing: its general claim now backs off. */
async function untilBackedOff(worker: TestHookline): Promise<void> {
  for (const started = Date.now(); (await emptyClaims(worker)) === 0; await new Promise((r) => setTimeout(r, 20))) {
    expect(Date.now() - started, 'no claim came back empty').toBeLessThan(5_000);
  }
}

/** Waits for `count` requests to paths `matching` at `receiver`, failing `withinMs` after `started`. */
async function arrivedWithin(receiver: Receiver, matching: (path: string) => boolean, count: number, started: number, withinMs: number, what: string) {
  for (let n; (n = receiver.received.filter((r) => matching(r.path)).length) < count; await new Promise((r) => setTimeout(r, 10))) {
    expect(Date.now() - started, `${what} still wait (${n} of ${count} arrived)`).toBeLessThan(withinMs);
  }
}

it('a slow subscription\'s backlog does not hold up another subscription', async () => {
  const tenant = await hl.createTenant();
  await subscribe(tenant.apiKey, slow.url, ['invoice.*']);
  await subscribe(tenant.apiKey, fast.url, ['payment.*']);
  // The slow endpoint's backlog is older, so it is first in line.
  for (let i = 0; i < 60; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  for (let i = 0; i < 10; i++) {
    await trigger(tenant.apiKey, 'payment.received', { payment_id: `p${i}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
  }

  // Now a worker with 8 slots, at most 4 per subscription.
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '4', HOOKLINE_DELIVERY_TIMEOUT: '5s' }, {}, async () => {
    const started = Date.now();
    await fast.waitFor(10, 10_000);
    const fastDone = Date.now() - started;
    // Had the slow endpoint taken all 8 slots, the fast one would wait for its whole
    // backlog (60 × 1.5 s / 8 ≈ 11 s); with its share capped it is served at once.
    expect(fastDone).toBeLessThan(1_500);
    await new Promise((r) => setTimeout(r, 1_000));
    // The slow endpoint never had more than its 4 slots at once.
    const byArrival = slow.received.map((r) => r.at).sort((a, b) => a - b);
    const firstWave = byArrival.filter((at) => at - byArrival[0]! < 1_000);
    expect(firstWave.length).toBe(4);
  });
}, 30_000);

it('a subscription whose receiver answers fast is claimed for four times its share ahead, one that answers slowly twice', async () => {
  // Claims run one at a time: held to twice its share (what is in flight, as much again ready),
  // a fast receiver's slots went idle while the next claim ran. Only a fast one's: behind a slow
  // one, more ready rows would only wait out their lease.
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const warmed = new Map<string, number>();
  const gated = await startReceiver((request) => {
    const path = request.path;
    const n = warmed.get(path) ?? 0;
    warmed.set(path, n + 1);
    // The first eight set how fast each answers; every later one hangs until the end.
    if (n < 8) return { status: 204, delayMs: path === '/ahead-slow' ? 150 : 0 };
    return new Promise(() => {});
  });
  const tenants: Record<'fast' | 'slow', { apiKey: string; subscriptionId: string }> = {} as never;
  for (const speed of ['fast', 'slow'] as const) {
    const tenant = await hl.createTenant(`Ahead ${speed}`);
    const created = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
      { input: { url: `${gated.url}/ahead-${speed}`, events: ['invoice.*'] } },
      tenant.apiKey,
    );
    tenants[speed] = { apiKey: tenant.apiKey, subscriptionId: created.data.createWebhookSubscription.subscription.id };
  }
  const claimed = async (speed: 'fast' | 'slow') => {
    const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where subscription_id = $1 and status = 'SENDING'`, [tenants[speed].subscriptionId]);
    return n as number;
  };
  // Hanging attempts are not taken for slow (which holds a tenant to twice) within the test.
  await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_DELIVERY_TIMEOUT: '60s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { dispatcher: { slowAfterMs: 30_000 } }, async () => {
    for (const speed of ['fast', 'slow'] as const) {
      await Promise.all(Array.from({ length: 8 }, (_, i) => trigger(tenants[speed].apiKey, 'invoice.created', { amount: i, customer: 'Warm' })));
    }
    await gated.waitFor(16, 10_000);
    await eventually(async () => (await claimed('fast')) + (await claimed('slow')) === 0, 10_000); // recorded
    for (const speed of ['fast', 'slow'] as const) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => trigger(tenants[speed].apiKey, 'invoice.created', { amount: i, customer: 'Backlog' })));
    }
    // Two of each under way (the share), and claimed besides: six of the fast one's, two of the slow one's.
    await eventually(async () => (await claimed('fast')) === 8 && (await claimed('slow')) === 4, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    expect({ fast: await claimed('fast'), slow: await claimed('slow') }).toEqual({ fast: 8, slow: 4 });
    expect(gated.received.filter((r) => r.path === '/ahead-fast').length).toBe(10);
    expect(gated.received.filter((r) => r.path === '/ahead-slow').length).toBe(10);
  }, [gated]);
  // What is left of the backlogs would otherwise be the next worker's work.
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where subscription_id = any($1) and status = 'PENDING'`, [
    [tenants.fast.subscriptionId, tenants.slow.subscriptionId],
  ]);
}, 40_000);

it('a backlog claimed while its receiver was not yet known to be fast goes on as soon as it is: its deeper share does not wait out a back-off', async () => {
  const tenant = await hl.createTenant('Newly fast');
  await subscribe(tenant.apiKey, `${fast.url}/newly-fast`, ['invoice.*']);
  await Promise.all(Array.from({ length: 40 }, (_, i) => trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' })));
  // Its first claim fills twice its share, the next finds nothing and backs off (20 s here); the
  // first answers make its share deeper, which wakes the claim rather than leave it to the back-off.
  await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2' }, { dispatcher: { cappedClaimGapMs: 20_000 } }, async () => {
    await arrivedWithin(fast, (path) => path === '/newly-fast', 40, Date.now(), 10_000, 'deliveries of the backlog');
  });
}, 30_000);

it('a fast subscription holding nothing, whose backlog falls due at once, is claimed for again until it is drained, not at each poll', async () => {
  const tenant = await hl.createTenant('Known fast');
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: `${fast.url}/known-fast`, events: ['invoice.*'] } },
    tenant.apiKey,
  );
  const subscriptionId: string = created.data.createWebhookSubscription.subscription.id;
  const arrived = () => fast.received.filter((r) => r.path === '/known-fast').length;
  await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2' }, {}, async () => {
    await Promise.all(Array.from({ length: 8 }, (_, i) => trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Warm' })));
    await eventually(() => arrived() === 8, 10_000); // the worker knows it as fast, and holds none of it
    // A change of the subscription under way (its row held): claims pass its deliveries by, which
    // pile up due; once let go (no notification) they are all due at once, as rows found by a poll.
    const lock = new pg.Client({ connectionString: hl.databaseUrl });
    await lock.connect();
    try {
      await lock.query('begin');
      await lock.query('select 1 from webhook_subscriptions where id = $1 for no key update', [subscriptionId]);
      await Promise.all(Array.from({ length: 60 }, (_, i) => trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Backlog' })));
      await lock.query('rollback');
    } finally {
      await lock.end();
    }
    // Claimed twice its share at first (it held nothing), then deeper: not four a second, at each poll.
    await arrivedWithin(fast, (path) => path === '/known-fast', 68, Date.now(), 5_000, 'deliveries of the backlog');
  });
}, 30_000);

it("a fast subscription's drain does not pause when its tenant's slow attempts end (its share deepens)", async () => {
  const tenant = await hl.createTenant('Fast beside slow');
  const quick = await startReceiver(() => ({ status: 204, delayMs: 10 })); // 2 at a time: about 150 a second
  await subscribe(tenant.apiKey, `${quick.url}/beside-slow`, ['invoice.*']);
  await subscribe(tenant.apiKey, `${slow.url}/beside-slow`, ['payment.*']);
  for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 40 }, (_, j) => trigger(tenant.apiKey, 'invoice.created', { amount: i * 40 + j, customer: 'Acme' })));
  const payment = (n: number) => trigger(tenant.apiKey, 'payment.received', { payment_id: `p${n}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
  await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_DELIVERY_TIMEOUT: '5s' }, {}, async () => {
    const arrivals = () => quick.received.map((r) => r.at);
    await eventually(() => arrivals().length >= 20, 10_000);
    // Slow attempts (1.5 s: past the second after which they count as slow) start and end while it drains.
    for (let n = 0; n < 3 && arrivals().length < 700; n++) {
      await payment(n);
      await new Promise((r) => setTimeout(r, 1_200));
    }
    await eventually(() => arrivals().length === 800, 30_000);
    const at = arrivals().sort((a, b) => a - b);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    expect(Math.max(...gaps), 'the longest pause in its drain (ms)').toBeLessThan(500);
  }, [quick]);
  // A payment not yet sent would otherwise be the next worker's work.
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where tenant_id = $1 and status = 'PENDING'`, [tenant.id]);
}, 60_000);

it("a fast subscription's answers do not wake claims that back off behind another's full share", async () => {
  const tenant = await hl.createTenant('Full share');
  await subscribe(tenant.apiKey, `${slow.url}/full-share`, ['invoice.*']);
  for (let i = 0; i < 12; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  // Other tenants, each with a subscription of its own (one the last claim did not fill).
  const others: string[] = [];
  for (let t = 0; t < 15; t++) {
    const other = await hl.createTenant(`Fast meanwhile ${t}`);
    await subscribe(other.apiKey, `${fast.url}/fast-meanwhile`, ['payment.*']);
    others.push(other.apiKey);
  }
  await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_DELIVERY_TIMEOUT: '5s' }, { dispatcher: { cappedClaimGapMs: 1_000 } }, async (worker) => {
    await untilBackedOff(worker);
    const before = await emptyClaims(worker);
    const started = Date.now();
    // Their deliveries, each claimed for its tenant alone and answered at once.
    for (let n = 0; n < 30; n++) {
      await trigger(others[n % others.length]!, 'payment.received', { payment_id: `p${n}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
      await new Promise((r) => setTimeout(r, 50));
    }
    await arrivedWithin(fast, (path) => path === '/fast-meanwhile', 30, started, 10_000, 'the other tenants\' deliveries');
    const seconds = Math.ceil((Date.now() - started) / 1_000);
    // About one a second (the back-off), and a poll's: not one for each of the 30 answers.
    expect((await emptyClaims(worker)) - before).toBeLessThanOrEqual(2 * seconds + 2);
  });
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where tenant_id = $1 and status = 'PENDING'`, [tenant.id]);
}, 40_000);

it('a subscription at its share, with more due behind it, does not make the worker claim in a loop', async () => {
  const tenant = await hl.createTenant('Saturated');
  await subscribe(tenant.apiKey, `${slow.url}/saturated`, ['invoice.*']);
  for (let i = 0; i < 12; i++) {
    await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  }
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_DELIVERY_TIMEOUT: '5s' }, {}, async (worker) => {
    const claims = () => worker.metric('hookline_queue_claims_total'); // found and empty
    const before = slow.received.filter((r) => r.path === '/saturated').length;
    while (slow.received.filter((r) => r.path === '/saturated').length < before + 2) await new Promise((r) => setTimeout(r, 20));
    // Both of its slots are taken for 1.5 s and 10 deliveries wait: nothing can be claimed until a slot frees.
    const first = await claims();
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await claims()) - first).toBeLessThanOrEqual(2); // the 1 s poll, at most
    // As its slots free, the waiting ones go.
    await slow.waitFor(before + 4, 5_000);
  });
}, 30_000);

it('an idle worker claims once per delivery: a freed slot does not ask again when the last claim found everything', async () => {
  const tenant = await hl.createTenant('Idle');
  await subscribe(tenant.apiKey, `${fast.url}/idle`, ['invoice.*']);
  // No polls (600 s) to add claims of their own on a slow machine.
  await withWorker({}, { dispatcher: { pollIntervalMs: 600_000 } }, async (worker) => {
    const claims = () => worker.metric('hookline_queue_claims_total'); // found and empty
    // Whatever the earlier tests left is sent first.
    for (let settled = -1, now = await claims(); settled !== now; ) {
      settled = now;
      await new Promise((r) => setTimeout(r, 300));
      now = await claims();
    }
    const first = await claims();
    const arrived = () => fast.received.filter((r) => r.path === '/idle').length;
    for (let i = 0; i < 10; i++) {
      await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
      while (arrived() < i + 1) await new Promise((r) => setTimeout(r, 5));
    }
    // One claim each, and at most a poll or two besides (before, each freed slot claimed again: 20).
    expect((await claims()) - first).toBeLessThanOrEqual(12);
  });
}, 30_000);

/**
 * Trigger to arrival at `fast` of `count` payments of the tenant of `apiKey` (its subscription
 * at `path`), one at a time, `gapMs` apart: each wait (ms).
 */
async function waitsOf(apiKey: string, path: string, count: number, gapMs: number): Promise<number[]> {
  const waits: number[] = [];
  const before = fast.received.filter((r) => r.path === path).length;
  for (let i = 0; i < count; i++) {
    await new Promise((r) => setTimeout(r, gapMs));
    const started = Date.now();
    await trigger(apiKey, 'payment.received', { payment_id: `${path}-${i}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
    await arrivedWithin(fast, (p) => p === path, before + i + 1, started, 10_000, `the deliveries to ${path}`);
    waits.push(Date.now() - started);
  }
  return waits;
}

it('one tenant\'s slow endpoints, however many, do not hold up another tenant', async () => {
  // Tenant A: three subscriptions to a receiver that takes 4 s to answer, 10 events each.
  const glacial = await startReceiver(() => ({ status: 200, delayMs: 4_000 }));
  const a = await hl.createTenant('Slow A');
  const b = await hl.createTenant('Fast B');
  try {
    for (let i = 0; i < 3; i++) await subscribe(a.apiKey, `${glacial.url}/a${i}`, ['invoice.*']);
    await subscribe(b.apiKey, `${fast.url}/tenant-b`, ['payment.*']);
    for (let i = 0; i < 10; i++) await trigger(a.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    for (let i = 0; i < 4; i++) {
      await trigger(b.apiKey, 'payment.received', { payment_id: `p${i}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
    }
    // 8 slots, 4 per subscription: A's older deliveries take every slot at first. Its
    // attempts give their slots back after a second, so B's go out long before A's
    // first answers (4 s) or timeouts (5 s) would have freed one.
    await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '4', HOOKLINE_DISPATCH_PER_TENANT: '10', HOOKLINE_DELIVERY_TIMEOUT: '5s' }, {}, async () => {
      const started = Date.now();
      await arrivedWithin(fast, (path) => path === '/tenant-b', 4, started, 3_500, "tenant B's deliveries");
      expect(glacial.received[0]!.at).toBeLessThan(fast.received.filter((r) => r.path === '/tenant-b')[0]!.at); // A went first
      // Before any of A's answers came back, A had at most its tenant's share (10) in
      // flight: not the 12 its three subscriptions' shares would allow.
      await new Promise((r) => setTimeout(r, Math.max(0, started + 3_500 - Date.now())));
      expect(glacial.received.filter((r) => r.at < started + 3_500).length).toBe(10);
    });
  } finally {
    await glacial.close();
  }
}, 30_000);

it('several subscriptions to one host are sent to at once, each up to its own share', async () => {
  // Each subscription may have 2 in flight; two subscriptions on one host make 4, and all
  // 4 must be on the wire, not waiting for a connection while their timeout runs.
  const held = await startReceiver(() => ({ status: 200, delayMs: 2_000 }));
  const tenant = await hl.createTenant('One host');
  try {
    await subscribe(tenant.apiKey, `${held.url}/one`, ['invoice.*']);
    await subscribe(tenant.apiKey, `${held.url}/two`, ['invoice.*']);
    for (let i = 0; i < 2; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_DELIVERY_TIMEOUT: '5s' }, {}, async () => {
      const arrived = await held.waitFor(4, 1_500);
      expect(arrived.map((r) => r.path).sort()).toEqual(['/one', '/one', '/two', '/two']);
    });
  } finally {
    await held.close();
  }
}, 30_000);

it('a delivery that could no longer be sent within its lease goes back to the queue, and is sent once', async () => {
  // Leases of 4.5 s with a 1 s timeout leave a claimed delivery 0.5 s from the claim to start
  // (the rest is its attempt and the record's margin). The second delivery of a subscription
  // whose first hangs for 1 s waits longer than that.
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  const silent = await hangingReceiver();
  const tenant = await hl.createTenant('Patient');
  try {
    await subscribe(tenant.apiKey, `${silent.url}/patient`, ['invoice.*']);
    for (let i = 0; i < 2; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1', HOOKLINE_DELIVERY_TIMEOUT: '1s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { dispatcher: { leaseMs: 4_500 }, log }, async () => {
      await silent.waitFor(2, 10_000);
      await new Promise((r) => setTimeout(r, 1_500));
      const ids = silent.received.map((r) => String(r.headers['x-webhook-delivery']));
      expect(new Set(ids).size).toBe(2);
      expect(ids).toHaveLength(2);
      expect(lines.join('\n')).toContain('waited too long for a slot; handed back to the queue');
    });
  } finally {
    await silent.close();
  }
}, 30_000);

it('an overdue attempt takes the room of a slow one that ends, and its slot goes to the next delivery', async () => {
  // One slot, room for one slow attempt, receivers that hang until the 3 s timeout, three
  // tenants: X's attempt gives its slot to Y's after 1 s; Y's cannot give its own (X's holds
  // the slow room) until X's ends at 3 s, and Z's starts then, not when Y's times out at 4 s.
  const silent = await hangingReceiver();
  const tenants = [await hl.createTenant('Overdue X'), await hl.createTenant('Overdue Y'), await hl.createTenant('Overdue Z')];
  try {
    for (const [n, t] of tenants.entries()) await subscribe(t.apiKey, `${silent.url}/${n}`, ['invoice.*']);
    for (const t of tenants) await trigger(t.apiKey, 'invoice.created', { amount: 1, customer: 'Acme' });
    await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '1', HOOKLINE_DELIVERY_TIMEOUT: '3s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { dispatcher: { slowCapacity: 1 } }, async () => {
      const [first, , third] = await silent.waitFor(3, 10_000);
      expect(third!.path).toBe('/2');
      expect(third!.at - first!.at).toBeGreaterThan(2_500);
      // Y's timeout, which the fault waited for, is at 1 s + 3 s, timers never early: 3.9 s
      // leaves a loaded machine 0.9 s past X's end.
      expect(third!.at - first!.at).toBeLessThan(3_900);
    });
  } finally {
    await silent.close();
  }
}, 30_000);

it('deliveries parked behind hanging subscriptions do not keep others from being claimed', async () => {
  // 8 subscriptions to a receiver that never answers (10 s timeout), 6 events each: each
  // soon has 1 attempt hanging and 1 more claimed, parked behind it, with its backlog waiting.
  const silent = await hangingReceiver();
  const hanging = await hl.createTenant('Hanging');
  const healthy = await hl.createTenant('Healthy');
  for (let i = 0; i < 8; i++) await subscribe(hanging.apiKey, `${silent.url}/h${i}`, ['invoice.*']);
  for (let i = 0; i < 6; i++) await trigger(hanging.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  await subscribe(healthy.apiKey, `${fast.url}/healthy`, ['payment.*']);
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '2', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1', HOOKLINE_DELIVERY_TIMEOUT: '10s' }, {}, async () => {
    await silent.waitFor(8, 15_000); // every hanging subscription has its attempt under way
    await new Promise((r) => setTimeout(r, 1_500)); // and the last of them has given its slot back
    const started = Date.now();
    await trigger(healthy.apiKey, 'payment.received', { payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
    await arrivedWithin(fast, (path) => path === '/healthy', 1, started, 2_000, 'the healthy tenant\'s deliveries');
  }, [silent]);
}, 60_000);

it('with slow attempts at capacity, a tenant whose receivers hang starts no more, and the slots go to the others', async () => {
  // Room for 2 slow attempts and 2 slots: tenant A's three hanging subscriptions fill the
  // slow room within a second; its third attempt would then hold a slot for the whole 10 s
  // timeout, and its fourth the other. Tenant B's delivery must not wait for them.
  // What earlier tests left in the queue (quick retries of theirs) would take slots A's first
  // deliveries are counted on to take.
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const silent = await hangingReceiver();
  const a = await hl.createTenant('Lingering A');
  const b = await hl.createTenant('Quick B');
  for (let i = 0; i < 4; i++) await subscribe(a.apiKey, `${silent.url}/a${i}`, ['invoice.*']);
  await trigger(a.apiKey, 'invoice.created', { amount: 1, customer: 'Acme' });
  await subscribe(b.apiKey, `${fast.url}/quick-b`, ['payment.*']);
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '2', HOOKLINE_DELIVERY_TIMEOUT: '10s' }, { dispatcher: { slowCapacity: 2 } }, async () => {
    await silent.waitFor(2, 10_000);
    await new Promise((r) => setTimeout(r, 3_000)); // A's first two are slow, and the slow room is full
    await trigger(a.apiKey, 'invoice.created', { amount: 2, customer: 'Acme' }); // 4 more of A's, due now
    const started = Date.now();
    await trigger(b.apiKey, 'payment.received', { payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
    await arrivedWithin(fast, (path) => path === '/quick-b', 1, started, 1_500, "B's deliveries");
    // Nor are A's new deliveries claimed, to wait under a lease: its first event's 4 are (2 sent,
    // 2 claimed before the slow room was full), its second event's 4 stay in the queue.
    await new Promise((r) => setTimeout(r, 300));
    const rows = await hl.dataSource.query(
      `select status, count(*)::int as n from webhook_deliveries where tenant_id = $1 group by status order by status`,
      [a.id],
    );
    expect(rows).toEqual([
      { status: 'PENDING', n: 4 },
      { status: 'SENDING', n: 4 },
    ]);
  }, [silent]);
}, 60_000);

it('claims that find nothing while shares are full are spaced out, however often something wakes the worker', async () => {
  // A hanging subscription at its share (1 in flight, 1 parked), and new deliveries for it
  // announced every 25 ms: each notification wakes the worker, and there is nothing it may take.
  // What earlier tests left (retries falling due meanwhile) would wake it too: it goes first.
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const silent = await hangingReceiver();
  const tenant = await hl.createTenant('Waking');
  await subscribe(tenant.apiKey, `${silent.url}/full`, ['invoice.*']);
  for (let i = 0; i < 2; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  await withWorker({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1', HOOKLINE_DELIVERY_TIMEOUT: '10s' }, {}, async (worker) => {
    const claims = () => emptyClaims(worker);
    await silent.waitFor(1, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const first = await claims();
    const started = Date.now();
    for (let i = 0; i < 40; i++) {
      await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
      await new Promise((r) => setTimeout(r, 25));
    }
    const seconds = (Date.now() - started) / 1000;
    // At most one claim per 100 ms (and a poll), against one per notification before.
    expect((await claims()) - first).toBeLessThanOrEqual(Math.ceil(seconds * 10) + 2);
  }, [silent]);
}, 60_000);

it('a full share elsewhere does not slow the refill of freed slots for everyone else', async () => {
  // A hanging subscription stays at its share; meanwhile 10 events fan out to 40 healthy
  // subscriptions (400 deliveries, 20 ms answers), none of which reaches its share.
  const silent = await hangingReceiver();
  const quick = await startReceiver(() => ({ status: 200, delayMs: 20 }));
  const a = await hl.createTenant('Full share');
  const b = await hl.createTenant('Fan-out');
  try {
    await subscribe(a.apiKey, `${silent.url}/full-share`, ['invoice.*']);
    for (let i = 0; i < 10; i++) await trigger(a.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    for (let i = 0; i < 40; i++) await subscribe(b.apiKey, `${quick.url}/fan-${i}`, ['payment.*']);
    await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '4', HOOKLINE_DELIVERY_TIMEOUT: '20s' }, {}, async () => {
      await silent.waitFor(4, 10_000); // the hanging subscription at its share
      await new Promise((r) => setTimeout(r, 1_500));
      const started = Date.now();
      await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          trigger(b.apiKey, 'payment.received', { payment_id: `p${j}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' }),
        ),
      );
      // 400 answers of 20 ms over 8 slots take 1 s; waiting for polls instead took 18 s.
      await quick.waitFor(400, 6_000);
      expect(Date.now() - started).toBeLessThan(6_000);
    }, [silent]);
  } finally {
    await quick.close();
  }
}, 60_000);

it('a tenant whose only slow-waiting attempt was overdue is claimed for as soon as that attempt ends', async () => {
  // One room for slow attempts: X's hanging attempt takes it at 1 s; Y's, answered at 1.5 s,
  // waits overdue meanwhile, so Y's next delivery is left out of claims until it answers.
  const silent = await hangingReceiver();
  const late = await startReceiver(() => ({ status: 200, delayMs: 1_500 }));
  const x = await hl.createTenant('Overdue only X');
  const y = await hl.createTenant('Overdue only Y');
  try {
    await subscribe(x.apiKey, `${silent.url}/x`, ['invoice.*']);
    await subscribe(y.apiKey, `${late.url}/y`, ['invoice.*']);
    await trigger(x.apiKey, 'invoice.created', { amount: 1, customer: 'Acme' });
    // A poll of 30 s: a claim left to it would come seconds late, not within a busy machine's stall.
    await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '2', HOOKLINE_DELIVERY_TIMEOUT: '10s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { dispatcher: { slowCapacity: 1, pollIntervalMs: 30_000 } }, async () => {
      await silent.waitFor(1, 10_000);
      await new Promise((r) => setTimeout(r, 200));
      await trigger(y.apiKey, 'invoice.created', { amount: 1, customer: 'Acme' });
      const [first] = await late.waitFor(1, 10_000);
      await new Promise((r) => setTimeout(r, Math.max(0, first!.at + 1_150 - Date.now())));
      await trigger(y.apiKey, 'invoice.created', { amount: 2, customer: 'Acme' });
      const [, second] = await late.waitFor(2, 10_000);
      // Started as the first was answered (1.5 s after it arrived), not at the next poll.
      expect(second!.at - (first!.at + 1_500)).toBeLessThan(1_500);
    }, [silent]);
  } finally {
    await late.close();
  }
}, 30_000);

it('while claims back off behind a full share, another tenant\'s new delivery is claimed for it alone, at once', async () => {
  // Tenant A's hanging subscription is at its share (1 in flight, 1 parked) with 28 more due,
  // older than anything else: a general claim finds nothing it may take, and the next waits
  // (20 s here). Tenant B's delivery, named by the insert's notification, is claimed through
  // B's own due index instead, without walking A's backlog or waiting for the general claim.
  const silent = await hangingReceiver();
  const a = await hl.createTenant('Backlog A');
  const b = await hl.createTenant('Notified B');
  await subscribe(a.apiKey, `${silent.url}/backlog`, ['invoice.*']);
  for (let i = 0; i < 30; i++) await trigger(a.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  await subscribe(b.apiKey, `${fast.url}/notified-b`, ['payment.*']);
  const worker = { HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1', HOOKLINE_DELIVERY_TIMEOUT: '30s', HOOKLINE_RETRY_SCHEDULE: '1h' };
  await withWorker(worker, { dispatcher: { cappedClaimGapMs: 20_000 } }, async (w) => {
    await silent.waitFor(1, 10_000);
    await untilBackedOff(w);
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      await trigger(b.apiKey, 'payment.received', { payment_id: `p${i}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
      await arrivedWithin(fast, (path) => path === '/notified-b', i + 1, started, 2_000, "B's deliveries");
    }
    // A's backlog is still where it was: its share is full, so nothing of it was claimed apart.
    const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where tenant_id = $1 and status = 'PENDING'`, [a.id]);
    expect(n).toBe(28);
  }, [silent]);
}, 60_000);

it('a notified tenant whose claim comes back full is claimed for again, not left behind the back-off', async () => {
  // As above, with 2 slots: each claim for tenant C can take only 1 or 2 of the 4 deliveries
  // its event fans out to; the rest must not wait for the general claim (backing off for 20 s).
  const silent = await hangingReceiver();
  const a = await hl.createTenant('Backlog A2');
  const c = await hl.createTenant('Fanned-out C');
  await subscribe(a.apiKey, `${silent.url}/backlog-2`, ['invoice.*']);
  for (let i = 0; i < 10; i++) await trigger(a.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  for (let i = 0; i < 4; i++) await subscribe(c.apiKey, `${fast.url}/fanned-${i}`, ['payment.*']);
  const worker = { HOOKLINE_DISPATCH_CONCURRENCY: '2', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1', HOOKLINE_DELIVERY_TIMEOUT: '30s', HOOKLINE_RETRY_SCHEDULE: '1h' };
  await withWorker(worker, { dispatcher: { cappedClaimGapMs: 20_000 } }, async (w) => {
    await silent.waitFor(1, 10_000);
    await untilBackedOff(w);
    const started = Date.now();
    await trigger(c.apiKey, 'payment.received', { payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
    await arrivedWithin(fast, (path) => path.startsWith('/fanned-'), 4, started, 3_000, "C's deliveries");
  }, [silent]);
}, 60_000);

it('a busy worker that claims for a notified tenant goes on claiming the rest of its deliveries, with no poll to wait for', async () => {
  // Tenant Y keeps the worker busy (200 ms answers). Tenant X's 30 deliveries to one
  // subscription (a share of 2 in flight, 4 held) are named by their notification: X's own
  // claim fills the share, and the rest must come by the worker's claims as slots free, not
  // by its poll (30 s here).
  const steady = await startReceiver(() => ({ status: 200, delayMs: 200 }));
  const x = await hl.createTenant('Many X');
  const y = await hl.createTenant('Steady Y');
  try {
    await subscribe(y.apiKey, `${steady.url}/steady-y`, ['invoice.*']);
    await subscribe(x.apiKey, `${fast.url}/many-x`, ['payment.*']);
    for (let i = 0; i < 60; i++) await trigger(y.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    const worker = { HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_RETRY_SCHEDULE: '1h' };
    await withWorker(worker, { dispatcher: { pollIntervalMs: 30_000 } }, async () => {
      await steady.waitFor(2, 10_000);
      const started = Date.now();
      await Promise.all(
        Array.from({ length: 30 }, (_, j) =>
          trigger(x.apiKey, 'payment.received', { payment_id: `p${j}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' }),
        ),
      );
      await arrivedWithin(fast, (path) => path === '/many-x', 30, started, 10_000, "X's deliveries");
    });
  } finally {
    await steady.close();
  }
}, 60_000);

/**
 * A due delivery of `tenantId`'s (to its one subscription) that no notification names, as a
 * retry falling due is: inserted with triggers off, `due` (SQL) being when it fell due.
 */
async function insertUnannounced(tenantId: string, eventId: string, due: string): Promise<void> {
  await hl.dataSource.transaction(async (m) => {
    await m.query('set local session_replication_role = replica');
    const [event] = await m.query(
      `insert into webhook_events (id, tenant_id, event, data, body, created_at)
       values (gen_random_uuid(), $1, 'payment.received', '{}', $2, ${due}) returning id`,
      [tenantId, JSON.stringify({ id: eventId, type: 'payment.received', data: {} })],
    );
    const [subscription] = await m.query(`select id, url from webhook_subscriptions where tenant_id = $1`, [tenantId]);
    await m.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at, created_at)
       values ($1, $2, $3, 'payment.received', $4, 'PENDING', ${due}, ${due})`,
      [tenantId, event.id, subscription.id, subscription.url],
    );
  });
}

/**
 * Tenant S streams events to 12 subscriptions of `receiver`, faster than the worker's slots can
 * send them: its notifications keep naming it and its claims keep coming back full. Tenant R's
 * delivery is the oldest due row, and only the worker's general claim can find it (inserted
 * with triggers off, announced anonymously, as a retry falling due is). It must not wait for S.
 */
async function unnamedBesideStream(name: string, receiver: Receiver, env: Record<string, string>): Promise<void> {
  // What earlier tests left in the queue would take the few slots first (a 1.5 s answer each).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const s = await hl.createTenant(`Streaming ${name}`);
  const r = await hl.createTenant(`Unnamed ${name}`);
  for (let i = 0; i < 12; i++) await subscribe(s.apiKey, `${receiver.url}/stream-${name}-${i}`, ['invoice.*']);
  await subscribe(r.apiKey, `${fast.url}/unnamed-${name}`, ['payment.*']);
  await withWorker({ HOOKLINE_DELIVERY_TIMEOUT: '5s', HOOKLINE_RETRY_SCHEDULE: '1h', ...env }, { dispatcher: { pollIntervalMs: 30_000 } }, async () => {
    let streaming = true;
    const stream = (async () => {
      for (let i = 0; streaming && i < 60; i++) {
        await trigger(s.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
        await new Promise((done) => setTimeout(done, 100));
      }
    })();
    try {
      // The stream has the slots.
      await arrivedWithin(receiver, (path) => path.startsWith(`/stream-${name}-`), 4, Date.now(), 10_000, "the stream's deliveries");
      await new Promise((done) => setTimeout(done, 500));
      await insertUnannounced(r.id, `evt_unnamed_${name}`, "now() - interval '1 hour'");
      const started = Date.now();
      await hl.dataSource.query(`select pg_notify('hookline_deliveries_due', '')`);
      await arrivedWithin(fast, (path) => path === `/unnamed-${name}`, 1, started, 5_000, "R's deliveries");
      expect(streaming, 'the stream was still going').toBe(true);
    } finally {
      streaming = false;
      await stream;
    }
  });
}

it('tenants\' claims take turns with the worker\'s own: a due delivery no notification names is not held up by a notified tenant\'s stream', async () => {
  // Answers of 1.5 s: slots come back as attempts turn slow (after a second).
  await unnamedBesideStream('slow', slow, { HOOKLINE_DISPATCH_CONCURRENCY: '4' });
}, 60_000);

it('and with one slot and quick answers, where each freed slot could go to the notified tenant\'s next claim', async () => {
  const quick = await startReceiver(() => ({ status: 200, delayMs: 300 }));
  try {
    await unnamedBesideStream('quick', quick, { HOOKLINE_DISPATCH_CONCURRENCY: '1' });
  } finally {
    await quick.close();
  }
}, 60_000);

it('behind another tenant\'s backlog, a delivery that falls due with no notification (a retry) is found and claimed for its tenant', async () => {
  // Tenant A's 300 deliveries, due first, keep the worker's 4 slots busy for 15 s (200 ms
  // answers), and every claim comes back full of them. Tenant Q's delivery falls due behind
  // them, announced by nothing: the worker's look for tenants with deliveries due (every
  // second) must find it, not leave it to the end of A's backlog.
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const steady = await startReceiver(() => ({ status: 200, delayMs: 200 }));
  const a = await hl.createTenant('Backlogged A3');
  const q = await hl.createTenant('Retrying Q');
  try {
    await subscribe(a.apiKey, `${steady.url}/backlog-3`, ['invoice.*']);
    await subscribe(q.apiKey, `${fast.url}/retry-q`, ['payment.*']);
    for (let i = 0; i < 300; i++) await trigger(a.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    const worker = { HOOKLINE_DISPATCH_CONCURRENCY: '4', HOOKLINE_RETRY_SCHEDULE: '1h' };
    await withWorker(worker, { dispatcher: { pollIntervalMs: 30_000 } }, async () => {
      await steady.waitFor(4, 10_000);
      const started = Date.now();
      await insertUnannounced(q.id, 'evt_retry_q', 'now()');
      await arrivedWithin(fast, (path) => path === '/retry-q', 1, started, 3_000, "Q's delivery");
      const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where tenant_id = $1 and status = 'PENDING'`, [a.id]);
      expect(n, "A's backlog was still ahead of it").toBeGreaterThan(100);
    });
  } finally {
    await steady.close();
  }
}, 60_000);

it("a freed slot goes to the tenant with the fewest attempts in flight: another's backlog, answered just under a second, does not go first", async () => {
  // Tenant L's endpoints answer in 200-800 ms, under the second after which an attempt gives
  // its slot back, so they hold every slot, and the deliveries L has claimed wait, ready, for
  // the next. Tenant N's delivery, claimed at the first slot freed after it, is started at the
  // next: before, it waited for every ready one of L's (16 here, and in production up to 128
  // answers of L's, a second each).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const steady = await startReceiver(() => ({ status: 200, delayMs: 200 + Math.floor(Math.random() * 600) }));
  const l = await hl.createTenant('Long answers L');
  const n = await hl.createTenant('Next N');
  try {
    for (let i = 0; i < 2; i++) await subscribe(l.apiKey, `${steady.url}/long-${i}`, ['invoice.*']);
    await subscribe(n.apiKey, `${fast.url}/next-n`, ['payment.*']);
    for (let i = 0; i < 120; i++) await trigger(l.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
    const worker = { HOOKLINE_DISPATCH_CONCURRENCY: '16', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '8', HOOKLINE_DELIVERY_TIMEOUT: '5s' };
    await withWorker(worker, {}, async () => {
      await steady.waitFor(40, 10_000); // slots full, and more of L's claimed behind them
      const started = Date.now();
      await trigger(n.apiKey, 'payment.received', { payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' });
      await arrivedWithin(fast, (path) => path === '/next-n', 1, started, 5_000, "N's delivery");
      const arrived = fast.received.find((r) => r.path === '/next-n')!.at;
      const before = steady.received.filter((r) => r.at > started && r.at < arrived).length;
      expect(before, "L's attempts started between N's trigger and its arrival").toBeLessThanOrEqual(4);
      const [{ pending }] = await hl.dataSource.query(`select count(*)::int as pending from webhook_deliveries where tenant_id = $1 and status in ('PENDING', 'SENDING')`, [l.id]);
      expect(pending, "L's backlog was still there").toBeGreaterThan(50);
    }, [steady]);
  } finally {
    await steady.close();
  }
}, 60_000);

it('with slow attempts at capacity and the slots held by several tenants\' hanging attempts, another tenant\'s delivery is claimed at once and goes at a freed slot', async () => {
  // 8 slots and room for 16 slow attempts; four tenants whose receivers never answer (4 s
  // timeout), each with a backlog: their attempts fill the slow room and then, overdue, hold the
  // slots, and their claims keep the claim room full of their deliveries, ready for the next
  // freed slot. Tenant Q, holding nothing, must be claimed for as soon as it is notified, and
  // its delivery (its tenant with no attempt in flight) go at the next freed slot: it waited
  // behind each of the others' claims in turn, a freed slot each (3.9-4.1 s at worst in four
  // runs, against about 1 s, the wait for a slot, since).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const silent = await hangingReceiver();
  for (let t = 0; t < 4; t++) {
    const tenant = await hl.createTenant(`Hanging ${t}`);
    for (let s = 0; s < 3; s++) await subscribe(tenant.apiKey, `${silent.url}/h${t}-${s}`, ['invoice.*']);
    for (let i = 0; i < 20; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  }
  const q = await hl.createTenant('Quick Q');
  await subscribe(q.apiKey, `${fast.url}/quick-q`, ['payment.*']);
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DELIVERY_TIMEOUT: '4s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { dispatcher: { slowCapacity: 16 } }, async (worker) => {
    for (const started = Date.now(); (await worker.metric('hookline_deliveries_slow_in_flight')) < 16; await new Promise((r) => setTimeout(r, 50))) {
      expect(Date.now() - started, 'the slow room never filled').toBeLessThan(15_000);
    }
    await new Promise((r) => setTimeout(r, 3_000)); // past the first slow attempts' ends: steady
    const waits = await waitsOf(q.apiKey, '/quick-q', 10, 200);
    expect(Math.max(...waits), `Q's waits: ${waits.join(', ')} ms`).toBeLessThan(2_500);
    // The hanging tenants' backlogs were there all along.
    const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where target_url like $1 and status = 'PENDING'`, [`${silent.url}/h%`]);
    expect(n).toBeGreaterThan(0);
  }, [silent]);
}, 90_000);

it("a tenant whose attempts turn slow leaves the last slots to the others: another tenant's delivery goes at once, not when the next wave of them turns slow", async () => {
  // A slot is given back only once its attempt counts as slow (a second, by default; 4 s here).
  // A tenant with a backlog to a hanging receiver refilled each slot as it was given back, so
  // every slot was its own again until its next wave turned slow, and another tenant's delivery
  // waited up to that long (a review: up to 1 s, 1.7 s with several such tenants).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const silent = await hangingReceiver();
  const h = await hl.createTenant('Hanging waves');
  // Three subscriptions: one alone may have no more than the concurrency in flight, slow ones included.
  for (let s = 0; s < 3; s++) await subscribe(h.apiKey, `${silent.url}/waves-${s}`, ['invoice.*']);
  for (let i = 0; i < 20; i++) await trigger(h.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  const w = await hl.createTenant('Waiting W');
  await subscribe(w.apiKey, `${fast.url}/wave-w`, ['payment.*']);
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DELIVERY_TIMEOUT: '30s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { dispatcher: { slowAfterMs: 4_000 } }, async (worker) => {
    // The first wave (8) turned slow: the tenant has slow attempts, and has filled the slots again.
    for (const started = Date.now(); (await worker.metric('hookline_deliveries_slow_in_flight')) < 8; await new Promise((r) => setTimeout(r, 50))) {
      expect(Date.now() - started, 'the first wave never turned slow').toBeLessThan(15_000);
    }
    const waits = await waitsOf(w.apiKey, '/wave-w', 5, 700);
    expect(Math.max(...waits), `W's waits: ${waits.join(', ')} ms`).toBeLessThan(1_500);
    // The hanging tenant kept the other slots: 7 of 8 in each wave.
    expect(await worker.metric('hookline_deliveries_in_flight')).toBeGreaterThanOrEqual(8 + 7);
    // And its deliveries kept out of the last slot are not claimed again and again: waiting for a
    // slot, they take room (a review: claims till every share was full, hundreds then handed back
    // untried past their deadline). Claimed and not started: at most a batch's worth.
    const [{ claimed }] = await hl.dataSource.query(
      `select count(*)::int as claimed from webhook_deliveries where status = 'SENDING' and target_url like $1`,
      [`${silent.url}/waves%`],
    );
    expect(claimed - (await worker.metric('hookline_deliveries_in_flight'))).toBeLessThan(16);
  }, [silent]);
}, 60_000);

it("two tenants' backlogs to slow receivers do not hold another tenant's delivery until their attempts turn slow", async () => {
  // Each slow tenant's deliveries, claimed and kept from the last slots (see the test above),
  // take room; with two such tenants they took all of it, and more than a tenant holding
  // nothing could be claimed for beyond it; and a notification that came while the worker
  // thought itself drained was left to the loop's claim, which waited for that room. Another
  // tenant's delivery was not even claimed until their rows drained into slow attempts, 0.7-2 s
  // later, in waves (a review: p95 1.3-1.9 s, against 20 ms with one such tenant).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const slowish = await startReceiver(() => ({ status: 200, delayMs: 2_000 + Math.floor(Math.random() * 3_000) }));
  for (let t = 0; t < 2; t++) {
    const tenant = await hl.createTenant(`Slowish ${t}`);
    for (let s = 0; s < 20; s++) await subscribe(tenant.apiKey, `${slowish.url}/s${t}-${s}`, ['invoice.*']);
    for (let i = 0; i < 150; i += 10) await Promise.all(Array.from({ length: 10 }, (_, j) => trigger(tenant.apiKey, 'invoice.created', { amount: i + j, customer: 'Acme' })));
  }
  const v = await hl.createTenant('Waiting V');
  await subscribe(v.apiKey, `${fast.url}/slowish-v`, ['payment.*']);
  await withWorker({ HOOKLINE_DELIVERY_TIMEOUT: '10s', HOOKLINE_RETRY_SCHEDULE: '1h' }, {}, async (worker) => {
    for (const started = Date.now(); (await worker.metric('hookline_deliveries_slow_in_flight')) < 128; await new Promise((r) => setTimeout(r, 50))) {
      expect(Date.now() - started, 'no attempts turned slow').toBeLessThan(15_000);
    }
    // Past the first wave of each: a tenant is known to be slow once its attempts have been.
    await new Promise((r) => setTimeout(r, 2_000));
    const waits = await waitsOf(v.apiKey, '/slowish-v', 30, 250);
    expect(Math.max(...waits), `V's waits: ${waits.join(', ')} ms`).toBeLessThan(700);
    // Both slow tenants still had deliveries waiting all along.
    const [{ n }] = await hl.dataSource.query(`select count(distinct tenant_id)::int as n from webhook_deliveries where target_url like $1 and status in ('PENDING', 'SENDING')`, [`${slowish.url}/s%`]);
    expect(n).toBe(2);
  }, [slowish]);
}, 90_000);

it('tenants notified while slow tenants take the room are claimed for only as far as the last slots can start: none claimed only to go back untried', async () => {
  // Past the room, a tenant holding nothing is claimed for, for the last slots (see above). Each
  // such claim, for every tenant notified or found due, made `ready` grow with the number of
  // tenants: rows that waited past their deadline, went back untried, and were claimed again
  // (a review: 300 hand-backs, some rows four times, with 200 tenants at concurrency 8).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const slowish = await startReceiver(() => ({ status: 200, delayMs: 2_000 + Math.floor(Math.random() * 1_500) }));
  const steady = await startReceiver(() => ({ status: 200, delayMs: 2_500 }));
  for (let t = 0; t < 2; t++) {
    const tenant = await hl.createTenant(`Crowding ${t}`);
    for (let s = 0; s < 5; s++) await subscribe(tenant.apiKey, `${slowish.url}/c${t}-${s}`, ['invoice.*']);
    for (let i = 0; i < 10; i++) await trigger(tenant.apiKey, 'invoice.created', { amount: i, customer: 'Acme' });
  }
  const many: string[] = [];
  for (let t = 0; t < 120; t++) {
    const tenant = await hl.createTenant(`Many ${t}`);
    await subscribe(tenant.apiKey, `${steady.url}/m${t}`, ['payment.*']);
    many.push(tenant.apiKey);
  }
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  const handedBackLate = () =>
    lines.map((line) => JSON.parse(line)).filter((l) => String(l.msg).includes('waited too long for a slot')).reduce((sum, l) => sum + l.count, 0);
  // A lease of 13 s: a claimed row must start within 6 s.
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DELIVERY_TIMEOUT: '4s', HOOKLINE_RETRY_SCHEDULE: '1h' }, { log }, async (worker) => {
    for (const started = Date.now(); (await worker.metric('hookline_deliveries_slow_in_flight')) < 8; await new Promise((r) => setTimeout(r, 50))) {
      expect(Date.now() - started, 'no attempts turned slow').toBeLessThan(15_000);
    }
    for (let i = 0; i < 2; i++) {
      await Promise.all(many.map((key, t) => trigger(key, 'payment.received', { payment_id: `m${t}-${i}`, invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' })));
    }
    await new Promise((r) => setTimeout(r, 12_000));
    expect(handedBackLate(), 'rows claimed and handed back untried past their deadline').toBeLessThan(20);
    // And the many tenants' deliveries were being sent meanwhile.
    expect(steady.received.length).toBeGreaterThan(0);
  }, [slowish, steady]);
}, 120_000);

it("with the room taken by many tenants' backlogs (none slow), another tenant's delivery is claimed for it alone and goes at a freed slot, not behind them", async () => {
  // Many tenants notified at once are each claimed for beyond the room: `ready` holds two
  // batches and more of their rows, and past that no tenant was claimed for apart, so a new
  // tenant's delivery was found only by the general claim, behind every backlog (a review: 14 s
  // at concurrency 128 with 200 tenants).
  await hl.dataSource.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where status = 'PENDING'`);
  const busy = await startReceiver(() => ({ status: 200, delayMs: 600 }));
  const crowd: string[] = [];
  for (let t = 0; t < 16; t++) {
    const tenant = await hl.createTenant(`Crowd ${t}`);
    await subscribe(tenant.apiKey, `${busy.url}/crowd-${t}`, ['invoice.*']);
    crowd.push(tenant.apiKey);
  }
  const u = await hl.createTenant('Waiting U');
  await subscribe(u.apiKey, `${fast.url}/crowd-u`, ['payment.*']);
  await withWorker({ HOOKLINE_DISPATCH_CONCURRENCY: '8', HOOKLINE_DELIVERY_TIMEOUT: '10s', HOOKLINE_RETRY_SCHEDULE: '1h' }, {}, async (worker) => {
    for (let i = 0; i < 15; i++) await Promise.all(crowd.map((key, t) => trigger(key, 'invoice.created', { amount: t * 100 + i, customer: 'Acme' })));
    for (const started = Date.now(); (await worker.metric('hookline_deliveries_in_flight')) < 8; await new Promise((r) => setTimeout(r, 20))) {
      expect(Date.now() - started, 'the slots never filled').toBeLessThan(10_000);
    }
    const waits = await waitsOf(u.apiKey, '/crowd-u', 8, 250);
    // Its turn among the tenants with nothing in flight: 8 of 16 wait, 8 slots freed every 0.6 s.
    expect(Math.max(...waits), `U's waits: ${waits.join(', ')} ms`).toBeLessThan(2_000);
    // The crowd's backlog was there all along.
    const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where target_url like $1 and status = 'PENDING'`, [`${busy.url}/crowd-%`]);
    expect(n).toBeGreaterThan(50);
  }, [busy]);
}, 90_000);
