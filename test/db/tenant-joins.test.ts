// Tenant isolation does not rest on row-level security alone, nor on the foreign keys: where a
// statement reaches one table from another (a delivery's subscription and event, a cursor's row)
// it stays within the tenant. The foreign keys name a row by id only, so a row of one tenant
// pointing at another's (a bug, a hand-made repair) must find nothing there.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keysetPage } from '../../src/db/keyset.js';
import type { TenantId } from '../../src/db/tenant-scope.js';
import { DELIVERIES_DUE_CHANNEL } from '../../src/migrations/0003-events-deliveries.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const TRIGGER = 'mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { event { id } deliveries { id } } }';

let hl: TestHookline;
let receiver: Receiver;
let a: { id: string; apiKey: string };
let b: { id: string; apiKey: string };
let subscriptionOfB: string;

beforeAll(async () => {
  hl = await startTestHookline();
  receiver = await startReceiver();
  a = await hl.createTenant('A');
  b = await hl.createTenant('B');
  const created = await hl.gql(CREATE, { input: { url: `${receiver.url}/b`, events: ['customer.created'] } }, b.apiKey);
  expect(created.errors).toBeUndefined();
  subscriptionOfB = created.data.createWebhookSubscription.subscription.id;
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

describe("a delivery whose subscription is another tenant's", () => {
  it('is never signed with that tenant’s secret nor sent: it has no subscription of its own, and is canceled', async () => {
    // An event of A's with no delivery (A has no subscription), and a delivery of it made by
    // hand (as the table's owner, past row-level security) pointing at B's subscription.
    const triggered = await hl.gql(TRIGGER, {}, a.apiKey);
    expect(triggered.data.triggerEvent.deliveries).toEqual([]);
    const [{ id }] = await hl.dataSource.query(
      `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, next_attempt_at, created_at, updated_at)
       values ($1, $2, $3, 'test.event', $4, 'PENDING', false, now(), now(), now()) returning id`,
      [a.id, triggered.data.triggerEvent.event.id, subscriptionOfB, `${receiver.url}/stray`],
    );
    await hl.dataSource.query('select pg_notify($1, $2)', [DELIVERIES_DUE_CHANNEL, a.id]);
    await eventually(async () => {
      const [row] = await hl.dataSource.query('select status from webhook_deliveries where id = $1', [id]);
      return row.status === 'CANCELED';
    });
    expect(receiver.received).toEqual([]);
  });
});

describe('a page cursor naming another tenant’s row', () => {
  it("is no row of the list: a bare id of B's is BAD_USER_INPUT, even looked up past row-level security", async () => {
    // The table's owner is not bound by row-level security: only the statement's own scope holds.
    const page = keysetPage(hl.dataSource.manager, {
      tenantId: a.id as TenantId,
      table: 'webhook_subscriptions',
      columns: 'id',
      where: ['tenant_id = $1'],
      params: [a.id],
      window: { after: subscriptionOfB, limit: 10, inverted: false },
      newestFirst: false,
    });
    await expect(page).rejects.toMatchObject({ code: 'BAD_USER_INPUT', message: expect.stringContaining(`no item of this list has the id ${subscriptionOfB}`) });
  });
});
