import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

const TEMPLATE_DATABASE = 'hookline_template';

/** A fresh database for one test file: a copy of the migrated template. */
export async function createTestDatabase(): Promise<string> {
  const templateUrl = inject('postgresUrl');
  const name = `hookline_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: templateUrl.replace(/\/[^/]*$/, '/postgres') });
  await client.connect();
  try {
    // Cloning needs the template to have no other connections; retry briefly if a clone is in progress.
    for (let attempt = 0; ; attempt++) {
      try {
        await client.query(`create database ${name} template ${TEMPLATE_DATABASE}`);
        break;
      } catch (error) {
        if (attempt > 50 || !/being accessed by other users/.test(String(error))) throw error;
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
      }
    }
  } finally {
    await client.end();
  }
  return templateUrl.replace(/\/[^/]*$/, `/${name}`);
}

/**
 * The backends of this database, other than `db`'s own, waiting for a lock: their pids. Asked on
 * a connection outside any transaction: within one, PostgreSQL reads the backends' states once
 * and keeps them.
 */
export async function lockWaiters(db: pg.ClientBase | pg.Pool): Promise<number[]> {
  const { rows } = await db.query<{ pid: number }>(
    `select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()`,
  );
  return rows.map((r) => r.pid);
}
