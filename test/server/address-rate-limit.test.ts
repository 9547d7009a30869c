// What comes without a valid API key (no key, a malformed header, a token that names no key)
// counts against the client address's rate: nobody can make the API answer introspection or
// look keys up in the database without end. Valid keys and the admin token do not count.
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { addressKey } from '../../src/auth/rate-limit.js';
import { WS_RATE_LIMITED, WS_RATE_LIMITED_REASON } from '../../src/server/app.js';
import { ADMIN_TOKEN, startTestHookline, type TestHookline } from '../helpers/hookline.js';

// One a second: a refill is a second away, far from what the checks after a burst take on a busy machine.
const RATE = 1;
let hl: TestHookline;
let apiKey: string;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_RATE_LIMIT_ANONYMOUS: String(RATE) });
  apiKey = (await hl.createTenant('Known')).apiKey;
});
afterAll(() => hl?.stop());

/** A GraphQL POST from a loopback address of the caller's choice (127.0.0.1 unless said). */
function graphql(query: string, authorization?: string, localAddress = '127.0.0.1'): Promise<{ status: number; retryAfter?: string; body: any }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ query });
    const req = request(
      `${hl.url}/graphql`,
      {
        method: 'POST',
        localAddress,
        headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const rest = (authorization: string | undefined, localAddress: string) =>
  new Promise<{ status: number; body: any }>((resolve, reject) => {
    const req = request(`${hl.url}/api/v1/tenant/webhooks/deliveries`, { localAddress, headers: authorization ? { authorization } : {} }, (res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });

/** Uses up the address's second of requests, with tokens that name no key. */
async function exhaust(localAddress: string): Promise<void> {
  const answers = await Promise.all(Array.from({ length: RATE }, (_, i) => graphql('{ viewer { name } }', `Bearer hkl_nosuchkey${i}${localAddress}`, localAddress)));
  for (const answer of answers) expect(answer.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
}

describe('requests without a valid API key', () => {
  it('are limited per address over GraphQL and REST, named RATE_LIMITED with a Retry-After, and counted', async () => {
    const refusedBefore = await hl.metric('hookline_requests_rate_limited_total', { limit: 'address' });
    await exhaust('127.0.0.2');
    // A new token is not looked up any more, nor is a request with no key answered.
    for (const authorization of ['Bearer hkl_yetanotherkey', undefined, 'Basic abc']) {
      const answer = await graphql('{ __typename }', authorization, '127.0.0.2');
      expect(answer.status).toBe(429);
      expect(answer.retryAfter).toBe('1');
      expect(answer.body.errors[0]).toMatchObject({
        extensions: { code: 'RATE_LIMITED' },
        message: `rate limit of ${RATE} requests per second for requests without a valid API key and key lookups from this address exceeded; retry after 1 s`,
      });
    }
    const refused = await rest('Bearer hkl_nosuchkey', '127.0.0.2');
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('RATE_LIMITED');
    expect(await hl.metric('hookline_requests_rate_limited_total', { limit: 'address' })).toBe(refusedBefore + 4);
  });

  it('count whatever their document: one that fails to parse or validate is counted before it is read', async () => {
    // The limit was asked in the GraphQL context, which Yoga builds after parsing and
    // validating: invalid documents without a key were never counted (316 a second from one
    // address in a review, each costing 3 ms of the process's time).
    const answers = [];
    for (let i = 0; i < RATE + 3; i++) answers.push(await graphql(`{ ${'nope '.repeat(500)}}`, i % 2 ? undefined : `Bearer hkl_madeup${i}`, '127.0.0.19'));
    expect(answers.slice(0, RATE).map((a) => a.status)).not.toContain(429);
    expect(answers.slice(RATE).map((a) => a.status)).toEqual(Array(3).fill(429));
    expect(answers[RATE]!.body.errors[0].extensions.code).toBe('RATE_LIMITED');
  });

  it('count a lookup before it is made: many tokens at once get no more lookups than the rate', async () => {
    const answers = await Promise.all(Array.from({ length: RATE * 5 }, (_, i) => graphql('{ viewer { name } }', `Bearer hkl_burst${i}`, '127.0.0.8')));
    const codes = answers.map((answer) => answer.body.errors?.[0]?.extensions?.code);
    expect(codes.filter((code) => code === 'UNAUTHENTICATED')).toHaveLength(RATE);
    expect(codes.filter((code) => code === 'RATE_LIMITED')).toHaveLength(RATE * 4);
  });

  it('give back what a lookup took when it finds a valid key: new valid keys do not use up the rate', async () => {
    const keys = [];
    for (let i = 0; i < RATE + 2; i++) keys.push((await hl.createTenant(`New ${i}`)).apiKey);
    for (const [i, key] of keys.entries()) {
      expect((await graphql('{ viewer { name } }', `Bearer ${key}`, '127.0.0.9')).body).toEqual({ data: { viewer: { name: `New ${i}` } } });
    }
    // And the address still has its whole rate for requests without a key.
    const anonymous = await Promise.all(Array.from({ length: RATE }, () => graphql('{ __typename }', undefined, '127.0.0.9')));
    expect(anonymous.map((answer) => answer.status)).toEqual(Array(RATE).fill(200));
  });

  it('leave other addresses, keys in use and the admin token alone', async () => {
    // The key in use: this process knows it (for a minute).
    expect((await graphql('{ viewer { name } }', `Bearer ${apiKey}`, '127.0.0.3')).status).toBe(200);
    await exhaust('127.0.0.3');
    // Another address has its own rate.
    expect((await graphql('{ __typename }', undefined, '127.0.0.4')).body).toEqual({ data: { __typename: 'Query' } });
    // The key in use and the admin token still work from the address.
    expect((await graphql('{ viewer { name } }', `Bearer ${apiKey}`, '127.0.0.3')).body).toEqual({ data: { viewer: { name: 'Known' } } });
    expect((await graphql('{ __typename }', `Bearer ${ADMIN_TOKEN}`, '127.0.0.3')).status).toBe(200);
    expect((await rest(`Bearer ${apiKey}`, '127.0.0.3')).status).toBe(200);
  });

  it('while over it, have a key this process does not know yet wait too: a lookup is what the rate guards', async () => {
    const fresh = (await hl.createTenant('Fresh')).apiKey;
    await exhaust('127.0.0.6');
    expect((await graphql('{ viewer { name } }', `Bearer ${fresh}`, '127.0.0.6')).status).toBe(429);
    expect((await graphql('{ viewer { name } }', `Bearer ${fresh}`, '127.0.0.7')).body).toEqual({ data: { viewer: { name: 'Fresh' } } });
  });

  it('get their rate back as time passes', async () => {
    await exhaust('127.0.0.5');
    expect((await graphql('{ __typename }', undefined, '127.0.0.5')).status).toBe(429);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await graphql('{ __typename }', undefined, '127.0.0.5')).body).toEqual({ data: { __typename: 'Query' } });
  });

  it('count each message of a WebSocket not yet accepted, and cut off one that sends more than a connection_init needs', async () => {
    // graphql-ws answers a ping, before connection_init too, with its payload: 5 sockets that
    // sent 1 MiB pings and never read made a process hold 1.7 GB, none of it counted.
    const open = () =>
      new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(`${hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws', { localAddress: '127.0.0.1' });
        socket.on('open', () => resolve(socket));
        socket.on('error', reject);
      });
    const closeOf = (socket: WebSocket) => new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
    const big = await open();
    const bigClosed = closeOf(big);
    big.send(JSON.stringify({ type: 'ping', payload: { x: 'x'.repeat(100_000) } }));
    expect(await bigClosed).toBe(1006); // terminated, no close frame
    // Small pings count as requests without a key: past the rate, 4503 as for a connection.
    await exhaust('127.0.0.1');
    const chatty = await open();
    const chattyClosed = closeOf(chatty);
    chatty.send(JSON.stringify({ type: 'ping' }));
    expect(await chattyClosed).toBe(WS_RATE_LIMITED);
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // the rate back, for the tests after
  });

  it('close a WebSocket with 4503 and RATE_LIMITED once the address has used its rate (a code graphql-ws retries)', async () => {
    // ws connects from 127.0.0.1: the address of the test's other clients, exhausted here.
    await exhaust('127.0.0.1');
    const socket = new WebSocket(`${hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
    const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: 'Bearer hkl_nosuchkey' } })));
    expect(await closed).toEqual({ code: WS_RATE_LIMITED, reason: WS_RATE_LIMITED_REASON });
    // graphql-ws's own client tries again on that code (on 4429 it would give up at once); the
    // address is still over its rate for both tries.
    let attempts = 0;
    const client = hl.wsClient('hkl_nosuchkey', { lazy: true, retryAttempts: 1, retryWait: async () => {}, on: { connecting: () => attempts++ } });
    const failed = await new Promise<unknown>((resolve) => client.subscribe({ query: '{ __typename }' }, { next: () => {}, error: resolve, complete: () => resolve('complete') }));
    expect(failed).toMatchObject({ code: WS_RATE_LIMITED });
    expect(attempts).toBe(2);
    await client.dispose();
  });
});

describe('behind trusted proxies (HOOKLINE_TRUSTED_PROXIES)', () => {
  let proxied: TestHookline;
  beforeAll(async () => {
    proxied = await startTestHookline({ HOOKLINE_RATE_LIMIT_ANONYMOUS: String(RATE), HOOKLINE_TRUSTED_PROXIES: '127.0.0.1, 10.0.0.0/8' });
  });
  afterAll(() => proxied?.stop());

  const via = (localAddress: string, forwardedFor?: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request(`${proxied.url}/graphql?query=%7B__typename%7D`, { localAddress, headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {} }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
  const burst = (localAddress: string, forwardedFor?: string) => Promise.all(Array.from({ length: RATE }, () => via(localAddress, forwardedFor)));

  it("count a trusted proxy's requests against the client it names, the last address not a proxy", async () => {
    // A client's own X-Forwarded-For (left of what the proxies appended) is not believed.
    expect(await burst('127.0.0.1', 'spoofed-by-client, 203.0.113.5, 10.1.2.3')).toEqual(Array(RATE).fill(200));
    expect(await via('127.0.0.1', 'something-else, 203.0.113.5')).toBe(429);
    // Another client behind the same proxy has its own rate.
    expect(await via('127.0.0.1', '203.0.113.6')).toBe(200);
  });

  it('read an entry with a port or brackets as its address, and count what is no address against the proxy', async () => {
    // A new port each time is the same client.
    expect(await Promise.all(Array.from({ length: RATE }, (_, i) => via('127.0.0.1', `198.51.100.9:${50_000 + i}`)))).toEqual(Array(RATE).fill(200));
    expect(await via('127.0.0.1', '198.51.100.9:61000')).toBe(429);
    expect(await via('127.0.0.1', '198.51.100.9')).toBe(429);
    expect(await Promise.all(Array.from({ length: RATE }, (_, i) => via('127.0.0.1', `[2001:db8::${i + 1}]:443`)))).toEqual(Array(RATE).fill(200));
    expect(await via('127.0.0.1', '[2001:db8::99]:8443')).toBe(429); // the same /64
    // Garbage names no client: it is the proxy's own request (10.9.9.9 here), with the proxy's rate.
    expect(await Promise.all(Array.from({ length: RATE }, (_, i) => via('127.0.0.1', `garbage-${i}, 10.9.9.9`)))).toEqual(Array(RATE).fill(200));
    expect(await via('127.0.0.1', 'other-garbage, 10.9.9.9')).toBe(429);
  });

  it('ignore X-Forwarded-For from an address that is no trusted proxy', async () => {
    expect(await burst('127.0.0.2', '203.0.113.7')).toEqual(Array(RATE).fill(200));
    // Counted against 127.0.0.2 itself, whatever client it names.
    expect(await via('127.0.0.2', '203.0.113.8')).toBe(429);
  });
});

describe('the address a request counts against', () => {
  it('is an IPv4 address as it is, also when mapped into IPv6', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it("is an IPv6 address's /64, which one host can pick any address of", () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe(addressKey('2001:db8:1:2:ffff:1:2:3'));
    expect(addressKey('2001:db8:1:2::1')).not.toBe(addressKey('2001:db8:1:3::1'));
  });
});
