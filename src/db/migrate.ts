// Migrations run at start-up in every process. A session-level advisory lock
// makes concurrent starters wait for each other, so none is applied twice.
import type { DataSource } from 'typeorm';
import type { Logger } from '../logger.js';

const MIGRATION_LOCK = 7_426_551_001; // any constant; identifies Hookline's migrator

export async function runMigrations(dataSource: DataSource, log?: Logger): Promise<string[]> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    await runner.query('select pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const applied = await dataSource.runMigrations({ transaction: 'each' });
    const names = applied.map((m) => m.name);
    if (names.length && log) log.info({ migrations: names }, 'migrations applied');
    return names;
  } finally {
    await runner.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    await runner.release();
  }
}
