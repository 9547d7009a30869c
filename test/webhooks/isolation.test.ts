// Tenant isolation as a security boundary: tenant B can neither see nor change
// anything of tenant A through the API (first wall: tenant-scoped finders), and
// PostgreSQL row-level security alone, with B's tenant context and SQL that
// filters on nothing, returns and changes none of A's rows (second wall).
import type { EntityManager } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enterTenant, type TenantId } from '../../src/db/tenant-scope.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { DELETE_WEBHOOK_SUBSCRIPTION as DELETE_SUB, DELIVERY, ROTATE_WEBHOOK_SECRET as ROTATE, TRIGGER_EVENT as TRIGGER, WEBHOOK_SUBSCRIPTION as GET_SUB, WEBHOOK_SUBSCRIPTIONS as LIST_SUBS } from '../helpers/operations.js';

const CREATE_SUB = `mutation CreateWebhookSubscription($input: CreateWebhookSubscriptionInput!) {
  createWebhookSubscription(input: $input) {
    secret
    subscription { id url events description active disabledReason createdAt updatedAt }
  }
}`;
const UPDATE_SUB = `mutation UpdateWebhookSubscription($id: ID!, $input: UpdateWebhookSubscriptionInput!) {
  updateWebhookSubscription(id: $id, input: $input) { id url events description active disabledReason updatedAt }
}`;
const EVENT = `query WebhookEvent($id: ID!) {
  webhookEvent(id: $id) {
    id event resourceType resourceId data idempotencyKey createdAt
    deliveries { id status attempts }
  }
}`;
const DELIVERIES = `query Deliveries($first: Int, $after: String, $event: String, $status: DeliveryStatus, $subscriptionId: ID) {
  deliveries(first: $first, after: $after, event: $event, status: $status, subscriptionId: $subscriptionId) {
    edges { cursor node { id event status attempts lastError lastStatusCode nextAttemptAt createdAt } }
    pageInfo { hasNextPage endCursor }
  }
}`;
const RETRY = 'mutation RetryDelivery($id: ID!) { retryDelivery(id: $id) { id status nextAttemptAt } }';
const RETRY_FAILED = 'mutation($subscriptionId: ID!, $since: DateTime!) { retryFailedDeliveries(subscriptionId: $subscriptionId, since: $since) { count more } }';
const SEND_TEST = 'mutation SendTestEvent($subscriptionId: ID!) { sendTestEvent(subscriptionId: $subscriptionId) { id event status } }';
const EVENT_TYPES = 'query EventTypes { eventTypes { name description schema builtIn } }';
const CREATE_EVENT_TYPE = `mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name description schema builtIn } }`;
const CREATE_API_KEY = 'mutation CreateApiKey($name: String!) { createApiKey(name: $name) { apiKey id name createdAt } }';
const REVOKE_API_KEY = 'mutation RevokeApiKey($id: ID!) { revokeApiKey(id: $id) }';
const VIEWER = 'query Viewer { viewer { id name createdAt } }';

const OWN_EVENT = 'shipment.dispatched';
const OWN_SCHEMA = { type: 'object', required: ['tracking'], properties: { tracking: { type: 'string' } } };
const INVOICE = { invoice_id: 'inv-123', amount: 1500.0, customer: 'Acme Corp' };

interface Tenant {
  id: string;
  apiKey: string;
}

let hl: TestHookline;
let A: Tenant;
let B: Tenant;
const receivers: Receiver[] = [];

/** Everything tenant A owns, made in beforeAll. */
const a = {
  subId: '',
  subSecret: '',
  subCursor: '',
  /** The subscription after subCursor in A's own list. */
  afterCursorId: '',
  failingSubId: '',
  eventId: '',
  deliveryId: '',
  failedDeliveryId: '',
  extraKeyId: '',
  extraKey: '',
  receiver: undefined as unknown as Receiver,
};
/** B's own subscription, so B's lists are not empty merely because B has nothing. */
let bSubId = '';

async function ok<T = any>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
  const res = await hl.gql<T>(query, variables, token);
  if (res.errors) throw new Error(`${query.slice(0, 60)}: ${JSON.stringify(res.errors)}`);
  return res.data as T;
}

async function subscriptionRow(id: string) {
  const [row] = await hl.dataSource.query(
    `select tenant_id, url, events, description, active, disabled_reason, secret, previous_secret,
            previous_secret_expires_at, updated_at
       from webhook_subscriptions where id = $1`,
    [id],
  );
  return row;
}

async function deliveryCount(subscriptionId: string): Promise<number> {
  const [row] = await hl.dataSource.query('select count(*)::int as n from webhook_deliveries where subscription_id = $1', [
    subscriptionId,
  ]);
  return row.n;
}

function expectNotFound(res: { data?: any; errors?: Array<{ message: string; extensions?: { code?: string } }> }) {
  expect(res.errors, JSON.stringify(res)).toBeDefined();
  expect(res.errors![0]!.extensions?.code).toBe('NOT_FOUND');
  expect(res.data ?? null).toBeNull();
}

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '50ms,50ms', HOOKLINE_DELIVERY_TIMEOUT: '1s' });
  A = await hl.createTenant('Tenant A');
  B = await hl.createTenant('Tenant B');

  // A: an own event type, a subscription that receives it and invoice.created, a second subscription
  // whose receiver always fails (so A has a FAILED delivery that A itself could retry), an event
  // with an idempotency key, its deliveries settled, and an extra API key.
  const created = await ok(CREATE_EVENT_TYPE, { input: { name: OWN_EVENT, description: 'A: shipment left', schema: OWN_SCHEMA } }, A.apiKey);
  expect(created.createEventType).toMatchObject({ name: OWN_EVENT, builtIn: false });

  a.receiver = await startReceiver(() => ({ status: 200, body: 'ok' }));
  receivers.push(a.receiver);
  const failing = await startReceiver(() => ({ status: 500, body: 'nope' }));
  receivers.push(failing);

  const sub = await ok(CREATE_SUB, { input: { url: `${a.receiver.url}/a`, events: ['invoice.created', OWN_EVENT], description: 'A main' } }, A.apiKey);
  a.subId = sub.createWebhookSubscription.subscription.id;
  a.subSecret = sub.createWebhookSubscription.secret;
  const failingSub = await ok(CREATE_SUB, { input: { url: `${failing.url}/a-failing`, events: ['invoice.created'] } }, A.apiKey);
  a.failingSubId = failingSub.createWebhookSubscription.subscription.id;

  const list = await ok(LIST_SUBS, { first: 1 }, A.apiKey);
  a.subCursor = list.webhookSubscriptions.edges[0].cursor;
  a.afterCursorId = list.webhookSubscriptions.edges[0].node.id === a.subId ? a.failingSubId : a.subId;
  expect(list.webhookSubscriptions.pageInfo.hasNextPage).toBe(true);

  const triggered = await ok(TRIGGER, { input: { event: 'invoice.created', data: INVOICE, idempotencyKey: 'a-invoice-1' } }, A.apiKey);
  a.eventId = triggered.triggerEvent.event.id;
  const bySub = new Map<string, string>(triggered.triggerEvent.deliveries.map((d: any) => [d.subscription.id, d.id]));
  a.deliveryId = bySub.get(a.subId)!;
  a.failedDeliveryId = bySub.get(a.failingSubId)!;
  expect(a.deliveryId).toBeTruthy();
  expect(a.failedDeliveryId).toBeTruthy();
  await ok(TRIGGER, { input: { event: OWN_EVENT, data: { tracking: 'TRK-1' } } }, A.apiKey);

  await eventually(async () => {
    const [d, f] = await Promise.all([
      ok(DELIVERY, { id: a.deliveryId }, A.apiKey),
      ok(DELIVERY, { id: a.failedDeliveryId }, A.apiKey),
    ]);
    return d.delivery.status === 'DELIVERED' && f.delivery.status === 'FAILED';
  });

  const key = await ok(CREATE_API_KEY, { name: 'A extra' }, A.apiKey);
  a.extraKeyId = key.createApiKey.id;
  a.extraKey = key.createApiKey.apiKey;

  // B: a subscription of its own (built-in events only for now), and an event with an idempotency key.
  const bReceiver = await startReceiver();
  receivers.push(bReceiver);
  const bSub = await ok(CREATE_SUB, { input: { url: `${bReceiver.url}/b`, events: ['invoice.*'] } }, B.apiKey);
  bSubId = bSub.createWebhookSubscription.subscription.id;
  const bEvent = await ok(
    TRIGGER,
    { input: { event: 'invoice.sent', data: { invoice_id: 'b-1', invoice_number: 'B-001', sent_at: '2024-02-14T10:30:00' }, idempotencyKey: 'b-key' } },
    B.apiKey,
  );
  const bDeliveryId = bEvent.triggerEvent.deliveries[0].id;
  // Settled, so B has delivery_attempts rows too.
  await eventually(async () => (await ok(DELIVERY, { id: bDeliveryId }, B.apiKey)).delivery.status === 'DELIVERED');
});

afterAll(async () => {
  await hl?.stop();
  await Promise.all(receivers.map((r) => r.close()));
});

describe("tenant B cannot read or change tenant A's subscriptions", () => {
  it('webhookSubscription(A.id) is null for B, but visible to A', async () => {
    expect((await ok(GET_SUB, { id: a.subId }, A.apiKey)).webhookSubscription).toMatchObject({ id: a.subId });
    const res = await hl.gql(GET_SUB, { id: a.subId }, B.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.webhookSubscription).toBeNull();
  });

  it('webhookSubscriptions lists only B\'s, with and without filters', async () => {
    for (const variables of [{}, { first: 100 }, { event: 'invoice.created' }, { event: OWN_EVENT }, { active: true }, { active: false }]) {
      const data = await ok(LIST_SUBS, variables, B.apiKey);
      const ids = data.webhookSubscriptions.edges.map((e: any) => e.node.id);
      expect(ids).not.toContain(a.subId);
      expect(ids).not.toContain(a.failingSubId);
      for (const id of ids) expect(id).toBe(bSubId);
    }
    expect((await ok(LIST_SUBS, {}, B.apiKey)).webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual([bSubId]);
  });

  it("webhookSubscriptions(after: A's cursor) returns nothing of A's", async () => {
    // A itself gets the next page with that cursor...
    const own = await ok(LIST_SUBS, { first: 10, after: a.subCursor }, A.apiKey);
    expect(own.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual([a.afterCursorId]);
    // ...B gets nothing of A's (and no error that would confirm the cursor exists elsewhere is needed).
    const res = await hl.gql(LIST_SUBS, { first: 10, after: a.subCursor }, B.apiKey);
    const ids = (res.data?.webhookSubscriptions?.edges ?? []).map((e: any) => e.node.id);
    expect(ids).not.toContain(a.subId);
    expect(ids).not.toContain(a.failingSubId);
    expect(JSON.stringify(res)).not.toContain(a.receiver.url);
  });

  it('update, delete, rotate and sendTestEvent are NOT_FOUND, and A\'s row is unchanged', async () => {
    const before = await subscriptionRow(a.subId);
    const deliveriesBefore = await deliveryCount(a.subId);

    expectNotFound(
      await hl.gql(UPDATE_SUB, { id: a.subId, input: { url: 'http://127.0.0.1:1/evil', events: ['*'], active: false, description: 'pwned' } }, B.apiKey),
    );
    expectNotFound(await hl.gql(UPDATE_SUB, { id: a.subId, input: { active: false } }, B.apiKey));
    expectNotFound(await hl.gql(ROTATE, { id: a.subId }, B.apiKey));
    expectNotFound(await hl.gql(ROTATE, { id: a.subId, secret: 'evil-secret-0123456789' }, B.apiKey));
    expectNotFound(await hl.gql(SEND_TEST, { subscriptionId: a.subId }, B.apiKey));
    expectNotFound(await hl.gql(DELETE_SUB, { id: a.subId }, B.apiKey));

    const after = await subscriptionRow(a.subId);
    expect(after).toEqual(before);
    expect(after).toMatchObject({ tenant_id: A.id, url: `${a.receiver.url}/a`, secret: a.subSecret, active: true, previous_secret: null });
    expect(await deliveryCount(a.subId)).toBe(deliveriesBefore);
    // Still A's and still readable by A.
    expect((await ok(GET_SUB, { id: a.subId }, A.apiKey)).webhookSubscription).toMatchObject({ id: a.subId, active: true });
  });
});

describe("tenant B cannot see tenant A's events and deliveries", () => {
  it('delivery(A.id) is null for B', async () => {
    expect((await ok(DELIVERY, { id: a.deliveryId }, A.apiKey)).delivery).toMatchObject({ id: a.deliveryId, status: 'DELIVERED' });
    const res = await hl.gql(DELIVERY, { id: a.deliveryId }, B.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.delivery).toBeNull();
    const failed = await hl.gql(DELIVERY, { id: a.failedDeliveryId }, B.apiKey);
    expect(failed.data.delivery).toBeNull();
  });

  it('deliveries lists none of A\'s, also filtered by A\'s subscription, event or status', async () => {
    const aIds = new Set([a.deliveryId, a.failedDeliveryId]);
    for (const variables of [{}, { first: 100 }, { event: 'invoice.created' }, { status: 'DELIVERED' }, { status: 'FAILED' }]) {
      const data = await ok(DELIVERIES, variables, B.apiKey);
      for (const edge of data.deliveries.edges) expect(aIds.has(edge.node.id)).toBe(false);
    }
    for (const subscriptionId of [a.subId, a.failingSubId]) {
      const data = await ok(DELIVERIES, { subscriptionId }, B.apiKey);
      expect(data.deliveries.edges).toEqual([]);
      // A sees them.
      expect((await ok(DELIVERIES, { subscriptionId }, A.apiKey)).deliveries.edges.length).toBeGreaterThan(0);
    }
  });

  it("deliveries(after: A's cursor) returns nothing of A's", async () => {
    const res = await hl.gql(DELIVERIES, { first: 10, after: a.deliveryId }, B.apiKey);
    const ids = (res.data?.deliveries?.edges ?? []).map((e: any) => e.node.id);
    expect(ids).not.toContain(a.deliveryId);
    expect(ids).not.toContain(a.failedDeliveryId);
  });

  it("retryDelivery(A's FAILED delivery) is NOT_FOUND and leaves it FAILED", async () => {
    const [before] = await hl.dataSource.query('select status, attempts, next_attempt_at, updated_at from webhook_deliveries where id = $1', [
      a.failedDeliveryId,
    ]);
    expect(before.status).toBe('FAILED');
    const refused = await hl.gql(RETRY, { id: a.failedDeliveryId }, B.apiKey);
    expectNotFound(refused);
    // The same words as for an id of nothing: the message tells nothing of A's delivery.
    expect(refused.errors![0]!.message).toBe(`delivery "${a.failedDeliveryId}" was not found`);
    expectNotFound(await hl.gql(RETRY, { id: a.deliveryId }, B.apiKey));
    // An empty id is shown as one (it read "delivery  was not found").
    const empty = await hl.gql(RETRY, { id: '' }, B.apiKey);
    expectNotFound(empty);
    expect(empty.errors![0]!.message).toBe('delivery "" was not found');
    const [after] = await hl.dataSource.query('select status, attempts, next_attempt_at, updated_at from webhook_deliveries where id = $1', [
      a.failedDeliveryId,
    ]);
    expect(after).toEqual(before);
  });

  it("retryFailedDeliveries(A's subscription) is NOT_FOUND and leaves its FAILED delivery FAILED", async () => {
    const row = () => hl.dataSource.query('select status, attempts, next_attempt_at, updated_at from webhook_deliveries where id = $1', [a.failedDeliveryId]);
    const [before] = await row();
    expect(before.status).toBe('FAILED');
    const since = new Date(0).toISOString();
    expectNotFound(await hl.gql(RETRY_FAILED, { subscriptionId: a.failingSubId, since }, B.apiKey));
    expect(await row()).toEqual([before]);
  });

  it('webhookEvent(A.id) is null for B', async () => {
    expect((await ok(EVENT, { id: a.eventId }, A.apiKey)).webhookEvent).toMatchObject({ id: a.eventId, idempotencyKey: 'a-invoice-1' });
    const res = await hl.gql(EVENT, { id: a.eventId }, B.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.webhookEvent).toBeNull();
  });

  it("B's idempotency key namespace is its own: A's key creates a fresh event for B", async () => {
    const data = await ok(TRIGGER, { input: { event: 'invoice.created', data: INVOICE, idempotencyKey: 'a-invoice-1' } }, B.apiKey);
    expect(data.triggerEvent.duplicate).toBe(false);
    expect(data.triggerEvent.event.id).not.toBe(a.eventId);
    expect(data.triggerEvent.deliveries.map((d: any) => d.subscription.id)).toEqual([bSubId]);
  });
});

describe("tenant B cannot see or use tenant A's event types", () => {
  it("eventTypes of B does not list A's own type; A's does", async () => {
    const aTypes = (await ok(EVENT_TYPES, {}, A.apiKey)).eventTypes;
    expect(aTypes.find((t: any) => t.name === OWN_EVENT)).toMatchObject({ builtIn: false, description: 'A: shipment left' });
    const bTypes = (await ok(EVENT_TYPES, {}, B.apiKey)).eventTypes;
    expect(bTypes.map((t: any) => t.name)).not.toContain(OWN_EVENT);
    expect(bTypes.every((t: any) => t.builtIn)).toBe(true);
  });

  it("triggerEvent with A's own event name is BAD_USER_INPUT (unknown event) for B", async () => {
    const before = await hl.dataSource.query('select count(*)::int as n from webhook_events');
    const res = await hl.gql(TRIGGER, { input: { event: OWN_EVENT, data: { tracking: 'TRK-B' } } }, B.apiKey);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
    expect(res.errors?.[0]?.message).toContain('unknown event');
    const after = await hl.dataSource.query('select count(*)::int as n from webhook_events');
    expect(after[0].n).toBe(before[0].n);
  });

  it("createWebhookSubscription with A's own event name is BAD_USER_INPUT for B", async () => {
    const before = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions');
    const res = await hl.gql(CREATE_SUB, { input: { url: 'http://127.0.0.1:9/b', events: [OWN_EVENT] } }, B.apiKey);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'events' });
    expect(res.errors?.[0]?.message).toContain(OWN_EVENT);
    const after = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions');
    expect(after[0].n).toBe(before[0].n);
  });

  it("B may create an event type with the same name as A's own: namespaces are independent", async () => {
    const bSchema = { type: 'object', required: ['carrier'], properties: { carrier: { type: 'string' } } };
    const res = await ok(CREATE_EVENT_TYPE, { input: { name: OWN_EVENT, description: 'B: shipment', schema: bSchema } }, B.apiKey);
    expect(res.createEventType).toMatchObject({ name: OWN_EVENT, builtIn: false, description: 'B: shipment', schema: bSchema });

    // Each tenant sees exactly its own definition.
    const bOwn = (await ok(EVENT_TYPES, {}, B.apiKey)).eventTypes.filter((t: any) => t.name === OWN_EVENT);
    expect(bOwn).toEqual([{ name: OWN_EVENT, description: 'B: shipment', schema: bSchema, builtIn: false }]);
    const aOwn = (await ok(EVENT_TYPES, {}, A.apiKey)).eventTypes.filter((t: any) => t.name === OWN_EVENT);
    expect(aOwn).toEqual([{ name: OWN_EVENT, description: 'A: shipment left', schema: OWN_SCHEMA, builtIn: false }]);

    // And each tenant's triggerEvent validates against its own schema.
    const bMissing = await hl.gql(TRIGGER, { input: { event: OWN_EVENT, data: { tracking: 'TRK' } } }, B.apiKey);
    expect(bMissing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(bMissing.errors?.[0]?.message).toContain('carrier');
    const aDelivered = a.receiver.received.length;
    const bOk = await ok(TRIGGER, { input: { event: OWN_EVENT, data: { carrier: 'DHL' } } }, B.apiKey);
    // B's event of the same name goes to none of A's subscriptions.
    expect(bOk.triggerEvent.deliveries).toEqual([]);
    const aMissing = await hl.gql(TRIGGER, { input: { event: OWN_EVENT, data: { carrier: 'DHL' } } }, A.apiKey);
    expect(aMissing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(aMissing.errors?.[0]?.message).toContain('tracking');
    await new Promise((r) => setTimeout(r, 300));
    expect(a.receiver.received.length).toBe(aDelivered);
  });

  // KNOWN SRC BUG (fails until fixed): one tenant's event type can break another's. EventCatalog keeps
  // ONE process-wide Ajv instance (src/webhooks/catalog.ts, `private readonly ajv`) and compiles every
  // tenant's schema into it with this.ajv.compile(row.schema). Ajv registers a schema that has an `$id`
  // in the instance, so the second schema with the same `$id` (another tenant's, compiled later) throws
  // "schema with key or id ... already exists" and that tenant's triggerEvent answers
  // INTERNAL_SERVER_ERROR. Fix: compile tenant schemas without registering them
  // (new Ajv({ strict: false, addUsedSchema: false })), or in an Ajv instance per entry.
  it("an event type of A with some $id does not break B's event type with the same $id", async () => {
    const schema = { $id: 'https://schemas.example.com/thing.json', type: 'object', required: ['x'] };
    await ok(CREATE_EVENT_TYPE, { input: { name: 'thing.made', schema } }, A.apiKey);
    await ok(CREATE_EVENT_TYPE, { input: { name: 'thing.made', schema } }, B.apiKey);
    const aTriggered = await hl.gql(TRIGGER, { input: { event: 'thing.made', data: { x: 1 } } }, A.apiKey);
    expect(aTriggered.errors).toBeUndefined();
    const bTriggered = await hl.gql(TRIGGER, { input: { event: 'thing.made', data: { x: 1 } } }, B.apiKey);
    expect(bTriggered.errors).toBeUndefined();
    const bMissing = await hl.gql(TRIGGER, { input: { event: 'thing.made', data: {} } }, B.apiKey);
    expect(bMissing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
  });

  it("B's triggerEvent of a built-in event creates no delivery to A's subscriptions", async () => {
    const countA = await deliveryCount(a.subId);
    const countFailing = await deliveryCount(a.failingSubId);
    const aReceived = a.receiver.received.length;
    const data = await ok(TRIGGER, { input: { event: 'invoice.created', data: INVOICE } }, B.apiKey);
    expect(data.triggerEvent.deliveries.map((d: any) => d.subscription.id)).toEqual([bSubId]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await deliveryCount(a.subId)).toBe(countA);
    expect(await deliveryCount(a.failingSubId)).toBe(countFailing);
    expect(a.receiver.received.length).toBe(aReceived);
  });
});

describe("tenant B cannot revoke tenant A's API keys", () => {
  it('revokeApiKey(A.key) is NOT_FOUND and the key keeps working', async () => {
    expectNotFound(await hl.gql(REVOKE_API_KEY, { id: a.extraKeyId }, B.apiKey));
    const [row] = await hl.dataSource.query('select tenant_id, revoked_at from api_keys where id = $1', [a.extraKeyId]);
    expect(row).toEqual({ tenant_id: A.id, revoked_at: null });
    expect((await ok(VIEWER, {}, a.extraKey)).viewer.id).toBe(A.id);
    expect((await ok(VIEWER, {}, A.apiKey)).viewer.id).toBe(A.id);
    expect((await ok(VIEWER, {}, B.apiKey)).viewer.id).toBe(B.id);
  });
});

// The second wall on its own: row-level security with a tenant's context, and
// SQL that does not filter by tenant at all.
describe('row-level security holds without any tenant filter in the SQL', () => {
  const TABLES = [
    'webhook_subscriptions',
    'webhook_events',
    'webhook_deliveries',
    'delivery_attempts',
    'api_keys',
    'idempotency_keys',
    'event_types where tenant_id is not null',
  ];

  /** Runs fn in a transaction with the tenant's RLS context; rolls back unless commit is set. */
  async function asTenant<T>(tenantId: string, fn: (m: EntityManager) => Promise<T>, commit = false): Promise<T> {
    const runner = hl.dataSource.createQueryRunner();
    await runner.connect();
    await runner.startTransaction();
    try {
      await enterTenant(runner.manager, tenantId as TenantId);
      const result = await fn(runner.manager);
      if (commit) await runner.commitTransaction();
      else await runner.rollbackTransaction();
      return result;
    } catch (error) {
      if (runner.isTransactionActive) await runner.rollbackTransaction();
      throw error;
    } finally {
      await runner.release();
    }
  }

  const tenantsOf = (rows: Array<{ tenant_id: string }>) => new Set(rows.map((r) => r.tenant_id));

  it('the context really is the restricted role with the tenant set', async () => {
    const [row] = await asTenant(B.id, (m) =>
      m.query(`select current_user as "user", current_setting('hookline.tenant_id') as tenant,
                      (select rolsuper from pg_roles where rolname = current_user) as super,
                      (select rolbypassrls from pg_roles where rolname = current_user) as bypass`),
    );
    expect(row).toEqual({ user: 'hookline_tenant', tenant: B.id, super: false, bypass: false });
  });

  it("with B's context, unfiltered selects return only B's rows; with A's, A's rows", async () => {
    // The superuser sees both tenants' rows in every table, so the checks below can fail.
    for (const table of TABLES) {
      const all = await hl.dataSource.query(`select tenant_id from ${table}`);
      const owners = tenantsOf(all);
      expect(owners.has(A.id), `${table} has rows of A`).toBe(true);
      expect(owners.has(B.id), `${table} has rows of B`).toBe(true);
    }

    for (const [self, other] of [
      [B, A],
      [A, B],
    ] as const) {
      await asTenant(self.id, async (m) => {
        for (const table of TABLES) {
          const rows = await m.query(`select * from ${table}`);
          expect(rows.length, `${table} as ${self === A ? 'A' : 'B'}`).toBeGreaterThan(0);
          expect([...tenantsOf(rows)], table).toEqual([self.id]);
        }
        const tenants = await m.query('select * from tenants');
        expect(tenants.map((t: { id: string }) => t.id)).toEqual([self.id]);
        // Looking up the other tenant's rows by id finds nothing either.
        const bySub = await m.query('select id from webhook_subscriptions where id = $1', [self === B ? a.subId : bSubId]);
        expect(bySub).toEqual([]);
        const byTenant = await m.query('select id from webhook_subscriptions where tenant_id = $1', [other.id]);
        expect(byTenant).toEqual([]);
        const otherTenant = await m.query('select id from tenants where id = $1', [other.id]);
        expect(otherTenant).toEqual([]);
      });
    }

    // Built-in event types are readable by every tenant.
    const builtIns = await asTenant(B.id, (m) => m.query('select name from event_types where tenant_id is null'));
    expect(builtIns.length).toBeGreaterThanOrEqual(10);
  });

  it("with B's context, an unfiltered update and delete touch none of A's rows", async () => {
    const before = await subscriptionRow(a.subId);
    const updated = await asTenant(
      B.id,
      (m) => m.query(`update webhook_subscriptions set url = 'http://evil' returning id, tenant_id`),
      true,
    );
    // TypeORM answers UPDATE with [rows, count].
    const [rows] = updated as [Array<{ id: string; tenant_id: string }>, number];
    expect(rows.map((r) => r.id)).toEqual([bSubId]);
    expect(await subscriptionRow(a.subId)).toEqual(before);
    expect((await subscriptionRow(a.failingSubId)).url).not.toBe('http://evil');
    expect((await subscriptionRow(bSubId)).url).toBe('http://evil');

    // A delete and a tenant-wide update, rolled back afterwards: still none of A's rows.
    await asTenant(B.id, async (m) => {
      const [deleted] = await m.query('delete from webhook_deliveries returning tenant_id');
      expect(deleted.length).toBeGreaterThan(0);
      expect([...tenantsOf(deleted)]).toEqual([B.id]);
      const [keys] = await m.query('update api_keys set revoked_at = now() returning tenant_id');
      expect([...tenantsOf(keys)]).toEqual([B.id]);
      const [types] = await m.query(`update event_types set description = 'evil' returning tenant_id`);
      expect([...tenantsOf(types)]).toEqual([B.id]);
    });
    const [aDeliveries] = await hl.dataSource.query('select count(*)::int as n from webhook_deliveries where tenant_id = $1', [A.id]);
    expect(aDeliveries.n).toBeGreaterThan(0);
    const [builtIn] = await hl.dataSource.query(`select description from event_types where name = 'invoice.created' and tenant_id is null`);
    expect(builtIn.description).not.toBe('evil');
  });

  it("with B's context, inserting a row for A is refused by the WITH CHECK policy", async () => {
    const before = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions where tenant_id = $1', [A.id]);
    await expect(
      asTenant(
        B.id,
        (m) =>
          m.query(`insert into webhook_subscriptions (tenant_id, url, events, secret) values ($1, 'http://evil', '{*}', 'evil-secret-0123456789')`, [
            A.id,
          ]),
        true,
      ),
    ).rejects.toThrow(/row-level security/);
    await expect(
      asTenant(
        B.id,
        (m) => m.query(`insert into event_types (tenant_id, name, schema) values ($1, 'evil.type', '{}')`, [A.id]),
        true,
      ),
    ).rejects.toThrow(/row-level security/);
    // Moving one of B's own rows over to A is refused too.
    await expect(
      asTenant(B.id, (m) => m.query('update webhook_subscriptions set tenant_id = $1', [A.id]), true),
    ).rejects.toThrow(/row-level security/);
    const after = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions where tenant_id = $1', [A.id]);
    expect(after[0].n).toBe(before[0].n);
    const [evil] = await hl.dataSource.query(`select count(*)::int as n from event_types where name = 'evil.type'`);
    expect(evil.n).toBe(0);
    // The same insert with A's own context is allowed (rolled back), so the refusal above is the policy.
    await asTenant(A.id, (m) =>
      m.query(`insert into webhook_subscriptions (tenant_id, url, events, secret) values ($1, 'http://ok', '{*}', 'fine-secret-0123456789')`, [A.id]),
    );
  });
});
