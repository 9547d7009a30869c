// Group commit for triggerEvent: calls of one tenant that arrive while its
// previous batch is being written share one transaction and one statement.
// The statement runs on a connection bound to the tenant, in one round trip
// (and one commit) per batch however many events it holds; alone, a call waits
// for nothing but the next turn of the event loop.
import type { DataSource } from 'typeorm';
import { connectionLost, queryRows } from '../db/query.js';
import { TenantSessions, withTenantClient, type TenantId } from '../db/tenant-scope.js';
import { patternsFor } from './catalog.js';
import { DELIVERY_COLUMNS, type DeliveryRow } from './deliveries.js';
import type { ClaimedDelivery } from '../dispatcher/queue.js';
import { EARLIER_SECRETS, type EarlierSecret } from './secrets.js';

/**
 * A dispatcher of this process that has nothing due and room to send: the
 * insert claims the fresh deliveries for it (inserted SENDING, under its lease),
 * and they are sent as soon as the statement returns, with no notification,
 * wake-up or claim in between. At most `limit` deliveries (within the tenant's share),
 * and per subscription `perSubscription` less what it already holds (`busy`); the rest
 * go to the queue.
 */
export interface HandOff {
  workerId: string;
  leaseMs: number;
  limit: number;
  perSubscription: number;
  busy: ReadonlyMap<string, number>;
  /** The insert committed: these deliveries are claimed by this worker. */
  adopt(claimed: ClaimedDelivery[]): void;
  /** The insert failed or claimed nothing. */
  cancel(): void;
}

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

export interface IngestOptions {
  tenantSessions?: boolean;
  /** Watches the tenant sessions' pool for statements gone unanswered (see watchStatements). */
  watchPool?: (pool: import('pg').Pool) => unknown;
}

export class IngestBatcher {
  private readonly queues = new Map<string, Pending[]>();
  private readonly busy = new Set<string>();
  /** Tenant-bound connections: Hookline's own processes only (see constructor). */
  private readonly sessions: TenantSessions | undefined;
  /** The dispatcher of this process, when it runs one (see HandOff). */
  handOff: ((tenantId: TenantId) => HandOff | undefined) | undefined;

  /**
   * @param tenantSessions keep a pool of tenant-bound connections of its own (one round trip a
   *   batch) for the DataSource's URL: for Hookline's own processes, whose DataSource it made.
   *   An app's DataSource (the library) is used as it is: its pool, with its settings (TLS,
   *   size, timeouts), and nothing left open that would keep the app's process from ending.
   */
  constructor(
    private readonly dataSource: DataSource,
    { tenantSessions = false, watchPool }: IngestOptions = {},
  ) {
    const url = (dataSource.options as { url?: string }).url;
    this.sessions = tenantSessions && url ? new TenantSessions(url, () => {}) : undefined;
    if (this.sessions) watchPool?.(this.sessions.pool);
  }

  /** One statement as the tenant: on a tenant-bound connection (one round trip), else in a transaction. */
  private async write(tenantId: TenantId, items: BatchItem[], handOff?: HandOff): Promise<DeliveryRow[]> {
    const statement = (client: import('pg').ClientBase) => insertBatch(client, tenantId, items, handOff);
    const { deliveries } = await writeHandingOff(
      handOff,
      async () => {
        const rows = await (this.sessions ? this.sessions.run(tenantId, statement) : withTenantClient(this.dataSource, tenantId, statement));
        if (!handOff) return { deliveries: rows, claimed: [] };
        const bodies = new Map(items.map((i) => [i.id, i.body]));
        return splitHandedOff(rows, (eventId) => bodies.get(eventId)!);
      },
      (written) => written.claimed,
    );
    return deliveries;
  }

  /**
   * Writes one event, or finds it written: its id is this call's own, so an event already
   * stored under it is this call's, written by a statement whose answer was lost (the
   * connection died after the commit). Its deliveries are answered rather than an error.
   */
  private async writeOrFind(tenantId: TenantId, item: BatchItem): Promise<DeliveryRow[]> {
    try {
      return await this.write(tenantId, [item]);
    } catch (error) {
      const { code, constraint } = error as { code?: string; constraint?: string };
      if (code !== '23505' || constraint !== 'webhook_events_pkey') throw error;
      return withTenantClient(this.dataSource, tenantId, (client) =>
        queryRows<DeliveryRow>(client, `select ${DELIVERY_COLUMNS} from webhook_deliveries where tenant_id = $1 and event_id = $2 order by id`, [tenantId, item.id]),
      );
    }
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
        const deliveries = await this.write(tenantId, batch.map((p) => p.item), this.handOff?.(tenantId));
        const byEvent = new Map<string, DeliveryRow[]>();
        for (const d of deliveries) {
          const list = byEvent.get(d.eventId);
          if (list) list.push(d);
          else byEvent.set(d.eventId, [d]);
        }
        for (const p of batch) p.resolve(byEvent.get(p.item.id) ?? []);
      } catch (error) {
        if (batch.length === 1 && !connectionLost(error)) {
          batch[0]!.reject(error);
        } else {
          // One bad event must not fail the others: write each on its own. (With the connection
          // lost, the batch may have committed all the same: writeOrFind() finds what it wrote.)
          for (const p of batch) {
            this.writeOrFind(tenantId, p.item).then(p.resolve, p.reject);
          }
        }
      }
    }
  }
}

/**
 * The queue columns of a delivery an insert creates, and their values: claimed by worker
 * $11 under a lease of $12 ms where `mine` holds, as a claim leaves them; else queued.
 */
export const HAND_OFF_COLUMNS = 'status, lease_expires_at, locked_by';
export function handOffValues(mine: string): string {
  return `case when ${mine} then 'SENDING' else 'PENDING' end,
          case when ${mine} then clock_timestamp() + make_interval(secs => $12::double precision / 1000) end,
          case when ${mine} then $11::text end`;
}

/** A hand-off's statement parameters, in the order the inserts number them ($11-$16). */
export function handOffParams(handOff: HandOff | undefined): unknown[] {
  if (!handOff) return [];
  return [handOff.workerId, handOff.leaseMs, handOff.limit, [...handOff.busy.keys()], [...handOff.busy.values()], handOff.perSubscription];
}

/**
 * Runs a write that may claim deliveries for `handOff` and has committed when it returns.
 * What it claimed then goes to the dispatcher at once, before anyone is answered; a failed
 * write, or one that claimed nothing, gives the room back.
 */
export async function writeHandingOff<T>(
  handOff: HandOff | undefined,
  write: () => Promise<T>,
  claimedOf: (written: T) => ClaimedDelivery[],
): Promise<T> {
  let written: T;
  try {
    written = await write();
  } catch (error) {
    handOff?.cancel();
    throw error;
  }
  if (handOff) {
    const claimed = claimedOf(written);
    if (claimed.length) handOff.adopt(claimed);
    else handOff.cancel();
  }
  return written;
}

/**
 * The deliveries as their callers get them, and those an insert claimed for the
 * dispatcher (`handedOff`) as the dispatcher takes them, with their event's body.
 */
export function splitHandedOff(rows: InsertedRow[], bodyOf: (eventId: string) => string): { deliveries: DeliveryRow[]; claimed: ClaimedDelivery[] } {
  const claimed: ClaimedDelivery[] = [];
  const deliveries = rows.map(({ handedOff, lease, scheduleAttempts, secret, previousSecret, previousSecretExpiresAt, earlierSecrets, headers, ...row }) => {
    if (handedOff) {
      claimed.push({
        ...row,
        lease: lease!,
        scheduleAttempts: scheduleAttempts ?? 0,
        secret: secret ?? null,
        previousSecret: previousSecret ?? null,
        previousSecretExpiresAt: previousSecretExpiresAt ? new Date(previousSecretExpiresAt) : null,
        earlierSecrets: earlierSecrets ?? null,
        headers: headers ?? null,
        body: bodyOf(row.eventId),
      });
    }
    return row;
  });
  return { deliveries, claimed };
}

/** A delivery as inserted; with a hand-off, what the dispatcher needs of the claimed ones. */
export type InsertedRow = DeliveryRow & {
  handedOff?: boolean;
  /** lease_expires_at as text, exact (see ClaimedDelivery.lease). */
  lease?: string | null;
  scheduleAttempts?: number;
  secret?: string | null;
  previousSecret?: string | null;
  previousSecretExpiresAt?: Date | null;
  earlierSecrets?: EarlierSecret[] | null;
  headers?: Record<string, string> | null;
};

const insertTexts = new Map<boolean, string>();

function insertSql(handOff: boolean): string {
  let text = insertTexts.get(handOff);
  if (text) return text;
  // With a hand-off, the first $13 matches (in the order of the batch) that fit their
  // subscription's share ($16 less its busy count, $14/$15) are inserted claimed by
  // worker $11 under a lease of $12 ms, as a claim would leave them.
  // The arrays are unnested in FROM, not in the select list as the record statement does
  // (dispatcher/queue.ts): on the tenant sessions PostgreSQL chooses between plans, and the
  // select list's row estimates (100 or more, against 1) made it plan this statement anew on
  // every call (1.2-2.1 against 0.9-1.2 ms for one event, alternating runs).
  text = `with input as (
       select * from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
         with ordinality as i(id, event, resource_type, resource_id, data, body, created_at, ord)
     ), ev as (
       insert into webhook_events (id, tenant_id, event, resource_type, resource_id, data, body, idempotency_key, created_at)
       select id, $1, event, resource_type, resource_id, data::jsonb, body, null, created_at from input
     ), patterns as (
       select * from unnest($9::int[], $10::text[]) as p(ord, pattern)
     ), subs as (
       -- FOR KEY SHARE, as the deliveries' foreign key takes anyway: a subscription being
       -- deleted (locked FOR UPDATE) is waited for, and read again once deleted, so none of its
       -- deliveries is written (or handed off) after its deletion cancelled the others.
       -- A handed-off delivery's secrets and headers come from this same row version as its
       -- url (one read after a lock wait is the updated row; a plain join would be the old).
       select s.id, s.url, s.events${
         handOff
           ? `, s.secret, s.previous_secret, s.previous_secret_expires_at, ${EARLIER_SECRETS} as earlier_secrets, s.headers`
           : ''
       } from webhook_subscriptions s
        where s.tenant_id = $1 and s.active and s.deleted_at is null and s.events && array(select p.pattern from patterns p)
          for key share
     ), matched as (
       select i.id as event_id, i.event, s.id as subscription_id, s.url${
         handOff ? `, i.ord, row_number() over (partition by s.id order by i.ord) as k` : ''
       }
         from input i
         join subs s on s.events && array(select p.pattern from patterns p where p.ord = i.ord)
     )${
       handOff
         ? `, d as (
       insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, paused, next_attempt_at, created_at,
                                       updated_at, ${HAND_OFF_COLUMNS})
       select $1, m.event_id, m.subscription_id, m.event, m.url, false, now(), now(), now(), ${handOffValues('m.mine')}
         from (select m.*, share.ok and count(*) filter (where share.ok) over (order by m.ord, m.subscription_id) <= $13 as mine
                 from matched m
                 left join unnest($14::uuid[], $15::int[]) as b(subscription_id, n) on b.subscription_id = m.subscription_id
                 cross join lateral (select m.k <= $16 - coalesce(b.n, 0) as ok) share) m
       returning *
     )
     select x.*, s.secret, s.previous_secret as "previousSecret", s.previous_secret_expires_at as "previousSecretExpiresAt",
            s.earlier_secrets as "earlierSecrets", s.headers
       from (select ${DELIVERY_COLUMNS}, locked_by is not null as "handedOff", lease_expires_at::text as lease,
                    schedule_attempts as "scheduleAttempts" from d) x
       left join subs s on x."handedOff" and s.id = x."subscriptionId"`
         : `
     insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, next_attempt_at, created_at, updated_at)
     select $1, m.event_id, m.subscription_id, m.event, m.url, 'PENDING', false, now(), now(), now()
       from matched m
     returning ${DELIVERY_COLUMNS}`
     }`;
  insertTexts.set(handOff, text);
  return text;
}

/** The events of a batch, and a delivery for each active subscription each one matches, in one statement. */
async function insertBatch(client: import('pg').ClientBase, tenantId: TenantId, items: BatchItem[], handOff?: HandOff): Promise<InsertedRow[]> {
  const ords: number[] = [];
  const patterns: string[] = [];
  items.forEach((item, i) => {
    for (const pattern of patternsFor(item.event)) {
      ords.push(i + 1);
      patterns.push(pattern);
    }
  });
  const rows = await queryRows<InsertedRow>(
    client,
    insertSql(!!handOff),
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
      ...handOffParams(handOff),
    ],
  );
  return rows;
}
