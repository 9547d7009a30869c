import { Column, Entity, PrimaryColumn } from 'typeorm';

export const DELIVERY_STATUSES = ['PENDING', 'SENDING', 'DELIVERED', 'FAILED', 'CANCELED'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * One event to one subscription. This table is the queue: the dispatcher
 * claims PENDING rows that are due, and the schedule lives in next_attempt_at.
 */
@Entity('webhook_deliveries', { synchronize: false })
export class WebhookDelivery {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @Column('uuid', { name: 'event_id' })
  eventId!: string;

  @Column('uuid', { name: 'subscription_id', nullable: true })
  subscriptionId!: string | null;

  @Column('text')
  event!: string;

  @Column('text', { name: 'target_url' })
  targetUrl!: string;

  @Column('text')
  status!: DeliveryStatus;

  /** True while the subscription is inactive: the delivery waits, unclaimed. */
  @Column('boolean', { default: false })
  paused!: boolean;

  @Column('integer', { default: 0 })
  attempts!: number;

  /** Attempts since the schedule last (re)started; indexes the retry schedule. */
  @Column('integer', { name: 'schedule_attempts', default: 0 })
  scheduleAttempts!: number;

  @Column('text', { name: 'last_error', nullable: true })
  lastError!: string | null;

  @Column('integer', { name: 'last_status_code', nullable: true })
  lastStatusCode!: number | null;

  @Column('timestamptz', { name: 'next_attempt_at', nullable: true })
  nextAttemptAt!: Date | null;

  @Column('timestamptz', { name: 'lease_expires_at', nullable: true })
  leaseExpiresAt!: Date | null;

  @Column('text', { name: 'locked_by', nullable: true })
  lockedBy!: string | null;

  @Column('timestamptz', { name: 'delivered_at', nullable: true })
  deliveredAt!: Date | null;

  /** When retryDelivery last put it back to PENDING. */
  @Column('timestamptz', { name: 'retried_at', nullable: true })
  retriedAt!: Date | null;

  @Column('timestamptz', { name: 'created_at', default: () => 'now()' })
  createdAt!: Date;

  @Column('timestamptz', { name: 'updated_at', default: () => 'now()' })
  updatedAt!: Date;
}
