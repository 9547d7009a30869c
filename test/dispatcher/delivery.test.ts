// Durable delivery end to end: triggerEvent -> signed POST to a real receiver
// on loopback -> recorded status and attempts.
import { createHmac } from 'node:crypto';
import { Webhook as StandardWebhook } from 'standardwebhooks';
import { Webhook as SvixWebhook } from 'svix';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { poolOf } from '../../src/db/query.js';
import { WORKER_LOST, disableGoneSubscriptions, reclaimLostDeliveries, releaseClaims } from '../../src/dispatcher/queue.js';
import { within } from '../../src/within.js';
import { lockWaiters } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { DELIVERY, TRIGGER_EVENT as TRIGGER } from '../helpers/operations.js';

const CREATE = `mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret subscription { id } } }`;
const INVOICE = { invoice_id: 'inv-123', amount: 1500.0, customer: 'Acme Corp' };

let hl: TestHookline;
let key: string;
let tenantId: string;
const receivers: Receiver[] = [];

beforeAll(async () => {
  // 410 Gone deactivating the subscription is asked for here (its tests below); the default,
  // a 410 that follows the schedule, has its own test with a process of its own.
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '100ms,100ms', HOOKLINE_DELIVERY_TIMEOUT: '1s', HOOKLINE_DISABLE_ON_GONE: 'true' });
});
// Each test has a tenant of its own, so earlier tests' subscriptions receive nothing of it.
beforeEach(async () => {
  ({ apiKey: key, id: tenantId } = await hl.createTenant());
});
afterAll(async () => {
  await hl?.stop();
  await Promise.all(receivers.map((r) => r.close()));
});

async function receiverWith(respond?: Receiver['respond']) {
  const r = await startReceiver(respond);
  receivers.push(r);
  return r;
}

async function subscribe(url: string, events = ['invoice.created'], secret?: string) {
  const res = await hl.gql(CREATE, { input: { url, events, secret } }, key);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.createWebhookSubscription as { secret: string; subscription: { id: string } };
}

/** Turns the subscription on or off, as its owner would. */
async function setActive(subscriptionId: string, active: boolean) {
  const res = await hl.gql('mutation($id: ID!, $active: Boolean!) { updateWebhookSubscription(id: $id, input: { active: $active }) { id } }', { id: subscriptionId, active }, key);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
}

/** An event row of the test's tenant, written directly, for deliveries the test writes as a claim or a worker left them. */
async function insertedEvent(event = 'test.event'): Promise<string> {
  const { rows: [row] } = await poolOf(hl.dataSource).query(
    `insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, $2, '{}', '{}', now()) returning id`,
    [tenantId, event],
  );
  return row.id;
}

async function trigger(input: Record<string, unknown>, apiKey = key) {
  const res = await hl.gql(TRIGGER, { input }, apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.triggerEvent;
}

async function deliveryOf(id: string) {
  const res = await hl.gql(DELIVERY, { id }, key);
  return res.data.delivery;
}

async function settled(id: string, status: string) {
  return eventually(async () => {
    const d = await deliveryOf(id);
    return d.status === status ? d : undefined;
  });
}

describe('a delivery that succeeds', () => {
  it('is a signed POST of the envelope that standardwebhooks, svix and a plain HMAC verify', async () => {
    const receiver = await receiverWith(() => ({ status: 200, body: 'thanks' }));
    const { secret, subscription } = await subscribe(`${receiver.url}/hooks`, ['invoice.created']);
    const result = await trigger({ event: 'invoice.created', data: INVOICE });
    expect(result.duplicate).toBe(false);
    expect(result.event).toMatchObject({ event: 'invoice.created', resourceType: 'invoice', resourceId: 'inv-123', data: INVOICE });
    expect(result.deliveries).toEqual([
      // SENDING when the insert hands it straight to this process's idle dispatcher.
      { id: expect.any(String), status: expect.stringMatching(/^(PENDING|SENDING)$/), subscription: { id: subscription.id }, targetUrl: `${receiver.url}/hooks` },
    ]);
    const deliveryId = result.deliveries[0].id;

    const [request] = await receiver.waitFor(1);
    expect(request!.method).toBe('POST');
    expect(request!.path).toBe('/hooks');
    expect(request!.headers['content-type']).toBe('application/json');
    expect(request!.headers['x-webhook-event']).toBe('invoice.created');
    expect(request!.headers['x-webhook-delivery']).toBe(deliveryId);
    expect(JSON.parse(request!.body)).toEqual({
      id: result.event.id,
      event: 'invoice.created',
      resource_type: 'invoice',
      resource_id: 'inv-123',
      tenant_id: tenantId,
      timestamp: result.event.createdAt,
      data: INVOICE,
    });
    const headers = request!.headers as Record<string, string>;
    expect(new StandardWebhook(secret).verify(request!.body, headers)).toEqual(JSON.parse(request!.body));
    expect(
      new SvixWebhook(secret).verify(request!.body, {
        'svix-id': headers['webhook-id']!,
        'svix-timestamp': headers['webhook-timestamp']!,
        'svix-signature': headers['webhook-signature']!,
      }),
    ).toBeTruthy();
    const hmac = createHmac('sha256', Buffer.from(secret.slice(6), 'base64')).update(request!.body).digest('hex');
    expect(headers['x-signature']).toBe(`sha256=${hmac}`);
    const tampered = request!.body.replace('1500', '2000');
    expect(() => new StandardWebhook(secret).verify(tampered, headers)).toThrow();

    const delivery = await settled(deliveryId, 'DELIVERED');
    expect(delivery).toMatchObject({ attempts: 1, lastError: null, lastStatusCode: 200, nextAttemptAt: null, subscription: { id: subscription.id } });
    expect(delivery.deliveredAt).toBeTruthy();
    expect(delivery.payload).toEqual(JSON.parse(request!.body));
    expect(delivery.attemptLog).toEqual([
      { number: 1, startedAt: expect.any(String), durationMs: expect.any(Number), statusCode: 200, error: null, responseBody: 'thanks' },
    ]);
  });

  it('signs a guide-style secret with its UTF-8 bytes', async () => {
    const receiver = await receiverWith();
    const { secret } = await subscribe(receiver.url, ['payment.*'], 'my-webhook-secret');
    await trigger({
      event: 'payment.received',
      data: { payment_id: 'pay-456', invoice_id: 'inv-123', amount: '1500.00', method: 'bank_transfer', reference: 'TR-2024-001', received_at: '2024-02-14T11:00:00' },
    });
    const [request] = await receiver.waitFor(1);
    const key = Buffer.from(secret, 'utf8');
    expect(request!.headers['x-signature']).toBe(`sha256=${createHmac('sha256', key).update(request!.body).digest('hex')}`);
    expect(new StandardWebhook(key as unknown as string, { format: 'raw' }).verify(request!.body, request!.headers as any)).toBeTruthy();
  });

  it('signs a secret that is not whsec_ and not ASCII so that standardwebhooks and svix verify it given its UTF-8 bytes, format raw (the README\'s way)', async () => {
    // The packages' own reading of a string (base64, or with format raw one byte per
    // character) gives another key.
    const receiver = await receiverWith();
    const { secret } = await subscribe(receiver.url, ['payment.*'], 'clave-secreta-de-Ñandú-🧾');
    await trigger({
      event: 'payment.received',
      data: { payment_id: 'pay-457', invoice_id: 'inv-123', amount: '1500.00', method: 'bank_transfer', reference: 'TR-2024-002', received_at: '2024-02-14T11:00:00' },
    });
    const [request] = await receiver.waitFor(1);
    const headers = request!.headers as Record<string, string>;
    const svixNames = { 'svix-id': headers['webhook-id']!, 'svix-timestamp': headers['webhook-timestamp']!, 'svix-signature': headers['webhook-signature']! };
    const envelope = JSON.parse(request!.body);
    expect(new StandardWebhook(Buffer.from(secret, 'utf8'), { format: 'raw' }).verify(request!.body, headers)).toEqual(envelope);
    expect(new SvixWebhook(Buffer.from(secret, 'utf8'), { format: 'raw' }).verify(request!.body, svixNames)).toEqual(envelope);
    expect(() => new StandardWebhook(secret, { format: 'raw' }).verify(request!.body, headers)).toThrow(/No matching signature/);
    expect(() => new SvixWebhook(secret, { format: 'raw' }).verify(request!.body, svixNames)).toThrow(/No matching signature/);
  });
});

describe('failures and retries', () => {
  it('retries after two failures with the same webhook-id, then delivers (3 attempts)', async () => {
    const receiver = await receiverWith((_req, i) => (i < 2 ? { status: 500, body: 'boom' } : { status: 204 }));
    await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const requests = await receiver.waitFor(3);
    const ids = new Set(requests.map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(1);
    expect(new Set(requests.map((r) => r.body)).size).toBe(1);
    const delivery = await settled(deliveries[0].id, 'DELIVERED');
    expect(delivery.attempts).toBe(3);
    expect(delivery.attemptLog.map((a: any) => [a.number, a.statusCode, a.error])).toEqual([
      [1, 500, 'HTTP 500'],
      [2, 500, 'HTTP 500'],
      [3, 204, null],
    ]);
    expect(delivery.attemptLog[0].responseBody).toBe('boom');
  });

  it('fails when the schedule is exhausted, and retryDelivery starts it afresh', async () => {
    let healthy = false;
    const receiver = await receiverWith(() => ({ status: healthy ? 200 : 503 }));
    await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const failed = await settled(deliveries[0].id, 'FAILED');
    expect(failed).toMatchObject({ attempts: 3, lastError: 'HTTP 503', lastStatusCode: 503, nextAttemptAt: null });
    expect(receiver.received).toHaveLength(3);

    healthy = true;
    const retried = await hl.gql('mutation RetryDelivery($id: ID!) { retryDelivery(id: $id) { id status nextAttemptAt } }', { id: deliveries[0].id }, key);
    expect(retried.data.retryDelivery).toMatchObject({ id: deliveries[0].id, status: 'PENDING' });
    const delivered = await settled(deliveries[0].id, 'DELIVERED');
    expect(delivered.attempts).toBe(4);
    const again = await hl.gql('mutation($id: ID!) { retryDelivery(id: $id) { id } }', { id: deliveries[0].id }, key);
    expect(again.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('retries a failed delivery to the address its subscription has now', async () => {
    const broken = await receiverWith(() => ({ status: 404 }));
    const fixed = await receiverWith(() => ({ status: 204 }));
    const { subscription } = await subscribe(`${broken.url}/old`);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await settled(deliveries[0].id, 'FAILED');
    const moved = await hl.gql(
      'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { url } }',
      { id: subscription.id, input: { url: `${fixed.url}/new` } },
      key,
    );
    expect(moved.errors).toBeUndefined();
    // Until then it shows the address its attempts went to, unchanged.
    const before = await hl.gql('query($id: ID!) { delivery(id: $id) { status targetUrl } }', { id: deliveries[0].id }, key);
    expect(before.data.delivery).toEqual({ status: 'FAILED', targetUrl: `${broken.url}/old` });
    const retried = await hl.gql('mutation($id: ID!) { retryDelivery(id: $id) { targetUrl } }', { id: deliveries[0].id }, key);
    expect(retried.data.retryDelivery).toEqual({ targetUrl: `${fixed.url}/new` });
    await settled(deliveries[0].id, 'DELIVERED');
    expect(fixed.received.map((r) => r.path)).toEqual(['/new']);
    expect(broken.received).toHaveLength(3);
  });

  it('a subscription to a name that does not resolve is saved, and its attempts fail with the resolver\'s error', async () => {
    // Like the guide's Test 1 (https://webhook.site/…) on a machine with no DNS; .invalid never resolves (RFC 2606).
    const { subscription } = await subscribe('https://hooks.nowhere.invalid/webhooks');
    expect(subscription.id).toBeTruthy();
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const failed = await settled(deliveries[0].id, 'FAILED');
    expect(failed.attempts).toBe(3);
    expect(failed.lastError).toMatch(/ENOTFOUND|EAI_AGAIN/);
  });

  it('gives up an attempt at the timeout', async () => {
    const receiver = await receiverWith((_r, i) => (i === 0 ? { status: 200, delayMs: 2_500 } : { status: 200 }));
    await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const delivery = await settled(deliveries[0].id, 'DELIVERED');
    expect(delivery.attempts).toBe(2);
    expect(delivery.attemptLog[0].error).toMatch(/timeout/);
    expect(delivery.attemptLog[0].statusCode).toBeNull();
  });

  it('does not follow redirects: a 3xx is a failed attempt', async () => {
    const target = await receiverWith();
    const receiver = await receiverWith(() => ({ status: 302, headers: { location: `${target.url}/elsewhere` } }));
    await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const delivery = await settled(deliveries[0].id, 'FAILED');
    expect(delivery.attemptLog.map((a: any) => a.statusCode)).toEqual([302, 302, 302]);
    expect(delivery.lastError).toMatch(/HTTP 302/);
    expect(target.received).toHaveLength(0);
  });

  it('honours Retry-After on 429 within 1x to 2x of the scheduled delay', async () => {
    // Schedule delay 100 ms; Retry-After: 3600 s is capped at 2x = 200 ms, not an hour (spread
    // over the 20% below the cap: 167-200 ms).
    const receiver = await receiverWith((_r, i) => (i === 0 ? { status: 429, headers: { 'retry-after': '3600' } } : { status: 200 }));
    await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const [first, second] = await receiver.waitFor(2);
    const gap = second!.at - first!.at;
    expect(gap).toBeGreaterThanOrEqual(160);
    expect(gap).toBeLessThan(5_000);
    await settled(deliveries[0].id, 'DELIVERED');
  });

  it('disables the subscription on 410 Gone; its deliveries wait until it is active again', async () => {
    let gone = true;
    const receiver = await receiverWith(() => ({ status: gone ? 410 : 200 }));
    const { subscription } = await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const sub = await eventually(async () => {
      const res = await hl.gql('query($id: ID!) { webhookSubscription(id: $id) { active disabledReason } }', { id: subscription.id }, key);
      return res.data.webhookSubscription.active === false ? res.data.webhookSubscription : undefined;
    });
    expect(sub.disabledReason).toMatch(/410/);
    const waiting = await deliveryOf(deliveries[0].id);
    expect(waiting).toMatchObject({ status: 'PENDING', attempts: 1, lastStatusCode: 410 });
    await new Promise((r) => setTimeout(r, 400));
    expect(receiver.received).toHaveLength(1);

    gone = false;
    await setActive(subscription.id, true);
    const delivered = await settled(deliveries[0].id, 'DELIVERED');
    expect(delivered.attempts).toBe(2);
  });

  it("a 410 Gone from the url a subscription had when the attempt began, moved since, leaves it active: the retry goes to the new url", async () => {
    // A tenant moving its endpoint because the old host is going away: the old one's 410 is not the new one's.
    let answerOld: (() => void) | undefined;
    const receiver = await receiverWith(async (request) => {
      if (!request.path.startsWith('/old')) return { status: 204 };
      await new Promise<void>((resolve) => (answerOld = resolve));
      return { status: 410 };
    });
    const { subscription } = await subscribe(`${receiver.url}/old`);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await eventually(async () => answerOld);
    const moved = await hl.gql('mutation($id: ID!, $url: String!) { updateWebhookSubscription(id: $id, input: { url: $url }) { url active } }', { id: subscription.id, url: `${receiver.url}/new` }, key);
    expect(moved.errors).toBeUndefined();
    answerOld!();
    const delivered = await settled(deliveries[0].id, 'DELIVERED');
    expect(delivered).toMatchObject({ attempts: 2 });
    expect(receiver.received.map((r) => r.path)).toEqual(['/old', '/new']);
    const sub = await hl.gql('query($id: ID!) { webhookSubscription(id: $id) { active disabledReason url } }', { id: subscription.id }, key);
    expect(sub.data.webhookSubscription).toEqual({ active: true, disabledReason: null, url: `${receiver.url}/new` });
    // And it still gets new events.
    const next = await trigger({ event: 'invoice.created', data: INVOICE });
    expect(next.deliveries.map((d: { subscription: { id: string } }) => d.subscription.id)).toContain(subscription.id);
  });

  it('without HOOKLINE_DISABLE_ON_GONE, a 410 Gone is a failed attempt like any other: the schedule, then FAILED', async () => {
    const plain = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '100ms,100ms', HOOKLINE_DELIVERY_TIMEOUT: '1s' });
    try {
      const receiver = await receiverWith(() => ({ status: 410 }));
      const tenant = await plain.createTenant();
      const created = await plain.gql(
        'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
        { input: { url: receiver.url, events: ['invoice.*'] } },
        tenant.apiKey,
      );
      const subscriptionId = created.data.createWebhookSubscription.subscription.id;
      const res = await plain.gql(TRIGGER, { input: { event: 'invoice.created', data: INVOICE } }, tenant.apiKey);
      const id = res.data.triggerEvent.deliveries[0].id as string;
      const failed = await eventually(async () => {
        const [row] = await plain.dataSource.query('select status, attempts, last_status_code, last_error from webhook_deliveries where id = $1', [id]);
        return row.status === 'FAILED' && row;
      });
      expect(failed).toEqual({ status: 'FAILED', attempts: 3, last_status_code: 410, last_error: 'HTTP 410' });
      expect(receiver.received).toHaveLength(3);
      const sub = await plain.gql('query($id: ID!) { webhookSubscription(id: $id) { active disabledReason } }', { id: subscriptionId }, tenant.apiKey);
      expect(sub.data.webhookSubscription).toEqual({ active: true, disabledReason: null });
    } finally {
      await plain.stop();
    }
  });
});

describe('subscriptions and the queue', () => {
  it('a delivery failing while its subscription is deactivated waits for it, like the others', async () => {
    let healthy = false;
    let deactivated!: () => void;
    const answerAfterDeactivation = new Promise<void>((r) => (deactivated = r));
    const receiver = await receiverWith(async () => (healthy ? { status: 200 } : (await answerAfterDeactivation, { status: 500 })));
    const { subscription } = await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await receiver.waitFor(1); // the first attempt is in flight...
    await setActive(subscription.id, false);
    deactivated();
    // ...and fails after the deactivation: its retry (due in 100 ms) must wait.
    await eventually(async () => (await deliveryOf(deliveries[0].id)).attempts === 1);
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.received).toHaveLength(1);
    expect((await deliveryOf(deliveries[0].id)).status).toBe('PENDING');

    healthy = true;
    await setActive(subscription.id, true);
    expect((await settled(deliveries[0].id, 'DELIVERED')).attempts).toBe(2);
  });

  it('a delivery in flight as its subscription is deactivated, then reclaimed or handed back, waits for it too', async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    // Two deliveries being sent: one by a worker that died (its lease has run out), one by a
    // worker that hands it back untried (releaseClaims: a batch it could not prepare, or stop()).
    // Deactivated first: a reclaim of the process's own may come at any moment after the insert.
    await setActive(subscription.id, false);
    const db = poolOf(hl.dataSource);
    const eventId = await insertedEvent('invoice.created');
    const { rows } = await db.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, locked_by, lease_expires_at, next_attempt_at)
       select $1, $2, $3, 'invoice.created', $4, 'SENDING', w, now() + l * interval '1 minute', now() from unnest(array['dead', 'alive'], array[-1, 1]) as x(w, l)
       returning id, locked_by`,
      [tenantId, eventId, subscription.id, receiver.url],
    );
    // Reclaimed here, or by the process's own dispatcher if its periodic reclaim came first.
    expect(await reclaimLostDeliveries(db, 'reclaiming')).toBeLessThanOrEqual(1);
    await releaseClaims(db, 'alive', [rows.find((r) => r.locked_by === 'alive').id]);
    const { rows: states } = await db.query(`select status, paused, last_error from webhook_deliveries where event_id = $1 order by last_error nulls last`, [eventId]);
    // The lost worker's: whether it had begun an attempt is unknown, and its last error says no more (half of
    // a dead worker's claimed rows were never tried, and read 'worker lost during an attempt').
    expect(states).toEqual([
      { status: 'PENDING', paused: true, last_error: WORKER_LOST },
      { status: 'PENDING', paused: true, last_error: null },
    ]);
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.received).toHaveLength(0);

    await setActive(subscription.id, true);
    for (const { id } of rows) await settled(id, 'DELIVERED');
    expect(receiver.received).toHaveLength(2);
  });

  it("a delivery canceled by its subscription's deletion says so, after a lost worker held it too; an attempt's error stays", async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    await setActive(subscription.id, false); // nothing is sent meanwhile
    const db = poolOf(hl.dataSource);
    const eventId = await insertedEvent('invoice.created');
    await db.query(
      // The one waiting is paused, as its subscription's deliveries are while it is inactive: else a claim would take it.
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, locked_by, lease_expires_at, next_attempt_at, last_error, paused)
       select $1, $2, $3, 'invoice.created', $4, s, w, l, now(), e, p
         from (values ('SENDING', 'dead', now() - interval '1 minute', null, false), ('PENDING', null, null, 'HTTP 500', true)) as x(s, w, l, e, p)`,
      [tenantId, eventId, subscription.id, receiver.url],
    );
    // Reclaimed here, or by the process's own dispatcher if its periodic reclaim came first.
    await reclaimLostDeliveries(db, 'reclaiming');
    const lastErrors = async () =>
      (await db.query(`select status, last_error from webhook_deliveries where event_id = $1 order by last_error`, [eventId])).rows;
    expect(await lastErrors()).toEqual([
      { status: 'PENDING', last_error: 'HTTP 500' },
      { status: 'PENDING', last_error: WORKER_LOST },
    ]);
    expect((await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription.id }, key)).errors).toBeUndefined();
    expect(await lastErrors()).toEqual([
      { status: 'CANCELED', last_error: 'HTTP 500' },
      { status: 'CANCELED', last_error: 'subscription deleted' },
    ]);
  });

  it('a test event claimed for an inactive subscription by a worker then lost, or handed back, is sent all the same; once tried, its retry waits', async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    await setActive(subscription.id, false);
    const db = poolOf(hl.dataSource);
    const eventId = await insertedEvent();
    // sendTestEvent's deliveries (test_event), claimed: untried by a worker that died and by one
    // that hands it back; and one already tried once (a retry, as the dead worker had it).
    const { rows } = await db.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, test_event, locked_by, lease_expires_at, next_attempt_at, attempts)
       select $1, $2, $3, 'test.event', $4, 'SENDING', true, w, now() + l * interval '1 minute', now(), a
         from unnest(array['dead', 'alive', 'dead'], array[-1, 1, -1], array[0, 0, 1]) as x(w, l, a)
       returning id, locked_by, attempts`,
      [tenantId, eventId, subscription.id, receiver.url],
    );
    expect(await reclaimLostDeliveries(db, 'reclaiming')).toBeLessThanOrEqual(2);
    await releaseClaims(db, 'alive', [rows.find((r) => r.locked_by === 'alive').id]);
    const untried = rows.filter((r) => r.attempts === 0);
    for (const { id } of untried) await settled(id, 'DELIVERED');
    expect(receiver.received).toHaveLength(2);
    const retry = rows.find((r) => r.attempts === 1).id;
    await eventually(async () => (await db.query('select status from webhook_deliveries where id = $1', [retry])).rows[0].status === 'PENDING');
    expect((await db.query('select paused from webhook_deliveries where id = $1', [retry])).rows[0]).toEqual({ paused: true });
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.received).toHaveLength(2);

    // sendTestEvent marks what it writes; triggerEvent does not.
    await setActive(subscription.id, true);
    const test = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }', { id: subscription.id }, key);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    const marks = await db.query('select id, test_event from webhook_deliveries where id = any($1::uuid[])', [[test.data.sendTestEvent.id, deliveries[0].id]]);
    expect(Object.fromEntries(marks.rows.map((r) => [r.id, r.test_event]))).toEqual({ [test.data.sendTestEvent.id]: true, [deliveries[0].id]: false });
  });

  it('test events asked for while the subscription was active wait for it once it is turned off, by hand or by a 410, claimed ones included', async () => {
    const receiver = await receiverWith();
    const db = poolOf(hl.dataSource);
    for (const turnOff of ['update', '410'] as const) {
      const { subscription } = await subscribe(receiver.url);
      const eventId = await insertedEvent();
      // Claimed by a worker that then dies (its lease runs out once the subscription is off: the
      // process's own reclaim must not take it back before), by one that hands it back, and one
      // waiting to be claimed.
      const { rows } = await db.query(
        `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, test_event, locked_by, lease_expires_at, next_attempt_at)
         select $1, $2, $3, 'test.event', $4, s, true, w, now() + l * interval '1 minute', now() + interval '1 hour'
           from unnest(array['SENDING', 'SENDING', 'PENDING'], array['dead', 'alive', null], array[1, 1, null]) as x(s, w, l)
         returning id, locked_by`,
        [tenantId, eventId, subscription.id, receiver.url],
      );
      if (turnOff === 'update') {
        await setActive(subscription.id, false);
      } else {
        const client = await db.connect();
        try {
          await client.query('begin');
          const { url } = (await client.query('select url from webhook_subscriptions where id = $1', [subscription.id])).rows[0];
          expect(await disableGoneSubscriptions(client, [{ id: subscription.id, url }], 'HTTP 410')).toEqual({ held: [], disabled: [subscription.id] });
          await client.query('commit');
        } finally {
          client.release();
        }
      }
      await db.query(`update webhook_deliveries set lease_expires_at = now() - interval '1 second' where locked_by = 'dead' and event_id = $1`, [eventId]);
      await reclaimLostDeliveries(db, 'reclaiming');
      await releaseClaims(db, 'alive', [rows.find((r) => r.locked_by === 'alive').id]);
      await db.query(`update webhook_deliveries set next_attempt_at = now() where event_id = $1`, [eventId]);
      await eventually(async () => (await db.query(`select count(*)::int as n from webhook_deliveries where event_id = $1 and status = 'PENDING'`, [eventId])).rows[0].n === 3);
      const { rows: states } = await db.query(`select status, paused from webhook_deliveries where event_id = $1`, [eventId]);
      expect(states, turnOff).toEqual(Array(3).fill({ status: 'PENDING', paused: true }));
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.received).toHaveLength(0);
  });

  it('turning a subscription off does not wait for a worker recording its claimed test events (nor deadlock with it)', async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    const db = poolOf(hl.dataSource);
    const eventId = await insertedEvent();
    const { rows } = await db.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, test_event, locked_by, lease_expires_at, next_attempt_at)
       select $1, $2, $3, 'test.event', $4, 'SENDING', true, 'recording', now() + interval '1 minute', now() from generate_series(1, 2)
       returning id`,
      [tenantId, eventId, subscription.id, receiver.url],
    );
    const [recorded, handedBack] = rows.map((r) => r.id as string);
    // A worker's record statement, under way: it has locked one of them, and will lock the other next.
    const worker = await db.connect();
    try {
      await worker.query('begin');
      await worker.query(`update webhook_deliveries set status = 'DELIVERED', attempts = 1, locked_by = null, lease_expires_at = null where id = $1`, [recorded]);
      const off = await within(
        hl.gql('mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { active: false }) { active } }', { id: subscription.id }, key),
        10_000,
        'turning the subscription off waited for the worker',
      );
      expect(off).toEqual({ data: { updateWebhookSubscription: { active: false } } });
      await worker.query(`update webhook_deliveries set locked_by = locked_by where id = $1`, [handedBack]);
      await worker.query('commit');
    } finally {
      worker.release();
    }
    await releaseClaims(db, 'recording', [handedBack]);
    const { rows: states } = await db.query(`select id, status, paused from webhook_deliveries where event_id = $1`, [eventId]);
    expect(Object.fromEntries(states.map((s) => [s.id, [s.status, s.paused]]))).toEqual({ [recorded]: ['DELIVERED', false], [handedBack]: ['PENDING', true] });
  });

  it('a test event a claim takes as its subscription is turned off waits for it too', async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    const db = poolOf(hl.dataSource);
    const eventId = await insertedEvent();
    // Due later: the process's own dispatcher leaves it to the claim below.
    const { rows: [{ id }] } = await db.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, test_event, next_attempt_at)
       values ($1, $2, $3, 'test.event', $4, 'PENDING', true, now() + interval '1 hour') returning id`,
      [tenantId, eventId, subscription.id, receiver.url],
    );
    // A claim under way: the deactivation's update of the waiting deliveries waits for its row.
    const claim = await db.connect();
    try {
      await claim.query('begin');
      await claim.query(`update webhook_deliveries set status = 'SENDING', locked_by = 'claiming', lease_expires_at = now() + interval '1 minute' where id = $1`, [id]);
      const off = hl.gql('mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { active: false }) { active } }', { id: subscription.id }, key);
      await eventually(async () => (await lockWaiters(db)).length > 0);
      await claim.query('commit');
      expect(await off).toEqual({ data: { updateWebhookSubscription: { active: false } } });
    } finally {
      claim.release();
    }
    await releaseClaims(db, 'claiming', [id]);
    const { rows: [state] } = await db.query(`select status, paused, test_event from webhook_deliveries where id = $1`, [id]);
    expect(state).toEqual({ status: 'PENDING', paused: true, test_event: false });
  });

  it("a test event of a lost worker, looked at by a reclaim as its subscription is turned off, waits for it too", async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    const db = poolOf(hl.dataSource);
    const eventId = await insertedEvent();
    // A lost worker's claim (its lease runs out in a second), and a delivery waiting, due later.
    const { rows: [lost, waiting] } = await db.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, test_event, locked_by, lease_expires_at, next_attempt_at)
       select $1, $2, $3, 'test.event', $4, s, true, w, now() + interval '1 second', now() + interval '1 hour'
         from unnest(array['SENDING', 'PENDING'], array['gone-worker', null]) as x(s, w)
       returning id`,
      [tenantId, eventId, subscription.id, receiver.url],
    );
    const holder = await db.connect();
    const reclaimer = await db.connect();
    try {
      // The turning off takes the subscription, then waits for the waiting delivery's row.
      await holder.query('begin');
      await holder.query('select from webhook_deliveries where id = $1 for update', [waiting.id]);
      const off = hl.gql('mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { active: false }) { active } }', { id: subscription.id }, key);
      await eventually(async () => (await lockWaiters(db)).length > 0);
      await new Promise((r) => setTimeout(r, 1_200)); // the lease has run out
      // A reclaim meanwhile, its transaction still open as the turning off goes on.
      await reclaimer.query('begin');
      expect(await reclaimLostDeliveries(reclaimer, 'reclaiming')).toBe(0);
      await holder.query('commit');
      expect(await off).toEqual({ data: { updateWebhookSubscription: { active: false } } });
      await reclaimer.query('commit');
    } finally {
      holder.release();
      reclaimer.release();
    }
    await reclaimLostDeliveries(db, 'reclaiming'); // or the process's own did
    await eventually(async () => (await db.query(`select status from webhook_deliveries where id = $1`, [lost.id])).rows[0].status === 'PENDING');
    const { rows: states } = await db.query(`select status, paused, test_event from webhook_deliveries where event_id = $1`, [eventId]);
    expect(states).toEqual(Array(2).fill({ status: 'PENDING', paused: true, test_event: false }));
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.received).toHaveLength(0);
  });

  it('deleting a subscription cancels its pending deliveries', async () => {
    const receiver = await receiverWith(() => ({ status: 500 }));
    const { subscription } = await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await receiver.waitFor(1);
    await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription.id }, key);
    const canceled = await settled(deliveries[0].id, 'CANCELED');
    expect(canceled.subscription).toBeNull();
    const count = receiver.received.length;
    await new Promise((r) => setTimeout(r, 400));
    expect(receiver.received.length).toBe(count);
  });

  it('retryDelivery sends a CANCELED delivery once more, to the deleted subscription\'s last address, signed with its secret', async () => {
    let healthy = false;
    const receiver = await receiverWith(() => ({ status: healthy ? 204 : 500 }));
    const { subscription } = await subscribe(`${receiver.url}/gone`, ['invoice.created'], 'deleted-but-kept-secret');
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await receiver.waitFor(1);
    expect((await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription.id }, key)).errors).toBeUndefined();
    const canceled = await settled(deliveries[0].id, 'CANCELED');

    healthy = true;
    const retried = await hl.gql('mutation($id: ID!) { retryDelivery(id: $id) { id status } }', { id: deliveries[0].id }, key);
    expect(retried.errors).toBeUndefined();
    expect(retried.data.retryDelivery).toEqual({ id: deliveries[0].id, status: 'PENDING' });
    const delivered = await settled(deliveries[0].id, 'DELIVERED');
    expect(delivered.attempts).toBe(canceled.attempts + 1);
    const last = receiver.received.at(-1)!;
    expect(last.path).toBe('/gone');
    expect(last.headers['x-signature']).toBe(`sha256=${createHmac('sha256', 'deleted-but-kept-secret').update(last.body).digest('hex')}`);

    // The subscription itself stays deleted everywhere: not listed, not found, not matched.
    const lookups = await hl.gql(
      `query($id: ID!) { webhookSubscription(id: $id) { id } webhookSubscriptions(first: 50) { edges { node { id } } } delivery(id: "${deliveries[0].id}") { subscription { id } } }`,
      { id: subscription.id },
      key,
    );
    expect(lookups.data).toEqual({ webhookSubscription: null, webhookSubscriptions: { edges: [] }, delivery: { subscription: null } });
    for (const mutation of [
      'mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }',
      'mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }',
      'mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { active: false }) { id } }',
      'mutation($id: ID!) { deleteWebhookSubscription(id: $id) }',
    ]) {
      expect((await hl.gql(mutation, { id: subscription.id }, key)).errors?.[0]?.extensions?.code, mutation).toBe('NOT_FOUND');
    }
    expect((await trigger({ event: 'invoice.created', data: INVOICE })).deliveries).toEqual([]);
  });

  it('an event triggered while its subscription is being deleted writes no delivery for it, handed off or not', async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    // The deletion's statements, held open before its commit (as deleteWebhookSubscription runs them).
    const deleting = await poolOf(hl.dataSource).connect();
    try {
      await deleting.query('begin');
      await deleting.query('select id from webhook_subscriptions where id = $1 for update', [subscription.id]);
      await deleting.query(`update webhook_deliveries set status = 'CANCELED' where subscription_id = $1 and status = 'PENDING'`, [subscription.id]);
      await deleting.query('update webhook_subscriptions set deleted_at = now() where id = $1', [subscription.id]);
      const triggered = trigger({ event: 'invoice.created', data: INVOICE }); // waits for the deletion
      await new Promise((r) => setTimeout(r, 300));
      await deleting.query('commit');
      expect((await triggered).deliveries).toEqual([]);
    } finally {
      deleting.release();
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.received).toHaveLength(0);
  });

  it('a 410 to a retried delivery of a deleted subscription leaves its other retried deliveries going', async () => {
    const gone = new Set<string>();
    const receiver = await receiverWith((request) => ({ status: gone.has(String(request.headers['x-webhook-delivery'])) ? 410 : 500 }));
    const { subscription } = await subscribe(receiver.url);
    const [a, b] = [(await trigger({ event: 'invoice.created', data: INVOICE })).deliveries[0].id, (await trigger({ event: 'invoice.created', data: INVOICE })).deliveries[0].id];
    await receiver.waitFor(2);
    await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription.id }, key);
    await settled(a, 'CANCELED');
    await settled(b, 'CANCELED');
    const retry = (id: string) => hl.gql('mutation($id: ID!) { retryDelivery(id: $id) { status } }', { id }, key);
    gone.add(a);
    await retry(b);
    await eventually(async () => (await deliveryOf(b)).attempts >= 2); // b failed again, and waits for its next try
    await retry(a); // a's receiver answers 410 Gone
    await eventually(async () => (await deliveryOf(a)).lastStatusCode === 410);
    // b goes on with its schedule to the end, rather than wait for a subscription that cannot come back.
    const failed = await settled(b, 'FAILED');
    expect(failed.attempts).toBeGreaterThanOrEqual(4);
  });

  it('a deleted subscription\'s delivery that was in flight, or created as it was deleted, is canceled rather than tried again', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const receiver = await receiverWith(async () => {
      await held;
      return { status: 500 };
    });
    const { subscription } = await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await receiver.waitFor(1);
    // Deleted while its first attempt is under way: that attempt fails, and no other follows.
    await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription.id }, key);
    release();
    const canceled = await settled(deliveries[0].id, 'CANCELED');
    expect(canceled.attempts).toBe(1);
    // A delivery the fan-out wrote for it just as it was deleted (read before, written after).
    const [{ id: late }] = await hl.dataSource.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, next_attempt_at)
       select tenant_id, event_id, subscription_id, event, target_url, 'PENDING', now() from webhook_deliveries where id = $1 returning id`,
      [deliveries[0].id],
    );
    await settled(late, 'CANCELED');
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.received).toHaveLength(1);
  });

  it('a subscription whose stored secret cannot sign gets failed attempts, and the dispatcher goes on', async () => {
    const broken = await receiverWith();
    const fine = await receiverWith();
    const { subscription } = await subscribe(broken.url, ['invoice.created']);
    await subscribe(fine.url, ['invoice.created']);
    // Written past the API's checks (by hand, or by an older version).
    await hl.dataSource.query(`update webhook_subscriptions set secret = 'whsec_not base64!' where id = $1`, [subscription.id]);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await fine.waitFor(1);
    const brokenId = deliveries.find((d: any) => d.subscription.id === subscription.id).id;
    const failed = await eventually(async () => {
      const d = await deliveryOf(brokenId);
      return d.attempts >= 1 ? d : undefined;
    });
    expect(failed.lastError).toMatch(/^not sent: .*base64/);
    expect(broken.received).toHaveLength(0);
    // Still dispatching.
    await trigger({ event: 'invoice.created', data: INVOICE });
    await fine.waitFor(2);
  });

  it('sends a test event to one subscription whatever its patterns', async () => {
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url, ['customer.updated']);
    const res = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id event status } }', { id: subscription.id }, key);
    // SENDING when the insert hands it straight to this process's idle dispatcher.
    expect(res.data.sendTestEvent).toMatchObject({ event: 'test.event', status: expect.stringMatching(/^(PENDING|SENDING)$/) });
    const [request] = await receiver.waitFor(1);
    expect(JSON.parse(request!.body).event).toBe('test.event');
    await settled(res.data.sendTestEvent.id, 'DELIVERED');
  });

  it('sends a test event to an inactive subscription too; a retry of it waits for the subscription', async () => {
    let healthy = true;
    const receiver = await receiverWith(() => ({ status: healthy ? 200 : 500 }));
    const { subscription } = await subscribe(receiver.url);
    await setActive(subscription.id, false);
    const sent = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }', { id: subscription.id }, key);
    await settled(sent.data.sendTestEvent.id, 'DELIVERED');
    expect(receiver.received).toHaveLength(1);

    healthy = false;
    const failing = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }', { id: subscription.id }, key);
    const id = failing.data.sendTestEvent.id as string;
    await eventually(async () => (await deliveryOf(id)).attempts === 1);
    await new Promise((r) => setTimeout(r, 400)); // its retry (due in 100 ms) waits
    expect(receiver.received).toHaveLength(2);
    expect((await hl.dataSource.query('select status, paused from webhook_deliveries where id = $1', [id]))[0]).toEqual({ status: 'PENDING', paused: true });
  });

  it('a test event for a subscription deleted after it was looked up is refused, and writes nothing', async () => {
    // What sendTestEvent does after finding the subscription, had it been deleted in between.
    const receiver = await receiverWith();
    const { subscription } = await subscribe(receiver.url);
    await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: subscription.id }, key);
    const events = async () => (await hl.dataSource.query(`select count(*)::int as n from webhook_events where tenant_id = $1`, [tenantId]))[0].n;
    const before = await events();
    const error = await hl.services.webhooks
      .triggerEvent({ tenantId: tenantId as never, event: 'test.event', data: { n: 1 }, subscriptionId: subscription.id })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'NOT_FOUND' });
    expect(await events()).toBe(before);
  });

  it('matches exact names, prefix.* patterns and *', async () => {
    const exact = await receiverWith();
    const prefix = await receiverWith();
    const all = await receiverWith();
    const other = await receiverWith();
    const tenant = await hl.createTenant('Patterns');
    for (const [r, events] of [[exact, ['sales_order.created']], [prefix, ['sales_order.*']], [all, ['*']], [other, ['invoice.*']]] as const) {
      await hl.gql(CREATE, { input: { url: r.url, events } }, tenant.apiKey);
    }
    const result = await trigger(
      { event: 'sales_order.created', data: { order_id: 'so-001', customer_id: 'cust-789', amount: '2500.00', items_count: 5, created_at: '2024-02-14T13:00:00' } },
      tenant.apiKey,
    );
    expect(result.deliveries).toHaveLength(3);
    await Promise.all([exact.waitFor(1), prefix.waitFor(1), all.waitFor(1)]);
    expect(other.received).toHaveLength(0);
  });

  it('refuses data that does not match the schema, unknown events and oversized data, writing nothing', async () => {
    const before = await hl.dataSource.query('select (select count(*) from webhook_events)::int as e, (select count(*) from webhook_deliveries)::int as d');
    const missing = await hl.gql(TRIGGER, { input: { event: 'invoice.created', data: { amount: 10 } } }, key);
    expect(missing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(missing.errors?.[0]?.message).toContain('customer');
    const unknown = await hl.gql(TRIGGER, { input: { event: 'invoice.vanished', data: {} } }, key);
    expect(unknown.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
    const big = await hl.gql(TRIGGER, { input: { event: 'test.event', data: { blob: 'x'.repeat(300 * 1024) } } }, key);
    expect(big.errors?.[0]?.extensions?.code).toBe('PAYLOAD_TOO_LARGE');
    const after = await hl.dataSource.query('select (select count(*) from webhook_events)::int as e, (select count(*) from webhook_deliveries)::int as d');
    expect(after).toEqual(before);
  });
});

describe('reading deliveries', () => {
  it('keeps the first 4 KiB of an answer', async () => {
    const receiver = await receiverWith(() => ({ status: 500, body: 'é'.repeat(5_000) }));
    await subscribe(receiver.url);
    const { deliveries } = await trigger({ event: 'invoice.created', data: INVOICE });
    await receiver.waitFor(1);
    const delivery = await eventually(async () => {
      const d = await deliveryOf(deliveries[0].id);
      return d.attemptLog.length ? d : undefined;
    });
    expect(Buffer.byteLength(delivery.attemptLog[0].responseBody)).toBeLessThanOrEqual(4096);
    expect(Buffer.byteLength(delivery.attemptLog[0].responseBody)).toBeGreaterThan(4090);
  });

  it('lists deliveries newest first, page by page, filtered by event, status and subscription', async () => {
    const receiver = await receiverWith();
    const first = await subscribe(receiver.url, ['invoice.*']);
    const second = await subscribe(receiver.url, ['payment.received']);
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.push((await trigger({ event: 'invoice.sent', data: { invoice_id: `i${i}`, invoice_number: 'n', sent_at: 't' } })).deliveries[0].id);
    const payment = (await trigger({
      event: 'payment.received',
      data: { payment_id: 'p', invoice_id: 'i', amount: 1, method: 'cash', reference: 'r', received_at: 't' },
    })).deliveries[0].id;
    await receiver.waitFor(6);
    const LIST = `query($first: Int, $after: String, $event: String, $status: DeliveryStatus, $subscriptionId: ID) {
      deliveries(first: $first, after: $after, event: $event, status: $status, subscriptionId: $subscriptionId) {
        edges { cursor node { id event status } } pageInfo { hasNextPage endCursor } } }`;
    const seen: string[] = [];
    let after: string | null = null;
    for (let page = 0; page < 3; page++) {
      const res: any = await hl.gql(LIST, { first: 2, after, event: 'invoice.sent' }, key);
      seen.push(...res.data.deliveries.edges.map((e: any) => e.node.id));
      after = res.data.deliveries.pageInfo.endCursor;
      expect(res.data.deliveries.pageInfo.hasNextPage).toBe(page < 2);
    }
    expect(seen).toEqual([...made].reverse());
    const bySubscription = await hl.gql(LIST, { subscriptionId: second.subscription.id }, key);
    expect(bySubscription.data.deliveries.edges.map((e: any) => e.node.id)).toEqual([payment]);
    const byFirst = await hl.gql(LIST, { subscriptionId: first.subscription.id, first: 10 }, key);
    expect(byFirst.data.deliveries.edges).toHaveLength(5);
    await eventually(async () => {
      const delivered = await hl.gql(LIST, { status: 'DELIVERED', first: 10 }, key);
      return delivered.data.deliveries.edges.length === 6;
    });
    const pending = await hl.gql(LIST, { status: 'PENDING' }, key);
    expect(pending.data.deliveries.edges).toEqual([]);
  });

  it('lists one event\'s deliveries page by page (eventId), refuses what is no id, and first with last', async () => {
    const receiver = await receiverWith();
    const subscriptions = [];
    for (let i = 0; i < 3; i++) subscriptions.push((await subscribe(receiver.url, ['invoice.created'])).subscription.id);
    const event = await trigger({ event: 'invoice.created', data: INVOICE });
    const other = await trigger({ event: 'invoice.created', data: INVOICE });
    expect(event.deliveries).toHaveLength(3);
    const LIST = `query($first: Int, $last: Int, $after: String, $eventId: ID, $subscriptionId: ID) {
      deliveries(first: $first, last: $last, after: $after, eventId: $eventId, subscriptionId: $subscriptionId) {
        edges { node { id webhookEvent { id } } } pageInfo { hasNextPage endCursor } } }`;
    const seen: string[] = [];
    let after: string | null = null;
    do {
      const res: any = await hl.gql(LIST, { first: 2, after, eventId: event.event.id }, key);
      expect(res.errors).toBeUndefined();
      for (const { node } of res.data.deliveries.edges) {
        expect(node.webhookEvent.id).toBe(event.event.id);
        seen.push(node.id);
      }
      after = res.data.deliveries.pageInfo.hasNextPage ? res.data.deliveries.pageInfo.endCursor : null;
    } while (after);
    expect(seen.sort()).toEqual(event.deliveries.map((d: any) => d.id).sort());
    expect(seen).not.toContain(other.deliveries[0].id);
    // Another tenant's event: nothing of it.
    const stranger = await hl.createTenant();
    expect((await hl.gql(LIST, { eventId: event.event.id }, stranger.apiKey)).data.deliveries.edges).toEqual([]);

    for (const field of ['eventId', 'subscriptionId']) {
      const res = await hl.gql(LIST, { [field]: 'zzz' }, key);
      expect(res.errors?.[0]?.extensions, field).toMatchObject({ code: 'BAD_USER_INPUT', field });
      expect(res.errors?.[0]?.message).toContain(`${field}: is not an id Hookline gives (a UUID)`);
    }
    // Both a forward and a backward size: one would be passed over.
    const both = await hl.gql(LIST, { first: 2, last: 1 }, key);
    expect(both.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'last' });
    expect(both.data?.deliveries ?? null).toBeNull();
  });
});

describe('idempotency', () => {
  it('20 concurrent identical calls make one event; the others are duplicates', async () => {
    const receiver = await receiverWith();
    const tenant = await hl.createTenant('Idem');
    await hl.gql(CREATE, { input: { url: receiver.url, events: ['invoice.created'] } }, tenant.apiKey);
    const input = { event: 'invoice.created', data: INVOICE, idempotencyKey: 'inv-123-created' };
    const results = await Promise.all(Array.from({ length: 20 }, () => trigger(input, tenant.apiKey)));
    expect(new Set(results.map((r) => r.event.id)).size).toBe(1);
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(new Set(results.map((r) => r.deliveries[0].id)).size).toBe(1);
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [tenant.id]);
    expect(n).toBe(1);
    await receiver.waitFor(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(receiver.received).toHaveLength(1);
  });

  it("answers an event's deliveries in one order: the first answer, a duplicate's and the event's own list", async () => {
    const tenant = await hl.createTenant('Ordered');
    for (let i = 0; i < 6; i++) await hl.gql(CREATE, { input: { url: `http://127.0.0.1:9/hook-${i}`, events: ['invoice.created'] } }, tenant.apiKey);
    const input = { event: 'invoice.created', data: INVOICE, idempotencyKey: 'ordered-1' };
    const ids = (r: { deliveries: Array<{ id: string }> }) => r.deliveries.map((d) => d.id);
    const first = await trigger(input, tenant.apiKey);
    const again = await trigger(input, tenant.apiKey);
    expect(again.duplicate).toBe(true);
    expect(ids(first)).toHaveLength(6);
    expect(ids(again)).toEqual(ids(first));
    const listed = await hl.gql('query($id: ID!) { webhookEvent(id: $id) { deliveries { id } } }', { id: first.event.id }, tenant.apiKey);
    expect(ids(listed.data.webhookEvent)).toEqual(ids(first));
    // Without a key too (a batched insert).
    const batched = await trigger({ event: 'invoice.created', data: INVOICE }, tenant.apiKey);
    const batchedListed = await hl.gql('query($id: ID!) { webhookEvent(id: $id) { deliveries { id } } }', { id: batched.event.id }, tenant.apiKey);
    expect(ids(batched)).toEqual(ids(batchedListed.data.webhookEvent));
  });
});
