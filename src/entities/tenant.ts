import { EntitySchema } from 'typeorm';

export class Tenant {
  id!: string;
  name!: string;
  createdAt!: Date;
}

export const TenantSchema = new EntitySchema<Tenant>({
  name: 'Tenant',
  target: Tenant,
  tableName: 'tenants',
  synchronize: false,
  columns: {
    id: { type: 'uuid', primary: true, default: () => 'gen_random_uuid()' },
    name: { type: 'text' },
    createdAt: { type: 'timestamptz', name: 'created_at', createDate: true },
  },
});
