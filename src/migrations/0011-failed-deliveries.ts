import type { MigrationInterface, QueryRunner } from 'typeorm';
import { createQueueIndex } from './sql.js';

/**
 * A subscription's FAILED deliveries, oldest first, without walking the ones it delivered:
 * retryFailedDeliveries puts back those of an outage of its endpoint, and
 * `deliveries(subscriptionId, status: FAILED)` lists them. A row enters it only when its
 * schedule is exhausted, so the queue's claims and records pay nothing for it.
 */
export class FailedDeliveries1764300000011 implements MigrationInterface {
  name = 'FailedDeliveries1764300000011';

  /** The index is built concurrently by Hookline's own processes (see createQueueIndex). */
  async up(db: QueryRunner): Promise<void> {
    await createQueueIndex(db, 'webhook_deliveries_failed', `on webhook_deliveries (subscription_id, created_at, id) where status = 'FAILED'`);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop index webhook_deliveries_failed');
  }
}

/** The same migration outside a transaction, as Hookline's own processes run it. */
export class FailedDeliveriesConcurrently1764300000011 extends FailedDeliveries1764300000011 {
  transaction = false;
}
