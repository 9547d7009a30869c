// updateEventType: a tenant's own event type changed (its description, its schema), checked
// against at once by the process that changed it and within TYPE_RECHECK_MS by every other (an
// application's library here); a built-in or another tenant's type is never changed.
import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HooklineError, hooklineEntities, WebhookService } from '../../src/index.js';
import { TYPE_RECHECK_MS } from '../../src/webhooks/catalog.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { TRIGGER_EVENT as TRIGGER } from '../helpers/operations.js';

const TYPE_FIELDS = 'name description schema builtIn createdAt updatedAt';
const CREATE_EVENT_TYPE = `mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { ${TYPE_FIELDS} } }`;
const UPDATE_EVENT_TYPE = `mutation($name: String!, $input: UpdateEventTypeInput!) { updateEventType(name: $name, input: $input) { ${TYPE_FIELDS} } }`;
const EVENT_TYPES = `{ eventTypes { ${TYPE_FIELDS} } }`;

const V1 = { type: 'object', required: ['tracking'], properties: { tracking: { type: 'string' } } };
const V2 = { type: 'object', required: ['tracking', 'carrier'], properties: { tracking: { type: 'string' }, carrier: { type: 'string' } } };

let hl: TestHookline;
let tenant: { id: string; apiKey: string };
let other: { id: string; apiKey: string };
let erp: DataSource;
let library: WebhookService;

beforeAll(async () => {
  hl = await startTestHookline();
  tenant = await hl.createTenant('Shipper');
  other = await hl.createTenant('Other shipper');
  // Another process's catalog: an application's, through the library.
  erp = new DataSource({ type: 'postgres', url: hl.databaseUrl, entities: hooklineEntities });
  await erp.initialize();
  library = new WebhookService(erp);
});
afterAll(async () => {
  await library?.close();
  await erp?.destroy();
  await hl?.stop();
});

async function create(name: string, schema: object, apiKey = tenant.apiKey) {
  const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name, description: 'Sent', schema } }, apiKey);
  expect(res.errors).toBeUndefined();
  return res.data.createEventType;
}

const update = (name: string, input: Record<string, unknown>, apiKey = tenant.apiKey) => hl.gql(UPDATE_EVENT_TYPE, { name, input }, apiKey);
const trigger = (event: string, data: object, apiKey = tenant.apiKey) => hl.gql(TRIGGER, { input: { event, data } }, apiKey);

describe('updateEventType', () => {
  it('checks events against the new schema at once in its process, and within its recheck in another; events recorded before stay as they were', async () => {
    await create('shipment.sent', V1);
    const before = await trigger('shipment.sent', { tracking: 'T-1' });
    expect(before.errors).toBeUndefined();
    // The library's catalog has read the type too (and trusts its copy a while).
    await library.triggerEvent({ tenantId: tenant.id, event: 'shipment.sent', data: { tracking: 'T-2' } });

    const changed = await update('shipment.sent', { schema: V2, description: 'Handed to a carrier' });
    expect(changed.errors).toBeUndefined();
    expect(changed.data.updateEventType).toMatchObject({ name: 'shipment.sent', description: 'Handed to a carrier', schema: V2, builtIn: false });
    expect(changed.data.updateEventType.updatedAt > changed.data.updateEventType.createdAt).toBe(true);

    // This process: at once.
    const refused = await trigger('shipment.sent', { tracking: 'T-3' });
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(refused.errors?.[0]?.message).toContain('carrier');
    expect((await trigger('shipment.sent', { tracking: 'T-4', carrier: 'DHL' })).errors).toBeUndefined();

    // The other: within its recheck, and not a moment beyond it.
    const changedAt = Date.now();
    let refusedAt: number | undefined;
    while (!refusedAt && Date.now() - changedAt < TYPE_RECHECK_MS + 2_000) {
      const outcome = await library.triggerEvent({ tenantId: tenant.id, event: 'shipment.sent', data: { tracking: 'T-5' } }).catch((error: unknown) => error);
      if (outcome instanceof HooklineError) {
        expect(outcome).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
        refusedAt = Date.now();
      } else {
        await new Promise((done) => setTimeout(done, 200));
      }
    }
    expect(refusedAt, 'the library still checked against the old schema').toBeDefined();
    await library.triggerEvent({ tenantId: tenant.id, event: 'shipment.sent', data: { tracking: 'T-6', carrier: 'UPS' } });

    // What was recorded before is kept as it was.
    const [{ data }] = await hl.dataSource.query('select data from webhook_events where id = $1', [before.data.triggerEvent.event.id]);
    expect(data).toEqual({ tracking: 'T-1' });
  });

  it('changes only what is given, and writes nothing when nothing changes', async () => {
    const created = await create('shipment.returned', V1);
    for (const input of [{}, { description: null, schema: null }, { description: 'Sent', schema: V1 }]) {
      const same = await update('shipment.returned', input);
      expect(same.errors, JSON.stringify(input)).toBeUndefined();
      expect(same.data.updateEventType).toEqual(created);
    }
    const described = await update('shipment.returned', { description: '  Came back  ' });
    expect(described.data.updateEventType).toMatchObject({ description: 'Came back', schema: V1 });
  });

  it('refuses a built-in type, an unknown name and a bad schema, naming each, and writes nothing', async () => {
    await create('shipment.lost', V1);
    const rows = () => hl.dataSource.query('select name, description, schema, updated_at from event_types order by name, tenant_id nulls first');
    const before = await rows();
    const builtIn = await update('invoice.created', { description: 'Mine now' });
    expect(builtIn.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'name' });
    expect(builtIn.errors?.[0]?.message).toContain('built-in');
    expect((await update('shipment.unknown', { description: 'x' })).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect((await update('Not A Name', { description: 'x' })).errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'name' });
    for (const schema of [[], 'object', { type: 'object', properties: { a: { pattern: '(a+)+\\1' } } }]) {
      const bad = await update('shipment.lost', { schema });
      expect(bad.errors?.[0]?.extensions, JSON.stringify(schema)).toMatchObject({ code: 'BAD_USER_INPUT', field: 'schema' });
    }
    const long = await update('shipment.lost', { description: 'x'.repeat(1001), schema: V2 });
    expect(long.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'description' });
    expect(await rows()).toEqual(before);
  });

  it("never changes another tenant's type: NOT_FOUND, as for a name of none", async () => {
    await create('parcel.sent', V1, other.apiKey);
    const res = await update('parcel.sent', { schema: V2 });
    expect(res.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect(res.errors?.[0]?.message).toBe('event type "parcel.sent" was not found');
    const theirs = (await hl.gql(EVENT_TYPES, {}, other.apiKey)).data.eventTypes.find((t: { name: string }) => t.name === 'parcel.sent');
    expect(theirs.schema).toEqual(V1);
    expect((await trigger('parcel.sent', { tracking: 'P-1' }, other.apiKey)).errors).toBeUndefined();
  });
});
