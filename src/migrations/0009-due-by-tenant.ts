import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DELIVERIES_DUE_CHANNEL } from './0003-events-deliveries.js';
import { createQueueIndex } from './sql.js';

/** At most this many tenants are named in one notification; more make an empty one (anyone's). */
export const DUE_NOTIFY_MAX_TENANTS = 32;

// `tenant_id is not null` (always true) keeps the general claim off this index: its
// `tenant_id <> all($7)` does not imply it, a tenant claim's `tenant_id = …` does. Otherwise,
// with fresh statistics of a table holding scheduled retries, PostgreSQL 18 planned the
// general claim as a skip scan of this index and a sort of every due row.
const DUE_TENANT_INDEX = `on webhook_deliveries (tenant_id, next_attempt_at)
  where status = 'PENDING' and not paused and tenant_id is not null`;

/**
 * A tenant's due deliveries without walking anyone else's. The dispatcher's claim
 * takes the oldest due rows first, leaving out those of subscriptions and tenants
 * at their shares; with a large backlog at the head of the queue (a tenant whose
 * endpoint hangs, or a burst) each claim would walk past all of it to find another
 * tenant's new delivery. Notifications of new deliveries now name their tenants,
 * and a busy dispatcher claims for those tenants alone, through this index. It
 * holds only claimable rows, like webhook_deliveries_due: a row enters it when
 * inserted or put back in the queue, never when claimed or recorded as done, so
 * the drain does not pay for it.
 */
export class DueByTenant1764300000009 implements MigrationInterface {
  name = 'DueByTenant1764300000009';

  /** The index is built concurrently by Hookline's own processes (see createQueueIndex). */
  async up(db: QueryRunner): Promise<void> {
    await createQueueIndex(db, 'webhook_deliveries_due_tenant', DUE_TENANT_INDEX);
    await db.query(`
      create or replace function hookline_notify_deliveries_due() returns trigger language plpgsql as $$
      declare
        tenants text[];
      begin
        select array_agg(distinct tenant_id::text) into tenants from new_rows where status = 'PENDING' and not paused;
        if tenants is not null then
          perform pg_notify('${DELIVERIES_DUE_CHANNEL}',
            case when cardinality(tenants) <= ${DUE_NOTIFY_MAX_TENANTS} then array_to_string(tenants, ',') else '' end);
        end if;
        return null;
      end $$`);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`
      drop index webhook_deliveries_due_tenant;
      create or replace function hookline_notify_deliveries_due() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from new_rows where status = 'PENDING' and not paused) then
          perform pg_notify('${DELIVERIES_DUE_CHANNEL}', '');
        end if;
        return null;
      end $$;
    `);
  }
}

/** The same migration outside a transaction, as Hookline's own processes run it (see createQueueIndex). */
export class DueByTenantConcurrently1764300000009 extends DueByTenant1764300000009 {
  transaction = false;
}
