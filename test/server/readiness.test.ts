// /readyz says whether the process can serve: 503 when its database does not
// answer, without telling the caller (unauthenticated) where the database is, and
// within seconds when the database hangs rather than refuses; 503 too while it stops.
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDataSource } from '../../src/db/data-source.js';
import { poolOf } from '../../src/db/query.js';
import { READINESS_REUSE_MS, READINESS_TIMEOUT_MS, SHUTDOWN_REQUESTS_MS } from '../../src/server/app.js';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { collectSse, moreSubscribers } from '../helpers/live.js';
import { startReceiver } from '../helpers/receiver.js';
import { silenceableProxy } from '../helpers/silent-proxy.js';
import { nextClose } from '../helpers/ws.js';

let hl: TestHookline;
let admin: pg.Client;
let database: string;

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  admin = new pg.Client({ connectionString: hl.databaseUrl.replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  database = new URL(hl.databaseUrl).pathname.slice(1);
});
afterAll(async () => {
  await admin?.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`).catch(() => {});
  await admin?.end();
  await hl?.stop();
});

/** POSTs a GraphQL query as `apiKey`, the whole response kept (its status and headers). */
function postGraphql(base: string, apiKey: string, query: string, timeoutMs = 30_000): Promise<Response> {
  return fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ query }),
    signal: AbortSignal.timeout(timeoutMs),
  });
}

it("answers 503 to a query whose own read finds the database out of service, its key still known (LISTEN holds on; run first, before a test cuts it)", async () => {
  const { apiKey } = await hl.createTenant();
  expect((await hl.gql('{ viewer { id } }', {}, apiKey)).errors).toBeUndefined();
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections false`);
  try {
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name <> 'hookline-live'`, [database]);
    // viewer reads the tenant's name: a field's read, past the key's check (see the test below for one failing before).
    const read = await postGraphql(hl.url, apiKey, '{ viewer { id name } }');
    expect(read.status).toBe(503);
    expect(read.headers.get('retry-after')).toBe('5');
    expect((await read.json()).errors).toEqual([
      { message: 'the database cannot be reached for now: try again shortly', extensions: { code: 'INTERNAL_SERVER_ERROR' }, path: ['viewer'], locations: [{ line: 1, column: 3 }] },
    ]);
    // A REST request whose body was read in full is answered too (Node destroys such a request,
    // and it was taken for a client gone: never answered).
    const posted = await fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'test.event', payload: {} }),
      signal: AbortSignal.timeout(15_000),
    });
    expect(posted.status).toBe(503);
    expect(await posted.json()).toEqual({ error: { code: 'INTERNAL_SERVER_ERROR', message: 'the database cannot be reached for now: try again shortly' } });
  } finally {
    await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`);
  }
});

it('answers 503 while the database does not answer, naming no address, and 200 once it does', async () => {
  expect((await fetch(`${hl.url}/readyz`)).status).toBe(200);
  const { apiKey } = await hl.createTenant();
  expect((await hl.gql('{ viewer { id } }', {}, apiKey)).errors).toBeUndefined(); // its key known to the process now
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections false`);
  await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1', [database]);
  await new Promise((r) => setTimeout(r, READINESS_REUSE_MS + 200)); // the last answer stands that long
  const down = await fetch(`${hl.url}/readyz`);
  const body = await down.json();
  expect(down.status).toBe(503);
  expect(body).toEqual({ status: 'unavailable', error: 'the database does not answer' });
  // A GraphQL call whose key must be looked up fails before GraphQL runs: answered in GraphQL's shape.
  const call = await postGraphql(hl.url, 'hkl_not-looked-up-before-0123456789', '{ viewer { id } }');
  // 503 and when to come back, as for every request the database's absence fails: not 500 "unexpected error".
  const unavailable = { message: 'the database cannot be reached for now: try again shortly', extensions: { code: 'INTERNAL_SERVER_ERROR' } };
  expect(call.status).toBe(503);
  expect(call.headers.get('retry-after')).toBe('5');
  expect(await call.json()).toEqual({ errors: [unavailable] });
  // REST alike, in its own shape.
  const rest = await fetch(`${hl.url}/api/v1/tenant/webhooks/deliveries`, { headers: { authorization: `Bearer ${apiKey}` } });
  expect(rest.status).toBe(503);
  expect(rest.headers.get('retry-after')).toBe('5');
  expect(await rest.json()).toEqual({ error: { code: 'INTERNAL_SERVER_ERROR', message: unavailable.message } });
  // A WebSocket's key cannot be looked up either: closed with 4503, which graphql-ws's client
  // retries (4500, which it never retries, before).
  const socket = hl.wsClient(apiKey);
  const closed = await nextClose(socket);
  expect(closed).toEqual({ code: 4503, reason: `INTERNAL_SERVER_ERROR: ${unavailable.message}` });
  await socket.dispose();
  // The wall clock set back an hour (NTP, a VM resumed) does not keep the last answer an hour.
  const realNow = Date.now;
  Date.now = () => realNow() - 3_600_000;
  try {
    await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`);
    for (let i = 0; i < 50 && (await fetch(`${hl.url}/readyz`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await fetch(`${hl.url}/readyz`)).status).toBe(200);
  } finally {
    Date.now = realNow;
  }
});

it("answers 503, not 429, to a client past the address's limit while key lookups meet the database's absence (one retrying through an outage)", async () => {
  // The limit of requests without a valid key (and of key lookups) from one address, 5 a second here.
  const databaseUrl = await createTestDatabase();
  const limited = await startTestHookline({ HOOKLINE_ROLE: 'api', HOOKLINE_RATE_LIMIT_ANONYMOUS: '5' }, { databaseUrl });
  const name = new URL(databaseUrl).pathname.slice(1);
  try {
    const { apiKey } = await limited.createTenant();
    await admin.query(`alter database ${pg.escapeIdentifier(name)} allow_connections false`);
    await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1', [name]);
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await postGraphql(limited.url, apiKey, '{ viewer { id } }')).status);
    expect(new Set(statuses)).toEqual(new Set([503]));
  } finally {
    await admin.query(`alter database ${pg.escapeIdentifier(name)} allow_connections true`);
    await limited.stop();
  }
});

it('answers 503 within seconds while the database hangs (stopped, its host lost), and 200 once it answers again', { timeout: 60_000 }, async () => {
  const proxy = await silenceableProxy(new URL(await createTestDatabase()));
  const hanging = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: proxy.url });
  try {
    expect((await fetch(`${hanging.url}/readyz`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, READINESS_REUSE_MS + 100)); // past the answer's reuse
    proxy.silence(); // connections open and new ones alike get no answer, and are not closed
    const pool = poolOf(hanging.dataSource);
    // Probes in numbers share one round trip: one connection waits on the silent database, and
    // the pool stays free for the API.
    const probes = Array.from({ length: 20 }, () => fetch(`${hanging.url}/readyz`, { signal: AbortSignal.timeout(15_000) }));
    await new Promise((r) => setTimeout(r, 500));
    expect(pool.totalCount - pool.idleCount, 'connections waiting for the silent database').toBe(1);
    expect((await Promise.all(probes)).map((r) => r.status)).toEqual(Array(20).fill(503));
    for (const _ of [1, 2]) {
      const asked = Date.now();
      const down = await fetch(`${hanging.url}/readyz`, { signal: AbortSignal.timeout(15_000) });
      expect(down.status).toBe(503);
      expect(await down.json()).toEqual({ status: 'unavailable', error: 'the database does not answer' });
      expect(Date.now() - asked).toBeLessThan(READINESS_TIMEOUT_MS + 2_000);
    }
    proxy.answer(); // new connections work; the silenced ones stay silent
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = (await fetch(`${hanging.url}/readyz`, { signal: AbortSignal.timeout(15_000) })).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(200);
    expect(pool.totalCount - pool.idleCount, 'no connection is left checked out on a check that hung').toBe(0);
  } finally {
    await proxy.close(); // what still hangs on the silenced connections fails, so the stop can finish
    await hanging.stop();
  }
});

it("answers 503 to the requests whose statements meet a database gone silent, once the watch drops their connections", { timeout: 60_000 }, async () => {
  const proxy = await silenceableProxy(new URL(await createTestDatabase()));
  const silent = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: proxy.url, databaseWatchMs: 1_500 });
  try {
    const { apiKey } = await silent.createTenant();
    // Its key known, and both pools' connections made: a read (the API's pool) and a trigger (the tenant sessions').
    const read = () => postGraphql(silent.url, apiKey, '{ deliveries(first: 1) { edges { node { id } } } }');
    const trigger = () => postGraphql(silent.url, apiKey, 'mutation { triggerEvent(input: { event: "test.event", data: {} }) { event { id } } }');
    expect((await read()).status).toBe(200);
    expect((await trigger()).status).toBe(200);
    proxy.silence();
    // At once, each on a connection its pool already has (the key and the event type's catalog
    // entry known): dropped after 1.5 s (looked at every 375 ms), not when TCP gives the connection
    // up (minutes). A trigger whose connection is lost writes again on a new one (the first may
    // have committed), which gives up connecting after 10 s.
    const asked = Date.now();
    const took = async (answer: Promise<Response>) => {
      const res = await answer;
      return { status: res.status, retryAfter: res.headers.get('retry-after'), ms: Date.now() - asked };
    };
    const [triggered, readen] = await Promise.all([took(trigger()), took(read())]);
    expect(triggered).toMatchObject({ status: 503, retryAfter: '5' });
    expect(readen).toMatchObject({ status: 503, retryAfter: '5' });
    // 1.5 s unanswered, then a probe that gets no answer in 1.5 s either.
    expect(readen.ms).toBeLessThan(8_000);
    expect(triggered.ms).toBeLessThan(20_000);
  } finally {
    await proxy.close();
    await silent.stop();
  }
});

it("drops a statement's connection lost on the way while the database answers (its session idle), and answers 503", { timeout: 60_000 }, async () => {
  const proxy = await silenceableProxy(new URL(await createTestDatabase()));
  const lost = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl: proxy.url, databaseWatchMs: 1_000 });
  try {
    const { apiKey } = await lost.createTenant();
    const read = () => lost.gql('{ webhookSubscriptions(first: 5) { edges { node { id } } } }', {}, apiKey);
    expect((await read()).errors).toBeUndefined();
    // The API pool's connections go quiet (a firewall dropping them); the database, and new connections, are fine.
    expect(proxy.silenceConnectionsOf('hookline-api')).toBeGreaterThan(0);
    const asked = Date.now();
    const answer = await postGraphql(lost.url, apiKey, '{ webhookSubscriptions(first: 5) { edges { node { id } } } }', 20_000);
    expect(answer.status).toBe(503);
    expect(Date.now() - asked).toBeLessThan(6_000);
    // Each of the pool's quiet connections goes so, and requests get new ones, and their answers.
    let errors: unknown = 'not asked';
    for (let i = 0; i < 25 && errors !== undefined; i++) errors = (await read()).errors;
    expect(errors).toBeUndefined();
  } finally {
    await proxy.close();
    await lost.stop();
  }
});

it('leaves a statement that is only slow (a lock wait past the watch) to finish, and answers it', { timeout: 60_000 }, async () => {
  const databaseUrl = await createTestDatabase();
  const slow = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl, databaseWatchMs: 1_000 });
  const locker = new pg.Client({ connectionString: databaseUrl });
  await locker.connect();
  try {
    const { apiKey } = await slow.createTenant();
    const list = () => slow.gql('{ webhookSubscriptions(first: 5) { edges { node { id } } } }', {}, apiKey);
    expect((await list()).errors).toBeUndefined();
    await locker.query('begin; lock table webhook_subscriptions in access exclusive mode');
    const listed = list();
    await new Promise((r) => setTimeout(r, 4_000)); // past the watch, several looks
    await locker.query('commit');
    const answer = await listed;
    expect(answer.errors).toBeUndefined();
    expect(answer.data.webhookSubscriptions.edges).toEqual([]);
  } finally {
    await locker.end();
    await slow.stop();
  }
});

it('an API data source gives up connecting to a server that accepts and never answers', { timeout: 30_000 }, async () => {
  const silent = net.createServer(() => {}); // accepts, says nothing
  const sockets = new Set<net.Socket>();
  silent.on('connection', (socket) => sockets.add(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as net.AddressInfo;
  const source = createDataSource({ url: `postgres://hookline:x@127.0.0.1:${port}/hookline`, poolSize: 1 });
  try {
    const started = Date.now();
    const outcome = await Promise.race([source.initialize().then(() => 'connected', (error: Error) => error.message), new Promise((r) => setTimeout(() => r('still waiting'), 20_000))]);
    expect(outcome).toMatch(/timeout/i);
    expect(Date.now() - started).toBeLessThan(15_000);
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});

/**
 * An `all` process whose dispatcher has one attempt in flight, its answer held until `release()`
 * (so that the process's stop waits for it).
 */
async function withAttemptInFlight() {
  const stopping = await startTestHookline();
  let release!: () => void;
  const held = new Promise<void>((done) => (release = done));
  const receiver = await startReceiver(async () => {
    await held;
    return { status: 204 };
  });
  const { apiKey } = await stopping.createTenant();
  const rest = (path: string, body: unknown) =>
    fetch(`${stopping.url}/api/v1/tenant/webhooks/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  expect((await rest('subscriptions', { event: 'test.event', url: receiver.url })).status).toBe(201);
  expect((await rest('deliveries', { event: 'test.event', payload: {} })).status).toBe(202);
  await receiver.waitFor(1);
  return { stopping, apiKey, release, receiver };
}

it('answers 503 "stopping" from the moment the process starts to stop, while its deliveries in flight finish', { timeout: 60_000 }, async () => {
  const { stopping, release, receiver } = await withAttemptInFlight();
  try {
    expect((await fetch(`${stopping.url}/readyz`)).status).toBe(200);
    const stopped = stopping.stop();
    const during = await fetch(`${stopping.url}/readyz`);
    expect(during.status).toBe(503);
    expect(await during.json()).toEqual({ status: 'stopping' });
    // Served on a keep-alive connection, which the answer says it closes: the client sends no more on it.
    expect(during.headers.get('connection')).toBe('close');
    release();
    await stopped;
  } finally {
    release();
    await stopping.stop();
    await receiver.close();
  }
});

it('a request in flight as the process starts to stop gets its whole answer, with Connection: close, however long the stop takes', { timeout: 60_000 }, async () => {
  const stopping = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  const holder = new pg.Client({ connectionString: stopping.databaseUrl });
  await holder.connect();
  try {
    const tenant = await stopping.createTenant();
    // The tenant's row held: creating an API key (its row refers to the tenant) waits for it.
    await holder.query('begin');
    await holder.query('select from tenants where id = $1 for update', [tenant.id]);
    const call = fetch(`${stopping.url}/graphql`, {
      method: 'POST',
      // urql's default, which accepts an event stream for any operation (answered JSON here).
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed',
        authorization: `Bearer ${tenant.apiKey}`,
      },
      body: JSON.stringify({ query: 'mutation { createApiKey(name: "during-stop") { id apiKey } }' }),
    });
    const settled = { done: false };
    void call.finally(() => (settled.done = true)).catch(() => {});
    await new Promise((r) => setTimeout(r, 500));
    expect(settled.done).toBe(false);
    const stopped = stopping.stop();
    await new Promise((r) => setTimeout(r, 3_000)); // longer than a stopping server used to wait
    await holder.query('commit');
    const answer = await call;
    expect(answer.status).toBe(200);
    expect(answer.headers.get('connection')).toBe('close');
    const created = (await answer.json()) as { data: { createApiKey: { id: string; apiKey: string } } };
    expect(created.data.createApiKey.apiKey).toMatch(/^hkl_/);
    await stopped;
    const [row] = (await holder.query('select name from api_keys where id = $1', [created.data.createApiKey.id])).rows;
    expect(row).toEqual({ name: 'during-stop' });
  } finally {
    await holder.query('rollback').catch(() => {});
    await holder.end();
    await stopping.stop();
  }
});

it('a stopping process ends its Server-Sent Events streams, as its WebSockets, rather than wait for them', { timeout: 60_000 }, async () => {
  const stopping = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  try {
    const { apiKey } = await stopping.createTenant();
    const subscribed = moreSubscribers(stopping);
    const stream = collectSse(stopping.url, apiKey);
    await stream.ready;
    await subscribed();
    const started = Date.now();
    await stopping.stop();
    expect(Date.now() - started).toBeLessThan(SHUTDOWN_REQUESTS_MS / 2);
    await stream.waitFor(() => stream.closed, 5_000);
  } finally {
    await stopping.stop();
  }
});

it('a Server-Sent Events stream opened while the process stops is ended with the others', { timeout: 60_000 }, async () => {
  const { stopping, apiKey, release, receiver } = await withAttemptInFlight();
  try {
    const stopped = stopping.stop();
    expect((await fetch(`${stopping.url}/readyz`)).status).toBe(503);
    const subscribed = moreSubscribers(stopping);
    const stream = collectSse(stopping.url, apiKey);
    await stream.ready;
    await subscribed();
    release();
    const started = Date.now();
    await stopped;
    expect(Date.now() - started).toBeLessThan(SHUTDOWN_REQUESTS_MS / 2);
    await stream.waitFor(() => stream.closed, 5_000);
  } finally {
    release();
    await stopping.stop();
    await receiver.close();
  }
});

it('a Server-Sent Events request still being read as the process stops is ended once it turns out a stream', { timeout: 60_000 }, async () => {
  const stopping = await startTestHookline({ HOOKLINE_ROLE: 'api' });
  const { apiKey } = await stopping.createTenant();
  const body = JSON.stringify({ query: 'subscription { deliveryUpdated { id status } }' });
  const socket = net.connect(Number(new URL(stopping.url).port), '127.0.0.1');
  let answer = '';
  socket.on('data', (chunk) => (answer += chunk));
  const ended = new Promise<void>((done) => socket.on('close', () => done()));
  await new Promise<void>((done) => socket.once('connect', () => done()));
  socket.write(
    `POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${apiKey}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
  );
  await new Promise((r) => setTimeout(r, 200));
  const started = Date.now();
  const stopped = stopping.stop();
  await new Promise((r) => setTimeout(r, 300));
  socket.write(body.slice(10));
  await stopped;
  expect(Date.now() - started).toBeLessThan(SHUTDOWN_REQUESTS_MS / 2);
  await ended;
  expect(answer).toMatch(/^HTTP\/1\.1 200/);
  expect(answer.toLowerCase()).toContain('content-type: text/event-stream');
});
