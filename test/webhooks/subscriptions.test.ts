// Subscriptions: CRUD, validation, pagination, filters, patterns and secret rotation.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUBSCRIPTION_LOCK_WAIT_MS } from '../../src/webhooks/subscriptions.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { DELETE_WEBHOOK_SUBSCRIPTION as DELETE, WEBHOOK_SUBSCRIPTIONS as LIST } from '../helpers/operations.js';

const CREATE = `mutation CreateWebhookSubscription($input: CreateWebhookSubscriptionInput!) {
  createWebhookSubscription(input: $input) {
    secret
    subscription { id url events description active disabledReason createdAt updatedAt headers }
  }
}`;
const UPDATE = `mutation UpdateWebhookSubscription($id: ID!, $input: UpdateWebhookSubscriptionInput!) {
  updateWebhookSubscription(id: $id, input: $input) { id url events description active disabledReason updatedAt }
}`;
const ROTATE = 'mutation RotateWebhookSecret($id: ID!, $secret: String) { rotateWebhookSecret(id: $id, secret: $secret) { secret subscription { id } } }';
const GET = `query WebhookSubscription($id: ID!) {
  webhookSubscription(id: $id) { id url events description active disabledReason createdAt updatedAt deliveries(first: 20) { edges { node { id status attempts } } } }
}`;

let hl: TestHookline;
let key: string;

beforeAll(async () => {
  // Private targets allowed: a loopback address serves most tests.
  hl = await startTestHookline({ HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true' });
  key = (await hl.createTenant()).apiKey;
});
afterAll(() => hl?.stop());

async function create(input: Record<string, unknown>, apiKey = key) {
  return hl.gql(CREATE, { input: { url: 'http://127.0.0.1:9/hook', ...input } }, apiKey);
}

describe('create, read, update, delete', () => {
  it('takes a client\'s secret of 16 characters or more: a whsec_ one whatever its key\'s length, a passphrase with spaces', async () => {
    for (const secret of ['whsec_QUJDREVGR0hJSktM', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'my webhook secret value']) {
      const res = await create({ events: ['invoice.created'], secret });
      expect(res.errors, secret).toBeUndefined();
      expect(res.data.createWebhookSubscription.secret).toBe(secret);
    }
  });

  it('creates with a generated whsec_ secret shown once', async () => {
    const res = await create({ events: ['invoice.created'], description: 'ERP invoices', headers: { 'X-Tenant': 'acme' } });
    expect(res.errors).toBeUndefined();
    const { secret, subscription } = res.data.createWebhookSubscription;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(secret.slice(6), 'base64')).toHaveLength(32);
    expect(subscription).toMatchObject({
      url: 'http://127.0.0.1:9/hook',
      events: ['invoice.created'],
      description: 'ERP invoices',
      active: true,
      disabledReason: null,
      headers: { 'X-Tenant': 'acme' },
    });
    const read = await hl.gql(GET, { id: subscription.id }, key);
    expect(read.data.webhookSubscription).toMatchObject({ id: subscription.id, events: ['invoice.created'] });
    expect(read.data.webhookSubscription.deliveries.edges).toEqual([]);
    expect(JSON.stringify(read)).not.toContain(secret);
  });

  it('accepts a secret of the client, like the guide\'s my-webhook-secret', async () => {
    const res = await create({ events: ['invoice.*'], secret: 'my-webhook-secret' });
    expect(res.data.createWebhookSubscription.secret).toBe('my-webhook-secret');
  });

  it('updates only the fields given, and deletes', async () => {
    const { data } = await create({ events: ['payment.received'], description: 'before' });
    const id = data.createWebhookSubscription.subscription.id;
    const updated = await hl.gql(UPDATE, { id, input: { events: ['payment.*', 'customer.created'], active: false } }, key);
    expect(updated.errors).toBeUndefined();
    expect(updated.data.updateWebhookSubscription).toMatchObject({
      events: ['payment.*', 'customer.created'],
      active: false,
      description: 'before',
      url: 'http://127.0.0.1:9/hook',
    });
    expect((await hl.gql(DELETE, { id }, key)).data.deleteWebhookSubscription).toBe(true);
    expect((await hl.gql(GET, { id }, key)).data.webhookSubscription).toBeNull();
    expect((await hl.gql(DELETE, { id }, key)).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect((await hl.gql(UPDATE, { id, input: { active: true } }, key)).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });
});

describe('patterns', () => {
  it('refuses a pattern no event type begins with, as an unknown name, naming it, and writes nothing', async () => {
    const [{ n: before }] = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions');
    for (const events of [['invoce.*'], ['invoice.*', 'invoice.created.*'], ['nope.*', 'payment.*', 'zip.*']]) {
      const res = await create({ events });
      expect(res.errors?.[0]?.extensions, JSON.stringify(events)).toMatchObject({ code: 'BAD_USER_INPUT', field: 'events' });
      for (const bad of events.filter((e) => !['invoice.*', 'payment.*'].includes(e))) expect(res.errors?.[0]?.message).toContain(`"${bad}"`);
      expect(res.errors?.[0]?.message).toContain('matches no event type');
    }
    const [{ n: after }] = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions');
    expect(after).toBe(before);
    // What the catalog holds, built-in types of several words and all, is taken.
    const ok = await create({ events: ['invoice.*', 'sales_order.*', 'test.*', '*'] });
    expect(ok.errors).toBeUndefined();
    // An update too: refused, it changes nothing.
    const id = ok.data.createWebhookSubscription.subscription.id;
    const refused = await hl.gql(UPDATE, { id, input: { events: ['paymnt.*'] } }, key);
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'events' });
    expect((await hl.gql(GET, { id }, key)).data.webhookSubscription.events).toEqual(['invoice.*', 'sales_order.*', 'test.*', '*']);
  });
});

describe('an update that changes nothing', () => {
  it('writes nothing and keeps updatedAt: an empty input, nulls, or the values it has; a real change moves it', async () => {
    const { data } = await create({ events: ['payment.received'], description: 'kept', headers: { 'X-Erp': 'one' } });
    const { id, updatedAt } = data.createWebhookSubscription.subscription;
    await new Promise((done) => setTimeout(done, 20));
    for (const input of [{}, { url: null, events: null, active: null, headers: null }, { url: 'http://127.0.0.1:9/hook', events: ['payment.received'], description: 'kept', active: true, headers: { 'X-Erp': 'one' } }]) {
      const same = await hl.gql(UPDATE, { id, input }, key);
      expect(same.errors, JSON.stringify(input)).toBeUndefined();
      expect(same.data.updateWebhookSubscription.updatedAt, JSON.stringify(input)).toBe(updatedAt);
    }
    const [{ xmin }] = await hl.dataSource.query('select xmin::text from webhook_subscriptions where id = $1', [id]);
    await hl.gql(UPDATE, { id, input: { description: 'kept' } }, key);
    expect((await hl.dataSource.query('select xmin::text from webhook_subscriptions where id = $1', [id]))[0].xmin).toBe(xmin);
    const changed = await hl.gql(UPDATE, { id, input: { description: 'changed' } }, key);
    expect(changed.data.updateWebhookSubscription).toMatchObject({ description: 'changed' });
    expect(changed.data.updateWebhookSubscription.updatedAt > updatedAt).toBe(true);
  });
});

describe('a subscription an open transaction holds', () => {
  it('is changed once it is let go; till then its changes wait a while, then are RATE_LIMITED, writing nothing, and keep no share of the tenant', async () => {
    // An application's transaction that triggered an event through the library and stays open
    // holds its subscriptions FOR KEY SHARE (the deliveries' foreign key). Changes waited for it
    // with no bound, each holding one of the tenant's 5 connection shares: five of them and the
    // tenant's every other call was RATE_LIMITED after 10 s.
    const { apiKey } = await hl.createTenant('Held');
    const { data } = await create({ events: ['invoice.created'], description: 'before' }, apiKey);
    const id = data.createWebhookSubscription.subscription.id;
    const app = new pg.Client({ connectionString: hl.databaseUrl });
    await app.connect();
    try {
      await app.query('begin');
      await app.query('select 1 from webhook_subscriptions where id = $1 for key share', [id]);
      const changes = [
        ...Array.from({ length: 4 }, (_, i) => hl.gql(UPDATE, { id, input: { description: `change ${i}` } }, apiKey)),
        hl.gql(ROTATE, { id }, apiKey),
      ];
      await new Promise((done) => setTimeout(done, 500));
      const read = hl.gql(GET, { id }, apiKey);
      // Each change within its bound, also one queued behind another (which waited for it, then for the holder).
      const bound = new Promise<'unbounded'>((done) => setTimeout(() => done('unbounded'), SUBSCRIPTION_LOCK_WAIT_MS + 3_000));
      const answers = await Promise.race([Promise.all(changes), bound]);
      expect(answers).not.toBe('unbounded');
      for (const answer of answers as Array<{ errors?: Array<{ message: string; extensions: { code: string } }> }>) {
        expect(answer.errors?.[0]).toMatchObject({ extensions: { code: 'RATE_LIMITED' }, message: expect.stringMatching(/is held by another transaction.*try again/) });
      }
      // The tenant's read went on once the changes let their shares go.
      const shown = await read;
      expect(shown.errors).toBeUndefined();
      expect(shown.data.webhookSubscription.description).toBe('before');
      await app.query('commit');
    } finally {
      await app.query('rollback').catch(() => {});
      await app.end();
    }
    const changed = await hl.gql(UPDATE, { id, input: { description: 'after' } }, apiKey);
    expect(changed.errors).toBeUndefined();
    expect(changed.data.updateWebhookSubscription.description).toBe('after');
  }, 30_000);

  it("keeps an operator's shorter statement_timeout as the bound, and a wait canceled otherwise is no RATE_LIMITED", async () => {
    const { apiKey } = await hl.createTenant('Held, bounded');
    const { data } = await create({ events: ['invoice.created'] }, apiKey);
    const id = data.createWebhookSubscription.subscription.id;
    const app = new pg.Client({ connectionString: hl.databaseUrl });
    const admin = new pg.Client({ connectionString: hl.databaseUrl });
    await Promise.all([app.connect(), admin.connect()]);
    let other: TestHookline | undefined;
    try {
      await app.query('begin');
      await app.query('select 1 from webhook_subscriptions where id = $1 for key share', [id]);
      // A process whose connections have a statement_timeout of 2 s (as a role's or database's setting would give them).
      other = await startTestHookline(
        { HOOKLINE_ROLE: 'api', HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true' },
        { databaseUrl: `${hl.databaseUrl}?options=${encodeURIComponent('-c statement_timeout=2s')}` },
      );
      expect(await other.dataSource.query(`select current_setting('statement_timeout') as t`)).toEqual([{ t: '2s' }]);
      const bounded = await other.gql(UPDATE, { id, input: { description: 'x' } }, apiKey);
      expect(bounded.errors?.[0]).toMatchObject({ extensions: { code: 'RATE_LIMITED' }, message: expect.stringMatching(/waited for [12]\.\d s/) });
      // Canceled by an operator (pg_cancel_backend): a failure as any other, not "held".
      const canceled = hl.gql(UPDATE, { id, input: { description: 'y' } }, apiKey);
      for (let n = 0; n === 0; await new Promise((r) => setTimeout(r, 50))) {
        ({ rows: [{ n }] } = await admin.query(
          `select count(pg_cancel_backend(pid))::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
        ));
      }
      const answer = await canceled;
      expect(answer.errors?.[0]?.extensions?.code).not.toBe('RATE_LIMITED');
      expect(answer.errors?.[0]?.extensions?.code).toBeDefined();
    } finally {
      await app.query('rollback').catch(() => {});
      await Promise.all([app.end(), admin.end()]);
      await other?.stop();
    }
    expect((await hl.gql(GET, { id }, apiKey)).data.webhookSubscription.description).toBeNull();
  }, 30_000);

  it('is held by transactions that overlap, each short (an app triggering events for it all the time), for no longer', async () => {
    // Each wait for a new holder had a bound of its own: the change waited for as long as they went on.
    const { apiKey } = await hl.createTenant('Busy');
    const { data } = await create({ events: ['invoice.created'] }, apiKey);
    const id = data.createWebhookSubscription.subscription.id;
    const holders = await Promise.all([0, 1, 2].map(async () => {
      const c = new pg.Client({ connectionString: hl.databaseUrl });
      await c.connect();
      return c;
    }));
    let holding = true;
    const hold = async (c: pg.Client, startMs: number) => {
      await new Promise((done) => setTimeout(done, startMs));
      while (holding) {
        await c.query('begin');
        await c.query('select 1 from webhook_subscriptions where id = $1 for key share', [id]);
        await new Promise((done) => setTimeout(done, 300));
        await c.query('commit');
      }
    };
    const held = holders.map((c, i) => hold(c, i * 100));
    try {
      await new Promise((done) => setTimeout(done, 200));
      const bound = new Promise<'unbounded'>((done) => setTimeout(() => done('unbounded'), SUBSCRIPTION_LOCK_WAIT_MS + 3_000));
      const answer = await Promise.race([hl.gql(UPDATE, { id, input: { description: 'x' } }, apiKey), bound]);
      expect(answer).not.toBe('unbounded');
      expect((answer as { errors?: Array<{ extensions: { code: string } }> }).errors?.[0]?.extensions.code).toBe('RATE_LIMITED');
    } finally {
      holding = false;
      await Promise.all(held);
      await Promise.all(holders.map((c) => c.end()));
    }
  }, 30_000);
});

describe('bad input is refused with BAD_USER_INPUT naming the field, and writes nothing', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['unknown event', { events: ['invoice.exploded'] }, 'events'],
    ['no events', { events: [] }, 'events'],
    ['bad pattern', { events: ['Invoice.*'] }, 'events'],
    ['short secret', { events: ['*'], secret: 'short' }, 'secret'],
    ['secret of 8 characters in 16 UTF-16 units', { events: ['*'], secret: '\u{1F511}'.repeat(8) }, 'secret'],
    ['whsec_ secret that is not base64', { events: ['*'], secret: 'whsec_not-base64-at-all!' }, 'secret'],
    ['secret with a trailing space', { events: ['*'], secret: 'my webhook secret value ' }, 'secret'],
    ['secret with a line break', { events: ['*'], secret: 'my webhook\nsecret value' }, 'secret'],
    ['ftp url', { events: ['*'], url: 'ftp://example.com/x' }, 'url'],
    ['credentials in url', { events: ['*'], url: 'https://user:pw@example.com/x' }, 'url'],
    ['not a url', { events: ['*'], url: 'not a url' }, 'url'],
    ['too long url', { events: ['*'], url: `https://example.com/${'a'.repeat(2100)}` }, 'url'],
    ['reserved header', { events: ['*'], headers: { 'webhook-id': 'x' } }, 'headers'],
    ['non-string header', { events: ['*'], headers: { 'X-A': 1 } }, 'headers'],
  ];
  for (const [name, input, field] of cases) {
    it(name, async () => {
      const before = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions');
      const res = await create(input);
      expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
      expect(res.errors?.[0]?.message).toContain(field);
      const after = await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions');
      expect(after[0].n).toBe(before[0].n);
    });
  }
});

describe('listing', () => {
  it('goes on past a cursor whose subscription was deleted meanwhile', async () => {
    const tenant = await hl.createTenant('Deleter');
    const made: string[] = [];
    for (let i = 0; i < 6; i++) {
      made.push((await create({ events: ['invoice.created'] }, tenant.apiKey)).data.createWebhookSubscription.subscription.id);
      await new Promise((r) => setTimeout(r, 2)); // each in a millisecond of its own (see db/keyset.ts)
    }
    const first: any = await hl.gql(LIST, { first: 3 }, tenant.apiKey);
    expect(first.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual(made.slice(0, 3));
    const { endCursor } = first.data.webhookSubscriptions.pageInfo;
    const deleted = await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: made[2] }, tenant.apiKey);
    expect(deleted.errors).toBeUndefined();
    const next: any = await hl.gql(LIST, { first: 3, after: endCursor }, tenant.apiKey);
    expect(next.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual(made.slice(3));
    // And backwards from the deleted one.
    const before: any = await hl.gql('query($before: String) { webhookSubscriptions(last: 5, before: $before) { edges { node { id } } } }', { before: endCursor }, tenant.apiKey);
    expect(before.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual(made.slice(0, 2));
  });

  it('pages with cursors and filters by event pattern and active', async () => {
    const tenant = await hl.createTenant('Lister');
    const made: string[] = [];
    const specs = [['invoice.created'], ['invoice.*'], ['*'], ['payment.received'], ['customer.*']];
    for (const [i, events] of specs.entries()) {
      const res = await create({ events, active: i !== 4 }, tenant.apiKey);
      made.push(res.data.createWebhookSubscription.subscription.id);
    }
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const res: any = await hl.gql(LIST, { first: 2, after }, tenant.apiKey);
      seen.push(...res.data.webhookSubscriptions.edges.map((e: any) => e.node.id));
      after = res.data.webhookSubscriptions.pageInfo.hasNextPage ? res.data.webhookSubscriptions.pageInfo.endCursor : null;
      pages++;
    } while (after);
    expect(pages).toBe(3);
    expect(seen).toEqual(made);

    const forInvoice = await hl.gql(LIST, { event: 'invoice.created' }, tenant.apiKey);
    expect(forInvoice.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual(made.slice(0, 3));
    const forCustomer = await hl.gql(LIST, { event: 'customer.updated' }, tenant.apiKey);
    expect(forCustomer.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual([made[2], made[4]]);
    const inactive = await hl.gql(LIST, { active: false }, tenant.apiKey);
    expect(inactive.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual([made[4]]);
    const bad = await hl.gql(LIST, { after: 'garbage' }, tenant.apiKey);
    expect(bad.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });
});

const PAGE_OF_SUBSCRIPTIONS = 'query($after: String) { webhookSubscriptions(first: 5, after: $after) { edges { cursor node { id } } } }';
const PAGE_OF_DELIVERIES = 'query($after: String, $before: String) { deliveries(first: 5, after: $after, before: $before) { edges { cursor node { id } } } }';

describe('page cursors', () => {
  const PAGE = `query($first: Int, $after: String) {
    webhookSubscriptions(first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }
  }`;

  it('are null on an empty page with no cursor given (first: 0, an empty list), never a cursor the list then refuses', async () => {
    const empty = await hl.createTenant('Nothing yet');
    const none = await hl.gql(PAGE, { first: 5 }, empty.apiKey);
    expect(none.data.webhookSubscriptions).toEqual({
      edges: [],
      pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null },
    });
    const deliveries = await hl.gql('{ deliveries(first: 5) { edges { cursor } pageInfo { startCursor endCursor } } }', {}, empty.apiKey);
    expect(deliveries.data.deliveries).toEqual({ edges: [], pageInfo: { startCursor: null, endCursor: null } });

    const tenant = await hl.createTenant('Zero first');
    const made = [];
    for (let i = 0; i < 2; i++) made.push((await create({ events: ['*'] }, tenant.apiKey)).data.createWebhookSubscription.subscription.id);
    // first: 0 is an empty page: more follow, from no cursor, that is from the start.
    const zero = await hl.gql(PAGE, { first: 0 }, tenant.apiKey);
    expect(zero.errors).toBeUndefined();
    expect(zero.data.webhookSubscriptions).toEqual({
      edges: [],
      pageInfo: { hasNextPage: true, hasPreviousPage: false, startCursor: null, endCursor: null },
    });
    const next = await hl.gql(PAGE, { first: 5, after: zero.data.webhookSubscriptions.pageInfo.endCursor }, tenant.apiKey);
    expect(next.errors).toBeUndefined();
    expect(next.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual(made);
    // Past the end: an empty page whose cursors are the one given, which still works.
    const { endCursor } = next.data.webhookSubscriptions.pageInfo;
    const past = await hl.gql(PAGE, { first: 5, after: endCursor }, tenant.apiKey);
    expect(past.data.webhookSubscriptions.pageInfo).toMatchObject({ hasNextPage: false, startCursor: endCursor, endCursor });
    // "" was never handed out, and is no cursor of this list.
    expect((await hl.gql(PAGE, { first: 5, after: '' }, tenant.apiKey)).errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
    // Nor is a time its cursors never hold: what Number() would read, as 0, 1 or 0, included.
    const [id] = endCursor.split('~');
    for (const after of [`${id}~`, `${id}~ 1`, `${id}~0x0`, `${id}~1e3`, `${id}~-1`, `${id}~1.5`]) {
      expect((await hl.gql(PAGE, { first: 5, after }, tenant.apiKey)).errors?.[0]?.extensions, after).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
    }
    expect((await hl.gql(PAGE, { first: 5, after: endCursor }, tenant.apiKey)).errors).toBeUndefined();
  });
});

describe("another list's cursors", () => {
  it('are refused naming the argument and what they name, not read as a time: in queries, in a mutation\'s answer before it writes, and over REST', async () => {
    const tenant = await hl.createTenant('Mixed cursors');
    const subscriptionId = (await create({ events: ['*'], description: 'as made' }, tenant.apiKey)).data.createWebhookSubscription.subscription.id;
    const triggered: any = await hl.gql(
      'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } deliveries { id } } }',
      { input: { event: 'test.event', data: { n: 1 } } },
      tenant.apiKey,
    );
    const eventId = triggered.data.triggerEvent.event.id;
    const subscriptionCursor = (await hl.gql(PAGE_OF_SUBSCRIPTIONS, {}, tenant.apiKey)).data.webhookSubscriptions.edges[0].cursor;
    const deliveryCursor = (await hl.gql(PAGE_OF_DELIVERIES, {}, tenant.apiKey)).data.deliveries.edges[0].cursor;
    const refusal = (res: any) => ({ ...res.errors?.[0]?.extensions, message: res.errors?.[0]?.message });

    expect(refusal(await hl.gql(PAGE_OF_DELIVERIES, { after: subscriptionCursor }, tenant.apiKey))).toMatchObject({
      code: 'BAD_USER_INPUT',
      field: 'after',
      message: expect.stringContaining("a webhook subscription's id"),
    });
    expect(refusal(await hl.gql(PAGE_OF_DELIVERIES, { before: eventId }, tenant.apiKey))).toMatchObject({
      code: 'BAD_USER_INPUT',
      field: 'before',
      message: expect.stringContaining("an event's id"),
    });
    expect(refusal(await hl.gql(PAGE_OF_SUBSCRIPTIONS, { after: deliveryCursor }, tenant.apiKey))).toMatchObject({
      code: 'BAD_USER_INPUT',
      field: 'after',
      message: expect.stringContaining("a delivery's id"),
    });
    // Each list's own cursors go on as before (an empty page: each list holds one row).
    expect((await hl.gql(PAGE_OF_DELIVERIES, { after: deliveryCursor }, tenant.apiKey)).errors).toBeUndefined();
    expect((await hl.gql(PAGE_OF_SUBSCRIPTIONS, { after: subscriptionCursor }, tenant.apiKey)).errors).toBeUndefined();

    // A mutation whose answer pages with one is refused before it writes.
    const updated = await hl.gql(
      'mutation($id: ID!, $after: String) { updateWebhookSubscription(id: $id, input: { description: "changed" }) { deliveries(first: 5, after: $after) { edges { cursor } } } }',
      { id: subscriptionId, after: subscriptionCursor },
      tenant.apiKey,
    );
    expect(refusal(updated)).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
    const [{ description }] = await hl.dataSource.query('select description from webhook_subscriptions where id = $1', [subscriptionId]);
    expect(description).toBe('as made');

    // REST, whose cursors are the same.
    const res = await fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries?after=${encodeURIComponent(subscriptionCursor)}`, {
      headers: { authorization: `Bearer ${tenant.apiKey}` },
    });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
  });
});

describe('the event filter', () => {
  const ids = (res: any) => res.data.webhookSubscriptions.edges.map((e: any) => e.node.id);

  it('is an event name (at most 100 characters), a prefix.* pattern or *; anything else is BAD_USER_INPUT naming event, at once', async () => {
    const tenant = await hl.createTenant('Filterer');
    const made = (await create({ events: ['invoice.*'] }, tenant.apiKey)).data.createWebhookSubscription.subscription.id;
    // Each prefix of a name is a pattern to look for: a long name made every one of them
    // (32 KB of "a.": 5 s and 700 MB, every tenant of the process waiting).
    const long = `${'a.'.repeat(16_000)}b`;
    const started = Date.now();
    const res = await hl.gql(LIST, { event: long }, tenant.apiKey);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
    expect(res.errors?.[0]?.message).toMatch(/^event: must be at most 100 characters/);
    for (const event of [`${'a'.repeat(50)}.${'b'.repeat(50)}`, `${'a'.repeat(101)}.*`, 'Invoice.Created', 'invoice', 'invoice.', '.*', 'invoice.*.*', '**']) {
      const refused = await hl.gql(LIST, { event }, tenant.apiKey);
      expect(refused.errors?.[0]?.extensions, event).toMatchObject({ code: 'BAD_USER_INPUT', field: 'event' });
    }
    // Well-formed: 100 characters, and a pattern of a 100-character prefix, select what they select.
    expect(ids(await hl.gql(LIST, { event: `invoice.${'a'.repeat(92)}` }, tenant.apiKey))).toEqual([made]);
    expect(ids(await hl.gql(LIST, { event: `invoice.${'a'.repeat(92)}.*` }, tenant.apiKey))).toEqual([]);
    expect(ids(await hl.gql(LIST, { event: 'invoice.*' }, tenant.apiKey))).toEqual([made]);
    expect(ids(await hl.gql(LIST, { event: '*' }, tenant.apiKey))).toEqual([]);
    expect(ids(await hl.gql(LIST, { event: 'parcel.lost' }, tenant.apiKey))).toEqual([]); // in no catalog: nothing receives it
  });
});

describe('an empty event filter', () => {
  it('is no filter, as over REST (a dashboard\'s "all")', async () => {
    const tenant = await hl.createTenant('Empty filter');
    const made = (await create({ events: ['invoice.*'] }, tenant.apiKey)).data.createWebhookSubscription.subscription.id;
    for (const event of ['', null, undefined]) {
      const all = await hl.gql(LIST, { event }, tenant.apiKey);
      expect(all.data.webhookSubscriptions.edges.map((e: any) => e.node.id)).toEqual([made]);
    }
  });
});

describe('secret rotation', () => {
  it('returns the new secret and keeps the old one signing for 24 hours', async () => {
    const { data } = await create({ events: ['*'], secret: 'first-secret-0123456789' });
    const id = data.createWebhookSubscription.subscription.id;
    const generated = await hl.gql(ROTATE, { id }, key);
    expect(generated.data.rotateWebhookSecret.secret).toMatch(/^whsec_/);
    const given = await hl.gql(ROTATE, { id, secret: 'third-secret-0123456789' }, key);
    expect(given.data.rotateWebhookSecret).toEqual({ secret: 'third-secret-0123456789', subscription: { id } });
    const short = await hl.gql(ROTATE, { id, secret: 'x' }, key);
    expect(short.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'secret' });
    const [row] = await hl.dataSource.query('select secret, previous_secret, previous_secret_expires_at from webhook_subscriptions where id = $1', [id]);
    expect(row.secret).toBe('third-secret-0123456789');
    expect(row.previous_secret).toBe(generated.data.rotateWebhookSecret.secret);
  });

  it('takes a rotation to the secret it has as done, changing nothing (a retried call): the grace of the secret replaced goes on', async () => {
    const { data } = await create({ events: ['*'], secret: 'first-secret-0123456789' });
    const id = data.createWebhookSubscription.subscription.id;
    await hl.gql(ROTATE, { id, secret: 'second-secret-0123456789' }, key);
    const read = () => hl.dataSource.query('select secret, previous_secret, earlier_secrets, updated_at from webhook_subscriptions where id = $1', [id]);
    const [before] = await read();
    const again = await hl.gql(ROTATE, { id, secret: 'second-secret-0123456789' }, key);
    expect(again).toEqual({ data: { rotateWebhookSecret: { secret: 'second-secret-0123456789', subscription: { id } } } });
    expect(await read()).toEqual([before]);
    expect(before).toMatchObject({ secret: 'second-secret-0123456789', previous_secret: 'first-secret-0123456789', earlier_secrets: null });
  });

  it('keeps the ten secrets replaced last signing: an eleventh rotation within 24 hours is done, and ends the grace of the oldest', async () => {
    const { data } = await create({ events: ['*'], secret: 'secret-00-0123456789' });
    const id = data.createWebhookSubscription.subscription.id;
    const read = async () => {
      const [row] = await hl.dataSource.query('select secret, previous_secret, earlier_secrets from webhook_subscriptions where id = $1', [id]);
      return [row.secret, row.previous_secret, ...(row.earlier_secrets ?? []).map((e: { secret: string }) => e.secret)];
    };
    const name = (i: number) => `secret-${String(i).padStart(2, '0')}-0123456789`;
    for (let i = 1; i <= 10; i++) expect((await hl.gql(ROTATE, { id, secret: name(i) }, key)).errors).toBeUndefined();
    expect(await read()).toEqual([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map(name));
    const eleventh = await hl.gql(ROTATE, { id, secret: name(11) }, key);
    expect(eleventh.errors).toBeUndefined();
    expect(await read()).toEqual([11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1].map(name));
  });
});
