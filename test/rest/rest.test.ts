// The guide's REST endpoints answer with each status code of the contract,
// share their data with GraphQL (one service layer), and keep tenants apart.
import { createHmac } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const INVOICE = { invoice_id: 'inv-123', amount: 1500.0, customer: 'Acme Corp' };

let hl: TestHookline;
let receiver: Receiver;
let key: string;
let tenantId: string;

beforeAll(async () => {
  hl = await startTestHookline();
  receiver = await startReceiver(() => ({ status: 200, body: 'ok' }));
});
beforeEach(async () => {
  ({ apiKey: key, id: tenantId } = await hl.createTenant());
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

async function rest(method: string, path: string, options: { token?: string | null; body?: unknown; raw?: string | Uint8Array<ArrayBuffer>; type?: string } = {}): Promise<Answer> {
  const token = options.token === undefined ? key : options.token;
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | Uint8Array<ArrayBuffer> | undefined;
  if (options.raw !== undefined) body = options.raw;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers['content-type'] = options.type ?? 'application/json';
  const res = await fetch(`${hl.url}/api/v1/tenant/webhooks/${path}`, { method, headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

function expectError(answer: Answer, status: number, code: string, field?: string) {
  expect(answer.status, JSON.stringify(answer.body)).toBe(status);
  expect(answer.body.error.code).toBe(code);
  expect(typeof answer.body.error.message).toBe('string');
  if (field) expect(answer.body.error.field).toBe(field);
}

const subscribe = (body: Record<string, unknown>, token?: string) => rest('POST', 'subscriptions', { body, token });
const trigger = (body: Record<string, unknown>, token?: string) => rest('POST', 'deliveries', { body, token });

async function countRows(table: string) {
  const [{ count }] = await hl.dataSource.query(`select count(*)::int as count from ${table} where tenant_id = $1`, [tenantId]);
  return count as number;
}

describe('201 POST subscriptions', () => {
  it('accepts the guide\'s single-event body and answers the subscription with its id and secret', async () => {
    const res = await subscribe({ event: 'invoice.created', url: `${receiver.url}/hooks`, secret: 'my-webhook-secret' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      url: `${receiver.url}/hooks`,
      event: 'invoice.created',
      events: ['invoice.created'],
      active: true,
      description: null,
      disabled_reason: null,
      secret: 'my-webhook-secret',
    });
    expect(res.body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(res.body.created_at).getTime()).toBeGreaterThan(0);
    expect(res.body.updated_at).toBeTypeOf('string');
  });

  it('accepts the list form with description, headers and active, and generates a whsec_ secret', async () => {
    const res = await subscribe({
      events: ['invoice.*', 'payment.received'],
      url: receiver.url,
      description: 'ERP',
      headers: { 'X-Team': 'billing' },
      active: false,
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ events: ['invoice.*', 'payment.received'], description: 'ERP', headers: { 'X-Team': 'billing' }, active: false });
    expect(res.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
  });
});

describe('200 GET subscriptions', () => {
  it('lists the tenant\'s subscriptions, oldest first, filtered by event and active, never with the secret', async () => {
    const a = await subscribe({ event: 'invoice.created', url: receiver.url });
    const b = await subscribe({ events: ['payment.*'], url: receiver.url, active: false });
    const all = await rest('GET', 'subscriptions');
    expect(all.status).toBe(200);
    expect(all.body.map((s: any) => s.id)).toEqual([a.body.id, b.body.id]);
    for (const s of all.body) expect(s).not.toHaveProperty('secret');
    expect((await rest('GET', 'subscriptions?event=payment.received')).body.map((s: any) => s.id)).toEqual([b.body.id]);
    expect((await rest('GET', 'subscriptions?active=true')).body.map((s: any) => s.id)).toEqual([a.body.id]);
    expect((await rest('GET', `subscriptions/${a.body.id}`)).body).toMatchObject({ id: a.body.id, event: 'invoice.created' });
    expectError(await rest('GET', 'subscriptions?active=yes'), 400, 'BAD_USER_INPUT', 'active');
  });

  it('refuses an event filter that is no event name or pattern, as GraphQL does, and lists nothing for an unknown name', async () => {
    await subscribe({ events: ['invoice.*'], url: receiver.url });
    // Long enough to have taken 80 ms, but within a URL's length (a request line of 16 KiB and more is refused with 431).
    for (const event of [`${'a.'.repeat(4000)}b`, `invoice.${'a'.repeat(93)}`, 'Invoice.Created', 'invoice']) {
      const res = await rest('GET', `subscriptions?event=${encodeURIComponent(event)}`);
      expectError(res, 400, 'BAD_USER_INPUT', 'event');
      expect(res.body.error.message).toMatch(/^event: /);
      expectError(await rest('GET', `deliveries?event=${encodeURIComponent(event)}`), 400, 'BAD_USER_INPUT', 'event');
    }
    expectError(await rest('GET', 'deliveries?event=invoice.*'), 400, 'BAD_USER_INPUT', 'event');
    expect((await rest('GET', 'subscriptions?event=invoice.paid')).body).toHaveLength(1);
    expect((await rest('GET', 'subscriptions?event=parcel.lost')).body).toEqual([]);
    expect((await rest('GET', 'deliveries?event=parcel.lost')).body).toEqual([]);
    // An empty parameter in a query string (a form's empty field) is no filter, as in GraphQL.
    expect((await rest('GET', 'subscriptions?event=')).body).toHaveLength(1);
  });
});

describe('202 POST deliveries and 200 GET deliveries', () => {
  it('triggers the event, answers the created deliveries, and lists them as they are delivered', async () => {
    const sub = await subscribe({ event: 'invoice.created', url: `${receiver.url}/rest-202`, secret: 'my-webhook-secret' });
    const res = await trigger({ event: 'invoice.created', payload: INVOICE });
    expect(res.status).toBe(202);
    expect(res.body.event_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body.duplicate).toBe(false);
    expect(res.body.deliveries).toHaveLength(1);
    const created = res.body.deliveries[0];
    expect(created).toMatchObject({
      event_id: res.body.event_id,
      subscription_id: sub.body.id,
      event: 'invoice.created',
      target_url: `${receiver.url}/rest-202`,
      status: expect.stringMatching(/^(PENDING|SENDING)$/), // SENDING: handed to this process's idle dispatcher
      attempts: 0,
      last_error: null,
    });

    const delivered = await eventually(async () => {
      const list = await rest('GET', 'deliveries?event=invoice.created');
      return list.body[0]?.status === 'DELIVERED' ? list : undefined;
    });
    expect(delivered.status).toBe(200);
    expect(delivered.body).toHaveLength(1);
    expect(delivered.body[0]).toMatchObject({ id: created.id, status: 'DELIVERED', attempts: 1, last_error: null, last_status_code: 200 });
    for (const field of ['id', 'event', 'status', 'attempts', 'last_error', 'created_at', 'subscription_id', 'target_url', 'next_attempt_at', 'delivered_at', 'updated_at']) {
      expect(delivered.body[0]).toHaveProperty(field);
    }

    // The receiver got the payload as the envelope's data, signed with the subscription's secret.
    const got = receiver.received.find((r) => r.path === '/rest-202')!;
    const envelope = JSON.parse(got.body);
    expect(envelope).toMatchObject({ id: res.body.event_id, event: 'invoice.created', resource_id: 'inv-123', tenant_id: tenantId, data: INVOICE });
    expect(got.headers['x-signature']).toBe(`sha256=${createHmac('sha256', 'my-webhook-secret').update(got.body).digest('hex')}`);

    const one = await rest('GET', `deliveries/${created.id}`);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: created.id, status: 'DELIVERED', attempts: 1 });
    expect(one.body.attempt_log).toEqual([expect.objectContaining({ number: 1, status_code: 200, error: null })]);
  });

  it('filters by status and subscription, newest first, with a limit', async () => {
    const sub = await subscribe({ event: 'test.event', url: `${receiver.url}/filters` });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await trigger({ event: 'test.event', payload: { n: i } })).body.deliveries[0].id);
    await eventually(async () => (await rest('GET', 'deliveries?status=DELIVERED')).body.length === 3);
    const listed = await rest('GET', `deliveries?subscription_id=${sub.body.id}&status=delivered`);
    expect(listed.body.map((d: any) => d.id)).toEqual([...ids].reverse());
    expect((await rest('GET', 'deliveries?limit=2')).body.map((d: any) => d.id)).toEqual([ids[2], ids[1]]);
    expect((await rest('GET', `deliveries?limit=2&after=${ids[1]}`)).body.map((d: any) => d.id)).toEqual([ids[0]]);
    expect((await rest('GET', 'deliveries?status=PENDING')).body).toEqual([]);
    expectError(await rest('GET', 'deliveries?status=LOST'), 400, 'BAD_USER_INPUT', 'status');
    expectError(await rest('GET', 'deliveries?limit=1000'), 400, 'BAD_USER_INPUT', 'limit');
    // What Number() would read is no limit of this API.
    for (const limit of ['0x10', '1e1', '%201', '2.0', '0', '-1']) expectError(await rest('GET', `deliveries?limit=${limit}`), 400, 'BAD_USER_INPUT', 'limit');
  });

  it('refuses a query parameter an endpoint does not read, one given twice, and a filter id that is no id, naming it', async () => {
    const sub = await subscribe({ event: 'test.event', url: `${receiver.url}/params` });
    const made = (await trigger({ event: 'test.event', payload: {} })).body;
    // A misspelt filter would have answered the whole list, as if filtered.
    const misspelt = await rest('GET', `deliveries?subscripton_id=${sub.body.id}`);
    expectError(misspelt, 400, 'BAD_USER_INPUT', 'subscripton_id');
    expect(misspelt.body.error.message).toContain('subscripton_id: is not a query parameter of GET /api/v1/tenant/webhooks/deliveries; it reads event, status, subscription_id, event_id, limit, after');
    // Named as written: GraphQL's spelling is not taken for the REST name it resembles.
    for (const name of ['eventId', 'subscriptionId', 'data']) {
      const res = await rest('GET', `deliveries?${name}=x`);
      expectError(res, 400, 'BAD_USER_INPUT', name);
      expect(res.body.error.message).toMatch(new RegExp(`^${name}: is not a query parameter`));
    }
    const nameless = await rest('GET', 'deliveries?=x');
    expectError(nameless, 400, 'BAD_USER_INPUT');
    expect(nameless.body.error.message).toContain('a query parameter has no name');
    for (const path of ['deliveries?offset=10', 'deliveries?page=2', 'subscriptions?status=DELIVERED', `deliveries/${made.deliveries[0].id}?expand=1`, `subscriptions/${sub.body.id}?x=`]) {
      const name = /\?([^=]+)/.exec(path)![1]!;
      expectError(await rest('GET', path), 400, 'BAD_USER_INPUT', name);
    }
    expectError(await rest('GET', 'deliveries?status=FAILED&status=DELIVERED'), 400, 'BAD_USER_INPUT', 'status');
    for (const name of ['subscription_id', 'event_id']) {
      const res = await rest('GET', `deliveries?${name}=zzz&after=garbage`);
      expectError(res, 400, 'BAD_USER_INPUT', name);
      expect(res.body.error.message).toContain(`${name}: is not an id Hookline gives (a UUID)`);
    }
    // A POST reads none either, and writes nothing.
    const before = (await rest('GET', 'deliveries?event=test.event')).body.length;
    const posted = await rest('POST', 'deliveries?dry_run=true', { body: { event: 'test.event', payload: {} } });
    expectError(posted, 400, 'BAD_USER_INPUT', 'dry_run');
    expect(posted.body.error.message).toContain('dry_run: is not a query parameter of POST /api/v1/tenant/webhooks/deliveries; it reads none');
    // A body field, too, is named as written.
    const camel = await rest('POST', 'deliveries', { body: { event: 'test.event', payload: {}, eventId: 'x' } });
    expectError(camel, 400, 'BAD_USER_INPUT', 'eventId');
    expect(camel.body.error.message).toMatch(/^eventId: is not a field of this request/);
    expect((await rest('GET', 'deliveries?event=test.event')).body).toHaveLength(before);
    // The ones read, each once, still work: the Link header's own included.
    const listed = await rest('GET', `deliveries?event=test.event&status=&subscription_id=${sub.body.id}&event_id=${made.event_id}&limit=1`);
    expect(listed.status).toBe(200);
    expect(listed.body.map((d: any) => d.id)).toEqual([made.deliveries[0].id]);
    const next = /<([^>]+)>/.exec(listed.headers.get('link') ?? '')?.[1];
    expect((await rest('GET', next!.replace('/api/v1/tenant/webhooks/', ''))).status).toBe(200);
  });

  it('takes a resource_id given as a number (the guide passes invoice.id), as its text', async () => {
    await subscribe({ event: 'invoice.created', url: `${receiver.url}/numeric-id` });
    const res = await trigger({ event: 'invoice.created', payload: { ...INVOICE, invoice_id: 42 }, resource_type: 'invoice', resource_id: 42 });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const got = await eventually(() => receiver.received.find((r) => r.path === '/numeric-id'));
    expect(JSON.parse(got.body)).toMatchObject({ resource_type: 'invoice', resource_id: '42', data: { invoice_id: 42 } });
    for (const resource_id of [4.2, 2 ** 53, true]) {
      expectError(await trigger({ event: 'invoice.created', payload: INVOICE, resource_id }), 400, 'BAD_USER_INPUT', 'resource_id');
    }
  });

  it('answers up to 100 deliveries when no limit is given', async () => {
    await subscribe({ event: 'test.event', url: `${receiver.url}/many` });
    for (let i = 0; i < 30; i++) await trigger({ event: 'test.event', payload: { n: i } });
    const all = await rest('GET', 'deliveries?event=test.event');
    expect(all.status).toBe(200);
    expect(all.body).toHaveLength(30);
    expect(all.headers.get('link')).toBeNull(); // the whole list: no next page
  });

  it('shows a delivery and its attempt log as of the same moment', async () => {
    await subscribe({ event: 'test.event', url: `${receiver.url}/moment` });
    const id = (await trigger({ event: 'test.event', payload: { n: 1 } })).body.deliveries[0].id;
    await eventually(async () => (await rest('GET', `deliveries/${id}`)).body.status === 'DELIVERED');
    // An attempt recorded after the delivery's row was read, before its log is: as if it
    // landed between the two reads (the row still counts 1 attempt).
    await hl.dataSource.query(
      `insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code) values ($1, 2, $2, now(), 1, 500)`,
      [id, tenantId],
    );
    const one = await rest('GET', `deliveries/${id}`);
    expect(one.body.attempts).toBe(1);
    expect(one.body.attempt_log.map((a: any) => a.number)).toEqual([1]);
    const viaGraphql = await hl.gql('query($id: ID!) { delivery(id: $id) { attempts attemptLog { number } } }', { id }, key);
    expect(viaGraphql.data.delivery).toEqual({ attempts: 1, attemptLog: [{ number: 1 }] });
  });

  it('links to the next page with a cursor that goes on past a deleted item', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await subscribe({ event: 'test.event', url: `${receiver.url}/page-${i}` })).body.id);
    const first = await rest('GET', 'subscriptions?limit=2&active=true');
    expect(first.body.map((s: any) => s.id)).toEqual(ids.slice(0, 2));
    const link = /^<(\/api\/v1\/tenant\/webhooks\/subscriptions\?[^>]+)>; rel="next"$/.exec(first.headers.get('link') ?? '');
    expect(link, first.headers.get('link') ?? 'no Link header').not.toBeNull();
    const next = new URL(link![1]!, hl.url);
    expect(next.searchParams.get('limit')).toBe('2');
    expect(next.searchParams.get('active')).toBe('true');

    // The page's last item is deleted before the next page is read.
    const deleted = await hl.gql(`mutation($id: ID!) { deleteWebhookSubscription(id: $id) }`, { id: ids[1] }, key);
    expect(deleted.errors).toBeUndefined();
    const second = await rest('GET', `subscriptions${next.search}`);
    expect(second.body.map((s: any) => s.id)).toEqual(ids.slice(2, 4));
    const third = await rest('GET', `subscriptions${new URL(/<([^>]+)>/.exec(second.headers.get('link')!)![1]!, hl.url).search}`);
    expect(third.body.map((s: any) => s.id)).toEqual([ids[4]]);
    expect(third.headers.get('link')).toBeNull(); // a page that is not full is the last

    // A bare id of the deleted item goes on too (its tombstone keeps its place).
    expect((await rest('GET', `subscriptions?limit=2&after=${ids[1]}`)).body.map((s: any) => s.id)).toEqual(ids.slice(2, 4));
    // Another tenant's id cannot say where to go on: refused, not an empty page.
    const other = await hl.createTenant('Other');
    const theirs = (await subscribe({ event: 'test.event', url: `${receiver.url}/theirs` }, other.apiKey)).body.id;
    expectError(await rest('GET', `subscriptions?after=${theirs}`), 400, 'BAD_USER_INPUT', 'after');
    // The end of a list read with a bare id is an empty page.
    expect((await rest('GET', `subscriptions?after=${ids[4]}`)).body).toEqual([]);
  });

  it('answers the first event with duplicate: true for a repeated idempotency_key', async () => {
    await subscribe({ event: 'test.event', url: receiver.url });
    const first = await trigger({ event: 'test.event', payload: {}, idempotency_key: 'k-1' });
    const again = await trigger({ event: 'test.event', payload: {}, idempotency_key: 'k-1' });
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ event_id: first.body.event_id, duplicate: true });
    expect(again.body.deliveries.map((d: any) => d.id)).toEqual(first.body.deliveries.map((d: any) => d.id));
  });

  it('answers the first event for a repeated idempotency_key even when the repeat would now be refused', async () => {
    await subscribe({ event: 'invoice.created', url: receiver.url });
    const first = await trigger({ event: 'invoice.created', payload: INVOICE, idempotency_key: 'k-2' });
    expect(first.status).toBe(202);
    const events = await countRows('webhook_events');
    // The catalog's schema (amount required) or the name no longer accepted: the key decides.
    for (const body of [
      { event: 'invoice.created', payload: {}, idempotency_key: 'k-2' },
      { event: 'invoice.exploded', payload: INVOICE, idempotency_key: 'k-2' },
    ]) {
      const again = await trigger(body);
      expect(again.status, JSON.stringify(again.body)).toBe(202);
      expect(again.body).toMatchObject({ event_id: first.body.event_id, duplicate: true });
    }
    // A key not used before gets the refusal, and nothing is written.
    expectError(await trigger({ event: 'invoice.created', payload: {}, idempotency_key: 'k-3' }), 400, 'BAD_USER_INPUT', 'payload');
    expect(await countRows('webhook_events')).toBe(events);
    expect(await countRows('idempotency_keys')).toBe(1);
  });
});

describe('400 BAD_USER_INPUT', () => {
  it('refuses malformed JSON and bodies that are not objects', async () => {
    expectError(await rest('POST', 'subscriptions', { raw: '{"event": "invoice.created", "url": ' }), 400, 'BAD_USER_INPUT');
    expectError(await rest('POST', 'deliveries', { raw: '[1, 2]' }), 400, 'BAD_USER_INPUT');
    expectError(await rest('POST', 'deliveries', { raw: '' }), 400, 'BAD_USER_INPUT');
  });

  it('refuses a compressed body (Content-Encoding) with BAD_USER_INPUT naming it, and writes nothing', async () => {
    // gzip's bytes were "not valid UTF-8", and a plain body labelled gzip was taken as it came.
    const own = await hl.createTenant('Encoded REST');
    const body = JSON.stringify({ event: 'test.event', payload: {} });
    const post = (headers: Record<string, string>, raw: Uint8Array<ArrayBuffer>) =>
      fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, { method: 'POST', headers: { authorization: `Bearer ${own.apiKey}`, 'content-type': 'application/json', ...headers }, body: raw });
    for (const [encoding, raw] of [['gzip', gzipSync(body)], ['gzip', Buffer.from(body)], ['br', Buffer.from(body)], ['GZIP, identity', gzipSync(body)]] as const) {
      const res = await post({ 'content-encoding': encoding }, new Uint8Array(raw));
      expect(res.status, encoding).toBe(400);
      const answer = await res.json();
      expect(answer.error.code).toBe('BAD_USER_INPUT');
      expect(answer.error.message).toMatch(/^Content-Encoding .* is not supported/);
    }
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [own.id]);
    expect(n).toBe(0);
    expect((await post({ 'content-encoding': 'identity' }, new Uint8Array(Buffer.from(body)))).status).toBe(202);
  });

  it('refuses a body that is not UTF-8, whatever charset its content type names, and writes nothing', async () => {
    // Latin-1 bytes ("José", and a byte no UTF-8 text holds), which were decoded to U+FFFD and kept:
    // the receiver got "Jos\uFFFD \uFFFD", and the subscription a secret other than the one sent.
    const latin1 = (value: unknown) => new Uint8Array(Buffer.from(JSON.stringify(value), 'latin1'));
    const secret = 'my-webhook-secret-Jos\u00e9';
    for (const type of ['application/json', 'application/json; charset=iso-8859-1']) {
      for (const [path, body] of [
        ['subscriptions', { event: 'test.event', url: receiver.url, secret }],
        ['deliveries', { event: 'test.event', payload: { name: 'Jos\u00e9 \u00ff' } }],
      ] as const) {
        const res = await rest('POST', path, { raw: latin1(body), type });
        expectError(res, 400, 'BAD_USER_INPUT');
        expect(res.body.error.message).toBe('the request body is not valid UTF-8');
      }
    }
    expect(await countRows('webhook_subscriptions')).toBe(0);
    expect(await countRows('webhook_events')).toBe(0);

    // The same text in UTF-8 is taken as sent, whatever the charset says (JSON is UTF-8, RFC 8259).
    const type = 'application/json; charset=iso-8859-1';
    const created = await rest('POST', 'subscriptions', { raw: JSON.stringify({ event: 'test.event', url: `${receiver.url}/utf8`, secret }), type });
    expect(created.status).toBe(201);
    expect(created.body.secret).toBe(secret);
    const sent = await rest('POST', 'deliveries', { raw: JSON.stringify({ event: 'test.event', payload: { name: 'Jos\u00e9 \u00ff' } }), type });
    expect(sent.status).toBe(202);
    const got = await eventually(() => receiver.received.find((r) => r.body.includes(sent.body.event_id)));
    expect(JSON.parse(got.body).data).toEqual({ name: 'Jos\u00e9 \u00ff' });
    expect(got.headers['x-signature']).toBe(`sha256=${createHmac('sha256', Buffer.from(secret, 'utf8')).update(got.body).digest('hex')}`);
  });

  it('names the field: missing url or event, unknown event, unknown field, bad types', async () => {
    expectError(await subscribe({ event: 'invoice.created' }), 400, 'BAD_USER_INPUT', 'url');
    expectError(await subscribe({ url: receiver.url }), 400, 'BAD_USER_INPUT', 'event');
    // The guide's form gives `event`: that is the field named, not the list it becomes.
    expectError(await subscribe({ event: 'invoice.exploded', url: receiver.url }), 400, 'BAD_USER_INPUT', 'event');
    expectError(await subscribe({ events: ['invoice.exploded'], url: receiver.url }), 400, 'BAD_USER_INPUT', 'events');
    // Both given (both count): the field holding the bad name is the one named.
    const both = await subscribe({ event: 'invoice.exploded', events: ['invoice.created'], url: receiver.url });
    expectError(both, 400, 'BAD_USER_INPUT', 'event');
    expect(both.body.error.message).toBe('event: unknown event "invoice.exploded": see eventTypes');
    expectError(await subscribe({ event: 'Bad', events: ['invoice.created'], url: receiver.url }), 400, 'BAD_USER_INPUT', 'event');
    expectError(await subscribe({ event: 'invoice.created', events: ['invoice.exploded'], url: receiver.url }), 400, 'BAD_USER_INPUT', 'events');
    expectError(await subscribe({ event: 'invoice.exploded', events: ['invoice.exploded'], url: receiver.url }), 400, 'BAD_USER_INPUT', 'events');
    expectError(await subscribe({ event: 'invoice.exploded', events: null, url: receiver.url }), 400, 'BAD_USER_INPUT', 'event');
    // An empty one beside the list is a name that is none, as in the list, not passed over.
    expectError(await subscribe({ event: '', events: ['invoice.created'], url: receiver.url }), 400, 'BAD_USER_INPUT', 'event');
    expectError(await subscribe({ event: ' ', events: ['invoice.created'], url: receiver.url }), 400, 'BAD_USER_INPUT', 'event');
    // Field names that every JavaScript object has are fields like any other.
    for (const name of ['__proto__', 'toString', 'constructor']) {
      const res = await rest('POST', 'subscriptions', { raw: `{"event": "invoice.created", "url": "${receiver.url}", "${name}": {"x": 1}}` });
      expectError(res, 400, 'BAD_USER_INPUT', name);
      expect(res.body.error.message).toMatch(new RegExp(`^${name}: is not a field`));
    }
    expectError(await subscribe({ event: 'invoice.created', url: 'ftp://example.com' }), 400, 'BAD_USER_INPUT', 'url');
    expectError(await subscribe({ event: 'invoice.created', url: receiver.url, secret: 'short' }), 400, 'BAD_USER_INPUT', 'secret');
    expectError(await subscribe({ evnt: 'invoice.created', url: receiver.url }), 400, 'BAD_USER_INPUT', 'evnt');
    expectError(await subscribe({ events: 'invoice.created', url: receiver.url }), 400, 'BAD_USER_INPUT', 'events');
    expectError(await trigger({ event: 'invoice.exploded', payload: INVOICE }), 400, 'BAD_USER_INPUT', 'event');
    expectError(await trigger({ event: 'invoice.created' }), 400, 'BAD_USER_INPUT', 'payload');
    expectError(await trigger({ event: 'invoice.created', payload: 'text' }), 400, 'BAD_USER_INPUT', 'payload');
    expect(await countRows('webhook_subscriptions')).toBe(0);
    expect(await countRows('webhook_events')).toBe(0);
  });

  it('validates the payload against the event\'s schema, like triggerEvent', async () => {
    const res = await trigger({ event: 'invoice.created', payload: { invoice_id: 'inv-1', amount: true } });
    expectError(res, 400, 'BAD_USER_INPUT', 'payload');
    expect(res.body.error.message).toMatch(/^payload: does not match the schema of invoice.created/);
    expect(res.body.error.message).toMatch(/: payload\.(amount|customer)/); // the REST name, not GraphQL's data.
    expect(res.body.error.message).not.toMatch(/\bdata\./);
    const gql = await hl.gql('mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { duplicate } }', {
      input: { event: 'invoice.created', data: { invoice_id: 'inv-1', amount: true } },
    }, key);
    expect(gql.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(await countRows('webhook_events')).toBe(0);
  });
});

describe('401, 403 and the other statuses', () => {
  it('401 UNAUTHENTICATED without a key, with a wrong or revoked key, or a non-Bearer header', async () => {
    expectError(await rest('GET', 'deliveries', { token: null }), 401, 'UNAUTHENTICATED');
    expectError(await rest('GET', 'deliveries', { token: 'hkl_wrong' }), 401, 'UNAUTHENTICATED');
    const noAuth = await subscribe({ event: 'invoice.created', url: receiver.url }, '');
    expectError(noAuth, 401, 'UNAUTHENTICATED');
    expect(noAuth.headers.get('www-authenticate')).toBe('Bearer');
    const basic = await fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, { headers: { authorization: 'Basic abc' } });
    expect(basic.status).toBe(401);
    expect((await basic.json()).error.code).toBe('UNAUTHENTICATED');

    const created = await hl.gql('mutation($n: String!) { createApiKey(name: $n) { apiKey id } }', { n: 'tmp' }, key);
    const { apiKey, id } = created.data.createApiKey;
    expect((await rest('GET', 'deliveries', { token: apiKey })).status).toBe(200);
    await hl.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id }, key);
    expectError(await rest('GET', 'deliveries', { token: apiKey }), 401, 'UNAUTHENTICATED');
    expect(await countRows('webhook_subscriptions')).toBe(0);
    // Yoga's own liveness answer, which /health had before unknown paths were refused, stays.
    const health = await fetch(`${hl.url}/health`);
    expect([health.status, await health.json()]).toEqual([200, { status: 'ok' }]);
  });

  it('403 FORBIDDEN for the admin token, which has no tenant', async () => {
    expectError(await rest('GET', 'subscriptions', { token: ADMIN_TOKEN }), 403, 'FORBIDDEN');
    expectError(await trigger({ event: 'test.event', payload: {} }, ADMIN_TOKEN), 403, 'FORBIDDEN');
  });

  it('404 NOT_FOUND for an unknown delivery or subscription and an unknown route; 405 for a wrong method', async () => {
    expectError(await rest('GET', 'deliveries/0b0e5d3a-4a7b-4f6e-9a51-2d1f3c4b5a69'), 404, 'NOT_FOUND');
    expectError(await rest('GET', 'deliveries/not-a-uuid'), 404, 'NOT_FOUND');
    expectError(await rest('GET', 'subscriptions/0b0e5d3a-4a7b-4f6e-9a51-2d1f3c4b5a69'), 404, 'NOT_FOUND');
    expectError(await rest('GET', 'events'), 404, 'NOT_FOUND');
    const wrong = await rest('DELETE', 'deliveries');
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('GET, POST, HEAD');
    expect(wrong.body.error.code).toBe('METHOD_NOT_ALLOWED');
  });

  it('reaches an endpoint through repeated slashes (a base URL with a trailing slash), and answers a path nothing serves with a JSON 404', async () => {
    for (const path of ['//api/v1/tenant/webhooks/subscriptions', '/api//v1/tenant/webhooks//subscriptions']) {
      const res = await fetch(`${hl.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.status, path).toBe(200);
      expect(Array.isArray(await res.json()), path).toBe(true);
    }
    for (const path of ['/api/v2/tenant/webhooks/subscriptions', '/', '/graphq', '/nothing?x=1']) {
      const res = await fetch(`${hl.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{"event": "invoice.created", "url": "https://example.com/hook"}',
      });
      expect(res.status, path).toBe(404);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code, path).toBe('NOT_FOUND');
      expect(body.error.message).toContain(`no such endpoint: ${path.split('?')[0]}; GraphQL is at /graphql`);
    }
    expect(await countRows('webhook_subscriptions')).toBe(0);
  });

  it('HEAD answers as GET does, without the body', async () => {
    const get = await rest('GET', 'subscriptions');
    const head = await rest('HEAD', 'subscriptions');
    expect(head).toMatchObject({ status: 200, body: undefined });
    expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
    expect(head.headers.get('content-length')).toBe(get.headers.get('content-length'));
    expect((await rest('HEAD', 'subscriptions', { token: null })).status).toBe(401);
  });

  it('413 PAYLOAD_TOO_LARGE for a payload over 256 KiB and for a body over 1 MiB', async () => {
    await subscribe({ event: 'test.event', url: receiver.url });
    const big = await trigger({ event: 'test.event', payload: { blob: 'x'.repeat(257 * 1024) } });
    expectError(big, 413, 'PAYLOAD_TOO_LARGE', 'payload');
    const huge = await rest('POST', 'deliveries', { raw: JSON.stringify({ event: 'test.event', payload: { blob: 'x'.repeat(1024 * 1024) } }) });
    expectError(huge, 413, 'PAYLOAD_TOO_LARGE');
    expect(await countRows('webhook_events')).toBe(0);
    // The server is still well after refusing both.
    expect((await rest('GET', 'deliveries')).status).toBe(200);
  });
});

describe('one service layer under REST and GraphQL', () => {
  it('GraphQL sees what REST created, and REST sees what GraphQL created', async () => {
    const viaRest = await subscribe({ event: 'invoice.created', url: `${receiver.url}/same`, description: 'rest' });
    const gqlSubs = await hl.gql('{ webhookSubscriptions { edges { node { id url events description active } } } }', {}, key);
    expect(gqlSubs.data.webhookSubscriptions.edges.map((e: any) => e.node)).toEqual([
      { id: viaRest.body.id, url: `${receiver.url}/same`, events: ['invoice.created'], description: 'rest', active: true },
    ]);

    const viaGql = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
      { input: { url: `${receiver.url}/same-gql`, events: ['payment.*'] } },
      key,
    );
    const gqlSubId = viaGql.data.createWebhookSubscription.subscription.id;
    expect((await rest('GET', 'subscriptions')).body.map((s: any) => [s.id, s.events])).toEqual([
      [viaRest.body.id, ['invoice.created']],
      [gqlSubId, ['payment.*']],
    ]);

    const triggered = await trigger({ event: 'invoice.created', payload: INVOICE });
    const restDeliveryId = triggered.body.deliveries[0].id;
    const seen = await hl.gql('query($id: ID!) { delivery(id: $id) { id event subscription { id } webhookEvent { id data } } }', { id: restDeliveryId }, key);
    expect(seen.data.delivery).toEqual({
      id: restDeliveryId,
      event: 'invoice.created',
      subscription: { id: viaRest.body.id },
      webhookEvent: { id: triggered.body.event_id, data: INVOICE },
    });

    const payment = { payment_id: 'pay-456', invoice_id: 'inv-123', amount: '1500.00', method: 'bank_transfer', reference: 'TR-2024-001', received_at: '2024-02-14T11:00:00' };
    const gqlTrigger = await hl.gql(
      'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } deliveries { id } } }',
      { input: { event: 'payment.received', data: payment } },
      key,
    );
    const gqlDeliveryId = gqlTrigger.data.triggerEvent.deliveries[0].id;
    const listed = await rest('GET', 'deliveries?event=payment.received');
    expect(listed.body.map((d: any) => [d.id, d.subscription_id, d.event_id])).toEqual([
      [gqlDeliveryId, gqlSubId, gqlTrigger.data.triggerEvent.event.id],
    ]);
    await eventually(async () => (await rest('GET', 'deliveries?status=DELIVERED')).body.length === 2);
    const gqlList = await hl.gql('{ deliveries(status: DELIVERED) { edges { node { id attempts } } } }', {}, key);
    expect(gqlList.data.deliveries.edges.map((e: any) => e.node.id).sort()).toEqual([gqlDeliveryId, restDeliveryId].sort());
  });
});

describe('tenant isolation over REST', () => {
  it('another tenant\'s subscriptions and deliveries are not listed, and its delivery is NOT_FOUND', async () => {
    const mine = await subscribe({ event: 'test.event', url: `${receiver.url}/mine` });
    const myDelivery = (await trigger({ event: 'test.event', payload: { who: 'me' } })).body.deliveries[0].id;

    const other = await hl.createTenant('Other');
    const theirs = await subscribe({ event: 'test.event', url: `${receiver.url}/theirs` }, other.apiKey);
    const theirTrigger = await trigger({ event: 'test.event', payload: { who: 'them' } }, other.apiKey);
    // Only the other tenant's subscription receives its event.
    expect(theirTrigger.body.deliveries.map((d: any) => d.subscription_id)).toEqual([theirs.body.id]);
    const theirDelivery = theirTrigger.body.deliveries[0].id;

    expect((await rest('GET', 'subscriptions')).body.map((s: any) => s.id)).toEqual([mine.body.id]);
    expect((await rest('GET', 'deliveries')).body.map((d: any) => d.id)).toEqual([myDelivery]);
    expectError(await rest('GET', `deliveries/${theirDelivery}`), 404, 'NOT_FOUND');
    expectError(await rest('GET', `subscriptions/${theirs.body.id}`), 404, 'NOT_FOUND');
    expect((await rest('GET', `deliveries?subscription_id=${theirs.body.id}`)).body).toEqual([]);
    expect((await rest('GET', `deliveries/${theirDelivery}`, { token: other.apiKey })).status).toBe(200);
    expectError(await rest('GET', `deliveries/${myDelivery}`, { token: other.apiKey }), 404, 'NOT_FOUND');
  });
});

describe('500 for the unexpected', () => {
  it('answers an opaque INTERNAL_SERVER_ERROR and logs the detail', async () => {
    const { createRestRoutes } = await import('../../src/server/rest.js');
    const { ApiKeyCache } = await import('../../src/auth/viewer.js');
    const logged: unknown[] = [];
    const services = {
      config: { adminToken: 'admin' },
      apiKeys: Object.assign(new ApiKeyCache(), { usable: () => true }),
      // The API-key lookup runs on the DataSource's pg pool.
      dataSource: { isInitialized: true, driver: { master: { query: async () => ({ rows: [{ id: 'key-1', tenant_id: '00000000-0000-4000-8000-000000000001' }] }) } } },
      log: { error: (...args: unknown[]) => logged.push(args) },
      rateLimiter: { take() {} },
      addressLimiter: { of: () => ({ take() {}, giveBack() {} }) },
      deliveries: {
        list: async () => {
          throw new Error('connection reset: password=hunter2');
        },
      },
    } as any;
    let status = 0;
    let text = '';
    const res = {
      headersSent: false,
      setHeader() {},
      writeHead(s: number) {
        status = s;
      },
      end(t: string) {
        text = t;
      },
    } as any;
    const req = { url: '/api/v1/tenant/webhooks/deliveries', method: 'GET', headers: { authorization: 'Bearer hkl_x' }, socket: { remoteAddress: '127.0.0.1' } } as any;
    const handled = await createRestRoutes(services)(req, res, async () => Buffer.alloc(0));
    expect(handled).toBe(true);
    expect(status).toBe(500);
    expect(JSON.parse(text)).toEqual({ error: { code: 'INTERNAL_SERVER_ERROR', message: 'unexpected error' } });
    expect((logged[0] as any)[0].err.message).toContain('hunter2');
    // Paths outside the prefix are left to GraphQL.
    expect(await createRestRoutes(services)({ ...req, url: '/graphql' }, res, async () => Buffer.alloc(0))).toBe(false);
  });
});
