// npm run migrate: applies pending migrations to DATABASE_URL, or to the
// embedded database under ./.hookline/ when DATABASE_URL is unset.
import { dirname, join } from 'node:path';
import { ConfigError, loadConfig } from '../src/config.js';
import { createDataSource } from '../src/db/data-source.js';
import { EmbeddedInUseError, startEmbeddedPostgres } from '../src/db/embedded.js';
import { StartRefused } from '../src/errors.js';
import { runMigrations } from '../src/db/migrate.js';
import { createLogger } from '../src/logger.js';

try {
  const config = loadConfig();
  const log = createLogger(config.logLevel);
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir, log);
  const dataSource = createDataSource({ url: config.databaseUrl ?? embedded!.url });
  await dataSource.initialize();
  const applied = await runMigrations(dataSource, log);
  console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
  await dataSource.destroy();
  await embedded?.stop();
} catch (error) {
  if (error instanceof EmbeddedInUseError) {
    // The service runs on it: migrate through its PostgreSQL rather than start another.
    const url = join(dirname(error.databaseDir), 'database-url');
    // Quoted for the shell when it must be (a space in the path, say).
    const shellPath = /^[\w@%+=:,./-]+$/.test(url) ? url : `'${url.replaceAll("'", `'\\''`)}'`;
    console.error(`Hookline process ${error.owner} runs on this embedded PostgreSQL: migrate through it, with\n  DATABASE_URL=$(cat ${shellPath}) npm run migrate`);
  } else {
    console.error(error instanceof ConfigError ? `invalid configuration: ${error.message}` : error instanceof StartRefused ? error.message : error);
  }
  process.exit(1);
}
