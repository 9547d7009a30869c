// An operation that could ask for more than the limit (nested lists multiply: an event's
// deliveries, each with its event, each with its deliveries...) is refused before anything
// runs, over HTTP, WebSocket and Server-Sent Events alike, and writes nothing; pages are at
// most 100 rows. A value of up to 256 KiB (a payload, an event's data) costs 400, so a small
// query cannot build an answer of hundreds of MB out of one large event. What clients of the
// contract ask for stays well within it.
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LARGE_VALUE_COMPLEXITY, MAX_QUERY_COMPLEXITY } from '../../src/server/complexity.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs } from '../helpers/live.js';
import { eventually } from '../helpers/receiver.js';
import { wsRequest } from '../helpers/ws.js';

let hl: TestHookline;
let tenant: { id: string; apiKey: string };
let socket: Client;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  tenant = await hl.createTenant();
  socket = hl.wsClient(tenant.apiKey);
});
afterAll(async () => {
  await socket?.dispose();
  await hl?.stop();
});

const CYCLE = 'deliveries { id webhookEvent { deliveries { id webhookEvent { deliveries { id } } } } }';
const NESTED_QUERY = `query($id: ID!) { webhookEvent(id: $id) { ${CYCLE} } }`;
const NESTED_MUTATION = `mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { event { ${CYCLE} } } }`;
const NESTED_SUBSCRIPTION = `subscription { deliveryUpdated { id webhookEvent { ${CYCLE} } } }`;

function expectRefused(errors: any[] | undefined) {
  expect(errors).toHaveLength(1);
  expect(errors![0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining(`more than ${MAX_QUERY_COMPLEXITY}`) });
}

const eventCount = async () =>
  (await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [tenant.id]))[0].n as number;

describe('over HTTP', () => {
  it('refuses an event\'s deliveries nested in its deliveries\' events', async () => {
    const res = await hl.gql(NESTED_QUERY, { id: '00000000-0000-4000-8000-000000000000' }, tenant.apiKey);
    expectRefused(res.errors);
    expect(res.data ?? null).toBeNull();
  });

  it('refuses such a mutation before it writes anything', async () => {
    const res = await hl.gql(NESTED_MUTATION, {}, tenant.apiKey);
    expectRefused(res.errors);
    expect(await eventCount()).toBe(0);
  });

  it('reckons pages by the size asked for: 100 deliveries each with its event\'s deliveries is too much, 20 is not', async () => {
    const query = 'query($first: Int) { deliveries(first: $first) { edges { node { id webhookEvent { deliveries { id status } } } } } }';
    // In turns: one answer for a text is not taken for the next variables.
    expect((await hl.gql(query, { first: 20 }, tenant.apiKey)).errors).toBeUndefined();
    expectRefused((await hl.gql(query, { first: 100 }, tenant.apiKey)).errors);
    expect((await hl.gql(query, { first: 20 }, tenant.apiKey)).errors).toBeUndefined();
    expect((await hl.gql(query, {}, tenant.apiKey)).errors).toBeUndefined(); // the default page: 20
    expectRefused((await hl.gql(query, { first: 100 }, tenant.apiKey)).errors);
  });

  it('refuses a page of more than 100 rows, naming the argument', async () => {
    const res = await hl.gql('{ deliveries(first: 101) { edges { node { id } } } }', {}, tenant.apiKey);
    expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'first' }, message: expect.stringContaining('at most 100') });
    const last = await hl.gql('{ webhookSubscriptions(last: 500) { edges { node { id } } } }', {}, tenant.apiKey);
    expect(last.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'last' } });
  });

  it('answers the contract\'s own operations, an event\'s 1,000 deliveries included', async () => {
    const res = await hl.gql(
      'query($id: ID!) { webhookEvent(id: $id) { id event resourceType resourceId data idempotencyKey createdAt deliveries { id status attempts } } }',
      { id: '00000000-0000-4000-8000-000000000000' },
      tenant.apiKey,
    );
    expect(res).toEqual({ data: { webhookEvent: null } });
  });

  it('refuses such a subscription over Server-Sent Events with a 400', async () => {
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${tenant.apiKey}` },
      body: JSON.stringify({ query: NESTED_SUBSCRIPTION }),
    });
    expect(res.status).toBe(400);
    const text = await res.text(); // the stream's one event: the refusal
    expectRefused(JSON.parse(/^data: (.*)$/m.exec(text)![1]!).errors);
  });
});

describe('large values', () => {
  // The review's query: 822 bytes, which read one event of 255 KB 1,600 times (408 MB).
  const page = 'deliveries(first: 100, event: "big.data") { edges { node { payload webhookEvent { data } } } }';
  const EIGHT_PAGES = `{ ${Array.from({ length: 8 }, (_, i) => `p${i}: ${page}`).join(' ')} }`;
  const data = { blob: 'x'.repeat(100_000) };

  beforeAll(async () => {
    const type = await hl.gql('mutation { createEventType(input: { name: "big.data", schema: { type: "object" } }) { name } }', {}, tenant.apiKey);
    expect(type.errors).toBeUndefined();
    for (let i = 0; i < 3; i++) {
      const created = await hl.gql(
        'mutation { createWebhookSubscription(input: { url: "http://127.0.0.1:9/hook", events: ["big.data"] }) { subscription { id } } }',
        {},
        tenant.apiKey,
      );
      expect(created.errors).toBeUndefined();
    }
    const triggered = await hl.gql('mutation($data: JSON!) { triggerEvent(input: { event: "big.data", data: $data }) { deliveries { id } } }', { data }, tenant.apiKey);
    expect(triggered.data?.triggerEvent.deliveries).toHaveLength(3);
  });

  it('refuses pages of payloads and events\' data that add up to hundreds of MB, before reading any', async () => {
    expect(EIGHT_PAGES.length).toBeLessThan(900);
    const res = await hl.gql(EIGHT_PAGES, {}, tenant.apiKey);
    expectRefused(res.errors);
    expect(res.errors![0]!.message).toContain(`${LARGE_VALUE_COMPLEXITY}`);
    expect(res.data ?? null).toBeNull();
  });

  it('answers a dashboard\'s page of 20 deliveries with their payloads and events\' data, and a page of 100 payloads', async () => {
    const twenty = await hl.gql(
      `{ deliveries(first: 20, event: "big.data") { edges { cursor node { id event status attempts lastError lastStatusCode nextAttemptAt createdAt
           targetUrl payload webhookEvent { id data } subscription { id url events description headers } attemptLog { number responseBody } } } } }`,
      {},
      tenant.apiKey,
    );
    expect(twenty.errors).toBeUndefined();
    expect(twenty.data.deliveries.edges).toHaveLength(3);
    for (const { node } of twenty.data.deliveries.edges) {
      expect(node.payload.data).toEqual(data);
      expect(node.webhookEvent.data).toEqual(data);
    }
    const hundred = await hl.gql('{ deliveries(first: 100) { edges { node { id payload } } } }', {}, tenant.apiKey);
    expect(hundred.errors).toBeUndefined();
    expect(hundred.data.deliveries.edges).toHaveLength(3);
    // Two such pages are more than 125 large values (the README's example).
    expectRefused((await hl.gql('{ a: deliveries(first: 100) { edges { node { payload } } } b: deliveries(first: 100) { edges { node { payload } } } }', {}, tenant.apiKey)).errors);
  });

  it('answers the contract\'s event types with their schemas', async () => {
    const res = await hl.gql('query EventTypes { eventTypes { name description schema } }', {}, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.eventTypes.map((t: { name: string }) => t.name)).toContain('big.data');
  });

  it("runs a tenant's heavy operations one at a time, the others waiting in turn (16 at most, then RATE_LIMITED), not another tenant's nor its light ones", async () => {
    const heavy = '{ deliveries(first: 100, event: "big.data") { edges { node { payload } } } }';
    const other = await hl.createTenant('Other reader');
    // The first heavy operation is held where it reads the events' bodies, keeping its turn.
    const lock = hl.dataSource.createQueryRunner();
    await lock.connect();
    await lock.startTransaction();
    try {
      await lock.query('lock table webhook_events in access exclusive mode');
      const answers = Array.from({ length: 17 }, () => hl.gql(heavy, {}, tenant.apiKey));
      const waiting = () => hl.dataSource.query(`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`);
      // One is in the database (the first); of the 16 others, none yet.
      await eventually(async () => (await waiting())[0].n === 1);
      const eighteenth = await fetch(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.apiKey}` },
        body: JSON.stringify({ query: heavy }),
      });
      expect(eighteenth.status).toBe(429);
      expect(eighteenth.headers.get('retry-after')).toBe('1');
      expect((await eighteenth.json()).errors?.[0]).toMatchObject({ extensions: { code: 'RATE_LIMITED' }, message: expect.stringContaining('one at a time') });
      // Another tenant's heavy operation has a turn of its own: answered (it has no deliveries)
      // while this tenant's are still held.
      expect((await hl.gql(heavy, {}, other.apiKey)).data?.deliveries.edges).toEqual([]);
      // A light operation of the same tenant does not wait for the heavy ones.
      expect((await hl.gql('{ viewer { id } }', {}, tenant.apiKey)).data?.viewer.id).toBe(tenant.id);
      await lock.commitTransaction();
      for (const answer of await Promise.all(answers)) expect(answer.data?.deliveries.edges).toHaveLength(3);
    } finally {
      if (lock.isTransactionActive) await lock.rollbackTransaction();
      await lock.release();
    }
  });

  it("says what an event type's schema costs as it counts it", async () => {
    // The catalog's list can hold the built-in types and a tenant's 100: each alias of it
    // counts every row's schema. Enough aliases are refused, and the refusal's figures add up.
    const introspected = await hl.gql('{ __type(name: "EventType") { fields { name description } } }', {}, tenant.apiKey);
    const described = introspected.data.__type.fields.find((f: { name: string }) => f.name === 'schema').description;
    const schemaCost = Number(/counting (\d+)/.exec(described)![1]);
    const aliases = Array.from({ length: 8 }, (_, i) => `a${i}: eventTypes { schema }`).join(' ');
    const res = await hl.gql(`{ ${aliases} }`, {}, tenant.apiKey);
    expectRefused(res.errors);
    const message = res.errors![0]!.message;
    expect(message).toContain(`an event type's schema ${schemaCost}`);
    // Eight times the list field (1) and its rows' schemas.
    const cost = Number(/could cost (\d+)/.exec(message)![1]);
    expect((cost / 8 - 1) % schemaCost, message).toBe(0);
  });
});

describe('over WebSocket', () => {
  it('refuses such a query and such a subscription, and keeps the socket', async () => {
    expectRefused(await wsRequest(socket, NESTED_QUERY, { id: '00000000-0000-4000-8000-000000000000' }).then(() => undefined, (errors) => errors));
    const live = collectWs(socket, {}, NESTED_SUBSCRIPTION);
    await live.waitFor(() => live.closed, 5_000);
    expectRefused(live.errors[0] as any[]);
    expect((await wsRequest(socket, '{ viewer { id } }')).data).toEqual({ viewer: { id: tenant.id } });
  });
});
