import { EntitySchema } from 'typeorm';

export class WebhookEvent {
  id!: string;
  tenantId!: string;
  event!: string;
  resourceType!: string | null;
  resourceId!: string | null;
  data!: Record<string, unknown>;
  /** The exact envelope sent by every delivery of this event. */
  body!: string;
  idempotencyKey!: string | null;
  createdAt!: Date;
}

export const WebhookEventSchema = new EntitySchema<WebhookEvent>({
  name: 'WebhookEvent',
  target: WebhookEvent,
  tableName: 'webhook_events',
  synchronize: false,
  columns: {
    id: { type: 'uuid', primary: true },
    tenantId: { type: 'uuid', name: 'tenant_id' },
    event: { type: 'text' },
    resourceType: { type: 'text', name: 'resource_type', nullable: true },
    resourceId: { type: 'text', name: 'resource_id', nullable: true },
    data: { type: 'jsonb' },
    body: { type: 'text' },
    idempotencyKey: { type: 'text', name: 'idempotency_key', nullable: true },
    createdAt: { type: 'timestamptz', name: 'created_at' },
  },
});
