import { Column, Entity, PrimaryColumn } from 'typeorm';

/** One HTTP attempt of a delivery, kept for the attempt log. */
@Entity('delivery_attempts', { synchronize: false })
export class DeliveryAttempt {
  @PrimaryColumn('uuid', { name: 'delivery_id' })
  deliveryId!: string;

  @PrimaryColumn('integer')
  number!: number;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @Column('timestamptz', { name: 'started_at' })
  startedAt!: Date;

  @Column('integer', { name: 'duration_ms' })
  durationMs!: number;

  @Column('integer', { name: 'status_code', nullable: true })
  statusCode!: number | null;

  @Column('text', { nullable: true })
  error!: string | null;

  @Column('text', { name: 'response_body', nullable: true })
  responseBody!: string | null;
}
