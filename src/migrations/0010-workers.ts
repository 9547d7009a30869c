import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The dispatchers that run, each with the last time it said so. A delivery held by a
 * dispatcher that stopped saying so (its process died) is taken back without waiting for its
 * lease, which lasts twice the delivery timeout: with a long timeout (up to 5 minutes) the
 * lease alone would keep a dead process's deliveries far longer than the contract's 60
 * seconds. A dispatcher unknown here (none since this migration) is left to its leases.
 */
export class Workers1764300000010 implements MigrationInterface {
  name = 'Workers1764300000010';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create table hookline_workers (
        id text primary key,
        started_at timestamptz not null default now(),
        seen_at timestamptz not null default now(),
        -- Heard from without a gap (each time within half its lost_after_ms) since then.
        heard_since timestamptz not null default now(),
        -- Not heard from for this long, it has died: its own figure, which it says as often as it needs.
        lost_after_ms integer not null
      )`);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop table hookline_workers');
  }
}
