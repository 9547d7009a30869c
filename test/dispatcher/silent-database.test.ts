// A database that goes silent, with no reset and no FIN (its host lost in a failover, a
// connection dropped by a firewall): the worker must not wait on it forever. Its statements
// time out, their connections are dropped, and once the database answers again on new
// connections the worker goes on, and stops when asked.
import { afterAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { silenceableProxy } from '../helpers/silent-proxy.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
});

/**
 * A fresh database behind a proxy, an API-only Hookline on the database itself, a tenant with
 * one subscription to a receiver answering as `respond` says; `trigger` gives the delivery's id.
 */
async function scenario(respond?: Receiver['respond']) {
  const databaseUrl = await createTestDatabase();
  const proxy = await silenceableProxy(new URL(databaseUrl));
  cleanups.push(() => proxy.close());
  const api = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
  cleanups.push(() => api.stop());
  const receiver = await startReceiver(respond);
  cleanups.push(() => receiver.close());
  const { apiKey } = await api.createTenant();
  await api.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: receiver.url, events: ['test.event'] } },
    apiKey,
  );
  const trigger = async (n: number) => {
    const res = await api.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n } } }, apiKey);
    expect(res.errors).toBeUndefined();
    return res.data.triggerEvent.deliveries[0].id as string;
  };
  /** A worker on the proxy. */
  const worker = async (env: Record<string, string>, dispatcher: NonNullable<Parameters<typeof startTestHookline>[1]>['dispatcher']) => {
    const started = await startTestHookline({ HOOKLINE_ROLE: 'worker', ...env }, { databaseUrl: proxy.url, dispatcher });
    cleanups.push(() => started.stop());
    return started;
  };
  return { proxy, api, receiver, trigger, worker };
}

/** Whether `promise` settles within `ms`. */
const within = (promise: Promise<unknown>, ms: number) =>
  Promise.race([promise.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

it('a worker whose database goes silent goes on once it answers again, and stops when asked', { timeout: 60_000 }, async () => {
  const { proxy, api, receiver, trigger, worker } = await scenario();
  const w: TestHookline = await worker({}, { databaseTimeoutMs: 1_000, pollIntervalMs: 200 });
  await trigger(0);
  await receiver.waitFor(1, 10_000);

  proxy.silence();
  for (let n = 1; n <= 5; n++) await trigger(n);
  // The worker's claims run into the silence (and time out, again and again): nothing is sent.
  await new Promise((r) => setTimeout(r, 2_500));
  expect(receiver.received).toHaveLength(1);

  proxy.answer();
  await receiver.waitFor(6, 15_000);
  expect(await within(w.stop(), 10_000), 'the worker stopped').toBe(true);
  const [{ n }] = await api.dataSource.query(`select count(*)::int as n from webhook_deliveries where status = 'DELIVERED'`);
  expect(n).toBe(6);
});

it('outcomes a worker could not record while its database restarted (connections refused) are recorded after, not sent again', { timeout: 60_000 }, async () => {
  // Answers after 1.5 s: the outcomes come while the database is down.
  const { proxy, api, receiver, trigger, worker } = await scenario(() => ({ status: 204, delayMs: 1_500 }));
  await worker({}, { databaseTimeoutMs: 2_000, pollIntervalMs: 200 });
  const ids = await Promise.all([1, 2, 3, 4, 5].map(trigger));
  await receiver.waitFor(5, 10_000);
  await proxy.down();
  await new Promise((r) => setTimeout(r, 4_000)); // the answers come, and their records are refused
  await proxy.up();
  // Recorded once the database is back (kept, not dropped: a dropped one stays SENDING until its
  // lease runs out, about 30 s, and is then sent again).
  const deadline = Date.now() + 15_000;
  for (;;) {
    const rows: Array<{ status: string; attempts: number }> = await api.dataSource.query(
      'select status, attempts from webhook_deliveries where id = any($1::uuid[])',
      [ids],
    );
    if (rows.every((r) => r.status === 'DELIVERED')) {
      expect(rows.map((r) => r.attempts)).toEqual([1, 1, 1, 1, 1]);
      break;
    }
    if (Date.now() > deadline) throw new Error(`not recorded after the restart: ${JSON.stringify(rows)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(receiver.received).toHaveLength(5);
});

it('a worker whose LISTEN connection goes silent replaces it: new deliveries go out at once, not at the next poll', { timeout: 60_000 }, async () => {
  const { proxy, receiver, trigger, worker } = await scenario();
  // Polls once a minute: only the notification sends a new delivery sooner. Checks its LISTEN
  // connection each second (a quarter of workerLostAfterMs).
  await worker({}, { pollIntervalMs: 60_000, workerLostAfterMs: 4_000 });
  await trigger(0);
  await receiver.waitFor(1, 10_000);
  expect(proxy.silenceConnectionsOf('hookline-dispatcher-listen')).toBe(1);
  await new Promise((r) => setTimeout(r, 3_000)); // found silent, and replaced
  const sent = Date.now();
  await trigger(1);
  await receiver.waitFor(2, 15_000);
  expect(Date.now() - sent).toBeLessThan(5_000);
});

it('an outage of the database, which silences every worker, does not make them take each other for dead', { timeout: 60_000 }, async () => {
  // Workers that may be silent 2.5 s (room for a busy machine's stalls); the database is silent
  // for 4 s while one of them sends a delivery (a 7 s answer). When it answers again, each has
  // been silent longer than that, but none was dead: the delivery is sent once.
  const { proxy, api, receiver, trigger, worker } = await scenario(() => ({ status: 200, delayMs: 7_000 }));
  for (let i = 0; i < 2; i++) {
    await worker({ HOOKLINE_DELIVERY_TIMEOUT: '30s' }, { databaseTimeoutMs: 1_000, workerLostAfterMs: 2_500, reclaimIntervalMs: 300 });
  }
  // Both have been heard from for long enough to judge others.
  await new Promise((r) => setTimeout(r, 3_000));
  const id = await trigger(1);
  await receiver.waitFor(1, 10_000);
  proxy.silence();
  await new Promise((r) => setTimeout(r, 4_000));
  proxy.answer();
  await new Promise((r) => setTimeout(r, 8_000));
  const [row] = await api.dataSource.query(`select status, attempts from webhook_deliveries where id = $1`, [id]);
  expect(row).toEqual({ status: 'DELIVERED', attempts: 1 });
  expect(receiver.received).toHaveLength(1);
});

it('a worker asked to stop while its database is silent stops', { timeout: 30_000 }, async () => {
  const { proxy, worker } = await scenario();
  // Reclaims every 100 ms: one is under way, unanswered, as the dispatcher ends its pool.
  const w = await worker({}, { databaseTimeoutMs: 1_000, reclaimIntervalMs: 100 });
  await new Promise((r) => setTimeout(r, 1_500));
  proxy.silence();
  expect(await within(w.dispatcher!.stop(), 15_000), 'the dispatcher stopped').toBe(true);
});

it('a new connection that goes silent while it is being set up does not take a slot of the worker for ever', { timeout: 60_000 }, async () => {
  const { proxy, api, receiver, trigger, worker } = await scenario();
  await worker({}, { databaseTimeoutMs: 1_000, pollIntervalMs: 200 });
  await trigger(0);
  await receiver.waitFor(1, 10_000);
  // A blip: the pool's connections are dropped, and the new ones go silent once set up, for a moment.
  proxy.arm();
  await api.dataSource.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-dispatcher'`);
  await new Promise((r) => setTimeout(r, 1_500));
  proxy.disarm();
  for (let n = 1; n <= 3; n++) await trigger(n);
  await receiver.waitFor(4, 15_000);
});
