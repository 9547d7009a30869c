// The event catalog: the guide's built-in events with JSON Schemas that accept
// the guide's example data and reject data missing a required field, and
// tenants' own event types (createEventType) with their schema validated.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { TRIGGER_EVENT as TRIGGER } from '../helpers/operations.js';
import { GUIDE_INVOICE_CREATED, GUIDE_PAYMENT_RECEIVED } from '../helpers/guide.js';

const EVENT_TYPES = 'query EventTypes { eventTypes { name description schema builtIn createdAt } }';
const CREATE_EVENT_TYPE = `mutation($input: CreateEventTypeInput!) {
  createEventType(input: $input) { name description schema builtIn createdAt }
}`;
const CREATE_SUB = `mutation CreateWebhookSubscription($input: CreateWebhookSubscriptionInput!) {
  createWebhookSubscription(input: $input) { secret subscription { id url events active } }
}`;

/**
 * The guide's "Webhook Events" section, copied as written: each event's
 * example `data`, and the fields its schema must require (every field that
 * every example of the event carries).
 */
const GUIDE_EVENTS: Array<{ event: string; data: Record<string, unknown>; required: string[] }> = [
  {
    event: 'invoice.created',
    data: GUIDE_INVOICE_CREATED,
    // Test 1 sends {invoice_id, amount, customer}, the service examples {invoice_number, amount, currency,
    // customer, status}: only amount and customer are in every example (CONTRACT.md).
    required: ['amount', 'customer'],
  },
  {
    event: 'invoice.sent',
    data: { invoice_id: 'inv-123', invoice_number: '001-001-000000001', sent_at: '2024-02-14T10:30:00' },
    required: ['invoice_id', 'invoice_number', 'sent_at'],
  },
  {
    event: 'invoice.authorized',
    data: { invoice_id: 'inv-123', authorization_number: '1234567890', authorization_date: '2024-02-14T10:35:00' },
    required: ['invoice_id', 'authorization_number', 'authorization_date'],
  },
  {
    event: 'invoice.rejected',
    data: { invoice_id: 'inv-123', rejection_reason: 'Invalid RUC', rejected_at: '2024-02-14T10:40:00' },
    required: ['invoice_id', 'rejection_reason', 'rejected_at'],
  },
  {
    event: 'payment.received',
    data: GUIDE_PAYMENT_RECEIVED,
    required: ['payment_id', 'invoice_id', 'amount', 'method', 'reference', 'received_at'],
  },
  {
    event: 'customer.created',
    data: {
      customer_id: 'cust-789',
      business_name: 'Acme Corp',
      ruc: '1234567890001',
      country: 'Ecuador',
      created_at: '2024-02-14T12:00:00',
    },
    required: ['customer_id', 'business_name', 'ruc', 'country', 'created_at'],
  },
  {
    event: 'customer.updated',
    data: { customer_id: 'cust-789', business_name: 'Acme Corp Updated', updated_at: '2024-02-14T12:05:00' },
    required: ['customer_id', 'business_name', 'updated_at'],
  },
  {
    event: 'sales_order.created',
    data: { order_id: 'so-001', customer_id: 'cust-789', amount: '2500.00', items_count: 5, created_at: '2024-02-14T13:00:00' },
    required: ['order_id', 'customer_id', 'amount', 'items_count', 'created_at'],
  },
  {
    event: 'sales_order.confirmed',
    data: { order_id: 'so-001', confirmed_at: '2024-02-14T13:15:00' },
    required: ['order_id', 'confirmed_at'],
  },
];

/** invoice.created as the guide's "Test 1" sends it (amount as a number, no invoice_number). */
const TEST1_INVOICE = { invoice_id: 'inv-123', amount: 1500.0, customer: 'Acme Corp' };
/** invoice.created as the guide's service examples (Método 1/2) send it. */
const SERVICE_INVOICE = { invoice_number: '001-001-000000001', amount: '1500.00', currency: 'USD', customer: 'Acme Corp', status: 'draft' };

const BUILT_IN = [...GUIDE_EVENTS.map((e) => e.event), 'test.event'];

let hl: TestHookline;
let key: string;
const receivers: Receiver[] = [];

beforeAll(async () => {
  hl = await startTestHookline();
  key = (await hl.createTenant('Catalog')).apiKey;
});
afterAll(async () => {
  await hl?.stop();
  await Promise.all(receivers.map((r) => r.close()));
});

async function count(table: string): Promise<number> {
  const [row] = await hl.dataSource.query(`select count(*)::int as n from ${table}`);
  return row.n;
}

async function trigger(event: string, data: unknown, apiKey = key) {
  return hl.gql(TRIGGER, { input: { event, data } }, apiKey);
}

/** Expects the trigger to succeed and to have recorded exactly the given data. */
async function expectAccepted(event: string, data: unknown) {
  const res = await trigger(event, data);
  expect(res.errors, `${event} ${JSON.stringify(data)}: ${JSON.stringify(res.errors)}`).toBeUndefined();
  expect(res.data.triggerEvent).toMatchObject({ duplicate: false, event: { event, data } });
  return res.data.triggerEvent;
}

/** Expects BAD_USER_INPUT on field `data` with a message containing each of `mentions`, and nothing written. */
async function expectRejected(event: string, data: unknown, mentions: string[] = []) {
  const before = await count('webhook_events');
  const res = await trigger(event, data);
  expect(res.errors, `${event} ${JSON.stringify(data)} should be rejected`).toBeDefined();
  expect(res.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
  expect(res.errors![0]!.message).toContain('data');
  for (const m of mentions) expect(res.errors![0]!.message).toContain(m);
  expect(res.data ?? null).toBeNull();
  expect(await count('webhook_events')).toBe(before);
}

function without(data: Record<string, unknown>, field: string) {
  const { [field]: _dropped, ...rest } = data;
  return rest;
}

describe('eventTypes', () => {
  it('lists the guide\'s 10 built-in events, each with a description and a JSON Schema of an object', async () => {
    const res = await hl.gql(EVENT_TYPES, {}, key);
    expect(res.errors).toBeUndefined();
    const types: Array<{ name: string; description: string; schema: any; builtIn: boolean; createdAt: string }> = res.data.eventTypes;
    const byName = new Map(types.map((t) => [t.name, t]));
    for (const name of BUILT_IN) {
      const type = byName.get(name);
      expect(type, name).toBeDefined();
      expect(type!.builtIn, name).toBe(true);
      expect(typeof type!.description, name).toBe('string');
      expect(type!.description.trim().length, name).toBeGreaterThan(0);
      expect(type!.schema, name).toBeTypeOf('object');
      expect(Array.isArray(type!.schema), name).toBe(false);
      expect(type!.schema.type, name).toBe('object');
      expect(Number.isNaN(Date.parse(type!.createdAt)), name).toBe(false);
    }
    // A fresh tenant has no types of its own.
    expect(types.filter((t) => !t.builtIn)).toEqual([]);
    expect(new Set(types.map((t) => t.name)).size).toBe(types.length);
  });

  it('each built-in schema declares the fields of the guide\'s example as required', async () => {
    const res = await hl.gql(EVENT_TYPES, {}, key);
    const byName = new Map<string, any>(res.data.eventTypes.map((t: any) => [t.name, t]));
    for (const { event, required } of GUIDE_EVENTS) {
      expect(byName.get(event).schema.required ?? [], event).toEqual(expect.arrayContaining(required));
    }
    expect(byName.get('test.event').schema.required ?? []).toEqual([]);
  });
});

describe('built-in schemas accept the guide\'s example data', () => {
  for (const { event, data } of GUIDE_EVENTS) {
    it(`${event}: the guide's example`, async () => {
      await expectAccepted(event, data);
    });
  }

  it('invoice.created: both the Test 1 form (amount a number) and the service form (amount a string)', async () => {
    const test1 = await expectAccepted('invoice.created', TEST1_INVOICE);
    expect(test1.event).toMatchObject({ resourceType: 'invoice', resourceId: 'inv-123' });
    await expectAccepted('invoice.created', SERVICE_INVOICE);
    // Ejemplo 1 of the guide: the service form without status.
    await expectAccepted('invoice.created', without(SERVICE_INVOICE, 'status'));
  });

  it('built-in schemas allow more fields than they require', async () => {
    for (const { event, data } of GUIDE_EVENTS) await expectAccepted(event, { ...data, extra_field: { nested: [1, 2, 3] } });
  });

  it('takes an app\'s record ids as integers as well as strings', async () => {
    for (const { event, data } of GUIDE_EVENTS) {
      const ids = Object.fromEntries(Object.keys(data).filter((k) => /^(invoice|payment|customer|order)_id$/.test(k)).map((k, i) => [k, 1000 + i]));
      if (Object.keys(ids).length) await expectAccepted(event, { ...data, ...ids });
    }
    const sent = GUIDE_EVENTS.find((e) => e.event === 'invoice.sent')!.data;
    await expectRejected('invoice.sent', { ...sent, invoice_id: 1.5 }, ['invoice_id']);
    await expectRejected('invoice.sent', { ...sent, invoice_id: 2 ** 53 + 2 }, ['invoice_id']); // would arrive rounded: as text, then
  });

  it('test.event accepts any object', async () => {
    await expectAccepted('test.event', { test: true });
    await expectAccepted('test.event', {});
    await expectAccepted('test.event', { message: 'hello', nested: { a: [1, 'two', null] } });
  });
});

describe('built-in schemas reject data missing a required field, naming it', () => {
  for (const { event, data, required } of GUIDE_EVENTS) {
    for (const field of required) {
      it(`${event} without ${field}`, async () => {
        await expectRejected(event, without(data, field), [field]);
      });
    }
  }

  it('invoice.created without amount or customer, in both the Test 1 and the service form', async () => {
    for (const form of [TEST1_INVOICE, SERVICE_INVOICE]) {
      await expectRejected('invoice.created', without(form, 'amount'), ['amount']);
      await expectRejected('invoice.created', without(form, 'customer'), ['customer']);
    }
  });

  it('invoice.created does not require what only some examples carry', async () => {
    for (const field of ['invoice_id', 'invoice_number', 'currency', 'status']) {
      await expectAccepted('invoice.created', without(GUIDE_EVENTS[0]!.data, field));
    }
  });

  it('invoice.created refuses an amount that is neither a string nor a number', async () => {
    await expectRejected('invoice.created', { ...TEST1_INVOICE, amount: true }, ['amount']);
    await expectRejected('invoice.created', { ...TEST1_INVOICE, amount: { value: 1500 } }, ['amount']);
  });

  it('test.event refuses data that is not an object', async () => {
    await expectRejected('test.event', [1, 2]);
    await expectRejected('test.event', 'x');
    await expectRejected('test.event', 42);
  });

  it('every built-in event refuses data that is not an object', async () => {
    for (const name of BUILT_IN) await expectRejected(name, [GUIDE_EVENTS[0]!.data]);
  });

  it('an unknown event name is BAD_USER_INPUT on event', async () => {
    const before = await count('webhook_events');
    const res = await trigger('invoice.exploded', { amount: 1, customer: 'x' });
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
    expect(res.errors?.[0]?.message).toContain('invoice.exploded');
    expect(await count('webhook_events')).toBe(before);
  });
});

describe('createEventType', () => {
  it('checks a pattern in linear time (no backtracking blow-up), and refuses one RE2 cannot run so', async () => {
    const tenant = await hl.createTenant('Patterns');
    const schema = { type: 'object', properties: { code: { type: 'string', pattern: '^(a+)+$' } } };
    const created = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'code.checked', schema } }, tenant.apiKey);
    expect(created.errors).toBeUndefined();
    // With JavaScript's backtracking engine this takes minutes (each extra 'a' doubles it).
    const started = Date.now();
    const res = await hl.gql(TRIGGER, { input: { event: 'code.checked', data: { code: `${'a'.repeat(40)}!` } } }, tenant.apiKey);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(Date.now() - started).toBeLessThan(5_000);
    const ok = await hl.gql(TRIGGER, { input: { event: 'code.checked', data: { code: 'aaaa' } } }, tenant.apiKey);
    expect(ok.errors).toBeUndefined();

    const backreference = { type: 'object', properties: { twice: { type: 'string', pattern: '^(a)\\1$' } } };
    const refused = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'code.twice', schema: backreference } }, tenant.apiKey);
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'schema' });
  }, 30_000);

  it('bounds what checking data may cost: no recursive $ref, no schema too large counting each $ref as its target, patterns bounded; nothing is written', async () => {
    const tenant = await hl.createTenant('Costly schemas');
    const defs: Record<string, unknown> = { d30: { type: 'string' } };
    for (let i = 0; i < 30; i++) defs[`d${i}`] = { allOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
    const leaf = { type: 'object', properties: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`p${i}`, { type: 'string' }])) };
    const refused: Array<[schema: Record<string, unknown>, message: string]> = [
      // With anyOf over nested arrays, 190 bytes of data took 16 s (every tenant waiting).
      [
        { type: 'object', properties: { x: { $ref: '#/$defs/a' } }, $defs: { a: { anyOf: [{ allOf: [{ items: { $ref: '#/$defs/a' } }, { const: 'never' }] }, { items: { $ref: '#/$defs/a' } }] } } },
        'schema.$defs.a: a $ref that leads back to where it is (recursion) is not supported',
      ],
      [{ type: 'object', properties: { self: { $ref: '#' } } }, 'recursion'],
      // Each definition using the next twice: 2^30 checks per value.
      [{ $ref: '#/$defs/d0', $defs: defs }, 'too large, counting each $ref as what it refers to (at most 1000 parts)'],
      // 200 uses of a definition of 200 properties: 13 s and 1.5 GB to compile.
      [{ type: 'object', properties: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`q${i}`, { $ref: '#/$defs/leaf' }])), $defs: { leaf } }, 'too large'],
      [{ $ref: 'https://example.com/schema.json' }, 'only a $ref within the schema (#/... or an anchor #name) is supported'],
      // RE2's memory, the whole process's: one such pattern over a long string filled it.
      [{ type: 'object', properties: { s: { type: 'string', pattern: '(?:a?){1000}b' } } }, 'schema.properties.s.pattern: a pattern may repeat a part at most 100 times'],
      [{ type: 'object', properties: { s: { type: 'string', pattern: '((ab){20}c){20}' } } }, 'counted repetitions inside others multiplied'],
      [{ type: 'object', properties: { s: { type: 'string', pattern: 'a'.repeat(257) } } }, 'at most 256 characters'],
      [{ type: 'object', patternProperties: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`^k${i}$`, { type: 'string' }])) }, 'at most 20 patterns in a schema'],
    ];
    refused.push(
      // Each value of an enum is compared with the data (a tenth of a part each).
      [{ type: 'object', properties: { s: { enum: Array.from({ length: 2_100 }, (_, i) => i) } } }, 'too large'],
      // Under a property named as a data keyword, a schema all the same.
      [{ type: 'object', properties: { example: { type: 'string', pattern: '(?:a?){1000}b' } } }, 'schema.properties.example.pattern: a pattern may repeat'],
      [
        { definitions: { r: { anyOf: [{ type: 'array', items: { type: 'object', properties: { default: { $ref: '#/definitions/r' } } } }, { type: 'string' }] } }, properties: { default: { $ref: '#/definitions/r' } } },
        'recursion',
      ],
      [{ type: 'object', properties: { default: { type: 'array', uniqueItems: true } } }, 'uniqueItems needs'],
      // A class whose first character is ], or a POSIX class holding one, is one class.
      [{ type: 'object', properties: { s: { type: 'string', pattern: '(?:(?:a?){100}[])]?){10}b' } } }, 'a pattern may repeat'],
      [{ type: 'object', properties: { s: { type: 'string', pattern: '(?:(?:a?){100}[[:alpha:])]?){10}b' } } }, 'a pattern may repeat'],
      // An anchor copied into data (a default) is no anchor to ajv, whose real one recurses.
      [
        { definitions: { n: { $id: '#n', anyOf: [{ type: 'array', items: { $ref: '#n' } }, { type: 'integer' }] } }, properties: { a: { $ref: '#n' } }, default: { $id: '#n' } },
        'recursion',
      ],
      // A pattern used through many $refs runs at each use.
      [{ definitions: { p: { type: 'string', pattern: '^[a-z]*$' } }, allOf: Array.from({ length: 21 }, () => ({ $ref: '#/definitions/p' })) }, 'at most 20 patterns in a schema, counting each $ref'],
      // RE2's fast matcher gives up on such a pattern over a long string (4 s for 250 KB).
      [{ type: 'object', properties: { s: { type: 'string', pattern: '[ab]*a[ab]{20}c' } } }, 'needs a maxLength beside it of at most 4761'],
      [{ type: 'object', properties: { s: { type: 'string', maxLength: 10_000, pattern: '[ab]*a[ab]{20}c' } } }, 'needs a maxLength'],
      // As slow split or spelt out (3.7-8.9 s over 244 KB).
      [{ type: 'object', properties: { s: { type: 'string', pattern: '[ab]*a[ab]{7}[ab]{7}c' } } }, 'a pattern with more than 10 parts matching more than one character (15'],
      [{ type: 'object', properties: { s: { type: 'string', pattern: `[ab]*a${'[ab]'.repeat(14)}c` } } }, 'a pattern with more than 10 parts'],
      [{ type: 'object', patternProperties: { 'x-[a-z]{13}': { type: 'string' } } }, 'a pattern of property names may hold at most 10 parts'],
      // A start or an end that only looks sure: ^? or ^{0,1} (optional), \Q$ (a literal $), (?m) (lines).
      [{ type: 'object', properties: { s: { type: 'string', pattern: '^?a[ab]{90}c\\Q$' } } }, 'an unsure start'],
      [{ type: 'object', properties: { s: { type: 'string', pattern: '^{0,1}a[ab]{20}c\\Q$' } } }, 'an unsure start'],
      [{ type: 'object', properties: { s: { type: 'string', pattern: '^(?m)a[ab]{20}c$' } } }, 'an unsure start'],
      // What RE2 compiles: a Unicode property is a large automaton (\pL{100} filled its memory).
      [{ type: 'object', properties: { s: { type: 'string', pattern: '^\\pL{100}$' } } }, 'a pattern may hold at most 1000 parts'],
      // An anchor only in data (an example) is no schema here, while ajv would find it.
      [{ type: 'object', properties: { s: { $ref: '#p' } }, example: { $id: '#p', type: 'string', pattern: '[ab]*a[ab]{20}c' } }, 'no schema has the anchor #p'],
      // Deep comparison of each non-scalar value of an enum.
      [{ type: 'object', properties: { s: { enum: Array.from({ length: 900 }, (_, i) => [i]) } } }, 'too large'],
      // Another $id inside would make $refs there relative to it, not to what is checked.
      [
        { definitions: { d: { type: 'string' } }, properties: { x: { $id: 'http://e.test/n.json', definitions: { d: { anyOf: [{ type: 'array', items: { $ref: '#/definitions/d' } }, { type: 'integer' }] } }, allOf: [{ $ref: '#/definitions/d' }] } } },
        '$id is supported only at the top of the schema',
      ],
      [{ type: 'object', description: 'x'.repeat(64 * 1024) }, 'may be at most 64 KiB as JSON'],
    );
    for (const [schema, message] of refused) {
      const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'costly.event', schema } }, tenant.apiKey);
      expect(res.errors?.[0], message).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'schema' }, message: expect.stringContaining(message) });
    }
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from event_types where tenant_id = $1', [tenant.id]);
    expect(n).toBe(0);

    // Within the bounds: a definition used in several places, a pattern repeating 100 times.
    const fine = {
      type: 'object',
      properties: { from: { $ref: '#/$defs/address' }, to: { $ref: '#/$defs/address' }, code: { type: 'string', maxLength: 1_000, pattern: '^(?:[A-Z]{2}-){0,10}[0-9]{1,100}$' } },
      $defs: { address: { type: 'object', required: ['city'], properties: { city: { type: 'string', minLength: 1 } } } },
    };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'parcel.moved', schema: fine } }, tenant.apiKey)).errors).toBeUndefined();
    // A draft-07 anchor, an enum of 155 currencies used six times, \Q…\E literal text.
    const currency = { enum: Array.from({ length: 155 }, (_, i) => `C${String(i).padStart(2, '0')}`) };
    const invoice = {
      type: 'object',
      definitions: { currency, address: { $id: '#address', type: 'object' } },
      properties: {
        ...Object.fromEntries(['currency', 'subtotal', 'tax', 'total', 'discount', 'lines'].map((k) => [k, { $ref: '#/definitions/currency' }])),
        billing: { $ref: '#address' },
        note: { type: 'string', pattern: '^\\Q{1000}\\E' },
        // Anchored at both ends with nothing unbounded: at most so many characters read.
        ruc: { type: 'string', pattern: '^[0-9]{13}$' },
        accessKey: { type: 'string', pattern: '^[0-9]{49}$' },
        uuid: { type: 'string', pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' },
        order: { type: 'string', pattern: '^SO-\\d{6}(-\\d+)?$' },
        at: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?Z$' },
      },
    };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'invoice.priced', schema: invoice } }, tenant.apiKey)).errors).toBeUndefined();
    const wrong = await hl.gql(TRIGGER, { input: { event: 'parcel.moved', data: { from: { city: 'Quito' }, to: {}, code: 'EC-12' } } }, tenant.apiKey);
    expect(wrong.errors?.[0]?.message).toContain('data.to.city is required');
    const right = await hl.gql(TRIGGER, { input: { event: 'parcel.moved', data: { from: { city: 'Quito' }, to: { city: 'Lima' }, code: 'EC-PE-12' } } }, tenant.apiKey);
    expect(right.errors).toBeUndefined();
  });

  it('gives back the memory of the patterns it checks at creation (RE2\'s, one fixed size for the whole process)', async () => {
    // 16,000 distinct patterns checked (800 types of 20, 100 a tenant): without being freed they
    // filled RE2's memory (about 14,000 did), and then every tenant's patterns failed.
    const tenants = await Promise.all(Array.from({ length: 8 }, (_, i) => hl.createTenant(`Many patterns ${i}`)));
    for (let batch = 0; batch < 40; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const n = batch * 20 + i;
          const schema = { type: 'object', patternProperties: Object.fromEntries(Array.from({ length: 20 }, (_, k) => [`^p${n}x${k}[a-z]{1,4}$`, { type: 'string' }])) };
          const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: `many.p${n}`, schema } }, tenants[Math.floor(batch / 5)]!.apiKey);
          expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
        }),
      );
    }
    const sku = { type: 'object', required: ['sku'], properties: { sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]+$' } } };
    const other = await hl.createTenant('After many patterns');
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'many.sku', schema: sku } }, other.apiKey)).errors).toBeUndefined();
    expect((await hl.gql(TRIGGER, { input: { event: 'many.sku', data: { sku: 'ABC-12' } } }, other.apiKey)).errors).toBeUndefined();
    expect((await hl.gql(TRIGGER, { input: { event: 'many.sku', data: { sku: 'abc' } } }, other.apiKey)).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  }, 60_000);

  it('holds at most 100 event types of a tenant\'s own', async () => {
    const tenant = await hl.createTenant('Many types');
    const schema = { type: 'object' };
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: `kind.t${batch * 10 + i}`, schema } }, tenant.apiKey);
          expect(res.errors).toBeUndefined();
        }),
      );
    }
    const over = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'kind.t100', schema } }, tenant.apiKey);
    expect(over.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'name' }, message: expect.stringContaining('at most 100 event types') });
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from event_types where tenant_id = $1', [tenant.id]);
    expect(n).toBe(100);
    // Another tenant's count is its own.
    const other = await hl.createTenant('Few types');
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'kind.t100', schema } }, other.apiKey)).errors).toBeUndefined();
  });

  it('does not run a costly schema stored before the bounds were checked', async () => {
    const tenant = await hl.createTenant('Stored before');
    const schema = { type: 'object', properties: { x: { $ref: '#/$defs/a' } }, $defs: { a: { anyOf: [{ items: { $ref: '#/$defs/a' } }, { type: 'string' }] } } };
    await hl.dataSource.query(`insert into event_types (tenant_id, name, description, schema) values ($1, 'legacy.nested', '', $2)`, [tenant.id, schema]);
    const res = await hl.gql(TRIGGER, { input: { event: 'legacy.nested', data: { x: [[['deep']]] } } }, tenant.apiKey);
    expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'event' }, message: expect.stringContaining('the schema of legacy.nested costs too much to check') });
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [tenant.id]);
    expect(n).toBe(0);
    // Created again within the bounds, its name is usable again (a type within them is not replaced).
    const flat = { type: 'object', properties: { x: { type: 'array', items: { type: 'array' } } } };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'legacy.nested', schema: flat } }, tenant.apiKey)).errors).toBeUndefined();
    expect((await hl.gql(TRIGGER, { input: { event: 'legacy.nested', data: { x: [['deep']] } } }, tenant.apiKey)).errors).toBeUndefined();
    const again = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'legacy.nested', schema: { type: 'object' } } }, tenant.apiKey);
    expect(again.errors?.[0]?.message).toContain('already exists');
    // Nor is a built-in type, whatever its name.
    const builtIn = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'invoice.created', schema: { type: 'object' } } }, tenant.apiKey);
    expect(builtIn.errors?.[0]?.message).toContain('already exists');
  });

  it('takes uniqueItems only over items of a scalar type, which are compared in linear time', async () => {
    const tenant = await hl.createTenant('Unique items');
    const schemaWith = (items?: unknown) => ({ type: 'object', properties: { tags: { type: 'array', uniqueItems: true, ...(items ? { items } : {}) } } });
    for (const items of [undefined, { type: 'object' }, { type: ['string', 'array'] }, {}]) {
      const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'tags.set', schema: schemaWith(items) } }, tenant.apiKey);
      expect(res.errors?.[0], JSON.stringify(items)).toMatchObject({
        extensions: { code: 'BAD_USER_INPUT', field: 'schema' },
        message: expect.stringContaining('schema.properties.tags: uniqueItems needs "items" with a scalar "type"'),
      });
    }
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from event_types where tenant_id = $1', [tenant.id]);
    expect(n).toBe(0);
    // A {"uniqueItems": true} that is data (a const, a default, an example) is no keyword.
    const asData = { type: 'object', properties: { kind: { const: { uniqueItems: true }, default: { uniqueItems: true }, examples: [{ uniqueItems: true }] } } };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'tags.described', schema: asData } }, tenant.apiKey)).errors).toBeUndefined();
    const created = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'tags.set', schema: schemaWith({ type: ['string', 'null'] }) } }, tenant.apiKey);
    expect(created.errors).toBeUndefined();
    const twice = await hl.gql(TRIGGER, { input: { event: 'tags.set', data: { tags: ['a', 'b', 'a'] } } }, tenant.apiKey);
    expect(twice.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    const many = Array.from({ length: 30_000 }, (_, i) => `t${i}`);
    expect((await hl.gql(TRIGGER, { input: { event: 'tags.set', data: { tags: many } } }, tenant.apiKey)).errors).toBeUndefined();
  });

  it('enforces the standard formats a schema names (email here), rather than ignore them', async () => {
    const tenant = await hl.createTenant('Formats');
    const schema = { type: 'object', required: ['contact'], properties: { contact: { type: 'string', format: 'email' } } };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'contact.added', schema } }, tenant.apiKey)).errors).toBeUndefined();
    const bad = await hl.gql(TRIGGER, { input: { event: 'contact.added', data: { contact: 'not an address' } } }, tenant.apiKey);
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(bad.errors?.[0]?.message).toContain('email');
    const good = await hl.gql(TRIGGER, { input: { event: 'contact.added', data: { contact: 'ana@example.com' } } }, tenant.apiKey);
    expect(good.errors).toBeUndefined();
  });

  it('names the property an error is about (one not allowed, a key with /)', async () => {
    const tenant = await hl.createTenant('Amounts');
    const schema = { type: 'object', additionalProperties: false, properties: { total: { type: 'number' }, 'a/b': { type: 'string' } } };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'amount.set', schema } }, tenant.apiKey)).errors).toBeUndefined();
    const extra = await hl.gql(TRIGGER, { input: { event: 'amount.set', data: { total: 1, coupon: 'X' } } }, tenant.apiKey);
    expect(extra.errors?.[0]?.message).toContain('data.coupon is not allowed');
    const slashed = await hl.gql(TRIGGER, { input: { event: 'amount.set', data: { 'a/b': 1 } } }, tenant.apiKey);
    expect(slashed.errors?.[0]?.message).toContain('data.a/b must be string');
  });

  it('refuses what a draft-07 validator would never check: keywords of later drafts, unknown formats, another $schema', async () => {
    const tenant = await hl.createTenant('Dialects');
    const refused: Array<[object, string]> = [
      [{ type: 'object', unevaluatedProperties: false }, '"unevaluatedProperties", a keyword of a later JSON Schema draft'],
      [{ type: 'object', dependentRequired: { a: ['b'] } }, '"dependentRequired"'],
      [{ type: 'object', properties: { list: { type: 'array', prefixItems: [{ type: 'string' }] } } }, '"prefixItems"'],
      [{ type: 'object', properties: { contact: { type: 'string', format: 'e-mail' } } }, 'the format "e-mail" at #/properties/contact, which Hookline does not know'],
      [{ $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object' }, 'Hookline validates draft-07 JSON Schemas'],
      [{ $schema: 'https://json-schema.org/draft-07/schema#', type: 'object' }, 'as draft-07 writes it'],
      // What no event's data (a JSON object) could ever pass: every trigger of the type would fail.
      [{ type: 'string' }, 'has "type": "string" at its top, so no event could pass'],
      [{ type: ['array', 'null'] }, 'has "type": ["array","null"] at its top'],
      [{ not: {} }, 'has "not": {} at its top'],
      [{ allOf: [{ required: ['a'] }, { type: 'string' }] }, 'has "type": "string" at #/allOf/1'],
      [{ $ref: '#/definitions/x', definitions: { x: { type: 'array' } } }, 'has "type": "array" at #/definitions/x'],
      [{ enum: [1, 2] }, 'has an "enum" with no object at its top'],
      [{ const: 'a' }, 'has a "const" that is no object at its top'],
      [{ anyOf: [{ type: 'string' }, { enum: [null] }] }, 'no branch of "anyOf" at its top that admits an object'],
    ];
    for (const [schema, message] of refused) {
      const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'dialect.checked', schema } }, tenant.apiKey);
      expect(res.errors?.[0]?.extensions, JSON.stringify(schema)).toMatchObject({ code: 'BAD_USER_INPUT', field: 'schema' });
      expect(res.errors?.[0]?.message).toContain(message);
    }
    // Annotations it does not know, and the draft-07 $schema, are as draft-07 says: fine.
    const schema = { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', 'x-owner': 'billing', properties: { a: { type: 'string', example: 'x' } } };
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'dialect.checked', schema } }, tenant.apiKey)).errors).toBeUndefined();
    // What some object may pass is taken, however narrow.
    for (const [i, admits] of [
      { type: ['object', 'null'] },
      { enum: [{ a: 1 }, 'b'] },
      { anyOf: [{ type: 'string' }, { type: 'object', required: ['a'] }] },
      { not: { required: ['a'] } },
      { $ref: '#/definitions/x', definitions: { x: { properties: { a: { type: 'string' } } } } },
      // Anchors are not followed (each was taken for the root: 3 of them took 21 s of CPU).
      {
        definitions: Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`o${i}`, { $id: `#a${i}`, type: 'object' }])),
        anyOf: Array.from({ length: 4 }, (_, i) => ({ $ref: `#a${i}` })),
      },
    ].entries()) {
      const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: `dialect.either${i}`, schema: admits } }, tenant.apiKey);
      expect(res.errors, JSON.stringify(admits)).toBeUndefined();
    }
  });

  const SHIPMENT_SCHEMA = {
    type: 'object',
    required: ['tracking'],
    properties: { tracking: { type: 'string' }, carrier: { type: 'string' } },
  };

  it('takes a name with hyphens (sales-order.shipped), selectable by its prefix', async () => {
    const { apiKey } = await hl.createTenant('Hyphens');
    const created = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'sales-order.shipped', schema: { type: 'object' } } }, apiKey);
    expect(created.errors, JSON.stringify(created.errors)).toBeUndefined();
    const sub = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { events } } }',
      { input: { url: 'http://127.0.0.1:9/hook', events: ['sales-order.*'] } },
      apiKey,
    );
    expect(sub.errors, JSON.stringify(sub.errors)).toBeUndefined();
    const res = await hl.gql('mutation { triggerEvent(input: { event: "sales-order.shipped", data: {} }) { deliveries { id } } }', {}, apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.triggerEvent.deliveries).toHaveLength(1);
  });

  it('registers an own type that is listed, validated by triggerEvent and selectable by a subscription', async () => {
    const tenant = await hl.createTenant('Shipper');
    const before = await count('event_types');
    const res = await hl.gql(
      CREATE_EVENT_TYPE,
      { input: { name: 'shipment.dispatched', description: 'A shipment left the warehouse.', schema: SHIPMENT_SCHEMA } },
      tenant.apiKey,
    );
    expect(res.errors).toBeUndefined();
    expect(res.data.createEventType).toMatchObject({
      name: 'shipment.dispatched',
      description: 'A shipment left the warehouse.',
      schema: SHIPMENT_SCHEMA,
      builtIn: false,
    });
    expect(await count('event_types')).toBe(before + 1);

    const listed = (await hl.gql(EVENT_TYPES, {}, tenant.apiKey)).data.eventTypes;
    expect(listed.filter((t: any) => t.name === 'shipment.dispatched')).toEqual([
      expect.objectContaining({ name: 'shipment.dispatched', builtIn: false, schema: SHIPMENT_SCHEMA }),
    ]);
    // The built-ins are still listed beside it.
    for (const name of BUILT_IN) expect(listed.find((t: any) => t.name === name)?.builtIn, name).toBe(true);

    // A subscription can select it, exactly and by pattern.
    const receiver = await startReceiver();
    receivers.push(receiver);
    const exact = await hl.gql(CREATE_SUB, { input: { url: `${receiver.url}/exact`, events: ['shipment.dispatched'] } }, tenant.apiKey);
    expect(exact.errors).toBeUndefined();
    expect(exact.data.createWebhookSubscription.subscription.events).toEqual(['shipment.dispatched']);
    const pattern = await hl.gql(CREATE_SUB, { input: { url: `${receiver.url}/pattern`, events: ['shipment.*'] } }, tenant.apiKey);
    expect(pattern.errors).toBeUndefined();
    const subIds = [exact.data.createWebhookSubscription.subscription.id, pattern.data.createWebhookSubscription.subscription.id];

    // triggerEvent validates against its schema...
    const events = await count('webhook_events');
    const missing = await hl.gql(TRIGGER, { input: { event: 'shipment.dispatched', data: { carrier: 'DHL' } } }, tenant.apiKey);
    expect(missing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(missing.errors?.[0]?.message).toContain('tracking');
    const wrongType = await hl.gql(TRIGGER, { input: { event: 'shipment.dispatched', data: { tracking: 42 } } }, tenant.apiKey);
    expect(wrongType.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
    expect(wrongType.errors?.[0]?.message).toContain('tracking');
    expect(await count('webhook_events')).toBe(events);

    // ...and a valid one goes to both subscriptions.
    const ok = await hl.gql(TRIGGER, { input: { event: 'shipment.dispatched', data: { tracking: 'TRK-1', carrier: 'DHL' } } }, tenant.apiKey);
    expect(ok.errors).toBeUndefined();
    expect(ok.data.triggerEvent.event).toMatchObject({ event: 'shipment.dispatched', resourceType: 'shipment' });
    expect(ok.data.triggerEvent.deliveries.map((d: any) => d.subscription.id).sort()).toEqual([...subIds].sort());
    const received = await receiver.waitFor(2);
    expect(received.map((r) => r.path).sort()).toEqual(['/exact', '/pattern']);
    for (const r of received) {
      expect(r.headers['x-webhook-event']).toBe('shipment.dispatched');
      expect(JSON.parse(r.body).data).toEqual({ tracking: 'TRK-1', carrier: 'DHL' });
    }
  });

  describe('refuses bad input with BAD_USER_INPUT naming the field, writing nothing', () => {
    let tenantKey: string;
    beforeAll(async () => {
      tenantKey = (await hl.createTenant('Refused')).apiKey;
      const own = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'parcel.lost', schema: { type: 'object' } } }, tenantKey);
      expect(own.errors).toBeUndefined();
    });

    const cases: Array<[string, Record<string, unknown>, 'name' | 'schema']> = [
      ['a name with upper case', { name: 'Shipment', schema: SHIPMENT_SCHEMA }, 'name'],
      ['a name with upper case and a dot', { name: 'Shipment.Dispatched', schema: SHIPMENT_SCHEMA }, 'name'],
      ['a name without a dot', { name: 'nodot', schema: SHIPMENT_SCHEMA }, 'name'],
      ['a name with a word that does not start with a letter', { name: 'parcel.-lost', schema: SHIPMENT_SCHEMA }, 'name'],
      ['an empty name', { name: '', schema: SHIPMENT_SCHEMA }, 'name'],
      ['the name of a built-in type', { name: 'invoice.created', schema: SHIPMENT_SCHEMA }, 'name'],
      ['the name of a built-in type (test.event)', { name: 'test.event', schema: { type: 'object' } }, 'name'],
      ['the name of an own type', { name: 'parcel.lost', schema: SHIPMENT_SCHEMA }, 'name'],
      ['a schema that is a string', { name: 'parcel.found', schema: 'x' }, 'schema'],
      ['a schema that is an array', { name: 'parcel.found', schema: [{ type: 'object' }] }, 'schema'],
      ['a schema that is a number', { name: 'parcel.found', schema: 42 }, 'schema'],
      ['a schema of an unknown type', { name: 'parcel.found', schema: { type: 'nonsense' } }, 'schema'],
      ['a schema with a malformed keyword', { name: 'parcel.found', schema: { type: 'object', required: 'tracking' } }, 'schema'],
    ];
    // KNOWN SRC BUG (fails until fixed): a schema whose $schema names a meta-schema ajv does not have
    // makes createEventType answer INTERNAL_SERVER_ERROR: src/webhooks/catalog.ts (EventCatalog.create)
    // calls this.ajv.validateSchema(schema) outside any try, and ajv throws
    // "no schema with key or ref ..." for an unknown $schema. It must be BAD_USER_INPUT on `schema`.
    cases.push(['a schema naming an unknown meta-schema', { name: 'parcel.found', schema: { $schema: 'http://example.com/unknown', type: 'object' } }, 'schema']);
    for (const [title, input, field] of cases) {
      it(title, async () => {
        const before = await count('event_types');
        const res = await hl.gql(CREATE_EVENT_TYPE, { input }, tenantKey);
        expect(res.errors, JSON.stringify(res)).toBeDefined();
        expect(res.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
        expect(res.errors![0]!.message).toContain(field);
        expect(res.data ?? null).toBeNull();
        expect(await count('event_types')).toBe(before);
      });
    }

    // KNOWN SRC BUG (fails until fixed), same cause as "a schema naming an unknown meta-schema": a
    // draft 2020-12 schema (what many tools emit) is an INTERNAL_SERVER_ERROR. Either supporting it
    // (ajv/dist/2020) or refusing it as BAD_USER_INPUT on `schema` is acceptable; a 500 is not.
    it('a draft 2020-12 schema is accepted or refused as BAD_USER_INPUT, never an internal error', async () => {
      const before = await count('event_types');
      const schema = { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object', required: ['id'] };
      const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'parcel.modern', schema } }, tenantKey);
      if (res.errors) {
        expect(res.errors[0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'schema' });
        expect(await count('event_types')).toBe(before);
      } else {
        expect(res.data.createEventType).toMatchObject({ name: 'parcel.modern', builtIn: false });
        const missing = await hl.gql(TRIGGER, { input: { event: 'parcel.modern', data: {} } }, tenantKey);
        expect(missing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'data' });
      }
    });

    it('the refused names are still not usable as events', async () => {
      const res = await hl.gql(TRIGGER, { input: { event: 'parcel.found', data: {} } }, tenantKey);
      expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
      const types = (await hl.gql(EVENT_TYPES, {}, tenantKey)).data.eventTypes;
      const own = types.filter((t: any) => !t.builtIn).map((t: any) => t.name);
      expect(own.filter((n: string) => n !== 'parcel.modern')).toEqual(['parcel.lost']);
      // The built-in invoice.created is untouched.
      const invoice = types.filter((t: any) => t.name === 'invoice.created');
      expect(invoice).toHaveLength(1);
      expect(invoice[0].builtIn).toBe(true);
    });
  });

  it('an event of an own type is dispatched end to end like any other (DELIVERED)', async () => {
    const tenant = await hl.createTenant('Own type delivery');
    const receiver = await startReceiver();
    receivers.push(receiver);
    await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'crate.packed', schema: { type: 'object' } } }, tenant.apiKey);
    const sub = await hl.gql(CREATE_SUB, { input: { url: receiver.url, events: ['crate.packed'] } }, tenant.apiKey);
    expect(sub.errors).toBeUndefined();
    const res = await hl.gql(TRIGGER, { input: { event: 'crate.packed', data: { id: 'c-1' } } }, tenant.apiKey);
    const id = res.data.triggerEvent.deliveries[0].id;
    await eventually(async () => {
      const d = await hl.gql('query($id: ID!) { delivery(id: $id) { status } }', { id }, tenant.apiKey);
      return d.data.delivery.status === 'DELIVERED';
    });
  });
});
