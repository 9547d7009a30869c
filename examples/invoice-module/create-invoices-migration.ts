import type { MigrationInterface, QueryRunner } from 'typeorm';

/** The app's own migration, listed after Hookline's in the same DataSource. */
export class CreateInvoices1764400000001 implements MigrationInterface {
  name = 'CreateInvoices1764400000001';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create table invoices (
        id uuid primary key default gen_random_uuid(),
        tenant_id uuid not null,
        number text not null,
        total numeric(14, 2) not null,
        currency text not null,
        customer_name text not null,
        status text not null default 'draft',
        created_at timestamptz not null default now(),
        unique (tenant_id, number)
      )`);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop table invoices');
  }
}
