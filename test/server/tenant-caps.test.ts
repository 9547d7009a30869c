// The caps on a tenant's active API keys (MAX_ACTIVE_API_KEYS), its subscriptions and its event types
// (MAX_SUBSCRIPTIONS) hold for creations at once also on a database whose default isolation
// is REPEATABLE READ: a creation that waited for another must count what that one committed.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MAX_ACTIVE_API_KEYS } from '../../src/auth/tenants.js';
import { SCHEMA_LIMITS } from '../../src/webhooks/catalog.js';
import { MAX_SUBSCRIPTIONS } from '../../src/webhooks/subscriptions.js';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';

let hl: TestHookline;
let databaseUrl: string;
beforeAll(async () => {
  databaseUrl = await createTestDatabase();
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`alter database ${pg.escapeIdentifier(new URL(databaseUrl).pathname.slice(1))} set default_transaction_isolation = 'repeatable read'`);
  await admin.end();
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
});
afterAll(() => hl?.stop());

it(`holds at most ${MAX_ACTIVE_API_KEYS} active keys a tenant when creations race under REPEATABLE READ`, async () => {
  const [{ default_transaction_isolation: isolation }] = await hl.dataSource.query('show default_transaction_isolation');
  expect(isolation).toBe('repeatable read');
  const tenant = await hl.createTenant('Racing keys'); // its first key is one
  const create = 'mutation($name: String!) { createApiKey(name: $name) { id } }';
  const answers = await Promise.all(Array.from({ length: 130 }, (_, i) => hl.gql(create, { name: `k${i}` }, tenant.apiKey)));
  expect(answers.filter((a) => !a.errors)).toHaveLength(MAX_ACTIVE_API_KEYS - 1);
  for (const refused of answers.filter((a) => a.errors)) expect(refused.errors![0]!.extensions!.code).toBe('BAD_USER_INPUT');
  const [{ n }] = await hl.dataSource.query('select count(*)::int as n from api_keys where tenant_id = $1 and revoked_at is null', [tenant.id]);
  expect(n).toBe(MAX_ACTIVE_API_KEYS);
});

it(`holds at most ${MAX_SUBSCRIPTIONS} subscriptions a tenant when creations race, over GraphQL and REST; a deleted one makes room`, async () => {
  const tenant = await hl.createTenant('Many subscriptions');
  const create = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
  const input = (i: number) => ({ url: `http://127.0.0.1:9/hook/${i}`, events: ['invoice.created'] });
  const answers: Array<{ errors?: Array<{ message: string; extensions?: Record<string, unknown> }>; data?: any }> = [];
  const wanted = MAX_SUBSCRIPTIONS + 20;
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < wanted) answers.push(await hl.gql(create, { input: input(next++) }, tenant.apiKey));
    }),
  );
  expect(answers.filter((a) => !a.errors)).toHaveLength(MAX_SUBSCRIPTIONS);
  const refused = answers.filter((a) => a.errors);
  expect(refused).toHaveLength(20);
  for (const answer of refused) {
    expect(answer.errors![0]!.extensions!.code).toBe('BAD_USER_INPUT');
    expect(answer.errors![0]!.message).toContain(`at most ${MAX_SUBSCRIPTIONS.toLocaleString('en')} webhook subscriptions`);
  }
  const count = async () =>
    (await hl.dataSource.query('select count(*)::int as n from webhook_subscriptions where tenant_id = $1 and deleted_at is null', [tenant.id]))[0].n;
  expect(await count()).toBe(MAX_SUBSCRIPTIONS);

  const rest = () =>
    fetch(`${hl.url}/api/v1/tenant/webhooks/subscriptions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'invoice.created', url: 'http://127.0.0.1:9/rest' }),
    });
  const overRest = await rest();
  expect(overRest.status).toBe(400);
  expect((await overRest.json()).error.code).toBe('BAD_USER_INPUT');

  const one = answers.find((a) => !a.errors)!.data.createWebhookSubscription.subscription.id;
  expect((await hl.gql('mutation($id: ID!) { deleteWebhookSubscription(id: $id) }', { id: one }, tenant.apiKey)).errors).toBeUndefined();
  expect((await rest()).status).toBe(201);
  expect(await count()).toBe(MAX_SUBSCRIPTIONS);
}, 120_000);

it(`holds at most ${SCHEMA_LIMITS.typesPerTenant} event types of a tenant's own when creations wait for each other under REPEATABLE READ`, async () => {
  const tenant = await hl.createTenant('Many event types');
  const create = (name: string) => hl.gql('mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }', { input: { name, schema: { type: 'object' } } }, tenant.apiKey);
  for (let i = 0; i < SCHEMA_LIMITS.typesPerTenant - 1; i++) expect((await create(`own.type${i}`)).errors).toBeUndefined();
  // One creation holds the tenant's creation lock (as a slow one would) while five more come.
  const holder = new pg.Client({ connectionString: databaseUrl });
  await holder.connect();
  try {
    await holder.query('begin');
    await holder.query(`select pg_advisory_xact_lock(hashtextextended($1 || $2, 0))`, ['hookline event types ', tenant.id]);
    const racing = Array.from({ length: 5 }, (_, i) => create(`late.type${i}`));
    for (let waiting = 0; waiting < 5; ) {
      await new Promise((r) => setTimeout(r, 50));
      [{ waiting }] = (await holder.query(`select count(*)::int as waiting from pg_locks where locktype = 'advisory' and not granted`)).rows;
    }
    await holder.query('commit');
    const answers = await Promise.all(racing);
    // Each counted what the one before it committed: the first made the hundredth, the rest were refused.
    expect(answers.filter((a) => !a.errors)).toHaveLength(1);
    for (const refused of answers.filter((a) => a.errors)) expect(refused.errors![0]!.extensions!.code).toBe('BAD_USER_INPUT');
  } finally {
    await holder.end();
  }
  const [{ n }] = await hl.dataSource.query('select count(*)::int as n from event_types where tenant_id = $1', [tenant.id]);
  expect(n).toBe(SCHEMA_LIMITS.typesPerTenant);
}, 120_000);
