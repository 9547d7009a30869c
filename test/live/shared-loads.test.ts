// A live update's lookups are the database's work once, however many subscribers receive it:
// every subscriber of a tenant gets the same snapshot, and executes its own operation on it
// (one execution per operation, and operations differ by a name or an alias), so each one's
// lookups of the delivery's payload, row, event, subscription and attempts were made once per
// subscriber: 200 subscribers and one event for 50 subscriptions made 20,000 payload queries
// and held another tenant's request 3.4 s.
import { expect, it } from 'vitest';
import { createLoaders } from '../../src/schema/loaders.js';
import { collectWs, hooklineAndReceiver, moreSubscribers, type Collected } from '../helpers/live.js';
import { eventually } from '../helpers/receiver.js';

const fixture = hooklineAndReceiver();

/** Counts the calls of a service method (which still does its work). */
function counted<T extends object, K extends keyof T>(target: T, name: K): { calls: number } {
  const original = (target[name] as (...args: unknown[]) => unknown).bind(target);
  const count = { calls: 0 };
  (target as Record<K, unknown>)[name] = (...args: unknown[]) => (count.calls++, original(...args));
  return count;
}

it("are made once for all of a tenant's subscribers, whatever their operations, and each gets what it asked for", async () => {
  const { hl, receiver } = fixture;
  const tenant = await hl.createTenant();
  const other = await hl.createTenant('Other');
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: `${receiver.url}/shared`, events: ['test.event'] } },
    tenant.apiKey,
  );
  const subscriptionId: string = created.data.createWebhookSubscription.subscription.id;
  const payloads = counted(hl.services.deliveries, 'payloads');
  const rows = counted(hl.services.deliveries, 'findMany');
  const attempts = counted(hl.services.deliveries, 'attemptLogs');
  const subscriptions = counted(hl.services.subscriptions, 'findMany');

  const SUBSCRIBERS = 12;
  const client = hl.wsClient(tenant.apiKey);
  const otherClient = hl.wsClient(other.apiKey);
  const heard = moreSubscribers(hl, SUBSCRIBERS + 1);
  const live: Collected[] = [];
  for (let i = 0; i < SUBSCRIBERS; i++) {
    live.push(
      collectWs(
        i < 6 ? client : hl.wsClient(tenant.apiKey),
        {},
        `subscription Named${i} { deliveryUpdated { id status a${i}: targetUrl createdAt payload webhookEvent { id } subscription { id } attemptLog { statusCode } } }`,
      ),
    );
  }
  // Another tenant's subscriber, of the same operation: none of the first tenant's loads for it.
  const theirs = collectWs(otherClient, {}, 'subscription Named0 { deliveryUpdated { id payload } }');
  await heard();

  const triggered = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { event { id } } }', {}, tenant.apiKey);
  expect(triggered.errors).toBeUndefined();
  const eventId: string = triggered.data.triggerEvent.event.id;
  for (const [i, l] of live.entries()) {
    const items = await l.waitFor((items) => items.some((d) => d.status === 'DELIVERED'));
    expect(l.errors).toEqual([]);
    const delivered = items.find((d) => d.status === 'DELIVERED');
    expect(delivered).toMatchObject({
      [`a${i}`]: `${receiver.url}/shared`,
      payload: { id: eventId, event: 'test.event', data: { n: 1 } },
      webhookEvent: { id: eventId },
      subscription: { id: subscriptionId },
      attemptLog: [{ statusCode: 204 }],
    });
  }
  // One load of each kind per update (PENDING or SENDING, then DELIVERED), not one per subscriber.
  const updates = live[0]!.items.length;
  expect(updates).toBeLessThanOrEqual(3);
  for (const [what, count] of Object.entries({ payloads, rows, attempts, subscriptions })) {
    expect(count.calls, what).toBeLessThanOrEqual(updates);
  }
  expect(theirs.items, 'another tenant hears none of it').toEqual([]);
});

it("a page's payloads and attempt logs are read in one statement each, not one a delivery", async () => {
  const { hl, receiver } = fixture;
  // One per delivery, a page of 100 took 200 of the API's 20 connections in turn: a tenant's
  // few such pages at once held every other tenant's requests for seconds, then failed them.
  const tenant = await hl.createTenant('Paged');
  for (let i = 0; i < 3; i++) {
    const created = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
      { input: { url: `${receiver.url}/paged-${i}`, events: ['test.event'] } },
      tenant.apiKey,
    );
    expect(created.errors).toBeUndefined();
  }
  const events: string[] = [];
  for (let i = 0; i < 4; i++) {
    const triggered = await hl.gql('mutation($data: JSON!) { triggerEvent(input: { event: "test.event", data: $data }) { event { id } } }', { data: { n: i } }, tenant.apiKey);
    expect(triggered.errors).toBeUndefined();
    events.push(triggered.data.triggerEvent.event.id);
  }
  await eventually(async () => {
    const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where tenant_id = $1 and status = 'DELIVERED'`, [tenant.id]);
    return n === 12;
  }, 10_000);
  const payloads = counted(hl.services.deliveries, 'payloads');
  const attempts = counted(hl.services.deliveries, 'attemptLogs');
  const page = await hl.gql('{ deliveries(first: 100) { edges { node { id eventId: webhookEvent { id } payload attemptLog { number statusCode } } } } }', {}, tenant.apiKey);
  expect(page.errors).toBeUndefined();
  const nodes = page.data.deliveries.edges.map((e: any) => e.node);
  expect(nodes).toHaveLength(12);
  for (const node of nodes) {
    expect(node.payload.id).toBe(node.eventId.id);
    expect(node.payload.data).toEqual({ n: events.indexOf(node.eventId.id) });
    expect(node.attemptLog).toEqual([{ number: 1, statusCode: 204 }]);
  }
  expect([payloads.calls, attempts.calls]).toEqual([1, 1]);
});

it('one delivery asked for up to two counts in one batch (two live snapshots of it) gets each log as it counts', async () => {
  const { hl, receiver } = fixture;
  const tenant = await hl.createTenant('Two counts');
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: `${receiver.url}/two-counts`, events: ['test.event'] } },
    tenant.apiKey,
  );
  expect(created.errors).toBeUndefined();
  const triggered = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: {} }) { deliveries { id } } }', {}, tenant.apiKey);
  const id: string = triggered.data.triggerEvent.deliveries[0].id;
  await eventually(async () => (await hl.dataSource.query('select status from webhook_deliveries where id = $1', [id]))[0].status === 'DELIVERED', 10_000);
  await hl.dataSource.query(
    'insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code) values ($1, 2, $2, now(), 1, 500)',
    [id, tenant.id],
  );
  const loaders = createLoaders(hl.services, { kind: 'tenant', tenantId: tenant.id, apiKeyId: 'test' } as never);
  const [one, two] = await Promise.all([loaders.attempts.load({ id, upTo: 1 }), loaders.attempts.load({ id, upTo: 2 })]);
  expect([one.map((a) => a.number), two.map((a) => a.number)]).toEqual([[1], [1, 2]]);
});
