// Tenants and their API keys. A key is random, shown once, stored as SHA-256.
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { ApiKey } from '../entities/api-key.js';
import { Tenant } from '../entities/tenant.js';
import { CONTROL_CHARACTERS, ErrorCode, HooklineError, badInput, notFound, rejectLongText, rejectUnstorableText } from '../errors.js';
import { isUuid } from '../ids.js';
import { queryRows } from '../db/query.js';
import { withTenant, withTenantCreation, type TenantId } from '../db/tenant-scope.js';
import { API_KEY_PREFIX, hashApiKey } from './viewer.js';

/** Channel on which a revocation is announced, so live connections using the key close at once. */
export const API_KEY_REVOKED_CHANNEL = 'hookline_api_key_revoked';
/** The notice on API_KEY_REVOKED_CHANNEL of keys truncated (migration 0020): any key may be gone. */
export const EVERY_API_KEY = '*';

export function generateApiKey(): string {
  return API_KEY_PREFIX + randomBytes(32).toString('base64url');
}

/** A tenant's or a key's name: one line of at most 200 characters, trimmed. */
function checkName(field: string, name: string): string {
  rejectUnstorableText(field, name);
  const trimmed = name.trim();
  if (!trimmed) throw badInput(field, 'must not be empty');
  // A label shown in lists and logs: a line break in one would break them (or forge a line).
  if (CONTROL_CHARACTERS.test(trimmed)) throw badInput(field, 'must not contain control characters (a tab or a line break, say)');
  rejectLongText(field, trimmed, 200);
  return trimmed;
}

export interface NewApiKey {
  apiKey: string;
  record: ApiKey;
}

export async function createTenant(dataSource: DataSource, name: string): Promise<{ tenant: Tenant; apiKey: string; apiKeyId: string }> {
  const tenantName = checkName('name', name);
  return dataSource.transaction(async (manager) => {
    const tenant = await manager.save(manager.create(Tenant, { name: tenantName }));
    const { apiKey, record } = await insertApiKey(manager, tenant.id as TenantId, 'default');
    // Its id, for revokeApiKey: without it, the first key could never be revoked.
    return { tenant, apiKey, apiKeyId: record.id };
  });
}

export interface ApiKeyInfo {
  id: string;
  name: string;
  createdAt: Date;
}

/** A tenant's active API keys (never the keys themselves: only their hashes are kept), oldest first. */
export async function listApiKeys(dataSource: DataSource, tenantId: TenantId): Promise<ApiKeyInfo[]> {
  return withTenant(dataSource, tenantId, (manager) =>
    queryRows<ApiKeyInfo>(
      manager,
      `select id, name, created_at as "createdAt" from api_keys
        where tenant_id = $1 and revoked_at is null
        order by created_at, id
        limit ${MAX_ACTIVE_API_KEYS}`,
      [tenantId],
    ),
  );
}

async function insertApiKey(manager: import('typeorm').EntityManager, tenantId: TenantId, name: string): Promise<NewApiKey> {
  const apiKey = generateApiKey();
  const record = await manager.save(manager.create(ApiKey, { tenantId, name, keyHash: hashApiKey(apiKey), revokedAt: null }));
  return { apiKey, record };
}

/**
 * Active API keys a tenant may hold. Each key has a rate of its own (HOOKLINE_RATE_LIMIT):
 * without a bound, a tenant could mint keys to multiply its share of a process.
 */
export const MAX_ACTIVE_API_KEYS = 100;

export async function createApiKey(dataSource: DataSource, tenantId: TenantId, name: string): Promise<NewApiKey> {
  const keyName = checkName('name', name);
  return withTenantCreation(dataSource, tenantId, 'api keys', async (manager) => {
    const [{ n }] = await queryRows<{ n: number }>(manager, 'select count(*)::int as n from api_keys where tenant_id = $1 and revoked_at is null', [tenantId]);
    if (n >= MAX_ACTIVE_API_KEYS) {
      throw new HooklineError(ErrorCode.BAD_USER_INPUT, `a tenant may hold at most ${MAX_ACTIVE_API_KEYS} active API keys: revoke one first (revokeApiKey)`);
    }
    return insertApiKey(manager, tenantId, keyName);
  });
}

export async function revokeApiKey(dataSource: DataSource, tenantId: TenantId, id: string): Promise<boolean> {
  if (!isUuid(id)) throw notFound('API key', id);
  return withTenant(dataSource, tenantId, async (manager) => {
    const rows = await queryRows<{ id: string }>(
      manager,
      `update api_keys set revoked_at = coalesce(revoked_at, now())
        where id = $1 and tenant_id = $2 returning id`,
      [id, tenantId],
    );
    if (!rows.length) throw notFound('API key', id);
    // The id as stored (lower case), which every listener compares with.
    await manager.query('select pg_notify($1, $2)', [API_KEY_REVOKED_CHANNEL, rows[0]!.id]);
    return true;
  });
}

export async function findTenant(dataSource: DataSource, tenantId: TenantId): Promise<Tenant> {
  return withTenant(dataSource, tenantId, async (manager) => {
    const tenant = await manager.findOneBy(Tenant, { id: tenantId });
    if (!tenant) throw notFound('tenant', tenantId);
    return tenant;
  });
}
