// A stuck dashboard must not hold up anyone: its buffer is bounded, it is
// disconnected with a reason when it falls too far behind, and the other
// clients get every update meanwhile.
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs } from '../helpers/live.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

let hl: TestHookline;
let receiver: Receiver;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_LIVE_STALL: '1s' });
  receiver = await startReceiver();
});
afterAll(async () => {
  await hl?.stop();
  await receiver?.close();
});

// Many aliases make each update large, so a client that stops reading fills the
// socket buffers quickly and the server-side buffer then overflows.
const BULKY = `subscription { deliveryUpdated { id status attempts ${Array.from({ length: 14 }, (_, i) => `e${i}: event u${i}: updatedAt`).join(' ')} } }`;

it('disconnects a client that stops reading, while others receive everything', async () => {
  const tenant = await hl.createTenant();
  for (let i = 0; i < 100; i++) {
    await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
      input: { url: `${receiver.url}/${i}`, events: ['test.event'] },
    }, tenant.apiKey);
  }

  // The stuck client: a raw graphql-transport-ws socket that stops reading once subscribed.
  const stuck = new WebSocket(`${hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
  await new Promise((resolve) => stuck.once('open', resolve));
  stuck.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${tenant.apiKey}` } }));
  await new Promise((resolve) => stuck.once('message', resolve));
  stuck.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: BULKY } }));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    stuck.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise((r) => setTimeout(r, 200));
  (stuck as unknown as { _socket: import('node:net').Socket })._socket.pause();

  const healthy = hl.wsClient(tenant.apiKey);
  const seen = collectWs(healthy, { status: 'DELIVERED' });
  // Idle longer than the stall limit before the burst: waiting is not stalling.
  await new Promise((r) => setTimeout(r, 1_500));
  const events = 30;
  for (let i = 0; i < events; i++) await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: {} }) { duplicate } }', {}, tenant.apiKey);
  await seen.waitFor((items) => items.length >= events * 100, 60_000);
  expect(new Set(seen.items.map((i) => i.id)).size).toBe(events * 100);
  expect(seen.errors).toEqual([]);
  expect(seen.closed).toBe(false);

  (stuck as unknown as { _socket: import('node:net').Socket })._socket.resume();
  const close = await closed;
  expect(close.code).toBe(4429);
  expect(close.reason).toMatch(/too slow/);
  await healthy.dispose();
}, 90_000);
