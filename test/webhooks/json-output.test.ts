// JSON values are answered as they were given, whatever their keys: an executor takes a field
// result with a `then` key for a promise (a schema's if/then, data {"then": 1} failed with
// INTERNAL_SERVER_ERROR after the write), and an object copied property by property loses a
// "__proto__" key (a schema's property of that name vanished from what was stored).
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { wsRequest } from '../helpers/ws.js';

let hl: TestHookline;
let key: string;
let receiver: Receiver;

beforeAll(async () => {
  hl = await startTestHookline();
  key = (await hl.createTenant()).apiKey;
  receiver = await startReceiver();
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

/** Subscribes `url` to test.event for the tenant of `apiKey`. */
async function subscribeToTestEvents(apiKey: string, url: string): Promise<void> {
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }',
    { input: { url, events: ['test.event'] } },
    apiKey,
  );
  expect(created.errors).toBeUndefined();
}

/** Text that a payload's splicing into an answer must not touch: quotes, backslashes, what looks like its placeholders, non-ASCII, a line separator. */
const AWKWARD_DATA = { quote: 'say "hi"\\', token: '"\\u0000x:0"', text: 'é € 😀 \u2028', n: [1.5, 1e21] };

async function ok<T = any>(query: string, variables?: Record<string, unknown>): Promise<T> {
  const res = await hl.gql<T>(query, variables, key);
  expect(res.errors).toBeUndefined();
  return res.data!;
}

const CONDITIONAL = { type: 'object', if: { required: ['a'] }, then: { required: ['b'] }, else: { required: ['c'] } };

it('answers an event type whose schema has a then key, when created and in the catalog', async () => {
  const created = await ok('mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name schema } }', {
    input: { name: 'cond.checked', schema: CONDITIONAL },
  });
  expect(created.createEventType).toEqual({ name: 'cond.checked', schema: CONDITIONAL });
  const { eventTypes } = await ok('{ eventTypes { name schema } }');
  expect(eventTypes.find((t: any) => t.name === 'cond.checked')).toEqual({ name: 'cond.checked', schema: CONDITIONAL });
  // The schema works as written.
  const refused = await hl.gql(TRIGGER_EVENT, { input: { event: 'cond.checked', data: { a: 1 } } }, key);
  expect(refused.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  await ok(TRIGGER_EVENT, { input: { event: 'cond.checked', data: { a: 1, b: 2 } } });
});

it('answers event data and subscription headers with a then key, inline literals too', async () => {
  const { createWebhookSubscription: created } = await ok(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret subscription { id headers } } }',
    { input: { url: `${receiver.url}/then`, events: ['test.event'], headers: { then: 'x' } } },
  );
  expect(created.secret).toMatch(/^whsec_/);
  expect(created.subscription.headers).toEqual({ then: 'x' });
  const { webhookSubscriptions } = await ok('{ webhookSubscriptions { edges { node { id headers } } } }');
  expect(webhookSubscriptions.edges.map((e: any) => e.node)).toContainEqual({ id: created.subscription.id, headers: { then: 'x' } });

  const { triggerEvent } = await ok('mutation { triggerEvent(input: { event: "test.event", data: { then: 1, catch: [2] } }) { event { id data } deliveries { id } } }');
  expect(triggerEvent.event.data).toEqual({ then: 1, catch: [2] });
  const { webhookEvent } = await ok('query($id: ID!) { webhookEvent(id: $id) { data } }', { id: triggerEvent.event.id });
  expect(webhookEvent.data).toEqual({ then: 1, catch: [2] });
  const { delivery } = await ok('query($id: ID!) { delivery(id: $id) { payload } }', { id: triggerEvent.deliveries[0].id });
  expect(delivery.payload.data).toEqual({ then: 1, catch: [2] });
  const [request] = await receiver.waitFor(1);
  expect(request!.headers.then).toBe('x');
  expect(JSON.parse(request!.body).data).toEqual({ then: 1, catch: [2] });
});

it('sends live updates whose event data has a then key', async () => {
  await ok('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: `${receiver.url}/live`, events: ['test.event'] },
  });
  const client = hl.wsClient(key);
  const subscribed = moreSubscribers(hl);
  const live = collectWs(client, {}, 'subscription { deliveryUpdated(event: "test.event") { id webhookEvent { data } } }');
  try {
    await subscribed();
    const { triggerEvent } = await ok('mutation { triggerEvent(input: { event: "test.event", data: { then: "live" } }) { deliveries { id } } }');
    const ids = triggerEvent.deliveries.map((d: { id: string }) => d.id);
    await live.waitFor((items) => ids.every((id: string) => items.some((i) => i.id === id)));
    for (const id of ids) expect(live.items.find((i) => i.id === id)).toEqual({ id, webhookEvent: { data: { then: 'live' } } });
    expect(live.errors).toEqual([]);
  } finally {
    live.stop();
    await client.dispose();
  }
});

it('stores a schema\'s "__proto__" keys as given, and checks data against them', async () => {
  const schema = JSON.parse(
    '{"type":"object","properties":{"meta":{"const":{"__proto__":"abc"}}},"patternProperties":{"^__proto__$":{"type":"string","maxLength":3}}}',
  );
  const created = await ok('mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { schema } }', {
    input: { name: 'proto.checked', schema },
  });
  expect(JSON.stringify(created.createEventType.schema)).toBe(JSON.stringify(schema));
  const [row] = await hl.dataSource.query("select schema::text as text from event_types where name = 'proto.checked'");
  expect(Object.getOwnPropertyDescriptor(JSON.parse(row.text).properties.meta.const, '__proto__')?.value).toBe('abc');
  const { eventTypes } = await ok('{ eventTypes { name schema } }');
  expect(JSON.stringify(eventTypes.find((t: any) => t.name === 'proto.checked').schema)).toBe(JSON.stringify(schema));

  const trigger = (data: string) => hl.gql(TRIGGER_EVENT, { input: { event: 'proto.checked', data: JSON.parse(data) } }, key);
  expect((await trigger('{"meta":{"__proto__":"abd"}}')).errors?.[0]?.message).toMatch(/data\.meta must be equal to constant/);
  expect((await trigger('{"__proto__":"four"}')).errors?.[0]?.message).toMatch(/data\.__proto__ must NOT have more than 3 characters/);
  expect((await trigger('{"meta":{"__proto__":"abc"},"__proto__":"abc"}')).errors).toBeUndefined();
});

it('refuses a schema naming a "__proto__" property where the schema engine would pass over it', async () => {
  for (const [schema, at] of [
    ['{"type":"object","properties":{"__proto__":{"type":"string","maxLength":3}}}', 'schema.properties'],
    ['{"type":"object","required":["id","__proto__"]}', 'schema.required'],
    ['{"type":"object","properties":{"a":{"type":"object","dependentRequired":{"b":["__proto__"]}}}}', 'schema.properties.a.dependentRequired.b'],
  ] as const) {
    const res = await hl.gql('mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }', { input: { name: 'proto.refused', schema: JSON.parse(schema) } }, key);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'schema' });
    expect(res.errors?.[0]?.message).toContain(`${at}: a property named "__proto__" cannot be checked here`);
  }
  const [{ n }] = await hl.dataSource.query("select count(*)::int as n from event_types where name = 'proto.refused'");
  expect(n).toBe(0);
});

it('reads only data\'s own properties: one named like what every object inherits (constructor, toString) is checked as any other', async () => {
  await ok('mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }', {
    input: { name: 'f1.race', schema: { type: 'object', properties: { driver: { type: 'string' }, constructor: { type: 'string' } }, required: ['driver'] } },
  });
  await ok('mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }', {
    input: { name: 'f1.team', schema: { type: 'object', required: ['constructor', 'toString'] } },
  });
  await ok(TRIGGER_EVENT, { input: { event: 'f1.race', data: { driver: 'x' } } });
  await ok(TRIGGER_EVENT, { input: { event: 'f1.race', data: { driver: 'x', constructor: 'Ferrari' } } });
  const wrongType = await hl.gql(TRIGGER_EVENT, { input: { event: 'f1.race', data: { driver: 'x', constructor: 7 } } }, key);
  expect(wrongType.errors?.[0]?.message).toMatch(/data\.constructor must be string/);
  const missing = await hl.gql(TRIGGER_EVENT, { input: { event: 'f1.team', data: { driver: 'x' } } }, key);
  expect(missing.errors?.[0]?.message).toMatch(/data\.constructor is required/);
  await ok(TRIGGER_EVENT, { input: { event: 'f1.team', data: { constructor: 'Ferrari', toString: 'x' } } });
});

it("writes data's JSON afresh, as the README says: JSON.stringify's text, whatever the producer's", async () => {
  const other = (await hl.createTenant()).apiKey;
  const own = await startReceiver();
  try {
    await subscribeToTestEvents(other, `${own.url}/text`);
    // The request's text written by hand: spaces, escapes, a repeated key, keys that are array indices.
    const data = '{ "b": 1, "10": 2, "a": "\\u00e9\\/", "2": 3.50, "b": 4, "x": {"1": 0, "01": 1, "0": 2} }';
    const body = `{"query": "mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } } }", "variables": {"input": {"event": "test.event", "data": ${data}}}}`;
    const res = await fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${other}` }, body });
    expect(res.status).toBe(200);
    const [request] = await own.waitFor(1);
    expect(request!.body).toContain('"data":{"2":3.5,"10":2,"b":4,"a":"é/","x":{"0":2,"1":0,"01":1}}');
  } finally {
    await own.close();
  }
});

it('answers a payload as the exact text sent, over HTTP (unparsed) as over WebSocket and in a page beside an error', async () => {
  const other = await hl.createTenant();
  const own = await startReceiver();
  const socket = hl.wsClient(other.apiKey);
  try {
    await subscribeToTestEvents(other.apiKey, `${own.url}/raw`);
    // Text that an answer's own writing must not touch: quotes, backslashes, a \u0000 written out
    // as text, what looks like the answer's placeholders, non-ASCII and a line separator.
    const data = { quote: 'say "hi"\\', nul: '\\u0000 not a NUL', token: '"\\u0000x:0"', text: 'é € 😀 \u2028', n: [1.5, 3.5, 1e21], tiny: 5e-324, '10': 'an index key', b: { '2': 1, a: 2 } };
    const triggered = await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data } }, other.apiKey);
    expect(triggered.errors).toBeUndefined();
    const [request] = await own.waitFor(1);
    const query = '{ deliveries(first: 5) { edges { node { id payload } } } }';
    const res = await fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${other.apiKey}` }, body: JSON.stringify({ query }) });
    const text = await res.text();
    // The bytes the receiver got are in the answer as they are.
    expect(text).toContain(`"payload":${request!.body}`);
    const answered = JSON.parse(text).data.deliveries.edges[0].node.payload;
    expect(answered).toEqual(JSON.parse(request!.body));
    expect(answered.data).toEqual(JSON.parse(JSON.stringify(data)));
    // Over WebSocket (written by graphql-ws), the same value.
    const overWs = await wsRequest(socket, query);
    expect(overWs.data.deliveries.edges[0].node.payload).toEqual(answered);
    // An event's data is the same value, by the event and beside its deliveries, over HTTP and
    // WebSocket alike, its numbers written as JSON.stringify writes them (jsonb's own text wrote
    // 5e-324 as 326 characters, 47 times the data sent).
    const eventId = JSON.parse(request!.body).id;
    const expected = JSON.parse(JSON.stringify(data));
    const byEvent = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${other.apiKey}` },
      body: JSON.stringify({ query: 'query($id: ID!) { webhookEvent(id: $id) { data } }', variables: { id: eventId } }),
    });
    const byEventText = await byEvent.text();
    expect(JSON.parse(byEventText).data.webhookEvent.data).toEqual(expected);
    expect(byEventText).toContain('"tiny":5e-324');
    const beside = await hl.gql('{ deliveries(first: 5) { edges { node { webhookEvent { data } } } } }', {}, other.apiKey);
    expect(beside.data?.deliveries.edges[0].node.webhookEvent.data).toEqual(expected);
    expect((await wsRequest(socket, 'query($id: ID!) { webhookEvent(id: $id) { data } }', { id: eventId })).data.webhookEvent.data).toEqual(expected);
    // Beside an error of another field of the same answer.
    const withError = await hl.gql(`{ deliveries(first: 5) { edges { node { payload } } } delivery(id: "not-an-id") { id } }`, {}, other.apiKey);
    expect(withError.data?.deliveries.edges[0].node.payload).toEqual(answered);
  } finally {
    await socket.dispose();
    await own.close();
  }
});

/** A graphql-ws socket spoken by hand, to see each message's text as sent. */
async function rawSocket(apiKey: string) {
  const socket = new WebSocket(`${hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
  const texts: string[] = [];
  const waiters = new Set<() => void>();
  socket.on('message', (data) => {
    texts.push(String(data));
    for (const wake of waiters) wake();
  });
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  const next = (test: (text: string) => boolean) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no such message; got ${texts.join('\n').slice(0, 500)}`)), 10_000);
      const look = () => {
        const found = texts.find(test);
        if (!found) return;
        clearTimeout(timer);
        waiters.delete(look);
        resolve(found);
      };
      waiters.add(look);
      look();
    });
  socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${apiKey}` } }));
  await next((text) => text.includes('connection_ack'));
  return {
    next,
    subscribe: (id: string, query: string) => socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query } })),
    close: () => socket.close(),
  };
}

it('sends a payload over WebSocket as the text sent, unparsed, in an answer and in each live update', async () => {
  const other = await hl.createTenant();
  const own = await startReceiver();
  const sockets = [await rawSocket(other.apiKey), await rawSocket(other.apiKey)];
  const parse = vi.spyOn(JSON, 'parse');
  try {
    await subscribeToTestEvents(other.apiKey, `${own.url}/raw`);
    const subscribed = moreSubscribers(hl, sockets.length);
    for (const socket of sockets) socket.subscribe('live', 'subscription { deliveryUpdated { id status payload } }');
    await subscribed();
    const triggered = await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: AWKWARD_DATA } }, other.apiKey);
    expect(triggered.errors).toBeUndefined();
    const [request] = await own.waitFor(1);
    const body = request!.body;
    const updates = await Promise.all(sockets.map((socket) => socket.next((text) => text.includes('"DELIVERED"'))));
    sockets[0]!.subscribe('page', '{ deliveries(first: 5) { edges { node { id payload again: payload status } } } }');
    const page = await sockets[0]!.next((text) => text.includes('"id":"page"') && text.includes('"next"'));
    // Written without parsing what was sent (counted before this test parses anything itself).
    expect(parse.mock.calls.filter(([text]) => text === body).length).toBe(0);
    // Each subscriber's update carries the bytes sent as they are, and so does a query's answer.
    for (const update of updates) {
      expect(update).toContain(`"payload":${body}`);
      expect(JSON.parse(update).payload.data.deliveryUpdated.payload).toEqual(JSON.parse(body));
    }
    expect(page).toContain(`"payload":${body}`);
    expect(page).toContain(`"again":${body}`);
    expect(JSON.parse(page).payload.data.deliveries.edges[0].node).toMatchObject({ status: 'DELIVERED', payload: JSON.parse(body), again: JSON.parse(body) });
  } finally {
    parse.mockRestore();
    for (const socket of sockets) socket.close();
    await own.close();
  }
});

it('writes each object\'s fields in the order the query selected them (the spec\'s serialized map ordering), resolvers that wait or not', async () => {
  const other = await hl.createTenant();
  const socket = hl.wsClient(other.apiKey);
  const own = await startReceiver();
  try {
    await subscribeToTestEvents(other.apiKey, own.url);
    expect((await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: {} } }, other.apiKey)).errors).toBeUndefined();
    await own.waitFor(1);
    // payload, targetUrl, createdAt and subscription wait for a load; id, status and event do not.
    const fields = ['payload', 'id', 'targetUrl', 'status', 'createdAt', 'event', 'subscription', 'attempts'];
    const query = `{ deliveries(first: 1) { edges { node { ${fields.map((f) => (f === 'subscription' ? 'subscription { url id }' : f)).join(' ')} } } } }`;
    const overHttp = await hl.gql(query, {}, other.apiKey);
    const overWs = await wsRequest(socket, query);
    for (const answer of [overHttp, overWs]) {
      expect(answer.errors).toBeUndefined();
      const node = answer.data.deliveries.edges[0].node;
      expect(Object.keys(node)).toEqual(fields);
      expect(Object.keys(node.subscription)).toEqual(['url', 'id']);
    }
  } finally {
    await socket.dispose();
    await own.close();
  }
});

it('sends a payload over Server-Sent Events as the text sent, unparsed, in each live update', async () => {
  const other = await hl.createTenant();
  const own = await startReceiver();
  const abort = new AbortController();
  const parse = vi.spyOn(JSON, 'parse');
  try {
    await subscribeToTestEvents(other.apiKey, `${own.url}/raw`);
    const subscribed = moreSubscribers(hl, 1);
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${other.apiKey}` },
      body: JSON.stringify({ query: 'subscription { deliveryUpdated { id status payload } }' }),
      signal: abort.signal,
    });
    expect(res.status).toBe(200);
    let text = '';
    const reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        text += decoder.decode(chunk, { stream: true });
        if (text.includes('"DELIVERED"')) return;
      }
    })();
    await subscribed();
    expect((await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: AWKWARD_DATA } }, other.apiKey)).errors).toBeUndefined();
    const [request] = await own.waitFor(1);
    const body = request!.body;
    await reading;
    // Written without parsing what was sent (counted before this test parses anything itself).
    expect(parse.mock.calls.filter(([t]) => t === body).length).toBe(0);
    expect(text).toContain(`"payload":${body}`);
  } finally {
    parse.mockRestore();
    abort.abort();
    await own.close();
  }
});
