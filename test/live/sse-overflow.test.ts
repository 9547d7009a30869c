// A Server-Sent Events client that falls a whole buffer behind is told why, as a WebSocket
// client is (4429 with a reason): its stream ends with a RATE_LIMITED error after what was
// already sent, and the response ends cleanly rather than being cut mid-stream.
import { expect, it } from 'vitest';
import { apiWithLiveBuffer, collectSse, moreSubscribers } from '../helpers/live.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';

const BUFFER = 5;
const SUBSCRIPTIONS = 20; // one event: 20 deliveries announced at once, more than the buffer holds

const fixture = apiWithLiveBuffer(BUFFER);

it('ends an SSE stream that overflowed with RATE_LIMITED, not with a cut connection', async () => {
  const { hl, receiver } = fixture;
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
