// Group commit: concurrent triggerEvent calls of one tenant share a
// transaction, each still gets exactly its own event and deliveries, and one
// event that cannot be written does not take the others down with it.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TenantId } from '../../src/db/tenant-scope.js';
import { IngestBatcher } from '../../src/webhooks/ingest-batcher.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';

/** An event ready for the batcher, as triggerEvent prepares it. */
const batchItem = (id: string = randomUUID()) => ({
  id,
  event: 'invoice.created',
  resourceType: 'invoice',
  resourceId: null,
  dataJson: '{"amount":1,"customer":"c"}',
  body: '{}',
  createdAt: new Date(),
});

let hl: TestHookline;
let tenant: { id: string; apiKey: string };
let subscriptions: string[];

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  tenant = await hl.createTenant();
  subscriptions = [];
  for (const events of [['invoice.*'], ['payment.received'], ['*']]) {
    const res = await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }', {
      input: { url: 'http://127.0.0.1:9/hook', events },
    }, tenant.apiKey);
    subscriptions.push(res.data.createWebhookSubscription.subscription.id);
  }
});
afterAll(() => hl?.stop());

it('50 concurrent calls: each its own event and deliveries, written in fewer transactions', async () => {
  const calls = Array.from({ length: 50 }, (_, i) =>
    i % 2
      ? { event: 'invoice.created', data: { amount: i, customer: `c${i}` } }
      : { event: 'payment.received', data: { payment_id: `p${i}`, invoice_id: 'i', amount: i, method: 'cash', reference: 'r', received_at: 'now' } },
  );
  const results = await Promise.all(
    calls.map((input) =>
      hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id event data } deliveries { id subscription { id } } } }', { input }, tenant.apiKey),
    ),
  );
  results.forEach((res, i) => {
    expect(res.errors).toBeUndefined();
    const { event, deliveries } = res.data.triggerEvent;
    expect(event).toMatchObject({ event: calls[i]!.event, data: calls[i]!.data });
    // invoice.* and * for invoices; payment.received and * for payments.
    const expected = i % 2 ? [subscriptions[0], subscriptions[2]] : [subscriptions[1], subscriptions[2]];
    expect(deliveries.map((d: any) => d.subscription.id).sort()).toEqual([...expected].sort());
  });
  const rows = await hl.dataSource.query(
    `select e.id, e.event, e.data, count(d.id)::int as deliveries, e.xmin::text as tx
       from webhook_events e left join webhook_deliveries d on d.event_id = e.id
      where e.tenant_id = $1 group by e.id`,
    [tenant.id],
  );
  expect(rows).toHaveLength(50);
  expect(rows.every((r: any) => r.deliveries === 2)).toBe(true);
  const ids = new Set(results.map((r) => r.data.triggerEvent.event.id));
  expect(new Set(rows.map((r: any) => r.id))).toEqual(ids);
  // Events written by one transaction share its xmin: fewer transactions than events.
  expect(new Set(rows.map((r: any) => r.tx)).size).toBeLessThan(50);
});

it('an event that cannot be written fails alone; the rest of its batch is written', async () => {
  const batcher = new IngestBatcher(hl.dataSource, { tenantSessions: true });
  const [first, bad, other] = await Promise.allSettled([
    batcher.add(tenant.id as TenantId, batchItem()),
    batcher.add(tenant.id as TenantId, { ...batchItem(), dataJson: '{not json' }), // PostgreSQL refuses this one
    batcher.add(tenant.id as TenantId, batchItem()),
  ]);
  expect(first.status).toBe('fulfilled');
  expect(other.status).toBe('fulfilled');
  expect(bad.status).toBe('rejected');
  expect((first as PromiseFulfilledResult<unknown[]>).value).toHaveLength(2);
  await batcher.close();
});

it('an event found written already (its answer lost with the connection) is answered, not written twice', async () => {
  const batcher = new IngestBatcher(hl.dataSource, { tenantSessions: true });
  const id = randomUUID();
  const written = await batcher.add(tenant.id as TenantId, batchItem(id));
  // The same event again, in a batch with another: as the retry of a batch whose commit went through.
  const [again, other] = await Promise.all([batcher.add(tenant.id as TenantId, batchItem(id)), batcher.add(tenant.id as TenantId, batchItem())]);
  const ids = (rows: Array<{ id: string }>) => rows.map((r) => r.id).sort();
  expect(ids(again)).toEqual(ids(written));
  expect(other).toHaveLength(2);
  const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_deliveries where event_id = $1', [id]);
  expect(n).toBe(2);
  await batcher.close();
});

it('writes on tenant-bound connections that never write another tenant\'s rows', async () => {
  const other = await hl.createTenant('Other');
  const batcher = new IngestBatcher(hl.dataSource, { tenantSessions: true });
  // Alternating tenants on the same few connections: each write is as its own tenant.
  for (let i = 0; i < 6; i++) {
    const tenantId = (i % 2 ? other.id : tenant.id) as TenantId;
    const written = batchItem();
    await batcher.add(tenantId, written);
    const [row] = await hl.dataSource.query('select tenant_id from webhook_events where id = $1', [written.id]);
    expect(row.tenant_id).toBe(tenantId);
  }
  await batcher.close();
});

it('goes on after its tenant-bound connections are cut (as by a database restart)', async () => {
  const trigger = () =>
    hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } } }', {
      input: { event: 'test.event', data: { n: 1 } },
    }, tenant.apiKey);
  expect((await trigger()).errors).toBeUndefined();
  const cut = await hl.dataSource.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-ingest' and datname = current_database()`,
  );
  expect(cut.length).toBeGreaterThan(0);
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 3; i++) expect((await trigger()).errors).toBeUndefined();
});

it('refuses data PostgreSQL cannot store (a NUL character) as BAD_USER_INPUT', async () => {
  const res = await hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate } }', {
    input: { event: 'test.event', data: { text: 'a\u0000b' } },
  }, tenant.apiKey);
  expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
});

it('counts each accepted event in hookline_events_triggered_total, a duplicate not', async () => {
  const before = await hl.metric('hookline_events_triggered_total');
  const trigger = (input: Record<string, unknown>) =>
    hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate } }', { input }, tenant.apiKey);
  const data = { amount: 1, customer: 'c' };
  const results = [
    await trigger({ event: 'invoice.created', data }),
    await trigger({ event: 'invoice.created', data, idempotencyKey: 'metric-key' }),
    await trigger({ event: 'invoice.created', data, idempotencyKey: 'metric-key' }),
  ];
  expect(results.map((r) => r.data.triggerEvent.duplicate)).toEqual([false, false, true]);
  expect(await hl.metric('hookline_events_triggered_total')).toBe(before + 2);
});
