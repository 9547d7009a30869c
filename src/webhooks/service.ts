// WebhookService.triggerEvent: the transactional outbox. The event and one
// delivery per matching active subscription are written in one statement,
// inside the caller's transaction when one is given, so a business row and
// its webhooks commit or roll back together.
import { randomUUID } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { ErrorCode, HooklineError, badInput, checkText, notFound, rejectUnstorableText, rejectUnstorableJson, toJsonText } from '../errors.js';
import { isUuid } from '../ids.js';
import { poolOf, queryRows, type Sql } from '../db/query.js';
import { probeTenantRole, withTenant, withTenantClient, type TenantId } from '../db/tenant-scope.js';
import type { Clock } from '../clock.js';
import { EventCatalog, patternsFor } from './catalog.js';
import { WebhookFormatter, envelopeOf, refuseUnknownFields, resourceOf } from './formatter.js';
import { EARLIER_SECRETS } from './secrets.js';
import { DELIVERY_COLUMNS, EVENT_COLUMNS, type DeliveryRow, type EventRow } from './deliveries.js';
import {
  HAND_OFF_COLUMNS,
  IngestBatcher,
  handOffParams,
  handOffValues,
  splitHandedOff,
  writeHandingOff,
  type HandOff,
  type IngestOptions,
} from './ingest-batcher.js';
import type { ClaimedDelivery } from '../dispatcher/queue.js';

export const MAX_DATA_BYTES = 256 * 1024;
export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;

export interface TriggerEventInput {
  tenantId: string;
  event: string;
  /** A JSON object (an app's interface types fit: no index signature is asked of them). */
  data: object;
  resourceType?: string | null;
  /** The record's id; an integer is taken as its decimal text. */
  resourceId?: string | number | null;
  idempotencyKey?: string | null;
  /** Send to this subscription only (sendTestEvent), whatever its patterns. */
  subscriptionId?: string;
  /** Set by Hookline's own API: `data` is a request's parsed JSON, so it is what is stored (see validateData). */
  [DATA_IS_JSON]?: true;
}

const TRIGGER_FIELDS: ReadonlySet<string> = new Set(['tenantId', 'event', 'data', 'resourceType', 'resourceId', 'idempotencyKey', 'subscriptionId']);

/** Marks a TriggerEventInput whose data was parsed from JSON (GraphQL's and REST's). */
export const DATA_IS_JSON = Symbol('hookline: data parsed from JSON');

/** The event as recorded (the same shape webhookEvent reads). */
export type TriggeredEvent = EventRow;

/** A delivery as triggerEvent answers it: the stored row, just created. */
export type CreatedDelivery = DeliveryRow;

export interface TriggerResult {
  duplicate: boolean;
  event: TriggeredEvent;
  deliveries: CreatedDelivery[];
}

/**
 * An app's DataSource, of its own copy of TypeORM (0.3 or 1.x): what Hookline calls of it, which
 * both have, so that its types do not tie an app on 0.3 to 1.x's (their classes differ).
 */
export interface AppDataSource {
  readonly isInitialized: boolean;
  query(query: string, parameters?: any[]): Promise<any>;
  transaction(...args: any[]): Promise<any>;
}

/** An EntityManager of the app's copy of TypeORM (0.3 or 1.x), a transaction's: see AppDataSource. */
export interface AppEntityManager {
  query(query: string, parameters?: any[]): Promise<any>;
  transaction(...args: any[]): Promise<any>;
}

export class WebhookService {
  private readonly catalog: EventCatalog;
  /** Made here (library use), so closed here too. */
  private readonly ownCatalog: boolean;
  private readonly batcher: IngestBatcher;
  private eventsCounter: { inc(): void } | undefined;

  private readonly dataSource: DataSource;

  /**
   * `new WebhookService(dataSource)` is enough for library use; the rest is shared when given,
   * and `tenantSessions` is for Hookline's own processes (see IngestBatcher).
   */
  constructor(
    dataSource: DataSource | AppDataSource,
    catalog?: EventCatalog,
    private readonly clock: Clock = { now: () => new Date() },
    options: IngestOptions = {},
  ) {
    this.dataSource = dataSource as DataSource;
    this.catalog = catalog ?? new EventCatalog(this.dataSource);
    this.ownCatalog = !catalog;
    this.batcher = new IngestBatcher(this.dataSource, options);
  }

  /**
   * Records the event and its deliveries. With `manager` inside a transaction,
   * joins it: nothing is visible or sent until the caller commits.
   */
  async triggerEvent(input: TriggerEventInput, manager?: EntityManager | AppEntityManager): Promise<TriggerResult> {
    const result = await this.accept(input, manager as EntityManager | undefined);
    if (!result.duplicate) this.eventsCounter?.inc();
    // In the order a duplicate's answer and webhookEvent.deliveries give (created_at, the same
    // for one event's, then id), not the order the insert made them in.
    result.deliveries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return result;
  }

  /** Counts each event accepted (not a duplicate) in `counter` (the service's metrics). */
  countEventsIn(counter: { inc(): void }): void {
    this.eventsCounter = counter;
  }

  /** Whether the database user was found to switch to the tenant role (probeTenantRole). */
  private roleProbed = false;

  /** Tenants found to exist by checkTenant. */
  private readonly knownTenants = new Set<string>();

  /**
   * In a caller's transaction, an id of no tenant is named (BAD_USER_INPUT) before anything is
   * written: the events' foreign key would refuse it too, but its error would abort the
   * caller's whole transaction. One look per tenant (the tenant role sees its own row only).
   */
  private async checkTenant(tx: EntityManager, tenantId: TenantId): Promise<void> {
    if (this.knownTenants.has(tenantId)) return;
    const rows = await queryRows(tx, 'select 1 from tenants where id = $1', [tenantId]);
    if (!rows.length) throw badInput('tenantId', 'is the id of no tenant');
    if (this.knownTenants.size >= 100_000) this.knownTenants.clear();
    this.knownTenants.add(tenantId);
  }

  private async accept(input: TriggerEventInput, manager?: EntityManager): Promise<TriggerResult> {
    refuseUnknownFields(input, TRIGGER_FIELDS, 'triggerEvent');
    // The library's callers pass it themselves: not an id at all is their input's fault, named.
    if (typeof input.tenantId !== 'string' || !isUuid(input.tenantId)) throw badInput('tenantId', 'is not a tenant id (a UUID)');
    const tenantId = input.tenantId as TenantId;
    // null, as undefined, names none (a JavaScript caller's "no subscription").
    if (input.subscriptionId != null && (typeof input.subscriptionId !== 'string' || !isUuid(input.subscriptionId))) {
      throw badInput('subscriptionId', 'is not a webhook subscription id (a UUID)');
    }
    // From JavaScript anything may come: the name's checks (and its resource type's default) read text.
    if (typeof input.event !== 'string') throw badInput('event', 'is required: an event name such as invoice.created');
    rejectUnstorableText('event', input.event);
    const data = input.data as Record<string, unknown>;
    if (data === null || typeof data !== 'object' || Array.isArray(data)) throw badInput('data', 'must be a JSON object');
    const dataJson = toJsonText('data', data);
    // An object whose JSON is not one (a Date is a string; toJSON may return anything).
    if (!dataJson.startsWith('{')) throw badInput('data', 'must be a JSON object');
    if (Buffer.byteLength(dataJson) > MAX_DATA_BYTES) {
      throw new HooklineError(ErrorCode.PAYLOAD_TOO_LARGE, `data: is larger than ${MAX_DATA_BYTES / 1024} KiB`, 'data');
    }
    rejectUnstorableJson('data', dataJson);
    const idempotencyKey = checkText('idempotencyKey', input.idempotencyKey, 200);
    const { resourceType, resourceId } = resourceOf(input, data);

    const prepared = { dataJson, idempotencyKey, resourceType, resourceId };
    if (!this.roleProbed) {
      await probeTenantRole(manager ?? this.dataSource);
      this.roleProbed = true;
    }
    // In the caller's transaction, through TypeORM: nothing is sent before the caller commits.
    if (manager) {
      return (
        await withTenant(manager, tenantId, async (tx) => {
          await this.checkTenant(tx, tenantId);
          return this.record(tx, tenantId, input, prepared);
        })
      ).result;
    }
    // Idempotency keys and single-subscription sends need their own statement, in a transaction
    // of their own: what it claims for this process's dispatcher goes to it once committed.
    // The data is checked first, so that no connection waits in a transaction for a
    // validation thread (a tenant's checks waiting their turn would hold the pool).
    if (idempotencyKey || input.subscriptionId) {
      const refusal = await this.validate(poolOf(this.dataSource), tenantId, input, prepared).then(
        () => undefined,
        (error: unknown) => {
          if (error instanceof HooklineError) return error;
          throw error;
        },
      );
      const handOff = this.batcher.handOff?.(tenantId);
      const recorded = await writeHandingOff(
        handOff,
        () => withTenantClient(this.dataSource, tenantId, (tx) => this.record(tx, tenantId, input, prepared, handOff, { refusal })),
        (written) => written.claimed,
      ).catch(namingNoTenant);
      return recorded.result;
    }
    return this.recordInBatch(tenantId, input, prepared).catch(namingNoTenant);
  }

  /** The event's type, and its data checked against the type's schema (BAD_USER_INPUT, RATE_LIMITED). */
  private async validate(manager: Sql, tenantId: TenantId, input: TriggerEventInput, prepared: { dataJson: string }): Promise<void> {
    const entry = await this.catalog.find(manager, tenantId, input.event);
    await this.catalog.validateData(tenantId, entry, prepared.dataJson, input[DATA_IS_JSON] ? input.data : undefined);
  }

  private async record(
    manager: Sql,
    tenantId: TenantId,
    input: TriggerEventInput,
    prepared: { dataJson: string; idempotencyKey: string | null; resourceType: string; resourceId: string | null },
    handOff?: HandOff,
    checked?: { refusal?: HooklineError },
  ): Promise<{ result: TriggerResult; claimed: ClaimedDelivery[] }> {
    let refusal = checked?.refusal;
    if (!checked) {
      try {
        await this.validate(manager, tenantId, input, prepared);
      } catch (error) {
        if (!(error instanceof HooklineError)) throw error;
        refusal = error;
      }
    }
    if (refusal) {
      // A retry of a request that was accepted returns its event even if the catalog has
      // changed since (a type made stricter, or deactivated): the key decides, as the contract
      // says, not the catalog of the moment. Only on refusal, so the common path asks nothing.
      if (prepared.idempotencyKey && (await this.keyHeld(manager, tenantId, prepared.idempotencyKey))) {
        return { result: await this.existing(manager, tenantId, prepared.idempotencyKey), claimed: [] };
      }
      throw refusal;
    }
    // The one subscription asked for, looked up before anything is written: in a caller's
    // transaction a NOT_FOUND after the insert left the event written, should the caller go on
    // and commit. FOR KEY SHARE, as the insert reads it: it cannot be deleted in between. (A
    // repeat of an idempotency key returns its event whatever became of the subscription.)
    if (input.subscriptionId && !(prepared.idempotencyKey && (await this.keyHeld(manager, tenantId, prepared.idempotencyKey)))) {
      const own = await queryRows(manager, 'select 1 from webhook_subscriptions where id = $1 and tenant_id = $2 and deleted_at is null for key share', [
        input.subscriptionId,
        tenantId,
      ]);
      if (!own.length) throw notFound('webhook subscription', input.subscriptionId);
    }
    const now = this.clock.now();
    const eventId = randomUUID();

    if (prepared.idempotencyKey) {
      // Claims the key, or takes over one that expired. A concurrent caller with
      // the same key waits here for the first transaction, then sees its row.
      const claimed = await queryRows(
        manager,
        `insert into idempotency_keys (tenant_id, key, event_id, expires_at) values ($1, $2, $3, $4)
         on conflict (tenant_id, key) do update set event_id = excluded.event_id, expires_at = excluded.expires_at
           where idempotency_keys.expires_at <= $5
         returning event_id`,
        [tenantId, prepared.idempotencyKey, eventId, new Date(now.getTime() + IDEMPOTENCY_WINDOW_MS), now],
      );
      if (!claimed.length) return { result: await this.existing(manager, tenantId, prepared.idempotencyKey), claimed: [] };
    }

    // With the data's JSON as checked and stored: the app's object may have changed since.
    const body = WebhookFormatter.serializeWithData(
      envelopeOf({
        id: eventId,
        event: input.event,
        resourceType: prepared.resourceType,
        resourceId: prepared.resourceId,
        tenantId,
        data: {},
        timestamp: now,
      }),
      prepared.dataJson,
    );
    const rows = await queryRows<{ kind: 'event' | 'delivery'; row: any }>(manager, recordSql(!!input.subscriptionId, !!handOff), [
      eventId,
      tenantId,
      input.event,
      prepared.resourceType,
      prepared.resourceId,
      prepared.dataJson,
      body,
      prepared.idempotencyKey,
      input.subscriptionId ?? patternsFor(input.event),
      now,
      ...handOffParams(handOff),
    ]);
    // Looked up above, and held: a safety net, the event going with the transaction.
    if (input.subscriptionId && !rows.some((r) => r.kind === 'delivery')) throw notFound('webhook subscription', input.subscriptionId);
    const event = rows.find((r) => r.kind === 'event')!.row;
    const { deliveries, claimed } = splitHandedOff(
      rows.filter((r) => r.kind === 'delivery').map((r) => toDelivery(r.row)),
      () => body,
    );
    return { result: { duplicate: false, event: toEvent(event), deliveries }, claimed };
  }

  /** The common case: validated here, then written with other events of the tenant (group commit). */
  private async recordInBatch(
    tenantId: TenantId,
    input: TriggerEventInput,
    prepared: { dataJson: string; resourceType: string; resourceId: string | null },
  ): Promise<TriggerResult> {
    // The catalog lookup is scoped by tenant in its SQL and cached after the first call.
    await this.validate(poolOf(this.dataSource), tenantId, input, prepared);
    const createdAt = this.clock.now();
    const id = randomUUID();
    const body = WebhookFormatter.serializeWithData(
      envelopeOf({
        id,
        event: input.event,
        resourceType: prepared.resourceType,
        resourceId: prepared.resourceId,
        tenantId,
        data: {},
        timestamp: createdAt,
      }),
      prepared.dataJson,
    );
    const deliveries = await this.batcher.add(tenantId, {
      id,
      event: input.event,
      resourceType: prepared.resourceType,
      resourceId: prepared.resourceId,
      dataJson: prepared.dataJson,
      body,
      createdAt,
    });
    const event: TriggeredEvent = {
      id,
      tenantId,
      event: input.event,
      resourceType: prepared.resourceType,
      resourceId: prepared.resourceId,
      data: input.data as Record<string, unknown>,
      idempotencyKey: null,
      createdAt,
    };
    return { duplicate: false, event, deliveries };
  }

  /**
   * Lets the batched path claim the deliveries it creates for a dispatcher of this
   * process (see HandOff); the dispatcher says when it has room.
   */
  handOffTo(dispatcher: { handOff(tenantId: string): HandOff | undefined }): void {
    this.batcher.handOff = (tenantId) => dispatcher.handOff(tenantId);
  }

  /** Ends the connections of the batched path (the DataSource stays the caller's). */
  async close(): Promise<void> {
    await this.batcher.close();
    if (this.ownCatalog) await this.catalog.close();
  }

  /**
   * Whether the tenant's key is held by an event of the last 24 hours, waiting for a request
   * with the same key still under way (as the accepted path's insert does): a probe insert,
   * which waits for it and then conflicts if the key is held, undone whatever it did.
   */
  private async keyHeld(manager: Sql, tenantId: TenantId, key: string): Promise<boolean> {
    await queryRows(manager, 'savepoint hookline_key_probe');
    try {
      const free = await queryRows(
        manager,
        `insert into idempotency_keys (tenant_id, key, event_id, expires_at) values ($1, $2, '00000000-0000-0000-0000-000000000000', $3)
         on conflict (tenant_id, key) do update set expires_at = excluded.expires_at where idempotency_keys.expires_at <= $3
         returning 1`,
        [tenantId, key, this.clock.now()],
      );
      return free.length === 0;
    } finally {
      // Undone, and gone: a savepoint left open would nest the caller's later statements in
      // subtransactions, one more for each refusal (past 64 a cost to the whole server).
      await queryRows(manager, 'rollback to savepoint hookline_key_probe');
      await queryRows(manager, 'release savepoint hookline_key_probe');
    }
  }

  private async existing(manager: Sql, tenantId: TenantId, key: string): Promise<TriggerResult> {
    const [event] = await queryRows(
      manager,
      `select ${EVENT_COLUMNS} from webhook_events
        where tenant_id = $1 and id = (select event_id from idempotency_keys where tenant_id = $1 and key = $2)`,
      [tenantId, key],
    );
    if (!event) throw new Error(`idempotency key ${key} points to no event`);
    const deliveries = await queryRows(
      manager,
      `select ${DELIVERY_COLUMNS} from webhook_deliveries where tenant_id = $1 and event_id = $2 order by created_at, id`,
      [tenantId, event.id],
    );
    return { duplicate: true, event: toEvent(event), deliveries: deliveries.map(toDelivery) };
  }
}

const recordTexts = new Map<string, string>();

/**
 * The single-statement write: the event, then a delivery for each matching subscription
 * (or for the one given, active or not). The queue's times are the database's (the
 * dispatcher compares them with now()); the envelope's is the clock's. With a hand-off
 * ($11 the worker), the active subscriptions' deliveries within its room ($13) and each
 * one's share ($16 less its busy count, $14/$15) are inserted claimed, as by a claim.
 */
function recordSql(oneSubscription: boolean, handOff: boolean): string {
  const key = `${oneSubscription}|${handOff}`;
  let text = recordTexts.get(key);
  if (text) return text;
  const target = oneSubscription ? 's.id = $9 and s.deleted_at is null' : 's.active and s.deleted_at is null and s.events && $9::text[]';
  // sendTestEvent's delivery goes out to an inactive subscription too (a test before it is
  // turned on); should it fail, its retry waits, paused, for the subscription like the others.
  const sendable = (row: string) => (oneSubscription ? 'true' : `${row}.active`);
  const event = `ev as (
         insert into webhook_events (id, tenant_id, event, resource_type, resource_id, data, body, idempotency_key, created_at)
         values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $10)
         returning ${EVENT_COLUMNS}
       )`;
  text = handOff
    ? `with ${event}, matched as (
         -- Secrets and headers from the row version its url is (see ingest-batcher.ts).
         select s.id, s.url, s.active, ${sendable('s')} and 1 <= $16::int - coalesce(b.n, 0) as ok,
                s.secret, s.previous_secret, s.previous_secret_expires_at, ${EARLIER_SECRETS} as earlier_secrets, s.headers
           from webhook_subscriptions s
           left join unnest($14::uuid[], $15::int[]) as b(subscription_id, n) on b.subscription_id = s.id
          where s.tenant_id = $2 and ${target}
            for key share of s -- see ingest-batcher.ts: a subscription being deleted is waited for
       ), d as (
         insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, paused, test_event, next_attempt_at,
                                         created_at, updated_at, ${HAND_OFF_COLUMNS})
         select $2, $1, m.id, $3, m.url, not ${sendable('m')}, ${oneSubscription}, now(), now(), now(), ${handOffValues('m.mine')}
           from (select m.*, m.ok and count(*) filter (where m.ok) over (order by m.id) <= $13::int as mine from matched m) m
         returning ${DELIVERY_COLUMNS}, locked_by is not null as "handedOff", lease_expires_at::text as lease
       )
       select 'event' as kind, to_jsonb(ev) as row from ev
       union all
       select 'delivery', to_jsonb(d) || coalesce(
                (select jsonb_build_object('scheduleAttempts', 0, 'secret', m.secret, 'previousSecret', m.previous_secret,
                                           'previousSecretExpiresAt', m.previous_secret_expires_at, 'earlierSecrets', m.earlier_secrets,
                                           'headers', m.headers)
                   from matched m where d."handedOff" and m.id = d."subscriptionId"), '{}')
         from d`
    : `with ${event}, d as (
         insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, test_event, next_attempt_at,
                                         created_at, updated_at)
         select $2, $1, s.id, $3, s.url, 'PENDING', not ${sendable('s')}, ${oneSubscription}, now(), now(), now()
           from webhook_subscriptions s
          where s.tenant_id = $2 and ${target}
            for key share of s
         returning ${DELIVERY_COLUMNS}
       )
       select 'event' as kind, to_jsonb(ev) as row from ev
       union all
       select 'delivery', to_jsonb(d) from d`;
  recordTexts.set(key, text);
  return text;
}

function toEvent(row: any): TriggeredEvent {
  return { ...row, createdAt: new Date(row.createdAt) };
}

/** A delivery row read back through to_jsonb, whose times are strings. */
function toDelivery(row: any): CreatedDelivery {
  return {
    ...row,
    createdAt: new Date(row.createdAt),
    updatedAt: new Date(row.updatedAt),
    nextAttemptAt: row.nextAttemptAt ? new Date(row.nextAttemptAt) : null,
    deliveredAt: row.deliveredAt ? new Date(row.deliveredAt) : null,
  };
}

/**
 * Without a caller's transaction, an id of no tenant is found by the foreign keys to tenants
 * as the event (or its idempotency key) is written, in a transaction of Hookline's own, which
 * it aborted alone: named as in a caller's transaction (checkTenant), not a database error.
 */
function namingNoTenant(error: unknown): never {
  const { code, constraint } = error as { code?: string; constraint?: string };
  if (code === '23503' && typeof constraint === 'string' && constraint.endsWith('_tenant_id_fkey')) throw badInput('tenantId', 'is the id of no tenant');
  throw error;
}
