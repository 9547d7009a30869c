// The API's watchdog (watchStatements) drops a statement's connection only when the database
// gives no answer or the statement's session no longer runs it: a slow statement is left alone,
// also when the probe itself is refused (the server full), and a statement sent after the one
// found overdue is never taken for it. (A silent database and a lost connection: readiness.test.ts.)
import net from 'node:net';
import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import { watchStatements } from '../../src/db/query.js';
import { createTestDatabase } from '../helpers/database.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A database, a login role of its own (non-superuser, with `limit` connections) and a role it may SET. */
async function setUp(limit?: number, settings = '') {
  const url = await createTestDatabase();
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  cleanups.push(() => admin.end());
  const user = `watch_${Math.random().toString(36).slice(2, 8)}`;
  await admin.query(`create role ${user} login password 'pw' ${limit ? `connection limit ${limit}` : ''}`);
  await admin.query(`create role ${user}_t nologin; grant ${user}_t to ${user}`);
  await admin.query(`create table t_${user} (id int); grant all on t_${user} to ${user}, ${user}_t`);
  if (settings) await admin.query(`alter role ${user} ${settings}`);
  const asUser = new URL(url);
  asUser.username = user;
  asUser.password = 'pw';
  const pool = new pg.Pool({ connectionString: asUser.toString(), max: 2 });
  pool.on('error', () => {});
  cleanups.push(() => pool.end());
  const drops: string[] = [];
  const stop = watchStatements(pool, 1_000, { databaseUrl: asUser.toString(), onDrop: (ms, why) => drops.push(`${ms} ${why}`) });
  cleanups.push(stop);
  const client = async () => {
    const c = await pool.connect();
    c.on('error', () => {});
    cleanups.push(() => c.release(true));
    return c;
  };
  return { admin, user, pool, drops, client };
}

const outcome = (query: Promise<unknown>) => query.then(() => 'answered', (error: Error) => `failed: ${error.message}`);

it('leaves slow statements of a non-superuser alone: in a role it SET, a sleep and a lock wait in a transaction past the watch', { timeout: 30_000 }, async () => {
  const { admin, user, drops, client } = await setUp();
  const c = await client();
  await c.query(`set role ${user}_t`);
  expect(await outcome(c.query('select pg_sleep(2.5)'))).toBe('answered');
  await admin.query(`begin; lock table t_${user} in access exclusive mode`);
  await c.query('begin');
  await c.query('select 1');
  const waiting = outcome(c.query(`select * from t_${user}`));
  await sleep(2_500);
  await admin.query('commit');
  expect(await waiting).toBe('answered');
  await c.query('commit');
  expect(drops).toEqual([]);
});

it('leaves a slow statement alone when the probe is refused for the connection limit: the database answers', { timeout: 30_000 }, async () => {
  const { drops, client } = await setUp(2);
  const a = await client();
  await client(); // the role's second and last connection
  expect(await outcome(a.query('select pg_sleep(2.5)'))).toBe('answered');
  expect(drops).toEqual([]);
});

it("leaves a slow statement alone when its session's state cannot be seen (track_activities off: 'disabled')", { timeout: 30_000 }, async () => {
  const { drops, client } = await setUp(undefined, 'set track_activities = off');
  const c = await client();
  expect(await outcome(c.query('select pg_sleep(2.5)'))).toBe('answered');
  expect(drops).toEqual([]);
});

it('does not end the process when the probe cannot even be made (an sslrootcert file gone), and drops nothing', { timeout: 30_000 }, async () => {
  const { pool } = await setUp();
  const drops: string[] = [];
  const badUrl = new URL((pool as unknown as { options: { connectionString: string } }).options.connectionString);
  badUrl.searchParams.set('sslrootcert', '/nonexistent/hookline-watch-ca.pem');
  badUrl.searchParams.set('sslmode', 'prefer');
  cleanups.push(watchStatements(pool, 1_000, { databaseUrl: badUrl.toString(), onDrop: (ms, why) => drops.push(`${ms} ${why}`) }));
  expect(await outcome(pool.query('select pg_sleep(2)'))).toBe('answered');
  expect(drops).toEqual([]);
});

it('never drops a statement sent after the one found overdue ended, while the probe was on its way', { timeout: 30_000 }, async () => {
  const { drops, client } = await setUp();
  // The probe's question takes 0.7 s to reach the server, its answer 0.8 s to come back (network
  // latency, made long): its snapshot falls between the two statements, and its answer after the second is sent.
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  (pg.Client.prototype as { query: unknown }).query = function (this: { connectionParameters?: { application_name?: string } }, ...args: unknown[]) {
    if (this.connectionParameters?.application_name !== 'hookline-watch') return query.apply(this, args);
    return sleep(700).then(async () => {
      const result = await query.apply(this, args);
      await sleep(800);
      return result;
    });
  };
  cleanups.push(() => ((pg.Client.prototype as { query: unknown }).query = query));
  const c = await client();
  await c.query('begin');
  await c.query('select pg_sleep(1.4)'); // overdue from 1 s (a look every 0.25 s finds it); the probe's snapshot comes after it ended
  await sleep(800); // the session idle in its transaction meanwhile
  expect(await outcome(c.query('select pg_sleep(1)'))).toBe('answered');
  await c.query('commit');
  expect(drops).toEqual([]);
});

/** A TCP proxy to `target` whose server-to-client bytes go at `bytesPerSecond` (a slow link, a buffering forwarder). */
async function slowLink(target: URL, bytesPerSecond: number): Promise<string> {
  const server = net.createServer((down) => {
    const up = net.connect(Number(target.port), target.hostname);
    down.pipe(up);
    const queue: Buffer[] = [];
    up.on('data', (chunk: Buffer) => queue.push(chunk));
    const pace = setInterval(() => {
      for (let budget = bytesPerSecond / 20; budget > 0 && queue.length; ) {
        const chunk = queue[0]!;
        const n = Math.min(budget, chunk.length);
        down.write(chunk.subarray(0, n));
        if (n === chunk.length) queue.shift();
        else queue[0] = chunk.subarray(n);
        budget -= n;
      }
    }, 50);
    const end = () => {
      clearInterval(pace);
      up.destroy();
      down.destroy();
    };
    down.on('close', end).on('error', end);
    up.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  const via = new URL(target);
  via.hostname = '127.0.0.1';
  via.port = String((server.address() as net.AddressInfo).port);
  return via.toString();
}

it('leaves a statement alone whose session has just finished, its large answer still on the way', { timeout: 30_000 }, async () => {
  const via = await slowLink(new URL(await createTestDatabase()), 2_000_000);
  const pool = new pg.Pool({ connectionString: via, max: 2 });
  pool.on('error', () => {});
  cleanups.push(() => pool.end());
  const drops: string[] = [];
  cleanups.push(watchStatements(pool, 1_000, { databaseUrl: via, onDrop: (ms, why) => drops.push(`${ms} ${why}`) }));
  // Overdue at 1 s; the server is done at 1.2 s, its 1.5 MB answer arrives about 0.75 s later:
  // the session idle meanwhile, for less than the watch's 1 s.
  const answer = outcome(pool.query("with slept as materialized (select pg_sleep(1.2)) select repeat('x', 1000) || g::text as t from slept, generate_series(1, 1500) g"));
  expect(await answer).toBe('answered');
  expect(drops).toEqual([]);
});
