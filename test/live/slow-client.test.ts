// A stuck dashboard must not hold up anyone: its buffer is bounded, it is
// disconnected with a reason when it falls too far behind, and the other
// clients get every update meanwhile.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs } from '../helpers/live.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { closeCodeOf, openRawWebSocket } from '../helpers/raw-websocket.js';

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

// Long target URLs selected under many aliases make each update ~55 KB, so a
// client that stops reading fills even autotuned loopback socket buffers (tens of MB).
const BULKY = `subscription { deliveryUpdated { id status attempts ${Array.from({ length: 28 }, (_, i) => `s${i}: subscription { url }`).join(' ')} } }`;
const LONG_PATH = 'x'.repeat(1_900);
const SUBSCRIPTIONS = 50;
const EVENTS = 8;

async function liveSubscriptions(): Promise<number> {
  const text = await (await fetch(`${hl.url}/metrics`)).text();
  return Number(/^hookline_live_subscriptions (\S+)$/m.exec(text)?.[1] ?? NaN);
}

it('disconnects a client that stops reading, while others receive everything', async () => {
  const tenant = await hl.createTenant();
  for (let i = 0; i < SUBSCRIPTIONS; i++) {
    await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
      input: { url: `${receiver.url}/${i}/${LONG_PATH}`, events: ['test.event'] },
    }, tenant.apiKey);
  }

  // The stuck clients: graphql-transport-ws sockets that stop reading once subscribed; the
  // second never reads again.
  const openStuck = async () => {
    const socket = await openRawWebSocket(`${hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
    socket.sendText(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${tenant.apiKey}` } }));
    await socket.readUntil((f) => f.opcode === 1 && f.payload.toString().includes('connection_ack'));
    socket.sendText(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: BULKY } }));
    return socket;
  };
  const stuck = await openStuck();
  const gone = await openStuck();
  await new Promise((r) => setTimeout(r, 200));
  stuck.socket.pause();
  gone.socket.pause();

  const healthy = hl.wsClient(tenant.apiKey);
  const seen = collectWs(healthy, { status: 'DELIVERED' });
  // Idle longer than the stall limit before the burst: waiting is not stalling.
  await new Promise((r) => setTimeout(r, 1_500));
  const liveBefore = await liveSubscriptions(); // the stuck one and the healthy one
  for (let i = 0; i < EVENTS; i++) await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: {} }) { duplicate } }', {}, tenant.apiKey);
  await seen.waitFor((items) => items.length >= EVENTS * SUBSCRIPTIONS, 60_000);
  expect(new Set(seen.items.map((i) => i.id)).size).toBe(EVENTS * SUBSCRIPTIONS);
  expect(seen.errors).toEqual([]);
  expect(seen.closed).toBe(false);

  // The server gave up on the stuck one (its subscription is gone, counted as cut off)...
  await eventually(async () => (await liveSubscriptions()) === liveBefore - 2, 20_000);
  expect(await hl.metric('hookline_live_subscriptions_cut_off_total')).toBe(2);
  // ...and once it reads again, it finds the reason at the end of what was sent.
  stuck.socket.resume();
  const close = closeCodeOf(await stuck.readUntil((f) => f.opcode === 8, 30_000));
  expect(close.code).toBe(4429);
  expect(close.reason).toMatch(/too slow/);
  // The one that never reads again is cut within the stall limit or 5 s, not ws's 30 s for its
  // answer to the close frame: what is queued for it is let go (its slot was at once).
  await eventually(async () => (await hl.metric('hookline_live_updates_ahead')) === 0, 12_000);
  gone.socket.destroy();
  await healthy.dispose();
}, 90_000);
