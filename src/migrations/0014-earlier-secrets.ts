import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A subscription kept one previous secret: a second rotation within 24 hours dropped the
 * first secret at once (a retried rotation, say), though receivers still on it had been
 * promised a day. `earlier_secrets` holds the secrets replaced before the previous one
 * whose day still runs, newest first, as `[{"secret", "expiresAt"}]` (null when there are
 * none). `previous_secret` stays the one replaced last, as processes of older versions read it.
 */
export class EarlierSecrets1764300000014 implements MigrationInterface {
  name = 'EarlierSecrets1764300000014';

  async up(db: QueryRunner): Promise<void> {
    await db.query('alter table webhook_subscriptions add column if not exists earlier_secrets jsonb');
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('alter table webhook_subscriptions drop column if exists earlier_secrets');
  }
}
