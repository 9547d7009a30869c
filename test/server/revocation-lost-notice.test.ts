// A revoked API key stops working on open connections too when the NOTIFY of its
// revocation never reached this process (its LISTEN connection was down when the
// revocation committed): every operation checks the key again, and once LISTEN is
// back the keys of open connections and live streams are checked and the revoked
// ones cut off.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { collectSse, collectWs, moreSubscribers } from '../helpers/live.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';
import { slowPost } from '../helpers/slow-post.js';
import { nextClose, wsRequest } from '../helpers/ws.js';

const VIEWER = '{ viewer { id } }';
const CREATE_API_KEY = 'mutation($name: String!) { createApiKey(name: $name) { id apiKey } }';
const REVOKE_API_KEY = 'mutation($id: ID!) { revokeApiKey(id: $id) }';

let a: TestHookline;
let b: TestHookline;
let admin: pg.Client;
let database: string;
let tenant: { id: string; apiKey: string };

beforeAll(async () => {
  a = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  b = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: a.databaseUrl });
  // From another database: connections to the test database are shut off for a while.
  admin = new pg.Client({ connectionString: a.databaseUrl.replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  database = new URL(a.databaseUrl).pathname.slice(1);
  tenant = await a.createTenant();
});
afterAll(async () => {
  await admin?.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`).catch(() => {});
  await admin?.end();
  await b?.stop();
  await a?.stop();
});

async function newKey(name: string): Promise<{ id: string; apiKey: string }> {
  const res = await a.gql(CREATE_API_KEY, { name }, tenant.apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.createApiKey;
}

const keyCount = async () =>
  (await a.dataSource.query('select count(*)::int as n from api_keys where tenant_id = $1', [tenant.id]))[0].n as number;

/** Rejects when the promise has not settled in time, saying what was awaited. */
const within = <T>(what: string, promise: Promise<T>, ms = 10_000) =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms))]);

/** The rejection of an operation: graphql-ws hands over the errors, or the close event. */
const refusal = (operation: Promise<unknown>): Promise<{ result?: unknown; errors?: any[]; code?: number }> =>
  operation.then(
    (result) => ({ result }),
    (reason) => ({ errors: Array.isArray(reason) ? reason : undefined, code: (reason as { code?: number })?.code }),
  );

it('refuses operations on an open socket and closes the streams of a key revoked while LISTEN was down', async () => {
  // Two keys of one tenant, each on its own socket of process a; the first one runs operations
  // while the notice is lost, the second only streams, and is cut off once LISTEN is back.
  const operating = await newKey('operating');
  const streaming = await newKey('streaming');
  const operatingSocket = a.wsClient(operating.apiKey);
  const streamingSocket = a.wsClient(streaming.apiKey);
  expect((await wsRequest(operatingSocket, VIEWER)).data.viewer.id).toBe(tenant.id); // now remembered by a
  expect((await wsRequest(streamingSocket, VIEWER)).data.viewer.id).toBe(tenant.id);
  const subscribed = moreSubscribers(a, 2);
  const wsUpdates = collectWs(streamingSocket);
  const sseUpdates = collectSse(a.url, streaming.apiKey);
  await sseUpdates.ready;
  const streamingClosed = nextClose(streamingSocket);
  await subscribed(); // both streams are set up
  await Promise.all([a.gql(VIEWER, {}, tenant.apiKey), b.gql(VIEWER, {}, tenant.apiKey)]); // pooled connections are open

  // The LISTEN connections go down and cannot come back: the revocations' notices are lost.
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections false`);
  const killed = await admin.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and datname = $1`,
    [database],
  );
  expect(killed.rowCount).toBe(2); // a's and b's
  await eventually(async () => !a.services.live!.target.connected, 5_000, 10);
  for (const key of [operating, streaming]) {
    const revoked = await b.gql(REVOKE_API_KEY, { id: key.id }, tenant.apiKey);
    expect(revoked.data?.revokeApiKey).toBe(true);
  }
  expect(a.services.live!.target.connected).toBe(false);

  // (a) An operation on the open socket checks the key again, and is refused.
  const keysBefore = await keyCount();
  const operatingClosed = nextClose(operatingSocket);
  const attempt = await refusal(wsRequest(operatingSocket, CREATE_API_KEY, { name: 'sneaky' }));
  expect(attempt).not.toHaveProperty('result');
  if (attempt.errors) expect(attempt.errors[0].extensions.code).toBe('UNAUTHENTICATED');
  expect(await within('the operating socket closes', operatingClosed)).toMatchObject({ code: 4401, reason: 'API key revoked' });
  const again = await refusal(wsRequest(operatingSocket, CREATE_API_KEY, { name: 'sneaky again' }));
  expect(again).not.toHaveProperty('result');
  expect(await keyCount()).toBe(keysBefore);
  // Still not heard: the streams of the other key go on until LISTEN is back.
  expect(wsUpdates.closed).toBe(false);

  // (b) LISTEN comes back: the keys in use are checked, the revoked one's streams end.
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`);
  await eventually(async () => a.services.live!.target.connected, 15_000, 20);
  expect(await within('the streaming socket closes', streamingClosed)).toMatchObject({ code: 4401, reason: 'API key revoked' });
  await wsUpdates.waitFor(() => wsUpdates.closed, 5_000);
  await sseUpdates.waitFor(() => sseUpdates.closed, 5_000);
  expect(await keyCount()).toBe(keysBefore);

  // The tenant's other key works as before.
  expect((await a.gql(VIEWER, {}, tenant.apiKey)).data.viewer.id).toBe(tenant.id);
  const fresh = a.wsClient(tenant.apiKey);
  expect((await wsRequest(fresh, VIEWER)).data.viewer.id).toBe(tenant.id);
  sseUpdates.stop();
  await Promise.all([fresh.dispose(), operatingSocket.dispose(), streamingSocket.dispose()]);
});

it('refuses a request in hand at a process whose LISTEN is down when its key is revoked, over GraphQL and REST, writing nothing', async () => {
  const key = await newKey('in hand');
  const trigger = (resourceId: string) => ({ query: 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { event { id } } }', variables: { input: { event: 'test.event', data: { n: 1 }, resourceId } } });
  // Pooled connections are open, the triggers' own too.
  await Promise.all([a.gql(VIEWER, {}, tenant.apiKey), b.gql(VIEWER, {}, tenant.apiKey)]);
  const { query, variables } = trigger('warm-up');
  expect((await a.gql(query, variables, tenant.apiKey)).errors).toBeUndefined();
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections false`);
  try {
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and datname = $1`, [database]);
    await eventually(async () => !a.services.live!.target.connected, 5_000, 10);
    // Their headers read, the key looked up in the database (the cache is not trusted) and valid.
    const graphql = slowPost(a.url, '/graphql', key.apiKey, JSON.stringify(trigger('in-hand-graphql')));
    const rest = slowPost(a.url, '/api/v1/tenant/webhooks/deliveries', key.apiKey, JSON.stringify({ event: 'test.event', payload: { n: 1 }, resource_id: 'in-hand-rest' }));
    await new Promise((r) => setTimeout(r, 200));
    expect((await b.gql(REVOKE_API_KEY, { id: key.id }, tenant.apiKey)).data?.revokeApiKey).toBe(true); // a hears nothing of it
    const [viaGraphql, viaRest] = await Promise.all([graphql.finish(), rest.finish()]);
    expect(viaGraphql.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(viaRest.status).toBe(401);
    const [{ n }] = await a.dataSource.query(`select count(*)::int as n from webhook_events where tenant_id = $1 and resource_id like 'in-hand-%'`, [tenant.id]);
    expect(n).toBe(0);
  } finally {
    await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`);
    await eventually(async () => a.services.live!.target.connected, 15_000, 20);
  }
});

it('checks the key of every operation on a socket through the same cache as HTTP', async () => {
  const key = await newKey('cached');
  const socket = a.wsClient(key.apiKey);
  expect((await wsRequest(socket, VIEWER)).data.viewer.id).toBe(tenant.id);
  // Revoked with its notice lost, then the LISTEN connection comes back (which empties the cache).
  await a.dataSource.query('update api_keys set revoked_at = now() where id = $1', [key.id]);
  a.services.apiKeys.clear();
  expect((await a.gql(VIEWER, {}, key.apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  const closed = nextClose(socket);
  const attempt = await refusal(wsRequest(socket, VIEWER));
  expect(attempt).not.toHaveProperty('result');
  if (attempt.errors) expect(attempt.errors[0].extensions.code).toBe('UNAUTHENTICATED');
  expect((await within('the socket closes', closed)).code).toBe(4401);
  await socket.dispose();
});
