import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A tenant's event type may be changed (updateEventType): `updated_at` says when, and is the
 * version by which each process's catalog tells its cached schema from the one now stored.
 */
export class EventTypeVersions1764300000021 implements MigrationInterface {
  name = 'EventTypeVersions1764300000021';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      alter table event_types add column updated_at timestamptz;
      update event_types set updated_at = created_at;
      alter table event_types alter column updated_at set default now(), alter column updated_at set not null;
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('alter table event_types drop column updated_at');
  }
}
