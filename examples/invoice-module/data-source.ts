// The ERP's DataSource with Hookline's tables added: Hookline's entities and
// migrations beside the app's own.
import 'reflect-metadata';
import { DataSource } from 'typeorm';
// In an app: import { hooklineEntities, hooklineMigrations } from 'hookline';
import { hooklineEntities, hooklineMigrations } from '../../src/index.js';
import { CreateInvoices1764400000001 } from './create-invoices-migration.js';
import { Invoice } from './invoice.js';

export function createAppDataSource(url: string): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities: [Invoice, ...hooklineEntities],
    migrations: [...hooklineMigrations, CreateInvoices1764400000001],
    // Hookline's own processes on this database (the dispatcher: HOOKLINE_ROLE=worker)
    // record their migrations in hookline_migrations; sharing that table lets each
    // side see what the other has applied, so none runs twice.
    migrationsTableName: 'hookline_migrations',
    synchronize: false,
  });
}
