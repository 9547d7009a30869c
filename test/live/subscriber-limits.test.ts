// One tenant may have only so many deliveryUpdated subscriptions open in a process, whatever
// its keys (200 by default, 8 here), one API key only so many (WebSocket and Server-Sent Events
// together; 100 by default, 5 here), and one WebSocket connection only so many (20 by default,
// 3 here): beyond that a subscription is refused with RATE_LIMITED and a
// message saying the limit, and the connection stays. A slot is free again once its
// subscription completes, is cut off, or its socket or stream closes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, collectWs, moreSubscribers, type Collected } from '../helpers/live.js';
import { eventually } from '../helpers/receiver.js';
import { wsRequest } from '../helpers/ws.js';

const PER_TENANT = 8;
const PER_KEY = 5;
const PER_CONNECTION = 3;

let hl: TestHookline;
const open: Array<{ dispose(): unknown }> = [];

beforeAll(async () => {
  hl = await startTestHookline({
    HOOKLINE_ROLE: 'api',
    HOOKLINE_LIVE_PER_TENANT: String(PER_TENANT),
    HOOKLINE_LIVE_PER_KEY: String(PER_KEY),
    HOOKLINE_LIVE_PER_CONNECTION: String(PER_CONNECTION),
    HOOKLINE_LIVE_BUFFER: '3',
  });
});
afterAll(async () => {
  for (const client of open) await client.dispose();
  await hl?.stop();
});

function wsClient(apiKey: string) {
  const client = hl.wsClient(apiKey);
  open.push(client);
  return client;
}

/** Subscribes `n` times (with `subscribe`) and resolves once all of them hear updates. */
async function subscribed(n: number, subscribe: () => Collected | Promise<Collected>): Promise<Collected[]> {
  const heard = moreSubscribers(hl, n);
  const subscriptions: Collected[] = [];
  for (let i = 0; i < n; i++) subscriptions.push(await subscribe());
  await heard();
  for (const s of subscriptions) expect(s.errors).toEqual([]);
  return subscriptions;
}

async function sse(apiKey: string): Promise<Collected> {
  const live = collectSse(hl.url, apiKey);
  await live.ready;
  return live;
}

/** Waits for the subscription's refusal: RATE_LIMITED, saying the limit, and the end of the subscription. */
async function expectRefused(live: Collected, limit: RegExp) {
  await live.waitFor(() => live.closed, 5_000);
  expect(live.errors).toHaveLength(1);
  const [error] = live.errors[0] as any[];
  expect(error).toMatchObject({ extensions: { code: 'RATE_LIMITED' }, message: expect.stringMatching(limit) });
}

const PER_KEY_MESSAGE = new RegExp(`API key already has ${PER_KEY} deliveryUpdated subscriptions open`);
const PER_TENANT_MESSAGE = new RegExp(`tenant already has ${PER_TENANT} deliveryUpdated subscriptions open`);
const PER_CONNECTION_MESSAGE = new RegExp(`connection already has ${PER_CONNECTION} deliveryUpdated subscriptions open`);

async function createApiKey(apiKey: string): Promise<{ id: string; apiKey: string }> {
  const res = await hl.gql('mutation { createApiKey(name: "second") { id apiKey } }', {}, apiKey);
  expect(res.errors).toBeUndefined();
  return res.data.createApiKey;
}

it('are 200 a tenant, 100 a key and 20 a connection by default', () => {
  const config = loadConfig({});
  expect([config.liveSubscriptionsPerTenant, config.liveSubscriptionsPerKey, config.liveSubscriptionsPerConnection]).toEqual([200, 100, 20]);
});

describe('a tenant', () => {
  it('has its subscriptions refused past its limit whatever its keys, others\' untouched, and its slots back as they end', async () => {
    const baseline = await hl.metric('hookline_live_subscriptions');
    const tenant = await hl.createTenant();
    const keys = [tenant.apiKey, (await createApiKey(tenant.apiKey)).apiKey, (await createApiKey(tenant.apiKey)).apiKey];
    // 3 + 3 + 2 on three keys, none at its own limit (5).
    const streams = [...(await subscribed(3, () => sse(keys[0]!))), ...(await subscribed(3, () => sse(keys[1]!))), ...(await subscribed(2, () => sse(keys[2]!)))];
    await expectRefused(await sse(keys[2]!), PER_TENANT_MESSAGE);
    await expectRefused(collectWs(wsClient(keys[0]!)), PER_TENANT_MESSAGE);
    // Another tenant's are its own.
    const other = await hl.createTenant('Other');
    const others = await subscribed(PER_KEY, () => sse(other.apiKey));
    // One ends: the tenant has its slot back, on any of its keys.
    const before = await hl.metric('hookline_live_subscriptions');
    streams[0]!.stop();
    await eventually(async () => (await hl.metric('hookline_live_subscriptions')) === before - 1, 5_000);
    const [again] = await subscribed(1, () => collectWs(wsClient(keys[2]!)));
    await expectRefused(await sse(keys[1]!), PER_TENANT_MESSAGE);
    for (const live of [...streams, ...others, again!]) live.stop();
    await eventually(async () => (await hl.metric('hookline_live_subscriptions')) === baseline, 5_000);
  });
});

describe('a WebSocket connection', () => {
  it('has its subscriptions refused past its limit, keeps working, and has a completed one\'s slot back', async () => {
    const tenant = await hl.createTenant();
    const client = wsClient(tenant.apiKey);
    const [first] = await subscribed(PER_CONNECTION, () => collectWs(client));
    await expectRefused(collectWs(client), PER_CONNECTION_MESSAGE);
    await expectRefused(collectWs(client), PER_CONNECTION_MESSAGE); // a refusal takes no slot
    expect((await wsRequest(client, '{ viewer { id } }')).data).toEqual({ viewer: { id: tenant.id } });
    // Another connection of the same key has its own.
    await subscribed(1, () => collectWs(wsClient(tenant.apiKey)));

    first!.stop(); // the client completes it
    await eventually(async () => (await hl.metric('hookline_live_subscriptions')) <= PER_CONNECTION, 5_000);
    await subscribed(1, () => collectWs(client));
    await expectRefused(collectWs(client), PER_CONNECTION_MESSAGE);
  });
});

describe('an API key', () => {
  it('has its subscriptions refused past its limit over WebSocket and Server-Sent Events alike, and its slots back as sockets and streams close', async () => {
    const tenant = await hl.createTenant();
    const one = wsClient(tenant.apiKey);
    const two = wsClient(tenant.apiKey);
    await subscribed(2, () => collectWs(one));
    await subscribed(2, () => collectWs(two));
    const [stream] = await subscribed(1, () => sse(tenant.apiKey));
    await expectRefused(await sse(tenant.apiKey), PER_KEY_MESSAGE);
    await expectRefused(collectWs(wsClient(tenant.apiKey)), PER_KEY_MESSAGE);
    // The tenant's other key has limits of its own.
    const other = await createApiKey(tenant.apiKey);
    await subscribed(1, () => sse(other.apiKey));

    const before = await hl.metric('hookline_live_subscriptions');
    await two.dispose(); // its two subscriptions end with the socket
    await eventually(async () => (await hl.metric('hookline_live_subscriptions')) === before - 2, 5_000);
    await subscribed(2, () => sse(tenant.apiKey));
    await expectRefused(collectWs(one), PER_KEY_MESSAGE);

    stream!.stop(); // the client closes the stream
    await eventually(async () => (await hl.metric('hookline_live_subscriptions')) === before - 1, 5_000);
    await subscribed(1, () => collectWs(one));
    await expectRefused(await sse(tenant.apiKey), PER_KEY_MESSAGE);
  });

  it('has the slots of subscriptions cut off (too slow) back', async () => {
    const tenant = await hl.createTenant();
    const key = await createApiKey(tenant.apiKey);
    const live = hl.services.live!;
    // Subscribers of the key that never read: the buffer of 3 overflows at the third update.
    const stuck = await Promise.all(Array.from({ length: PER_KEY }, () => live.subscribe(tenant.id, key.id, {})));
    await expectRefused(collectWs(wsClient(key.apiKey)), PER_KEY_MESSAGE);
    const created = await hl.gql(
      'mutation { createWebhookSubscription(input: { url: "http://127.0.0.1:9/hook", events: ["test.event"] }) { subscription { id } } }',
      {},
      tenant.apiKey,
    );
    expect(created.errors).toBeUndefined();
    for (let i = 0; i < 3; i++) {
      const res = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: {} }) { deliveries { id } } }', {}, tenant.apiKey);
      expect(res.errors).toBeUndefined();
    }
    await eventually(async () => !live.apiKeyIdsInUse().includes(key.id), 10_000);
    for (const iterator of stuck) await expect(iterator.next()).rejects.toThrow(/stopped reading/);
    await subscribed(PER_KEY, () => collectWs(wsClient(key.apiKey)));
  });
});
