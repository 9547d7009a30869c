import 'reflect-metadata';
import { DataSource, type Logger } from 'typeorm';
import { entities } from '../entities/index.js';
import { connectionLimits } from './connection.js';
import { DueByTenant1764300000009, DueByTenantConcurrently1764300000009 } from '../migrations/0009-due-by-tenant.js';
import { FailedDeliveries1764300000011, FailedDeliveriesConcurrently1764300000011 } from '../migrations/0011-failed-deliveries.js';
import { ClaimedTestDeliveries1764300000018, ClaimedTestDeliveriesConcurrently1764300000018 } from '../migrations/0018-claimed-test-deliveries.js';
import { migrations } from '../migrations/index.js';

/** Hookline's own processes build the queue's later indexes concurrently (see createQueueIndex). */
const concurrently = new Map<string, Function>([
  [new DueByTenant1764300000009().name, DueByTenantConcurrently1764300000009],
  [new FailedDeliveries1764300000011().name, FailedDeliveriesConcurrently1764300000011],
  [new ClaimedTestDeliveries1764300000018().name, ClaimedTestDeliveriesConcurrently1764300000018],
]);
const ownMigrations = migrations.map((m) => (concurrently.get(new m().name!) ?? m) as (typeof migrations)[number]);

/**
 * TypeORM's own console lines stay out of Hookline's JSON log: its logger writes a migration's
 * failure to stdout whatever `logging` says, once a try when a migration waits for a lock (see
 * db/migrate.ts), which reports what matters itself.
 */
const quiet: Logger = { logQuery() {}, logQueryError() {}, logQuerySlow() {}, logSchemaBuild() {}, logMigration() {}, log() {} };

export interface DataSourceOptions {
  url: string;
  poolSize?: number;
  applicationName?: string;
}

export function createDataSource({ url, poolSize = 20, applicationName = 'hookline' }: DataSourceOptions): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities,
    migrations: ownMigrations,
    migrationsTableName: 'hookline_migrations',
    migrationsTransactionMode: 'each',
    synchronize: false,
    logging: false,
    logger: quiet,
    extra: { max: poolSize, application_name: applicationName, ...connectionLimits },
  });
}
