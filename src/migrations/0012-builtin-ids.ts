import type { MigrationInterface, QueryRunner } from 'typeorm';

/** The ids the built-in event types require: an app's record ids are often numbers. */
const ID_FIELDS = ['invoice_id', 'payment_id', 'customer_id', 'order_id'];

/**
 * The built-in types required their ids as strings, as the guide's examples write them
 * ("inv-123"); an ERP whose ids are integers was refused (`invoice_id must be string`), where the
 * contract has a built-in schema require the fields, and allow more. Ids are now a string or an
 * integer; the other fields keep the types every example gives them.
 */
export class BuiltInIds1764300000012 implements MigrationInterface {
  name = 'BuiltInIds1764300000012';

  async up(db: QueryRunner): Promise<void> {
    // Integers JSON parsers keep exactly (a larger one arrives rounded): bigger ids go as text.
    const safe = Number.MAX_SAFE_INTEGER;
    await this.setIdSchema(db, { type: ['string', 'integer'], minimum: -safe, maximum: safe });
  }

  async down(db: QueryRunner): Promise<void> {
    await this.setIdSchema(db, { type: 'string' });
  }

  private async setIdSchema(db: QueryRunner, schema: object): Promise<void> {
    for (const field of ID_FIELDS) {
      await db.query(
        `update event_types set schema = jsonb_set(schema, array['properties', $1], $2::jsonb)
          where tenant_id is null and schema->'properties' ? $1`,
        [field, JSON.stringify(schema)],
      );
    }
  }
}
