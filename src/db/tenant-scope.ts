// Every access to tenant data goes through withTenant(): one transaction in
// which PostgreSQL's row-level security sees only that tenant's rows, as the
// second wall behind the tenant-scoped finders.
import pgModule from 'pg';
import type pg from 'pg';
import type { DataSource, EntityManager } from 'typeorm';
import { isUuid } from '../ids.js';
import { CONNECT_TIMEOUT_MS, connectionLimits } from './connection.js';
import { ErrorCode, HooklineError } from '../errors.js';
import { checkOut, connectionLost, isDataSource, poolOf, sqlState } from './query.js';
import { TENANT_ROLE } from '../migrations/sql.js';

export type TenantId = string & { readonly __tenant?: unique symbol };

/** Switches the current transaction to the tenant role with the tenant set. */
export async function enterTenant(manager: EntityManager, tenantId: TenantId): Promise<void> {
  await manager
    .query(`select set_config('role', '${TENANT_ROLE}', true), set_config('hookline.tenant_id', $1, true)`, [tenantId])
    .catch(roleRefused);
}

/**
 * A switch to the tenant role the database refused (insufficient_privilege: an app's user,
 * through the library, that is no member of it), thrown as what to do about it; anything
 * else as it is. Hookline's processes check the role at start-up (see db/migrate.ts).
 */
export function roleRefused(error: unknown): never {
  const { code, driverError } = error as { code?: string; driverError?: { code?: string } };
  if ((code ?? driverError?.code) !== '42501') throw error;
  throw new Error(
    `the database user cannot switch to the role ${TENANT_ROLE}, as every tenant's call does: ` +
      `make it a member, as a superuser or the role's creator: GRANT ${TENANT_ROLE} TO <the user>`,
    { cause: error },
  );
}

/**
 * Whether the database user may switch to the tenant role (roleRefused says what to grant if
 * not), tried once by the library before its first call: a user that is no member of it reads
 * no table either, and was refused with the first table's "permission denied". In a caller's
 * transaction, tried in a savepoint rolled back either way, so the transaction goes on.
 */
export async function probeTenantRole(source: DataSource | EntityManager): Promise<void> {
  const manager = isDataSource(source) ? undefined : source;
  if (manager && (await inCallersTransaction(manager))) {
    await manager.query('savepoint hookline_role_probe');
    try {
      await manager.query(`set local role ${TENANT_ROLE}`);
    } catch (error) {
      await manager.query('rollback to savepoint hookline_role_probe');
      roleRefused(error);
    }
    await manager.query('rollback to savepoint hookline_role_probe');
    await manager.query('release savepoint hookline_role_probe');
    return;
  }
  const { client, release } = await checkOut(poolOf(isDataSource(source) ? source : source.connection));
  let broken = false;
  try {
    await client.query(`begin; set local role ${TENANT_ROLE}`).catch(roleRefused);
  } finally {
    await client.query('rollback').catch(() => (broken = true));
    release(broken);
  }
}

/**
 * A tenant's share of something every tenant shares in a process: how many of its operations
 * run at once, the others waiting their turn (in order, at most `waitMs`, and at most
 * `maxWaiting` of them, then RATE_LIMITED, `busy` saying what of). For a pool of Hookline's own
 * (the API's): how many of its transactions withTenant() runs at once there; without it, one
 * tenant's costly requests, enough of them at once, took every connection, and every other
 * tenant's requests waited for one, then failed.
 */
export class TenantShares {
  private readonly running = new Map<string, number>();
  private readonly waiting = new Map<string, Array<() => void>>();

  constructor(
    readonly perTenant: number,
    readonly waitMs: number,
    private readonly busy: () => HooklineError = () =>
      new HooklineError(
        ErrorCode.RATE_LIMITED,
        `this tenant has ${perTenant} database operations running in this process, the most it may have, and more waiting than get a turn within ${waitMs / 1000} s; send fewer at once, or cheaper ones`,
      ),
    private readonly maxWaiting = MAX_WAITING,
  ) {}

  async take(tenantId: string): Promise<() => void> {
    const release = () => this.release(tenantId);
    const n = this.running.get(tenantId) ?? 0;
    if (n < this.perTenant) {
      this.running.set(tenantId, n + 1);
      return release;
    }
    let queue = this.waiting.get(tenantId);
    if (!queue) this.waiting.set(tenantId, (queue = []));
    if (queue.length >= this.maxWaiting) throw this.busy();
    await new Promise<void>((resolve, reject) => {
      const turn = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        queue.splice(queue.indexOf(turn), 1);
        if (!queue.length && this.waiting.get(tenantId) === queue) this.waiting.delete(tenantId);
        reject(this.busy());
      }, this.waitMs);
      queue.push(turn);
    });
    return release; // the slot was handed over by release()
  }

  private release(tenantId: string): void {
    const queue = this.waiting.get(tenantId);
    const next = queue?.shift();
    if (queue && !queue.length) this.waiting.delete(tenantId);
    if (next) return next(); // the slot goes to the next in line
    const n = (this.running.get(tenantId) ?? 1) - 1;
    if (n > 0) this.running.set(tenantId, n);
    else this.running.delete(tenantId);
  }
}

/** Operations of one tenant waiting for its share, at most. */
const MAX_WAITING = 1_000;

const shares = new WeakMap<DataSource, TenantShares>();

/** Gives each tenant at most `perTenant` of this DataSource's connections at once (see TenantShares). */
export function shareConnections(dataSource: DataSource, perTenant: number, waitMs = CONNECT_TIMEOUT_MS): void {
  shares.set(dataSource, new TenantShares(perTenant, waitMs));
}

/**
 * Runs fn in a transaction scoped to one tenant. With a caller's manager that
 * is already inside a transaction, joins it (the outbox case) and restores the
 * previous role afterwards. On a DataSource with shares (shareConnections), within the
 * tenant's share.
 */
export async function withTenant<T>(
  source: DataSource | EntityManager,
  tenantId: TenantId,
  fn: (manager: EntityManager) => Promise<T>,
  /** Of a transaction of its own (READ COMMITTED for a count behind a lock, whatever the server's default). */
  isolation?: 'READ COMMITTED',
): Promise<T> {
  const manager = isDataSource(source) ? source.manager : source;
  const runner = manager.queryRunner;
  if (runner && (await inCallersTransaction(manager))) {
    // Two at once would each save the other's role and tenant as the caller's, and the caller's
    // next statement would run as the tenant role (permission denied on its own tables).
    if (joinedTransactions.has(runner)) {
      throw new HooklineError(
        ErrorCode.BAD_USER_INPUT,
        "manager: another of Hookline's calls is running in this transaction: await each call, one at a time on a transaction's manager, as for any of its statements",
        'manager',
      );
    }
    joinedTransactions.add(runner);
    try {
      return await joinTransaction(manager, tenantId, fn);
    } finally {
      joinedTransactions.delete(runner);
    }
  }
  const run = async (tx: EntityManager) => {
    await enterTenant(tx, tenantId);
    return fn(tx);
  };
  return withinShare(isDataSource(source) ? source : undefined, tenantId, () => (isolation ? manager.transaction(isolation, run) : manager.transaction(run)));
}

/**
 * Whether the caller's manager is in a transaction: one begun by startTransaction() or
 * transaction(), or one TypeORM does not know of, begun with the caller's own `BEGIN`
 * (`queryRunner.query('BEGIN')`). A transaction of Hookline's own there would send a second
 * BEGIN (PostgreSQL only warns) and then COMMIT the caller's work half-way, for a ROLLBACK after
 * it to undo nothing, the webhook sent; such a transaction is joined instead, as one begun by
 * startTransaction(). Told by the connection's own state: pg's getTransactionStatus() (8.21 and
 * later: the server's, from its last ReadyForQuery, T, or E once aborted); with an older pg (the
 * app's own), by asking the server: a SAVEPOINT is refused outside a transaction block (25P01),
 * and refused in an aborted one (25P02).
 */
async function inCallersTransaction(manager: EntityManager): Promise<boolean> {
  const runner = manager.queryRunner;
  if (!runner || runner.isTransactionActive) return Boolean(runner);
  const connection = (runner as { databaseConnection?: { getTransactionStatus?: () => string | null } }).databaseConnection;
  if (!connection || runner.isReleased) return false; // not connected: no transaction of the caller's (TypeORM connects it for ours)
  if (typeof connection.getTransactionStatus === 'function') {
    const status = connection.getTransactionStatus();
    if (status !== null) return status === 'T' || status === 'E';
  }
  try {
    await runner.query('savepoint hookline_in_transaction');
  } catch (error) {
    if (sqlState(error) === '25P01') return false;
    if (sqlState(error) === '25P02') return true;
    throw error;
  }
  await runner.query('release savepoint hookline_in_transaction');
  return true;
}

/** Callers' transactions (their query runners) a call of Hookline's is running in. */
const joinedTransactions = new WeakSet<object>();

/** withTenant() in a caller's transaction: its role and tenant setting replaced for fn, then restored. */
async function joinTransaction<T>(manager: EntityManager, tenantId: TenantId, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
  // One round trip: the caller's settings are read (the materialized CTE runs first), then replaced.
  const [previous] = await manager.query(
    `with previous as materialized (
       select current_setting('role') as role, coalesce(current_setting('hookline.tenant_id', true), '') as tenant
     )
     select role, tenant, set_config('role', '${TENANT_ROLE}', true), set_config('hookline.tenant_id', $1, true) from previous`,
    [tenantId],
  ).catch(roleRefused);
  const restore = () =>
    manager.query(`select set_config('role', $1, true), set_config('hookline.tenant_id', $2, true)`, [
      previous.role,
      previous.tenant,
    ]);
  let result: T;
  try {
    result = await fn(manager);
  } catch (error) {
    // After a failed statement the transaction is aborted and the restore fails too;
    // the caller must roll back (which undoes the setting), and needs the first error.
    await restore().catch(() => {});
    throw error;
  }
  await restore();
  return result;
}

/**
 * withTenant() for a creation a tenant has a cap on (`what`: its API keys, subscriptions, event
 * types): one such creation at a time per tenant (an advisory lock), in a READ COMMITTED
 * transaction whatever the server's default, so that the count `fn` makes sees what those before
 * it committed (a REPEATABLE READ snapshot, taken before the lock, would not: racing creations
 * then all passed the cap).
 */
export function withTenantCreation<T>(source: DataSource, tenantId: TenantId, what: string, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
  return withTenant(
    source,
    tenantId,
    async (manager) => {
      await manager.query(`select pg_advisory_xact_lock(hashtextextended($1 || $2, 0))`, [`hookline ${what} `, tenantId]);
      return fn(manager);
    },
    'READ COMMITTED',
  );
}

/**
 * Runs `fn` within the tenant's share of `dataSource`'s connections, if it has shares. Work
 * nested in a tenant's transaction uses its manager (withTenant joins it, taking no share);
 * given the DataSource again, it would open a transaction of its own and wait for a share like
 * any other. (No AsyncLocalStorage to tell such a call apart: in Node 20 it slows every promise
 * of the process.)
 */
async function withinShare<T>(dataSource: DataSource | undefined, tenantId: TenantId, fn: () => Promise<T>): Promise<T> {
  const share = dataSource ? shares.get(dataSource) : undefined;
  if (!share) return fn();
  const release = await share.take(tenantId);
  try {
    return await fn();
  } finally {
    release();
  }
}

/**
 * withTenant() for the hot paths: a pooled pg connection without TypeORM's
 * transaction machinery, with BEGIN and the tenant settings in one round trip
 * and statements prepared per connection (see queryRows).
 */
export async function withTenantClient<T>(dataSource: DataSource, tenantId: TenantId, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  // The id goes into the SQL text (a simple query cannot take parameters), so it must be a UUID.
  if (!isUuid(tenantId)) throw new Error(`not a tenant id: ${tenantId}`);
  return withinShare(dataSource, tenantId, async () => {
    const { client, release } = await checkOut(poolOf(dataSource));
    let broken = false;
    try {
      await client
        .query(`begin; select set_config('role', '${TENANT_ROLE}', true), set_config('hookline.tenant_id', '${tenantId}', true)`)
        .catch(roleRefused);
      const result = await fn(client);
      await client.query('commit');
      return result;
    } catch (error) {
      await client.query('rollback').catch(() => {
        broken = true;
      });
      throw error;
    } finally {
      release(broken);
    }
  });
}

/**
 * Connections that stay in the tenant role with the tenant set for the
 * session, changed only when the next user is of another tenant. A single
 * statement then needs no transaction around it (it is one), so writing a
 * batch of events for the tenant of the previous batch is one round trip.
 * Only for single statements: a sequence of statements needs withTenant().
 */
export class TenantSessions {
  readonly pool: pg.Pool;
  private readonly tenantOf = new WeakMap<pg.PoolClient, string>();

  constructor(connectionString: string, onError: (error: Error) => void, max = 8) {
    this.pool = new pgModule.Pool({ connectionString, max, application_name: 'hookline-ingest', ...connectionLimits });
    this.pool.on('error', onError);
  }

  async run<T>(tenantId: TenantId, statement: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    // The id goes into the SQL text (a simple query cannot take parameters), so it must be a UUID.
    if (!isUuid(tenantId)) throw new Error(`not a tenant id: ${tenantId}`);
    const { client, release } = await checkOut(this.pool);
    let broken = false;
    try {
      const current = this.tenantOf.get(client);
      if (current !== tenantId) {
        this.tenantOf.delete(client);
        await client
          .query(`${current === undefined ? `set role ${TENANT_ROLE}; ` : ''}select set_config('hookline.tenant_id', '${tenantId}', false)`)
          .catch(roleRefused);
        this.tenantOf.set(client, tenantId);
      }
      return await statement(client);
    } catch (error) {
      // A connection whose settings are unknown, or that failed other than by an answer
      // of the database to the statement (a dropped connection, a server shutting down), is not reused.
      broken = !this.tenantOf.has(client) || !(error instanceof pgModule.DatabaseError) || connectionLost(error);
      throw error;
    } finally {
      release(broken);
    }
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
