// A connection that dies under a checked-out client (a database restart, a
// failover, a terminated backend) fails the statement on it, and nothing more:
// the process goes on (an unheard 'error' event would end it), and the dead
// connection is not handed out again.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDataSource } from '../../src/db/data-source.js';
import { TenantSessions, withTenantClient, type TenantId } from '../../src/db/tenant-scope.js';
import { createTestDatabase } from '../helpers/database.js';

let databaseUrl: string;
let admin: pg.Client;
let tenantId: TenantId;

beforeAll(async () => {
  databaseUrl = await createTestDatabase();
  admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  ({ rows: [{ id: tenantId }] } = await admin.query(`insert into tenants (name) values ('Lost') returning id`));
});
afterAll(() => admin?.end());

/** Runs `select pg_sleep(1)` on the client and terminates its backend meanwhile. */
async function sleepAndBeCut(client: pg.ClientBase): Promise<void> {
  const { rows: [{ pid }] } = await client.query('select pg_backend_pid() as pid');
  const sleeping = client.query('select pg_sleep(1)');
  sleeping.catch(() => {}); // awaited below; it fails while the termination is on its way
  await new Promise((r) => setTimeout(r, 100));
  await admin.query('select pg_terminate_backend($1)', [pid]);
  await sleeping;
}

it('withTenantClient: the statement fails, the process goes on, and the next call works', async () => {
  const dataSource = createDataSource({ url: databaseUrl });
  await dataSource.initialize();
  try {
    await expect(withTenantClient(dataSource, tenantId, sleepAndBeCut)).rejects.toThrow();
    // Let the dying socket close (its 'error' comes after the failed statement).
    await new Promise((r) => setTimeout(r, 200));
    const rows = await withTenantClient(dataSource, tenantId, async (c) => (await c.query('select count(*)::int as n from tenants')).rows);
    expect(rows).toEqual([{ n: 1 }]); // the tenant role sees its own tenant only
  } finally {
    await dataSource.destroy();
  }
});

it('TenantSessions: a session cut by the server is not handed out again', async () => {
  const sessions = new TenantSessions(databaseUrl, () => {}, 1);
  try {
    await expect(sessions.run(tenantId, sleepAndBeCut)).rejects.toThrow(/terminat/);
    // At once, as the batcher retries each event of a failed batch: a fresh connection, set to the tenant.
    const { rows } = await sessions.run(tenantId, (c) => c.query(`select current_setting('hookline.tenant_id') as tenant`));
    expect(rows).toEqual([{ tenant: tenantId }]);
  } finally {
    await sessions.close();
  }
});
