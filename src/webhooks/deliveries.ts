// Reading deliveries, their attempts and events, and putting a delivery back
// on the queue. Tenant-scoped like everything else.
import type { DataSource, EntityManager } from 'typeorm';
import { badInput, notFound } from '../errors.js';
import { isUuid } from '../ids.js';
import { keysetPage, type PageWindow } from '../db/keyset.js';
import { queryRows } from '../db/query.js';
import { withTenant, type TenantId } from '../db/tenant-scope.js';
import type { DeliveryStatus } from '../entities/webhook-delivery.js';
import { DELIVERIES_DUE_CHANNEL } from '../migrations/0003-events-deliveries.js';
import { checkEventName } from './catalog.js';

export interface DeliveryRow {
  id: string;
  tenantId: string;
  eventId: string;
  subscriptionId: string | null;
  event: string;
  targetUrl: string;
  status: DeliveryStatus;
  attempts: number;
  lastError: string | null;
  lastStatusCode: number | null;
  nextAttemptAt: Date | null;
  deliveredAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface AttemptRow {
  number: number;
  startedAt: Date;
  durationMs: number;
  statusCode: number | null;
  error: string | null;
  responseBody: string | null;
}

export interface EventRow {
  id: string;
  tenantId: string;
  event: string;
  resourceType: string | null;
  resourceId: string | null;
  data: Record<string, unknown>;
  idempotencyKey: string | null;
  createdAt: Date;
}

export const DELIVERY_COLUMNS = `id, tenant_id as "tenantId", event_id as "eventId", subscription_id as "subscriptionId", event,
  target_url as "targetUrl", status, attempts, last_error as "lastError", last_status_code as "lastStatusCode",
  next_attempt_at as "nextAttemptAt", delivered_at as "deliveredAt", created_at as "createdAt", updated_at as "updatedAt"`;
export const EVENT_COLUMNS = `id, tenant_id as "tenantId", event, resource_type as "resourceType", resource_id as "resourceId",
  data, idempotency_key as "idempotencyKey", created_at as "createdAt"`;

export interface DeliveryFilter {
  event?: string | null;
  status?: DeliveryStatus | null;
  subscriptionId?: string | null;
  eventId?: string | null;
}

/**
 * A filter by id (`subscriptionId`, a live `deliveryId`…): what is no id of this API is refused,
 * naming the filter, rather than matching nothing (a live subscription would wait for ever).
 */
export function checkFilterId(field: string, value: string | null | undefined): void {
  if (value != null && !isUuid(value)) throw badInput(field, `is not an id Hookline gives (a UUID): ${JSON.stringify(value.slice(0, 100))}`);
}

/** What it needs of Services (not imported: the library's declarations would bring the server's in). */
type DeliveryServices = { dataSource: DataSource };

export class DeliveryService {
  constructor(private readonly services: DeliveryServices) {}

  private scoped<T>(tenantId: TenantId, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    return withTenant(this.services.dataSource, tenantId, fn);
  }

  find(tenantId: TenantId, id: string): Promise<DeliveryRow | null> {
    if (!isUuid(id)) return Promise.resolve(null);
    return this.scoped(tenantId, async (m) => {
      const [row] = await queryRows<DeliveryRow>(m, `select ${DELIVERY_COLUMNS} from webhook_deliveries where tenant_id = $1 and id = $2`, [
        tenantId,
        id,
      ]);
      return row ?? null;
    });
  }

  /** Deliveries, newest first. The id of no subscription or event of the tenant's filters to nothing. */
  list(tenantId: TenantId, filter: DeliveryFilter, window: PageWindow): Promise<DeliveryRow[]> {
    // An exact name (deliveries are of one event each): one that cannot be is refused, as a
    // subscriptions filter refuses it, rather than silently matching nothing; and so is what is
    // no id of this API.
    if (filter.event) checkEventName('event', filter.event);
    for (const key of ['subscriptionId', 'eventId'] as const) checkFilterId(key, filter[key]);
    return this.scoped(tenantId, (m) => {
      const where = ['tenant_id = $1'];
      const params: unknown[] = [tenantId];
      const add = (sql: string, value: unknown) => {
        params.push(value);
        where.push(sql.replace('?', `$${params.length}`));
      };
      if (filter.event) add('event = ?', filter.event);
      if (filter.status) add('status = ?', filter.status);
      for (const key of ['subscriptionId', 'eventId'] as const) {
        const value = filter[key];
        if (value === undefined || value === null) continue;
        add(key === 'subscriptionId' ? 'subscription_id = ?' : 'event_id = ?', value);
      }
      return keysetPage<DeliveryRow>(m, {
        tenantId,
        table: 'webhook_deliveries',
        columns: DELIVERY_COLUMNS,
        where,
        params,
        window,
        newestFirst: true,
      });
    });
  }

  /** Loads several deliveries at once (live updates, dataloaders); missing and foreign ids are left out. */
  findMany(tenantId: TenantId, ids: string[]): Promise<DeliveryRow[]> {
    const valid = ids.filter(isUuid);
    if (!valid.length) return Promise.resolve([]);
    return this.scoped(tenantId, (m) =>
      queryRows<DeliveryRow>(m, `select ${DELIVERY_COLUMNS} from webhook_deliveries where tenant_id = $1 and id = any($2)`, [
        tenantId,
        valid,
      ]),
    );
  }

  /**
   * The delivery's attempt log, oldest first: the attempts its row counts (`upTo`, its
   * `attempts` as read), so that a row and its log read a moment apart agree (an attempt
   * recorded in between is in neither). Each attempt's number is the count it made.
   */
  async attempts(tenantId: TenantId, deliveryId: string, upTo: number): Promise<AttemptRow[]> {
    return (await this.attemptLogs(tenantId, [{ id: deliveryId, upTo }]))[0]!;
  }

  /**
   * The attempt logs of several deliveries at once (a page's, through a loader), each as
   * attempts() gives it: one statement, not one a delivery.
   */
  async attemptLogs(tenantId: TenantId, deliveries: ReadonlyArray<{ id: string; upTo: number }>): Promise<AttemptRow[][]> {
    const logs = deliveries.map((): AttemptRow[] => []);
    const asked = deliveries.map((d, index) => ({ ...d, index })).filter((d) => isUuid(d.id));
    if (!asked.length) return logs;
    // One delivery may be asked for up to several counts (live snapshots of it): each its own log.
    const rows = await this.scoped(tenantId, (m) =>
      queryRows<AttemptRow & { asked: number }>(
        m,
        `select w.asked, a.number, a.started_at as "startedAt", a.duration_ms as "durationMs",
                a.status_code as "statusCode", a.error, a.response_body as "responseBody"
           from unnest($2::uuid[], $3::int[], $4::int[]) as w(id, up_to, asked)
           join delivery_attempts a on a.tenant_id = $1 and a.delivery_id = w.id and a.number <= w.up_to
          -- Oldest first: an attempt recorded late (its lease expired) is numbered when recorded.
          order by w.asked, a.started_at, a.number`,
        [tenantId, asked.map((d) => d.id), asked.map((d) => d.upTo), asked.map((d) => d.index)],
      ),
    );
    for (const { asked: index, ...attempt } of rows) logs[index]!.push(attempt);
    return logs;
  }

  /** The exact bodies deliveries send, parsed for display: several events' at once (a page's, through a loader), each read once. */
  /** The envelopes sent for these events, as the JSON text sent (not parsed: see RawJson in schema/builder.ts). */
  async payloads(tenantId: TenantId, eventIds: readonly string[]): Promise<Map<string, string>> {
    const valid = [...new Set(eventIds.filter(isUuid))];
    if (!valid.length) return new Map();
    const rows = await this.scoped(tenantId, (m) =>
      queryRows<{ id: string; body: string }>(m, 'select id, body from webhook_events where tenant_id = $1 and id = any($2)', [tenantId, valid]),
    );
    return new Map(rows.map((row) => [row.id, row.body]));
  }

  /** Whether the tenant's event is there (not deleted past the retention). */
  eventExists(tenantId: TenantId, id: string): Promise<boolean> {
    return this.scoped(tenantId, async (m) => (await queryRows(m, 'select 1 from webhook_events where tenant_id = $1 and id = $2', [tenantId, id])).length > 0);
  }

  findEvent(tenantId: TenantId, id: string): Promise<EventRow | null> {
    if (!isUuid(id)) return Promise.resolve(null);
    return this.scoped(tenantId, async (m) => {
      const [row] = await queryRows<EventRow>(m, `select ${EVENT_COLUMNS} from webhook_events where tenant_id = $1 and id = $2`, [
        tenantId,
        id,
      ]);
      return row ?? null;
    });
  }

  /**
   * Puts a FAILED or CANCELED delivery back to PENDING, due now, with the schedule started afresh.
   * Deleting a subscription is what cancels its deliveries; the deleted subscription's
   * tombstone keeps its last address and secret, and the dispatcher sends what was
   * retried after the deletion (retried_at).
   */
  async retry(tenantId: TenantId, id: string): Promise<DeliveryRow> {
    if (!isUuid(id)) throw notFound('delivery', id);
    return this.scoped(tenantId, async (m) => {
      // Its subscription (which a delivery never changes) first, as last committed, held until
      // this retry commits: a (de)activation or a new address under way is waited for, and one
      // that follows sees this delivery PENDING. Then the delivery: the order in which a change
      // of the subscription takes them too (the other order could deadlock with a new address).
      const [owner] = await queryRows<{ subscriptionId: string | null }>(
        m,
        `select subscription_id as "subscriptionId" from webhook_deliveries where tenant_id = $1 and id = $2`,
        [tenantId, id],
      );
      if (!owner) throw notFound('delivery', id);
      const [subscription] = owner.subscriptionId
        ? await queryRows<{ active: boolean; url: string; deleted: boolean }>(
            m,
            'select active, url, deleted_at is not null as deleted from webhook_subscriptions where tenant_id = $1 and id = $2 for share',
            [tenantId, owner.subscriptionId],
          )
        : [];
      const [current] = await queryRows<{ status: DeliveryStatus }>(
        m,
        `select status from webhook_deliveries where tenant_id = $1 and id = $2 for update`,
        [tenantId, id],
      );
      if (!current) throw notFound('delivery', id);
      if (current.status !== 'FAILED' && current.status !== 'CANCELED') {
        throw badInput('id', `delivery ${id} is ${current.status}: only FAILED or CANCELED deliveries can be retried`);
      }
      // Only deliveries from before subscriptions were kept when deleted have none left.
      if (!subscription) throw badInput('id', `delivery ${id} belongs to a subscription deleted for good: it has no endpoint to go to`);
      const [row] = await queryRows<DeliveryRow>(
        m,
        `update webhook_deliveries
            set status = 'PENDING', schedule_attempts = 0, next_attempt_at = now(), paused = $3, target_url = $4,
                lease_expires_at = null, locked_by = null, retried_at = clock_timestamp(), updated_at = now()
          where tenant_id = $1 and id = $2
          returning ${DELIVERY_COLUMNS}`,
        // A deleted subscription cannot be made active again: its deliveries do not wait for it.
        [tenantId, id, !subscription.active && !subscription.deleted, subscription.url],
      );
      await m.query('select pg_notify($1, $2)', [DELIVERIES_DUE_CHANNEL, tenantId]);
      return row!;
    });
  }

  /**
   * retry() for a subscription's FAILED deliveries created at or after `since`, oldest first,
   * at most RETRY_FAILED_BATCH a call (`more`: call again): after an outage of its endpoint.
   * Inactive, they wait paused for it, as its other deliveries do.
   */
  async retryFailed(tenantId: TenantId, subscriptionId: string, since: Date): Promise<{ count: number; more: boolean }> {
    if (!isUuid(subscriptionId)) throw notFound('webhook subscription', subscriptionId);
    if (Number.isNaN(since.getTime())) throw badInput('since', 'is not a date');
    return this.scoped(tenantId, async (m) => {
      // Held as for retry(): a change of the subscription under way is waited for.
      const [subscription] = await queryRows<{ active: boolean; url: string }>(
        m,
        'select active, url from webhook_subscriptions where tenant_id = $1 and id = $2 and deleted_at is null for share',
        [tenantId, subscriptionId],
      );
      if (!subscription) throw notFound('webhook subscription', subscriptionId);
      const rows = await queryRows<{ id: string }>(
        m,
        `with failed as (
           select id from webhook_deliveries
            where subscription_id = $2 and status = 'FAILED' and created_at >= $3 and tenant_id = $1
            order by created_at, id limit $6 for update
         )
         update webhook_deliveries d
            set status = 'PENDING', schedule_attempts = 0, next_attempt_at = now(), paused = $4, target_url = $5,
                lease_expires_at = null, locked_by = null, retried_at = clock_timestamp(), updated_at = now()
           from failed where d.id = failed.id and d.status = 'FAILED'
         returning d.id`,
        [tenantId, subscriptionId, since, !subscription.active, subscription.url, RETRY_FAILED_BATCH],
      );
      const [left] = await queryRows(
        m,
        `select 1 from webhook_deliveries where subscription_id = $2 and status = 'FAILED' and created_at >= $3 and tenant_id = $1 limit 1`,
        [tenantId, subscriptionId, since],
      );
      if (rows.length && subscription.active) await m.query('select pg_notify($1, $2)', [DELIVERIES_DUE_CHANNEL, tenantId]);
      return { count: rows.length, more: !!left };
    });
  }
}

/** At most this many deliveries are put back by one retryFailedDeliveries. */
export const RETRY_FAILED_BATCH = 1_000;
