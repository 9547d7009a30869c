// A revoked key stops working at once (CONTRACT.md): not only for requests that come after
// revokeApiKey answers, but for those that came before and had not yet written. An operation
// whose request was in hand when the revocation was heard is refused; one already running is
// waited for, so that it writes before revokeApiKey answers, never after.
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { slowPost } from '../helpers/slow-post.js';
import { wsRequest } from '../helpers/ws.js';

const CREATE_API_KEY = 'mutation CreateApiKey($name: String!) { createApiKey(name: $name) { apiKey id } }';
const REVOKE_API_KEY = 'mutation RevokeApiKey($id: ID!) { revokeApiKey(id: $id) }';
const TRIGGER = 'mutation Trigger($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } } }';

let hl: TestHookline;
let tenant: { id: string; apiKey: string };
const lines: Array<{ msg: string }> = [];

beforeAll(async () => {
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  hl = await startTestHookline({}, { log });
  tenant = await hl.createTenant('Revoker');
});
afterAll(() => hl?.stop());

/** A second key of the tenant, used once so that this process knows it (its cache). */
async function freshKey(name: string): Promise<{ apiKey: string; id: string }> {
  const made = await hl.gql(CREATE_API_KEY, { name }, tenant.apiKey);
  expect(made.errors).toBeUndefined();
  const key = made.data.createApiKey;
  expect((await hl.gql('{ viewer { id } }', {}, key.apiKey)).errors).toBeUndefined();
  return key;
}

async function revoke(id: string): Promise<void> {
  const res = await hl.gql(REVOKE_API_KEY, { id }, tenant.apiKey);
  expect(res.errors).toBeUndefined();
  expect(res.data.revokeApiKey).toBe(true);
}

async function eventsWith(resourceId: string): Promise<number> {
  const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1 and resource_id = $2', [tenant.id, resourceId]);
  return n;
}

describe('a request in hand when its key is revoked', () => {
  it('GraphQL: a triggerEvent whose body was still coming is refused, UNAUTHENTICATED, and writes nothing', async () => {
    const key = await freshKey('slow graphql');
    const pending = slowPost(
      hl.url,
      '/graphql',
      key.apiKey,
      JSON.stringify({ query: TRIGGER, variables: { input: { event: 'test.event', data: { n: 1 }, resourceId: 'slow-graphql' } } }),
    );
    await new Promise((r) => setTimeout(r, 200)); // its headers read, its key known
    await revoke(key.id);
    const res = await pending.finish();
    expect(res.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(res.body.data ?? null).toBeNull();
    expect(await eventsWith('slow-graphql')).toBe(0);
  });

  it('REST: a POST deliveries whose body was still coming is refused with 401, and writes nothing', async () => {
    const key = await freshKey('slow rest');
    const pending = slowPost(
      hl.url,
      '/api/v1/tenant/webhooks/deliveries',
      key.apiKey,
      JSON.stringify({ event: 'test.event', payload: { n: 1 }, resource_id: 'slow-rest' }),
    );
    await new Promise((r) => setTimeout(r, 200));
    await revoke(key.id);
    const res = await pending.finish();
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('UNAUTHENTICATED');
    expect(await eventsWith('slow-rest')).toBe(0);
  });
});

describe('an operation running when its key is revoked', () => {
  it.each(['HTTP', 'WebSocket'])('has written when revokeApiKey answers, not after (%s)', async (transport) => {
    const key = await freshKey(`running ${transport}`);
    const resourceId = `running-${transport}`;
    const socket = transport === 'WebSocket' ? hl.wsClient(key.apiKey) : undefined;
    // The trigger's insert waits for the tenant's row (its foreign key), held here.
    const lock = hl.dataSource.createQueryRunner();
    await lock.connect();
    await lock.startTransaction();
    let released = false;
    try {
      await lock.query('select 1 from tenants where id = $1 for update', [tenant.id]);
      const input = { input: { event: 'test.event', data: { n: 2 }, resourceId } };
      // Over WebSocket the connection is closed by the revocation: the answer is lost, not the write.
      const triggered = socket ? wsRequest(socket, TRIGGER, input).catch(() => ({ errors: undefined })) : hl.gql(TRIGGER, input, key.apiKey);
      // Under way: its statement waits for the lock.
      for (const started = Date.now(); ; await new Promise((r) => setTimeout(r, 20))) {
        const [{ n }] = await hl.dataSource.query(`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`);
        if (n > 0) break;
        expect(Date.now() - started, 'the trigger never waited for the lock').toBeLessThan(10_000);
      }
      const revoked = revoke(key.id);
      setTimeout(() => {
        released = true;
        void lock.commitTransaction();
      }, 500);
      await revoked;
      expect(released, 'revokeApiKey answered while the trigger was still held').toBe(true);
      expect(await eventsWith(resourceId), 'the trigger had not written when revokeApiKey answered').toBe(1);
      expect((await triggered).errors).toBeUndefined();
    } finally {
      if (!released) await lock.rollbackTransaction();
      await new Promise((r) => setTimeout(r, 50));
      await lock.release();
      await socket?.dispose();
    }
    // And the key works no more.
    const after = await hl.gql(TRIGGER, { input: { event: 'test.event', data: { n: 3 }, resourceId: `after-${transport}` } }, key.apiKey);
    expect(after.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(await eventsWith(`after-${transport}`)).toBe(0);
  });

  it('two keys revoking each other at once do not wait for each other', async () => {
    const [one, two] = [await freshKey('one'), await freshKey('two')];
    const before = lines.length;
    const answers = await Promise.all([hl.gql(REVOKE_API_KEY, { id: two.id }, one.apiKey), hl.gql(REVOKE_API_KEY, { id: one.id }, two.apiKey)]);
    for (const answer of answers) {
      // Each key may be refused already when the other's revocation is heard first; neither hangs.
      if (answer.errors) expect(answer.errors[0]?.extensions?.code).toBe('UNAUTHENTICATED');
      else expect(answer.data.revokeApiKey).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 100));
    // Each waiting for the other's operation would end in the wait's limit, said so.
    expect(lines.slice(before).map((l) => l.msg)).not.toContain('operations with a revoked API key still under way after waiting for them');
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from api_keys where id = any($1) and revoked_at is not null', [[one.id, two.id]]);
    expect(n).toBeGreaterThanOrEqual(1);
  });

  it('revoking the key the request is made with does not wait for that request itself', async () => {
    const key = await freshKey('itself');
    const res = await hl.gql(REVOKE_API_KEY, { id: key.id }, key.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.revokeApiKey).toBe(true);
    // Waiting for itself would end in the wait's limit, said so.
    await new Promise((r) => setTimeout(r, 100));
    expect(lines.map((l) => l.msg)).not.toContain('operations with a revoked API key still under way after waiting for them');
    expect(lines.map((l) => l.msg)).not.toContain('API processes did not acknowledge a revoked key in time');
  });
});
