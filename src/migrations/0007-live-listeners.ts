import type { MigrationInterface, QueryRunner } from 'typeorm';
import { TENANT_ROLE } from './sql.js';
import { DELIVERY_UPDATES_CHANNEL, liveNotifyFunctions } from './0004-live-updates.js';

/**
 * Who listens to which on-demand channel: a row per LISTENing connection (its
 * backend pid), written by PostgresEventTarget as it LISTENs and deleted as it
 * stops. The live triggers announce delivery changes only while a row exists:
 * most of the time no dashboard is open, and building every changed row's JSON
 * and queueing the notification (whose commit takes a server-wide lock that
 * serializes every notifying commit) was work for no one. A connection that died
 * leaves its row behind, which only costs announcements until the next listener
 * clears it.
 */
export const LIVE_LISTENERS_TABLE = 'live_listeners';

export class LiveListeners1764300000007 implements MigrationInterface {
  name = 'LiveListeners1764300000007';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create table ${LIVE_LISTENERS_TABLE} (
        channel text not null,
        pid integer not null,
        since timestamptz not null default now(),
        primary key (channel, pid)
      );
      -- The triggers run as whoever writes the deliveries, tenants included; the table
      -- holds no tenant data.
      grant select on ${LIVE_LISTENERS_TABLE} to ${TENANT_ROLE};
      ${liveNotifyFunctions(`
      if not exists (select 1 from ${LIVE_LISTENERS_TABLE} where channel = '${DELIVERY_UPDATES_CHANNEL}') then
        return null;
      end if;`)}
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`${liveNotifyFunctions()} drop table ${LIVE_LISTENERS_TABLE};`);
  }
}
