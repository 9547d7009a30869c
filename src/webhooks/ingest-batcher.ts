// Group commit for triggerEvent: calls of one tenant that arrive while its
// previous batch is being written share one transaction and one statement.
// Under load that turns three round trips per event into three per batch;
// alone, a call waits for nothing but the next turn of the event loop.
import type { DataSource } from 'typeorm';
import { queryRows } from '../db/query.js';
import { TenantSessions, withTenantClient, type TenantId } from '../db/tenant-scope.js';
import { patternsFor } from './catalog.js';
import { DELIVERY_COLUMNS, type DeliveryRow } from './deliveries.js';

export interface BatchItem {
  id: string;
  event: string;
  resourceType: string | null;
  resourceId: string | null;
  dataJson: string;
  body: string;
  createdAt: Date;
}

interface Pending {
  item: BatchItem;
  resolve: (deliveries: DeliveryRow[]) => void;
  reject: (error: unknown) => void;
}

export const MAX_BATCH = 200;

export class IngestBatcher {
  private readonly queues = new Map<string, Pending[]>();
  private readonly busy = new Set<string>();
  /** Tenant-bound connections, when the DataSource names its database by URL. */
  private readonly sessions: TenantSessions | undefined;

  constructor(private readonly dataSource: DataSource) {
    const url = (dataSource.options as { url?: string }).url;
    this.sessions = url ? new TenantSessions(url, () => {}) : undefined;
  }

  /** One statement as the tenant: on a tenant-bound connection (one round trip), else in a transaction. */
  private write(tenantId: TenantId, items: BatchItem[]): Promise<DeliveryRow[]> {
    const statement = (client: import('pg').ClientBase) => insertBatch(client, tenantId, items);
    return this.sessions ? this.sessions.run(tenantId, statement) : withTenantClient(this.dataSource, tenantId, statement);
  }

  close(): Promise<void> {
    return this.sessions?.close() ?? Promise.resolve();
  }

  /** Records one event and its deliveries, in a batch with whatever else this tenant sends now. */
  add(tenantId: TenantId, item: BatchItem): Promise<DeliveryRow[]> {
    return new Promise((resolve, reject) => {
      let queue = this.queues.get(tenantId);
      if (!queue) this.queues.set(tenantId, (queue = []));
      queue.push({ item, resolve, reject });
      if (!this.busy.has(tenantId)) {
        this.busy.add(tenantId);
        setImmediate(() => void this.drain(tenantId));
      }
    });
  }

  private async drain(tenantId: TenantId): Promise<void> {
    for (;;) {
      const queue = this.queues.get(tenantId);
      if (!queue?.length) {
        this.queues.delete(tenantId);
        this.busy.delete(tenantId);
        return;
      }
      const batch = queue.splice(0, MAX_BATCH);
      try {
        const deliveries = await this.write(tenantId, batch.map((p) => p.item));
        const byEvent = new Map<string, DeliveryRow[]>();
        for (const d of deliveries) {
          const list = byEvent.get(d.eventId);
          if (list) list.push(d);
          else byEvent.set(d.eventId, [d]);
        }
        for (const p of batch) p.resolve(byEvent.get(p.item.id) ?? []);
      } catch (error) {
        if (batch.length === 1) {
          batch[0]!.reject(error);
        } else {
          // One bad event must not fail the others: write each on its own.
          for (const p of batch) {
            this.write(tenantId, [p.item]).then(p.resolve, p.reject);
          }
        }
      }
    }
  }
}

/** The events of a batch, and a delivery for each active subscription each one matches, in one statement. */
async function insertBatch(client: import('pg').ClientBase, tenantId: TenantId, items: BatchItem[]): Promise<DeliveryRow[]> {
  const ords: number[] = [];
  const patterns: string[] = [];
  items.forEach((item, i) => {
    for (const pattern of patternsFor(item.event)) {
      ords.push(i + 1);
      patterns.push(pattern);
    }
  });
  const rows = await queryRows<DeliveryRow>(
    client,
    `with input as (
       select * from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
         with ordinality as i(id, event, resource_type, resource_id, data, body, created_at, ord)
     ), ev as (
       insert into webhook_events (id, tenant_id, event, resource_type, resource_id, data, body, idempotency_key, created_at)
       select id, $1, event, resource_type, resource_id, data::jsonb, body, null, created_at from input
     ), patterns as (
       select * from unnest($9::int[], $10::text[]) as p(ord, pattern)
     )
     insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, next_attempt_at, created_at, updated_at)
     select $1, i.id, s.id, i.event, s.url, 'PENDING', false, now(), now(), now()
       from input i
       join webhook_subscriptions s
         on s.tenant_id = $1 and s.active and s.events && array(select p.pattern from patterns p where p.ord = i.ord)
     returning ${DELIVERY_COLUMNS}`,
    [
      tenantId,
      items.map((i) => i.id),
      items.map((i) => i.event),
      items.map((i) => i.resourceType),
      items.map((i) => i.resourceId),
      items.map((i) => i.dataJson),
      items.map((i) => i.body),
      items.map((i) => i.createdAt),
      ords,
      patterns,
    ],
  );
  return rows;
}
