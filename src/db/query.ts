import { createHash } from 'node:crypto';
import type pg from 'pg';
import { DataSource, EntityManager } from 'typeorm';

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

function isPg(source: Sql): source is pg.ClientBase | pg.Pool {
  return !(source instanceof EntityManager) && !(source instanceof DataSource);
}

/**
 * Runs SQL and returns its rows, whatever the statement. On a pg client the
 * statement is prepared once per connection (parsed and planned once, not per
 * call). TypeORM's plain query() answers UPDATE and DELETE with [rows, count]
 * on PostgreSQL; this does not.
 */
export async function queryRows<T = Record<string, any>>(source: Sql, sql: string, params: unknown[] = []): Promise<T[]> {
  if (isPg(source)) return (await source.query({ name: statementName(sql), text: sql, values: params })).rows as T[];
  const existing = source instanceof EntityManager ? source.queryRunner : undefined;
  if (existing) return (await existing.query(sql, params, true)).records as T[];
  const dataSource = source instanceof EntityManager ? source.connection : source;
  const runner = dataSource.createQueryRunner();
  try {
    return (await runner.query(sql, params, true)).records as T[];
  } finally {
    await runner.release();
  }
}

/** The pg pool behind a TypeORM DataSource, for the hot paths that skip TypeORM's machinery. */
export function poolOf(dataSource: DataSource): pg.Pool {
  return (dataSource.driver as unknown as { master: pg.Pool }).master;
}
