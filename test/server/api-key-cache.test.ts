// Valid API keys are remembered so requests skip the lookup; a revocation must
// still take effect at once, in the process that revoked and in every other.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { poolOf } from '../../src/db/query.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';

const VIEWER = '{ viewer { id } }';
let a: TestHookline;
let b: TestHookline;

beforeAll(async () => {
  a = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  b = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: a.databaseUrl });
});
afterAll(async () => {
  await b?.stop();
  await a?.stop();
});

function countLookups(hl: TestHookline): () => number {
  const pool = poolOf(hl.dataSource) as unknown as { query: (...args: unknown[]) => unknown };
  const original = pool.query.bind(pool);
  let lookups = 0;
  pool.query = (...args: unknown[]) => {
    const text = (args[0] as { text?: string })?.text ?? String(args[0]);
    if (text.includes('from api_keys')) lookups++;
    return original(...args);
  };
  return () => lookups;
}

it('a key is looked up once, then remembered', async () => {
  const tenant = await a.createTenant();
  const lookups = countLookups(a);
  for (let i = 0; i < 5; i++) expect((await a.gql(VIEWER, {}, tenant.apiKey)).data.viewer.id).toBe(tenant.id);
  expect(lookups()).toBe(1);
});

it('a key revoked in another process stops working here too', async () => {
  const tenant = await a.createTenant();
  const { data } = await a.gql('mutation { createApiKey(name: "k") { id apiKey } }', {}, tenant.apiKey);
  const { id, apiKey } = data.createApiKey;
  expect((await a.gql(VIEWER, {}, apiKey)).data.viewer.id).toBe(tenant.id); // now remembered by a
  expect((await b.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id }, tenant.apiKey)).data.revokeApiKey).toBe(true);
  const started = Date.now();
  await eventually(async () => (await a.gql(VIEWER, {}, apiKey)).errors?.[0]?.extensions?.code === 'UNAUTHENTICATED', 2_000, 5);
  expect(Date.now() - started).toBeLessThan(1_000);
});

it('without its LISTEN connection a process remembers no key', async () => {
  const tenant = await a.createTenant();
  const lookups = countLookups(b);
  await a.dataSource.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and datname = current_database()`,
  );
  await eventually(() => !b.services.live!.target.connected, 5_000, 5);
  // While b is not listening (it retries after 200 ms), every request looks the key up again...
  await b.gql(VIEWER, {}, tenant.apiKey);
  await b.gql(VIEWER, {}, tenant.apiKey);
  expect(lookups()).toBeGreaterThanOrEqual(2);
  // ...and once it listens again, it remembers keys again.
  await eventually(() => b.services.live!.target.connected, 5_000);
  const before = lookups();
  await b.gql(VIEWER, {}, tenant.apiKey);
  await b.gql(VIEWER, {}, tenant.apiKey);
  expect(lookups() - before).toBe(1);
});
