import type { MigrationInterface, QueryRunner } from 'typeorm';
import { API_KEY_REVOKED_CHANNEL, EVERY_API_KEY } from '../auth/tenants.js';

/**
 * Keys truncated (`truncate api_keys`, or `truncate tenants cascade`, an operator's reset) are
 * announced too: TRUNCATE fires no delete trigger (migration 0019), and names no rows, so the
 * notice says every key (EVERY_API_KEY). Each API process forgets the keys it cached, and
 * checks those its open connections and live streams use, closing theirs that are gone, as
 * after a reconnect of its LISTEN connection. Without it a truncated key kept working from a
 * process's cache for up to a minute.
 */
export class ApiKeysTruncated1764300000020 implements MigrationInterface {
  name = 'ApiKeysTruncated1764300000020';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create function hookline_notify_api_keys_truncated() returns trigger language plpgsql as $$
      begin
        perform pg_notify('${API_KEY_REVOKED_CHANNEL}', '${EVERY_API_KEY}');
        return null;
      end $$;
      create trigger api_keys_truncated after truncate on api_keys
        for each statement execute function hookline_notify_api_keys_truncated();
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop trigger api_keys_truncated on api_keys; drop function hookline_notify_api_keys_truncated();');
  }
}
