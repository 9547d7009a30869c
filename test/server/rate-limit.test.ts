// One tenant's burst cannot take the API from the others: each API key has a
// rate, and requests over it are RATE_LIMITED (429 over HTTP) and write nothing.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectWs } from '../helpers/live.js';
import { wsRequest } from '../helpers/ws.js';

let hl: TestHookline;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api', HOOKLINE_RATE_LIMIT: '1' }); // one token a second: the test does not race the refill
});
afterAll(() => hl?.stop());

const rest = (key: string) =>
  fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ event: 'test.event', payload: { n: 1 } }),
  });

it('limits each API key over REST and GraphQL, and no other key', async () => {
  const refusedBefore = await hl.metric('hookline_requests_rate_limited_total', { limit: 'api_key' });
  const busy = await hl.createTenant('Busy');
  const quiet = await hl.createTenant('Quiet');
  const answers = await Promise.all(Array.from({ length: 4 }, () => rest(busy.apiKey)));
  const limited = answers.filter((a) => a.status === 429);
  expect(answers.filter((a) => a.status === 202)).toHaveLength(1);
  expect(limited).toHaveLength(3);
  expect(limited[0]!.headers.get('retry-after')).toBe('1');
  expect((await limited[0]!.json()).error).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringContaining('1 requests per second') });
  const [{ n }] = await hl.dataSource.query('select count(*)::int as n from webhook_events where tenant_id = $1', [busy.id]);
  expect(n).toBe(1);

  // The same key over GraphQL, at once: still over its rate.
  const res = await fetch(`${hl.url}/graphql`, {
    method: 'POST',
    headers: { authorization: `Bearer ${busy.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ query: '{ viewer { id } }' }),
  });
  expect(res.status).toBe(429);
  expect((await res.json()).errors[0].extensions.code).toBe('RATE_LIMITED');

  // Another tenant is not affected.
  expect((await rest(quiet.apiKey)).status).toBe(202);
  // Each refusal is counted, as the key's; none as an address's.
  expect(await hl.metric('hookline_requests_rate_limited_total', { limit: 'api_key' })).toBe(refusedBefore + 4);
  expect(await hl.metric('hookline_requests_rate_limited_total', { limit: 'address' })).toBe(0);

  // A second later the key has its rate back.
  await new Promise((r) => setTimeout(r, 1_100));
  expect((await rest(busy.apiKey)).status).toBe(202);
});

it('over WebSocket, refuses the operation over the rate and keeps the socket and its other operations', async () => {
  const busy = await hl.createTenant('Busy over WebSocket');
  const client = hl.wsClient(busy.apiKey);
  let closed: unknown;
  client.on('closed', (event) => (closed = event));
  const live = collectWs(client); // takes the second's token
  const refused = await wsRequest(client, '{ viewer { id } }').then(
    () => undefined,
    (errors) => errors,
  );
  expect(refused?.[0]).toMatchObject({ extensions: { code: 'RATE_LIMITED' } });
  await new Promise((r) => setTimeout(r, 1_100));
  expect((await wsRequest(client, '{ viewer { id } }')).data).toEqual({ viewer: { id: expect.any(String) } });
  expect(closed).toBeUndefined();
  expect(live.closed).toBe(false);
  live.stop();
  await client.dispose();
});
