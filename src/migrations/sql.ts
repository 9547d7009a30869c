// Shared SQL fragments for migrations: row-level security is the second wall
// of tenant isolation (the first is tenant-scoped finders). Tenant-scoped
// transactions run as the role hookline_tenant with hookline.tenant_id set
// (see db/tenant-scope.ts); the table owner, used by the dispatcher, is not
// subject to the policies.
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { sqlState } from '../db/query.js';
import { StartRefused } from '../errors.js';

export const TENANT_ROLE = 'hookline_tenant';

/** Hookline's tables that row-level security binds to a tenant (see checkTenantRole). */
export const TENANT_TABLES = [
  'tenants',
  'api_keys',
  'event_types',
  'webhook_subscriptions',
  'webhook_events',
  'idempotency_keys',
  'webhook_deliveries',
  'delivery_attempts',
];
export const CURRENT_TENANT = `nullif(current_setting('hookline.tenant_id', true), '')::uuid`;

export function enableTenantRls(table: string, column = 'tenant_id'): string {
  return `
    alter table ${table} enable row level security;
    create policy ${table}_tenant_isolation on ${table}
      using (${column} = ${CURRENT_TENANT})
      with check (${column} = ${CURRENT_TENANT});
    grant select, insert, update, delete on ${table} to ${TENANT_ROLE};
  `;
}

/**
 * Builds an index on a table the queue writes all the time. In a transaction (an app's
 * DataSource, whatever its migrationsTransactionMode: TypeORM refuses a migration of its own
 * mode beside 'all', its default) it is built plainly, holding writes to the table up for a
 * scan of it. Outside one (Hookline's own processes, see db/data-source.ts) it is built
 * concurrently, so that deliveries are inserted, claimed and recorded meanwhile; an index
 * left invalid by an earlier attempt that failed half-way is dropped first (the migration was
 * not recorded, so nothing else made it). It waits for transactions older than itself at most
 * a minute (then it fails, and the next start tries again): a Hookline of an older version
 * starting meanwhile waits in pg_advisory_lock holding a snapshot, for the lock this process
 * holds, a wait no deadlock detector sees.
 */
export async function createQueueIndex(db: QueryRunner, name: string, definition: string): Promise<void> {
  if (db.isTransactionActive) {
    await db.query(`create index ${name} ${definition}`);
    return;
  }
  // Put back as it was, for the statements that follow on this connection. The wait's bound may
  // be set per database (QUEUE_INDEX_WAIT_SETTING; the tests' way to meet it in a second).
  const [{ lock_timeout: before, wait }] = await db.query(
    `select current_setting('lock_timeout') as lock_timeout, coalesce(nullif(current_setting('${QUEUE_INDEX_WAIT_SETTING}', true), ''), '60s') as wait`,
  );
  await db.query(`select set_config('lock_timeout', $1, false)`, [wait]);
  try {
    await db.query(`drop index concurrently if exists ${name}`);
    await db.query(`create index concurrently ${name} ${definition}`);
  } catch (error) {
    if (sqlState(error) !== '55P03') throw error;
    throw new StartRefused(
      `building the index ${name} concurrently waited ${wait} for transactions older than it, and gave up: a long transaction ` +
        '(an application\'s, a psql session left open: see pg_stat_activity), or a Hookline of an older version starting beside this one; ' +
        'end it, and start again (the index is built then; what this try left is dropped first)',
      { cause: error },
    );
  } finally {
    await db.query(`select set_config('lock_timeout', $1, false)`, [before]);
  }
}

/** A database's bound on createQueueIndex's wait for older transactions (an interval; 60s when unset). */
export const QUEUE_INDEX_WAIT_SETTING = 'hookline.queue_index_wait';

/**
 * Set (to a lock_timeout, in ms) on the connection of Hookline's runMigrations, and only there:
 * Hookline's migrations that run in a transaction then wait at most that long for a table's
 * lock, and a refusal is a MigrationLockBusy, tried again (see db/migrate.ts). Under an app's
 * own runner, and for its migrations, nothing changes: they wait as PostgreSQL makes them.
 */
export const MIGRATION_LOCK_TIMEOUT_SETTING = 'hookline.migration_lock_timeout';

/** A Hookline migration gave up waiting for a lock (rolled back whole): to be tried again. */
export class MigrationLockBusy extends Error {
  constructor(migration: string, cause: unknown) {
    super(`migration ${migration} waited too long for a table's lock`, { cause });
  }
}

/** Migration `M`, waiting briefly for its locks when MIGRATION_LOCK_TIMEOUT_SETTING says so. */
export function waitingBriefly<T extends new (...args: any[]) => MigrationInterface>(M: T): T {
  return class extends M {
    override async up(db: QueryRunner): Promise<void> {
      let before: string | undefined;
      if (db.isTransactionActive) {
        const [{ ms, current }] = await db.query(
          `select current_setting('${MIGRATION_LOCK_TIMEOUT_SETTING}', true) as ms, current_setting('lock_timeout') as current`,
        );
        if (ms) {
          before = current;
          await db.query(`select set_config('lock_timeout', $1, true)`, [ms]);
        }
      }
      try {
        await super.up(db);
      } catch (error) {
        if (before !== undefined && sqlState(error) === '55P03') {
          throw new MigrationLockBusy(this.name ?? M.name, error);
        }
        throw error;
      }
      if (before !== undefined) await db.query(`select set_config('lock_timeout', $1, true)`, [before]);
    }
  };
}
