// /readyz says whether the process can serve: 503 when its database does not
// answer, without telling the caller (unauthenticated) where the database is.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';

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

it('answers 503 while the database does not answer, naming no address, and 200 once it does', async () => {
  expect((await fetch(`${hl.url}/readyz`)).status).toBe(200);
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections false`);
  await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1', [database]);
  await new Promise((r) => setTimeout(r, 200));
  const down = await fetch(`${hl.url}/readyz`);
  const body = await down.json();
  expect(down.status).toBe(503);
  expect(body).toEqual({ status: 'unavailable', error: 'the database does not answer' });
  await admin.query(`alter database ${pg.escapeIdentifier(database)} allow_connections true`);
  for (let i = 0; i < 50 && (await fetch(`${hl.url}/readyz`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
  expect((await fetch(`${hl.url}/readyz`)).status).toBe(200);
});
