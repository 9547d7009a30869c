// Retries start when they fall due (each delay of HOOKLINE_RETRY_SCHEDULE ±20%), not at the
// worker's next poll: with several retries pending, the worker woke for the earliest only,
// and the others waited up to a second more; so they did while a subscription of the worker
// was at its share (behind a receiver that hangs), when it does not ask what falls due next.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;
beforeAll(async () => {
  // A poll of 30 s: a retry left to it would be seconds late, far past any stall of a busy machine.
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '1s,1s,1s' }, { dispatcher: { pollIntervalMs: 30_000 } });
  receiver = await startReceiver((request) => (request.path === '/hang' ? { status: 200, delayMs: 30_000 } : { status: 500 }));
});
afterAll(async () => {
  await receiver?.close(); // first: the hanging attempts end with it
  await hl?.stop();
  await capped?.stop();
});

let capped: TestHookline | undefined;

/** The gaps between the attempts of each delivery (by webhook-id) whose path starts with `prefix`. */
function gapsOf(prefix: string): number[] {
  const byDelivery = new Map<string, number[]>();
  for (const request of receiver.received.filter((r) => r.path.startsWith(prefix))) {
    const id = String(request.headers['webhook-id']);
    byDelivery.set(id, [...(byDelivery.get(id) ?? []), request.at]);
  }
  return [...byDelivery.values()].flatMap((times) => times.slice(1).map((t, i) => t - times[i]!));
}

/** 1 s ± 20%, and a margin for a busy machine (2 s) far below the 30 s poll's. */
function expectOnTime(gaps: number[]) {
  for (const gap of gaps) {
    expect(gap).toBeGreaterThanOrEqual(770);
    expect(gap).toBeLessThan(1_200 + 2_000);
  }
}

it('sends each of ten deliveries\' retries within its scheduled delay, give or take the jitter', async () => {
  const tenant = await hl.createTenant();
  const created = await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['test.event'] },
  }, tenant.apiKey);
  expect(created.errors).toBeUndefined();
  for (let i = 0; i < 10; i++) {
    const res = await hl.gql('mutation($n: Int!) { triggerEvent(input: { event: "test.event", data: { n: $n } }) { event { id } } }', { n: i }, tenant.apiKey);
    expect(res.errors).toBeUndefined();
    await new Promise((r) => setTimeout(r, 37)); // due times apart
  }
  await receiver.waitFor(40, 25_000); // 10 deliveries × 4 attempts
  const gaps = gapsOf('/');
  expect(gaps).toHaveLength(30);
  expectOnTime(gaps);
});

it('sends other tenants\' retries on time while a subscription of the worker is at its share', async () => {
  capped = await startTestHookline(
    { HOOKLINE_RETRY_SCHEDULE: '1s,1s,1s', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2', HOOKLINE_DELIVERY_TIMEOUT: '20s' },
    { dispatcher: { pollIntervalMs: 30_000 } },
  );
  const create = (apiKey: string, path: string) =>
    capped!.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
      input: { url: `${receiver.url}${path}`, events: ['test.event'] },
    }, apiKey);
  const trigger = (apiKey: string, n: number) =>
    capped!.gql('mutation($n: Int!) { triggerEvent(input: { event: "test.event", data: { n: $n } }) { event { id } } }', { n }, apiKey);
  const slow = await capped.createTenant();
  await create(slow.apiKey, '/hang');
  for (let n = 0; n < 5; n++) await trigger(slow.apiKey, n);
  await eventually(() => receiver.received.filter((r) => r.path === '/hang').length === 2);
  for (let i = 0; i < 10; i++) {
    const tenant = await capped.createTenant();
    await create(tenant.apiKey, `/fail-${i}`);
    await trigger(tenant.apiKey, i);
    await new Promise((r) => setTimeout(r, 37));
  }
  await eventually(() => receiver.received.filter((r) => r.path.startsWith('/fail-')).length >= 40, 20_000);
  const gaps = gapsOf('/fail-');
  expect(gaps.length).toBeGreaterThanOrEqual(30);
  expectOnTime(gaps);
}, 60_000);
