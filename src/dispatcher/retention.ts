// HOOKLINE_RETENTION: events older than it whose deliveries are all finished (DELIVERED,
// FAILED, CANCELED) and unchanged for as long are deleted, with their deliveries and attempts
// (the foreign keys cascade) and their idempotency key. The tables are the queue and the history
// both; without a bound the history grows for ever. Unset, nothing is deleted.
//
// A process with a dispatcher sweeps every SWEEP_INTERVAL_MS, one of them at a time (an
// advisory lock); tenant by tenant, oldest first, found through the tenant's (tenant_id,
// created_at, id) index. An event is looked at without a lock first: one with a delivery still
// on its way, or a finished one changed within the retention (a FAILED one retried by hand, say),
// or an idempotency key that still answers with it, is kept, and the sweep goes on past it. The
// deliveries of those that look deletable are then locked, SKIP LOCKED, and judged again as they
// are: an event one of whose deliveries is locked by another writer (a retry under way), or
// changed meanwhile, is kept this time; so is one whose event row or idempotency key another
// holds. The sweep never waits for a row lock, so it neither deadlocks with the dispatcher or
// the API nor holds them up, and stops between two batches.
import type pg from 'pg';
import { checkOut, leaveUnwatched, sqlState } from '../db/query.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

/** Events a sweep looks at in one go, at most. */
export const RETENTION_BATCH = 500;
/** Deliveries one transaction deletes, about (an event's are never split): attempts come with them. */
export const RETENTION_BATCH_DELIVERIES = 5_000;
/** Between two sweeps of a process. */
export const SWEEP_INTERVAL_MS = 10 * 60_000;
/** From a process's start to its first sweep: the start's own work comes first. */
const FIRST_SWEEP_MS = 60_000;
/** Between two batches: the dispatcher's own statements get the database between them. */
const BATCH_PAUSE_MS = 50;
/** How long past its expiry an idempotency key's event is kept: the API's clock may be behind the database's. */
const KEY_MARGIN = `interval '1 hour'`;

/** One sweep at a time across every process on the database. */
const SWEEP_LOCK = `hashtextextended('hookline retention sweep', 0)`;

const FINISHED = `('DELIVERED', 'FAILED', 'CANCELED')`;

/** lock_not_available, deadlock_detected: a batch left for the next sweep. */
const SKIPPABLE = new Set(['55P03', '40P01']);

/** Whether event `e` (of tenant $1) may go, as far as its rows say, against cutoff $2. */
const DELETABLE = `not exists (select from webhook_deliveries d where d.event_id = e.id and (d.status not in ${FINISHED} or d.updated_at >= $2::timestamptz))
      and not exists (select from idempotency_keys k where k.tenant_id = $1 and k.key = e.idempotency_key and k.event_id = e.id
                         and k.expires_at > now() - ${KEY_MARGIN})`;

/** The next events past the cutoff, after a position: whether each may go, and how many deliveries it has. */
const CANDIDATES_SQL = (after: boolean) => `
  select e.id, e.created_at::text as "createdAt", ${DELETABLE} as deletable,
         (select count(*) from webhook_deliveries d where d.event_id = e.id)::int as deliveries
    from webhook_events e
   where e.tenant_id = $1 and e.created_at < $2::timestamptz ${after ? 'and (e.created_at, e.id) > ($4::timestamptz, $5::uuid)' : ''}
   order by e.created_at, e.id limit $3`;

/**
 * One batch: the events' deliveries locked, those another transaction holds skipped; an event
 * goes if every one of its deliveries was locked and is still finished and old, and nothing else
 * came to point at it. Its idempotency key goes with it.
 */
const DELETE_BATCH_SQL = `
  with locked as (
    select d.id, d.event_id, d.status, d.updated_at from webhook_deliveries d
     where d.event_id = any($3::uuid[]) and d.tenant_id = $1
     order by d.id
       for update skip locked
  ), keyrows as (
    -- The events' idempotency keys, as they are once locked; one another transaction holds
    -- (taken over by a new event, say) is skipped, and keeps its event this time.
    select k.key, k.event_id, k.expires_at from idempotency_keys k
     where k.tenant_id = $1 and k.key in (select e.idempotency_key from webhook_events e where e.id = any($3::uuid[]) and e.tenant_id = $1)
       for update skip locked
  ), doomed as (
    select e.id, e.idempotency_key from webhook_events e
     where e.id = any($3::uuid[]) and e.tenant_id = $1 and ${DELETABLE}
       and (select count(*) from locked l where l.event_id = e.id) = (select count(*) from webhook_deliveries d where d.event_id = e.id)
       and not exists (select from locked l where l.event_id = e.id and (l.status not in ${FINISHED} or l.updated_at >= $2::timestamptz))
       and not exists (select from idempotency_keys k where k.tenant_id = $1 and k.key = e.idempotency_key
                         and not exists (select from keyrows r where r.key = k.key))
       and not exists (select from keyrows r where r.key = e.idempotency_key and r.event_id = e.id and r.expires_at > now() - ${KEY_MARGIN})
       for update of e skip locked
  ), keys as (
    delete from idempotency_keys k using doomed where k.tenant_id = $1 and k.key = doomed.idempotency_key and k.event_id = doomed.id
  ), gone as (
    delete from webhook_events e using doomed where e.id = doomed.id and e.tenant_id = $1 returning e.id
  )
  select (select count(*) from gone)::int as events,
         (select count(*) from locked l where l.event_id in (select id from gone))::int as deliveries`;

export interface SweepResult {
  /** False when another process was sweeping: this one did nothing. */
  swept: boolean;
  events: number;
  deliveries: number;
}

/**
 * Deletes what is past `retentionMs` (see above). `onBatch` hears each committed batch (a sweep
 * that fails later has still deleted those); `stopped` is asked between batches: a stopping
 * process leaves the rest for the next sweep.
 */
export async function sweepRetention(
  pool: pg.Pool,
  retentionMs: number,
  options: { batch?: number; batchDeliveries?: number; pauseMs?: number; stopped?: () => boolean; onBatch?: (events: number, deliveries: number) => void } = {},
): Promise<SweepResult> {
  const batch = options.batch ?? RETENTION_BATCH;
  const batchDeliveries = options.batchDeliveries ?? RETENTION_BATCH_DELIVERIES;
  const pauseMs = options.pauseMs ?? BATCH_PAUSE_MS;
  const stopped = options.stopped ?? (() => false);
  const result: SweepResult = { swept: false, events: 0, deliveries: 0 };
  // Checked out with a listener for the connection's errors: one lost mid-sweep (a failover, a
  // terminated session) fails the sweep, not the process.
  const { client, release } = await checkOut(pool);
  // A batch's delete may take long on a big table: not taken for a silent database (see watchStatements).
  leaveUnwatched(client);
  let broken = false;
  try {
    const [{ locked }] = (await client.query<{ locked: boolean }>(`select pg_try_advisory_lock(${SWEEP_LOCK}) as locked`)).rows as [{ locked: boolean }];
    if (!locked) return result;
    result.swept = true;
    try {
      // The database's clock, as created_at and updated_at are its own; as text, to the microsecond.
      const [{ cutoff }] = (await client.query<{ cutoff: string }>(`select (now() - $1::bigint * interval '1 millisecond')::text as cutoff`, [retentionMs])).rows as [{ cutoff: string }];
      const tenants = (await client.query<{ id: string }>('select id from tenants order by id')).rows;
      for (const { id: tenantId } of tenants) {
        let after: { createdAt: string; id: string } | undefined;
        for (;;) {
          if (stopped()) return result;
          const candidates = (
            await client.query<{ id: string; createdAt: string; deletable: boolean; deliveries: number }>(
              CANDIDATES_SQL(after !== undefined),
              after ? [tenantId, cutoff, batch, after.createdAt, after.id] : [tenantId, cutoff, batch],
            )
          ).rows;
          if (!candidates.length) break;
          // The deletable ones, in transactions of about batchDeliveries deliveries each.
          let taken: string[] = [];
          let takenDeliveries = 0;
          const flush = async () => {
            if (!taken.length) return;
            const ids = taken;
            taken = [];
            takenDeliveries = 0;
            await client.query('begin');
            try {
              // A backstop: SKIP LOCKED waits for no row, but the event rows' own locks could.
              await client.query(`set local lock_timeout = '5s'`);
              const [counts] = (await client.query<{ events: number; deliveries: number }>(DELETE_BATCH_SQL, [tenantId, cutoff, ids])).rows;
              await client.query('commit');
              result.events += counts!.events;
              result.deliveries += counts!.deliveries;
              options.onBatch?.(counts!.events, counts!.deliveries);
            } catch (error) {
              await client.query('rollback').catch(() => {});
              // Nothing should wait (SKIP LOCKED throughout), but should a lock still time out or
              // a deadlock be found, that batch waits for the next sweep and this one goes on.
              if (!SKIPPABLE.has(sqlState(error) ?? '')) throw error;
            }
            if (pauseMs) await new Promise((resolve) => setTimeout(resolve, pauseMs));
          };
          for (const candidate of candidates) {
            if (!candidate.deletable) continue;
            if (taken.length && takenDeliveries + candidate.deliveries > batchDeliveries) {
              await flush();
              if (stopped()) return result;
            }
            taken.push(candidate.id);
            takenDeliveries += candidate.deliveries;
          }
          await flush();
          if (candidates.length < batch) break;
          after = candidates.at(-1)!;
        }
      }
      return result;
    } finally {
      await client.query(`select pg_advisory_unlock(${SWEEP_LOCK})`).catch(() => {
        broken = true; // the session's lock goes with its connection
      });
    }
  } catch (error) {
    // A connection that failed is dropped; one the database answered with an error is fine.
    if (sqlState(error) === undefined) broken = true;
    throw error;
  } finally {
    leaveUnwatched(client, false);
    release(broken);
  }
}

/** Sweeps every SWEEP_INTERVAL_MS while the process runs (see startHookline). */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly retentionMs: number,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {}

  start(firstInMs = FIRST_SWEEP_MS): void {
    this.schedule(firstInMs);
  }

  private schedule(inMs: number): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => {
      this.running = this.sweep().finally(() => {
        this.running = undefined;
        this.schedule(SWEEP_INTERVAL_MS);
      });
    }, inMs);
    this.timer.unref();
  }

  private async sweep(): Promise<void> {
    const started = Date.now();
    const deleted = { events: 0, deliveries: 0 };
    // Counted as each batch commits: a sweep that fails later has deleted those all the same.
    const onBatch = (events: number, deliveries: number) => {
      deleted.events += events;
      deleted.deliveries += deliveries;
      this.metrics?.retentionDeleted.inc({ kind: 'events' }, events);
      this.metrics?.retentionDeleted.inc({ kind: 'deliveries' }, deliveries);
    };
    try {
      await sweepRetention(this.pool, this.retentionMs, { stopped: () => this.stopping, onBatch });
      if (deleted.events) this.log.info({ ...deleted, ms: Date.now() - started }, 'retention: deleted finished events past HOOKLINE_RETENTION');
    } catch (error) {
      // The next sweep tries again; nothing half-deleted is left (a batch is one transaction).
      this.log.warn({ err: error, ...deleted }, 'retention sweep failed (what it had deleted stays deleted); the next one tries again');
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
