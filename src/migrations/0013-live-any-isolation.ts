import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DELIVERY_UPDATES_CHANNEL, liveNotifyFunctions } from './0004-live-updates.js';
import { LIVE_LISTENERS_TABLE } from './0007-live-listeners.js';

/** The live triggers' guard since this migration: no work unless someone listens, under READ COMMITTED. */
export const LISTENED_OR_OTHER_ISOLATION = `
      if current_setting('transaction_isolation') = 'read committed'
         and not exists (select 1 from ${LIVE_LISTENERS_TABLE} where channel = '${DELIVERY_UPDATES_CHANNEL}') then
        return null;
      end if;`;

/**
 * The live triggers asked live_listeners whether anyone listens with the snapshot of the
 * statement, fresh at each statement under READ COMMITTED, but under REPEATABLE READ or
 * SERIALIZABLE (an app's transaction, through the library) the transaction's first: a
 * subscriber that started after it was never told of what it wrote. Such transactions
 * announce their changes whoever listens (they are few; the check only spares work).
 */
export class LiveAnyIsolation1764300000013 implements MigrationInterface {
  name = 'LiveAnyIsolation1764300000013';

  async up(db: QueryRunner): Promise<void> {
    await db.query(liveNotifyFunctions(LISTENED_OR_OTHER_ISOLATION));
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(
      liveNotifyFunctions(`
      if not exists (select 1 from ${LIVE_LISTENERS_TABLE} where channel = '${DELIVERY_UPDATES_CHANNEL}') then
        return null;
      end if;`),
    );
  }
}
