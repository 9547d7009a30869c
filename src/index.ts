// The package entry point, for code that runs in the same process as its data
// (the guide's "Método 2"): trigger webhooks inside your own TypeORM
// transaction, format envelopes, sign and verify.
//
//   const dataSource = new DataSource({ type: 'postgres', url, entities: [...yours, ...hooklineEntities],
//                                       migrations: [...yours, ...hooklineMigrations],
//                                       migrationsTableName: 'hookline_migrations' }); // the table Hookline's processes use
//   const webhooks = new WebhookService(dataSource);
//   await dataSource.transaction(async (manager) => {
//     const invoice = await manager.save(Invoice, {...});
//     await webhooks.triggerEvent({ tenantId, event: 'invoice.created', resourceId: invoice.id, data: {...} }, manager);
//   });
export { WebhookService, MAX_DATA_BYTES, type AppDataSource, type AppEntityManager, type TriggerEventInput, type TriggerResult } from './webhooks/service.js';
export { WebhookFormatter, type EventEnvelope, type FormatEventInput } from './webhooks/formatter.js';
export { EventCatalog } from './webhooks/catalog.js';
export {
  WebhookSignature,
  StandardWebhookVerifier,
  WebhookVerificationError,
  buildSignedHeaders,
  signStandardWebhook,
} from './signing/index.js';
export { HooklineError, ErrorCode } from './errors.js';
export { entities as hooklineEntities } from './entities/index.js';
export * from './entities/index.js';
export { migrations as hooklineMigrations } from './migrations/index.js';
export { runMigrations } from './db/migrate.js';
