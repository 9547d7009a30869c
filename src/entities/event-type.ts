import { Column, CreateDateColumn, Entity, PrimaryColumn } from 'typeorm';

/** The event catalog: built-in types have no tenant; tenants may add their own. */
@Entity('event_types', { synchronize: false })
export class EventType {
  @PrimaryColumn('uuid', { default: () => 'gen_random_uuid()' })
  id!: string;

  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @Column('text')
  name!: string;

  @Column('text')
  description!: string;

  @Column('jsonb')
  schema!: Record<string, unknown>;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;
}
