// Valid API keys are remembered so requests skip the lookup; a revocation must
// still take effect at once, in the process that revoked and in every other.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyCache } from '../../src/auth/viewer.js';
import type { TenantId } from '../../src/db/tenant-scope.js';
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

describe('the cache itself', () => {
  const viewer = { kind: 'tenant' as const, tenantId: 'tenant' as TenantId, apiKeyId: 'key-1' };

  it('remembers nothing while revocations are not heard', () => {
    const cache = new ApiKeyCache();
    cache.usable = () => false;
    cache.set('hash', viewer, cache.begin());
    cache.usable = () => true;
    expect(cache.get('hash')).toBeUndefined();
  });

  it('keeps no answer of a lookup that began before the LISTEN connection came back', () => {
    const cache = new ApiKeyCache();
    cache.usable = () => true;
    const begun = cache.begin();
    cache.clear(); // reconnected: revocations may have been missed meanwhile
    cache.set('hash', viewer, begun);
    expect(cache.get('hash')).toBeUndefined();
    cache.set('hash', viewer, cache.begin());
    expect(cache.get('hash')).toEqual(viewer);
  });

  it('never caches a revoked key again, even from a lookup that began before the revocation', () => {
    const cache = new ApiKeyCache();
    cache.usable = () => true;
    const begun = cache.begin();
    cache.invalidate('key-1');
    cache.set('hash', viewer, begun);
    expect(cache.get('hash')).toBeUndefined();
  });

  it('forgets keys after their time to live', async () => {
    const cache = new ApiKeyCache(20);
    cache.usable = () => true;
    cache.set('hash', viewer, cache.begin());
    expect(cache.get('hash')).toEqual(viewer);
    await new Promise((r) => setTimeout(r, 40));
    expect(cache.get('hash')).toBeUndefined();
  });
});
