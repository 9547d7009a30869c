// A tenant's share of the API's database connections: however many of its requests wait on the
// database at once (a costly page, a row another transaction holds), they hold at most a quarter
// of the pool (5 of 20), the rest waiting their turn, so other tenants' requests still get one.
// Before, 25 of one tenant's requests held all 20, and another tenant's waited 10 s, then failed.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDataSource } from '../../src/db/data-source.js';
import { shareConnections, withTenant } from '../../src/db/tenant-scope.js';
import { lockWaiters } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';

let hl: TestHookline;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
});
afterAll(async () => {
  await hl?.stop();
});

const UPDATE = 'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { description } }';
const KEYED_TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate } }';

it.each([
  ['updates of a subscription', (subscriptionId: string, i: number): [string, Record<string, unknown>] => [UPDATE, { id: subscriptionId, input: { description: `update ${i}` } }]],
  // Keyed events are written on a connection of the API's pool too (the group commit's are not).
  ['events with idempotency keys', (_: string, i: number): [string, Record<string, unknown>] => [KEYED_TRIGGER, { input: { event: 'test.event', data: { i }, idempotencyKey: `key-${i}` } }]],
])("one tenant's requests held up on the database (%s) leave connections for the others, and all go through once let go", async (_kind, request) => {
  const [busy, other] = [await hl.createTenant('Busy'), await hl.createTenant('Other')];
  const created = await hl.gql(
    'mutation { createWebhookSubscription(input: { url: "http://127.0.0.1:9/hook", events: ["test.event"] }) { subscription { id } } }',
    {},
    busy.apiKey,
  );
  const subscriptionId: string = created.data.createWebhookSubscription.subscription.id;
  const holder = new pg.Client({ connectionString: hl.databaseUrl });
  await holder.connect();
  // Outside the holder's transaction (see lockWaiters), and the API's pool, which may be taken.
  const watcher = new pg.Client({ connectionString: hl.databaseUrl });
  await watcher.connect();
  const waitingOnLocks = async () => (await lockWaiters(watcher)).length;
  try {
    // The busy tenant's requests each wait for its subscription's row (an update for the row, an
    // event's delivery for its foreign key), holding a connection.
    await holder.query('begin');
    await holder.query('select 1 from webhook_subscriptions where id = $1 for update', [subscriptionId]);
    const updates = Array.from({ length: 25 }, (_, i) => {
      const [query, variables] = request(subscriptionId, i);
      return hl.gql(query, variables, busy.apiKey);
    });
    await eventually(async () => (await waitingOnLocks()) >= 5, 10_000);
    await new Promise((r) => setTimeout(r, 300)); // any more that would take a connection, have
    expect(await waitingOnLocks(), 'at most its share of connections waits on the database').toBe(5);
    // The other tenant is served at once, reads and writes.
    const started = Date.now();
    const page = await hl.gql('{ webhookSubscriptions(first: 10) { edges { node { id } } } }', {}, other.apiKey);
    expect(page.errors).toBeUndefined();
    const made = await hl.gql(
      'mutation { createWebhookSubscription(input: { url: "http://127.0.0.1:9/other", events: ["test.event"] }) { subscription { id } } }',
      {},
      other.apiKey,
    );
    expect(made.errors).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(2_000);
    // Let go: every one of the busy tenant's updates goes through, in turn.
    await holder.query('commit');
    const results = await Promise.all(updates);
    expect(results.filter((r) => r.errors)).toEqual([]);
  } finally {
    await holder.query('rollback').catch(() => {});
    await holder.end();
    await watcher.end();
  }
}, 30_000);

it("a share: one more waits its turn, in order, at most its wait (then RATE_LIMITED); work nested in a held one's transaction takes none more", async () => {
  const dataSource = createDataSource({ url: hl.databaseUrl, poolSize: 4 });
  await dataSource.initialize();
  shareConnections(dataSource, 1, 300);
  const [{ id: tenantId }] = await dataSource.query(`insert into tenants (name) values ('Shared') returning id`);
  try {
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const order: string[] = [];
    const first = withTenant(dataSource, tenantId, async (manager) => {
      // Nested, in its transaction (as the library's outbox joins a caller's): no share taken, no deadlock.
      await withTenant(manager, tenantId, async (m) => m.query('select 1'));
      await held;
      order.push('first');
    });
    await new Promise((r) => setTimeout(r, 50));
    const refused = withTenant(dataSource, tenantId, async () => order.push('never')).catch((error) => error);
    expect(await refused).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringContaining('database operations running') });
    const second = withTenant(dataSource, tenantId, async () => order.push('second'));
    const third = withTenant(dataSource, tenantId, async () => order.push('third'));
    letGo();
    await Promise.all([first, second, third]);
    expect(order).toEqual(['first', 'second', 'third']);
  } finally {
    await dataSource.destroy();
  }
});
