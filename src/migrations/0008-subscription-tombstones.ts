import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A deleted subscription is kept as a tombstone (`deleted_at`), invisible to every
 * API, so that retryDelivery can send a CANCELED delivery once more: to the
 * subscription's last address, signed with its secret. `retried_at` tells a
 * delivery retried after the deletion (which the dispatcher sends) from one that
 * was in flight or being created as the subscription was deleted (which it
 * cancels, as deleting the row used to).
 */
export class SubscriptionTombstones1764300000008 implements MigrationInterface {
  name = 'SubscriptionTombstones1764300000008';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      alter table webhook_subscriptions add column deleted_at timestamptz;
      alter table webhook_deliveries add column retried_at timestamptz;
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`
      delete from webhook_subscriptions where deleted_at is not null;
      alter table webhook_subscriptions drop column deleted_at;
      alter table webhook_deliveries drop column retried_at;
    `);
  }
}
