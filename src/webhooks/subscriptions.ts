// Webhook subscriptions of one tenant: where its events go. Every function
// takes the tenant explicitly and runs under withTenant().
import type { EntityManager } from 'typeorm';
import { DELETED_LAST_ERROR, UNMARK_CLAIMED_TEST_EVENTS } from '../dispatcher/queue.js';
import type { TargetGuard } from '../dispatcher/target-guard.js';
import { WebhookSubscription } from '../entities/webhook-subscription.js';
import { ErrorCode, HooklineError, badInput, notFound, rejectLongText, rejectUnstorableText } from '../errors.js';
import { isUuid } from '../ids.js';
import { DELIVERIES_DUE_CHANNEL, SUBSCRIPTION_STOPPED_CHANNEL } from '../migrations/0003-events-deliveries.js';
import { keysetPage, type PageWindow } from '../db/keyset.js';
import { poolOf, queryRows, sqlState } from '../db/query.js';
import { withTenant, withTenantClient, withTenantCreation, type TenantId } from '../db/tenant-scope.js';
import type { Services } from '../services.js';
import type { Acknowledgements } from '../live/delivery-updates.js';
import { checkEventPattern, patternsFor } from './catalog.js';
import { acceptSecret, generateSecret, retireSecret } from './secrets.js';
import { validateTargetUrl } from './target-url.js';

export const MAX_EVENTS_PER_SUBSCRIPTION = 100;
/** The columns of a subscription under its entity's names. */
const SUBSCRIPTION_COLUMNS = `id, tenant_id as "tenantId", url, events, description, active, disabled_reason as "disabledReason",
  headers, secret, previous_secret as "previousSecret", previous_secret_expires_at as "previousSecretExpiresAt",
  earlier_secrets as "earlierSecrets", created_at as "createdAt", updated_at as "updatedAt"`;
export const MAX_CUSTOM_HEADERS = 20;
/**
 * Headers Hookline sets itself, and those that would change how the request travels
 * (which the HTTP client refuses, or which would mislabel the body): a subscription
 * may not set them.
 */
const RESERVED_HEADERS =
  /^(host|content-type|content-length|content-encoding|transfer-encoding|connection|keep-alive|upgrade|expect|te|trailer|proxy-.*|user-agent|webhook-.*|x-signature|x-webhook-.*)$/i;
/**
 * A header value that goes on the wire as written: printable ASCII, spaces and tabs, none of
 * these at either end (HTTP drops them there: the receiver would get another value than the one shown).
 */
const HEADER_VALUE = /^[\t\x20-\x7e]*$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A header name's length: beyond it, receivers answer 431 to every attempt. */
const MAX_HEADER_NAME = 256;
const MAX_HEADER_VALUE = 4096;

/** A header name as an error message shows it: a long one cut short. */
function shownName(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

export interface SubscriptionInput {
  url?: string | null;
  events?: string[] | null;
  description?: string | null;
  active?: boolean | null;
  /** An object of header names to strings; anything else is refused (GraphQL's JSON scalar lets any value through). */
  headers?: unknown;
  secret?: string | null;
}

type SubscriptionServices = Pick<Services, 'dataSource' | 'clock' | 'catalog' | 'targetGuard' | 'log'>;

/**
 * How long a change of a subscription waits, once committed, for every dispatcher to have handed
 * back what it claimed of it (one whose LISTEN connection is down hands back everything it
 * claimed once it listens again).
 */
const HAND_BACK_WAIT_MS = 2_000;

async function checkUrl(guard: TargetGuard, url: string): Promise<string> {
  rejectUnstorableText('url', url);
  const parsed = validateTargetUrl(url, 'url');
  await guard.checkUrl(parsed, 'url');
  return parsed.toString();
}

async function checkEvents(manager: EntityManager, tenantId: TenantId, events: string[]): Promise<string[]> {
  const unique = [...new Set(events.map((e) => e.trim()))];
  if (!unique.length) throw badInput('events', 'must name at least one event, a prefix.* pattern, or *');
  if (unique.length > MAX_EVENTS_PER_SUBSCRIPTION) throw badInput('events', `at most ${MAX_EVENTS_PER_SUBSCRIPTION} entries`);
  const exact: string[] = [];
  const prefixes: string[] = [];
  for (const event of unique) {
    const kind = checkEventPattern('events', event);
    if (kind === 'name') exact.push(event);
    else if (event !== '*') prefixes.push(event.slice(0, -1)); // `invoice.*`: names beginning `invoice.`
  }
  // A pattern no type's name begins with (a misspelt `invoce.*`, `invoice.created.*`) would be
  // saved and never fire, as an unknown exact name would: refused alike. A tenant's own type
  // is created first (createEventType), then subscribed to.
  if (prefixes.length) {
    const unmatched = await queryRows<{ prefix: string }>(
      manager,
      `select p.prefix from unnest($1::text[]) with ordinality as p(prefix, i)
        where not exists (select from event_types t where starts_with(t.name, p.prefix) and (t.tenant_id is null or t.tenant_id = $2))
        order by p.i`,
      [prefixes, tenantId],
    );
    if (unmatched.length) {
      throw badInput('events', `the pattern ${unmatched.map((u) => `"${u.prefix}*"`).join(', ')} matches no event type: see eventTypes (a type of the tenant's own is created first, with createEventType)`);
    }
  }
  if (exact.length) {
    const known = await queryRows<{ name: string }>(
      manager,
      'select name from event_types where name = any($1) and (tenant_id is null or tenant_id = $2)',
      [exact, tenantId],
    );
    const names = new Set(known.map((k) => k.name));
    const unknown = exact.filter((e) => !names.has(e));
    if (unknown.length) throw badInput('events', `unknown event ${unknown.map((u) => `"${u}"`).join(', ')}: see eventTypes`);
  }
  return unique;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function checkHeaders(headers: unknown): Record<string, string> {
  // REST checks the shape too; GraphQL's JSON scalar does not, and a string would be stored as {"0": ...}.
  if (!isPlainObject(headers)) throw badInput('headers', 'must be an object of header names to strings');
  const entries = Object.entries(headers);
  if (entries.length > MAX_CUSTOM_HEADERS) throw badInput('headers', `at most ${MAX_CUSTOM_HEADERS} headers`);
  const result: Record<string, string> = {};
  const seen = new Map<string, string>();
  for (const [name, value] of entries) {
    if (name.length > MAX_HEADER_NAME) throw badInput('headers', `the header name ${shownName(name)} is ${name.length} characters long: at most ${MAX_HEADER_NAME}`);
    if (!HEADER_NAME.test(name)) throw badInput('headers', `${shownName(name)} is not a valid header name`);
    // JSON.parse makes it an own key, but most code (TypeORM's copies among it) sets the
    // object's prototype with it instead: the header would vanish without a word.
    if (name === '__proto__') throw badInput('headers', '"__proto__" cannot be a header name here');
    if (RESERVED_HEADERS.test(name)) throw badInput('headers', `"${name}" is set by Hookline or governs how the request travels, and cannot be given`);
    if (typeof value !== 'string' || value.length > MAX_HEADER_VALUE || !HEADER_VALUE.test(value)) {
      throw badInput('headers', `the value of "${name}" must be a string of at most ${MAX_HEADER_VALUE} printable ASCII characters (no line breaks or control characters)`);
    }
    if (value.trim() !== value) {
      throw badInput('headers', `the value of "${name}" must not start or end with spaces or tabs: HTTP drops them, and the receiver would get another value`);
    }
    // Header names are case-insensitive: both would be sent, as one header with two values.
    const other = seen.get(name.toLowerCase());
    if (other !== undefined) throw badInput('headers', `"${other}" and "${name}" are the same header (names are case-insensitive): give it once`);
    seen.set(name.toLowerCase(), name);
    result[name] = value;
  }
  return result;
}

function checkDescription(description: string | null | undefined): string | null {
  if (description === null || description === undefined) return null;
  rejectUnstorableText('description', description);
  rejectLongText('description', description, 1000);
  return description;
}

/**
 * The tenant's subscription, locked until the transaction ends: what a change does to
 * its deliveries (pause, resume, a new address) and the change itself are one step for
 * the dispatcher, whose record of a retry reads the subscription FOR SHARE.
 */
async function findOwn(manager: EntityManager, tenantId: TenantId, id: string): Promise<WebhookSubscription> {
  if (!isUuid(id)) throw notFound('webhook subscription', id);
  // The lock waits for a transaction writing deliveries for it (triggerEvent's, FOR KEY SHARE), so
  // that they are changed too; an application's transaction that triggered an event and stays
  // open would hold the change, and one of the tenant's connection shares, for as long: at most
  // this long, then the caller is told to try again. The statement's time is bounded, not each
  // wait's (lock_timeout): overlapping transactions, each short, may hold the row without a gap,
  // and a change queued behind another waits for it, then for the holder.
  // An operator's shorter statement_timeout stays the bound.
  const [{ previous, bound }] = await manager.query(
    `with p as materialized (select current_setting('statement_timeout') as previous,
                                   extract(epoch from current_setting('statement_timeout')::interval) * 1000 as ms),
          b as materialized (select previous, (case when ms > 0 and ms < $1 then ms else $1 end)::int as bound from p)
     select previous, bound, set_config('statement_timeout', bound || 'ms', true) from b`,
    [SUBSCRIPTION_LOCK_WAIT_MS],
  );
  const started = performance.now();
  let found: WebhookSubscription | null;
  try {
    // First the lock that transactions writing deliveries (FOR KEY SHARE) do not wait for, nor it
    // for them, but dispatchers' claims do (FOR SHARE, see claimSql): from now on none begins a
    // delivery of this subscription, not even one such a transaction commits while this waits.
    // The claims that passed them by are told to look again as the change commits (or rolls
    // back, the notification with it: then by the next poll, within a second).
    await manager.query('select pg_notify($3, $2) from webhook_subscriptions where id = $1::uuid and tenant_id = $2::uuid for no key update', [id, tenantId, DELIVERIES_DUE_CHANNEL]);
    // What is left of the bound, for the wait for those transactions.
    const left = Math.max(1, Math.round(bound - (performance.now() - started)));
    if (bound - left > 100) await manager.query(`select set_config('statement_timeout', $1, true)`, [`${left}ms`]);
    found = await manager.findOne(WebhookSubscription, { where: { id, tenantId }, lock: { mode: 'pessimistic_write' } });
  } catch (error) {
    // query_canceled, by that timeout (not by an operator's pg_cancel_backend, say, which is
    // answered as any failure is).
    const waited = performance.now() - started;
    if (sqlState(error) !== '57014' || waited < 0.9 * bound) throw error;
    throw new HooklineError(
      ErrorCode.RATE_LIMITED,
      `webhook subscription ${id} is held by another transaction, waited for ${(waited / 1000).toFixed(1)} s: an event being triggered for it in a transaction not yet committed (an application's, through the library), or another change of it; try again once it has ended`,
    );
  }
  await manager.query(`select set_config('statement_timeout', $1, true)`, [previous]);
  if (!found) throw notFound('webhook subscription', id);
  return found;
}

/** How long a change of a subscription waits for its row (see findOwn). */
export const SUBSCRIPTION_LOCK_WAIT_MS = 5_000;

/**
 * Subscriptions a tenant may have (deleted ones aside). Each event is written to every one it
 * selects in one statement, and answered with them all: without a bound, a tenant with tens of
 * thousands would have each event insert as many rows, holding the shared database and the
 * process that answers. An event's `deliveries` field lists this many.
 */
export const MAX_SUBSCRIPTIONS = 1000;

export class SubscriptionService {
  /**
   * Set where the API runs (LiveUpdates.expectHandBack): a change that deletes, deactivates or
   * re-addresses, re-heads or re-signs a subscription answers once every dispatcher, in any
   * process, has handed back what it claimed of it, so that none of those starts as claimed
   * after the answer (they heard of it by a notification, milliseconds later).
   */
  handBacks?: (subscriptionId: string) => Acknowledgements;

  constructor(private readonly services: SubscriptionServices) {}

  /** Runs `change`, which calls `announced()` if it told the dispatchers, then waits for their hand-backs. */
  private async announcing<T>(id: string, change: (announced: () => void) => Promise<T>): Promise<T> {
    const expected = isUuid(id) ? this.handBacks?.(id.toLowerCase()) : undefined; // listening before the commit
    let told = false;
    let result: T;
    try {
      result = await change(() => (told = true));
    } catch (error) {
      expected?.cancel();
      throw error;
    }
    if (!expected) return result;
    if (!told) {
      expected.cancel();
      return result;
    }
    const heard = await expected.heard(poolOf(this.services.dataSource), HAND_BACK_WAIT_MS);
    if (heard.missing) this.services.log.warn({ subscriptionId: id, ...heard }, 'dispatchers did not acknowledge a changed subscription in time');
    return result;
  }

  async create(tenantId: TenantId, input: SubscriptionInput): Promise<{ subscription: WebhookSubscription; secret: string }> {
    if (!input.url) throw badInput('url', 'is required');
    if (!input.events) throw badInput('events', 'is required');
    const secret = acceptSecret(input.secret);
    const description = checkDescription(input.description);
    const headers = checkHeaders(input.headers ?? {});
    const url = await checkUrl(this.services.targetGuard, input.url);
    return withTenantCreation(this.services.dataSource, tenantId, 'subscriptions', async (manager) => {
      const events = await checkEvents(manager, tenantId, input.events!);
      const [{ n }] = await queryRows<{ n: number }>(manager, 'select count(*)::int as n from webhook_subscriptions where tenant_id = $1 and deleted_at is null', [tenantId]);
      if (n >= MAX_SUBSCRIPTIONS) {
        throw new HooklineError(
          ErrorCode.BAD_USER_INPUT,
          `a tenant may have at most ${MAX_SUBSCRIPTIONS.toLocaleString('en')} webhook subscriptions: delete one first (deleteWebhookSubscription), or give one several events (events: [...], patterns such as invoice.*)`,
        );
      }
      const now = this.services.clock.now();
      const subscription = await manager.save(
        manager.create(WebhookSubscription, {
          tenantId,
          url,
          events,
          description,
          active: input.active ?? true,
          disabledReason: null,
          headers,
          secret,
          previousSecret: null,
          previousSecretExpiresAt: null,
          earlierSecrets: null,
          createdAt: now,
          updatedAt: now,
        }),
      );
      return { subscription, secret };
    });
  }

  async update(tenantId: TenantId, id: string, input: SubscriptionInput): Promise<WebhookSubscription> {
    const newUrl = input.url === undefined || input.url === null ? undefined : await checkUrl(this.services.targetGuard, input.url);
    const newHeaders = input.headers === undefined || input.headers === null ? undefined : checkHeaders(input.headers);
    const newDescription = input.description === undefined ? undefined : checkDescription(input.description);
    return this.announcing(id, (announced) => withTenant(this.services.dataSource, tenantId, async (manager) => {
      const subscription = await findOwn(manager, tenantId, id);
      // Only what differs from what it holds is a change: one that changes nothing (an empty
      // input, a form saved as it was) writes nothing, keeps updatedAt, and hands nothing back.
      const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
      const newEvents = input.events === undefined || input.events === null ? undefined : await checkEvents(manager, tenantId, input.events);
      const events = newEvents !== undefined && !same(newEvents, subscription.events) ? newEvents : undefined;
      const url = newUrl !== subscription.url ? newUrl : undefined;
      const headers = newHeaders !== undefined && !same(newHeaders, subscription.headers) ? newHeaders : undefined;
      const description = newDescription !== undefined && newDescription !== subscription.description ? newDescription : undefined;
      const active = input.active !== undefined && input.active !== null && input.active !== subscription.active ? input.active : undefined;
      if ([events, url, headers, description, active].every((change) => change === undefined)) return subscription;
      if (events !== undefined) subscription.events = events;
      if (url !== undefined) subscription.url = url;
      if (headers !== undefined) subscription.headers = headers;
      if (description !== undefined) subscription.description = description;
      if (active !== undefined) {
        subscription.active = active;
        if (active) subscription.disabledReason = null;
        await setDeliveriesPaused(manager, tenantId, id, !active);
        if (!active) announced();
      }
      if (url !== undefined) {
        // Deliveries waiting go to the new address. One being sent now goes, and is shown going,
        // to the address it was claimed with; its next try (or its return to the queue untried)
        // takes the new one. A finished one keeps the address its attempts went to (FAILED too:
        // retryDelivery takes the subscription's address as it is then).
        await manager.query(
          `update webhook_deliveries set target_url = $3, updated_at = now()
            where tenant_id = $1 and subscription_id = $2 and status = 'PENDING'`,
          [tenantId, id, url],
        );
      }
      subscription.updatedAt = this.services.clock.now();
      const saved = await manager.save(subscription);
      // Deliveries a dispatcher claimed with the old address or headers, and has not started, go
      // back to the queue, to be claimed again with the new ones (not sent for seconds more to an
      // address, or with a credential, the tenant has just replaced).
      if (url !== undefined || headers !== undefined) {
        await announceChanged(manager, id);
        announced();
      }
      return saved;
    }));
  }

  /**
   * Deletes the subscription and cancels its deliveries that have not been made. The row
   * stays as a tombstone no API shows, so that retryDelivery can still send one of them
   * to its last address, signed with its secret. The lock (FOR UPDATE, which the
   * deliveries' foreign key checks wait for) lets inserts under way finish first, so
   * their deliveries are canceled too; one that read the subscription before and writes
   * after is canceled by the dispatcher (see the claim).
   */
  async delete(tenantId: TenantId, id: string): Promise<boolean> {
    return this.announcing(id, (announced) => withTenant(this.services.dataSource, tenantId, async (manager) => {
      await findOwn(manager, tenantId, id);
      await manager.query(
        `update webhook_deliveries set status = 'CANCELED', next_attempt_at = null, last_error = ${DELETED_LAST_ERROR},
                updated_at = now()
          where tenant_id = $1 and subscription_id = $2 and status = 'PENDING'`,
        [tenantId, id],
      );
      await manager.softDelete(WebhookSubscription, { id, tenantId });
      // Deliveries a dispatcher claimed (SENDING) and has not started go back, then canceled.
      await announceChanged(manager, id);
      announced();
      return true;
    }));
  }

  /** A new secret (given or generated); the one it replaces, and any replaced within the last 24 hours, keep signing beside it for their 24 hours. */
  async rotateSecret(tenantId: TenantId, id: string, secret?: string | null): Promise<{ subscription: WebhookSubscription; secret: string }> {
    const next = secret === undefined || secret === null ? generateSecret() : acceptSecret(secret);
    return this.announcing(id, (announced) => withTenant(this.services.dataSource, tenantId, async (manager) => {
      const subscription = await findOwn(manager, tenantId, id);
      // Its secret already (a retried call that gave it): done, and the grace of the secret it
      // replaced goes on.
      if (next === subscription.secret) return { subscription, secret: next };
      const now = this.services.clock.now();
      Object.assign(subscription, retireSecret(subscription, next, now));
      subscription.secret = next;
      subscription.updatedAt = now;
      const saved = await manager.save(subscription);
      await announceChanged(manager, id); // claimed deliveries not started are signed anew (see update)
      announced();
      return { subscription: saved, secret: next };
    }));
  }

  async find(tenantId: TenantId, id: string): Promise<WebhookSubscription | null> {
    return (await this.findMany(tenantId, [id]))[0] ?? null;
  }

  /** Reads are on the prepared fast path: they run for every delivery a list or an update shows. */
  findMany(tenantId: TenantId, ids: string[]): Promise<WebhookSubscription[]> {
    const valid = ids.filter(isUuid);
    if (!valid.length) return Promise.resolve([]);
    return withTenantClient(this.services.dataSource, tenantId, (client) =>
      queryRows<WebhookSubscription>(
        client,
        `select ${SUBSCRIPTION_COLUMNS} from webhook_subscriptions where tenant_id = $1 and id = any($2::uuid[]) and deleted_at is null`,
        [tenantId, valid],
      ),
    );
  }

  list(tenantId: TenantId, filter: { event?: string | null; active?: boolean | null }, window: PageWindow): Promise<WebhookSubscription[]> {
    return withTenant(this.services.dataSource, tenantId, async (manager) => {
      const where = ['tenant_id = $1', 'deleted_at is null'];
      const params: unknown[] = [tenantId];
      if (filter.event) {
        // Checked first: patternsFor() of a name of any length would take seconds and the
        // memory of every prefix (32 KB of "a.": 5 s, 700 MB), for every tenant of the process.
        params.push(checkEventPattern('event', filter.event) === 'name' ? patternsFor(filter.event) : [filter.event]);
        where.push(`events && $${params.length}::text[]`);
      }
      if (filter.active !== undefined && filter.active !== null) {
        params.push(filter.active);
        where.push(`active = $${params.length}`);
      }
      return keysetPage<WebhookSubscription>(manager, {
        tenantId,
        table: 'webhook_subscriptions',
        columns: SUBSCRIPTION_COLUMNS,
        where,
        params,
        window,
        newestFirst: false,
      });
    });
  }
}

/**
 * Deliveries of an inactive subscription wait, unclaimed, until it is active again. Turned off,
 * its test events (sendTestEvent's, asked for while it was active or before) wait too, those a
 * dispatcher has claimed included: their mark, which would send them inactive, goes (see
 * HANDED_BACK_PAUSED in dispatcher/queue.ts).
 */
export async function setDeliveriesPaused(manager: EntityManager, tenantId: TenantId, subscriptionId: string, paused: boolean) {
  await manager.query(
    `update webhook_deliveries set paused = $3, ${paused ? 'test_event = false, ' : ''}updated_at = now()
      where tenant_id = $1 and subscription_id = $2 and status = 'PENDING' and paused <> $3`,
    [tenantId, subscriptionId, paused],
  );
  // A statement of its own, with a snapshot of its own: one a claim committed while the update
  // above waited for its row (SENDING now, passed over there) is among them.
  if (paused) await manager.query(UNMARK_CLAIMED_TEST_EVENTS('tenant_id = $1 and subscription_id = $2'), [tenantId, subscriptionId]);
  // Resumed: they are due. Paused: what a dispatcher claimed (SENDING) and has not started
  // goes back, paused too.
  if (paused) await announceChanged(manager, subscriptionId);
  else await manager.query('select pg_notify($1, $2)', [DELIVERIES_DUE_CHANNEL, tenantId]);
}

/**
 * Tells every dispatcher, on commit, that the subscription was deleted, paused or changed: the
 * deliveries of it they claimed and have not started go back to the queue untried (and claims
 * under way as it committed are handed back too), to be claimed again as it is now.
 */
async function announceChanged(manager: EntityManager, subscriptionId: string): Promise<void> {
  await manager.query('select pg_notify($1, $2::uuid::text)', [SUBSCRIPTION_STOPPED_CHANNEL, subscriptionId]); // as stored: lower case
}
