import type { MigrationInterface, QueryRunner } from 'typeorm';
import { liveNotifyFunctions } from './0004-live-updates.js';
import { LISTENED_OR_OTHER_ISOLATION } from './0013-live-any-isolation.js';

/**
 * Live updates cut a delivery's last error to its first 200 characters (to keep ten rows of a
 * notification within PostgreSQL's payload limit), where a query of the same delivery showed it
 * whole. A row with a longer one now goes in a notification of its own, whole (see
 * liveNotifyFunctions); loaded afresh instead, it could be a later attempt's.
 */
export class LiveLongErrors1764300000015 implements MigrationInterface {
  name = 'LiveLongErrors1764300000015';

  async up(db: QueryRunner): Promise<void> {
    await db.query(liveNotifyFunctions(LISTENED_OR_OTHER_ISOLATION, { wholeErrors: true }));
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(liveNotifyFunctions(LISTENED_OR_OTHER_ISOLATION));
  }
}
