import { EntitySchema } from 'typeorm';

/** An API key of one tenant. Only the SHA-256 of the key is stored. */
export class ApiKey {
  id!: string;
  tenantId!: string;
  name!: string;
  keyHash!: Buffer;
  createdAt!: Date;
  revokedAt!: Date | null;
}

export const ApiKeySchema = new EntitySchema<ApiKey>({
  name: 'ApiKey',
  target: ApiKey,
  tableName: 'api_keys',
  synchronize: false,
  columns: {
    id: { type: 'uuid', primary: true, default: () => 'gen_random_uuid()' },
    tenantId: { type: 'uuid', name: 'tenant_id' },
    name: { type: 'text' },
    keyHash: { type: 'bytea', name: 'key_hash' },
    createdAt: { type: 'timestamptz', name: 'created_at', createDate: true },
    revokedAt: { type: 'timestamptz', name: 'revoked_at', nullable: true },
  },
  indices: [{ columns: ['keyHash'], unique: true }],
});
