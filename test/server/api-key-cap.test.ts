// The cap on a tenant's active API keys (MAX_ACTIVE_API_KEYS) holds for creations at once
// also on a database whose default isolation is REPEATABLE READ: a creation that waited for
// another must count what that one committed.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MAX_ACTIVE_API_KEYS } from '../../src/auth/tenants.js';
import { createTestDatabase } from '../helpers/database.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';

let hl: TestHookline;
let databaseUrl: string;
beforeAll(async () => {
  databaseUrl = await createTestDatabase();
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`alter database ${pg.escapeIdentifier(new URL(databaseUrl).pathname.slice(1))} set default_transaction_isolation = 'repeatable read'`);
  await admin.end();
  hl = await startTestHookline({ HOOKLINE_ROLE: 'api' }, { databaseUrl });
});
afterAll(() => hl?.stop());

it(`holds at most ${MAX_ACTIVE_API_KEYS} active keys a tenant when creations race under REPEATABLE READ`, async () => {
  const [{ default_transaction_isolation: isolation }] = await hl.dataSource.query('show default_transaction_isolation');
  expect(isolation).toBe('repeatable read');
  const tenant = await hl.createTenant('Racing keys'); // its first key is one
  const create = 'mutation($name: String!) { createApiKey(name: $name) { id } }';
  const answers = await Promise.all(Array.from({ length: 130 }, (_, i) => hl.gql(create, { name: `k${i}` }, tenant.apiKey)));
  expect(answers.filter((a) => !a.errors)).toHaveLength(MAX_ACTIVE_API_KEYS - 1);
  for (const refused of answers.filter((a) => a.errors)) expect(refused.errors![0]!.extensions!.code).toBe('BAD_USER_INPUT');
  const [{ n }] = await hl.dataSource.query('select count(*)::int as n from api_keys where tenant_id = $1 and revoked_at is null', [tenant.id]);
  expect(n).toBe(MAX_ACTIVE_API_KEYS);
});
