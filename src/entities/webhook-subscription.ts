import { Column, CreateDateColumn, DeleteDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { EarlierSecret } from '../webhooks/secrets.js';

@Entity('webhook_subscriptions', { synchronize: false })
export class WebhookSubscription {
  @PrimaryColumn('uuid', { default: () => 'gen_random_uuid()' })
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @Column('text')
  url!: string;

  /** Exact event names, `prefix.*` patterns, or `*`. */
  @Column('text', { array: true })
  events!: string[];

  @Column('text', { nullable: true })
  description!: string | null;

  @Column('boolean', { default: true })
  active!: boolean;

  @Column('text', { name: 'disabled_reason', nullable: true })
  disabledReason!: string | null;

  /** Extra headers sent with every delivery. */
  @Column('jsonb', { default: () => `'{}'::jsonb` })
  headers!: Record<string, string>;

  @Column('text')
  secret!: string;

  /** After a rotation, the previous secret keeps signing until previousSecretExpiresAt. */
  @Column('text', { name: 'previous_secret', nullable: true })
  previousSecret!: string | null;

  @Column('timestamptz', { name: 'previous_secret_expires_at', nullable: true })
  previousSecretExpiresAt!: Date | null;

  /** Secrets replaced before the previous one that still sign, newest first (see secrets.ts). */
  @Column('jsonb', { name: 'earlier_secrets', nullable: true })
  earlierSecrets!: EarlierSecret[] | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;

  /** Set when deleted: the row stays, seen by no API (TypeORM's find leaves it out), for retryDelivery. */
  @DeleteDateColumn({ type: 'timestamptz', name: 'deleted_at' })
  deletedAt!: Date | null;
}
