// The retention sweep deletes an event with its deliveries in one transaction, but one GraphQL
// answer reads in several (the page, then each batch of loads): a sweep committing in between
// wiped out a whole page (a non-null field of a deleted event) or showed an event without its
// deliveries. Such a query is executed again and answers as the tables are after the sweep.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';

let hl: TestHookline;
let receiver: Receiver;
let tenant: { id: string; apiKey: string };

beforeAll(async () => {
  hl = await startTestHookline();
  receiver = await startReceiver();
  tenant = await hl.createTenant();
  const created = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }',
    { input: { url: `${receiver.url}/hooks`, events: ['test.event'] } },
    tenant.apiKey,
  );
  expect(created.errors).toBeUndefined();
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

async function triggered(n: number): Promise<string> {
  const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n } } }, tenant.apiKey);
  expect(res.errors).toBeUndefined();
  return res.data.triggerEvent.event.id as string;
}

/** The sweep's deletion (the foreign keys cascade to the deliveries and their attempts), right after `method`'s next read. */
function sweepAfterNext(method: 'list' | 'findEvent', eventId: string): { reads: () => number; restore: () => void } {
  const service = hl.services.deliveries as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = service[method]!;
  let reads = 0;
  service[method] = async function (this: unknown, ...args: unknown[]) {
    const result = await original.apply(this, args);
    if (reads++ === 0) await hl.dataSource.query('delete from webhook_events where id = $1', [eventId]);
    return result;
  };
  return { reads: () => reads, restore: () => void (service[method] = original) };
}

it('a page of deliveries read as the sweep deletes one of its events answers without it, whole', async () => {
  const kept = await triggered(1);
  const swept = await triggered(2);
  const sweep = sweepAfterNext('list', swept);
  try {
    const res = await hl.gql(
      '{ deliveries(first: 10) { edges { node { id payload webhookEvent { id event } } } } }',
      {},
      tenant.apiKey,
    );
    expect(res.errors).toBeUndefined();
    const events = res.data.deliveries.edges.map((e: any) => e.node.webhookEvent.id);
    expect(events).toContain(kept);
    expect(events).not.toContain(swept);
    for (const { node } of res.data.deliveries.edges) expect(node.payload.id).toBe(node.webhookEvent.id);
    expect(sweep.reads()).toBe(2); // read again once
  } finally {
    sweep.restore();
  }
});

it('a delivered delivery read as the sweep deletes it is not shown with an empty attempt log', async () => {
  const kept = await triggered(4);
  const swept = await triggered(5);
  await eventually(async () => {
    const rows = await hl.dataSource.query(`select count(*)::int as n from webhook_deliveries where event_id = any($1) and status = 'DELIVERED'`, [[kept, swept]]);
    return rows[0].n === 2;
  });
  const sweep = sweepAfterNext('list', swept);
  try {
    const res = await hl.gql('{ deliveries(first: 10) { edges { node { id attempts attemptLog { number statusCode } } } } }', {}, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    expect(sweep.reads()).toBe(2);
    const nodes = res.data.deliveries.edges.map((e: any) => e.node);
    expect(nodes.length).toBeGreaterThan(0);
    for (const node of nodes) expect(node.attemptLog).toHaveLength(node.attempts);
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_deliveries where event_id = $1', [swept]);
    expect(n).toBe(0);
  } finally {
    sweep.restore();
  }
});

it('an event read as the sweep deletes it is not shown without its deliveries', async () => {
  const swept = await triggered(3);
  const sweep = sweepAfterNext('findEvent', swept);
  try {
    const res = await hl.gql('query($id: ID!) { webhookEvent(id: $id) { id deliveries { id } } }', { id: swept }, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    expect(res.data.webhookEvent).toBeNull(); // as any unknown id, once gone
  } finally {
    sweep.restore();
  }
});
