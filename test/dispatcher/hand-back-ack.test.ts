// A change of a subscription made on one process (deleted, deactivated, a new address, headers
// or secret) answers once the dispatchers of every process have handed back what they claimed of
// it: they hear of it by a notification, and one that began a claimed delivery in the
// milliseconds before it arrived sent it as claimed, after the change had answered (a review
// across two processes: up to 20 ms, to the old address, with the old credential and secret).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { silenceableProxy } from '../helpers/silent-proxy.js';

let api: TestHookline;
let worker: TestHookline;
let proxy: Awaited<ReturnType<typeof silenceableProxy>>;

beforeAll(async () => {
  const databaseUrl = await createTestDatabase();
  proxy = await silenceableProxy(new URL(databaseUrl));
  api = await startTestHookline({ HOOKLINE_ROLE: 'api', HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true' }, { databaseUrl });
  // A dispatcher of another process, its connections through the proxy.
  worker = await startTestHookline({ HOOKLINE_ROLE: 'worker', HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true' }, { databaseUrl: proxy.url });
});
afterAll(async () => {
  await worker?.stop();
  await api?.stop();
  await proxy?.close();
});

const UPDATE = 'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { id } }';

it("answers a change once the other process's dispatcher has handed back what it claimed of the subscription, and a description alone waits for no one", async () => {
  const { apiKey } = await api.createTenant();
  const created = await api.gql<any>(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: 'http://127.0.0.1:9/a', events: ['test.event'] } },
    apiKey,
  );
  const id = created.data.createWebhookSubscription.subscription.id;
  // The worker acknowledges at once.
  let started = Date.now();
  expect((await api.gql(UPDATE, { id, input: { url: 'http://127.0.0.1:9/b' } }, apiKey)).errors).toBeUndefined();
  const acknowledged = Date.now() - started;

  // Its LISTEN connection silent: the change waits for its acknowledgement, 2 s, then answers.
  expect(proxy.silenceConnectionsOf('hookline-dispatcher-listen')).toBe(1);
  started = Date.now();
  expect((await api.gql(UPDATE, { id, input: { url: 'http://127.0.0.1:9/c' } }, apiKey)).errors).toBeUndefined();
  const unacknowledged = Date.now() - started;
  expect(unacknowledged, 'waited for the worker').toBeGreaterThanOrEqual(1_900);
  // It is known by its LISTEN connection's row in live_listeners.
  const [{ n }] = await api.dataSource.query(
    `select count(*)::int as n from live_listeners l join pg_stat_activity a on a.pid = l.pid where l.channel = 'hookline_subscription_stopped' and a.application_name = 'hookline-dispatcher-listen'`,
  );
  expect(n).toBe(1);
  expect(acknowledged, 'acknowledged at once').toBeLessThan(unacknowledged - 1_000);

  // A change that tells the dispatchers nothing (a description) waits for no one.
  started = Date.now();
  expect((await api.gql(UPDATE, { id, input: { description: 'd' } }, apiKey)).errors).toBeUndefined();
  expect(Date.now() - started).toBeLessThan(1_500);

  // The worker drops the silent connection and listens on a new one. The old backend lives on in
  // the server (nothing closed it there) and would never answer: its row goes with the new one's
  // (every change waited 2 s for it, for as long as TCP took to find it dead).
  const listeners = () =>
    api.dataSource.query(
      `select l.pid from live_listeners l join pg_stat_activity a on a.pid = l.pid where l.channel = 'hookline_subscription_stopped' and a.application_name = 'hookline-dispatcher-listen'`,
    );
  const [{ pid: silent }] = await listeners();
  for (const began = Date.now(); (await listeners()).some((r: { pid: number }) => r.pid === silent); await new Promise((r) => setTimeout(r, 100))) {
    expect(Date.now() - began, 'the silent connection was never replaced').toBeLessThan(20_000);
  }
  const [{ alive }] = await api.dataSource.query(`select count(*)::int as alive from pg_stat_activity where pid = $1`, [silent]);
  expect(alive).toBe(1); // still there, silent
  started = Date.now();
  expect((await api.gql(UPDATE, { id, input: { url: 'http://127.0.0.1:9/d' } }, apiKey)).errors).toBeUndefined();
  expect(Date.now() - started, 'acknowledged by the new connection, the old one not waited for').toBeLessThan(1_500);
}, 45_000);
