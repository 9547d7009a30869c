// Requests GraphQL itself refuses (syntax, validation, variables, argument checks)
// carry extensions.code BAD_USER_INPUT and a message naming what is wrong, over HTTP
// and WebSocket, with the HTTP status Yoga gives them; other codes are unchanged.
import { gzipSync } from 'node:zlib';
import { getIntrospectionQuery } from 'graphql';
import type { Client } from 'graphql-ws';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { wsRequest } from '../helpers/ws.js';

let hl: TestHookline;
let tenant: { id: string; apiKey: string };
let socket: Client;

beforeAll(async () => {
  hl = await startTestHookline();
  tenant = await hl.createTenant();
  socket = hl.wsClient(tenant.apiKey);
});
afterAll(async () => {
  await socket?.dispose();
  await hl?.stop();
});

const DELIVERIES = 'query($status: DeliveryStatus, $first: Int, $last: Int) { deliveries(status: $status, first: $first, last: $last) { edges { node { id } } } }';
const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate } }';

interface Case {
  name: string;
  query: string;
  variables?: Record<string, unknown>;
  /** What the message must name. */
  names: RegExp;
  /** The input it names in `extensions.field`, if any. */
  field?: string;
  /** Yoga's status for `accept: application/json`, and for `application/graphql-response+json`. */
  status: [json: number, graphqlResponse: number];
}

const CASES: Case[] = [
  { name: 'a negative first', query: '{ deliveries(first: -1) { edges { node { id } } } }', names: /first: must be 0 to 100/, field: 'first', status: [200, 200] },
  { name: 'a negative last (variable)', query: DELIVERIES, variables: { last: -3 }, names: /last: must be 0 to 100/, field: 'last', status: [200, 200] },
  { name: 'an unknown enum value in a variable', query: DELIVERIES, variables: { status: 'LOST' }, names: /\$status.*"LOST".*DeliveryStatus/, status: [400, 400] },
  { name: 'an input missing a required field', query: TRIGGER, variables: { input: { event: 'invoice.created' } }, names: /\$input.*"data"/, status: [400, 400] },
  { name: 'a variable of the wrong type', query: DELIVERIES, variables: { first: 'ten' }, names: /\$first.*Int/, status: [400, 400] },
  { name: 'a missing required variable', query: TRIGGER, names: /\$input.*required/, status: [400, 400] },
  { name: 'an unknown enum value in the text', query: '{ deliveries(status: LOST) { edges { node { id } } } }', names: /"LOST".*DeliveryStatus/, status: [200, 400] },
  { name: 'an unknown field', query: '{ viewer { nickname } }', names: /"nickname"/, status: [200, 400] },
  { name: 'a syntax error', query: '{ viewer { id ', names: /Syntax Error/, status: [200, 400] },
  { name: 'hundreds of the same field side by side', query: `{ ${'viewer { id } '.repeat(700)}}`, names: /too many fields side by side/, status: [200, 400] },
  { name: 'two mutation fields', query: 'mutation { a: createApiKey(name: "a") { id } b: createApiKey(name: "") { id } }', names: /a mutation operation may have one field, not 2 \(a, b\)/, status: [200, 400] },
  {
    name: 'a second mutation field in a fragment',
    query: 'mutation { ...More createApiKey(name: "x") { id } } fragment More on Mutation { __typename revokeApiKey(id: "00000000-0000-0000-0000-000000000000") }',
    names: /one field, not 2 \(revokeApiKey, createApiKey\)/,
    status: [200, 400],
  },
  {
    name: 'a second mutation field included by a variable',
    query: 'mutation($both: Boolean!) { a: createApiKey(name: "a") { id } b: createApiKey(name: "b") @include(if: $both) { id } }',
    variables: { both: true },
    names: /one field, not 2 \(a, b\)/,
    status: [200, 400],
  },
  {
    name: 'a second mutation field in a fragment a variable does not skip',
    query: 'mutation($skip: Boolean = false) { createApiKey(name: "x") { id } ... @skip(if: $skip) { b: createApiKey(name: "y") { id } } }',
    names: /one field, not 2 \(createApiKey, b\)/,
    status: [200, 400],
  },
  // Introspection, which the complexity limit does not count: 30 aliases of __schema answered 2.7 MB.
  { name: 'the schema introspected twice', query: '{ a: __schema { queryType { name } } b: __schema { queryType { name } } }', names: /__schema at most once; this one reads it 2 times/, status: [200, 400] },
  {
    name: 'aliases inside introspection',
    query: `{ __schema { ${Array.from({ length: 3 }, (_, i) => `a${i}: types { name }`).join(' ')} } }`,
    names: /aliases are not taken inside introspection \("a0: types"\)/,
    status: [200, 400],
  },
  {
    name: '__type eleven times, through a fragment',
    query: `{ ...F } fragment F on Query { ${Array.from({ length: 11 }, (_, i) => `t${i}: __type(name: "Query") { name }`).join(' ')} }`,
    names: /__type at most 10 times; this one reads it 11 times/,
    status: [200, 400],
  },
  { name: 'a query deeper than the limit', query: `{ __type(name: "Tenant") { ${'ofType { '.repeat(12)}name${' }'.repeat(12)} } }`, names: /Query depth limit of 10 exceeded/, status: [200, 400] },
  { name: 'more aliases than the limit', query: `{ ${Array.from({ length: 31 }, (_, i) => `a${i}: viewer { id }`).join(' ')} }`, names: /Aliases limit of 30 exceeded/, status: [200, 400] },
  { name: 'more directives than the limit', query: `{ viewer { ${Array.from({ length: 21 }, () => 'id @include(if: true)').join(' ')} } }`, names: /Directives limit of 20 exceeded/, status: [200, 400] },
];

async function overHttp(c: Case, accept: string) {
  const res = await fetch(`${hl.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${tenant.apiKey}` },
    body: JSON.stringify({ query: c.query, variables: c.variables }),
  });
  return { status: res.status, body: (await res.json()) as { data?: unknown; errors?: any[] } };
}

describe('over HTTP', () => {
  for (const c of CASES) {
    it(`refuses ${c.name} with BAD_USER_INPUT`, async () => {
      for (const [i, accept] of ['application/json', 'application/graphql-response+json'].entries()) {
        const { status, body } = await overHttp(c, accept);
        expect(status).toBe(c.status[i]);
        expect(body.errors).toHaveLength(1);
        expect(body.errors![0].extensions).toEqual({ code: 'BAD_USER_INPUT', ...(c.field ? { field: c.field } : {}) });
        expect(body.errors![0].message).toMatch(c.names);
        expect(body.data ?? null).toBeNull();
      }
    });
  }

  it('checks introspection in time linear in the document: fragments spreading fragments twice, 30 deep', async () => {
    // Walked once per spread, this chain cost 2^30 walks (26 s for 24), the event loop held.
    const depth = 30;
    const fragments = Array.from({ length: depth }, (_, i) => `fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }`).join(' ');
    const query = `{ ...F0 } ${fragments} fragment F${depth} on Query { __typename }`;
    const started = performance.now();
    const res = await fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
    await res.text();
    // Whatever the answer (the complexity of 2^30 fields is refused), it comes at once.
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("checks a mutation's answer in time linear in the document: fields repeated in fragments spreading the next", async () => {
    // Walked per path, each of the 8 levels repeating its field 10 times cost 10^8 walks: 15 s.
    const m = 10;
    const depth = 8;
    const fragments = Array.from({ length: depth }, (_, i) =>
      i % 2 === 0 ? `fragment L${i} on Delivery { ${`webhookEvent { ...L${i + 1} } `.repeat(m)}}` : `fragment L${i} on WebhookEvent { ${`deliveries { ...L${i + 1} } `.repeat(m)}}`,
    ).join(' ');
    const query = `mutation { retryDelivery(id: "00000000-0000-0000-0000-000000000000") { ...L0 } } ${fragments} fragment L${depth} on Delivery { id }`;
    const started = performance.now();
    const res = await fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.apiKey}` }, body: JSON.stringify({ query }) });
    const body = await res.json();
    expect(body.errors?.[0]?.extensions?.code, JSON.stringify(body)).toBe('BAD_USER_INPUT');
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("answers the introspection GraphiQL and code generators send, and __type ten times", async () => {
    const full = await overHttp({ name: 'introspection', query: getIntrospectionQuery(), names: /./, status: [200, 200] }, 'application/json');
    expect(full.status).toBe(200);
    expect(full.body.errors).toBeUndefined();
    const ten = await overHttp({ name: '__type', query: `{ ${Array.from({ length: 10 }, (_, i) => `t${i}: __type(name: "Query") { name }`).join(' ')} }`, names: /./, status: [200, 200] }, 'application/json');
    expect(ten.body.errors).toBeUndefined();
    // The same response key twice is one field, as graphql-js runs it.
    const merged = await overHttp({ name: 'merged', query: '{ __schema { types { name } } ...S } fragment S on Query { __schema { queryType { name } } }', names: /./, status: [200, 200] }, 'application/json');
    expect(merged.body.errors).toBeUndefined();
  });

  it('leaves the codes of the contract as they are', async () => {
    const unknown = await hl.gql('mutation { revokeApiKey(id: "00000000-0000-0000-0000-000000000000") }', {}, tenant.apiKey);
    expect(unknown.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    const anonymous = await hl.gql('{ deliveries(first: 1) { edges { node { id } } } }');
    expect(anonymous.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const blank = await hl.gql('mutation { createApiKey(name: " ") { id } }', {}, tenant.apiKey);
    expect(blank.errors?.[0]?.extensions).toEqual({ code: 'BAD_USER_INPUT', field: 'name' });
  });

  it('refuses variables that are not JSON, in a GET query string or a form body, with BAD_USER_INPUT', async () => {
    const auth = { authorization: `Bearer ${tenant.apiKey}` };
    const answers = [
      await fetch(`${hl.url}/graphql?query=${encodeURIComponent('{ viewer { id } }')}&variables=%7Bx`, { headers: auth }),
      await fetch(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
        body: `query=${encodeURIComponent('{ viewer { id } }')}&extensions=%7Bx`,
      }),
    ];
    for (const res of answers) {
      expect(res.status).toBe(400);
      const body = await res.json();
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('not valid JSON') });
    }
  });

  it('answers other methods than GET and POST with 405 and Allow, whatever their content type', async () => {
    for (const method of ['PUT', 'PATCH', 'DELETE']) {
      const res = await fetch(`${hl.url}/graphql`, {
        method,
        headers: { authorization: `Bearer ${tenant.apiKey}`, 'content-type': 'application/json' },
        body: method === 'DELETE' ? undefined : JSON.stringify({ query: '{ viewer { id } }' }),
      });
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow')).toMatch(/GET.*POST/);
    }
  });

  it('refuses a content type it cannot read with 415 and a BAD_USER_INPUT naming it', async () => {
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.apiKey}`, 'content-type': 'text/plain' },
      body: '{ viewer { id } }',
    });
    expect(res.status).toBe(415);
    const body = await res.json();
    expect(body.errors[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('text/plain') });
  });

  it('refuses a body that is not UTF-8 with BAD_USER_INPUT, as it answers malformed JSON, and writes nothing', async () => {
    // Latin-1 bytes ("José", and a byte no UTF-8 text holds), which were decoded to U+FFFD and kept:
    // delivered as "Jos\uFFFD \uFFFD", and a subscription signed with a secret other than the one sent.
    const latin1 = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));
    const subscribe = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }';
    const bodies: Array<[type: string, body: Uint8Array<ArrayBuffer>]> = [
      ['application/json', latin1(JSON.stringify({ query: TRIGGER, variables: { input: { event: 'test.event', data: { name: 'Jos\u00e9 \u00ff' } } } }))],
      ['application/json', latin1(JSON.stringify({ query: subscribe, variables: { input: { events: ['test.event'], url: 'http://127.0.0.1:9/hooks', secret: 'my-webhook-secret-Jos\u00e9' } } }))],
      ['application/graphql', latin1('mutation { createApiKey(name: "Jos\u00e9") { id } }')],
    ];
    const own = await hl.createTenant('Latin-1');
    const post = (type: string, accept: string, body: string | Uint8Array<ArrayBuffer>) =>
      fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': type, accept, authorization: `Bearer ${own.apiKey}` }, body });
    for (const accept of ['application/json', 'application/graphql-response+json']) {
      const malformed = await post('application/json', accept, '{"query": ');
      for (const [type, body] of bodies) {
        for (const charset of ['', '; charset=iso-8859-1']) {
          const res = await post(type + charset, accept, body);
          expect(res.status).toBe(400);
          expect(res.status).toBe(malformed.status);
          expect(res.headers.get('content-type')).toBe(malformed.headers.get('content-type'));
          expect(await res.json()).toEqual({ errors: [{ message: 'the request body is not valid UTF-8', extensions: { code: 'BAD_USER_INPUT' } }] });
        }
      }
    }
    // Its one API key is the one createTenant made.
    for (const [table, rows] of [['webhook_events', 0], ['webhook_subscriptions', 0], ['api_keys', 1]] as const) {
      const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from ${table} where tenant_id = $1`, [own.id]);
      expect(n, table).toBe(rows);
    }
  });

  it('refuses a form body whose percent-encoded bytes are not UTF-8, and writes nothing; a form in UTF-8 works', async () => {
    const own = await hl.createTenant('Latin-1 form');
    const form = (query: string) =>
      fetch(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', authorization: `Bearer ${own.apiKey}` },
        body: `query=${query}`,
      });
    // "José" in Latin-1 (%E9), and a byte no UTF-8 text holds (%FF): URLSearchParams made them U+FFFD.
    for (const query of ['mutation+%7B+createApiKey(name%3A+%22Jos%E9%22)+%7B+id+%7D+%7D', 'mutation { createApiKey(name: "key-%FF%FE") { id } }']) {
      const res = await form(query);
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ errors: [{ message: "the request body's percent-encoded bytes are not valid UTF-8", extensions: { code: 'BAD_USER_INPUT' } }] });
    }
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from api_keys where tenant_id = $1', [own.id]);
    expect(n).toBe(1);
    const utf8 = await form('mutation+%7B+createApiKey(name%3A+%22Jos%C3%A9%22)+%7B+name+%7D+%7D');
    expect(await utf8.json()).toEqual({ data: { createApiKey: { name: 'José' } } });
    // A % that starts no escape is a % (as curl -d sends "50% off"), and raw UTF-8 is UTF-8.
    const stray = await form('mutation { createApiKey(name: "50% off, 100%") { name } }');
    expect(await stray.json()).toEqual({ data: { createApiKey: { name: '50% off, 100%' } } });
    const raw = await form('mutation { createApiKey(name: "Año %C3%B1") { name } }');
    expect(await raw.json()).toEqual({ data: { createApiKey: { name: 'Año ñ' } } });
  });

  it("refuses a query string whose percent-encoded bytes are not UTF-8, over GraphQL and REST; one in UTF-8 works", async () => {
    const own = await hl.createTenant('Latin-1 query string');
    const get = (path: string) => fetch(`${hl.url}${path}`, { headers: { accept: 'application/json', authorization: `Bearer ${own.apiKey}` } });
    const graphql = await get('/graphql?query=%7B+webhookSubscriptions(event%3A+%22caf%E9.*%22)+%7B+edges+%7B+node+%7B+id+%7D+%7D+%7D+%7D');
    expect(graphql.status).toBe(400);
    expect(await graphql.json()).toEqual({ errors: [{ message: "the query string's percent-encoded bytes are not valid UTF-8", extensions: { code: 'BAD_USER_INPUT' } }] });
    const rest = await get('/api/v1/tenant/webhooks/deliveries?event=invoice.%FFcreated');
    expect(rest.status).toBe(400);
    expect(await rest.json()).toEqual({ error: { code: 'BAD_USER_INPUT', message: "the query string's percent-encoded bytes are not valid UTF-8" } });
    const utf8 = await get('/graphql?query=%7B+viewer+%7B+name+%7D+%7D&x=caf%C3%A9');
    expect(await utf8.json()).toEqual({ data: { viewer: { name: 'Latin-1 query string' } } });
  });

  it('refuses a compressed body (Content-Encoding) with 415 and BAD_USER_INPUT naming it, and writes nothing', async () => {
    const own = await hl.createTenant('Encoded');
    const body = JSON.stringify({ query: TRIGGER, variables: { input: { event: 'test.event', data: {} } } });
    const post = (headers: Record<string, string>, raw: Uint8Array<ArrayBuffer>) =>
      fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${own.apiKey}`, ...headers }, body: raw });
    for (const [encoding, raw] of [['gzip', gzipSync(body)], ['gzip', Buffer.from(body)], ['deflate', Buffer.from(body)]] as const) {
      const res = await post({ 'content-encoding': encoding }, new Uint8Array(raw));
      expect(res.status, encoding).toBe(415);
      const answer = await res.json();
      expect(answer.errors[0].extensions.code).toBe('BAD_USER_INPUT');
      expect(answer.errors[0].message).toBe(`Content-Encoding ${encoding} is not supported: send the request body uncompressed`);
    }
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [own.id]);
    expect(n).toBe(0);
    const plain = await post({ 'content-encoding': 'identity' }, new Uint8Array(Buffer.from(body)));
    expect(await plain.json()).toEqual({ data: { triggerEvent: { duplicate: false } } });
  });

  it('refuses an Accept header that takes no answer GraphQL gives with 406 and BAD_USER_INPUT, before the operation runs', async () => {
    // Yoga found out only once it had a result to format: an empty 406 for a mutation committed.
    const own = await hl.createTenant('Accept');
    const post = (token: string, accept: string, query: string, variables?: Record<string, unknown>) =>
      fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${token}` }, body: JSON.stringify({ query, variables }) });
    const trigger = { input: { event: 'test.event', data: {} } };
    for (const accept of ['text/html', 'text/plain', 'application/xml', 'application/json; charset=iso-8859-1']) {
      for (const [token, query, variables] of [
        [own.apiKey, TRIGGER, trigger],
        [own.apiKey, 'mutation { createApiKey(name: "second") { id } }', undefined],
        [ADMIN_TOKEN, 'mutation { createTenant(name: "Accept probe") { apiKey } }', undefined],
      ] as const) {
        const res = await post(token, accept, query, variables);
        expect(res.status, accept).toBe(406);
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        const body = await res.json();
        expect(body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
        expect(body.errors[0].message).toContain('application/json');
      }
    }
    for (const [table, rows] of [['webhook_events', 0], ['api_keys', 1]] as const) {
      const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from ${table} where tenant_id = $1`, [own.id]);
      expect(n, table).toBe(rows);
    }
    const [{ n: tenants }] = await hl.dataSource.query(`select count(*)::int as n from tenants where name = 'Accept probe'`);
    expect(tenants).toBe(0);
    // What takes one of its answers is answered as before.
    for (const accept of ['', '*/*', 'application/*', 'text/html, application/json;q=0.9', 'application/graphql-response+json', 'text/event-stream']) {
      const res = await post(own.apiKey, accept, '{ viewer { name } }');
      expect(res.status, accept).toBe(200);
      expect(await res.text()).toContain('"Accept"');
    }
  });

  it('refuses a subscription whose Accept takes no event stream with 406 and BAD_USER_INPUT, before it is set up', async () => {
    // Yoga serves subscriptions over HTTP as Server-Sent Events only: it answered an empty 406,
    // once the subscription had been set up.
    const own = await hl.createTenant('Subscription accept');
    const subscribe = (accept: string, signal?: AbortSignal) =>
      fetch(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${own.apiKey}` },
        body: JSON.stringify({ query: 'subscription { deliveryUpdated { id } }' }),
        signal,
      });
    for (const accept of ['application/json', 'application/graphql-response+json', 'multipart/mixed', 'application/*', 'multipart/mixed, application/json']) {
      const res = await subscribe(accept);
      expect(res.status, accept).toBe(406);
      expect(res.headers.get('content-type'), accept).toMatch(/^application\/(graphql-response\+)?json/);
      const body = await res.json();
      expect(body.errors[0].extensions, accept).toEqual({ code: 'BAD_USER_INPUT' });
      expect(body.errors[0].message).toContain('text/event-stream');
    }
    expect(await hl.metric('hookline_live_subscriptions')).toBe(0);
    // What takes an event stream gets one.
    for (const accept of ['text/event-stream', '*/*', 'text/*', 'application/json, text/event-stream']) {
      const stop = new AbortController();
      const res = await subscribe(accept, stop.signal);
      expect(res.status, accept).toBe(200);
      expect(res.headers.get('content-type'), accept).toMatch(/^text\/event-stream/);
      stop.abort();
    }
  });

  it("pages nested in pages are limited by the complexity the README counts, and a literal page size by first's own check", async () => {
    // GraphQL Armor's cost limit (20,000, times 1.5 a level, page sizes written in the text only)
    // refused these as a "Syntax Error", and answered a too-large literal first with its cost.
    const nested = await hl.gql('{ webhookSubscriptions(first: 100) { edges { node { id url events active deliveries(first: 5) { edges { node { id status attempts createdAt lastError } } } } } } }', undefined, tenant.apiKey);
    expect(nested.errors).toBeUndefined();
    const twenty = await hl.gql('{ webhookSubscriptions(first: 20) { edges { node { id deliveries(first: 20) { edges { node { id status attempts } } } } } } }', undefined, tenant.apiKey);
    expect(twenty.errors).toBeUndefined();
    const huge = await hl.gql('{ deliveries(first: 2147483648) { edges { node { id } } } }', undefined, tenant.apiKey);
    expect(huge.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(huge.errors?.[0]?.message).toMatch(/Int cannot represent non 32-bit signed integer value/);
    const big = await hl.gql('{ deliveries(first: 1000) { edges { node { id } } } }', undefined, tenant.apiKey);
    expect(big.errors?.[0]?.message).toMatch(/first.*at most 100/);
  });

  it('writes nothing when a mutation is refused', async () => {
    const res = await hl.gql(TRIGGER, { input: { event: 'invoice.created', data: { amount: 1, customer: 'A' }, extra: 1 } }, tenant.apiKey);
    expect(res.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(res.errors?.[0]?.message).toMatch(/"extra"/);
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [tenant.id]);
    expect(n).toBe(0);
  });
});

describe('documents nested deeper than the parser can go', () => {
  // graphql-js's parser recurses once or more per level: a few thousand nested lists overflowed its
  // stack before the token limit (3000) refused them, at depths that depend on the stack's state.
  const nested = (depth: number) => `mutation { triggerEvent(input: { event: "test.event", data: { a: ${'['.repeat(depth)}${']'.repeat(depth)} } }) { duplicate } }`;
  const listArgument = (depth: number) => `{ deliveries(event: ${'['.repeat(depth)}"x"${']'.repeat(depth)}) { edges { node { id } } } }`;
  const DEPTHS = [1500, 2000, 2500, 2750, 2900, 3000, 3100, 3500, 4000, 5000, 8000, 20_000];

  it('are refused with BAD_USER_INPUT over HTTP, with a key or without', async () => {
    for (const depth of DEPTHS) {
      for (const query of [nested(depth), listArgument(depth)]) {
        for (const token of [tenant.apiKey, undefined]) {
          const res = await hl.gql(query, {}, token);
          expect(res.errors?.[0]?.extensions?.code, `depth ${depth}`).toBe('BAD_USER_INPUT');
          expect(res.errors![0]!.message).toMatch(/too deeply|Token limit|more than 100 levels/);
        }
      }
    }
  });

  it('are refused with BAD_USER_INPUT over WebSocket, and the socket stays', async () => {
    for (const depth of DEPTHS) {
      const outcome = await wsRequest(socket, nested(depth)).then(
        (result) => result.errors,
        (errors: unknown) => errors as any[],
      );
      expect(outcome?.[0]?.extensions?.code, `depth ${depth}`).toBe('BAD_USER_INPUT');
    }
    expect((await wsRequest(socket, '{ viewer { id } }')).data.viewer.id).toBe(tenant.id);
  });
});

describe('mutations of several fields', () => {
  it('are refused before any field runs: nothing is written, no key or tenant lost', async () => {
    const keys = async () => (await hl.dataSource.query('select count(*)::int as n from api_keys'))[0].n as number;
    const tenants = async () => (await hl.dataSource.query('select count(*)::int as n from tenants'))[0].n as number;
    const before = { keys: await keys(), tenants: await tenants() };
    const orphan = await hl.gql('mutation { a: createTenant(name: "Orphan") { tenant { id } apiKey } b: createTenant(name: "") { apiKey } }', {}, ADMIN_TOKEN);
    expect(orphan.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const keyAndEvent = await hl.gql(
      'mutation { ok: createApiKey(name: "alias-key") { id } bad: triggerEvent(input: { event: "nope.x", data: {} }) { duplicate } }',
      {},
      tenant.apiKey,
    );
    expect(keyAndEvent.errors?.[0]?.message).toMatch(/one field, not 2 \(ok, bad\)/);
    expect({ keys: await keys(), tenants: await tenants() }).toEqual(before);
  });

  it('counts only the fields @skip and @include leave in, written as literals or read from variables', async () => {
    const keys = async () => (await hl.dataSource.query('select name from api_keys where tenant_id = $1 order by name', [tenant.id])).map((r: { name: string }) => r.name) as string[];
    const before = await keys();
    const literal = await hl.gql('mutation { a: createApiKey(name: "literal-a") { name } b: createApiKey(name: "literal-b") @skip(if: true) { name } }', {}, tenant.apiKey);
    expect(literal).toEqual({ data: { a: { name: 'literal-a' } } });
    const toggled = 'mutation($second: Boolean!) { a: createApiKey(name: "var-a") { name } ... on Mutation @include(if: $second) { b: createApiKey(name: "var-b") { name } } }';
    expect(await hl.gql(toggled, { second: false }, tenant.apiKey)).toEqual({ data: { a: { name: 'var-a' } } });
    const refused = await hl.gql(toggled, { second: true }, tenant.apiKey);
    expect(refused.errors?.[0]?.message).toMatch(/one field, not 2 \(a, b\)/);
    expect(refused.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    // Over WebSocket too, and nothing of the refused call is written.
    const overSocket = await wsRequest(socket, toggled, { second: true }).then(
      (result) => result.errors,
      (errors: unknown) => errors as any[],
    );
    expect(overSocket?.[0]?.message).toMatch(/one field, not 2/);
    expect((await wsRequest(socket, toggled, { second: false })).data).toEqual({ a: { name: 'var-a' } });
    expect(await keys()).toEqual([...before, 'literal-a', 'var-a', 'var-a'].sort());
  });

  it('takes one field with __typename beside it, and one field written twice (one call)', async () => {
    const res = await hl.gql('mutation { __typename createApiKey(name: "one") { name } createApiKey(name: "one") { id } }', {}, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data).toEqual({ __typename: 'Mutation', createApiKey: { name: 'one', id: expect.any(String) } });
  });
});

describe('over WebSocket', () => {
  for (const c of CASES) {
    it(`refuses ${c.name} with BAD_USER_INPUT`, async () => {
      // graphql-ws sends errors found before execution as an `error` message (the rejection here).
      const outcome = await wsRequest(socket, c.query, c.variables).then(
        (result) => result.errors,
        (errors: unknown) => errors as any[],
      );
      expect(Array.isArray(outcome)).toBe(true);
      expect(outcome).toHaveLength(1);
      expect(outcome![0].extensions).toEqual({ code: 'BAD_USER_INPUT', ...(c.field ? { field: c.field } : {}) });
      expect(outcome![0].message).toMatch(c.names);
    });
  }

  it('refuses a subscription with a bad variable, and keeps the socket', async () => {
    const updates = 'subscription($status: DeliveryStatus) { deliveryUpdated(status: $status) { id } }';
    const outcome = await wsRequest(socket, updates, { status: 'LOST' }).then(
      (result) => result.errors,
      (errors: unknown) => errors as any[],
    );
    expect(outcome?.[0]?.extensions).toEqual({ code: 'BAD_USER_INPUT' });
    expect(outcome?.[0]?.message).toMatch(/\$status/);
    expect((await wsRequest(socket, '{ viewer { id } }')).data.viewer.id).toBe(tenant.id);
  });
});

describe('logs', () => {
  it('a client\'s errors are answered, not logged as the service\'s own', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const quiet = await startTestHookline({}, { log });
    try {
      const { apiKey } = await quiet.createTenant();
      lines.length = 0;
      // No key, a wrong key, a bad argument, an unknown id, a schema mismatch; and over REST.
      await quiet.gql('{ viewer { id } }');
      await quiet.gql('{ viewer { id } }', {}, 'hkl_wrong');
      await quiet.gql(TRIGGER, { input: { event: 'invoice.exploded', data: {} } }, apiKey);
      await quiet.gql('{ delivery(id: "00000000-0000-4000-8000-000000000000") { id } }', {}, apiKey);
      await quiet.gql(TRIGGER, { input: { event: 'invoice.created', data: { amount: 'x' } } }, apiKey);
      await fetch(`${quiet.url}/api/v1/tenant/webhooks/deliveries`);
      await fetch(`${quiet.url}/graphql?query=${encodeURIComponent('{ viewer { id } }')}&variables=%7Bx`, { headers: { authorization: `Bearer ${apiKey}` } });
      expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    } finally {
      await quiet.stop();
    }
  });
});
