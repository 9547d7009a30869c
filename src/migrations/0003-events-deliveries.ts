import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './sql.js';

export const DELIVERIES_DUE_CHANNEL = 'hookline_deliveries_due';
/**
 * Notified (payload: its id) when a subscription is deleted or deactivated: dispatchers hand
 * back what they claimed for it and have not started (no table or trigger: a plain NOTIFY).
 */
export const SUBSCRIPTION_STOPPED_CHANNEL = 'hookline_subscription_stopped';
/** Each dispatcher, once it has handed back what it claimed of a subscription changed, says so here: `<subscription id>:<backend pid>`. */
export const SUBSCRIPTION_STOPPED_HEARD_CHANNEL = 'hookline_subscription_stopped_heard';

export class EventsAndDeliveries1764300000003 implements MigrationInterface {
  name = 'EventsAndDeliveries1764300000003';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create table webhook_events (
        id uuid primary key,
        tenant_id uuid not null references tenants(id) on delete cascade,
        event text not null,
        resource_type text,
        resource_id text,
        data jsonb not null,
        body text not null, -- the exact envelope every delivery of this event sends
        idempotency_key text,
        created_at timestamptz not null
      );
      create index webhook_events_tenant_created on webhook_events (tenant_id, created_at, id);

      -- Idempotency keys live 24 hours; an expired key is taken over by the next event.
      create table idempotency_keys (
        tenant_id uuid not null references tenants(id) on delete cascade,
        key text not null,
        event_id uuid not null,
        expires_at timestamptz not null,
        primary key (tenant_id, key)
      );

      create table webhook_deliveries (
        id uuid primary key default gen_random_uuid(),
        tenant_id uuid not null references tenants(id) on delete cascade,
        event_id uuid not null references webhook_events(id) on delete cascade,
        subscription_id uuid references webhook_subscriptions(id) on delete set null,
        event text not null,
        target_url text not null,
        status text not null check (status in ('PENDING', 'SENDING', 'DELIVERED', 'FAILED', 'CANCELED')),
        paused boolean not null default false,
        attempts integer not null default 0,
        schedule_attempts integer not null default 0,
        last_error text,
        last_status_code integer,
        next_attempt_at timestamptz,
        lease_expires_at timestamptz,
        locked_by text,
        delivered_at timestamptz,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now()
      );
      -- The queue: only rows that can be claimed are in this index, so its size is
      -- the backlog, not the history.
      create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
        where status = 'PENDING' and not paused;
      -- Leases to reclaim after a worker died.
      create index webhook_deliveries_leased on webhook_deliveries (lease_expires_at) where status = 'SENDING';
      create index webhook_deliveries_tenant_created on webhook_deliveries (tenant_id, created_at, id);
      create index webhook_deliveries_subscription on webhook_deliveries (subscription_id, created_at, id);
      create index webhook_deliveries_event on webhook_deliveries (event_id);

      create table delivery_attempts (
        delivery_id uuid not null references webhook_deliveries(id) on delete cascade,
        number integer not null,
        tenant_id uuid not null,
        started_at timestamptz not null,
        duration_ms integer not null,
        status_code integer,
        error text,
        response_body text,
        primary key (delivery_id, number)
      );

      -- Wake idle dispatchers at commit; one notification per statement, and
      -- PostgreSQL folds equal notifications of one transaction into one.
      create function hookline_notify_deliveries_due() returns trigger language plpgsql as $$
      begin
        perform pg_notify('${DELIVERIES_DUE_CHANNEL}', '');
        return null;
      end $$;
      create trigger webhook_deliveries_due_notify after insert on webhook_deliveries
        for each statement execute function hookline_notify_deliveries_due();
    `);
    await db.query(enableTenantRls('webhook_events'));
    await db.query(enableTenantRls('idempotency_keys'));
    await db.query(enableTenantRls('webhook_deliveries'));
    await db.query(enableTenantRls('delivery_attempts'));
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`
      drop table delivery_attempts; drop table webhook_deliveries; drop table idempotency_keys; drop table webhook_events;
      drop function hookline_notify_deliveries_due();
    `);
  }
}
