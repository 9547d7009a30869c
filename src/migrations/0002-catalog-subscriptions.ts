import type { MigrationInterface, QueryRunner } from 'typeorm';
import { CURRENT_TENANT, enableTenantRls, TENANT_ROLE } from './sql.js';

const str = { type: 'string' };
const amount = { type: ['string', 'number'] };

/** Built-in event types: the guide's events, requiring the fields every example of each carries. */
export const BUILT_IN_EVENT_TYPES: Array<{ name: string; description: string; required: Record<string, object> }> = [
  { name: 'invoice.created', description: 'An invoice was created.', required: { amount, customer: str } },
  { name: 'invoice.sent', description: 'An invoice was sent to the customer.', required: { invoice_id: str, invoice_number: str, sent_at: str } },
  {
    name: 'invoice.authorized',
    description: 'An invoice was authorized by the tax authority (SRI).',
    required: { invoice_id: str, authorization_number: str, authorization_date: str },
  },
  {
    name: 'invoice.rejected',
    description: 'An invoice was rejected by the tax authority (SRI).',
    required: { invoice_id: str, rejection_reason: str, rejected_at: str },
  },
  {
    name: 'payment.received',
    description: 'A payment was received.',
    required: { payment_id: str, invoice_id: str, amount, method: str, reference: str, received_at: str },
  },
  {
    name: 'customer.created',
    description: 'A customer was created.',
    required: { customer_id: str, business_name: str, ruc: str, country: str, created_at: str },
  },
  {
    name: 'customer.updated',
    description: 'A customer was updated.',
    required: { customer_id: str, business_name: str, updated_at: str },
  },
  {
    name: 'sales_order.created',
    description: 'A sales order was created.',
    required: { order_id: str, customer_id: str, amount, items_count: { type: 'integer', minimum: 0 }, created_at: str },
  },
  { name: 'sales_order.confirmed', description: 'A sales order was confirmed.', required: { order_id: str, confirmed_at: str } },
];

function schemaOf(required: Record<string, object>) {
  return { type: 'object', required: Object.keys(required), properties: required, additionalProperties: true };
}

export class CatalogAndSubscriptions1764300000002 implements MigrationInterface {
  name = 'CatalogAndSubscriptions1764300000002';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create table event_types (
        id uuid primary key default gen_random_uuid(),
        tenant_id uuid references tenants(id) on delete cascade, -- null: built in
        name text not null,
        description text not null default '',
        schema jsonb not null,
        created_at timestamptz not null default now()
      );
      create unique index event_types_builtin_name on event_types (name) where tenant_id is null;
      create unique index event_types_tenant_name on event_types (tenant_id, name) where tenant_id is not null;

      alter table event_types enable row level security;
      create policy event_types_read on event_types for select
        using (tenant_id is null or tenant_id = ${CURRENT_TENANT});
      create policy event_types_write on event_types for all
        using (tenant_id = ${CURRENT_TENANT}) with check (tenant_id = ${CURRENT_TENANT});
      grant select, insert, update, delete on event_types to ${TENANT_ROLE};

      create table webhook_subscriptions (
        id uuid primary key default gen_random_uuid(),
        tenant_id uuid not null references tenants(id) on delete cascade,
        url text not null,
        events text[] not null,
        description text,
        active boolean not null default true,
        disabled_reason text,
        headers jsonb not null default '{}'::jsonb,
        secret text not null,
        previous_secret text,
        previous_secret_expires_at timestamptz,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now()
      );
      -- Listing pages by (created_at, id); matching filters the tenant's active rows by overlap of patterns.
      create index webhook_subscriptions_tenant_created on webhook_subscriptions (tenant_id, created_at, id);
      create index webhook_subscriptions_events on webhook_subscriptions using gin (events) where active;
    `);
    await db.query(enableTenantRls('webhook_subscriptions'));
    for (const type of BUILT_IN_EVENT_TYPES) {
      await db.query('insert into event_types (tenant_id, name, description, schema) values (null, $1, $2, $3)', [
        type.name,
        type.description,
        JSON.stringify(schemaOf(type.required)),
      ]);
    }
    await db.query('insert into event_types (tenant_id, name, description, schema) values (null, $1, $2, $3)', [
      'test.event',
      'A test event, sent by sendTestEvent or by hand. Any object is accepted.',
      JSON.stringify({ type: 'object' }),
    ]);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop table webhook_subscriptions; drop table event_types;');
  }
}
