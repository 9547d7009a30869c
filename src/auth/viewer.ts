// Who is calling: resolved once per request (or WebSocket connection) from the
// bearer token, then checked by each resolver that needs it.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { forbidden, unauthenticated } from '../errors.js';
import type { TenantId } from '../db/tenant-scope.js';

export type Viewer =
  | { kind: 'anonymous'; reason?: string }
  | { kind: 'admin' }
  | { kind: 'tenant'; tenantId: TenantId; apiKeyId: string };

export const API_KEY_PREFIX = 'hkl_';

export function hashApiKey(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

/** Extracts the token of `Bearer <token>`; anything else is no token. */
export function bearerToken(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function sameSecret(a: string, b: string): boolean {
  const left = createHash('sha256').update(a).digest();
  const right = createHash('sha256').update(b).digest();
  return timingSafeEqual(left, right);
}

export async function resolveViewer(
  dataSource: DataSource,
  adminToken: string,
  authorization: string | null | undefined,
): Promise<Viewer> {
  if (!authorization) return { kind: 'anonymous' };
  const token = bearerToken(authorization);
  if (!token) return { kind: 'anonymous', reason: 'the Authorization header must be "Bearer <token>"' };
  if (sameSecret(token, adminToken)) return { kind: 'admin' };
  if (!token.startsWith(API_KEY_PREFIX)) return { kind: 'anonymous', reason: 'the API key is not valid' };
  // Looked up on every request, so a revoked key stops working at once in every process.
  const rows: { id: string; tenant_id: string }[] = await dataSource.query(
    'select id, tenant_id from api_keys where key_hash = $1 and revoked_at is null',
    [hashApiKey(token)],
  );
  const row = rows[0];
  if (!row) return { kind: 'anonymous', reason: 'the API key is not valid or has been revoked' };
  return { kind: 'tenant', tenantId: row.tenant_id as TenantId, apiKeyId: row.id };
}

export function requireTenant(viewer: Viewer): TenantId {
  if (viewer.kind === 'tenant') return viewer.tenantId;
  if (viewer.kind === 'admin') throw forbidden('the admin token has no tenant: use an API key of a tenant');
  throw unauthenticated(viewer.reason ? `${viewer.reason}: Authorization: Bearer <API key> is required` : undefined);
}

export function requireAdmin(viewer: Viewer): void {
  if (viewer.kind === 'admin') return;
  if (viewer.kind === 'tenant') throw forbidden('only the admin token may do this');
  throw unauthenticated('the admin token is required: Authorization: Bearer <ADMIN_TOKEN>');
}
