import { EntitySchema } from 'typeorm';
import type { EarlierSecret } from '../webhooks/secrets.js';

export class WebhookSubscription {
  id!: string;
  tenantId!: string;
  url!: string;
  /** Exact event names, `prefix.*` patterns, or `*`. */
  events!: string[];
  description!: string | null;
  active!: boolean;
  disabledReason!: string | null;
  /** Extra headers sent with every delivery. */
  headers!: Record<string, string>;
  secret!: string;
  /** After a rotation, the previous secret keeps signing until previousSecretExpiresAt. */
  previousSecret!: string | null;
  previousSecretExpiresAt!: Date | null;
  /** Secrets replaced before the previous one that still sign, newest first (see secrets.ts). */
  earlierSecrets!: EarlierSecret[] | null;
  createdAt!: Date;
  updatedAt!: Date;
  /** Set when deleted: the row stays, seen by no API (TypeORM's find leaves it out), for retryDelivery. */
  deletedAt!: Date | null;
}

export const WebhookSubscriptionSchema = new EntitySchema<WebhookSubscription>({
  name: 'WebhookSubscription',
  target: WebhookSubscription,
  tableName: 'webhook_subscriptions',
  synchronize: false,
  columns: {
    id: { type: 'uuid', primary: true, default: () => 'gen_random_uuid()' },
    tenantId: { type: 'uuid', name: 'tenant_id' },
    url: { type: 'text' },
    events: { type: 'text', array: true },
    description: { type: 'text', nullable: true },
    active: { type: 'boolean', default: true },
    disabledReason: { type: 'text', name: 'disabled_reason', nullable: true },
    headers: { type: 'jsonb', default: () => `'{}'::jsonb` },
    secret: { type: 'text' },
    previousSecret: { type: 'text', name: 'previous_secret', nullable: true },
    previousSecretExpiresAt: { type: 'timestamptz', name: 'previous_secret_expires_at', nullable: true },
    earlierSecrets: { type: 'jsonb', name: 'earlier_secrets', nullable: true },
    createdAt: { type: 'timestamptz', name: 'created_at', createDate: true },
    updatedAt: { type: 'timestamptz', name: 'updated_at', updateDate: true },
    deletedAt: { type: 'timestamptz', name: 'deleted_at', nullable: true, deleteDate: true },
  },
});
