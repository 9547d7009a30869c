// Each deliveryUpdated update reads what it shows afresh: fields the database notice
// lacks (deliveredAt, targetUrl, the subscription's url) are loaded for that update,
// not once for the subscription's lifetime. Over graphql-ws and Server-Sent Events.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, collectWs, moreSubscribers } from '../helpers/live.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const FIELDS = `deliveryUpdated(subscriptionId: $subscriptionId) {
    id status attempts deliveredAt targetUrl
    subscription { id url }
  }`;
/** The same operation, with its root field as is, in a named fragment and in an inline one. */
const OPERATIONS = {
  'a root field': `subscription Updates($subscriptionId: ID) { ${FIELDS} }`,
  'a fragment': `subscription Updates($subscriptionId: ID) { ...Updates } fragment Updates on Subscription { ${FIELDS} }`,
  'an inline fragment': `subscription Updates($subscriptionId: ID) { ... on Subscription { ${FIELDS} } }`,
};
const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const UPDATE = 'mutation($id: ID!, $input: UpdateWebhookSubscriptionInput!) { updateWebhookSubscription(id: $id, input: $input) { url } }';
const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { deliveries { id } } }';
const DELIVERY = 'query($id: ID!) { delivery(id: $id) { deliveredAt targetUrl subscription { url } } }';

interface Update {
  id: string;
  status: string;
  deliveredAt: string | null;
  targetUrl: string;
  subscription: { id: string; url: string } | null;
}

let hl: TestHookline;
let first: Receiver;
let second: Receiver;
let tenant: { id: string; apiKey: string };
let announced: Promise<void> = Promise.resolve();

beforeAll(async () => {
  hl = await startTestHookline();
  // Answers once every stream has had a first update of the delivery: each is announced
  // (SENDING, deliveredAt null) before it is DELIVERED, however slow the machine.
  first = await startReceiver(async () => (await announced, { status: 200 }));
  second = await startReceiver(async () => (await announced, { status: 204 }));
});
afterAll(async () => {
  await hl?.stop();
  await first?.close();
  await second?.close();
});

/** Triggers an event; its delivery is answered once each of `streams` has an update of it. */
async function trigger(streams: Array<{ waitFor(done: (items: Update[]) => boolean): Promise<unknown> }>): Promise<string> {
  let release!: () => void;
  announced = new Promise<void>((r) => (release = r));
  const res = await hl.gql(TRIGGER, { input: { event: 'invoice.created', data: { amount: 10, customer: 'Acme' } } }, tenant.apiKey);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  const id: string = res.data.triggerEvent.deliveries[0].id;
  void Promise.all(streams.map((u) => u.waitFor((items) => items.some((i) => i.id === id)))).finally(release);
  return id;
}

const deliveredOf = (id: string) => (items: Update[]) => items.some((i) => i.id === id && i.status === 'DELIVERED');

it.each(Object.entries(OPERATIONS))('sends each update with what the database holds then, over WebSocket and SSE alike, with %s', async (_, UPDATES) => {
  // A tenant of its own: the other tests' subscriptions get none of its events.
  tenant = await hl.createTenant();
  const created = await hl.gql(CREATE, { input: { url: first.url, events: ['invoice.*'] } }, tenant.apiKey);
  const subscriptionId = created.data.createWebhookSubscription.subscription.id;
  const subscribed = moreSubscribers(hl, 3);
  const client = hl.wsClient(tenant.apiKey);
  // Two sockets' subscribers of one operation share each update's execution; SSE runs its own.
  const ws = [collectWs(client, { subscriptionId }, UPDATES), collectWs(hl.wsClient(tenant.apiKey), { subscriptionId }, UPDATES)];
  const sse = collectSse(hl.url, tenant.apiKey, { subscriptionId }, UPDATES);
  await sse.ready;
  await subscribed();
  const all = [...ws, sse];

  // A delivery is announced before it is delivered (deliveredAt null), then DELIVERED.
  const id = await trigger(all);
  for (const u of all) await u.waitFor(deliveredOf(id));
  const before = (await hl.gql(DELIVERY, { id }, tenant.apiKey)).data.delivery;
  expect(before.deliveredAt).toEqual(expect.any(String));
  for (const u of all) {
    const mine = u.items.filter((i) => i.id === id);
    expect(mine[0]!.deliveredAt).toBeNull();
    expect(mine.at(-1)).toMatchObject({ status: 'DELIVERED', deliveredAt: before.deliveredAt, targetUrl: before.targetUrl });
    expect(mine.every((i) => i.subscription?.url === before.subscription.url)).toBe(true);
  }

  // The subscription moves to another URL between two updates: the later ones show it.
  const updated = await hl.gql(UPDATE, { id: subscriptionId, input: { url: second.url } }, tenant.apiKey);
  expect(updated.data.updateWebhookSubscription.url).toMatch(`${second.url}`);
  const next = await trigger(all);
  for (const u of all) await u.waitFor(deliveredOf(next));
  await second.waitFor(1);
  const after = (await hl.gql(DELIVERY, { id: next }, tenant.apiKey)).data.delivery;
  expect(after.subscription.url).not.toBe(before.subscription.url);
  for (const u of all) {
    const mine = u.items.filter((i) => i.id === next);
    expect(mine.every((i) => i.subscription?.url === after.subscription.url && i.targetUrl === after.targetUrl)).toBe(true);
    expect(mine.at(-1)!.deliveredAt).toBe(after.deliveredAt);
    expect(u.errors).toEqual([]);
  }
  for (const u of all) u.stop();
  await client.dispose();
});
