// The transactional outbox from a caller's point of view (the guide's
// "Método 2"): the business row and its webhooks commit or roll back together.
import 'reflect-metadata';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { DataSource, type EntityManager } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HooklineError, hooklineEntities, hooklineMigrations, WebhookFormatter, WebhookService } from '../../src/index.js';
import { poolOf } from '../../src/db/query.js';
import { lockWaiters } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs, moreSubscribers } from '../helpers/live.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const ROOT = resolve(import.meta.dirname, '../..');
const run = promisify(execFile);
let hl: TestHookline;
let receiver: Receiver;
let erp: DataSource;
let tenant: { id: string; apiKey: string };
let webhooks: WebhookService;

beforeAll(async () => {
  hl = await startTestHookline();
  receiver = await startReceiver();
  tenant = await hl.createTenant('ERP');
  await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['invoice.*'] },
  }, tenant.apiKey);
  // The ERP's own DataSource, with Hookline's entities and migrations beside its own.
  erp = new DataSource({ type: 'postgres', url: hl.databaseUrl, entities: hooklineEntities, migrations: hooklineMigrations, migrationsTableName: 'hookline_migrations' });
  await erp.initialize();
  expect(await erp.showMigrations()).toBe(false); // already applied by the service
  await erp.query('create table invoices (id serial primary key, tenant_id uuid not null, number text not null, total numeric not null)');
  webhooks = new WebhookService(erp);
});
afterAll(async () => {
  await erp?.destroy();
  await hl?.stop();
  await receiver?.close();
});

async function createInvoice(number: string, fail: boolean) {
  return erp.transaction(async (manager) => {
    const [invoice] = await manager.query('insert into invoices (tenant_id, number, total) values ($1, $2, 1500) returning id', [tenant.id, number]);
    const result = await webhooks.triggerEvent(
      {
        tenantId: tenant.id,
        event: 'invoice.created',
        resourceType: 'invoice',
        resourceId: String(invoice.id),
        data: { invoice_number: number, amount: '1500.00', currency: 'USD', customer: 'Acme Corp', status: 'draft' },
      },
      manager,
    );
    // The caller's transaction goes on as the caller (the tenant role was only for Hookline's writes).
    const [{ role, tenant: scoped }] = await manager.query(
      `select current_setting('role') as role, current_setting('hookline.tenant_id', true) as tenant`,
    );
    expect(role).toBe('none');
    expect(scoped ?? '').toBe('');
    if (fail) throw new Error('the ERP failed after triggering');
    return result;
  });
}

it('a rolled-back transaction leaves no invoice, no event and no delivery', async () => {
  await expect(createInvoice('001-001-000000001', true)).rejects.toThrow('the ERP failed');
  const [counts] = await erp.query(
    `select (select count(*) from invoices)::int as invoices, (select count(*) from webhook_events)::int as events,
            (select count(*) from webhook_deliveries)::int as deliveries`,
  );
  expect(counts).toEqual({ invoices: 0, events: 0, deliveries: 0 });
  await new Promise((r) => setTimeout(r, 300));
  expect(receiver.received).toHaveLength(0);
});

it('a committed transaction is delivered', async () => {
  const result = await createInvoice('001-001-000000002', false);
  expect(result.deliveries).toHaveLength(1);
  const [request] = await receiver.waitFor(1);
  const body = JSON.parse(request!.body);
  expect(body).toMatchObject({ event: 'invoice.created', resource_type: 'invoice', tenant_id: tenant.id, data: { invoice_number: '001-001-000000002' } });
  await eventually(async () => {
    const [row] = await erp.query('select status from webhook_deliveries where id = $1', [result.deliveries[0]!.id]);
    return row.status === 'DELIVERED';
  });
});

it("joins a transaction begun with the caller's own BEGIN: a ROLLBACK after it undoes the event with the invoice, a COMMIT sends it (with a pg that tells the transaction's state, and one too old to)", async () => {
  for (const [end, pgTells] of [['rollback', true], ['commit', true], ['rollback', false], ['commit', false]] as const) {
    const runner = erp.createQueryRunner();
    await runner.connect();
    // pg before 8.21 has no getTransactionStatus(): the server is asked.
    if (!pgTells) Object.defineProperty((runner as any).databaseConnection, 'getTransactionStatus', { value: undefined, configurable: true });
    try {
      await runner.query('BEGIN');
      const number = `raw-${end}-${pgTells ? 'told' : 'asked'}`;
      const [invoice] = await runner.query('insert into invoices (tenant_id, number, total) values ($1, $2, 1) returning id', [tenant.id, number]);
      const result = await webhooks.triggerEvent(
        { tenantId: tenant.id, event: 'invoice.created', resourceType: 'invoice', resourceId: String(invoice.id), data: { invoice_number: number, amount: '1.00', currency: 'USD', customer: 'Acme Corp', status: 'draft' } },
        runner.manager,
      );
      // Still the caller's transaction, as the caller.
      const [{ role, status }] = await runner.query(`select current_setting('role') as role, now() = statement_timestamp() as status`);
      expect(role).toBe('none');
      expect(status, 'a transaction of its own was committed half-way through the caller\'s').toBe(false);
      await runner.query(end.toUpperCase());
      const [counts] = await erp.query(
        `select (select count(*) from invoices where number = $1)::int as invoices, (select count(*) from webhook_events where id = $2)::int as events`,
        [number, result.event.id],
      );
      expect(counts, number).toEqual(end === 'rollback' ? { invoices: 0, events: 0 } : { invoices: 1, events: 1 });
    } finally {
      if (!pgTells) delete (runner as any).databaseConnection.getTransactionStatus;
      await runner.release();
    }
  }
  await eventually(() => ['raw-commit-told', 'raw-commit-asked'].every((n) => receiver.received.some((r) => r.body.includes(n))));
  await new Promise((r) => setTimeout(r, 300));
  expect(receiver.received.filter((r) => r.body.includes('raw-rollback'))).toHaveLength(0);
});

it('outside any transaction, with a pg too old to tell, writes in a transaction of its own on the caller\'s runner, which stays out of one', async () => {
  const runner = erp.createQueryRunner();
  await runner.connect();
  Object.defineProperty((runner as any).databaseConnection, 'getTransactionStatus', { value: undefined, configurable: true });
  try {
    const result = await webhooks.triggerEvent(
      { tenantId: tenant.id, event: 'invoice.created', data: { invoice_number: 'no-transaction', amount: '1.00', customer: 'Acme Corp' } },
      runner.manager,
    );
    const [{ n }] = await erp.query('select count(*)::int as n from webhook_events where id = $1', [result.event.id]);
    expect(n).toBe(1); // committed, seen from another connection
    const [{ outside }] = await runner.query('select now() = statement_timestamp() as outside');
    expect(outside).toBe(true);
  } finally {
    delete (runner as any).databaseConnection.getTransactionStatus;
    await runner.release();
  }
});

it("a change of a subscription that waited for the transaction applies to its delivery: no dispatcher begins it before the change is done", async () => {
  // updateWebhookSubscription waits for the transaction's lock on the subscription. The
  // dispatcher, woken by the commit, began the attempt to the old address before the change,
  // which took the row as the transaction committed, could apply (three times in three, in a review).
  const target = await startReceiver();
  const moving = await hl.createTenant('Moving');
  const created = await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }', {
    input: { url: `${target.url}/old`, events: ['invoice.*'] },
  }, moving.apiKey);
  const id = created.data.createWebhookSubscription.subscription.id;
  try {
    for (const round of [1, 2, 3]) {
      let changing: Promise<any> | undefined;
      await erp.transaction(async (manager) => {
        await webhooks.triggerEvent({ tenantId: moving.id, event: 'invoice.created', data: { amount: `${round}.00`, customer: 'Acme Corp' } }, manager);
        changing = hl.gql('mutation($id: ID!, $url: String!) { updateWebhookSubscription(id: $id, input: { url: $url }) { url } }', { id, url: `${target.url}/new${round}` }, moving.apiKey);
        // Until the change waits for this transaction.
        await eventually(async () => (await lockWaiters(poolOf(erp))).length === 1);
      });
      expect((await changing!).data.updateWebhookSubscription.url).toBe(`${target.url}/new${round}`);
      await eventually(async () => target.received.length === round);
      await new Promise((r) => setTimeout(r, 100));
      expect(target.received.map((r) => r.path)).toEqual([1, 2, 3].slice(0, round).map((n) => `/new${n}`));
    }
  } finally {
    await target.close();
  }
});

it("a delivery the dispatcher passed by while a change held its subscription is claimed as the change commits, not at the next poll", async () => {
  // Two subscriptions; a change of one waits for the transaction. The claim woken by the commit
  // takes the other's delivery and passes this one by; it is claimed again once the change
  // commits (the poll here every 30 s: before, it waited for the poll, a second by default).
  const own = await startTestHookline({}, { dispatcher: { pollIntervalMs: 30_000 } });
  const app = new DataSource({ type: 'postgres', url: own.databaseUrl, entities: hooklineEntities });
  await app.initialize();
  const target = await startReceiver();
  try {
    const tenant = await own.createTenant('Two');
    const ids: string[] = [];
    for (const path of ['/changed', '/other']) {
      const res = await own.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }', {
        input: { url: `${target.url}${path}`, events: ['invoice.*'] },
      }, tenant.apiKey);
      ids.push(res.data.createWebhookSubscription.subscription.id);
    }
    let changing: Promise<any> | undefined;
    await app.transaction(async (manager) => {
      await new WebhookService(app).triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data: { amount: '1.00', customer: 'Acme Corp' } }, manager);
      changing = own.gql('mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { description: "changed" }) { id } }', { id: ids[0] }, tenant.apiKey);
      await eventually(async () => (await lockWaiters(poolOf(app))).length === 1);
    });
    expect((await changing!).errors).toBeUndefined();
    await eventually(async () => target.received.length === 2, 10_000);
    expect(target.received.map((r) => r.path).sort()).toEqual(['/changed', '/other']);
  } finally {
    await target.close();
    await app.destroy();
    await own.stop();
  }
});

it('formats the envelope of the contract', () => {
  const envelope = WebhookFormatter.formatEventPayload({
    id: 'evt-1',
    event: 'invoice.created',
    resourceType: 'invoice',
    resourceId: 'inv-123',
    tenantId: 't-1',
    data: { amount: '1500.00' },
    timestamp: new Date('2024-02-14T10:30:00.000Z'),
  });
  expect(JSON.stringify(envelope)).toBe(
    '{"id":"evt-1","event":"invoice.created","resource_type":"invoice","resource_id":"inv-123","tenant_id":"t-1","timestamp":"2024-02-14T10:30:00.000Z","data":{"amount":"1500.00"}}',
  );
});

it('gives the envelope an id of its own when none is given, as the guide\'s format_event_payload is called', () => {
  const input = { event: 'invoice.created', resourceType: 'invoice', resourceId: 'inv-1', tenantId: 't-1', data: { amount: '1.00' } };
  const [a, b] = [WebhookFormatter.formatEventPayload(input), WebhookFormatter.formatEventPayload(input)];
  expect(a.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(b.id).not.toBe(a.id);
  expect(Object.keys(a)).toEqual(['id', 'event', 'resource_type', 'resource_id', 'tenant_id', 'timestamp', 'data']);
});

it('takes the default resource_id from data only as a given one could be: at most 200 characters, not blank, or a whole number', () => {
  const id = (data: Record<string, unknown>) => WebhookFormatter.formatEventPayload({ event: 'invoice.created', tenantId: 't', data }).resource_id;
  expect(id({ invoice_id: 'inv-1', id: 'other' })).toBe('inv-1');
  expect(id({ invoice_id: null, id: 'other' })).toBe('other');
  expect(id({ id: 'ñ'.repeat(200) })).toBe('ñ'.repeat(200));
  expect(id({ id: 42 })).toBe('42');
  // Not another key's (another thing's id) when the resource's own is no id.
  expect(id({ invoice_id: 'x'.repeat(201), id: 'short' })).toBeNull();
  expect(id({ invoice_id: 1.5, id: 'short' })).toBeNull();
  expect(id({ id: 'x'.repeat(300) })).toBeNull();
  expect(id({ id: '' })).toBeNull();
  expect(id({ id: '   ' })).toBeNull();
  expect(id({ id: 2 ** 53 })).toBeNull();
});

it('splices already serialised data into exactly the bytes serialize() makes', () => {
  for (const data of [{}, { amount: '1500.00', customer: 'Acme' }, { nested: { list: [1, 'ñ', null, { deep: true }] }, emoji: '✓', quote: '"}' }]) {
    const envelope = WebhookFormatter.formatEventPayload({ id: 'e', event: 'test.event', tenantId: 't', data, timestamp: new Date(0) });
    expect(WebhookFormatter.serializeWithData({ ...envelope, data: {} }, JSON.stringify(data))).toBe(WebhookFormatter.serialize(envelope));
  }
});

describe('formatEventPayload, for library users', () => {
  // An app that formats the envelope itself (the guide's Método 1) must get what the dispatcher
  // sends for the same event: a numeric resourceId as text, the defaults, the contract's timestamp.
  async function sentFor(input: Parameters<WebhookService['triggerEvent']>[0], inTransaction: boolean) {
    const result = inTransaction ? await erp.transaction((manager) => webhooks.triggerEvent(input, manager)) : await webhooks.triggerEvent(input);
    const request = await eventually(() => receiver.received.find((r) => JSON.parse(r.body).id === result.event.id));
    return { event: result.event, body: request.body };
  }

  it('makes, byte for byte, the body the receiver gets for the same event, in a transaction or not', async () => {
    const data = { invoice_id: 'inv-77', amount: '1500.00', customer: 'Acme Corp' };
    const cases = [
      // The guide passes `resource_id=invoice.id`, a number.
      { input: { tenantId: tenant.id, event: 'invoice.created', resourceType: 'invoice', resourceId: 123, data }, inTransaction: true },
      // No resource fields: the event's prefix, and data.invoice_id.
      { input: { tenantId: tenant.id, event: 'invoice.created', data }, inTransaction: false },
      // data.id when there is no data.test_id; a number, as text.
      { input: { tenantId: tenant.id, event: 'test.event', data: { id: 42 } }, inTransaction: true },
    ];
    await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
      input: { url: receiver.url, events: ['test.event'] },
    }, tenant.apiKey);
    for (const { input, inTransaction } of cases) {
      const { event, body } = await sentFor(input, inTransaction);
      const formatted = WebhookFormatter.formatEventPayload({ ...input, id: event.id, timestamp: event.createdAt });
      expect(WebhookFormatter.serialize(formatted)).toBe(body);
      // The timestamp as the receiver read it gives the same bytes.
      expect(WebhookFormatter.serialize(WebhookFormatter.formatEventPayload({ ...input, id: event.id, timestamp: JSON.parse(body).timestamp }))).toBe(body);
    }
    expect(JSON.parse((await sentFor(cases[0]!.input, true)).body)).toMatchObject({ resource_type: 'invoice', resource_id: '123' });
  });

  it("refuses a field it does not know (the guide's snake_case, from JavaScript), naming it, and a missing tenantId", async () => {
    const refusal = (call: () => unknown) => {
      try {
        call();
      } catch (error) {
        return { code: (error as HooklineError).code, field: (error as HooklineError).field, message: (error as Error).message };
      }
      return undefined;
    };
    const snake = { event: 'invoice.created', resource_id: 123, tenant_id: tenant.id, data: { amount: 1 } } as never;
    expect(refusal(() => WebhookFormatter.formatEventPayload(snake))).toEqual({
      code: 'BAD_USER_INPUT',
      field: 'resource_id',
      message: expect.stringContaining('did you mean resourceId?'),
    });
    expect(refusal(() => WebhookFormatter.formatEventPayload({ event: 'invoice.created', data: {} } as never))).toMatchObject({ field: 'tenantId' });
    // triggerEvent alike, before anything is written.
    const [{ n: before }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [tenant.id]);
    await expect(webhooks.triggerEvent({ tenantId: tenant.id, event: 'test.event', data: {}, idempotency_key: 'k' } as never)).rejects.toMatchObject({
      code: 'BAD_USER_INPUT',
      field: 'idempotency_key',
      message: expect.stringContaining('did you mean idempotencyKey?'),
    });
    const [{ n: after }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [tenant.id]);
    expect(after).toBe(before);
  });

  it('writes a resource id given as a number as its text, and the defaults when none is given', () => {
    const base = { id: 'evt-1', tenantId: 't-1', timestamp: new Date(0) };
    const numbered = WebhookFormatter.formatEventPayload({ ...base, event: 'invoice.created', resourceType: 'invoice', resourceId: 123, data: {} });
    expect(numbered).toMatchObject({ resource_type: 'invoice', resource_id: '123' });
    const defaulted = WebhookFormatter.formatEventPayload({ ...base, event: 'payment.received', data: { payment_id: 9, id: 'other' } });
    expect(defaulted).toMatchObject({ resource_type: 'payment', resource_id: '9' });
    // The guide's sales orders carry `order_id`: a type of several words is named by its last too.
    const order = (data: Record<string, unknown>) => WebhookFormatter.formatEventPayload({ ...base, event: 'sales_order.created', data }).resource_id;
    expect(order({ order_id: 'so-001', customer: 'Acme Corp', total: 500 })).toBe('so-001');
    expect(order({ sales_order_id: 'so-2', order_id: 'so-001', id: 'x' })).toBe('so-2');
    expect(order({ order_id: null, id: 'x' })).toBe('x');
    const none = WebhookFormatter.formatEventPayload({ ...base, event: 'test.event', data: { name: 'x' } });
    expect(none).toMatchObject({ resource_type: 'test', resource_id: null });
    // Data of an interface type, as triggerEvent takes it (a type check: this file is compiled by tsc).
    interface PaymentData {
      payment_id: string;
      amount: string;
    }
    const payment: PaymentData = { payment_id: 'pay-1', amount: '10.00' };
    expect(WebhookFormatter.formatEventPayload({ ...base, event: 'payment.received', data: payment })).toMatchObject({ resource_id: 'pay-1', data: payment });
    // What triggerEvent refuses, refused alike.
    for (const resourceId of [1.5, 2 ** 53, '']) {
      expect(() => WebhookFormatter.formatEventPayload({ ...base, event: 'invoice.created', resourceId, data: {} })).toThrow(
        expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'resourceId' }),
      );
    }
  });

  it('refuses what triggerEvent refuses: an event name that is none, data that is no object', () => {
    const base = { id: 'e', tenantId: 't', timestamp: new Date(0) };
    // From JavaScript: none at all, or no text.
    for (const event of ['foo', '', 'Invoice.Created', undefined, 42, null]) {
      expect(() => WebhookFormatter.formatEventPayload({ ...base, event: event as string, data: {} })).toThrow(expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'event' }));
    }
    for (const data of [null, undefined, [], 'text']) {
      expect(() => WebhookFormatter.formatEventPayload({ ...base, event: 'test.event', data: data as any })).toThrow(
        expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'data' }),
      );
    }
  });

  it('writes a timestamp given as text in the contract\'s form, a date and time without an offset as UTC, and refuses one that is no date', () => {
    const at = (timestamp: string) => WebhookFormatter.formatEventPayload({ id: 'e', event: 'test.event', tenantId: 't', data: {}, timestamp }).timestamp;
    const zone = process.env.TZ;
    process.env.TZ = 'America/Guayaquil'; // UTC-5: JavaScript alone would read 10:30 there as 15:30Z
    try {
      expect(at('2024-02-14T10:30:00')).toBe('2024-02-14T10:30:00.000Z');
      expect(at('2024-02-14T10:30:00.123456')).toBe('2024-02-14T10:30:00.123Z'); // Python's isoformat() with microseconds
      expect(at('2024-02-14T10:30:00Z')).toBe('2024-02-14T10:30:00.000Z');
      expect(at('2024-02-14T10:30:00+01:00')).toBe('2024-02-14T09:30:00.000Z');
      // ISO 8601's other usual forms: PostgreSQL's timestamptz text, strftime's %z, no seconds.
      expect(at('2024-02-14 10:30:00.123456+00')).toBe('2024-02-14T10:30:00.123Z');
      expect(at('2024-02-14T10:30:00+0100')).toBe('2024-02-14T09:30:00.000Z');
      expect(at('2024-02-14T10:30')).toBe('2024-02-14T10:30:00.000Z');
    } finally {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    }
    // No day that is not there (JavaScript moves February 30th into March), no other text
    // JavaScript reads as a date ("1" as 2001, a local time written another way).
    // Nor one that its offset takes out of the years 0001-9999 (toISOString() would write +010000-…).
    for (const timestamp of ['yesterday', '', '2024-13-45T10:30:00', '2024-02-30T10:00:00Z', '1', '2024/02/14 10:30:00', 'Feb 14 2024 10:30', '9999-12-31T23:59:59-01:00', '0001-01-01T00:00:00+01:00']) {
      expect(() => at(timestamp)).toThrow(expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'timestamp' }));
    }
    for (const timestamp of [new Date(Number.NaN), new Date('+010000-01-01T00:00:00Z')]) {
      expect(() => WebhookFormatter.formatEventPayload({ id: 'e', event: 'test.event', tenantId: 't', data: {}, timestamp })).toThrow(
        expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'timestamp' }),
      );
    }
  });
});

it('a repeat of an idempotency key the catalog would refuse waits for the first, still in its transaction, and gets its event', async () => {
  let commit!: () => void;
  const committing = new Promise<void>((r) => (commit = r));
  let eventId = '';
  const first = erp.transaction(async (manager) => {
    const result = await webhooks.triggerEvent(
      { tenantId: tenant.id, event: 'invoice.created', data: { amount: '10.00', customer: 'Acme' }, idempotencyKey: 'outbox-key-1' },
      manager,
    );
    eventId = result.event.id;
    await committing;
  });
  try {
    await eventually(() => eventId !== '');
    let answered = false;
    // The repeat's data would be refused (no amount): the key decides, once the first is known.
    const repeat = fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'invoice.created', payload: { customer: 'Acme' }, idempotency_key: 'outbox-key-1' }),
    }).then(async (res) => {
      answered = true;
      return { status: res.status, body: (await res.json()) as any };
    });
    await eventually(async () => {
      const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
      return n > 0; // the repeat waits for the first's key
    }, 10_000, 20);
    expect(answered).toBe(false);
    commit();
    await first;
    expect(await repeat).toMatchObject({ status: 202, body: { event_id: eventId, duplicate: true } });
  } finally {
    commit(); // whatever happened, the first's transaction ends
    await first;
  }
});

it('a refusal checked against an idempotency key leaves no savepoint open in the caller\'s transaction', async () => {
  await erp.transaction(async (manager) => {
    for (let i = 0; i < 3; i++) {
      const refused = await webhooks
        .triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data: { customer: 'Acme' }, idempotencyKey: `probe-${i}` }, manager)
        .catch((error: Error) => error);
      expect(refused).toMatchObject({ code: 'BAD_USER_INPUT' });
    }
    // Each probe wrote in a subtransaction of its own: none is left open to nest what follows
    // (as another session sees this one).
    const [{ pid }] = await manager.query('select pg_backend_pid() as pid');
    const [{ open }] = await hl.dataSource.query(`select s.subxact_count as open from pg_stat_get_backend_idset() as b(id), lateral pg_stat_get_backend_subxact(b.id) as s
        where pg_stat_get_backend_pid(b.id) = $1`, [pid]);
    expect(open).toBe(0);
  });
});

describe('an app\'s own DataSource', () => {
  it('of another copy of typeorm (a linked install, two copies hoisted) joins its transactions all the same', async () => {
    // A second copy of the package, as npm leaves one under a linked hookline: its classes are not Hookline's.
    const copy = resolve(ROOT, 'node_modules/.cache/hookline-test-second-typeorm/node_modules/typeorm');
    if (!existsSync(copy)) {
      mkdirSync(dirname(copy), { recursive: true });
      execFileSync('cp', ['-al', resolve(ROOT, 'node_modules/typeorm'), copy]);
    }
    const other = createRequire(join(copy, 'package.json'))(copy) as typeof import('typeorm');
    expect(other.DataSource).not.toBe(DataSource);
    const app = new other.DataSource({ type: 'postgres', url: hl.databaseUrl });
    await app.initialize();
    try {
      const result = await app.transaction((manager) =>
        new WebhookService(app as unknown as DataSource).triggerEvent(
          { tenantId: tenant.id, event: 'invoice.created', data: { invoice_id: 'inv-copy', amount: '1.00', customer: 'Acme Corp' } },
          manager as unknown as EntityManager,
        ),
      );
      expect(result.deliveries).toHaveLength(1);
      await eventually(() => receiver.received.find((r) => JSON.parse(r.body).id === result.event.id));
    } finally {
      await app.destroy();
    }
  });

  it('leaves Hookline\'s tables alone when it synchronizes its schema (or generates a migration)', async () => {
    const { upQueries } = await erp.driver.createSchemaBuilder().log();
    expect(upQueries.map((q) => q.query)).toEqual([]);
  });

  it('without a manager, writes on the app\'s own pool, opening no connections of Hookline\'s (a pool of one will do)', async () => {
    const app = new DataSource({ type: 'postgres', url: hl.databaseUrl, extra: { max: 1 } });
    await app.initialize();
    const ingestConnections = async () => {
      const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'hookline-ingest'`);
      return n as number;
    };
    try {
      const before = await ingestConnections();
      const service = new WebhookService(app);
      const results = await Promise.all(
        [1, 2, 3].map((n) => service.triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data: { invoice_id: `inv-pool-${n}`, amount: '1', customer: 'Acme' } })),
      );
      expect(results.map((r) => r.deliveries.length)).toEqual([1, 1, 1]);
      expect(await ingestConnections()).toBe(before);
    } finally {
      await app.destroy();
    }
  });

  it('without a manager, connects as the app\'s DataSource does (given by fields or by a URL) and keeps no process alive', async () => {
    const url = new URL(hl.databaseUrl);
    // Inside the checkout (under node_modules/.cache), so that its imports find the packages.
    mkdirSync(join(ROOT, 'node_modules/.cache'), { recursive: true });
    const script = join(await mkdtemp(join(ROOT, 'node_modules/.cache/hookline-test-app-')), 'app.mts');
    await writeFile(
      script,
      `import 'reflect-metadata';
       import { DataSource } from 'typeorm';
       import { WebhookService } from ${JSON.stringify(join(ROOT, 'src/index.ts'))};
       const app = new DataSource({ type: 'postgres', host: ${JSON.stringify(url.hostname)}, port: ${Number(url.port)},
         username: ${JSON.stringify(decodeURIComponent(url.username))}, password: ${JSON.stringify(decodeURIComponent(url.password))},
         database: ${JSON.stringify(url.pathname.slice(1))} });
       const byUrl = new DataSource({ type: 'postgres', url: ${JSON.stringify(hl.databaseUrl)} });
       for (const source of [app, byUrl]) {
         await source.initialize();
         const { event } = await new WebhookService(source).triggerEvent({ tenantId: ${JSON.stringify(tenant.id)}, event: 'invoice.created',
           data: { invoice_id: 'inv-fields', amount: '1', customer: 'Acme' } });
         await source.destroy(); // and nothing else: the process ends by itself
         console.log(event.id);
       }`,
    );
    const started = Date.now();
    const { stdout } = await run(join(ROOT, 'node_modules/.bin/tsx'), [script], { cwd: ROOT, timeout: 30_000 });
    const elapsed = Date.now() - started;
    const ids = stdout.trim().split('\n');
    expect(ids).toHaveLength(2);
    const [{ n }] = await erp.query('select count(*)::int as n from webhook_events where id = any($1::uuid[])', [ids]);
    expect(n).toBe(2);
    expect(elapsed).toBeLessThan(8_000); // an idle pool kept open holds a process 10 s more
  });

  it('in a REPEATABLE READ transaction, fails with 40001 for a key another transaction committed since its snapshot, and a retry gets duplicate: true (as the README says)', async () => {
    const data = { invoice_id: 'inv-rr-key', amount: '4.00', customer: 'Acme Corp' };
    const call = (manager?: EntityManager) => webhooks.triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data, idempotencyKey: 'rr-key' }, manager);
    const runner = erp.createQueryRunner();
    await runner.connect();
    try {
      await runner.startTransaction('REPEATABLE READ');
      await runner.query('select count(*) from invoices'); // the snapshot
      const first = await call(); // committed on its own meanwhile
      expect(first.duplicate).toBe(false);
      const failed = await call(runner.manager).then(
        () => undefined,
        (error: { code?: string }) => error.code,
      );
      expect(failed).toBe('40001');
      await runner.rollbackTransaction();
      await runner.startTransaction('REPEATABLE READ');
      const retried = await call(runner.manager);
      await runner.commitTransaction();
      expect(retried).toMatchObject({ duplicate: true, event: { id: first.event.id } });
    } finally {
      if (runner.isTransactionActive) await runner.rollbackTransaction();
      await runner.release();
    }
  });

  for (const isolation of ['REPEATABLE READ', 'SERIALIZABLE'] as const) {
    it(`announces what a ${isolation} transaction wrote to a live subscriber that came after its snapshot`, async () => {
      const runner = erp.createQueryRunner();
      await runner.connect();
      const client = hl.wsClient(tenant.apiKey);
      try {
        await runner.startTransaction(isolation);
        await runner.query('select count(*) from invoices'); // the transaction's snapshot, taken now
        const subscribed = moreSubscribers(hl);
        const live = collectWs(client);
        await subscribed(); // its listener row is written after that snapshot
        const { deliveries } = await webhooks.triggerEvent(
          { tenantId: tenant.id, event: 'invoice.created', data: { invoice_id: `inv-${isolation}`, amount: '3.00', customer: 'Acme Corp' } },
          runner.manager,
        );
        await runner.commitTransaction();
        // The dispatcher's own changes are announced whatever happens: the creation is what is at stake.
        const id = deliveries[0]!.id;
        await live.waitFor((items) => items.some((i) => i.id === id && i.status === 'DELIVERED'));
        expect(live.items.find((i) => i.id === id)).toMatchObject({ status: 'PENDING', attempts: 0 });
        live.stop();
      } finally {
        if (runner.isTransactionActive) await runner.rollbackTransaction();
        await runner.release();
        await client.dispose();
      }
    });
  }

  it('refuses a tenantId that is no id, naming it, before anything is written in the caller\'s transaction', async () => {
    await erp.transaction(async (manager) => {
      const refused = await webhooks
        .triggerEvent({ tenantId: 'acme', event: 'invoice.created', data: { invoice_id: 'x', amount: '1', customer: 'Acme' } }, manager)
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(HooklineError);
      expect(refused).toMatchObject({ code: 'BAD_USER_INPUT', field: 'tenantId' });
      // Nor an id of no tenant (the events' foreign key would abort the transaction).
      const unknown = await webhooks
        .triggerEvent({ tenantId: '00000000-0000-4000-8000-000000000000', event: 'test.event', data: {} }, manager)
        .catch((error: unknown) => error);
      expect(unknown).toMatchObject({ code: 'BAD_USER_INPUT', field: 'tenantId' });
      // Nor is an object whose JSON is no object (a Date is a string) taken for data.
      const notObject = await webhooks.triggerEvent({ tenantId: tenant.id, event: 'test.event', data: new Date() }, manager).catch((error: unknown) => error);
      expect(notObject).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
      // From JavaScript, an event that is missing or no text (it was a TypeError).
      for (const event of [undefined, 42]) {
        const noName = await webhooks.triggerEvent({ tenantId: tenant.id, event: event as any, data: {} }, manager).catch((error: unknown) => error);
        expect(noName).toBeInstanceOf(HooklineError);
        expect(noName).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
      }
      // The transaction goes on, as the caller.
      expect(await manager.query(`select 1 as one, current_setting('role') as role`)).toEqual([{ one: 1, role: 'none' }]);
    });
  });

  it('refuses an id of no tenant without a manager too, naming tenantId, and writes nothing', async () => {
    const nobody = '00000000-0000-4000-8000-000000000001';
    // Batched, and with an idempotency key (a statement of its own): each finds it by a foreign key.
    for (const extra of [{}, { idempotencyKey: 'no-tenant' }]) {
      const refused = await webhooks.triggerEvent({ tenantId: nobody, event: 'test.event', data: {}, ...extra }).catch((error: unknown) => error);
      expect(refused, JSON.stringify(extra)).toBeInstanceOf(HooklineError);
      expect(refused).toMatchObject({ code: 'BAD_USER_INPUT', field: 'tenantId', message: expect.stringContaining('no tenant') });
    }
    const [{ n }] = await erp.query('select count(*)::int as n from webhook_events where tenant_id = $1', [nobody]);
    expect(n).toBe(0);
  });

  it("refuses a second call at once on one transaction's manager, naming it, and leaves the transaction the caller's", async () => {
    // Each saved the other's tenant role as the caller's: the caller's next statement ran as the
    // tenant role (permission denied on its own table).
    const data = { invoice_id: 'x', amount: '1', customer: 'Acme' };
    const eventId = await erp.transaction(async (manager) => {
      const both = await Promise.allSettled([
        webhooks.triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data }, manager),
        webhooks.triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data }, manager),
      ]);
      expect(both.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
      const refused = (both[1] as PromiseRejectedResult).reason;
      expect(refused).toBeInstanceOf(HooklineError);
      expect(refused).toMatchObject({ code: 'BAD_USER_INPUT', field: 'manager', message: expect.stringMatching(/one at a time/) });
      expect(await manager.query(`select current_setting('role') as role`)).toEqual([{ role: 'none' }]);
      // One after the other, both go.
      await webhooks.triggerEvent({ tenantId: tenant.id, event: 'invoice.created', data }, manager);
      return (both[0] as PromiseFulfilledResult<{ event: { id: string } }>).value.event.id;
    });
    expect(await erp.query('select count(*)::int as n from webhook_events where id = $1', [eventId])).toEqual([{ n: 1 }]);
  });

  it("refuses a subscriptionId that is no id, or no subscription of the tenant's, before anything is written in the caller's transaction", async () => {
    const other = await hl.createTenant('Other ERP');
    const made = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
      { input: { url: receiver.url, events: ['test.event'] } },
      other.apiKey,
    );
    const othersSubscription = made.data.createWebhookSubscription.subscription.id as string;
    const events = async () => Number((await erp.query('select count(*) as n from webhook_events'))[0].n);
    const before = await events();
    // The caller catches the refusal and commits what else it did: no event may be in it.
    await erp.transaction(async (manager) => {
      const notId = await webhooks
        .triggerEvent({ tenantId: tenant.id, event: 'test.event', data: {}, subscriptionId: 'nope' }, manager)
        .catch((error: unknown) => error);
      expect(notId).toMatchObject({ code: 'BAD_USER_INPUT', field: 'subscriptionId' });
      // null names none, as undefined does: the event goes to its subscribers.
      const none = await webhooks.triggerEvent({ tenantId: tenant.id, event: 'test.event', data: {}, subscriptionId: null as unknown as undefined }, manager);
      expect(none.duplicate).toBe(false);
      for (const idempotencyKey of [undefined, 'other-subscription']) {
        const others = await webhooks
          .triggerEvent({ tenantId: tenant.id, event: 'test.event', data: { marker: 'others' }, subscriptionId: othersSubscription, idempotencyKey }, manager)
          .catch((error: unknown) => error);
        expect(others).toBeInstanceOf(HooklineError);
        expect(others).toMatchObject({ code: 'NOT_FOUND' });
      }
      expect(await manager.query(`select 1 as one, current_setting('role') as role`)).toEqual([{ one: 1, role: 'none' }]);
    });
    expect(await events()).toBe(before + 1); // the null one's
    expect((await erp.query(`select count(*)::int as n from idempotency_keys where key = 'other-subscription'`))[0].n).toBe(0);
  });

  it('says when its DataSource is not initialized, or is destroyed', async () => {
    const idle = new DataSource({ type: 'postgres', url: hl.databaseUrl });
    const service = new WebhookService(idle);
    const input = { tenantId: tenant.id, event: 'test.event', data: {} };
    await expect(service.triggerEvent(input)).rejects.toThrow('the DataSource is not initialized');
    await idle.initialize();
    await idle.destroy();
    await expect(service.triggerEvent(input)).rejects.toThrow('the DataSource is not initialized');
  });

  it("says what to grant when the app's user may not switch to the tenant role", async () => {
    await erp.query(`drop role if exists hookline_app_nomember; create role hookline_app_nomember login password 'nomember'`);
    const url = new URL(hl.databaseUrl);
    url.username = 'hookline_app_nomember';
    url.password = 'nomember';
    const app = new DataSource({ type: 'postgres', url: url.toString() });
    await app.initialize();
    try {
      const service = new WebhookService(app);
      const input = { tenantId: tenant.id, event: 'test.event', data: {} };
      await expect(service.triggerEvent(input)).rejects.toThrow(/cannot switch to the role hookline_tenant.*GRANT hookline_tenant TO/);
      await expect(app.transaction((manager) => service.triggerEvent(input, manager))).rejects.toThrow(/GRANT hookline_tenant TO/);
    } finally {
      await app.destroy();
      await erp.query('drop role hookline_app_nomember');
    }
  });
});
