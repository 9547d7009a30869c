// Input that PostgreSQL or a receiver cannot take is refused up front with
// BAD_USER_INPUT naming the field, over GraphQL and REST alike, and the
// refused call writes nothing: subscription headers that are not an object of
// strings, a NUL character (\u0000) or half a surrogate pair in any text or JSON
// input, numbers JSON cannot hold (1e999), asynchronous schemas, file uploads.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestHookline, type GraphQLResponse, type TestHookline } from '../helpers/hookline.js';
import { ROTATE_WEBHOOK_SECRET as ROTATE, TRIGGER_EVENT as TRIGGER, WEBHOOK_SUBSCRIPTIONS as LIST } from '../helpers/operations.js';

const CREATE = `mutation CreateWebhookSubscription($input: CreateWebhookSubscriptionInput!) {
  createWebhookSubscription(input: $input) { secret subscription { id url events description headers } }
}`;
const UPDATE = `mutation UpdateWebhookSubscription($id: ID!, $input: UpdateWebhookSubscriptionInput!) {
  updateWebhookSubscription(id: $id, input: $input) { id url events description headers }
}`;
const CREATE_EVENT_TYPE = 'mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }';
const CREATE_API_KEY = 'mutation($name: String!) { createApiKey(name: $name) { id } }';
const CREATE_TENANT = 'mutation($name: String!) { createTenant(name: $name) { tenant { id } } }';

const NUL = '\u0000';
const URL = 'http://127.0.0.1:9/hook';
const WRITTEN_TABLES = ['tenants', 'api_keys', 'event_types', 'webhook_subscriptions', 'webhook_events', 'webhook_deliveries', 'idempotency_keys'];

let hl: TestHookline;
let key: string;

beforeAll(async () => {
  hl = await startTestHookline();
  key = (await hl.createTenant()).apiKey;
  // A subscription to every event, so that an accepted triggerEvent would write deliveries too.
  const catchAll = await hl.gql(CREATE, { input: { url: URL, events: ['*'] } }, key);
  expect(catchAll.errors).toBeUndefined();
});
afterAll(() => hl?.stop());

/** Row counts of every table a refused call could write to. */
async function counts(): Promise<Record<string, number>> {
  const result: Record<string, number> = {};
  for (const table of WRITTEN_TABLES) {
    const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from ${table}`);
    result[table] = n;
  }
  return result;
}

async function subscriptionRow(id: string) {
  const [row] = await hl.dataSource.query(
    'select url, events, description, headers, secret, updated_at from webhook_subscriptions where id = $1',
    [id],
  );
  return row;
}

async function createSubscription(input: Record<string, unknown> = {}): Promise<string> {
  const res = await hl.gql(CREATE, { input: { url: URL, events: ['invoice.created'], ...input } }, key);
  expect(res.errors).toBeUndefined();
  return res.data.createWebhookSubscription.subscription.id;
}

/** The answer is one BAD_USER_INPUT error on `field`, and its message names the field (and `mentions`, if given). */
function expectBadInput(res: GraphQLResponse, field: string, mentions?: string) {
  expect(res.errors, JSON.stringify(res)).toHaveLength(1);
  expect(res.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
  expect(res.errors![0]!.message).toContain(field);
  if (mentions) expect(res.errors![0]!.message).toContain(mentions);
}

describe('subscription headers must be an object of header names to strings', () => {
  const refused: Array<[string, unknown, string?]> = [
    ['a string', 'abc'],
    ['an empty string', ''],
    ['an array', ['a', 'b']],
    ['an array of pairs', [['X-A', 'b']]],
    ['a number', 5],
    ['a boolean', true],
    ['an object with a number value', { 'X-Count': 1 }, 'X-Count'],
    ['an object with an object value', { 'X-Nested': { a: 'b' } }, 'X-Nested'],
    ['an object with a null value', { 'X-Null': null }, 'X-Null'],
    ['an object with a reserved header', { 'X-Signature': 'forged' }, 'X-Signature'],
    // Headers the HTTP client refuses to send, or that would mislabel the body: every
    // attempt would fail, or be misread, until the delivery FAILED.
    ...['Expect', 'Upgrade', 'Keep-Alive', 'TE', 'Trailer', 'Proxy-Authorization', 'Content-Encoding'].map(
      (name): [string, unknown, string] => [`the header ${name}`, { [name]: 'x' }, name],
    ),
    ['a value with a control character', { 'X-Ctl': 'a\u0001b' }, 'X-Ctl'],
    ['a value with DEL', { 'X-Del': 'a\u007fb' }, 'X-Del'],
    ['a value with a line break', { 'X-Split': 'a\r\nX-Injected: 1' }, 'X-Split'],
    ['a value that is not ASCII', { 'X-Euro': '€' }, 'X-Euro'],
    ['a value with a line separator', { 'X-Sep': 'a\u2028b' }, 'X-Sep'],
    // HTTP drops white space at either end: the receiver would get another value than the one shown.
    ['a value with a space at its end', { 'X-Pad': 'padded ' }, 'must not start or end with spaces or tabs'],
    ['a value with a space at its start', { 'X-Pad': ' padded' }, 'X-Pad'],
    ['a value that is a tab', { 'X-Tab': '\t' }, 'X-Tab'],
    // Every attempt would be answered 431; the message shows the name cut short.
    ['a header name of 257 characters', { ['X-' + 'n'.repeat(255)]: 'v' }, 'is 257 characters long: at most 256'],
    // Names are case-insensitive: both would go out, as one header with two values.
    ['the same name twice, in two cases', { Authorization: 'Bearer a', authorization: 'Bearer b' }, 'authorization'],
  ];

  for (const [title, headers, headerName] of refused) {
    it(`refuses ${title} on create and writes nothing`, async () => {
      const before = await counts();
      const res = await hl.gql(CREATE, { input: { url: URL, events: ['invoice.created'], headers } }, key);
      expectBadInput(res, 'headers', headerName);
      expect(res.data).toBeNull();
      expect(await counts()).toEqual(before);
    });

    it(`refuses ${title} on update and leaves the subscription as it was`, async () => {
      const id = await createSubscription({ headers: { 'X-Tenant': 'acme' }, description: 'kept' });
      const before = await subscriptionRow(id);
      const res = await hl.gql(UPDATE, { id, input: { headers, description: 'changed' } }, key);
      expectBadInput(res, 'headers', headerName);
      expect(await subscriptionRow(id)).toEqual(before);
      expect(before.headers).toEqual({ 'X-Tenant': 'acme' });
    });
  }

  it('says of a transport header that it governs how the request travels, not that Hookline sets it', async () => {
    const res = await hl.gql(CREATE, { input: { url: URL, events: ['invoice.created'], headers: { Expect: '100-continue' } } }, key);
    expectBadInput(res, 'headers', 'Expect');
    expect(res.errors![0]!.message).toContain('governs how the request travels');
  });

  it('refuses a header named __proto__ (an own key of parsed JSON) rather than drop it', async () => {
    const before = await counts();
    const res = await hl.gql(CREATE, { input: { url: URL, events: ['invoice.created'], headers: JSON.parse('{"__proto__": "x", "X-After": "y"}') } }, key);
    expectBadInput(res, 'headers', '__proto__');
    expect(await counts()).toEqual(before);
  });

  it('refuses a string written inline in the query, not only as a variable', async () => {
    const before = await counts();
    const res = await hl.gql(
      `mutation { createWebhookSubscription(input: {url: "${URL}", events: ["invoice.created"], headers: "abc"}) { secret } }`,
      {},
      key,
    );
    expectBadInput(res, 'headers');
    expect(await counts()).toEqual(before);
  });

  it('accepts an object of strings, on create and update, and null leaves them be', async () => {
    const id = await createSubscription({ headers: { 'X-Tenant': 'acme', Authorization: 'Bearer receiver-token' } });
    expect((await subscriptionRow(id)).headers).toEqual({ 'X-Tenant': 'acme', Authorization: 'Bearer receiver-token' });

    const updated = await hl.gql(UPDATE, { id, input: { headers: { 'X-Tenant': 'globex' } } }, key);
    expect(updated.errors).toBeUndefined();
    expect(updated.data.updateWebhookSubscription.headers).toEqual({ 'X-Tenant': 'globex' });

    const untouched = await hl.gql(UPDATE, { id, input: { headers: null, description: 'only this' } }, key);
    expect(untouched.errors).toBeUndefined();
    expect(untouched.data.updateWebhookSubscription).toMatchObject({ headers: { 'X-Tenant': 'globex' }, description: 'only this' });

    const none = await hl.gql(CREATE, { input: { url: URL, events: ['*'], headers: null } }, key);
    expect(none.errors).toBeUndefined();
    expect(none.data.createWebhookSubscription.subscription.headers).toEqual({});

    // At the limits: a name of 256 characters, spaces and a tab within a value.
    const edges = { ['X-' + 'n'.repeat(254)]: 'v', 'X-Inner': 'a b\tc' };
    const edge = await hl.gql(CREATE, { input: { url: URL, events: ['*'], headers: edges } }, key);
    expect(edge.errors).toBeUndefined();
    expect(edge.data.createWebhookSubscription.subscription.headers).toEqual(edges);
  });
});

describe('event data PostgreSQL or the process cannot take is BAD_USER_INPUT, and nothing is written', () => {
  // Bodies written as text: a client's JSON.stringify could not write 10,000 levels either.
  const post = (path: string, body: string) =>
    fetch(`${hl.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body });
  const trigger = async (dataJson: string): Promise<GraphQLResponse> =>
    (await post('/graphql', `{"query": ${JSON.stringify(TRIGGER)}, "variables": {"input": {"event": "test.event", "data": ${dataJson}}}}`)).json();
  const rest = (dataJson: string) => post('/api/v1/tenant/webhooks/deliveries', `{"event": "test.event", "payload": ${dataJson}}`);
  /** `depth` levels of arrays and objects in all. */
  const nested = (depth: number) => `{"v": ${'['.repeat(depth - 1)}"bottom"${']'.repeat(depth - 1)}}`;
  const refused: Array<[string, string, RegExp]> = [
    ['half of a surrogate pair in a value', '{"customer": "Acme \\ud800"}', /not valid Unicode/],
    ['the other half alone, in a key', '{"\\udc00": 1}', /not valid Unicode/],
    ['101 levels of nesting', nested(101), /more than 100 levels/],
    ['10,000 levels of nesting', nested(10_000), /more than 100 levels/],
    // JSON.parse makes Infinity of it, which JSON.stringify would store and send as null.
    ['a number too large for JSON', '{"amount": 1e999, "customer": "Acme"}', /data\.amount is not a finite number/],
    ['a number too large for JSON, in an array', '{"lines": [1, -1e999]}', /data\.lines\[1\] is not a finite number/],
  ];
  for (const [title, dataJson, message] of refused) {
    it(title, async () => {
      const before = await counts();
      const res = await trigger(dataJson);
      expectBadInput(res, 'data');
      expect(res.errors![0]!.message).toMatch(message);
      const overRest = await rest(dataJson);
      expect(overRest.status).toBe(400);
      expect((await overRest.json()).error).toMatchObject({ code: 'BAD_USER_INPUT', field: 'payload' });
      expect(await counts()).toEqual(before);
    });
  }
  it('an event type schema nested 10,000 deep is refused the same way', async () => {
    const before = await counts();
    const schema = `{"type": "object", "examples": [${'['.repeat(10_000)}${']'.repeat(10_000)}]}`;
    const res: GraphQLResponse = await (
      await post('/graphql', `{"query": ${JSON.stringify(CREATE_EVENT_TYPE)}, "variables": {"input": {"name": "parcel.deep", "schema": ${schema}}}}`)
    ).json();
    expectBadInput(res, 'schema');
    expect(await counts()).toEqual(before);
  });

  it('a number too large for JSON written inline in the query is refused the same way', async () => {
    const before = await counts();
    const res = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { amount: 1e999 } }) { event { id } } }', {}, key);
    expectBadInput(res, 'data', 'data.amount is not a finite number');
    expect(await counts()).toEqual(before);
  });

  it('an enum value written inline in JSON data is refused, saying to write it as a string', async () => {
    const res = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { status: PAID } }) { event { id } } }', {}, key);
    expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('"PAID"') });
  });

  it('an event type schema with a number too large for JSON is refused (stored, it would become null and fail every event)', async () => {
    const before = await counts();
    const schema = '{"type": "object", "properties": {"kg": {"type": "number", "maximum": 1e999}}}';
    const res: GraphQLResponse = await (
      await post('/graphql', `{"query": ${JSON.stringify(CREATE_EVENT_TYPE)}, "variables": {"input": {"name": "parcel.heavy", "schema": ${schema}}}}`)
    ).json();
    expectBadInput(res, 'schema', 'schema.properties.kg.maximum is not a finite number');
    expect(await counts()).toEqual(before);
  });

  it('an asynchronous event type schema ($async) is refused: its validator answers with a promise, not a verdict', async () => {
    const before = await counts();
    const res = await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'order.synced', schema: { $async: true, type: 'object', required: ['id'] } } }, key);
    expectBadInput(res, 'schema', '$async');
    expect(await counts()).toEqual(before);
  });

  it('a multipart request (a file upload) is refused, and nothing is written', async () => {
    const before = await counts();
    const form = new FormData();
    form.set('operations', JSON.stringify({ query: TRIGGER, variables: { input: { event: 'test.event', data: null } } }));
    form.set('map', JSON.stringify({ 0: ['variables.input.data'] }));
    form.set('0', new Blob(['{"name": "x"}'], { type: 'application/json' }), 'data.json');
    const res = await fetch(`${hl.url}/graphql`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(await counts()).toEqual(before);
  });

  it('a whole surrogate pair (an emoji), 100 levels of nesting and a written-out backslash-u are accepted', async () => {
    for (const dataJson of ['{"note": "paid \\ud83d\\ude00"}', nested(100), '{"path": "C:\\\\ud800"}']) {
      const res = await trigger(dataJson);
      expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
    }
  });
});

const triggerWith = (input: Record<string, unknown>) =>
  hl.gql(TRIGGER, { input: { event: 'test.event', data: { ok: true }, ...input } }, key);

/** Every text and JSON input, holding `NUL` (a character PostgreSQL cannot store as it is). */
const unstorableCases = (NUL: string): Array<[string, string, () => Promise<GraphQLResponse>]> => {
  const trigger = triggerWith;
  return [
    ['triggerEvent event', 'event', () => trigger({ event: `test.event${NUL}` })],
    ['triggerEvent resourceType', 'resourceType', () => trigger({ resourceType: `invoice${NUL}` })],
    ['triggerEvent resourceId', 'resourceId', () => trigger({ resourceId: `inv-1${NUL}` })],
    ['triggerEvent idempotencyKey', 'idempotencyKey', () => trigger({ idempotencyKey: `key${NUL}1` })],
    ['triggerEvent data, in a value', 'data', () => trigger({ data: { note: `a${NUL}b` } })],
    ['triggerEvent data, in a key', 'data', () => trigger({ data: { [`k${NUL}`]: 'v' } })],
    ['createWebhookSubscription description', 'description', () =>
      hl.gql(CREATE, { input: { url: URL, events: ['*'], description: `ERP${NUL}` } }, key)],
    ['createWebhookSubscription secret', 'secret', () =>
      hl.gql(CREATE, { input: { url: URL, events: ['*'], secret: `0123456789abcdef${NUL}` } }, key)],
    ['createWebhookSubscription url', 'url', () =>
      hl.gql(CREATE, { input: { url: `${URL}/a${NUL}b`, events: ['*'] } }, key)],
    ['createWebhookSubscription event name', 'events', () =>
      hl.gql(CREATE, { input: { url: URL, events: [`invoice.created${NUL}`] } }, key)],
    ['createWebhookSubscription event pattern', 'events', () =>
      hl.gql(CREATE, { input: { url: URL, events: [`invoice${NUL}.*`] } }, key)],
    ['createWebhookSubscription header value', 'headers', () =>
      hl.gql(CREATE, { input: { url: URL, events: ['*'], headers: { 'X-A': `b${NUL}` } } }, key)],
    ['createApiKey name', 'name', () => hl.gql(CREATE_API_KEY, { name: `ci${NUL}` }, key)],
    ['createTenant name', 'name', () => hl.gql(CREATE_TENANT, { name: `Acme${NUL}` }, ADMIN_TOKEN)],
    ['createEventType name', 'name', () =>
      hl.gql(CREATE_EVENT_TYPE, { input: { name: `parcel.lost${NUL}`, schema: { type: 'object' } } }, key)],
    ['createEventType description', 'description', () =>
      hl.gql(CREATE_EVENT_TYPE, { input: { name: 'parcel.lost', description: `gone${NUL}`, schema: { type: 'object' } } }, key)],
    ['createEventType schema, in a nested string', 'schema', () =>
      hl.gql(
        CREATE_EVENT_TYPE,
        { input: { name: 'parcel.lost', schema: { type: 'object', properties: { id: { type: 'string', description: `x${NUL}` } } } } },
        key,
      )],
    ['createEventType schema, in a key', 'schema', () =>
      hl.gql(CREATE_EVENT_TYPE, { input: { name: 'parcel.lost', schema: { type: 'object', properties: { [`i${NUL}d`]: {} } } } }, key)],
  ];
};

// PostgreSQL would write half a surrogate pair as U+FFFD: stored, it would differ from what was
// accepted (two idempotency keys differing only there would be one).
for (const [what, bad] of [['a NUL character', NUL], ['half of a UTF-16 surrogate pair', '\ud800']]) {
  describe(`${what} is refused with BAD_USER_INPUT naming the field, and nothing is written`, () => {
    for (const [title, field, call] of unstorableCases(bad)) {
      it(title, async () => {
        const before = await counts();
        expectBadInput(await call(), field);
        expect(await counts()).toEqual(before);
      });
    }
  });
}

describe('control characters in an id or a key are refused, and nothing is written', () => {
  // Kept as given, a tab or a line break went into the envelope's resource_id, or made an
  // idempotency key that a retry typed without it would not match.
  for (const [field, input] of [
    ['resourceId', { resourceId: 'inv-1\t' }],
    ['resourceType', { resourceType: 'invoice\n' }],
    ['idempotencyKey', { idempotencyKey: 'key-1\r\n' }],
    ['resourceId', { resourceId: 'inv-1\u2028x' }],
    ['resourceId', { resourceId: 'inv-1\u0085' }],
    ['idempotencyKey', { idempotencyKey: 'k\u2029x' }],
  ] as const) {
    it(`${field} ${JSON.stringify(Object.values(input)[0])}`, async () => {
      const before = await counts();
      const res = await triggerWith(input);
      expectBadInput(res, field);
      expect(res.errors?.[0]?.message).toContain('control characters');
      expect(await counts()).toEqual(before);
    });
  }
  it('a default resource_id from data with one is left out, and the event taken', async () => {
    const res = await triggerWith({ data: { id: 'inv-1\n' } });
    expect(res.errors).toBeUndefined();
    expect(res.data.triggerEvent.event.resourceId).toBeNull();
  });
});

describe('a NUL character elsewhere', () => {
  const trigger = triggerWith;

  it('an escaped backslash before u0000 is text, not a NUL, and is accepted', async () => {
    const res = await trigger({ resourceId: 'inv-\\u0000', data: { note: 'C:\\u0000' } });
    expect(res.errors).toBeUndefined();
    expect(res.data.triggerEvent.event).toMatchObject({ resourceId: 'inv-\\u0000', data: { note: 'C:\\u0000' } });
  });

  describe('on updates, nothing changes', () => {
    const updates: Array<[string, string, (id: string) => Promise<GraphQLResponse>]> = [
      ['updateWebhookSubscription description', 'description', (id) => hl.gql(UPDATE, { id, input: { description: `x${NUL}` } }, key)],
      ['updateWebhookSubscription url', 'url', (id) => hl.gql(UPDATE, { id, input: { url: `${URL}${NUL}x` } }, key)],
      ['updateWebhookSubscription events', 'events', (id) => hl.gql(UPDATE, { id, input: { events: ['*', `payment.*${NUL}`] } }, key)],
      ['updateWebhookSubscription header value', 'headers', (id) =>
        hl.gql(UPDATE, { id, input: { headers: { 'X-A': `${NUL}` }, description: 'changed' } }, key)],
      ['rotateWebhookSecret secret', 'secret', (id) => hl.gql(ROTATE, { id, secret: `0123456789abcdef${NUL}` }, key)],
    ];
    for (const [title, field, call] of updates) {
      it(title, async () => {
        const id = await createSubscription({ description: 'kept', headers: { 'X-A': 'b' } });
        const before = await subscriptionRow(id);
        expectBadInput(await call(id), field);
        expect(await subscriptionRow(id)).toEqual(before);
      });
    }
  });

  it('webhookSubscriptions event filter', async () => {
    expectBadInput(await hl.gql(LIST, { event: `invoice.created${NUL}` }, key), 'event');
  });

  it('deliveries event filter', async () => {
    const deliveries = 'query($event: String) { deliveries(first: 5, event: $event) { edges { node { id } } } }';
    expectBadInput(await hl.gql(deliveries, { event: `invoice.created${NUL}` }, key), 'event');
  });
});

describe('the deliveries event filter is an event name', () => {
  const DELIVERIES = 'query($event: String) { deliveries(first: 5, event: $event) { edges { node { id event } } } }';

  it('one that cannot be (too long, a pattern, not dotted) is BAD_USER_INPUT naming event; an unknown one lists nothing', async () => {
    const made = await triggerWith({ event: 'test.event' });
    expect(made.errors).toBeUndefined();
    for (const event of [`${'a.'.repeat(16_000)}b`, `test.${'a'.repeat(96)}`, 'test.*', '*', 'Test.Event', 'test']) {
      expectBadInput(await hl.gql(DELIVERIES, { event }, key), 'event');
    }
    const listed = await hl.gql(DELIVERIES, { event: 'test.event' }, key);
    expect(listed.data.deliveries.edges.map((e: any) => e.node.event)).toContain('test.event');
    expect((await hl.gql(DELIVERIES, { event: `parcel.${'a'.repeat(93)}` }, key)).data.deliveries.edges).toEqual([]);
  });

  it('an empty filter is no filter, as over REST and in deliveryUpdated (a dashboard\'s "all"); an id of no subscription matches nothing, and what is no id is refused', async () => {
    const BY_SUBSCRIPTION = 'query($id: ID, $event: String) { deliveries(first: 5, subscriptionId: $id, event: $event) { edges { node { id } } } }';
    expect((await triggerWith({ event: 'test.event' })).errors).toBeUndefined();
    const all = (await hl.gql(BY_SUBSCRIPTION, {}, key)).data.deliveries.edges;
    expect(all.length).toBeGreaterThan(0);
    expect((await hl.gql(BY_SUBSCRIPTION, { id: '' }, key)).data.deliveries.edges).toEqual(all);
    expect((await hl.gql(BY_SUBSCRIPTION, { event: '' }, key)).data.deliveries.edges).toEqual(all);
    expect((await hl.gql(BY_SUBSCRIPTION, { id: '00000000-0000-4000-8000-000000000000' }, key)).data.deliveries.edges).toEqual([]);
    expect((await hl.gql(BY_SUBSCRIPTION, { id: 'zz' }, key)).errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'subscriptionId' });
  });
});

describe('limits in characters count characters, not UTF-16 units (an emoji is one character, two units)', () => {
  const EMOJI = '\u{1F600}';
  const text = (n: number) => EMOJI.repeat(n);
  const restPost = async (path: string, body: Record<string, unknown>) => {
    const res = await fetch(`${hl.url}/api/v1/tenant/webhooks/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  /** [input, field, its limit, a call with text of n characters] */
  const cases: Array<[string, string, number, (n: number) => Promise<GraphQLResponse>]> = [
    ['createWebhookSubscription description', 'description', 1000, (n) => hl.gql(CREATE, { input: { url: URL, events: ['*'], description: text(n) } }, key)],
    ['triggerEvent idempotencyKey', 'idempotencyKey', 200, (n) => triggerWith({ idempotencyKey: `${n}${text(n - String(n).length)}` })],
    ['triggerEvent resourceType', 'resourceType', 200, (n) => triggerWith({ resourceType: text(n) })],
    ['triggerEvent resourceId', 'resourceId', 200, (n) => triggerWith({ resourceId: text(n) })],
    ['createEventType description', 'description', 1000, (n) =>
      hl.gql(CREATE_EVENT_TYPE, { input: { name: `emoji.type${n}`, description: text(n), schema: { type: 'object' } } }, key)],
    ['createApiKey name', 'name', 200, (n) => hl.gql(CREATE_API_KEY, { name: text(n) }, key)],
    ['createTenant name', 'name', 200, (n) => hl.gql(CREATE_TENANT, { name: text(n) }, ADMIN_TOKEN)],
  ];
  for (const [title, field, max, call] of cases) {
    it(`${title}: ${max} emoji are accepted, ${max + 1} refused naming the field, and nothing is written`, async () => {
      const accepted = await call(max);
      expect(accepted.errors, JSON.stringify(accepted.errors)).toBeUndefined();
      const before = await counts();
      const refused = await call(max + 1);
      expectBadInput(refused, field, `at most ${max} characters`);
      expect(await counts()).toEqual(before);
    });
  }

  it('stores the text as given, and updateWebhookSubscription counts the same way', async () => {
    const id = await createSubscription({ description: text(1000) });
    expect((await subscriptionRow(id)).description).toBe(text(1000));
    const event = await triggerWith({ resourceType: text(200), resourceId: text(200), idempotencyKey: `stored${text(194)}` });
    expect(event.data.triggerEvent.event).toMatchObject({ resourceType: text(200), resourceId: text(200) });
    expect((await hl.gql(UPDATE, { id, input: { description: `${text(999)}x` } }, key)).errors).toBeUndefined();
    const before = await subscriptionRow(id);
    expectBadInput(await hl.gql(UPDATE, { id, input: { description: text(1001) } }, key), 'description');
    expect(await subscriptionRow(id)).toEqual(before);
  });

  it('REST counts the same way', async () => {
    const subscription = await restPost('subscriptions', { event: 'invoice.created', url: URL, description: text(1000) });
    expect(subscription.status, JSON.stringify(subscription.body)).toBe(201);
    const delivery = await restPost('deliveries', { event: 'test.event', payload: {}, resource_type: text(200), resource_id: text(200), idempotency_key: `rest${text(196)}` });
    expect(delivery.status, JSON.stringify(delivery.body)).toBe(202);
    const before = await counts();
    for (const [path, body, field] of [
      ['subscriptions', { event: 'invoice.created', url: URL, description: text(1001) }, 'description'],
      ['deliveries', { event: 'test.event', payload: {}, resource_type: text(201) }, 'resource_type'],
      ['deliveries', { event: 'test.event', payload: {}, resource_id: text(201) }, 'resource_id'],
      ['deliveries', { event: 'test.event', payload: {}, idempotency_key: text(201) }, 'idempotency_key'],
    ] as const) {
      const res = await restPost(path, body);
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'BAD_USER_INPUT', field });
    }
    expect(await counts()).toEqual(before);
  });
});

describe('over REST, a NUL character is a 400 BAD_USER_INPUT naming the field', () => {
  async function post(path: string, body: unknown) {
    const res = await fetch(`${hl.url}/api/v1/tenant/webhooks/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as { error: { code: string; message: string; field?: string } } };
  }

  const cases: Array<[string, string, Record<string, unknown>, string]> = [
    ['subscription description', 'subscriptions', { event: 'invoice.created', url: URL, description: `a${NUL}` }, 'description'],
    ['subscription secret', 'subscriptions', { event: 'invoice.created', url: URL, secret: `0123456789abcdef${NUL}` }, 'secret'],
    ['subscription event', 'subscriptions', { event: `invoice.created${NUL}`, url: URL }, 'event'],
    ['subscription headers that are a string', 'subscriptions', { event: 'invoice.created', url: URL, headers: 'abc' }, 'headers'],
    ['delivery event', 'deliveries', { event: `test.event${NUL}`, payload: {} }, 'event'],
    ['delivery resource_id', 'deliveries', { event: 'test.event', payload: {}, resource_id: `r${NUL}` }, 'resource_id'],
    ['delivery idempotency_key', 'deliveries', { event: 'test.event', payload: {}, idempotency_key: `k${NUL}` }, 'idempotency_key'],
    ['delivery payload', 'deliveries', { event: 'test.event', payload: { a: NUL } }, 'payload'],
  ];
  for (const [title, path, body, field] of cases) {
    it(title, async () => {
      const before = await counts();
      const res = await post(path, body);
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'BAD_USER_INPUT', field });
      expect(res.body.error.message).toContain(field);
      expect(await counts()).toEqual(before);
    });
  }
});
