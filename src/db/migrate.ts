// Migrations run at start-up in every process. A session-level advisory lock
// makes concurrent starters wait for each other, so none is applied twice. They
// wait by asking again every 100 ms, not in a blocking pg_advisory_lock: a
// statement waiting there holds a snapshot, which CREATE INDEX CONCURRENTLY (in
// the lock holder's migration) would wait for in turn, a deadlock.
//
// A migration that changes a table the service uses (a column added, a trigger made) needs a
// lock that every other statement on the table then queues behind. Waiting for it behind a
// long transaction (an app's, an operator's psql session left open) would stall the running
// service's inserts, claims and records as long: Hookline's own migrations that run in a
// transaction wait at most MIGRATION_LOCK_TIMEOUT_MS for a lock, then let go (rolled back
// whole), and are tried again a moment later (see waitingBriefly). An app's wait as ever.
import pg from 'pg';
import { MigrationExecutor, type DataSource } from 'typeorm';
import type { Logger } from '../logger.js';
import { MIGRATION_LOCK_TIMEOUT_SETTING, MigrationLockBusy, TENANT_ROLE, TENANT_TABLES } from '../migrations/sql.js';
import { poolOf, queryRows } from './query.js';
import { StartRefused } from '../errors.js';

const MIGRATION_LOCK = 7_426_551_001; // any constant; identifies Hookline's migrator
/** The longest a migration's statement waits for a table's lock before letting the service's statements by. */
export const MIGRATION_LOCK_TIMEOUT_MS = 1_000;
/** How long a start keeps trying a migration that cannot get its lock before giving up. */
const MIGRATION_LOCK_PATIENCE_MS = 10 * 60_000;

export async function runMigrations(dataSource: DataSource, log?: Logger): Promise<string[]> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    for (let waited = 0; !(await runner.query('select pg_try_advisory_lock($1) as locked', [MIGRATION_LOCK]))[0].locked; waited += 100) {
      if (waited === 10_000) log?.warn('waiting for another process to finish migrating the database');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // On this connection, which holds the advisory lock: each migration in its own transaction.
    const executor = new MigrationExecutor(dataSource, runner);
    executor.transaction = 'each';
    const names = (await executor.getPendingMigrations()).map((m) => m.name);
    // Hookline's own migrations in a transaction wait briefly (see waitingBriefly); an app's as ever.
    await runner.query(`select set_config('${MIGRATION_LOCK_TIMEOUT_SETTING}', $1, false)`, [String(MIGRATION_LOCK_TIMEOUT_MS)]);
    const giveUpAt = Date.now() + MIGRATION_LOCK_PATIENCE_MS;
    for (let tries = 1; ; tries++) {
      try {
        await executor.executePendingMigrations(); // rolled back, a migration left its lock to the others
        break;
      } catch (error) {
        if (!(error instanceof MigrationLockBusy)) throw error;
        if (Date.now() >= giveUpAt) {
          throw new Error(
            `a migration could not get a table's lock in ${MIGRATION_LOCK_PATIENCE_MS / 60_000} minutes of tries: another transaction ` +
              'keeps holding it (see pg_stat_activity and pg_locks); end it, and start again',
            { cause: error },
          );
        }
        if (tries === 1 || tries % 30 === 0) {
          log?.warn({ tries }, 'a migration waits for a table another transaction holds (a long one: see pg_stat_activity); trying again every second or so');
        }
        await new Promise((resolve) => setTimeout(resolve, 500 + Math.random() * 1_000));
      }
    }
    if (names.length && log) log.info({ migrations: names }, 'migrations applied');
    await checkTenantRole(dataSource);
    return names;
  } finally {
    await runner.query(`select set_config('${MIGRATION_LOCK_TIMEOUT_SETTING}', '', false)`).catch(() => {});
    await runner.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    await runner.release();
  }
}

/**
 * Row-level security is the second wall between tenants, and only as good as the role it
 * binds. The migrations create the role without any way around it, but leave one that
 * already exists as it is (roles belong to the whole server): should it be a superuser,
 * have BYPASSRLS or own a table, or a table's security be off, every tenant-scoped query
 * would see every tenant. Hookline refuses to start then.
 */
export async function checkTenantRole(dataSource: DataSource, role = TENANT_ROLE): Promise<void> {
  await checkCanEnterRole(dataSource, role);
  const [found] = await queryRows<{ super: boolean; bypass: boolean; owns: string[] | null; unprotected: string[] | null }>(
    poolOf(dataSource),
    // Hookline's own tables, in the schema its statements use: an app sharing the database
    // may have tables and policies of its own, which are none of this check's business.
    `with ours as (
       select c.* from pg_class c where c.oid = any (select to_regclass(t)::oid from unnest($2::text[]) t)
     )
     select r.rolsuper as super, r.rolbypassrls as bypass,
            -- Owning through a role it has the privileges of is owning (row-level security does not apply).
            (select array_agg(c.relname::text order by c.relname) from ours c where not r.rolsuper and pg_has_role(r.oid, c.relowner, 'USAGE')) as owns,
            (select array_agg(c.relname::text order by c.relname) from ours c where not c.relrowsecurity) as unprotected
       from pg_roles r where r.rolname = $1`,
    [role, TENANT_TABLES],
  );
  if (!found) throw new Error(`the role ${role} does not exist: the migrations create it`);
  const problems = [
    found.super && 'it is a superuser',
    found.bypass && 'it has BYPASSRLS',
    found.owns?.length && `it owns ${found.owns.join(', ')}`,
    found.unprotected?.length && `row-level security is off on ${found.unprotected.join(', ')}`,
  ].filter(Boolean);
  if (problems.length) {
    throw new StartRefused(
      `tenant isolation would be off: ${problems.join('; ')}. Make ${role} an ordinary role ` +
        `(ALTER ROLE ${role} NOSUPERUSER NOBYPASSRLS), owning nothing (nor a member of a role that owns one), with row-level security on every tenant table`,
    );
  }
}

/**
 * Every tenant-scoped transaction switches to the role (db/tenant-scope.ts). A user who may
 * not (not a member: the role was made by another user, for another database on the server,
 * and was not ours to grant in migration 0001) would start, and then fail every tenant's call.
 * Tried rather than looked up in pg_auth_members: superusers need no membership, and from
 * PostgreSQL 16 a member may still be refused SET.
 */
async function checkCanEnterRole(dataSource: DataSource, role: string): Promise<void> {
  const client = await poolOf(dataSource).connect();
  try {
    const { rows } = await client.query<{ user: string }>('select current_user as user');
    try {
      await client.query(`begin; set local role ${pg.escapeIdentifier(role)}`);
    } catch (error) {
      if ((error as { code?: string }).code !== '42501') throw error; // insufficient_privilege
      const user = pg.escapeIdentifier(rows[0]!.user);
      throw new StartRefused(
        `the database user ${user} cannot switch to the role ${role}, as every tenant's call does: ` +
          `make it a member, as a superuser or the role's creator: GRANT ${role} TO ${user}`,
        { cause: error },
      );
    } finally {
      await client.query('rollback');
    }
  } finally {
    client.release();
  }
}
