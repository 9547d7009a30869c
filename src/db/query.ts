import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { DataSource, EntityManager } from 'typeorm';

/** Where SQL can run: a TypeORM manager (maybe a caller's transaction), a DataSource, or a pg client. */
export type Sql = EntityManager | DataSource | pg.ClientBase | pg.Pool;

const names = new Map<string, string>();
/** A stable statement name per SQL text, so each pooled connection prepares it once. */
function statementName(sql: string): string {
  let name = names.get(sql);
  if (!name) {
    name = `hl_${createHash('sha1').update(sql).digest('hex').slice(0, 16)}`;
    names.set(sql, name);
  }
  return name;
}

// TypeORM's objects are told apart by their shape, not `instanceof`: an app using Hookline as
// a library may hand it a DataSource or manager of its own copy of typeorm (a linked install,
// a hoisting that kept two), whose classes are not Hookline's.

/** A TypeORM DataSource, of whichever copy of typeorm. */
export function isDataSource(source: unknown): source is DataSource {
  const s = source as Partial<DataSource> | null;
  return typeof s?.createQueryRunner === 'function' && typeof s.manager === 'object' && typeof s.driver === 'object';
}

/** A TypeORM EntityManager, of whichever copy of typeorm. */
export function isEntityManager(source: unknown): source is EntityManager {
  const s = source as Partial<EntityManager> | null;
  return typeof s?.getRepository === 'function' && typeof s.transaction === 'function' && typeof s.connection === 'object' && !isDataSource(s);
}

function isPg(source: Sql): source is pg.ClientBase | pg.Pool {
  return !isEntityManager(source) && !isDataSource(source);
}

/**
 * Runs SQL and returns its rows, whatever the statement. On a pg client the
 * statement is prepared once per connection (parsed and planned once, not per
 * call). TypeORM's plain query() answers UPDATE and DELETE with [rows, count]
 * on PostgreSQL; this does not.
 */
export async function queryRows<T = Record<string, any>>(source: Sql, sql: string, params: unknown[] = []): Promise<T[]> {
  if (isPg(source)) return (await source.query({ name: statementName(sql), text: sql, values: params })).rows as T[];
  const existing = isEntityManager(source) ? source.queryRunner : undefined;
  if (existing) return (await existing.query(sql, params, true)).records as T[];
  const dataSource = isEntityManager(source) ? source.connection : source;
  const runner = dataSource.createQueryRunner();
  try {
    return (await runner.query(sql, params, true)).records as T[];
  } finally {
    await runner.release();
  }
}

/** The pg pool behind a TypeORM DataSource, for the hot paths that skip TypeORM's machinery. */
export function poolOf(dataSource: DataSource): pg.Pool {
  const pool = (dataSource.driver as unknown as { master?: pg.Pool }).master;
  // Not yet initialized, or destroyed: said so, rather than a TypeError reading its pool.
  if (!pool || !dataSource.isInitialized) throw new Error('the DataSource is not initialized (call its initialize() first; a destroyed one cannot be used)');
  return pool;
}

/**
 * A client checked out of a pg pool, listening for its `error` event while it is out: a
 * connection that dies under a checked-out client (a database restart, a failover, a
 * terminated backend) emits one, and with no listener Node throws it and the process ends.
 * The failing query rejects as well, so the listener only notes that the connection is
 * gone; `release()` then destroys it rather than return it to the pool.
 */
export async function checkOut(pool: pg.Pool): Promise<{ client: pg.PoolClient; release(broken?: boolean): void }> {
  const client = await pool.connect();
  let lost = false;
  const onError = () => {
    lost = true;
  };
  client.on('error', onError);
  return {
    client,
    release(broken = false) {
      client.off('error', onError);
      client.release(broken || lost);
    },
  };
}

/** Drops a connection whose server may be silent: pg has no public way (end() waits for the server). */
export function dropConnection(client: pg.ClientBase): void {
  (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
}

/**
 * The SQLSTATE of an error the database answered, or undefined for any other error: one of
 * the connection (Node's `ECONNREFUSED`, `EPIPE`…, whose codes may look like a SQLSTATE) or
 * of pg itself. The server's errors are the ones that carry a severity.
 */
export function sqlState(error: unknown): string | undefined {
  const { code, severity } = (error ?? {}) as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * The connection is no good any more: not an answer of the database to a statement, or
 * one that ends the session (class 08, connection exception; 57P01-57P03, the server
 * shutting down or restarting), which pg reports before the socket closes.
 */
export function connectionLost(error: unknown): boolean {
  const code = sqlState(error);
  if (code === undefined) return true;
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03';
}
