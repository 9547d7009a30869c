import { EntitySchema } from 'typeorm';

/** One HTTP attempt of a delivery, kept for the attempt log. */
export class DeliveryAttempt {
  deliveryId!: string;
  number!: number;
  tenantId!: string;
  startedAt!: Date;
  durationMs!: number;
  statusCode!: number | null;
  error!: string | null;
  responseBody!: string | null;
}

export const DeliveryAttemptSchema = new EntitySchema<DeliveryAttempt>({
  name: 'DeliveryAttempt',
  target: DeliveryAttempt,
  tableName: 'delivery_attempts',
  synchronize: false,
  columns: {
    deliveryId: { type: 'uuid', name: 'delivery_id', primary: true },
    number: { type: 'integer', primary: true },
    tenantId: { type: 'uuid', name: 'tenant_id' },
    startedAt: { type: 'timestamptz', name: 'started_at' },
    durationMs: { type: 'integer', name: 'duration_ms' },
    statusCode: { type: 'integer', name: 'status_code', nullable: true },
    error: { type: 'text', nullable: true },
    responseBody: { type: 'text', name: 'response_body', nullable: true },
  },
});
