// deliveryUpdated over graphql-ws and Server-Sent Events: every change of a
// delivery reaches the clients of its tenant whose filter matches, and no one else.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, collectWs, DELIVERY_UPDATED, statusesOf } from '../helpers/live.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { nextClose } from '../helpers/ws.js';
import { DELIVERY_UPDATES_CHANNEL } from '../../src/migrations/0004-live-updates.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { deliveries { id } } }';
const INVOICE = { invoice_id: 'inv-1', amount: 10, customer: 'Acme' };

let hl: TestHookline;
let flaky: Receiver;
let tenantA: { id: string; apiKey: string };
let tenantB: { id: string; apiKey: string };
let subA: string;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '50ms,50ms' });
  // Fails each delivery's first attempt, then accepts.
  const seen = new Set<string>();
  flaky = await startReceiver((req) => {
    const id = String(req.headers['webhook-id']);
    if (seen.has(id)) return { status: 200 };
    seen.add(id);
    return { status: 500 };
  });
  tenantA = await hl.createTenant('A');
  tenantB = await hl.createTenant('B');
  subA = (await hl.gql(CREATE, { input: { url: flaky.url, events: ['invoice.*', 'payment.received'] } }, tenantA.apiKey)).data
    .createWebhookSubscription.subscription.id;
  await hl.gql(CREATE, { input: { url: flaky.url, events: ['*'] } }, tenantB.apiKey);
});
afterAll(async () => {
  await hl?.stop();
  await flaky?.close();
});

async function trigger(apiKey: string, event = 'invoice.created', data: Record<string, unknown> = INVOICE): Promise<string> {
  const res = await hl.gql(TRIGGER, { input: { event, data } }, apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.triggerEvent.deliveries[0].id;
}

/**
 * Created, sending, its failed attempt, sending again, DELIVERED. The process that
 * creates it also dispatches: if its dispatcher is idle, the insert claims the delivery
 * for it and it is created SENDING; otherwise it is created PENDING and then claimed.
 */
const FULL_LIFE = ['SENDING:0', 'PENDING:1', 'SENDING:1', 'DELIVERED:2'];
const lifeOf = (items: any[], id: string) => {
  const statuses = statusesOf(items, id);
  return statuses[0] === 'PENDING:0' ? statuses.slice(1) : statuses;
};
const delivered = (id: string) => (items: any[]) => items.some((i) => i.id === id && i.status === 'DELIVERED');

describe('over graphql-ws', () => {
  it('streams a flaky delivery: created, sending, its failed attempt, and DELIVERED', async () => {
    const client = hl.wsClient(tenantA.apiKey);
    const all = collectWs(client);
    const other = collectWs(hl.wsClient(tenantB.apiKey));
    await new Promise((r) => setTimeout(r, 200)); // subscriptions are set up
    const id = await trigger(tenantA.apiKey);
    await all.waitFor(delivered(id));
    expect(lifeOf(all.items, id)).toEqual(FULL_LIFE);
    const failed = all.items.find((i) => i.id === id && i.status === 'PENDING' && i.attempts === 1);
    expect(failed).toMatchObject({ event: 'invoice.created', lastError: 'HTTP 500', lastStatusCode: 500, subscription: { id: subA } });
    expect(failed.nextAttemptAt).toBeTruthy();
    await new Promise((r) => setTimeout(r, 200));
    expect(other.items.filter((i) => i.id === id)).toEqual([]); // tenant B sees nothing of A's
    all.stop();
    other.stop();
    await client.dispose();
  });

  it('filters by event, subscription, delivery and status', async () => {
    const client = hl.wsClient(tenantA.apiKey);
    const byEvent = collectWs(client, { event: 'payment.received' });
    const bySubscription = collectWs(client, { subscriptionId: subA });
    const byOtherSubscription = collectWs(client, { subscriptionId: '00000000-0000-0000-0000-000000000000' });
    const byStatus = collectWs(client, { status: 'DELIVERED' });
    await new Promise((r) => setTimeout(r, 200));
    const invoice = await trigger(tenantA.apiKey);
    const byDelivery = collectWs(client, { deliveryId: invoice });
    const payment = await trigger(tenantA.apiKey, 'payment.received', {
      payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: '2024-02-14T11:00:00',
    });
    await bySubscription.waitFor((items) => delivered(invoice)(items) && delivered(payment)(items));
    await byStatus.waitFor((items) => delivered(invoice)(items) && delivered(payment)(items));
    expect(new Set(byEvent.items.map((i) => i.id))).toEqual(new Set([payment]));
    expect(byStatus.items.every((i) => i.status === 'DELIVERED')).toBe(true);
    await byDelivery.waitFor(delivered(invoice));
    expect(byDelivery.items.every((i) => i.id === invoice)).toBe(true);
    expect(byOtherSubscription.items).toEqual([]);
    await client.dispose();
  });

  it('refuses an unauthenticated socket', async () => {
    const client = hl.wsClient(undefined);
    const closed = nextClose(client);
    collectWs(client);
    expect((await closed).code).toBe(4403);
    await client.dispose();
  });

  it('closes the socket of a key when it is revoked', async () => {
    const created = await hl.gql('mutation { createApiKey(name: "dashboard") { id apiKey } }', {}, tenantA.apiKey);
    const { id, apiKey } = created.data.createApiKey;
    const client = hl.wsClient(apiKey);
    const closed = nextClose(client);
    const updates = collectWs(client);
    await new Promise((r) => setTimeout(r, 200));
    await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id }, tenantA.apiKey);
    const event = await closed;
    expect(event.code).toBe(4401);
    expect(event.reason).toMatch(/revoked/);
    await updates.waitFor(() => updates.closed, 2_000);
    await client.dispose();
  });

  it('does not leak listeners when clients go away', async () => {
    const before = hl.services.live!.target.listenerCount;
    const client = hl.wsClient(tenantA.apiKey);
    collectWs(client);
    collectWs(client, { status: 'FAILED' });
    await new Promise((r) => setTimeout(r, 200));
    expect(hl.services.live!.target.listenerCount).toBe(before + 2);
    await client.dispose();
    await new Promise((r) => setTimeout(r, 300));
    expect(hl.services.live!.target.listenerCount).toBe(before);
  });
});

describe('hearing delivery changes only while someone subscribes', () => {
  it('LISTENs for them from the first subscriber to the last, and misses none after a subscription starts', async () => {
    const target = hl.services.live!.target;
    await new Promise((r) => setTimeout(r, 300)); // the clients of the tests above are gone
    expect(target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(false);

    // Once subscribe() resolves, a change made at once reaches it.
    const iterator = await hl.services.live!.subscribe(tenantA.id, undefined, {});
    expect(target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(true);
    const id = await trigger(tenantA.apiKey);
    const first = await iterator.next();
    expect(first.value).toMatchObject({ id, attempts: 0 });

    // A second subscriber shares the LISTEN; it stays until the last one leaves.
    const client = hl.wsClient(tenantA.apiKey);
    const updates = collectWs(client);
    await new Promise((r) => setTimeout(r, 200));
    await iterator.return!();
    expect(target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(true);
    const next = await trigger(tenantA.apiKey);
    await updates.waitFor(delivered(next));
    updates.stop();
    await client.dispose();
    const deadline = Date.now() + 5_000;
    while (target.isListening(DELIVERY_UPDATES_CHANNEL) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(false);
  });
});

describe('losing the database connection', () => {
  it('reconnects its LISTEN connections and goes on streaming, without leaking listeners', async () => {
    const client = hl.wsClient(tenantA.apiKey);
    const updates = collectWs(client);
    await new Promise((r) => setTimeout(r, 200));
    const listeners = hl.services.live!.target.listenerCount;
    const killed = await hl.dataSource.query(
      `select pg_terminate_backend(pid) from pg_stat_activity
        where application_name in ('hookline-live', 'hookline-dispatcher-listen') and datname = current_database()`,
    );
    expect(killed.length).toBe(2);
    await new Promise((r) => setTimeout(r, 1_000));
    const id = await trigger(tenantA.apiKey);
    await updates.waitFor(delivered(id));
    expect(lifeOf(updates.items, id)).toEqual(FULL_LIFE);
    expect(hl.services.live!.target.listenerCount).toBe(listeners);
    const [{ n }] = await hl.dataSource.query(
      `select count(*)::int as n from pg_stat_activity
        where application_name in ('hookline-live', 'hookline-dispatcher-listen') and datname = current_database()`,
    );
    expect(n).toBe(2); // both LISTEN connections are back, once each
    await client.dispose();
  });
});

describe('over Server-Sent Events', () => {
  it('streams the same updates with the Authorization header, to the right tenant only', async () => {
    const a = collectSse(hl.url, tenantA.apiKey);
    const b = collectSse(hl.url, tenantB.apiKey);
    await Promise.all([a.ready, b.ready]);
    await new Promise((r) => setTimeout(r, 200));
    const id = await trigger(tenantA.apiKey);
    await a.waitFor(delivered(id));
    expect(lifeOf(a.items, id)).toEqual(FULL_LIFE);
    expect(b.items.filter((i) => i.id === id)).toEqual([]);
    a.stop();
    b.stop();
  });

  it('refuses an SSE subscription without a valid key', async () => {
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: 'Bearer hkl_nope' },
      body: JSON.stringify({ query: DELIVERY_UPDATED }),
    });
    const text = await res.text();
    expect(text).toContain('UNAUTHENTICATED');
  });

  it('ends the stream of a key when it is revoked', async () => {
    const created = await hl.gql('mutation { createApiKey(name: "sse") { id apiKey } }', {}, tenantA.apiKey);
    const stream = collectSse(hl.url, created.data.createApiKey.apiKey);
    await stream.ready;
    await new Promise((r) => setTimeout(r, 200));
    await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: created.data.createApiKey.id }, tenantA.apiKey);
    await stream.waitFor(() => stream.closed, 5_000);
  });
});
