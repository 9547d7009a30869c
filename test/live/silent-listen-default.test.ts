// With the default liveness (its LISTEN connection asked every second, the API-key cache trusted
// for 3 s after its last answer), a key revoked while an API process's LISTEN connection is
// silent, not yet dropped, stops working when revokeApiKey answers; and once that process listens
// on a new connection, the silent one (alive in the server, its socket never closed there) is not
// waited for. A database of its own: live_listeners is the database's.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';
import { silenceableProxy } from '../helpers/silent-proxy.js';

let writer: TestHookline;
let proxy: Awaited<ReturnType<typeof silenceableProxy>>;

beforeAll(async () => {
  const databaseUrl = await createTestDatabase();
  proxy = await silenceableProxy(new URL(databaseUrl));
  writer = await startTestHookline({}, { databaseUrl });
});
afterAll(async () => {
  await writer?.stop();
  await proxy?.close();
});

it('with the default liveness, a key revoked while the LISTEN connection is silent, not yet dropped, stops working when revokeApiKey answers', async () => {
  // The cache was trusted for 15 s after the connection's last answer, revokeApiKey waited 2 s
  // for a process that does not acknowledge: a review kept using the key for 3.5-6.4 s after.
  const quiet = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: proxy.url });
  try {
    const tenant = await writer.createTenant('Silent, default');
    const second = (await writer.gql<any>('mutation { createApiKey(name: "second") { id apiKey } }', {}, tenant.apiKey)).data.createApiKey;
    const viewer = () => quiet.gql('{ viewer { id } }', {}, second.apiKey);
    await eventually(() => quiet.services.live!.target.caughtUp, 10_000);
    expect((await viewer()).errors).toBeUndefined(); // cached
    expect(proxy.silenceConnectionsOf('hookline-live')).toBe(1);
    expect((await writer.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: second.id }, tenant.apiKey)).data).toEqual({ revokeApiKey: true });
    expect((await viewer()).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');

    // It drops the silent connection and listens on a new one; the old backend lives on in the
    // server, silent, and its row goes with it (revokeApiKey waited its full 3.5 s for it).
    await eventually(() => quiet.services.live!.target.caughtUp, 20_000);
    const third = (await writer.gql<any>('mutation { createApiKey(name: "third") { id apiKey } }', {}, tenant.apiKey)).data.createApiKey;
    expect((await quiet.gql('{ viewer { id } }', {}, third.apiKey)).errors).toBeUndefined();
    const started = Date.now();
    expect((await writer.gql('mutation($id: ID!) { revokeApiKey(id: $id) }', { id: third.id }, tenant.apiKey)).data).toEqual({ revokeApiKey: true });
    expect(Date.now() - started, 'acknowledged by the new connection, the old one not waited for').toBeLessThan(2_000);
    expect((await quiet.gql('{ viewer { id } }', {}, third.apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  } finally {
    await quiet.stop();
  }
}, 60_000);
