// A Server-Sent Events client that goes away while its deliveryUpdated
// subscription is being set up leaves nothing behind: not the subscription,
// not this process's LISTEN demand, not its live_listeners row (while one
// exists, every delivery change of every tenant is announced).
import { request } from 'node:http';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually } from '../helpers/receiver.js';

let hl: TestHookline;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
});
afterAll(() => hl?.stop());

/** Sends an SSE subscription request and drops the connection `afterMs` later. */
function subscribeAndLeave(apiKey: string, afterMs: number): Promise<void> {
  return new Promise((done) => {
    const body = JSON.stringify({ query: 'subscription { deliveryUpdated(deliveryId: "00000000-0000-4000-8000-000000000000") { id status } }' });
    const url = new URL(`${hl.url}/graphql`);
    const req = request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${apiKey}`, 'content-length': Buffer.byteLength(body) },
    });
    req.on('error', () => {});
    req.on('close', () => done());
    req.end(body);
    setTimeout(() => req.destroy(), afterMs);
  });
}

it('a client gone while its subscription is set up leaves no subscription, demand or listener row', async () => {
  const tenant = await hl.createTenant();
  // Gone at once, and at a few moments during the set-up (which waits for LISTEN).
  for (const afterMs of [0, 1, 1, 2, 3, 5, 8, 13]) await subscribeAndLeave(tenant.apiKey, afterMs);
  await eventually(async () => (await hl.metric('hookline_live_subscriptions')) === 0, 5_000);
  await eventually(async () => {
    const rows = await hl.dataSource.query(`select count(*)::int as n from live_listeners where channel = 'hookline_delivery_updates'`);
    return rows[0].n === 0;
  }, 5_000);
});
