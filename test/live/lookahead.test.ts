// A client that stops reading holds only so much of the server's memory: updates are executed
// ahead of what it has read, but for an operation whose answers can be large (a delivery's
// payload, its event's data, 256 KiB each) only a few, where a small one's are taken 100 ahead.
// A client reading the same large operation promptly still gets every update.
import { parse } from 'graphql';
import { expect, it } from 'vitest';
import { schema } from '../../src/schema/index.js';
import { operationComplexity } from '../../src/server/complexity.js';
import { LOOKAHEAD, lookaheadFor } from '../../src/live/shared-execution.js';
import { collectWs, DELIVERY_UPDATED, hooklineAndReceiver, moreSubscribers } from '../helpers/live.js';
import { openRawWebSocket } from '../helpers/raw-websocket.js';
import { eventually } from '../helpers/receiver.js';

const fixture = hooklineAndReceiver({ HOOKLINE_ROLE: 'api' });

const LARGE = 'subscription { deliveryUpdated { id status payload webhookEvent { id data } } }';
const EVENTS = 60;

it('takes a few updates ahead of an operation with large values, 100 of a small one', () => {
  const cost = (query: string) => operationComplexity({ schema: schema, document: parse(query) });
  expect(lookaheadFor(cost(DELIVERY_UPDATED))).toBe(LOOKAHEAD);
  expect(lookaheadFor(cost(LARGE))).toBeLessThanOrEqual(4);
  expect(lookaheadFor(cost(LARGE))).toBeGreaterThanOrEqual(1);
  expect(lookaheadFor(50_000)).toBe(1);
});

it('holds no more than that for a client that stops reading, while one that reads gets every update', async () => {
  const { hl, receiver } = fixture;
  const metricsAhead = async () => hl.metric('hookline_live_updates_ahead');
  const tenant = await hl.createTenant();
  await hl.gql('mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }', {
    input: { url: receiver.url, events: ['test.event'] },
  }, tenant.apiKey);

  const subscribed = moreSubscribers(hl, 2);
  const stuck = await openRawWebSocket(`${hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
  stuck.sendText(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${tenant.apiKey}` } }));
  await stuck.readUntil((f) => f.opcode === 1 && f.payload.toString().includes('connection_ack'));
  stuck.sendText(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: LARGE } }));
  const prompt = collectWs(hl.wsClient(tenant.apiKey), {}, LARGE);
  await subscribed();
  stuck.socket.pause();
  const before = await metricsAhead();

  let dispatched = 0;
  hl.services.live!.target.addEventListener(`delivery:${tenant.id}`, () => dispatched++);
  const data = { filler: 'x'.repeat(200 * 1024) };
  for (let i = 0; i < EVENTS; i++) {
    const res = await hl.gql('mutation($data: JSON!) { triggerEvent(input: { event: "test.event", data: $data }) { duplicate } }', { data: { ...data, n: i } }, tenant.apiKey);
    expect(res.errors).toBeUndefined();
  }
  await eventually(() => dispatched >= EVENTS, 30_000);
  await prompt.waitFor((items) => items.length >= EVENTS, 60_000);
  expect(new Set(prompt.items.map((i) => i.webhookEvent.data.n))).toEqual(new Set(Array.from({ length: EVENTS }, (_, i) => i)));
  // The stuck client's socket took what the kernel would hold; past that, a few are executed ahead.
  await new Promise((r) => setTimeout(r, 1_000));
  const ahead = (await metricsAhead()) - before;
  expect(ahead).toBeGreaterThanOrEqual(1);
  expect(ahead).toBeLessThanOrEqual(lookaheadFor(operationComplexity({ schema: schema, document: parse(LARGE) })));
  stuck.socket.destroy();
  await eventually(async () => (await metricsAhead()) === before, 15_000);
}, 120_000);
