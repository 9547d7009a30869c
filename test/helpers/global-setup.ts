// One embedded PostgreSQL for the whole test run, with a migrated template
// database; each test file clones the template (see database.ts), so files
// are isolated and none pays for migrations.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { pino } from 'pino';
import { createDataSource } from '../../src/db/data-source.js';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import { runMigrations } from '../../src/db/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
  }
}

export const TEMPLATE_DATABASE = 'hookline_template';

export default async function setup(project: TestProject) {
  const dir = await mkdtemp(join(tmpdir(), 'hookline-test-pg-'));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as another user and must reach it
  const log = pino({ level: 'warn' });
  // fsync off: test data need not survive a power cut, and it makes the run faster.
  const pg = await startEmbeddedPostgres(dir, log, {
    database: TEMPLATE_DATABASE,
    postgresFlags: ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=400'],
  });
  const dataSource = createDataSource({ url: pg.url, poolSize: 2 });
  await dataSource.initialize();
  await runMigrations(dataSource);
  await dataSource.destroy();
  project.provide('postgresUrl', pg.url);
  return async () => {
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
