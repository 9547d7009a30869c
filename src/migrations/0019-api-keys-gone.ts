import type { MigrationInterface, QueryRunner } from 'typeorm';
import { API_KEY_REVOKED_CHANNEL } from '../auth/tenants.js';

/**
 * A key deleted (with its tenant, by an operator in SQL: the API only revokes) is announced as
 * a revoked one is (revokeApiKey's notice): every API process drops it from its cache and closes
 * its connections and live streams at once. Without the notice a process went on trusting the
 * key it remembered for up to a minute, its writes failing on the missing tenant meanwhile.
 * Keys revoked already were announced when they were.
 */
export class ApiKeysGone1764300000019 implements MigrationInterface {
  name = 'ApiKeysGone1764300000019';

  async up(db: QueryRunner): Promise<void> {
    await db.query(`
      create function hookline_notify_api_keys_gone() returns trigger language plpgsql as $$
      declare gone uuid;
      begin
        for gone in select id from old_rows where revoked_at is null loop
          perform pg_notify('${API_KEY_REVOKED_CHANNEL}', gone::text);
        end loop;
        return null;
      end $$;
      create trigger api_keys_gone after delete on api_keys
        referencing old table as old_rows
        for each statement execute function hookline_notify_api_keys_gone();
    `);
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop trigger api_keys_gone on api_keys; drop function hookline_notify_api_keys_gone();');
  }
}
