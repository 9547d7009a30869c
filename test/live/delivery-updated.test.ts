// deliveryUpdated over graphql-ws and Server-Sent Events: every change of a
// delivery reaches the clients of its tenant whose filter matches, and no one else.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, collectWs, DELIVERY_UPDATED, moreSubscribers, statusesOf } from '../helpers/live.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { nextClose, wsRequest } from '../helpers/ws.js';
import pg from 'pg';
import { DELIVERY_UPDATES_CHANNEL } from '../../src/migrations/0004-live-updates.js';
import { LIVE_LISTENERS_TABLE } from '../../src/migrations/0007-live-listeners.js';

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
    const subscribed = moreSubscribers(hl, 2);
    const client = hl.wsClient(tenantA.apiKey);
    const all = collectWs(client);
    const other = collectWs(hl.wsClient(tenantB.apiKey));
    await subscribed();
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

  it('filters by event, subscription, delivery and status (ids in either case, as queries take them)', async () => {
    const subscribed = moreSubscribers(hl, 5);
    const client = hl.wsClient(tenantA.apiKey);
    const byEvent = collectWs(client, { event: 'payment.received' });
    const bySubscription = collectWs(client, { subscriptionId: subA });
    const bySubscriptionUpper = collectWs(client, { subscriptionId: subA.toUpperCase() });
    const byOtherSubscription = collectWs(client, { subscriptionId: '00000000-0000-0000-0000-000000000000' });
    const byStatus = collectWs(client, { status: 'DELIVERED' });
    await subscribed();
    const invoice = await trigger(tenantA.apiKey);
    const byDelivery = collectWs(client, { deliveryId: invoice });
    const byDeliveryUpper = collectWs(client, { deliveryId: invoice.toUpperCase() });
    const payment = await trigger(tenantA.apiKey, 'payment.received', {
      payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: '2024-02-14T11:00:00',
    });
    await bySubscription.waitFor((items) => delivered(invoice)(items) && delivered(payment)(items));
    await byStatus.waitFor((items) => delivered(invoice)(items) && delivered(payment)(items));
    expect(new Set(byEvent.items.map((i) => i.id))).toEqual(new Set([payment]));
    expect(byStatus.items.every((i) => i.status === 'DELIVERED')).toBe(true);
    await byDelivery.waitFor(delivered(invoice));
    expect(byDelivery.items.every((i) => i.id === invoice)).toBe(true);
    await byDeliveryUpper.waitFor(delivered(invoice));
    expect(byDeliveryUpper.items.every((i) => i.id === invoice)).toBe(true);
    await bySubscriptionUpper.waitFor((items) => delivered(invoice)(items) && delivered(payment)(items));
    expect(byOtherSubscription.items).toEqual([]);
    await client.dispose();
  });

  it('takes an empty filter as no filter, as the deliveries query does; an event that is no event name, or an id that is no id, is BAD_USER_INPUT', async () => {
    const subscribed = moreSubscribers(hl, 3); // the refused ones never subscribe
    const client = hl.wsClient(tenantA.apiKey);
    const empty = [collectWs(client, { subscriptionId: '' }), collectWs(client, { deliveryId: '' }), collectWs(client, { event: '' })];
    const refused = { event: collectWs(client, { event: 'Invoice' }), subscriptionId: collectWs(client, { subscriptionId: 'sub_1' }), deliveryId: collectWs(client, { deliveryId: '42' }) };
    await subscribed();
    const invoice = await trigger(tenantA.apiKey);
    for (const stream of empty) await stream.waitFor(delivered(invoice));
    for (const [field, stream] of Object.entries(refused)) {
      await stream.waitFor(() => stream.errors.length > 0);
      expect(stream.errors[0], field).toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field }) })]);
    }
    await client.dispose();
  });

  it('refuses an unauthenticated socket', async () => {
    const client = hl.wsClient(undefined);
    const closed = nextClose(client);
    collectWs(client);
    expect((await closed).code).toBe(4403);
    await client.dispose();
  });

  it('closes the socket of a key when it is revoked (its id given in upper case, as queries take ids), and HTTP refuses it at once', async () => {
    const created = await hl.gql('mutation { createApiKey(name: "dashboard") { id apiKey } }', {}, tenantA.apiKey);
    const { id, apiKey } = created.data.createApiKey;
    const client = hl.wsClient(apiKey);
    const closed = nextClose(client);
    const subscribed = moreSubscribers(hl);
    const updates = collectWs(client);
    await subscribed(); // authenticated and streaming
    expect((await hl.gql('{ viewer { id } }', {}, apiKey)).errors).toBeUndefined(); // cached as valid now
    await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: id.toUpperCase() }, tenantA.apiKey);
    expect((await hl.gql('{ viewer { id } }', {}, apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const event = await closed;
    expect(event.code).toBe(4401);
    expect(event.reason).toMatch(/revoked/);
    await updates.waitFor(() => updates.closed, 2_000);
    await client.dispose();
  });

  it("describes the delivery as of each update: deliveredAt only on DELIVERED, however late the update is written", async () => {
    const subscribed = moreSubscribers(hl);
    const client = hl.wsClient(tenantA.apiKey);
    const updates = collectWs(client, {}, 'subscription { deliveryUpdated { id status attempts deliveredAt } }');
    await subscribed();
    const ids = await Promise.all(Array.from({ length: 10 }, () => trigger(tenantA.apiKey)));
    await updates.waitFor((items) => ids.every((id) => delivered(id)(items)), 10_000);
    const ours = updates.items.filter((i) => ids.includes(i.id));
    expect(ours.filter((i) => i.status !== 'DELIVERED' && i.deliveredAt !== null)).toEqual([]);
    expect(ours.filter((i) => i.status === 'DELIVERED').every((i) => typeof i.deliveredAt === 'string')).toBe(true);
    await client.dispose();
  });

  it('answers a key that revokes itself over its own socket before closing it with 4401, operations sent behind it refused', async () => {
    for (let round = 0; round < 6; round++) {
      const created = await hl.gql('mutation { createApiKey(name: "self") { id apiKey } }', {}, tenantA.apiKey);
      const { id, apiKey } = created.data.createApiKey;
      const client = hl.wsClient(apiKey);
      const closed = nextClose(client);
      let open = true;
      void closed.then(() => (open = false));
      const answer = wsRequest(client, 'mutation($id: ID!) { revokeApiKey(id: $id) }', { id });
      // Half the rounds, queries follow the revocation on the same socket until it closes: those
      // that come once the key is dropped are refused, and the revocation is still answered.
      const behind: Array<Promise<unknown>> = [];
      if (round % 2) {
        while (open && behind.length < 2_000) {
          behind.push(wsRequest(client, '{ viewer { id } }').catch((error) => error));
          await new Promise((r) => setTimeout(r, 1));
        }
      }
      expect(await answer).toEqual({ data: { revokeApiKey: true } });
      expect((await closed).code).toBe(4401);
      for (const result of await Promise.all(behind)) {
        const code = (result as { errors?: Array<{ extensions?: { code?: string } }> }).errors?.[0]?.extensions?.code;
        // Answered before the key was dropped, refused after, or cut by the close.
        expect(code === undefined || code === 'UNAUTHENTICATED').toBe(true);
      }
      await client.dispose();
    }
  });

  it('does not leak listeners when clients go away', async () => {
    const before = hl.services.live!.target.listenerCount;
    const subscribed = moreSubscribers(hl, 2);
    const client = hl.wsClient(tenantA.apiKey);
    collectWs(client);
    collectWs(client, { status: 'FAILED' });
    await subscribed();
    expect(hl.services.live!.target.listenerCount).toBe(before + 2);
    await client.dispose();
    // A leak never clears; a slow machine only takes longer to.
    await eventually(() => hl.services.live!.target.listenerCount === before, 5_000, 20).catch(() => {});
    expect(hl.services.live!.target.listenerCount).toBe(before);
  });
});

describe('hearing delivery changes only while someone subscribes', () => {
  it('LISTENs for them from the first subscriber to the last, and misses none after a subscription starts', async () => {
    const target = hl.services.live!.target;
    await eventually(() => !target.isListening(DELIVERY_UPDATES_CHANNEL), 5_000, 20).catch(() => {}); // the clients above are gone
    expect(target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(false);

    // Once subscribe() resolves, a change made at once reaches it.
    const iterator = await hl.services.live!.subscribe(tenantA.id, undefined, {});
    expect(target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(true);
    const id = await trigger(tenantA.apiKey);
    const first = await iterator.next();
    expect(first.value).toMatchObject({ id, attempts: 0 });

    // A second subscriber shares the LISTEN; it stays until the last one leaves.
    const subscribed = moreSubscribers(hl);
    const client = hl.wsClient(tenantA.apiKey);
    const updates = collectWs(client);
    await subscribed();
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

describe('announcing delivery changes only while some process listens', () => {
  /** A connection that LISTENs to the channel without saying so: it hears what is announced. */
  async function eavesdrop() {
    const client = new pg.Client({ connectionString: hl.databaseUrl });
    await client.connect();
    const heard: string[] = [];
    client.on('notification', (n) => heard.push(n.payload ?? ''));
    await client.query(`listen ${DELIVERY_UPDATES_CHANNEL}`);
    return { client, heard };
  }
  // Listeners of delivery changes (each process's LISTEN connection is also written there for
  // the channels it always hears).
  const listeners = async () =>
    (await hl.dataSource.query(`select channel, pid from ${LIVE_LISTENERS_TABLE} where channel = $1 order by pid`, [
      DELIVERY_UPDATES_CHANNEL,
    ])) as Array<{ channel: string; pid: number }>;
  const deliveredInDb = async (id: string) => {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const [row] = await hl.dataSource.query('select status from webhook_deliveries where id = $1', [id]);
      if (row?.status === 'DELIVERED') return;
      if (Date.now() > deadline) throw new Error(`delivery ${id} not DELIVERED`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const notListening = async () => {
    const deadline = Date.now() + 5_000;
    while (hl.services.live!.target.isListening(DELIVERY_UPDATES_CHANNEL) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(hl.services.live!.target.isListening(DELIVERY_UPDATES_CHANNEL)).toBe(false);
  };

  it('announces nothing with no listener, everything while one listens, and nothing once it left', async () => {
    await notListening();
    const spy = await eavesdrop();
    try {
      expect(await listeners()).toEqual([]);
      await deliveredInDb(await trigger(tenantA.apiKey)); // created, failed once, delivered: four changes
      await new Promise((r) => setTimeout(r, 100));
      expect(spy.heard).toEqual([]);

      const iterator = await hl.services.live!.subscribe(tenantA.id, undefined, {});
      expect((await listeners()).map((l) => l.channel)).toEqual([DELIVERY_UPDATES_CHANNEL]);
      const id = await trigger(tenantA.apiKey);
      await deliveredInDb(id);
      const deadline = Date.now() + 5_000;
      while (!spy.heard.some((p) => p.includes(id) && p.includes('DELIVERED')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(spy.heard.filter((p) => p.includes(id)).length).toBeGreaterThanOrEqual(4);

      await iterator.return!();
      await notListening();
      expect(await listeners()).toEqual([]);
      const before = spy.heard.length;
      await deliveredInDb(await trigger(tenantA.apiKey));
      await new Promise((r) => setTimeout(r, 100));
      expect(spy.heard.length).toBe(before);
    } finally {
      await spy.client.end();
    }
  });

  it('starts a subscription only once the transactions that wrote unannounced before it have ended', async () => {
    await notListening();
    const id = await trigger(tenantA.apiKey);
    await deliveredInDb(id);
    // A transaction changes a delivery while no one listens (its change goes unannounced),
    // and stays open.
    const writer = new pg.Client({ connectionString: hl.databaseUrl });
    await writer.connect();
    try {
      await writer.query('begin');
      await writer.query(`update webhook_deliveries set status = 'CANCELED' where id = $1`, [id]);
      let started = false;
      const subscribing = hl.services.live!.subscribe(tenantA.id, undefined, {}).then((it) => {
        started = true;
        return it;
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(started).toBe(false);
      await writer.query('rollback');
      const iterator = await subscribing;
      // Started: what is written from now on is announced.
      const next = await trigger(tenantA.apiKey);
      expect((await iterator.next()).value).toMatchObject({ id: next, attempts: 0 });
      await iterator.return!();
    } finally {
      await writer.end();
    }
  });

  it('clears the rows of listeners whose connection is gone', async () => {
    await notListening();
    await hl.dataSource.query(`insert into ${LIVE_LISTENERS_TABLE} (channel, pid) values ($1, 2147483647)`, [DELIVERY_UPDATES_CHANNEL]);
    const iterator = await hl.services.live!.subscribe(tenantA.id, undefined, {});
    const rows = await listeners();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.pid).not.toBe(2147483647);
    await iterator.return!();
    await notListening();
    expect(await listeners()).toEqual([]);
  });
});

describe('losing the database connection', () => {
  it('reconnects its LISTEN connections and goes on streaming, without leaking listeners', async () => {
    const subscribed = moreSubscribers(hl);
    const client = hl.wsClient(tenantA.apiKey);
    const updates = collectWs(client);
    await subscribed();
    const listeners = hl.services.live!.target.listenerCount;
    const killed = await hl.dataSource.query(
      `select pid, pg_terminate_backend(pid) from pg_stat_activity
        where application_name in ('hookline-live', 'hookline-dispatcher-listen') and datname = current_database()`,
    );
    expect(killed.length).toBe(2);
    // Trigger once a new connection LISTENs for updates again and what changed meanwhile has
    // been announced again (listen-outage.test.ts), however long the reconnect took.
    const gone = killed.map((k: { pid: number }) => k.pid);
    const resumes = hl.services.live!.target.resumes;
    await eventually(async () => {
      const [{ n }] = await hl.dataSource.query(
        `select count(*)::int as n from ${LIVE_LISTENERS_TABLE} l join pg_stat_activity a on a.pid = l.pid
          where l.channel = $1 and l.pid <> all($2::int[])`,
        [DELIVERY_UPDATES_CHANNEL, gone],
      );
      return n > 0 && hl.services.live!.target.isListening(DELIVERY_UPDATES_CHANNEL);
    }, 10_000, 20);
    // And what changed while it was down announced again (earlier deliveries, none of this one).
    await eventually(() => hl.services.live!.target.resumes > resumes, 10_000, 20);
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
    const subscribed = moreSubscribers(hl, 2);
    const a = collectSse(hl.url, tenantA.apiKey);
    const b = collectSse(hl.url, tenantB.apiKey);
    await Promise.all([a.ready, b.ready]);
    await subscribed();
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
    const subscribed = moreSubscribers(hl);
    const stream = collectSse(hl.url, created.data.createApiKey.apiKey);
    await stream.ready;
    await subscribed();
    await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: created.data.createApiKey.id }, tenantA.apiKey);
    await stream.waitFor(() => stream.closed, 5_000);
    // Saying why, as a WebSocket's close code does.
    expect(stream.errors).toEqual([[expect.objectContaining({ message: expect.stringMatching(/API key of this subscription was revoked/), extensions: { code: 'UNAUTHENTICATED' } })]]);
  });
});
