import type { MigrationInterface, QueryRunner } from 'typeorm';
import { liveNotifyFunctions } from './0004-live-updates.js';
import { LISTENED_OR_OTHER_ISOLATION } from './0013-live-any-isolation.js';

/**
 * Migration 0015 as first written measured a last error's bytes as stored, not as JSON writes
 * it into the notification (a quote two bytes, a control character six): an error of quotes
 * could take a notification over PostgreSQL's 8000 bytes, failing the statement that changed
 * the delivery. 0015 now makes the functions right; this makes them so where the first 0015 ran.
 */
export class LiveErrorsAsWritten1764300000016 implements MigrationInterface {
  name = 'LiveErrorsAsWritten1764300000016';

  async up(db: QueryRunner): Promise<void> {
    await db.query(liveNotifyFunctions(LISTENED_OR_OTHER_ISOLATION, { wholeErrors: true }));
  }

  async down(): Promise<void> {
    // 0015's functions, which these are: nothing to undo.
  }
}
