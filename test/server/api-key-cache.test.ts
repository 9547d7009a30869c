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

it('a token that names no key is looked up once, however often it is retried', async () => {
  const tenant = await a.createTenant();
  const lookups = countLookups(a);
  const before = lookups();
  for (let i = 0; i < 5; i++) {
    expect((await a.gql(VIEWER, {}, 'hkl_no-such-key-0123456789')).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  }
  expect(lookups() - before).toBe(1);
  // A revoked key too, once known revoked; a valid key is unaffected.
  const { data } = await a.gql('mutation { createApiKey(name: "k") { id apiKey } }', {}, tenant.apiKey);
  await a.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: data.createApiKey.id }, tenant.apiKey);
  const revokedBefore = lookups();
  for (let i = 0; i < 5; i++) expect((await a.gql(VIEWER, {}, data.createApiKey.apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  expect(lookups() - revokedBefore).toBe(1);
  expect((await a.gql(VIEWER, {}, tenant.apiKey)).data.viewer.id).toBe(tenant.id);
});

it('a key revoked in another process stops working here as soon as revokeApiKey has answered', async () => {
  const tenant = await a.createTenant();
  // Each round: a key remembered by a, revoked through b, and used on a at once. Without
  // waiting for a to drop it, a's request can beat the notice (a few rounds in a hundred).
  let accepted = 0;
  for (let round = 0; round < 60; round++) {
    const { data } = await a.gql('mutation { createApiKey(name: "k") { id apiKey } }', {}, tenant.apiKey);
    const { id, apiKey } = data.createApiKey;
    expect((await a.gql(VIEWER, {}, apiKey)).data.viewer.id).toBe(tenant.id); // now remembered by a
    expect((await b.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id }, tenant.apiKey)).data.revokeApiKey).toBe(true);
    if ((await a.gql(VIEWER, {}, apiKey)).errors?.[0]?.extensions?.code !== 'UNAUTHENTICATED') accepted++;
  }
  expect(accepted).toBe(0);

  // And when a hears its notice late: PostgreSQL sends a notice only while the listening
  // connection is idle, and a's is kept busy for 500 ms here.
  const { data } = await a.gql('mutation { createApiKey(name: "late") { id apiKey } }', {}, tenant.apiKey);
  expect((await a.gql(VIEWER, {}, data.createApiKey.apiKey)).data.viewer.id).toBe(tenant.id);
  const listening = (a.services.live!.target as unknown as { client: { query(sql: string): Promise<unknown> } }).client;
  const busy = listening.query('select pg_sleep(0.5)');
  const started = Date.now();
  await b.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: data.createApiKey.id }, tenant.apiKey);
  expect(Date.now() - started).toBeGreaterThan(300); // it waited for a
  expect((await a.gql(VIEWER, {}, data.createApiKey.apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  await busy;
});

it('while LISTEN reconnects, remembered keys are not trusted until what was missed is dealt with', async () => {
  const tenant = await a.createTenant();
  const { data } = await a.gql('mutation { createApiKey(name: "k") { id apiKey } }', {}, tenant.apiKey);
  const { id, apiKey } = data.createApiKey;
  expect((await a.gql(VIEWER, {}, apiKey)).data.viewer.id).toBe(tenant.id); // remembered by a
  // A live subscriber makes a's reconnect LISTEN to delivery changes again, which waits for
  // transactions that read live_listeners before (here one that stays open for 2 s).
  const socket = a.wsClient(tenant.apiKey);
  const stream = socket.iterate({ query: 'subscription { deliveryUpdated { id } }' });
  void stream.next().catch(() => {});
  await eventually(async () => a.services.live!.target.isListening('hookline_delivery_updates'));
  const pool = poolOf(a.dataSource);
  const holder = await pool.connect();
  try {
    await holder.query('begin; select count(*) from live_listeners');
    await pool.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and pid in (select pid from live_listeners)`);
    // Revoked with no notice a can hear (its LISTEN connection is gone).
    await pool.query('update api_keys set revoked_at = now() where id = $1', [id]);
    const until = Date.now() + 1_500;
    let reconnected = false;
    while (Date.now() < until) {
      reconnected ||= a.services.live!.target.connected;
      expect((await a.gql(VIEWER, {}, apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(reconnected).toBe(true); // the window was there: connected, still setting up
  } finally {
    await holder.query('rollback');
    holder.release();
    await stream.return?.();
    await socket.dispose();
  }
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
