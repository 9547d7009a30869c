// A process that serves the API and dispatches sends what it creates itself:
// when its dispatcher is idle, the insert claims the fresh deliveries for it,
// and they go out as the statement returns, with no notification, wake-up or
// claim in between. Within the dispatcher's room and each subscription's share,
// never ahead of older due deliveries, and nothing is lost when it stops.
import { randomUUID } from 'node:crypto';
import { Webhook as StandardWebhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TenantId } from '../../src/db/tenant-scope.js';
import type { ClaimedDelivery } from '../../src/dispatcher/queue.js';
import { IngestBatcher, type BatchItem, type HandOff } from '../../src/webhooks/ingest-batcher.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret subscription { id } } }';
const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } deliveries { id status } } }';
const INVOICE = { invoice_id: 'inv-1', amount: 10, customer: 'Acme' };

const hookLines: TestHookline[] = [];
const receivers: Receiver[] = [];
afterAll(async () => {
  await Promise.all(hookLines.map((h) => h.stop()));
  await Promise.all(receivers.map((r) => r.close()));
});

async function start(env: Record<string, string> = {}): Promise<TestHookline> {
  // No polling: nothing but the test's own calls wakes the dispatcher.
  const hl = await startTestHookline(env, { dispatcher: { pollIntervalMs: 600_000 } });
  hookLines.push(hl);
  return hl;
}
async function receiver(respond?: Receiver['respond']): Promise<Receiver> {
  const r = await startReceiver(respond);
  receivers.push(r);
  return r;
}
async function subscribe(hl: TestHookline, apiKey: string, url: string, events = ['invoice.*']) {
  const res = await hl.gql(CREATE, { input: { url, events } }, apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.createWebhookSubscription as { secret: string; subscription: { id: string } };
}
async function trigger(hl: TestHookline, apiKey: string, data: object = INVOICE) {
  const res = await hl.gql(TRIGGER, { input: { event: 'invoice.created', data } }, apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.triggerEvent as { event: { id: string }; deliveries: Array<{ id: string; status: string }> };
}
/** Until the dispatcher's first claim (at start) has come back empty: it is idle. */
async function idle(hl: TestHookline): Promise<void> {
  while ((await hl.metric('hookline_queue_claims_total')) === 0) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
}
function item(event = 'invoice.created'): BatchItem {
  const id = randomUUID();
  return { id, event, resourceType: 'invoice', resourceId: null, dataJson: JSON.stringify(INVOICE), body: `{"id":"${id}"}`, createdAt: new Date() };
}

describe('an idle process that serves the API and dispatches', () => {
  let hl: TestHookline;
  let target: Receiver;
  let apiKey: string;
  let secret: string;
  beforeAll(async () => {
    hl = await start();
    target = await receiver();
    apiKey = (await hl.createTenant()).apiKey;
    secret = (await subscribe(hl, apiKey, target.url)).secret;
    await idle(hl);
  });

  it('sends each delivery it creates without a claim, signed, and records it once', async () => {
    const claimsBefore = await hl.metric('hookline_queue_claims_total');
    const results = [];
    for (let i = 0; i < 5; i++) {
      const result = await trigger(hl, apiKey, { ...INVOICE, amount: i });
      // Claimed by the insert itself: the answer already says SENDING.
      expect(result.deliveries).toEqual([{ id: expect.any(String), status: 'SENDING' }]);
      await target.waitFor(i + 1);
      results.push(result);
    }
    expect(await hl.metric('hookline_deliveries_handed_off_total')).toBe(5);
    // No notification woke the dispatcher and it made no claim: the insert claimed them.
    expect(await hl.metric('hookline_queue_claims_total')).toBe(claimsBefore);

    const ids = results.map((r) => r.deliveries[0]!.id);
    expect(target.received.map((r) => r.headers['webhook-id'])).toEqual(ids);
    for (const [i, request] of target.received.entries()) {
      const payload = new StandardWebhook(secret).verify(request.body, request.headers as Record<string, string>) as any;
      expect(payload).toMatchObject({ id: results[i]!.event.id, event: 'invoice.created', data: { ...INVOICE, amount: i } });
    }
    // Every outcome recorded (the last may still be on its way); recorded twice would show as
    // attempts or logged of 2.
    await eventually(async () => {
      const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where id = any($1) and status = 'DELIVERED'`, [ids]);
      return n === ids.length;
    });
    const rows = await hl.dataSource.query(
      `select d.status, d.attempts, d.locked_by, d.lease_expires_at, (select count(*)::int from delivery_attempts a where a.delivery_id = d.id) as logged
         from webhook_deliveries d where d.id = any($1)`,
      [ids],
    );
    expect(rows).toEqual(ids.map(() => ({ status: 'DELIVERED', attempts: 1, locked_by: null, lease_expires_at: null, logged: 1 })));
    expect(target.received).toHaveLength(5);
  });
});

describe('calls written in a statement of their own', () => {
  it('a trigger with an idempotency key and sendTestEvent are handed off too; a repeated key sends nothing more', async () => {
    const hl = await start();
    const target = await receiver();
    const { apiKey } = await hl.createTenant();
    const { subscription } = await subscribe(hl, apiKey, target.url);
    const idle2 = await subscribe(hl, apiKey, `${target.url}/inactive`);
    await hl.gql('mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { active: false }) { id } }', { id: idle2.subscription.id }, apiKey);
    await idle(hl);
    const keyed = (key: string) =>
      hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate deliveries { id status } } }', {
        input: { event: 'invoice.created', data: INVOICE, idempotencyKey: key },
      }, apiKey);

    const first = await keyed('order-1');
    expect(first.data.triggerEvent).toEqual({ duplicate: false, deliveries: [{ id: expect.any(String), status: 'SENDING' }] });
    await target.waitFor(1);
    const again = await keyed('order-1');
    expect(again.data.triggerEvent.duplicate).toBe(true);
    expect(again.data.triggerEvent.deliveries.map((d: any) => d.id)).toEqual([first.data.triggerEvent.deliveries[0].id]);

    const test = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id status } }', { id: subscription.id }, apiKey);
    expect(test.data.sendTestEvent.status).toBe('SENDING');
    await target.waitFor(2);
    // An inactive subscription's test event goes out all the same (a test before turning it on).
    const inactive = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id status } }', { id: idle2.subscription.id }, apiKey);
    expect(inactive.data.sendTestEvent.status).toBe('SENDING');
    await target.waitFor(3);

    await new Promise((r) => setTimeout(r, 200));
    const ids = [first.data.triggerEvent.deliveries[0].id, test.data.sendTestEvent.id, inactive.data.sendTestEvent.id];
    expect(target.received.map((r) => r.headers['webhook-id'])).toEqual(ids);
    expect(await hl.metric('hookline_deliveries_handed_off_total')).toBe(3);
    await eventually(async () => {
      const rows = await hl.dataSource.query(`select status, attempts, locked_by from webhook_deliveries where id = any($1)`, [ids]);
      return rows.every((r: { status: string }) => r.status === 'DELIVERED') && rows;
    });
    const rows = await hl.dataSource.query(`select status, attempts, locked_by from webhook_deliveries where id = any($1)`, [ids]);
    expect(rows).toEqual(ids.map(() => ({ status: 'DELIVERED', attempts: 1, locked_by: null })));
  });
});

describe('the room and the shares', () => {
  let hl: TestHookline;
  let tenantId: TenantId;
  let subA: string;
  let subB: string;
  beforeAll(async () => {
    hl = await start({ HOOKLINE_ROLE: 'api' }); // no dispatcher: the test plays it
    const tenant = await hl.createTenant();
    tenantId = tenant.id as TenantId;
    const [a, b] = [await receiver(), await receiver()];
    subA = (await subscribe(hl, tenant.apiKey, a.url)).subscription.id;
    subB = (await subscribe(hl, tenant.apiKey, b.url)).subscription.id;
  });

  /** A batcher on the test database for `fn`, closed after. */
  async function withBatcher(fn: (batcher: IngestBatcher) => Promise<void>): Promise<void> {
    const batcher = new IngestBatcher(hl.dataSource, { tenantSessions: true });
    try {
      await fn(batcher);
    } finally {
      await batcher.close();
    }
  }

  function handOff(limit: number, perSubscription: number, busy: Map<string, number>) {
    const adopted: ClaimedDelivery[][] = [];
    let canceled = 0;
    const offer: HandOff = {
      workerId: 'test-worker',
      leaseMs: 60_000,
      limit,
      perSubscription,
      busy,
      adopt: (claimed) => adopted.push(claimed),
      cancel: () => canceled++,
    };
    return { offer, adopted, canceled: () => canceled };
  }

  it('claims at most the room, each subscription within its share, in the order of the batch; the rest is queued', async () => {
    await withBatcher(async (batcher) => {
      // Subscription A already has one of its two in flight.
      const { offer, adopted, canceled } = handOff(3, 2, new Map([[subA, 1]]));
      let offers = 0;
      batcher.handOff = () => (offers++ ? undefined : offer);
      const items = [item(), item(), item(), item()];
      const created = await Promise.all(items.map((i) => batcher.add(tenantId, i))); // one batch, one statement
      expect(offers).toBe(1);
      expect(canceled()).toBe(0);
      expect(adopted).toHaveLength(1);
      const claimed = adopted[0]!;
      const key = (d: { eventId: string; subscriptionId: string | null }) => `${items.findIndex((i) => i.id === d.eventId)}:${d.subscriptionId === subA ? 'A' : 'B'}`;
      // A: one more (its share is 2, one is busy); B: two; the room (3) is then full.
      expect(claimed.map(key).sort()).toEqual(['0:A', '0:B', '1:B']);
      const [secretA] = await hl.dataSource.query('select secret from webhook_subscriptions where id = $1', [subA]);
      for (const d of claimed) {
        const sent = items.find((i) => i.id === d.eventId)!;
        expect(d).toMatchObject({ tenantId, event: 'invoice.created', attempts: 0, scheduleAttempts: 0, body: sent.body });
        expect(d.secret).toBeTruthy();
        if (d.subscriptionId === subA) expect(d.secret).toBe(secretA.secret);
        expect(d).not.toHaveProperty('handedOff');
      }
      // The callers get their deliveries, without the claim's extras.
      const all = created.flat();
      expect(all).toHaveLength(8);
      for (const d of all) expect(Object.keys(d)).not.toContain('secret');
      expect(all.filter((d) => d.status === 'SENDING').map((d) => d.id).sort()).toEqual(claimed.map((d) => d.id).sort());

      const rows = await hl.dataSource.query(
        `select id, status, locked_by, extract(epoch from lease_expires_at - now()) as lease_s from webhook_deliveries where event_id = any($1)`,
        [items.map((i) => i.id)],
      );
      const claimedIds = new Set(claimed.map((d) => d.id));
      for (const row of rows) {
        if (claimedIds.has(row.id)) {
          // Leased like a claim: another worker takes them over if this process dies.
          expect(row).toMatchObject({ status: 'SENDING', locked_by: 'test-worker' });
          expect(Number(row.lease_s)).toBeGreaterThan(50);
          expect(Number(row.lease_s)).toBeLessThanOrEqual(60);
        } else {
          expect(row).toMatchObject({ status: 'PENDING', locked_by: null, lease_s: null });
        }
      }
    });
  });

  it('a failed insert claims nothing and gives the room back', async () => {
    await withBatcher(async (batcher) => {
      const { offer, adopted, canceled } = handOff(10, 10, new Map());
      batcher.handOff = () => offer;
      const bad = { ...item(), dataJson: '{not json' };
      await expect(batcher.add(tenantId, bad)).rejects.toThrow(/json/i);
      expect(adopted).toEqual([]);
      expect(canceled()).toBe(1);
      const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where id = $1', [bad.id]);
      expect(n).toBe(0);
    });
  });

  it('an insert that claims nothing (no subscription matches) gives the room back', async () => {
    await withBatcher(async (batcher) => {
      const { offer, adopted, canceled } = handOff(10, 10, new Map());
      batcher.handOff = () => offer;
      expect(await batcher.add(tenantId, item('payment.received'))).toEqual([]);
      expect(adopted).toEqual([]);
      expect(canceled()).toBe(1);
    });
  });
});

describe('a process that is not idle', () => {
  it('queues fresh deliveries behind the due ones, and keeps each subscription within its share', async () => {
    const hl = await start({ HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '1', HOOKLINE_DELIVERY_TIMEOUT: '5s' });
    let open = 0;
    let most = 0;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = await receiver(async () => {
      most = Math.max(most, ++open);
      await held; // the first answer waits until the test has triggered the rest
      await new Promise((r) => setTimeout(r, 50));
      open--;
      return { status: 204 };
    });
    const fast = await receiver();
    const { apiKey } = await hl.createTenant();
    await subscribe(hl, apiKey, slow.url, ['invoice.*']);
    await subscribe(hl, apiKey, fast.url, ['payment.*']);
    await idle(hl);

    const first = await trigger(hl, apiKey, { ...INVOICE, amount: 1 });
    const second = await trigger(hl, apiKey, { ...INVOICE, amount: 2 });
    const third = await trigger(hl, apiKey, { ...INVOICE, amount: 3 });
    expect(first.deliveries[0]!.status).toBe('SENDING'); // idle: handed off
    expect(second.deliveries[0]!.status).toBe('PENDING'); // the subscription's one slot is taken
    expect(third.deliveries[0]!.status).toBe('PENDING'); // the second is due and waiting: no passing it
    const payment = await hl.gql(TRIGGER, {
      input: { event: 'payment.received', data: { payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 'now' } },
    }, apiKey);
    // Another subscription's fresh delivery is queued too while deliveries are due, and still goes out at once.
    expect(payment.data.triggerEvent.deliveries[0].status).toBe('PENDING');
    await fast.waitFor(1, 2_000); // while the slow subscription's first attempt still waits
    release();

    await slow.waitFor(3, 5_000);
    expect(slow.received.map((r) => JSON.parse(r.body).data.amount)).toEqual([1, 2, 3]);
    expect(most).toBe(1);
    expect(await hl.metric('hookline_deliveries_handed_off_total')).toBe(1);
  });
});

describe('stopping', () => {
  it('puts back what an insert claimed for a dispatcher that stopped meanwhile, untried', async () => {
    const hl = await start();
    const target = await receiver();
    const tenant = await hl.createTenant();
    await subscribe(hl, tenant.apiKey, target.url);
    await idle(hl);

    const offer = hl.dispatcher!.handOff(tenant.id);
    expect(offer).toBeDefined();
    const stopping = hl.dispatcher!.stop();
    expect(hl.dispatcher!.handOff(tenant.id)).toBeUndefined(); // no new offers once stopping
    const batcher = new IngestBatcher(hl.dataSource, { tenantSessions: true });
    try {
      batcher.handOff = () => offer;
      const [created] = await batcher.add(tenant.id as TenantId, item());
      expect(created!.status).toBe('SENDING');
      await stopping; // waited for the insert, then released its delivery
      const [row] = await hl.dataSource.query('select status, attempts, locked_by, lease_expires_at from webhook_deliveries where id = $1', [created!.id]);
      expect(row).toEqual({ status: 'PENDING', attempts: 0, locked_by: null, lease_expires_at: null });
      await new Promise((r) => setTimeout(r, 200));
      expect(target.received).toEqual([]);
    } finally {
      await batcher.close();
    }
  });
});
