// deliveryUpdated: what the database announces (see migration 0004) becomes
// per-tenant topics of Yoga's PubSub; each subscriber gets its own bounded
// buffer, so a slow or stuck client never holds up the others, and one that
// falls too far behind is disconnected with a reason.
import { createPubSub, type PubSub } from 'graphql-yoga';
import type pg from 'pg';
import { API_KEY_REVOKED_CHANNEL } from '../auth/tenants.js';
import { ErrorCode, HooklineError } from '../errors.js';
import type { Logger } from '../logger.js';
import { DELIVERY_UPDATES_CHANNEL } from '../migrations/0004-live-updates.js';
import { SUBSCRIPTION_STOPPED_CHANNEL, SUBSCRIPTION_STOPPED_HEARD_CHANNEL } from '../migrations/0003-events-deliveries.js';
import { LIVE_LISTENERS_TABLE } from '../migrations/0007-live-listeners.js';
import type { DeliveryStatus } from '../entities/webhook-delivery.js';
import { PostgresEventTarget } from './postgres-event-target.js';
import { SERVER_BEHIND, type ServerBehindAware } from './shared-execution.js';

/** A delivery as announced: the fields that change, and what filters need. */
export interface DeliverySnapshot {
  id: string;
  tenantId: string;
  subscriptionId: string | null;
  eventId: string;
  event: string;
  status: DeliveryStatus;
  attempts: number;
  lastStatusCode: number | null;
  nextAttemptAt: Date | null;
  updatedAt: Date;
  lastError: string | null;
  /** The last error was longer than a notification carries (6000 bytes): loaded by id, like the fields below. */
  lastErrorLeftOut?: true;
  /** Marks a snapshot: fields it lacks (targetUrl, createdAt, …) are loaded by id. */
  snapshot: true;
}

// The twelfth element, true when the last error was left out, since migration 0015.
type Row = [string, string, string | null, string, string, DeliveryStatus, number, number | null, string | null, string, string | null, boolean?];

function parseRows(payload: string): Array<[string, DeliverySnapshot]> {
  const rows = JSON.parse(payload) as Row[];
  return rows.map((r) => [
    `delivery:${r[1]}`,
    {
      id: r[0],
      tenantId: r[1],
      subscriptionId: r[2],
      eventId: r[3],
      event: r[4],
      status: r[5],
      attempts: r[6],
      lastStatusCode: r[7],
      nextAttemptAt: r[8] ? new Date(r[8]) : null,
      updatedAt: new Date(r[9]),
      lastError: r[10],
      ...(r[11] ? { lastErrorLeftOut: true as const } : {}),
      snapshot: true,
    },
  ]);
}

export type LiveTopics = {
  [key: `delivery:${string}`]: [DeliverySnapshot];
  'api-key-revoked': [string];
  'api-key-revocation-heard': [string];
  'subscription-stopped-heard': [string];
};

/** What a change waits for: `heard()` once it has committed, `cancel()` if it did not, or announced nothing. */
export interface Acknowledgements {
  heard(db: pg.Pool, timeoutMs: number): Promise<{ waitedFor: number; missing: number }>;
  cancel(): void;
}

/** Each API process, once it has acted on a revoked key's notice, says so here: `<key id>:<backend pid>`. */
export const API_KEY_REVOCATION_HEARD_CHANNEL = 'hookline_api_key_revocation_heard';

export interface DeliveryFilter {
  event?: string | null;
  subscriptionId?: string | null;
  deliveryId?: string | null;
  status?: DeliveryStatus | null;
}

export class SubscriberTooSlowError extends Error {
  /**
   * @param stalled true when the client has read nothing for the stall limit; false when it
   *   fell a whole buffer behind, and may still be reading (then it can be told why)
   */
  constructor(
    readonly waiting: number,
    readonly stalled: boolean,
  ) {
    super(`live updates: the client stopped reading with ${waiting} updates waiting and was disconnected; reconnect and re-read the deliveries`);
  }
}

/**
 * How many subscribers one tenant may have in this process, one of its API keys, and one
 * WebSocket connection: each is a buffer, and each update is executed and sent once per
 * subscriber whose operation differs (a name, an alias). Unbounded, one key opened 10,000
 * (2,000 connections of 5), and one event for 100 subscriptions made a million messages while
 * another tenant's request waited 26 s; bounded per key only, a tenant's 20 keys opened 2,000
 * and one event for 50 subscriptions held another tenant's request 54 s.
 */
export interface SubscriberLimits {
  perTenant: number;
  perKey: number;
  perConnection: number;
}

export const DEFAULT_SUBSCRIBER_LIMITS: SubscriberLimits = { perTenant: 200, perKey: 100, perConnection: 20 };

/** A subscription refused because its tenant, key or connection has as many as it may (RATE_LIMITED). */
export class TooManySubscribersError extends HooklineError {
  constructor(message: string) {
    super(ErrorCode.RATE_LIMITED, message);
  }
}

/** Why a subscription of a key revoked while it was open ends (a WebSocket is closed with 4401 too). */
export class ApiKeyRevokedError extends HooklineError {
  constructor() {
    super(ErrorCode.UNAUTHENTICATED, 'live updates: the API key of this subscription was revoked; subscribe again with a valid key');
  }
}

/** At most this many changes made while a LISTEN connection was down are announced again. */
export const REPLAY_LIMIT = 10_000;

/** A client that has not read for this long while updates wait is stuck, not just busy. */
export const STALL_MS = 5_000;

export class LiveUpdates {
  readonly target: PostgresEventTarget;
  readonly pubSub: PubSub<LiveTopics>;
  private readonly revokedHandlers = new Set<(apiKeyId: string) => unknown>();
  /** The API keys of the live subscribers, with how many use each (at most limits.perKey). */
  private readonly keysInUse = new Map<string, number>();
  /** How many live subscribers each tenant has (at most limits.perTenant). */
  private readonly tenantsInUse = new Map<string, number>();
  /** How many live subscribers each WebSocket connection has (at most limits.perConnection). */
  private readonly connectionsInUse = new WeakMap<object, number>();
  private revocations: AsyncIterator<string> | undefined;
  /**
   * While what a lost LISTEN connection missed is yet to be announced again: the deliveries
   * announced since, each with the number of the connection that heard it (see replay).
   */
  private readonly heardWhileResuming = new Map<string, number>();

  /**
   * @param bufferLimit updates one subscriber may have waiting; beyond it, it is disconnected
   * @param stallMs a subscriber with updates waiting that has not read for this long is disconnected
   */
  constructor(
    databaseUrl: string,
    log: Logger,
    readonly bufferLimit = 10_000,
    readonly stallMs = STALL_MS,
    livenessMs?: number,
    readonly limits: SubscriberLimits = DEFAULT_SUBSCRIBER_LIMITS,
  ) {
    this.target = new PostgresEventTarget(
      databaseUrl,
      {
        [DELIVERY_UPDATES_CHANNEL]: (payload) => this.heard(parseRows(payload)),
        [API_KEY_REVOKED_CHANNEL]: (payload) => [['api-key-revoked', payload]],
        [API_KEY_REVOCATION_HEARD_CHANNEL]: (payload) => [['api-key-revocation-heard', payload]],
        [SUBSCRIPTION_STOPPED_HEARD_CHANNEL]: (payload) => [['subscription-stopped-heard', payload]],
      },
      log,
      // Every delivery change of every tenant: heard only while someone here subscribes.
      [DELIVERY_UPDATES_CHANNEL],
      livenessMs,
    );
    this.pubSub = createPubSub<LiveTopics>({ eventTarget: this.target as never });
    this.target.onResume = (since) => this.replay(since, log);
  }

  private heard(rows: Array<[string, DeliverySnapshot]>): Array<[string, DeliverySnapshot]> {
    if (this.target.resuming) for (const [, { id }] of rows) this.heardWhileResuming.set(id, this.target.connections);
    return rows;
  }

  /**
   * The changes a lost LISTEN connection did not hear, for the tenants with subscribers here:
   * each delivery changed since then (at most REPLAY_LIMIT, the latest), announced again as
   * its notification would have been. Heard again before this runs, a change may come twice,
   * each time with what the database holds then.
   *
   * A delivery announced on this connection meanwhile is left out: what the query read of it
   * is no newer than that announcement (every change committed before the query is heard
   * before its answer) and may be older (a change committed while it ran), and announced
   * after it, it would take the delivery's state backwards.
   */
  private async replay(sinceMs: number, log: Logger): Promise<void> {
    const connection = this.target.connections;
    try {
      await this.replayOn(connection, sinceMs, log);
    } finally {
      for (const [id, heardOn] of this.heardWhileResuming) if (heardOn <= connection) this.heardWhileResuming.delete(id);
    }
  }

  private async replayOn(connection: number, sinceMs: number, log: Logger): Promise<void> {
    const tenants = this.target.topics('delivery:').map((topic) => topic.slice('delivery:'.length));
    if (!tenants.length) return;
    const rows = await this.target.query<{ row: Row }>(
      `select json_build_array(id, tenant_id, subscription_id, event_id, event, status, attempts, last_status_code,
                               next_attempt_at, updated_at, last_error) as row
         from webhook_deliveries
        where tenant_id = any($1::uuid[]) and updated_at >= to_timestamp($2::float8 / 1000)
        order by updated_at desc
        limit ${REPLAY_LIMIT + 1}`,
      [tenants, sinceMs],
    );
    if (rows.length > REPLAY_LIMIT) {
      log.warn({ tenants: tenants.length, replayed: REPLAY_LIMIT }, 'live updates: more changed while LISTEN was down than are announced again; the latest are');
    }
    const missed = rows
      .slice(0, REPLAY_LIMIT)
      .reverse()
      .map((r) => r.row)
      .filter((row) => this.heardWhileResuming.get(row[0]) !== connection);
    for (const [topic, snapshot] of parseRows(JSON.stringify(missed))) this.target.dispatchEvent(new CustomEvent(topic, { detail: snapshot }));
    if (missed.length) log.info({ count: missed.length }, 'live updates: changes made while LISTEN was down announced again');
  }

  async start(): Promise<void> {
    await this.target.start();
    const iterator = this.pubSub.subscribe('api-key-revoked')[Symbol.asyncIterator]();
    this.revocations = iterator;
    void (async () => {
      for (;;) {
        const { value, done } = await iterator.next();
        if (done) return;
        // Acted on (the key dropped, its live streams ended, the operations under way with it
        // ended): the process that revoked it may answer its caller (see expectRevocation). The
        // next notice is not held up meanwhile.
        void this.announceRevoked(value).then(() => this.target.acknowledge(API_KEY_REVOCATION_HEARD_CHANNEL, value));
      }
    })();
  }

  /**
   * Call before revoking a key; once the revocation has committed, `heard()` resolves when
   * every API process that was hearing revocations has acted on its notice (dropped the key,
   * and seen the operations under way with it end: its backend answers on
   * API_KEY_REVOCATION_HEARD_CHANNEL), or after `timeoutMs`. A process whose
   * LISTEN connection is down does not trust its cache meanwhile (PostgresEventTarget's
   * caughtUp), so the key fails there too; one that connects later starts with an empty
   * cache. So when revokeApiKey answers, the key works nowhere.
   */
  expectRevocation(apiKeyId: string): Acknowledgements {
    return this.expectAcknowledgements('api-key-revocation-heard', apiKeyId, API_KEY_REVOKED_CHANNEL);
  }

  /**
   * Call before changing a subscription in a way its claimed deliveries must not go out as
   * claimed (deleted, deactivated, a new address, headers or secret); once the change has
   * committed, `heard()` resolves when every dispatcher that hears such changes has handed back
   * what it claimed of it and not started (it answers on SUBSCRIPTION_STOPPED_HEARD_CHANNEL), or
   * after `timeoutMs`.
   */
  expectHandBack(subscriptionId: string): Acknowledgements {
    return this.expectAcknowledgements('subscription-stopped-heard', subscriptionId, SUBSCRIPTION_STOPPED_CHANNEL);
  }

  /** Acknowledgements of `id` on `topic`, from every backend that LISTENs to `channel` (live_listeners). */
  private expectAcknowledgements(topic: 'api-key-revocation-heard' | 'subscription-stopped-heard', expectedId: string, channel: string): Acknowledgements {
    const acknowledged = new Set<number>();
    let changed: () => void = () => {};
    const listener = (event: Event) => {
      const [id, pid] = String((event as CustomEvent).detail).split(':');
      if (id !== expectedId) return;
      acknowledged.add(Number(pid));
      changed();
    };
    this.target.addEventListener(topic, listener);
    return {
      cancel: () => this.target.removeEventListener(topic, listener),
      heard: async (db, timeoutMs) => {
        try {
          const { rows } = await db.query<{ pid: number }>(
            // A backend that started after the row was written has the pid of one that died.
            `select l.pid from ${LIVE_LISTENERS_TABLE} l join pg_stat_activity a on a.pid = l.pid and a.backend_start <= l.since where l.channel = $1`,
            [channel],
          );
          const expected = rows.map((r) => r.pid);
          const deadline = Date.now() + timeoutMs;
          const missing = () => expected.filter((pid) => !acknowledged.has(pid)).length;
          while (missing() && Date.now() < deadline) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, deadline - Date.now());
              changed = () => {
                clearTimeout(timer);
                resolve();
              };
            });
          }
          return { waitedFor: expected.length, missing: missing() };
        } finally {
          this.target.removeEventListener(topic, listener);
        }
      },
    };
  }

  /**
   * Acts on a revoked API key as on its NOTIFY: its live subscriptions end and every
   * onApiKeyRevoked handler runs. For revocations found otherwise (the notice was lost).
   */
  announceRevoked(apiKeyId: string): Promise<unknown> {
    return Promise.allSettled([...this.revokedHandlers].map((handler) => handler(apiKeyId)));
  }

  /** The API keys that live subscriptions of this process use. */
  apiKeyIdsInUse(): string[] {
    return [...this.keysInUse.keys()];
  }

  /** `handler` may answer a promise: the revocation is acknowledged once it settles (see expectRevocation). */
  onApiKeyRevoked(handler: (apiKeyId: string) => unknown): () => void {
    this.revokedHandlers.add(handler);
    return () => this.revokedHandlers.delete(handler);
  }

  /**
   * The updates of one tenant matching the filter, as an async iterator with a
   * bounded buffer. Ends when the API key is revoked; throws
   * SubscriberTooSlowError when the client stalls or the buffer overflows. Resolves once
   * this process hears delivery changes: every change after that reaches the iterator.
   */
  async subscribe(
    tenantId: string,
    apiKeyId: string | undefined,
    filter: DeliveryFilter,
    /** Called at once when the subscriber is cut off: it may never read again to learn it. */
    onCutOff?: (error: SubscriberTooSlowError) => void,
    /** The WebSocket connection it comes on, if any (its subscribers are limited too). */
    connection?: object,
  ): Promise<AsyncIterableIterator<DeliverySnapshot>> {
    // Counted from the start, as the key's revocation is watched for: hearing the channel may
    // wait seconds (for transactions open since before), and a revocation acted on meanwhile
    // would otherwise find nothing to end, and this stream would go on for ever.
    this.takeSlot(tenantId, apiKeyId, connection);
    const release = () => this.releaseSlot(tenantId, apiKeyId, connection);
    let revokedWhileStarting = false;
    let unsubscribeRevoked = this.onApiKeyRevoked((revoked) => {
      if (revoked === apiKeyId) revokedWhileStarting = true;
    });
    let stopHearing: () => void;
    try {
      stopHearing = await this.target.demand(DELIVERY_UPDATES_CHANNEL);
    } catch (error) {
      unsubscribeRevoked();
      release();
      throw error;
    }
    unsubscribeRevoked();
    const topic = `delivery:${tenantId}`;
    const buffer: DeliverySnapshot[] = [];
    let waiting: ((result: IteratorResult<DeliverySnapshot>) => void) | undefined;
    let failWaiting: ((error: Error) => void) | undefined;
    let ended = false;
    let failure: Error | undefined;
    let lastRead = Date.now();
    // The client waits for an update the server has yet to execute (SERVER_BEHIND): it reads.
    let serverBehind = false;
    const stalledNow = () => !serverBehind && Date.now() - lastRead >= stallMs;
    const { bufferLimit, stallMs } = this;

    // Also when no further update comes: a stalled client must not hold its buffer for ever.
    let stallTimer: NodeJS.Timeout | undefined;
    const armStallCheck = () => {
      if (stallTimer || ended) return;
      stallTimer = setTimeout(() => {
        stallTimer = undefined;
        if (!buffer.length || ended) return;
        if (stalledNow()) finish(new SubscriberTooSlowError(buffer.length, true));
        else armStallCheck();
      }, Math.max(10, lastRead + stallMs - Date.now()));
      stallTimer.unref();
    };
    const finish = (error?: Error) => {
      if (ended) return;
      ended = true;
      clearTimeout(stallTimer);
      failure = error;
      buffer.length = 0;
      this.target.removeEventListener(topic, listener);
      stopHearing();
      unsubscribeRevoked();
      release();
      if (error && failWaiting) failWaiting(error);
      else waiting?.({ value: undefined, done: true });
      waiting = failWaiting = undefined;
      if (error instanceof SubscriberTooSlowError) onCutOff?.(error);
    };
    unsubscribeRevoked = this.onApiKeyRevoked((revoked) => {
      if (revoked === apiKeyId) finish(new ApiKeyRevokedError());
    });
    const matches = (d: DeliverySnapshot) =>
      (!filter.event || d.event === filter.event) &&
      (!filter.subscriptionId || d.subscriptionId === filter.subscriptionId) &&
      (!filter.deliveryId || d.id === filter.deliveryId) &&
      (!filter.status || d.status === filter.status);

    // Listens on the PubSub's event target itself: each update is taken synchronously, as it
    // is dispatched, whatever the client's pace (no intermediate queue per subscriber).
    const listener = (event: Event) => {
      const value = (event as CustomEvent<DeliverySnapshot>).detail;
      if (ended || !matches(value)) return;
      if (waiting) {
        const resolve = waiting;
        waiting = failWaiting = undefined;
        lastRead = Date.now(); // it was waiting: idle, not stalled
        resolve({ value, done: false });
        return;
      }
      buffer.push(value);
      // Bursts are normal (one dispatcher batch announces up to a hundred rows at once);
      // a client that stops reading, or falls hopelessly behind, is not.
      const stalled = stalledNow();
      if (buffer.length >= bufferLimit || stalled) {
        finish(new SubscriberTooSlowError(buffer.length, stalled));
        return;
      }
      armStallCheck();
    };
    this.target.addEventListener(topic, listener);
    if (revokedWhileStarting) finish(new ApiKeyRevokedError());

    const iterator: AsyncIterableIterator<DeliverySnapshot> & ServerBehindAware = {
      next() {
        lastRead = Date.now();
        if (buffer.length) return Promise.resolve({ value: buffer.shift()!, done: false });
        if (failure) {
          const error = failure;
          failure = undefined;
          return Promise.reject(error);
        }
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          waiting = resolve;
          failWaiting = reject;
        });
      },
      return() {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [SERVER_BEHIND](behind: boolean) {
        serverBehind = behind;
        lastRead = Date.now();
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** One live subscriber more for this tenant, API key and connection, or TooManySubscribersError. */
  private takeSlot(tenantId: string, apiKeyId: string | undefined, connection: object | undefined): void {
    const { perTenant, perKey, perConnection } = this.limits;
    const ofTenant = this.tenantsInUse.get(tenantId) ?? 0;
    const ofKey = apiKeyId ? (this.keysInUse.get(apiKeyId) ?? 0) : 0;
    const ofConnection = connection ? (this.connectionsInUse.get(connection) ?? 0) : 0;
    const wider = 'end one, or let one subscription with a wider filter (or none) serve several';
    if (ofKey >= perKey) {
      throw new TooManySubscribersError(
        `live updates: this API key already has ${perKey} deliveryUpdated subscriptions open on this server, the most it may have (WebSocket and Server-Sent Events together); ${wider}`,
      );
    }
    if (ofTenant >= perTenant) {
      throw new TooManySubscribersError(
        `live updates: this tenant already has ${perTenant} deliveryUpdated subscriptions open on this server, the most it may have (all its API keys, WebSocket and Server-Sent Events together); ${wider}`,
      );
    }
    if (ofConnection >= perConnection) {
      throw new TooManySubscribersError(
        `live updates: this connection already has ${perConnection} deliveryUpdated subscriptions open, the most one connection may have; ${wider}`,
      );
    }
    this.tenantsInUse.set(tenantId, ofTenant + 1);
    if (apiKeyId) this.keysInUse.set(apiKeyId, ofKey + 1);
    if (connection) this.connectionsInUse.set(connection, ofConnection + 1);
  }

  /** One live subscriber less for this tenant, API key and connection. */
  private releaseSlot(tenantId: string, apiKeyId: string | undefined, connection: object | undefined): void {
    const left = (this.tenantsInUse.get(tenantId) ?? 1) - 1;
    if (left > 0) this.tenantsInUse.set(tenantId, left);
    else this.tenantsInUse.delete(tenantId);
    if (apiKeyId) {
      const users = this.keysInUse.get(apiKeyId)! - 1;
      if (users > 0) this.keysInUse.set(apiKeyId, users);
      else this.keysInUse.delete(apiKeyId);
    }
    if (connection) this.connectionsInUse.set(connection, this.connectionsInUse.get(connection)! - 1);
  }

  async close(): Promise<void> {
    await this.revocations?.return?.();
    await this.target.close();
  }
}
