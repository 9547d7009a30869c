import type { DataSource, EntityManager } from 'typeorm';

/**
 * Runs SQL and returns its rows, whatever the statement. (TypeORM's plain
 * query() answers UPDATE and DELETE with [rows, count] on PostgreSQL.)
 */
export async function queryRows<T = Record<string, any>>(
  source: EntityManager | DataSource,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const existing = 'queryRunner' in source ? source.queryRunner : undefined;
  if (existing) return (await existing.query(sql, params, true)).records as T[];
  const dataSource = 'connection' in source ? source.connection : source;
  const runner = dataSource.createQueryRunner();
  try {
    return (await runner.query(sql, params, true)).records as T[];
  } finally {
    await runner.release();
  }
}
