// Who is calling: resolved once per request (and per WebSocket operation) from the
// bearer token, then checked by each resolver that needs it.
import { hash, timingSafeEqual } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { databaseUnavailable, forbidden, unauthenticated, type HooklineError } from '../errors.js';
import type { TenantId } from '../db/tenant-scope.js';
import { poolOf, queryRows } from '../db/query.js';
import { RateLimitedError, type AddressLimit } from './rate-limit.js';
import { CACHE_TRUST_MS } from '../live/postgres-event-target.js';

/**
 * How long revokeApiKey waits for every API process to act on the revocation: past the time a
 * process whose LISTEN connection went silent (and so heard nothing) still trusts its cache.
 */
export const REVOCATION_WAIT_MS = CACHE_TRUST_MS + 500;

/** How long a process waits for the operations under way with a revoked key (ApiKeyCache.idle), within that. */
export const KEY_USE_WAIT_MS = REVOCATION_WAIT_MS - 1_000;

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

  /**
   * Whether the key's revocation could have gone unheard here: the cache is not trusted (its
   * LISTEN connection down or silent) and no revocation of it was heard (see useApiKey).
   */
  unheard(apiKeyId: string): boolean {
    return !this.usable() && !this.revoked.has(apiKeyId);
  }

  /** Whether this process has heard that the key was revoked. */
  isRevoked(apiKeyId: string): boolean {
    return this.revoked.has(apiKeyId);
  }

  /** Operations under way with each key, and who waits for them to end (see use()). */
  private readonly uses = new Map<string, { n: number; waiting: Set<() => void> }>();

  /**
   * Marks an operation made with the key as under way until the function answered is called,
   * or answers undefined for a key this process has heard revoked: the operation is refused,
   * though the key was valid when its request came. A revocation is acknowledged once the
   * operations under way with the key have ended (idle()), so that when revokeApiKey answers,
   * nothing made with the key writes any more.
   */
  use(apiKeyId: string): (() => void) | undefined {
    if (this.revoked.has(apiKeyId)) return undefined;
    let entry = this.uses.get(apiKeyId);
    if (!entry) this.uses.set(apiKeyId, (entry = { n: 0, waiting: new Set() }));
    const counted = entry;
    counted.n++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--counted.n > 0) return;
      if (this.uses.get(apiKeyId) === counted) this.uses.delete(apiKeyId);
      for (const resolve of counted.waiting) resolve();
    };
  }

  /** Resolves once no operation with the key is under way (use()), or after `timeoutMs`; answers how many still are. */
  async idle(apiKeyId: string, timeoutMs: number): Promise<number> {
    const entry = this.uses.get(apiKeyId);
    if (!entry) return 0;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        entry.waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      entry.waiting.add(done);
    });
    return entry.n;
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
  if (cache?.isInvalid(key)) return refused(INVALID_KEY);
  try {
    limit?.take();
  } catch (error) {
    // Over its limit while lookups meet the database's absence: the client (with a valid key as
    // like as not, retrying) is told that, 503, rather than 429 for requests "without a valid key".
    if (error instanceof RateLimitedError && lookupsFailing && performance.now() - lookupsFailing.at < LOOKUPS_FAILING_MS) throw lookupsFailing.error;
    throw error;
  }
  const begun = cache?.begin() ?? -1;
  let rows: Array<{ id: string; tenant_id: string }>;
  try {
    rows = await queryRows<{ id: string; tenant_id: string }>(
      poolOf(dataSource),
      'select id, tenant_id from api_keys where key_hash = $1 and revoked_at is null',
      [hash],
    );
  } catch (error) {
    if (databaseUnavailable(error)) lookupsFailing = { error, at: performance.now() };
    throw error;
  }
  lookupsFailing = undefined;
  const row = rows[0];
  if (!row) {
    cache?.setInvalid(key);
    return { kind: 'anonymous', reason: INVALID_KEY }; // counted before the lookup
  }
  limit?.giveBack();
  const viewer = { kind: 'tenant' as const, tenantId: row.tenant_id as TenantId, apiKeyId: row.id };
  cache?.set(key, viewer, begun);
  return viewer;
}

/** The last key lookup's error and when, while the last one failed for want of the database (for this long). */
let lookupsFailing: { error: unknown; at: number } | undefined;
const LOOKUPS_FAILING_MS = 3_000;

/** Why a request with a key that names no valid key is refused. */
const INVALID_KEY = 'the API key is not valid or has been revoked';

/** The refusal of an operation whose key was revoked after its request came (see ApiKeyCache.use). */
export function keyRevoked(): HooklineError {
  return requireTenantError(INVALID_KEY);
}

/**
 * ApiKeyCache.use() for an operation about to execute, its key's revocation asked of the
 * database first while revocations may go unheard here (the cache not trusted: the LISTEN
 * connection down or silent), as the key was when the request came, maybe before a revocation
 * this process missed. Undefined: refused.
 */
export async function useApiKey(dataSource: DataSource, cache: ApiKeyCache, apiKeyId: string): Promise<(() => void) | undefined> {
  if (cache.unheard(apiKeyId) && (await unusableApiKeys(dataSource, [apiKeyId])).length) cache.invalidate(apiKeyId);
  return cache.use(apiKeyId);
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
  throw requireTenantError(viewer.reason);
}

function requireTenantError(reason: string | undefined): HooklineError {
  return unauthenticated(reason ? `${reason}: Authorization: Bearer <API key> is required` : undefined);
}

export function requireAdmin(viewer: Viewer): void {
  if (viewer.kind === 'admin') return;
  if (viewer.kind === 'tenant') throw forbidden('only the admin token may do this');
  throw unauthenticated('the admin token is required: Authorization: Bearer <ADMIN_TOKEN>');
}
