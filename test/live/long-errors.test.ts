// A live update carries a delivery's last error whole, as a query of the delivery shows it:
// a notification holds only the first 200 characters of each row's, so a longer one is
// sent in a notification of its own (it was cut at 200, mid-word, for live subscribers only),
// and one longer than a notification holds is marked left out, and loaded by id.
import { expect, it } from 'vitest';
import { apiWithLiveBuffer, collectWs, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';

const fixture = apiWithLiveBuffer(1000);

/** A tenant subscribed to invoice.* at the receiver, and the ids of `n` deliveries of its own (left PENDING: no dispatcher). */
async function tenantWithDeliveries(n: number) {
  const { hl, receiver } = fixture;
  const tenant = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: receiver.url, events: ['invoice.*'] } },
    tenant.apiKey,
  );
  expect(created.errors).toBeUndefined();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const triggered = await hl.gql(TRIGGER_EVENT, { input: { event: 'invoice.created', data: { amount: i, customer: 'Acme' } } }, tenant.apiKey);
    ids.push(triggered.data.triggerEvent.deliveries[0].id);
  }
  return { tenant, ids };
}

it('a long last error reaches live subscribers whole, a short one as it is', async () => {
  const { hl } = fixture;
  const { tenant, ids: [id] } = await tenantWithDeliveries(1);
  const client = hl.wsClient(tenant.apiKey);
  try {
    const subscribed = moreSubscribers(hl);
    const live = collectWs(client, { deliveryId: id });
    await subscribed();
    const long = `ENOTFOUND: getaddrinfo ENOTFOUND ${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.invalid`;
    // As a retry's record writes it (an `api` process has no dispatcher: the test plays it).
    await hl.dataSource.query(`update webhook_deliveries set attempts = attempts + 1, last_error = $2 where id = $1`, [id, long]);
    await hl.dataSource.query(`update webhook_deliveries set attempts = attempts + 1, last_error = 'HTTP 500' where id = $1`, [id]);
    // Longer than a notification holds (no error Hookline writes is): left out, and loaded.
    const huge = `not sent: ${'x'.repeat(7_000)}`;
    await hl.dataSource.query(`update webhook_deliveries set attempts = attempts + 1, last_error = $2 where id = $1`, [id, huge]);
    const items = await live.waitFor((got) => got.length >= 3);
    expect(items.map((d) => [d.attempts, d.lastError])).toEqual([
      [1, long],
      [2, 'HTTP 500'],
      [3, huge],
    ]);
    expect(long.length).toBeGreaterThan(200);
    expect(live.errors).toEqual([]);
  } finally {
    await client.dispose();
  }
});

it('an error JSON writes longer than it is (quotes, control characters) never takes a notification over its limit', async () => {
  // Measured as stored, 3,990 quotes were within 6,000 bytes, and ten errors of 150 control
  // characters within 200 each: written as JSON, 7,980 and ten times 900 bytes, over the 8,000
  // a notification may hold, and the statement that changed the deliveries failed.
  const { hl } = fixture;
  const { tenant, ids } = await tenantWithDeliveries(10);
  const client = hl.wsClient(tenant.apiKey);
  try {
    const subscribed = moreSubscribers(hl);
    const live = collectWs(client);
    await subscribed();
    const controls = '\u0001'.repeat(150);
    await hl.dataSource.query(`update webhook_deliveries set attempts = attempts + 1, last_error = $2 where id = any($1)`, [ids, controls]);
    // Past the 6,000 bytes a notification gives one error: left out, and loaded (the last change).
    const quotes = '"'.repeat(3_990);
    await hl.dataSource.query(`update webhook_deliveries set attempts = attempts + 1, last_error = $2 where id = $1`, [ids[0], quotes]);
    const items = await live.waitFor((got) => got.length >= 11);
    expect(items.slice(0, 10).map((d) => d.id).sort()).toEqual([...ids].sort());
    expect(items.slice(0, 10).every((d) => d.lastError === controls && d.attempts === 1)).toBe(true);
    expect(items[10]).toMatchObject({ id: ids[0], attempts: 2, lastError: quotes });
  } finally {
    await client.dispose();
  }
});
