import type { MigrationInterface, QueryRunner } from 'typeorm';

export const DELIVERY_UPDATES_CHANNEL = 'hookline_delivery_updates';
/** Rows per notification: a row is at most ~650 bytes, well under PostgreSQL's 8000-byte payload limit. */
export const ROWS_PER_NOTIFICATION = 10;

/**
 * The two trigger functions: created deliveries (new rows), and changed ones (whose
 * status or attempts differ from the old row). `guard` is plpgsql run first, which
 * may return early (migration 0007 skips the work when no process listens). A row's
 * last error went in its first 200 characters, which kept ten rows within the payload
 * limit. With `wholeErrors` (migrations 0015 and 0016) a row whose error is longer (in bytes,
 * as JSON writes it) goes in a notification of its own, its error whole up to 6000 bytes; past
 * that (no error Hookline writes is as long) the error is left out and marked so (a twelfth
 * element, true), for the reader to load it.
 */
export function liveNotifyFunctions(guard = '', { wholeErrors = false } = {}): string {
  // Its length as written into the payload: JSON escapes (a quote, a control character) take
  // up to six bytes a character, and a payload over the limit fails the statement that wrote it.
  const written = (row: string) => `octet_length(to_json(${row}.last_error)::text)`;
  const lastError = wholeErrors ? `case when ${written('c')} <= 6000 then c.last_error end, ${written('c')} > 6000` : 'left(c.last_error, 200)';
  const group = wholeErrors
    ? `case when ${written('r')} > 200 then -row_number() over () else (row_number() over () - 1) / ${ROWS_PER_NOTIFICATION} end`
    : `(row_number() over () - 1) / ${ROWS_PER_NOTIFICATION}`;
  const notifyChunks = (source: string) => `
      ${guard}
      for chunk in
        select json_agg(json_build_array(c.id, c.tenant_id, c.subscription_id, c.event_id, c.event, c.status, c.attempts,
                                         c.last_status_code, c.next_attempt_at, c.updated_at, ${lastError}))::text
          from (select r.*, ${group} as grp from (${source}) r) c
         group by c.grp
      loop
        perform pg_notify('${DELIVERY_UPDATES_CHANNEL}', chunk);
      end loop;
      return null;`;
  return `
      create or replace function hookline_notify_deliveries_created() returns trigger language plpgsql as $$
      declare chunk text;
      begin ${notifyChunks('select * from new_rows')}
      end $$;
      create or replace function hookline_notify_deliveries_changed() returns trigger language plpgsql as $$
      declare chunk text;
      begin ${notifyChunks(`select n.* from new_rows n join old_rows o on o.id = n.id
                               where n.status <> o.status or n.attempts <> o.attempts`)}
      end $$;`;
}

/**
 * Every change of a delivery's status or attempts is announced by the
 * database itself, from statement-level triggers: one notification per ten
 * changed rows of a statement (a dispatcher batch is one statement), sent only
 * if the transaction commits, to every process that listens, whichever made
 * the change. No code path can forget to publish.
 */
export class LiveUpdates1764300000004 implements MigrationInterface {
  name = 'LiveUpdates1764300000004';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      ${liveNotifyFunctions()}
      create trigger webhook_deliveries_created_live after insert on webhook_deliveries
        referencing new table as new_rows
        for each statement execute function hookline_notify_deliveries_created();
      create trigger webhook_deliveries_changed_live after update on webhook_deliveries
        referencing old table as old_rows new table as new_rows
        for each statement execute function hookline_notify_deliveries_changed();
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query(`
      drop trigger webhook_deliveries_changed_live on webhook_deliveries;
      drop trigger webhook_deliveries_created_live on webhook_deliveries;
      drop function hookline_notify_deliveries_changed();
      drop function hookline_notify_deliveries_created();
    `);
  }
}
