import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { entities } from '../entities/index.js';
import { DueByTenant1764300000009, DueByTenantConcurrently1764300000009 } from '../migrations/0009-due-by-tenant.js';
import { migrations } from '../migrations/index.js';

/** Hookline's own processes build migration 0009's index concurrently (see there). */
const ownMigrations = migrations.map((m) => (m === DueByTenant1764300000009 ? DueByTenantConcurrently1764300000009 : m));

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
    extra: { max: poolSize, application_name: applicationName },
  });
}
