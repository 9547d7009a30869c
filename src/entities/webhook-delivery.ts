import { EntitySchema } from 'typeorm';

export const DELIVERY_STATUSES = ['PENDING', 'SENDING', 'DELIVERED', 'FAILED', 'CANCELED'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * One event to one subscription. This table is the queue: the dispatcher
 * claims PENDING rows that are due, and the schedule lives in next_attempt_at.
 */
export class WebhookDelivery {
  id!: string;
  tenantId!: string;
  eventId!: string;
  subscriptionId!: string | null;
  event!: string;
  targetUrl!: string;
  status!: DeliveryStatus;
  /** True while the subscription is inactive: the delivery waits, unclaimed. */
  paused!: boolean;
  /** A sendTestEvent delivery: until its first attempt, it goes whether or not the subscription is active. */
  testEvent!: boolean;
  /** Attempts ever made, retries included. */
  attempts!: number;
  /** Attempts since the schedule last (re)started; indexes the retry schedule. */
  scheduleAttempts!: number;
  lastError!: string | null;
  lastStatusCode!: number | null;
  nextAttemptAt!: Date | null;
  leaseExpiresAt!: Date | null;
  lockedBy!: string | null;
  deliveredAt!: Date | null;
  /** When retryDelivery last put it back to PENDING. */
  retriedAt!: Date | null;
  createdAt!: Date;
  updatedAt!: Date;
}

export const WebhookDeliverySchema = new EntitySchema<WebhookDelivery>({
  name: 'WebhookDelivery',
  target: WebhookDelivery,
  tableName: 'webhook_deliveries',
  synchronize: false,
  columns: {
    id: { type: 'uuid', primary: true },
    tenantId: { type: 'uuid', name: 'tenant_id' },
    eventId: { type: 'uuid', name: 'event_id' },
    subscriptionId: { type: 'uuid', name: 'subscription_id', nullable: true },
    event: { type: 'text' },
    targetUrl: { type: 'text', name: 'target_url' },
    status: { type: 'text' },
    paused: { type: 'boolean', default: false },
    testEvent: { type: 'boolean', name: 'test_event', default: false },
    attempts: { type: 'integer', default: 0 },
    scheduleAttempts: { type: 'integer', name: 'schedule_attempts', default: 0 },
    lastError: { type: 'text', name: 'last_error', nullable: true },
    lastStatusCode: { type: 'integer', name: 'last_status_code', nullable: true },
    nextAttemptAt: { type: 'timestamptz', name: 'next_attempt_at', nullable: true },
    leaseExpiresAt: { type: 'timestamptz', name: 'lease_expires_at', nullable: true },
    lockedBy: { type: 'text', name: 'locked_by', nullable: true },
    deliveredAt: { type: 'timestamptz', name: 'delivered_at', nullable: true },
    retriedAt: { type: 'timestamptz', name: 'retried_at', nullable: true },
    createdAt: { type: 'timestamptz', name: 'created_at', default: () => 'now()' },
    updatedAt: { type: 'timestamptz', name: 'updated_at', default: () => 'now()' },
  },
});
