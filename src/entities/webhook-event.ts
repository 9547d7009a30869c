import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity('webhook_events', { synchronize: false })
export class WebhookEvent {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @Column('text')
  event!: string;

  @Column('text', { name: 'resource_type', nullable: true })
  resourceType!: string | null;

  @Column('text', { name: 'resource_id', nullable: true })
  resourceId!: string | null;

  @Column('jsonb')
  data!: Record<string, unknown>;

  /** The exact envelope sent by every delivery of this event. */
  @Column('text')
  body!: string;

  @Column('text', { name: 'idempotency_key', nullable: true })
  idempotencyKey!: string | null;

  @Column('timestamptz', { name: 'created_at' })
  createdAt!: Date;
}
