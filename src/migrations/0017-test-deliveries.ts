import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * sendTestEvent's deliveries, marked. Its first attempt goes whether or not the subscription is
 * active; a dispatcher that claimed one for an inactive subscription and was then lost (or could
 * not hand it back) left nothing to tell it from the subscription's other deliveries, and it came
 * back paused, never sent until the subscription was turned on. Marked, it comes back unpaused
 * until it has been tried, unless the subscription was turned off after it was asked for (the mark
goes then). A constant default: no rewrite of the table; test events waiting as this runs are
not marked, and wait paused, as before, if a lost worker held one.
 */
export class TestDeliveries1764300000017 implements MigrationInterface {
  name = 'TestDeliveries1764300000017';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`alter table webhook_deliveries add column test_event boolean not null default false`);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`alter table webhook_deliveries drop column test_event`);
  }
}
