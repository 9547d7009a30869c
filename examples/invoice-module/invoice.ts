// The ERP's own table: an invoice of one tenant. Column types are explicit
// because tsx (esbuild) emits no decorator metadata.
import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

@Entity('invoices')
export class Invoice {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @Column('text')
  number!: string;

  /** Money as a decimal string ("1500.00"): numeric columns come back from pg as strings. */
  @Column('numeric', { precision: 14, scale: 2 })
  total!: string;

  @Column('text')
  currency!: string;

  @Column('text', { name: 'customer_name' })
  customerName!: string;

  @Column('text', { default: 'draft' })
  status!: string;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;
}
