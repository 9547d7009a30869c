// Retries start when they fall due (each delay of HOOKLINE_RETRY_SCHEDULE ±20%), not at the
// worker's next poll: with several retries pending, the worker woke for the earliest only,
// and the others waited up to a second more.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;
beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '1s,1s,1s' });
  receiver = await startReceiver(() => ({ status: 500 }));
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

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
  await receiver.waitFor(40, 15_000); // 10 deliveries × 4 attempts
  const byDelivery = new Map<string, number[]>();
  for (const request of receiver.received) {
    const id = String(request.headers['webhook-id']);
    byDelivery.set(id, [...(byDelivery.get(id) ?? []), request.at]);
  }
  const gaps = [...byDelivery.values()].flatMap((times) => times.slice(1).map((t, i) => t - times[i]!));
  expect(gaps).toHaveLength(30);
  // 1 s ± 20%, and a margin for a busy machine far below the poll's second.
  for (const gap of gaps) {
    expect(gap).toBeGreaterThanOrEqual(790);
    expect(gap).toBeLessThan(1_200 + 350);
  }
});
