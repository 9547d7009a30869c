import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DELIVERIES_DUE_CHANNEL } from './0003-events-deliveries.js';

/**
 * Dispatchers are woken only by inserts that leave a delivery for the queue.
 * Deliveries an API process hands straight to its own dispatcher are inserted
 * already claimed (SENDING): announcing them would only make every dispatcher
 * claim in vain.
 */
export class DueNotifyPending1764300000005 implements MigrationInterface {
  name = 'DueNotifyPending1764300000005';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      drop trigger webhook_deliveries_due_notify on webhook_deliveries;
      create or replace function hookline_notify_deliveries_due() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from new_rows where status = 'PENDING' and not paused) then
          perform pg_notify('${DELIVERIES_DUE_CHANNEL}', '');
        end if;
        return null;
      end $$;
      create trigger webhook_deliveries_due_notify after insert on webhook_deliveries
        referencing new table as new_rows
        for each statement execute function hookline_notify_deliveries_due();
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`
      drop trigger webhook_deliveries_due_notify on webhook_deliveries;
      create or replace function hookline_notify_deliveries_due() returns trigger language plpgsql as $$
      begin
        perform pg_notify('${DELIVERIES_DUE_CHANNEL}', '');
        return null;
      end $$;
      create trigger webhook_deliveries_due_notify after insert on webhook_deliveries
        for each statement execute function hookline_notify_deliveries_due();
    `);
  }
}
