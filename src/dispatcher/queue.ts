// The SQL of the delivery queue. The deliveries table is the queue: each
// statement here is one round trip that handles a whole batch.
import type pg from 'pg';
import { checkOut } from '../db/query.js';
import { isUuid } from '../ids.js';
import { SUBSCRIPTION_STOPPED_CHANNEL } from '../migrations/0003-events-deliveries.js';
import { EARLIER_SECRETS, type EarlierSecret } from '../webhooks/secrets.js';

export interface ClaimedDelivery {
  id: string;
  tenantId: string;
  eventId: string;
  subscriptionId: string | null;
  event: string;
  targetUrl: string;
  attempts: number;
  scheduleAttempts: number;
  secret: string | null;
  previousSecret: string | null;
  previousSecretExpiresAt: Date | null;
  earlierSecrets: EarlierSecret[] | null;
  headers: Record<string, string> | null;
  /** The envelope to send; given on the first delivery of each event in a batch, null on the others. */
  body: string | null;
  /**
   * True when the claim read the delivery's address from a subscription change committed after
   * the claim's snapshot, and the secrets and headers from before it (a change racing the claim):
   * the delivery goes back to the queue rather than mix the two.
   */
  staleUrl?: boolean;
  /**
   * When the claim's lease expires, as PostgreSQL wrote it (text, to the microsecond): it
   * tells this claim from a later one of the same delivery by the same worker, after the
   * lease expired and the delivery was reclaimed.
   */
  lease: string;
}

/**
 * Settings of every connection the queue's statements run on.
 * - Generic plans, made once per connection: planning the claim (0.3-0.4 ms)
 *   cost more than running it for one delivery, and the record's half as much.
 * - No bitmap or sequential scans: the claim must walk the due index in order
 *   whatever the statistics say, and every other statement here finds its rows
 *   by an index too. With stale statistics (a fresh table, or a backlog built
 *   up since the last ANALYZE) PostgreSQL believes few rows are due and reads
 *   every due row with a bitmap scan to sort them, on every claim: 12 ms to
 *   claim 128 of a 20,000-delivery backlog, against 6 ms with the index. With
 *   fresh statistics of a table that is all backlog, a generic plan cannot
 *   tell how many rows are due and reads the whole table instead (15 ms to
 *   claim 64 of 20,000). Measured with EXPLAIN ANALYZE.
 */
export const QUEUE_SESSION_SETTINGS =
  'set plan_cache_mode = force_generic_plan; set enable_bitmapscan = off; set enable_seqscan = off';

/**
 * The claim's LIMIT is written into its text, one prepared statement per size:
 * with a parameter there, a generic plan assumes a tenth of all due rows are
 * wanted, and reads and sorts them rather than walk the index. Powers of two
 * keep the statements few; a claim asks for the largest that fits its room.
 */
export const MAX_CLAIM = 256;

export function claimSize(room: number): number {
  return 2 ** Math.floor(Math.log2(Math.min(Math.max(room, 1), MAX_CLAIM)));
}

const claimTexts = new Map<number, string>();

/**
 * One tenant's due rows, a range of webhook_deliveries_due_tenant. The tenant is written into
 * the text (an unnamed statement, planned at each call): a generic plan made once per
 * connection could not tell one tenant from another, and with the statistics of its day
 * (one tenant, say) would keep walking webhook_deliveries_due, past every other tenant's rows,
 * long after those had grown. The upper bound is a row comparison, a range of that index.
 */
function tenantRange(tenantId: string): string {
  if (!isUuid(tenantId)) throw new Error(`not a tenant id: ${JSON.stringify(tenantId)}`);
  return `d.tenant_id = '${tenantId}'::uuid and (d.tenant_id, d.next_attempt_at) <= ('${tenantId}'::uuid, now())`;
}

/**
 * The claim statement for one size: $1 lease ms, $2 saturated subscriptions, $3/$4 held per
 * subscription, $5 a subscription's share, $6 worker, $7 saturated tenants, $8/$9 held per
 * tenant, $10 a tenant's share; `tenantId`: the one tenant whose deliveries are claimed.
 */
export function claimSql(limit: number, tenantId?: string): string {
  let text = tenantId === undefined ? claimTexts.get(limit) : undefined;
  if (!text) {
    // Candidates come from a partial index of due rows, oldest due first (for one
    // tenant: webhook_deliveries_due_tenant, so that no other tenant's backlog is
    // walked); `skip locked` lets workers claim side by side. The windows cap each
    // subscription's and each tenant's share, so that neither one slow endpoint
    // nor one tenant's many endpoints can take every slot.
    text = `
      with candidates as (
        select d.id, d.tenant_id, d.subscription_id, d.next_attempt_at
          from webhook_deliveries d
         where d.status = 'PENDING' and not d.paused and ${tenantId === undefined ? 'd.next_attempt_at <= now()' : tenantRange(tenantId)}
           -- A delivery whose subscription was deleted has none, and is claimed to be canceled.
           and (d.subscription_id is null or d.subscription_id <> all($2::uuid[]))
           and d.tenant_id <> all($7::uuid[])
           -- Nor one whose subscription a change holds (a new url, a deletion...: FOR NO KEY UPDATE,
           -- taken before it waits for the transactions writing deliveries for it, see findOwn):
           -- it applies to this delivery once committed. Skipped as a locked row is, the delivery
           -- is claimed after, as the change left it.
           and (d.subscription_id is null or exists (select from webhook_subscriptions x
                                                      where x.id = d.subscription_id for share skip locked))
         order by d.next_attempt_at
         limit ${limit}
         for update skip locked
      ), ranked as (
        select c.id, c.tenant_id, c.subscription_id,
               -- Within its shares, a subscription's and a tenant's longest-due deliveries go first.
               row_number() over (partition by c.subscription_id order by c.next_attempt_at, c.id) as rank,
               row_number() over (partition by c.tenant_id order by c.next_attempt_at, c.id) as tenant_rank
          from candidates c
      ), chosen as (
        select r.id, r.subscription_id
          from ranked r
          left join unnest($3::uuid[], $4::int[]) as busy(subscription_id, n) on busy.subscription_id = r.subscription_id
          left join unnest($8::uuid[], $9::int[]) as tenant_busy(tenant_id, n) on tenant_busy.tenant_id = r.tenant_id
         where r.rank <= $5 - coalesce(busy.n, 0) and r.tenant_rank <= $10 - coalesce(tenant_busy.n, 0)
      ), claimed as (
        update webhook_deliveries d
           set status = 'SENDING', lease_expires_at = now() + make_interval(secs => $1::double precision / 1000),
               locked_by = $6, updated_at = now()
          from chosen
         where d.id = chosen.id
        returning d.id, d.tenant_id, d.event_id, d.subscription_id, d.event, d.target_url, d.attempts, d.schedule_attempts,
                  d.lease_expires_at::text as lease, d.retried_at
      )
      -- The body comes along, once per event of the batch (a fan-out shares it), so a
      -- claim is the only round trip before sending.
      select c.id, c.tenant_id as "tenantId", c.event_id as "eventId", c.subscription_id as "subscriptionId", c.event,
             c.target_url as "targetUrl", c.attempts, c.schedule_attempts as "scheduleAttempts", c.lease,
             -- A deleted subscription signs only what retryDelivery put back since; with no secret,
             -- anything else of it is canceled (created or in flight as it was deleted).
             case when s.deleted_at is null or c.retried_at > s.deleted_at then s.secret end as secret,
             s.previous_secret as "previousSecret", s.previous_secret_expires_at as "previousSecretExpiresAt",
             ${EARLIER_SECRETS} as "earlierSecrets", s.headers,
             coalesce(s.deleted_at is null and s.url <> c.target_url, false) as "staleUrl",
             case when row_number() over (partition by c.event_id order by c.id) = 1 then e.body end as body
        from claimed c
        -- Within the delivery's tenant, whatever the foreign keys allow: its secret is never another's.
        join webhook_events e on e.id = c.event_id and e.tenant_id = c.tenant_id
        left join webhook_subscriptions s on s.id = c.subscription_id and s.tenant_id = c.tenant_id`;
    if (tenantId === undefined) claimTexts.set(limit, text);
  }
  return text;
}

/** What a worker holds already, by subscription or by tenant, and the share each may hold. */
export interface Shares {
  share: number;
  busy: ReadonlyMap<string, number>;
}

function shareParams({ share, busy }: Shares): [saturated: string[], ids: string[], counts: number[]] {
  const ids = [...busy.keys()];
  const counts = ids.map((id) => busy.get(id)!);
  return [ids.filter((_, i) => counts[i]! >= share), ids, counts];
}

/**
 * Claims up to claimSize(`limit`) due deliveries for this worker (`tenantId`: of that tenant
 * only), for each subscription and each tenant at most its share minus what the worker
 * already holds of it, skipping rows other workers hold. The lease lets another worker take
 * them over if this one dies.
 */
export async function claimDeliveries(
  db: pg.ClientBase | pg.Pool,
  options: { workerId: string; limit: number; leaseMs: number; subscriptions: Shares; tenants: Shares; tenantId?: string },
): Promise<ClaimedDelivery[]> {
  const [saturated, busyIds, busyCounts] = shareParams(options.subscriptions);
  const [saturatedTenants, tenantIds, tenantCounts] = shareParams(options.tenants);
  const limit = claimSize(options.limit);
  const { rows } = await db.query({
    // A tenant's claim is planned at each call (see tenantRange).
    ...(options.tenantId === undefined ? { name: `hookline_claim_deliveries_${limit}` } : {}),
    text: claimSql(limit, options.tenantId),
    values: [
      options.leaseMs,
      saturated,
      busyIds,
      busyCounts,
      options.subscriptions.share,
      options.workerId,
      saturatedTenants,
      tenantIds,
      tenantCounts,
      options.tenants.share,
    ],
  });
  return rows;
}

export interface AttemptOutcome {
  deliveryId: string;
  tenantId: string;
  status: 'PENDING' | 'DELIVERED' | 'FAILED' | 'CANCELED';
  startedAt: Date;
  durationMs: number;
  statusCode: number | null;
  error: string | null;
  responseBody: string | null;
  nextAttemptAt: Date | null;
  /**
   * The receiver answered 410 Gone (HOOKLINE_DISABLE_ON_GONE): the subscription is deactivated,
   * if the attempt went to its url as it is now (moved meanwhile, the endpoint that said so is
   * no longer the subscription's).
   */
  gone: boolean;
  /** Where the attempt went (given with a 410). */
  targetUrl?: string;
  subscriptionId: string | null;
  /** The lease of the claim the attempt was made under (ClaimedDelivery.lease). */
  lease: string;
}

/**
 * Records a batch of attempts: the attempt log rows and each delivery's new
 * state, in one statement. A delivery claimed again after this attempt's lease
 * expired keeps the new claim's state; this attempt is still counted and logged.
 * Answers the outcomes left for later: retries whose subscription's row another
 * transaction holds, to be recorded again once it is let go.
 */
export async function recordAttempts(db: pg.ClientBase | pg.Pool, workerId: string, outcomes: AttemptOutcome[]): Promise<AttemptOutcome[]> {
  // Two outcomes of one delivery (an attempt whose lease expired, and the one made under the
  // claim that followed) cannot be one statement's: it updates a row once. They go in turn.
  const seen = new Set<string>();
  const now = outcomes.filter((o) => !seen.has(o.deliveryId) && seen.add(o.deliveryId));
  const later = now.length < outcomes.length ? outcomes.filter((o) => !now.includes(o)) : [];
  const deferred = await recordRound(db, workerId, now);
  // A later outcome of a delivery whose earlier one waits waits too (they are recorded in turn).
  const waiting = new Set(deferred.map((o) => o.deliveryId));
  if (later.length) {
    deferred.push(...later.filter((o) => waiting.has(o.deliveryId)));
    deferred.push(...(await recordAttempts(db, workerId, later.filter((o) => !waiting.has(o.deliveryId)))));
  }
  return deferred;
}

/**
 * One statement's record: the outcomes it left for later, retries whose subscription's row
 * another transaction holds (see RECORD_SQL), unrecorded.
 */
async function recordRound(db: pg.ClientBase | pg.Pool, workerId: string, outcomes: AttemptOutcome[]): Promise<AttemptOutcome[]> {
  if (!outcomes.length) return [];
  const column = <K extends keyof AttemptOutcome>(key: K) => outcomes.map((o) => o[key]);
  const { rows } = await db.query<{ id: string }>({
    name: 'hookline_record_attempts',
    text: RECORD_SQL,
    values: [
      column('deliveryId'),
      column('tenantId'),
      column('status'),
      column('startedAt'),
      column('durationMs'),
      column('statusCode'),
      column('error'),
      column('responseBody'),
      column('nextAttemptAt'),
      workerId,
      column('lease'),
    ],
  });
  if (!rows.length) return [];
  const deferred = new Set(rows.map((r) => r.id));
  return outcomes.filter((o) => deferred.has(o.deliveryId));
}

/**
 * For deliveries going back to the queue (retried, reclaimed, handed back), the CTE `subs`:
 * the subscriptions of the deliveries `ids` (a query of their ids) that have one, with whether
 * each is inactive, read FOR SHARE: as last committed, and no (de)activation commits while the
 * statement runs (one pauses or resumes only PENDING rows, so one committed after this
 * statement began would miss these rows, and be undone by them). SKIP LOCKED: a subscription
 * whose row another transaction holds (a change under way, anyone's lock) is not waited for,
 * and its deliveries are left out (SUBSCRIPTION_HELD) for a later statement: waited for, one
 * held row held up every tenant's deliveries of the statement, till its timeout.
 */
function subscriptionsOf(ids: string): string {
  return `subs as materialized (
        select s.id, not s.active and s.deleted_at is null as inactive, case when s.deleted_at is null then s.url end as url
          from webhook_subscriptions s
         where (s.id, s.tenant_id) in (select q.subscription_id, q.tenant_id from webhook_deliveries q where q.id in (${ids}) and q.subscription_id is not null)
           for share skip locked
      )`;
}

/**
 * Where delivery `d` goes next: its subscription's address now (see subscriptionsOf), as a
 * change of it leaves a delivery being sent alone (that attempt goes, and is shown going, to the
 * address it was claimed with); a deleted subscription's, or a held one's, stays as it was.
 */
const SUBSCRIPTION_URL = `coalesce((select x.url from subs x where x.id = d.subscription_id), d.target_url)`;

/** Whether delivery `d` waits, paused, for its subscription, one deactivated meanwhile (see subscriptionsOf). */
const SUBSCRIPTION_INACTIVE = `coalesce((select x.inactive from subs x where x.id = d.subscription_id), false)`;

/**
 * Whether delivery `d`, handed back untried (or taken from a lost worker, whose attempt is not
 * counted), waits paused: as SUBSCRIPTION_INACTIVE, but for a sendTestEvent delivery not yet
 * tried, which goes to an inactive subscription too (its retries wait like the others).
 */
const HANDED_BACK_PAUSED = `(${SUBSCRIPTION_INACTIVE} and not (d.test_event and d.attempts = 0))`;

/**
 * Takes the mark of the claimed test events of the subscriptions `where` names, being turned
 * off: handed back, they wait paused like the others (see HANDED_BACK_PAUSED). Those another
 * transaction holds are passed over rather than waited for: a worker recording them (in an order
 * of its own, a deadlock with this one's) takes them out of the queue, or counts their attempt,
 * either way leaving nothing the mark could send.
 */
export const UNMARK_CLAIMED_TEST_EVENTS = (where: string) => `
  update webhook_deliveries set test_event = false
   where id in (select id from webhook_deliveries where ${where} and status = 'SENDING' and test_event for update skip locked)`;

/** Whether delivery `d`'s subscription is held by another transaction: `d` is left for later (see subscriptionsOf). */
const SUBSCRIPTION_HELD = `(d.subscription_id is not null and not exists (select from subs x where x.id = d.subscription_id)
         and exists (select from webhook_subscriptions s where s.id = d.subscription_id and s.tenant_id = d.tenant_id))`;

/** In the record, for a late outcome `r` of delivery `d`: no attempt of `d` made after it is logged. */
const NOTHING_LATER = `not exists (select from delivery_attempts a where a.delivery_id = d.id and a.started_at > r.started_at)`;

/**
 * The record statement. Its rows are found by primary key: a row this worker still
 * holds has `locked_by` = the worker, which only a SENDING row can have (a check
 * constraint, migration 0006), and the lease of the claim the attempt was made under:
 * should that lease have expired and this worker have claimed the delivery again (its
 * record held up longer than the lease), the outcome of the old attempt leaves the new
 * claim alone, and is counted and logged all the same. An attempt's number is
 * the count of attempts it makes, taken by the record that counts it, so the
 * late attempt and the new claim's do not both take the number the claim
 * read. Asking for status = 'SENDING' as well would let the
 * plan, made once per connection while few rows are SENDING, read every SENDING row
 * of every worker through the lease index to find the batch's.
 *
 * The arrays are unnested in the select list, where set-returning functions run in step.
 * `unnest(a, b, …)` in FROM gives the same rows but first copies each array into a
 * tuplestore of its own: 50 µs more of PostgreSQL's time for one row, 220 µs more for
 * 256 (EXPLAIN ANALYZE). Moving them took one row's round trip from 0.65-0.84 to
 * 0.55-0.69 ms (medians of five alternating runs); the generic plan, the only one these
 * sessions make, stayed the same.
 */
export const RECORD_SQL = `
      with results as (
        select unnest($1::uuid[]) as delivery_id, unnest($2::uuid[]) as tenant_id,
               unnest($3::text[]) as status, unnest($4::timestamptz[]) as started_at, unnest($5::int[]) as duration_ms,
               unnest($6::int[]) as status_code, unnest($7::text[]) as error, unnest($8::text[]) as response_body,
               unnest($9::timestamptz[]) as next_attempt_at, unnest($11::timestamptz[]) as lease
      ), ${subscriptionsOf(`select r.delivery_id from results r where r.status = 'PENDING'`)}, deferred as materialized (
        -- Retries whose subscription another transaction holds: recorded once it is let go.
        select r.delivery_id from results r join webhook_deliveries d on d.id = r.delivery_id
         where r.status = 'PENDING' and ${SUBSCRIPTION_HELD}
      ), updated as (
        update webhook_deliveries d
           set status = r.status,
               -- A retry of a subscription deactivated meanwhile waits for it, like its other deliveries.
               paused = r.status = 'PENDING' and ${SUBSCRIPTION_INACTIVE},
               target_url = case when r.status = 'PENDING' then ${SUBSCRIPTION_URL} else d.target_url end,
               attempts = d.attempts + 1,
               schedule_attempts = d.schedule_attempts + 1,
               last_error = r.error,
               last_status_code = r.status_code,
               next_attempt_at = r.next_attempt_at,
               delivered_at = case when r.status = 'DELIVERED' then r.started_at + make_interval(secs => r.duration_ms / 1000.0) end,
               lease_expires_at = null,
               locked_by = null,
               updated_at = now()
          from results r
         where d.id = r.delivery_id and d.locked_by = $10 and d.lease_expires_at = r.lease
           and not exists (select from deferred x where x.delivery_id = r.delivery_id)
        returning d.id, d.attempts
      ), late as materialized (
        -- Outcomes of claims whose lease expired first (normally none: nothing to look up),
        -- unless already recorded (this statement run again after its commit's answer was lost).
        select r.delivery_id from results r
         where not exists (select from updated u where u.id = r.delivery_id)
           and not exists (select from deferred x where x.delivery_id = r.delivery_id)
           and not exists (select from delivery_attempts a where a.delivery_id = r.delivery_id and a.started_at = r.started_at)
      ), counted as (
        -- What it met is shown, unless an attempt made after it is recorded: the delivery taken
        -- back for a lost worker's said so, but this attempt was made, and answered.
        update webhook_deliveries d
           set attempts = d.attempts + 1,
               last_error = case when ${NOTHING_LATER} then r.error else d.last_error end,
               last_status_code = case when ${NOTHING_LATER} then r.status_code else d.last_status_code end,
               updated_at = now()
          from late l join results r on r.delivery_id = l.delivery_id
         where d.id = l.delivery_id
        returning d.id, d.attempts
      )
      , logged as (
        insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code, error, response_body)
        select r.delivery_id, n.attempts, r.tenant_id, r.started_at, r.duration_ms, r.status_code, r.error, r.response_body
          from results r
          join (select id, attempts from updated union all select id, attempts from counted) n on n.id = r.delivery_id
        on conflict (delivery_id, number) do nothing
      )
      select delivery_id as id from deferred`;

/**
 * Records a batch as recordAttempts() does. When receivers answered 410 Gone, their
 * subscriptions are deactivated in the same transaction, so the outcome that retires a
 * subscription is never recorded without its effect. The deactivation comes first: the
 * record then reads the subscriptions as inactive (a retry of theirs waits, paused), and
 * the transaction takes each subscription's row lock once, exclusively, rather than share
 * it with another worker's record and then both wait to upgrade it.
 */
export async function recordOutcomes(
  pool: pg.Pool,
  workerId: string,
  outcomes: AttemptOutcome[],
  goneReason: string,
): Promise<{ gone: string[]; moved: string[]; deferred: AttemptOutcome[] }> {
  // Each subscription once per address its 410s came from.
  const answers = new Map<string, { id: string; url: string }>();
  for (const o of outcomes) {
    if (o.gone && o.subscriptionId) answers.set(`${o.subscriptionId} ${o.targetUrl}`, { id: o.subscriptionId, url: o.targetUrl ?? '' });
  }
  const gone = [...new Set([...answers.values()].map((a) => a.id))];
  if (!gone.length) return { gone, moved: [], deferred: await recordAttempts(pool, workerId, outcomes) };
  const { client, release } = await checkOut(pool);
  let broken = false;
  try {
    await client.query('begin');
    // A subscription another transaction holds is not waited for either: the outcomes of its
    // deliveries are left for later, with its 410, and the rest recorded now.
    const { held: heldIds, disabled } = await disableGoneSubscriptions(client, [...answers.values()], goneReason);
    const held = new Set(heldIds);
    const now = held.size ? outcomes.filter((o) => !(o.subscriptionId && held.has(o.subscriptionId))) : outcomes;
    const deferred = await recordAttempts(client, workerId, now);
    await client.query('commit');
    if (held.size) deferred.push(...outcomes.filter((o) => o.subscriptionId && held.has(o.subscriptionId)));
    const off = new Set(disabled);
    return { gone: disabled, moved: gone.filter((id) => !held.has(id) && !off.has(id)), deferred };
  } catch (error) {
    await client.query('rollback').catch(() => (broken = true));
    throw error;
  } finally {
    release(broken);
  }
}

/**
 * 410 Gone: deactivate the subscriptions whose url is still the one that answered so, and let
 * their waiting deliveries wait. Answers those another transaction holds (left as they are,
 * not waited for: see subscriptionsOf), and those deactivated. Two statements: in a
 * transaction (recordOutcomes's), for the dispatchers told to hand back to find both done.
 */
export async function disableGoneSubscriptions(
  db: pg.ClientBase,
  answers: Array<{ id: string; url: string }>,
  reason: string,
): Promise<{ held: string[]; disabled: string[] }> {
  const { rows } = await db.query<{ held: string[]; disabled: string[] }>(
    `with taken as materialized (
       select id, url, active and deleted_at is null as live from webhook_subscriptions where id = any($1::uuid[]) for update skip locked
     ), s as (
       update webhook_subscriptions set active = false, disabled_reason = $2, updated_at = now()
        -- A deleted one (a retried delivery of it answered 410) stays as it was: it cannot be
        -- made active again, so its other retried deliveries must not wait for it. One whose
        -- url changed since the attempt began is not the endpoint that is gone.
        where id in (select t.id from taken t join unnest($1::uuid[], $3::text[]) as g(id, url) on g.id = t.id and g.url = t.url where t.live)
       returning id
     )
     , paused as (
       -- Test events too (see setDeliveriesPaused), the claimed ones below.
       update webhook_deliveries set paused = true, test_event = false, updated_at = now()
        where subscription_id in (select id from s) and status = 'PENDING' and not paused
     )
     -- Every dispatcher hands back what it claimed for them and has not started.
     select (select count(*) from (select pg_notify('${SUBSCRIPTION_STOPPED_CHANNEL}', id::text) from s) n) as notified,
            array(select h.id::text from unnest($1::uuid[]) as h(id)
                   where not exists (select from taken t where t.id = h.id)
                     and exists (select from webhook_subscriptions x where x.id = h.id)) as held,
            array(select id::text from s) as disabled`,
    [answers.map((a) => a.id), reason, answers.map((a) => a.url)],
  );
  const { held, disabled } = rows[0]!;
  if (disabled.length) await db.query(UNMARK_CLAIMED_TEST_EVENTS('subscription_id = any($1::uuid[])'), [disabled]);
  return { held, disabled };
}

/**
 * A dispatcher says it runs, and after how long silent it is to be taken for dead; gives the
 * database's clock (ms). `heard_since` restarts when it had been silent for half that.
 */
export async function heartbeat(db: pg.ClientBase | pg.Pool, workerId: string, lostAfterMs: number): Promise<number> {
  const { rows } = await db.query({
    name: 'hookline_worker_heartbeat',
    text: `insert into hookline_workers as w (id, lost_after_ms) values ($1, $2)
           on conflict (id) do update
             set heard_since = case when w.seen_at < now() - make_interval(secs => w.lost_after_ms / 2000.0) then now() else w.heard_since end,
                 seen_at = now(), lost_after_ms = $2
           returning extract(epoch from clock_timestamp()) * 1000 as "databaseMs"`,
    values: [workerId, Math.round(lostAfterMs)],
  });
  return Number(rows[0].databaseMs);
}

/**
 * A dispatcher that stopped: whatever it still holds (an outcome it could not record, a
 * delivery it could not hand back) goes back to the queue now, rather than wait for a lease,
 * and it is forgotten.
 */
export async function signOff(db: pg.ClientBase | pg.Pool, workerId: string): Promise<void> {
  await db.query(
    `with ${subscriptionsOf(`select m.id from webhook_deliveries m where m.locked_by = $1 and m.status = 'SENDING'`)}, back as (
       update webhook_deliveries d
          set status = 'PENDING', paused = ${HANDED_BACK_PAUSED}, target_url = ${SUBSCRIPTION_URL}, next_attempt_at = now(), lease_expires_at = null, locked_by = null,
              last_error = coalesce(d.last_error, 'worker stopped before recording the attempt'), updated_at = now()
        -- One whose subscription is held stays as it is: its lease returns it (reclaimLostDeliveries).
        where d.locked_by = $1 and d.status = 'SENDING' and not ${SUBSCRIPTION_HELD}
     )
     delete from hookline_workers where id = $1`,
    [workerId],
  );
}

/** Whether delivery `d`, claimed by worker `w` (if known), is lost, as reclaimLostDeliveries judges for worker $1 (`me`). */
const LOST = `d.status = 'SENDING'
           and case when w.id is null then d.lease_expires_at < now()
                    when w.id <> $1 and w.seen_at < now() - make_interval(secs => w.lost_after_ms / 1000.0)
                         and exists (select from me where me.heard_since <= now() - make_interval(secs => greatest(me.lost_after_ms, w.lost_after_ms) / 1000.0))
                      then true
                    else d.lease_expires_at < now() - make_interval(secs => w.lost_after_ms / 1000.0) end`;

/** The last error of a delivery taken back from a lost worker: whether it had been tried is unknown. */
export const WORKER_LOST = 'worker lost while the delivery was claimed (an attempt may have been under way)';

/**
 * The last error of a delivery canceled by its subscription's deletion: an attempt's error stays,
 * the note that a lost worker held it does not (it says nothing of the cancel).
 */
export const DELETED_LAST_ERROR = `case when last_error is null or last_error = '${WORKER_LOST}' then 'subscription deleted' else last_error end`;

/**
 * Deliveries being sent by dispatchers that died go back to the queue, due now: those of a
 * dispatcher silent for longer than it said it may be, and those whose lease expired, of a
 * dispatcher unknown here (stopped) or, when it is still heard from and its record late,
 * `lost_after_ms` past the lease. Silence is judged by the database, at the moment the
 * statement runs, and only by a dispatcher (`workerId`) itself heard from just now and
 * without a gap for as long as either may be silent: after an outage of the database, or a
 * partition that held this very statement up, which silence everyone, no one is taken for
 * dead until all have had the time to be heard again. Never its own deliveries. An attempt a
 * dead dispatcher had under way is not counted: whether it was even started is unknown.
 * Dispatchers silent for a day are forgotten.
 */
export async function reclaimLostDeliveries(db: pg.ClientBase | pg.Pool, workerId: string): Promise<number> {
  const { rows } = await db.query({
    name: 'hookline_reclaim_lost',
    text: `
      with forgotten as (
        delete from hookline_workers where seen_at < now() - interval '1 day'
      ), me as (
        select heard_since, lost_after_ms from hookline_workers
         where id = $1 and seen_at >= now() - make_interval(secs => lost_after_ms / 2000.0)
      ), candidates as (
        select d.id from webhook_deliveries d left join hookline_workers w on w.id = d.locked_by where ${LOST}
      ), ${subscriptionsOf('select c.id from candidates c')}, lost as (
        -- Locked only if its subscription is not held: one whose turning off is under way is left
        -- alone, for that to find it unlocked (see UNMARK_CLAIMED_TEST_EVENTS), and waits for the next look.
        select d.id
          from webhook_deliveries d
          left join hookline_workers w on w.id = d.locked_by
         where d.id in (select c.id from candidates c) and ${LOST} and not ${SUBSCRIPTION_HELD}
           for update of d skip locked
      ), reclaimed as (
        update webhook_deliveries d
           set status = 'PENDING', paused = ${HANDED_BACK_PAUSED}, target_url = ${SUBSCRIPTION_URL}, next_attempt_at = now(), lease_expires_at = null, locked_by = null,
               last_error = coalesce(d.last_error, '${WORKER_LOST}'), updated_at = now()
          from lost l
         where d.id = l.id
        returning d.id
      )
      select count(*)::int as n from reclaimed`,
    values: [workerId],
  });
  return rows[0].n;
}

/** When the next delivery falls due (to sleep until then rather than poll blindly). */
export async function nextDueAt(db: pg.ClientBase | pg.Pool): Promise<Date | null> {
  const { rows } = await db.query({
    name: 'hookline_next_due_at',
    text: `select next_attempt_at as at from webhook_deliveries
            where status = 'PENDING' and not paused order by next_attempt_at limit 1`,
  });
  return rows[0]?.at ?? null;
}

/** Where a walk of the tenants (dueTenants) starts: before any tenant id (tenants' ids are random, never nil). */
export const FIRST_TENANT = '00000000-0000-0000-0000-000000000000';

/**
 * $1: the tenant after which the walk starts, $2: how many tenants it walks. A loose scan of
 * webhook_deliveries_due_tenant: from each tenant with deliveries waiting, one probe finds the
 * next such tenant's first row in the index, its earliest due, however many it has. (Ordered
 * by the index's two columns from a range of tenants, no other index can serve it: as an
 * equality and a due time, with fresh statistics PostgreSQL walked webhook_deliveries_due.)
 */
export const DUE_TENANTS_SQL = `
  with recursive walked(tenant_id, first_due, n) as (
    (select d.tenant_id, d.next_attempt_at, 1
       from webhook_deliveries d
      where d.status = 'PENDING' and not d.paused and d.tenant_id is not null and d.tenant_id > $1::uuid
      order by d.tenant_id, d.next_attempt_at
      limit 1)
    union all
    select next.tenant_id, next.next_attempt_at, w.n + 1
      from walked w
      cross join lateral (
        select d.tenant_id, d.next_attempt_at
          from webhook_deliveries d
         where d.status = 'PENDING' and not d.paused and d.tenant_id is not null and d.tenant_id > w.tenant_id
         order by d.tenant_id, d.next_attempt_at
         limit 1
      ) next
     where w.n < $2::int
  )
  select tenant_id as "tenantId", coalesce(first_due <= now(), false) as due from walked`;

/**
 * Tenants with deliveries due, among the next `walk` tenants with any waiting after `after`.
 * `next`: where the next walk goes on (FIRST_TENANT once this one reached the last tenant).
 */
export async function dueTenants(db: pg.ClientBase | pg.Pool, after: string, walk: number): Promise<{ due: string[]; next: string }> {
  const { rows } = await db.query<{ tenantId: string; due: boolean }>({ name: 'hookline_due_tenants', text: DUE_TENANTS_SQL, values: [after, walk] });
  return {
    due: rows.filter((r) => r.due).map((r) => r.tenantId),
    next: rows.length < walk ? FIRST_TENANT : rows[rows.length - 1]!.tenantId,
  };
}

/** Cancels a claimed delivery whose subscription disappeared before it was sent. */
export async function cancelOrphans(db: pg.ClientBase | pg.Pool, workerId: string, ids: string[]): Promise<void> {
  await db.query(
    `update webhook_deliveries set status = 'CANCELED', next_attempt_at = null, lease_expires_at = null, locked_by = null,
            last_error = ${DELETED_LAST_ERROR}, updated_at = now()
      where id = any($1::uuid[]) and locked_by = $2`,
    [ids, workerId],
  );
}

/** Hands claimed deliveries back to the queue untried (the batch could not be prepared). */
export async function releaseClaims(db: pg.ClientBase | pg.Pool, workerId: string, ids: string[]): Promise<string[]> {
  // An untried test event of an inactive subscription stays unpaused, to be claimed again and
  // sent as the subscription now is (or canceled, deleted); others of an inactive one wait, paused.
  const { rows } = await db.query<{ id: string }>(
    `with ${subscriptionsOf('select unnest($1::uuid[])')}, released as (
       update webhook_deliveries d set status = 'PENDING', paused = ${HANDED_BACK_PAUSED}, target_url = ${SUBSCRIPTION_URL}, lease_expires_at = null, locked_by = null, updated_at = now()
        where id = any($1::uuid[]) and locked_by = $2 and status = 'SENDING' and not ${SUBSCRIPTION_HELD}
       returning d.id
     )
     -- Those whose subscription another transaction holds stay claimed: answered, to hand back later.
     select d.id from webhook_deliveries d
      where d.id = any($1::uuid[]) and d.locked_by = $2 and d.status = 'SENDING' and not exists (select from released r where r.id = d.id)`,
    [ids, workerId],
  );
  return rows.map((r) => r.id);
}
