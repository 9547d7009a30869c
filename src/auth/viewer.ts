// Who is calling: resolved once per request (and per WebSocket operation) from the
// bearer token, then checked by each resolver that needs it.
import { hash, timingSafeEqual } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { forbidden, unauthenticated } from '../errors.js';
import type { TenantId } from '../db/tenant-scope.js';
import { poolOf, queryRows } from '../db/query.js';
import type { AddressLimit } from './rate-limit.js';

export type Viewer =
  | { kind: 'anonymous'; reason?: string }
  | { kind: 'admin' }
  | { kind: 'tenant'; tenantId: TenantId; apiKeyId: string };

export const API_KEY_PREFIX = 'hkl_';

export function hashApiKey(key: string): Buffer {
  return hash('sha256', key, 'buffer');
}

/** Extracts the token of `Bearer <token>`; anything else is no token. */
export function bearerToken(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** Whether `given` is `expected`, compared as digests: in the same time whatever is given. */
export function sameSecret(given: string | undefined, expected: string): boolean {
  return given !== undefined && timingSafeEqual(hashApiKey(given), hashApiKey(expected));
}

const adminHashes = new Map<string, Buffer>();
/** Compares digests, so the comparison takes the same time whatever the token; the admin token's is computed once. */
function isAdminToken(tokenHash: Buffer, adminToken: string): boolean {
  let admin = adminHashes.get(adminToken);
  if (!admin) adminHashes.set(adminToken, (admin = hashApiKey(adminToken)));
  return timingSafeEqual(tokenHash, admin);
}

/**
 * Remembers valid API keys for a minute, so a request costs no lookup. Safe
 * only while revocations are heard at once: the process that revokes forgets
 * the key itself, the others are told by NOTIFY (LiveUpdates), and the cache
 * is bypassed whenever that LISTEN connection is down (and emptied when it
 * comes back, as revocations may have been missed meanwhile).
 */
export class ApiKeyCache {
  private readonly entries = new Map<string, { viewer: Viewer & { kind: 'tenant' }; expires: number }>();
  /** Revoked keys are never cached again, even by a lookup that began before the revocation. */
  private readonly revoked = new Set<string>();
  /** Bumped by clear(): a lookup that began before (maybe while revocations went unheard) is not kept. */
  private generation = 0;
  /**
   * Tokens that named no valid key, for a minute: a client left with a revoked or mistyped
   * key, retrying, costs one lookup, not one per request. Always safe: a token that names no
   * key now never will (a key's token is random, and shown only once it is stored).
   */
  private readonly invalid = new Map<string, number>();
  /** Set by whoever hears revocations; the cache is used only while it answers true. */
  usable: () => boolean = () => false;

  isInvalid(hash: string): boolean {
    const expires = this.invalid.get(hash);
    if (expires === undefined) return false;
    if (expires >= Date.now()) return true;
    this.invalid.delete(hash);
    return false;
  }

  setInvalid(hash: string): void {
    if (this.invalid.size >= 10_000) this.invalid.clear();
    this.invalid.set(hash, Date.now() + this.ttlMs);
  }

  constructor(private readonly ttlMs = 60_000) {}

  get(hash: string): Viewer | undefined {
    if (!this.usable()) return undefined;
    const entry = this.entries.get(hash);
    if (!entry) return undefined;
    if (entry.expires < Date.now()) {
      this.entries.delete(hash);
      return undefined;
    }
    return entry.viewer;
  }

  /** Call before looking a key up; pass the answer to set(). */
  begin(): number {
    return this.usable() ? this.generation : -1;
  }

  set(hash: string, viewer: Viewer & { kind: 'tenant' }, begun: number): void {
    if (begun !== this.generation || !this.usable() || this.revoked.has(viewer.apiKeyId)) return;
    if (this.entries.size >= 10_000) this.entries.clear();
    this.entries.set(hash, { viewer, expires: Date.now() + this.ttlMs });
  }

  /** Whether this process has heard that the key was revoked. */
  isRevoked(apiKeyId: string): boolean {
    return this.revoked.has(apiKeyId);
  }

  invalidate(apiKeyId: string): void {
    if (this.revoked.size >= 100_000) this.revoked.clear();
    this.revoked.add(apiKeyId);
    for (const [hash, entry] of this.entries) if (entry.viewer.apiKeyId === apiKeyId) this.entries.delete(hash);
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }
}

/**
 * Who the Authorization header names. With `limit`, what comes without a valid key counts
 * against the client address's rate (no header, a malformed one, a token that names no key;
 * RateLimitedError past it), and so does each key lookup, taken before it is made (many at
 * once cannot pass together) and given back if it finds a valid key: a client trying tokens
 * cannot make the database search for more than the rate. Keys the process knows and the
 * admin token do not count.
 */
export async function resolveViewer(
  dataSource: DataSource,
  adminToken: string,
  authorization: string | null | undefined,
  cache?: ApiKeyCache,
  limit?: AddressLimit,
): Promise<Viewer> {
  const refused = (reason?: string): Viewer => {
    limit?.take();
    return reason ? { kind: 'anonymous', reason } : { kind: 'anonymous' };
  };
  if (!authorization) return refused();
  const token = bearerToken(authorization);
  if (!token) return refused('the Authorization header must be "Bearer <token>"');
  const hash = hashApiKey(token);
  if (isAdminToken(hash, adminToken)) return { kind: 'admin' };
  if (!token.startsWith(API_KEY_PREFIX)) return refused('the API key is not valid');
  const key = hash.toString('hex');
  const cached = cache?.get(key);
  if (cached) return cached;
  if (cache?.isInvalid(key)) return refused('the API key is not valid or has been revoked');
  limit?.take();
  const begun = cache?.begin() ?? -1;
  const rows = await queryRows<{ id: string; tenant_id: string }>(
    poolOf(dataSource),
    'select id, tenant_id from api_keys where key_hash = $1 and revoked_at is null',
    [hash],
  );
  const row = rows[0];
  if (!row) {
    cache?.setInvalid(key);
    return { kind: 'anonymous', reason: 'the API key is not valid or has been revoked' }; // counted before the lookup
  }
  limit?.giveBack();
  const viewer = { kind: 'tenant' as const, tenantId: row.tenant_id as TenantId, apiKeyId: row.id };
  cache?.set(key, viewer, begun);
  return viewer;
}

/**
 * Which of these API keys no longer work (revoked, or gone with their tenant): for keys
 * in use on open connections, when revocations may have gone unheard.
 */
export async function unusableApiKeys(dataSource: DataSource, apiKeyIds: readonly string[]): Promise<string[]> {
  if (!apiKeyIds.length) return [];
  const rows = await queryRows<{ id: string }>(
    poolOf(dataSource),
    `select k.id from unnest($1::uuid[]) as k(id)
      where not exists (select 1 from api_keys a where a.id = k.id and a.revoked_at is null)`,
    [apiKeyIds],
  );
  return rows.map((r) => r.id);
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
