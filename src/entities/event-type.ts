import { EntitySchema } from 'typeorm';

/** The event catalog: built-in types have no tenant; tenants may add their own. */
export class EventType {
  id!: string;
  tenantId!: string | null;
  name!: string;
  description!: string;
  schema!: Record<string, unknown>;
  createdAt!: Date;
  /** When its description or schema last changed (updateEventType): the version catalogs cache by. */
  updatedAt!: Date;
}

export const EventTypeSchema = new EntitySchema<EventType>({
  name: 'EventType',
  target: EventType,
  tableName: 'event_types',
  synchronize: false,
  columns: {
    id: { type: 'uuid', primary: true, default: () => 'gen_random_uuid()' },
    tenantId: { type: 'uuid', name: 'tenant_id', nullable: true },
    name: { type: 'text' },
    description: { type: 'text' },
    schema: { type: 'jsonb' },
    createdAt: { type: 'timestamptz', name: 'created_at', createDate: true },
    updatedAt: { type: 'timestamptz', name: 'updated_at', default: () => 'now()' },
  },
});
