// HOOKLINE_RETENTION: events older than it whose deliveries are all finished (DELIVERED,
// FAILED, CANCELED) and unchanged for as long are deleted, with their deliveries and attempts
// (the foreign keys cascade). The tables are the queue and the history both; without a bound
// the history grows for ever. Unset, nothing is deleted.
//
// A process with a dispatcher sweeps every SWEEP_INTERVAL_MS, one of them at a time (an
// advisory lock); tenant by tenant, oldest first, a batch of events a transaction, each batch
// found through the tenant's (tenant_id, created_at, id) index. A delivery still on its way, or
// a finished one changed within the retention (a FAILED one retried by hand, say), keeps its
// event, and the sweep goes on past it. The deliveries of a batch are locked before anything is
// deleted, and judged as they are once locked: one retried (retryDelivery) while the sweep looks
// at it is kept, and a retry that comes after its deletion finds nothing (NOT_FOUND).
import type pg from 'pg';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

/** Events a transaction of the sweep looks at, at most. */
export const RETENTION_BATCH = 500;
/** Between two sweeps of a process. */
export const SWEEP_INTERVAL_MS = 10 * 60_000;
/** From a process's start to its first sweep: the start's own work comes first. */
const FIRST_SWEEP_MS = 60_000;
/** Between two batches: the dispatcher's own statements get the database between them. */
const BATCH_PAUSE_MS = 50;

/** One sweep at a time across every process on the database. */
const SWEEP_LOCK = `hashtextextended('hookline retention sweep', 0)`;

const FINISHED = `('DELIVERED', 'FAILED', 'CANCELED')`;

/**
 * One batch: the candidates' deliveries locked (as they are once any change under way is
 * committed), then the events none of whose deliveries is unfinished or recent deleted.
 */
const DELETE_BATCH_SQL = `
  with locked as (
    select d.event_id, d.status, d.updated_at from webhook_deliveries d
     where d.event_id = any($1::uuid[]) and d.tenant_id = $3
       for update
  ), doomed as (
    select c.id from unnest($1::uuid[]) as c(id)
     where not exists (select from locked l where l.event_id = c.id and (l.status not in ${FINISHED} or l.updated_at >= $2::timestamptz))
  ), gone as (
    delete from webhook_events e using doomed where e.id = doomed.id and e.tenant_id = $3 returning e.id
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
 * Deletes what is past `retentionMs` (see above), in batches of `batch` events. `stopped` is
 * asked between batches: a stopping process leaves the rest for the next sweep.
 */
export async function sweepRetention(
  pool: pg.Pool,
  retentionMs: number,
  options: { batch?: number; pauseMs?: number; stopped?: () => boolean } = {},
): Promise<SweepResult> {
  const batch = options.batch ?? RETENTION_BATCH;
  const pauseMs = options.pauseMs ?? BATCH_PAUSE_MS;
  const stopped = options.stopped ?? (() => false);
  const result: SweepResult = { swept: false, events: 0, deliveries: 0 };
  const client = await pool.connect();
  let failed = false;
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
            await client.query<{ id: string; createdAt: string }>(
              `select id, created_at::text as "createdAt" from webhook_events
                where tenant_id = $1 and created_at < $2::timestamptz
                  ${after ? 'and (created_at, id) > ($4::timestamptz, $5::uuid)' : ''}
                order by created_at, id limit $3`,
              after ? [tenantId, cutoff, batch, after.createdAt, after.id] : [tenantId, cutoff, batch],
            )
          ).rows;
          if (!candidates.length) break;
          await client.query('begin');
          try {
            const [counts] = (await client.query<{ events: number; deliveries: number }>(DELETE_BATCH_SQL, [candidates.map((c) => c.id), cutoff, tenantId])).rows;
            await client.query('commit');
            result.events += counts!.events;
            result.deliveries += counts!.deliveries;
          } catch (error) {
            await client.query('rollback').catch(() => {});
            throw error;
          }
          if (candidates.length < batch) break;
          after = candidates.at(-1)!;
          await new Promise((resolve) => setTimeout(resolve, pauseMs));
        }
      }
      return result;
    } finally {
      await client.query(`select pg_advisory_unlock(${SWEEP_LOCK})`).catch(() => {
        failed = true; // the session's lock goes with its connection
      });
    }
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    client.release(failed);
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
    try {
      const result = await sweepRetention(this.pool, this.retentionMs, { stopped: () => this.stopping });
      if (!result.swept) return;
      this.metrics?.retentionDeleted.inc({ kind: 'events' }, result.events);
      this.metrics?.retentionDeleted.inc({ kind: 'deliveries' }, result.deliveries);
      if (result.events) this.log.info({ events: result.events, deliveries: result.deliveries, ms: Date.now() - started }, 'retention: deleted finished events past HOOKLINE_RETENTION');
    } catch (error) {
      // The next sweep tries again; nothing half-deleted is left (a batch is one transaction).
      this.log.warn({ err: error }, 'retention sweep failed; the next one tries again');
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
