// An app on TypeORM 0.3 (its own copy, beside the 1.x Hookline is built on) that imports
// `hookline` before it defines its own decorated entities: its DataSource starts with Hookline's
// entities and migrations beside its own, reads Hookline's rows through them, and triggerEvent
// commits or rolls back with the app's transaction. Hookline's entities were decorated classes,
// written into TypeORM's global metadata store, which both copies share: imported first, they
// made the store a 1.x one, and 0.3's DataSource failed to start (filterRelationCounts).
import 'reflect-metadata';
// Hookline first, as an app's imports may well come.
import { WebhookEvent, WebhookService, hooklineEntities, hooklineMigrations } from '../../src/index.js';
import { Column, DataSource, Entity, PrimaryGeneratedColumn } from 'typeorm-0.3';
import typeorm03 from 'typeorm-0.3/package.json' with { type: 'json' };
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.js';

// The app's entity, decorated with 0.3's decorators (called as functions: this file is not compiled for them).
class Invoice {
  id!: number;
  number!: string;
}
Entity('invoices')(Invoice);
PrimaryGeneratedColumn()(Invoice.prototype, 'id');
Column('text')(Invoice.prototype, 'number');

let app: DataSource;
let tenantId: string;

beforeAll(async () => {
  expect(typeorm03.version).toMatch(/^0\.3\./);
  app = new DataSource({
    type: 'postgres',
    url: await createTestDatabase(),
    entities: [Invoice, ...hooklineEntities], // as the README writes it (tsc checks this file)
    migrations: hooklineMigrations,
    migrationsTableName: 'hookline_migrations',
  });
  await app.initialize();
  await app.runMigrations();
  await app.query('create table invoices (id serial primary key, number text not null)');
  [{ id: tenantId }] = await app.query(`insert into tenants (name) values ('ERP on TypeORM 0.3') returning id`);
});
afterAll(() => app?.destroy());

it('starts its DataSource, triggers in its transaction, and reads the event through Hookline\'s entity', async () => {
  const webhooks = new WebhookService(app);
  const { event } = await app.transaction(async (manager) => {
    const invoice = await manager.save(Invoice, { number: 'F-1' });
    return webhooks.triggerEvent({ tenantId, event: 'invoice.created', resourceId: String(invoice.id), data: { amount: 1500, customer: 'Acme Corp' } }, manager);
  });
  const stored = await app.getRepository(WebhookEvent).findOneBy({ id: event.id });
  expect(stored).toBeInstanceOf(WebhookEvent);
  expect(stored).toMatchObject({ id: event.id, tenantId, event: 'invoice.created', resourceType: 'invoice', data: { amount: 1500, customer: 'Acme Corp' } });

  // Rolled back with the app's transaction: neither the invoice nor its event.
  const before = await app.getRepository(WebhookEvent).countBy({ tenantId });
  await expect(
    app.transaction(async (manager) => {
      await manager.save(Invoice, { number: 'F-2' });
      await webhooks.triggerEvent({ tenantId, event: 'invoice.created', data: { amount: 1, customer: 'Acme Corp' } }, manager);
      throw new Error('the invoice is refused after all');
    }),
  ).rejects.toThrow('refused after all');
  expect(await app.getRepository(WebhookEvent).countBy({ tenantId })).toBe(before);
  expect(await app.getRepository(Invoice).countBy({ number: 'F-2' })).toBe(0);
});
