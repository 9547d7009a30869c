import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Only a delivery being sent is held by a worker. The record statement relies on
 * it to find a worker's rows by primary key alone (see RECORD_SQL). Adding it
 * checks the existing rows once, at the upgrade.
 */
export class LockedOnlySending1764300000006 implements MigrationInterface {
  name = 'LockedOnlySending1764300000006';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      -- No code leaves a worker on a row it no longer sends; should one exist, it is let go.
      update webhook_deliveries set locked_by = null, lease_expires_at = null where locked_by is not null and status <> 'SENDING';
      alter table webhook_deliveries
        add constraint webhook_deliveries_locked_only_sending check (locked_by is null or status = 'SENDING');
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('alter table webhook_deliveries drop constraint webhook_deliveries_locked_only_sending');
  }
}
