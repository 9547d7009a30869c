// A Server-Sent Events client that falls a whole buffer behind is told why, as a WebSocket
// client is (4429 with a reason): its stream ends with a RATE_LIMITED error after what was
// already sent, and the response ends cleanly rather than being cut mid-stream.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const BUFFER = 5;
const SUBSCRIPTIONS = 20; // one event: 20 deliveries announced at once, more than the buffer holds

let hl: TestHookline;
let receiver: Receiver;

beforeAll(async () => {
  // No dispatcher: the deliveries' creation is the only change.
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api', HOOKLINE_LIVE_BUFFER: String(BUFFER) });
  receiver = await startReceiver();
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

it('ends an SSE stream that overflowed with RATE_LIMITED, not with a cut connection', async () => {
  const tenant = await hl.createTenant();
  for (let i = 0; i < SUBSCRIPTIONS; i++) {
    const created = await hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }',
      { input: { url: `${receiver.url}/${i}`, events: ['invoice.*'] } },
      tenant.apiKey,
    );
    expect(created.errors).toBeUndefined();
  }
  const subscribed = moreSubscribers(hl, 1);
  const sse = collectSse(hl.url, tenant.apiKey);
  await sse.ready;
  await subscribed();

  const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'invoice.created', data: { amount: 1, customer: 'Acme' } } }, tenant.apiKey);
  expect(res.data.triggerEvent.deliveries).toHaveLength(SUBSCRIPTIONS);
  await sse.waitFor(() => sse.closed, 20_000);
  expect(sse.errors).toEqual([[expect.objectContaining({ message: expect.stringMatching(/stopped reading/), extensions: { code: 'RATE_LIMITED' } })]]);
  expect(sse.items.length).toBeLessThan(SUBSCRIPTIONS);
  expect(await hl.metric('hookline_live_subscriptions')).toBe(0);
});
