import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * sendTestEvent's deliveries, marked. Its first attempt goes whether or not the subscription is
 * active; a dispatcher that claimed one for an inactive subscription and was then lost (or could
 * not hand it back) left nothing to tell it from the subscription's other deliveries, and it came
 * back paused, never sent until the subscription was turned on. Marked, it comes back unpaused
 * until it has been tried, unless the subscription was turned off after it was asked for (the mark
 * goes then). A constant default: no rewrite of the table. Those waiting as this runs are marked
 * too: an untried delivery, unpaused, of an inactive subscription is one (no other kind is), and so
 * is an untried test.event being sent to one (a deactivation's claimed deliveries are handed back
 * paused at once; the only other one left is a triggered test.event claimed just as its subscription
 * was turned off). Both found through the queue's partial indexes.
 */
export class TestDeliveries1764300000017 implements MigrationInterface {
  name = 'TestDeliveries1764300000017';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`alter table webhook_deliveries add column test_event boolean not null default false`);
    await db.query(`
      update webhook_deliveries d set test_event = true
        from webhook_subscriptions s
       where s.id = d.subscription_id and not s.active and d.attempts = 0
         and ((d.status = 'PENDING' and not d.paused) or (d.status = 'SENDING' and d.event = 'test.event'))`);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`alter table webhook_deliveries drop column test_event`);
  }
}
