// A client that sends its request slowly, or stops half-way (headers begun, or a 1 MiB body
// declared and partly sent), holds its connection and what it sent only until the request
// timeouts (10 s for the headers, 30 s for the whole request; here 0.5 s and 1 s): then it is
// answered 408 and cut off, with no key needed to be one. Answers take as long as they take:
// a Server-Sent Events stream outlives the request's time, as does an idle keep-alive connection.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, moreSubscribers } from '../helpers/live.js';

const TIMEOUTS = { headersMs: 500, requestMs: 1_000 };

let hl: TestHookline;
let tenant: { id: string; apiKey: string };

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { requestTimeouts: TIMEOUTS });
  tenant = await hl.createTenant();
});
afterAll(async () => {
  await hl?.stop();
});

/** Sends `head` on a raw connection, then nothing more; resolves with what the server wrote and when it closed. */
async function sendAndPause(head: string | Buffer): Promise<{ answer: string; closedAfterMs: number }> {
  const { hostname, port } = new URL(hl.url);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const started = Date.now();
  socket.write(head);
  let answer = '';
  socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
  socket.on('error', () => {}); // a reset is a way to be cut off too
  // Without the limits Node waits 300 s: given up on long before.
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 5_000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  socket.destroy();
  expect(closed, 'the server still held the connection after 5 s').toBe(true);
  return { answer, closedAfterMs: Date.now() - started };
}

describe('a client that stops sending', () => {
  it('is answered 408 and cut off once its body has taken longer than the request timeout', async () => {
    const head =
      `POST /graphql HTTP/1.1\r\nHost: ${new URL(hl.url).host}\r\ncontent-type: application/json\r\n` +
      `content-length: ${1024 * 1024}\r\n\r\n`;
    const { answer, closedAfterMs } = await sendAndPause(Buffer.concat([Buffer.from(head), Buffer.alloc(200_000, 0x20)]));
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(closedAfterMs).toBeGreaterThanOrEqual(TIMEOUTS.requestMs - 50);
    expect(closedAfterMs).toBeLessThan(TIMEOUTS.requestMs + 1_500);
  });

  it('is answered 408 and cut off once its headers have taken longer than the headers timeout', async () => {
    const { answer, closedAfterMs } = await sendAndPause(`POST /graphql HTTP/1.1\r\nHost: ${new URL(hl.url).host}\r\ncontent-type: application/json\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(closedAfterMs).toBeLessThan(TIMEOUTS.headersMs + 1_500);
  });
});

describe('what is not a slow request', () => {
  it('a Server-Sent Events stream goes on past the request timeout', async () => {
    const created = await hl.gql(
      'mutation { createWebhookSubscription(input: { url: "http://127.0.0.1:9/hook", events: ["test.event"] }) { subscription { id } } }',
      {},
      tenant.apiKey,
    );
    expect(created.errors).toBeUndefined();
    const subscribed = moreSubscribers(hl);
    const live = collectSse(hl.url, tenant.apiKey, { event: 'test.event' });
    await live.ready;
    await subscribed();
    await new Promise((r) => setTimeout(r, TIMEOUTS.requestMs + 1_000));
    const trigger = await hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { deliveries { id } } }', {}, tenant.apiKey);
    expect(trigger.errors).toBeUndefined();
    await live.waitFor((items) => items.some((d) => d.id === trigger.data.triggerEvent.deliveries[0].id), 5_000);
    expect(live.errors).toEqual([]);
    expect(live.closed).toBe(false);
    live.stop();
  });

  it('an idle keep-alive connection takes a request after longer than both timeouts', async () => {
    const { hostname, port } = new URL(hl.url);
    const socket = connect(Number(port), hostname);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    const request = `GET /healthz HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`;
    const answers = async (n: number) => {
      const deadline = Date.now() + 3_000;
      while ((answer.match(/HTTP\/1\.1 200 /g) ?? []).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return (answer.match(/HTTP\/1\.1 \d+ /g) ?? []);
    };
    socket.write(request);
    expect(await answers(1)).toEqual(['HTTP/1.1 200 ']);
    await new Promise((r) => setTimeout(r, TIMEOUTS.requestMs + 1_000));
    socket.write(request);
    expect(await answers(2)).toEqual(['HTTP/1.1 200 ', 'HTTP/1.1 200 ']);
    socket.destroy();
  });
});
