// Changes made while a process's LISTEN connection is down (a database restart, a failover, a
// network cut) are not notified to it. Once it is back, it looks up what changed since the
// loss for the tenants its live subscribers follow, and announces those changes again: a
// dashboard sees the delivery it would otherwise have missed, over WebSocket and SSE alike.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { collectSse, collectWs, moreSubscribers } from '../helpers/live.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;
let admin: pg.Client;
let database: string;
let tenant: { id: string; apiKey: string };
let other: { id: string; apiKey: string };

beforeAll(async () => {
  hl = await startTestHookline();
  receiver = await startReceiver();
  // From another database: connections to the test database are shut off for a while.
  admin = new pg.Client({ connectionString: hl.databaseUrl.replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  database = new URL(hl.databaseUrl).pathname.slice(1);
  tenant = await hl.createTenant('Watched');
  other = await hl.createTenant('Not watched here');
  for (const t of [tenant, other]) {
    const created = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }',
      { input: { url: receiver.url, events: ['invoice.*'] } },
      t.apiKey,
    );
    expect(created.errors).toBeUndefined();
  }
});
afterAll(async () => {
  await admin?.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`).catch(() => {});
  await admin?.end();
  await hl?.stop();
  await receiver?.close();
});

async function trigger(apiKey: string): Promise<string> {
  const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'invoice.created', data: { amount: 1, customer: 'Acme' } } }, apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.triggerEvent.deliveries[0].id;
}
const delivered = (id: string) => (items: any[]) => items.some((i) => i.id === id && i.status === 'DELIVERED');
const status = async (id: string) => (await hl.dataSource.query('select status from webhook_deliveries where id = $1', [id]))[0].status as string;

it('announces again, once LISTEN is back, what changed while it was down, to the tenant\'s subscribers only', async () => {
  const subscribed = moreSubscribers(hl, 3);
  const ws = collectWs(hl.wsClient(tenant.apiKey));
  const sse = collectSse(hl.url, tenant.apiKey);
  const otherWs = collectWs(hl.wsClient(other.apiKey));
  await sse.ready;
  await subscribed();
  // Heard live; and the pooled connections this takes are open for what follows.
  const before = await trigger(tenant.apiKey);
  await ws.waitFor(delivered(before));
  await sse.waitFor(delivered(before));

  // The LISTEN connection goes down and cannot come back for a while.
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections false`);
  const killed = await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hookline-live' and datname = $1`, [database]);
  expect(killed.rowCount).toBe(1);
  await eventually(() => !hl.services.live!.target.connected, 5_000, 10);
  const during = await trigger(tenant.apiKey);
  await eventually(async () => (await status(during)) === 'DELIVERED');
  await new Promise((r) => setTimeout(r, 300));
  expect(ws.items.some((i) => i.id === during), 'not heard while LISTEN is down').toBe(false);

  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`);
  await ws.waitFor(delivered(during));
  await sse.waitFor(delivered(during));
  // The other tenant's stream is announced nothing of this tenant's.
  expect(otherWs.items.filter((i) => i.id === during || i.id === before)).toEqual([]);
  // And live as before.
  const after = await trigger(tenant.apiKey);
  await ws.waitFor(delivered(after));
  expect(ws.errors).toEqual([]);
  ws.stop();
  sse.stop();
  otherWs.stop();
}, 60_000);
