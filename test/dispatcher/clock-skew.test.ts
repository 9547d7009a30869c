// A worker whose clock is off: retries are due by the database's clock (claims compare with
// PostgreSQL's now()), so they come on the schedule, neither at once nor late.
import { afterEach, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { TRIGGER_EVENT } from '../helpers/operations.js';

const realNow = Date.now;
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  Date.now = realNow;
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

it.each([
  ['behind', -10 * 60_000],
  ['ahead of', 10 * 60_000],
])('a worker whose clock is 10 minutes %s the database retries on the schedule', { timeout: 30_000 }, async (_, offsetMs) => {
  // The process's clock (Date.now, which the dispatcher reads) is off from the start.
  Date.now = () => realNow.call(Date) + offsetMs;
  const hl: TestHookline = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '3s,5m' });
  cleanups.push(() => hl.stop());
  const receiver: Receiver = await startReceiver(() => ({ status: 500 }));
  cleanups.push(() => receiver.close());
  const { apiKey } = await hl.createTenant();
  await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url: receiver.url, events: ['test.event'] } },
    apiKey,
  );
  const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n: 1 } } }, apiKey);
  const id = res.data.triggerEvent.deliveries[0].id as string;
  await receiver.waitFor(1);
  const dueIn = async () => {
    const [row] = await hl.dataSource.query(
      `select attempts, extract(epoch from next_attempt_at - now())::float8 as "dueIn" from webhook_deliveries where id = $1`,
      [id],
    );
    return row as { attempts: number; dueIn: number };
  };
  // Once recorded: 3 s ± 20% from the attempt, which arrived `elapsed` seconds ago (both times
  // read from the same skewed clock, so their difference is true); 10 minutes off otherwise.
  const first = await eventually(async () => {
    const row = await dueIn();
    return row.attempts === 1 && { ...row, elapsed: (Date.now() - receiver.received[0]!.at) / 1000 };
  });
  expect(first.dueIn + first.elapsed).toBeGreaterThan(2.2);
  expect(first.dueIn + first.elapsed).toBeLessThan(3.8);
  await receiver.waitFor(2, 8_000);
  const second = await eventually(async () => {
    const row = await dueIn();
    return row.attempts === 2 && row;
  });
  expect(second.dueIn).toBeGreaterThan(4 * 60 - 5); // 5 m ± 20%
  expect(second.dueIn).toBeLessThan(6 * 60);
  expect(receiver.received).toHaveLength(2);
});
