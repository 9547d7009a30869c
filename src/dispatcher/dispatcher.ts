// The dispatcher: claim -> send -> record. It claims due deliveries in
// batches (the next batch while the current one is sent), sends each as a
// slot frees up within its concurrency limits, and records the outcomes in
// batches. A slot is taken back from an attempt still waiting for its answer
// after a second, so slow receivers hold sockets, not the others' turn. LISTEN
// wakes it when deliveries are created; a timer set to the next due time, and
// polling, are the fallbacks. No retry waits in memory: a
// failed attempt's next try is a row in the database, and a claimed delivery
// waits for a slot for less than its lease.
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pRetry from 'p-retry';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { failureReason, type Metrics } from '../metrics.js';
import type { Clock } from '../services.js';
import { isUuid } from '../ids.js';
import { within } from '../within.js';
import { decodeSecrets } from '../signing/standard-webhooks.js';
import { signingSecrets } from '../webhooks/secrets.js';
import { DELIVERIES_DUE_CHANNEL, SUBSCRIPTION_STOPPED_CHANNEL, SUBSCRIPTION_STOPPED_HEARD_CHANNEL } from '../migrations/0003-events-deliveries.js';
import { LIVE_LISTENERS_TABLE } from '../migrations/0007-live-listeners.js';
import {
  cancelOrphans,
  claimDeliveries,
  claimSize,
  dueTenants,
  FIRST_TENANT,
  QUEUE_SESSION_SETTINGS,
  heartbeat,
  nextDueAt,
  reclaimLostDeliveries,
  recordOutcomes,
  releaseClaims,
  signOff,
  type AttemptOutcome,
  type ClaimedDelivery,
} from './queue.js';
import { CONNECT_TIMEOUT_MS, KEEP_ALIVE_AFTER_MS } from '../db/connection.js';
import { dropConnection, sqlState } from '../db/query.js';
import { MinHeap } from './min-heap.js';
import { nextAttempt, parseRetryAfter } from './schedule.js';
import { Sender } from './sender.js';
import { deliveryAgent } from './target-guard.js';
import type { HandOff } from '../webhooks/ingest-batcher.js';

export interface DispatcherOptions {
  config: Readonly<Config>;
  databaseUrl: string;
  log: Logger;
  metrics?: Metrics;
  clock?: Clock;
  /** Fallback poll when no notification comes (ms). */
  pollIntervalMs?: number;
  /** How often expired leases are looked for (ms). */
  reclaimIntervalMs?: number;
  /** A claim's lease (ms), for tests; by default twice the delivery timeout and 5 s. */
  leaseMs?: number;
  /** Slow attempts at once, for tests; by default 8 times the concurrency. */
  slowCapacity?: number;
  /** How long an attempt keeps its slot before it counts as slow (ms), for tests; by default 1,000, or half the delivery timeout if shorter. */
  slowAfterMs?: number;
  /** The least time between claims that find nothing while shares are full (ms), for tests; by default 100. */
  cappedClaimGapMs?: number;
  /** How often a busy worker looks for tenants with deliveries due (ms), for tests; by default 1,000. */
  dueScanIntervalMs?: number;
  /** How long a statement's answer, or a new connection, is waited for (ms), for tests; by default 30,000 and 10,000. */
  databaseTimeoutMs?: number;
  /** A dispatcher not heard from for this long is taken for dead (ms), for tests; by default 20 s, or the lease if shorter. */
  workerLostAfterMs?: number;
}

/**
 * The database was away or busy, not the statement wrong: no answer of the database (the
 * connection refused, reset or timed out: Node's ECONNREFUSED and the like, which are no
 * SQLSTATE), or connection exception (08), insufficient resources (53), operator intervention
 * (57: shutdown, crash), transaction rollback (40: serialization, deadlock), lock not available
 * (55P03). The same statement may pass later; anything else (a value or row refused, a statement
 * cancelled by its timeout, a trigger's error) it would not.
 */
function transient(error: unknown): boolean {
  const code = sqlState(error);
  // Not 57014, a statement cancelled by its timeout: the same statement would be as slow again.
  return code === undefined || (/^(08|53|57|40)/.test(code) && code !== '57014') || code === '55P03';
}


const FLUSH_BATCH = 100;
const FLUSH_DELAY_MS = 2;
/** How often claimed deliveries whose subscription another transaction holds are tried to hand back, a second apart. */
const HAND_BACK_TRIES = 30;
/** Outcomes the database could not take (each try itself retried for about 9 s) are tried again this much later. */
const RECORD_AGAIN_MS = 1_000;
/** The most outcomes one record statement writes, and the most kept while the database is away. */
const MAX_RECORD_BATCH = 1_000;
const MAX_KEPT = 10_000;
/** An attempt unanswered for this long gives its slot back (at most half the delivery timeout). */
const SLOW_AFTER_MS = 1_000;
/** Slow attempts in flight at once, as many times the concurrency: past that, they keep their slots. */
const SLOW_CAPACITY_FACTOR = 8;
/**
 * Of the slots, this share (of the concurrency, rounded down) is never filled by a tenant with slow
 * attempts: a slot is given back only a second into an attempt, so slow tenants with backlogs,
 * refilling each slot as it turns slow, held every one in waves, and another tenant's delivery
 * waited up to that second (1.7 s with several such tenants) for the next wave to turn.
 */
const RESERVE_DIVISOR = 8;

/** One attempt being made. */
interface Flight {
  delivery: ClaimedDelivery;
  slow: boolean;
  /** Unanswered too, but slow attempts were at capacity: it keeps its slot (see overdue). */
  overdue: boolean;
  done: boolean;
  timer: NodeJS.Timeout | undefined;
}

/** A claimed delivery waiting for a slot, until `deadline` (this process's clock, ms). */
interface Ready {
  delivery: ClaimedDelivery;
  body: string | undefined;
  /** The latest moment its attempt may start and still end, and be recorded, within the lease. */
  deadline: number;
}

/**
 * How far ahead the loop's claim reaches for a subscription whose receiver answers fast
 * (FAST_ATTEMPT_MS), in shares: it may hold, in flight and ready to start, up to this many times
 * its share of slots; any other, twice. Claims run one at a time, each taking what the last
 * freed: at twice, a drain's claims took 35-55 rows each, every 5-13 ms, and many came back with
 * every POST of the batch before answered and the slots idle (a trace of the benchmark's drain).
 * Only a fast receiver's: behind a slower one, more rows ready would wait out more of their
 * lease, and make a tenant that comes after wait behind more of its neighbours' (a ready row's
 * turn goes to the tenant with the fewest in flight, between equals the oldest row first).
 */
const FAST_DEPTH = 4;
/** A subscription whose attempts take less than this, on average of late, is claimed for FAST_DEPTH deep. */
const FAST_ATTEMPT_MS = 50;
/**
 * The most the loop's claim takes while a fast subscription is held here. A notified tenant's
 * claim waits for the loop's: claims of 90 rows on average (asked for 128) held a quiet tenant's
 * delivery 25-28 ms (p50) during another's burst, against 17-20 ms before; at 64, 16-19 ms. The
 * benchmark's drain: about 1.05 times as fast as before at 64, 1.10 at 128 (alternating runs).
 */
const FAST_CLAIM_LIMIT = 64;

/** The least time between two claims that find nothing new while shares are full. */
const CAPPED_CLAIM_GAP_MS = 100;
/** The most one claim for a notified tenant takes (claimForNotifiedTenants). */
const TENANT_CLAIM_LIMIT = 64;
/** How often a busy worker looks for tenants with deliveries due (scanDueTenants). */
const DUE_SCAN_INTERVAL_MS = 1_000;
/** Tenants with deliveries waiting that one such look walks (about 10 µs of PostgreSQL's time each). */
const DUE_SCAN_WALK = 256;
/**
 * The most a queue statement's answer is waited for: a claim or a record takes milliseconds,
 * seconds on a struggling server. Past it the connection is dropped and the step retried on a
 * new one, rather than the worker waiting forever on a server that went silent (a host lost
 * without a reset, a connection dropped by a firewall).
 */
const QUERY_TIMEOUT_MS = 30_000;
/** How long the LISTEN connection may take to answer its check (see checkListener). */
const LISTENER_ANSWER_MS = 5_000;
/**
 * A dispatcher not heard from for this long has died: its deliveries are taken back (by any
 * dispatcher's reclaim, every 5 s), whatever their leases. It says it runs four times as often,
 * on a connection of its own.
 */
const WORKER_LOST_AFTER_MS = 20_000;
/** Time kept between an attempt's timeout and its lease's end, for the record. */
const RECORD_MARGIN_MS = 3_000;
/** Retries a worker wakes for itself at most (beyond, later ones come by the poll). */
const MAX_RETRY_WAKES = 100_000;
/** The wait before claiming again when the next due row was due already, yet not claimed (locked). */
const LOCKED_DUE_GAP_MS = 20;

/** While the loop's claims keep failing, one log line in this long. */
const CLAIM_FAILURE_LOG_MS = 30_000;
/** How long a subscription deleted or deactivated is remembered, for claims under way as it happened. */
const STOPPED_MEMORY_MS = 60_000;


export class Dispatcher {
  readonly workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private readonly log: Logger;
  private readonly pool: pg.Pool;
  private readonly sender: Sender;
  private readonly agent: ReturnType<typeof deliveryAgent>;
  private readonly leaseMs: number;
  private readonly pollIntervalMs: number;
  private readonly reclaimIntervalMs: number;
  private readonly clock: Clock;

  private running = false;
  /** Attempts being made; `slow` of them have given their slot back. */
  private inFlight = 0;
  private slow = 0;
  private readonly slowAfterMs: number;
  private readonly slowCapacity: number;
  /** The backend of the last LISTEN connection, whose live_listeners row the next one replaces. */
  private listenerPid: number | undefined;
  /** Slots a tenant with slow attempts does not take (see RESERVE_DIVISOR). */
  private readonly reservedSlots: number;
  /** Tenants that may wait at once for their first slot, with deliveries claimed past the room (claimForNotifiedTenants). */
  private readonly firstSlotQueue: number;
  private readonly cappedClaimGapMs: number;
  private readonly dueScanIntervalMs: number;
  /** Claimed, not yet started: sent as slots free up, without another round trip. */
  private readonly ready: Ready[] = [];
  /**
   * Subscriptions whose receiver answered this worker 410 Gone, until the deactivation that
   * follows is recorded: their claimed deliveries are not started meanwhile.
   */
  private readonly goneHere = new Set<string>();
  /** Subscriptions deleted or deactivated lately, with when this worker heard it (ms, this process's clock). */
  private readonly stopped = new Map<string, number>();
  /** LISTEN was up once: a later listen() is a reconnection, after which stops may have gone unheard. */
  private listenedBefore = false;
  /** Unanswered for a second while slow attempts were at capacity: they take the next room there. */
  private readonly overdue: Flight[] = [];
  /** Per tenant: attempts slow or overdue. While slow ones are at capacity, such a tenant starts no more. */
  private readonly tenantLingering = new Map<string, number>();
  /**
   * After a claim that found nothing while shares were full: no claim before this (ms), and
   * freed slots claim again only when they bring a full share below its limit (their
   * subscription's or tenant's rows may then be taken); 0 otherwise.
   */
  private claimNotBefore = 0;
  /** A share came below its limit while the current claim ran: its answer is no reason to wait. */
  private shareFreed = false;
  /**
   * Tenants named by notifications (new deliveries, retried or resumed ones) while this worker
   * was busy: claimed for one by one (claimForNotifiedTenants), as the general claim might
   * reach their rows only behind a backlog.
   */
  private readonly notifiedTenants = new Set<string>();
  /** The loop's last claim took as many as it asked for: more may wait behind them. */
  private lastClaimFull = false;
  /** A look for tenants with deliveries due is under way (scanDueTenants); the next not before `scanNotBefore`. */
  private scanning = false;
  private scanNotBefore = 0;
  /** Where the next look goes on, the tenants being walked in the order of their ids. */
  private scanFrom = FIRST_TENANT;
  /** The tenant a claim of its own is under way for; the loop's claim waits for it to end. */
  private claimingFor: string | undefined;
  /** The loop's general claim is under way (until its deliveries are dispatched). */
  private loopClaiming = false;
  /** A tenant's claim has just ended: the loop's claim goes next, if it has one to make. */
  private loopTurn = false;
  /** The tenant of each subscription held (claimed and not yet recorded). */
  private readonly subscriptionTenant = new Map<string, string>();
  /** Per subscription: deliveries being sent. */
  private readonly sending = new Map<string, number>();
  /** Per subscription: deliveries claimed and not yet recorded (sending or ready). */
  private readonly held = new Map<string, number>();
  /** How long each subscription takes to answer, of late (a moving average, ms; forgotten past 10,000). */
  private readonly attemptMs = new Map<string, number>();
  /**
   * The subscriptions the loop's last claim filled FAST_DEPTH deep (held, and fast, as it began):
   * whether a subscription is at its share is judged by the depth its claim gave it.
   */
  private readonly deepened = new Set<string>();
  /** The same two per tenant. */
  private readonly tenantSending = new Map<string, number>();
  private readonly tenantHeld = new Map<string, number>();
  /** Ready deliveries the last pump passed over, their subscription or tenant at its share. */
  private parked = 0;
  private readonly pending: AttemptOutcome[] = [];
  /** Outcomes waiting for their subscription's row (see defer). */
  private readonly deferred: AttemptOutcome[] = [];
  /** Subscriptions with outcomes deferred: none of their deliveries starts meanwhile. */
  private readonly heldSubscriptions = new Set<string>();
  private deferTimer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private wakeRequested = false;
  /**
   * The last claim took every due delivery it was allowed to: fewer than asked,
   * and no subscription at its share. Until something wakes the loop, a freed
   * slot has nothing to claim, so it does not ask.
   */
  private drained = false;
  /** The loop's claims failed in a row, and when that was last logged. */
  private claimFailures = 0;
  private claimFailureLoggedAt = 0;
  /** The loop last stopped claiming for want of room (slots and ready deliveries), not of work. */
  private roomBound = false;
  /** Slots promised to inserts of this process that have not returned yet (see handOff()). */
  private reserved = 0;
  private readonly unreserved = new Set<() => void>();
  private loopDone: Promise<void> | undefined;
  private listener: pg.Client | undefined;
  private checkingListener = false;
  private reclaimTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private readonly queryTimeoutMs: number;
  /** The pool's connections in use, since when (this process's clock): see watchStatements. */
  private readonly checkedOut = new Map<pg.PoolClient, number>();
  private readonly heartbeatPool: pg.Pool;
  private heartbeating: Promise<void> | undefined;
  /** When this worker was last heard from (performance.now(); 0: not yet). */
  private heardLast = 0;
  private readonly lostAfterMs: number;
  private readonly idle = new Set<() => void>();
  private readonly keys = new Map<string, Buffer>();

  constructor(private readonly options: DispatcherOptions) {
    const { config } = options;
    this.log = options.log.child({ component: 'dispatcher', workerId: this.workerId });
    this.clock = options.clock ?? { now: () => new Date(this.dbNow()) };
    // One pool for the queue's statements, apart from the API's, sized for a claim (the
    // loop's or a tenant's), a flush, a reclaim, a hand-back and a look for due tenants at once.
    this.pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: 5,
      application_name: 'hookline-dispatcher',
      // Statements are timed by the watchdog (watchStatements), not pg's query_timeout, whose
      // timer per statement cost the drain a fifth more memory and made a loop of queries half
      // as slow again.
      connectionTimeoutMillis: options.databaseTimeoutMs ?? CONNECT_TIMEOUT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEP_ALIVE_AFTER_MS,
      // pg-pool waits for it before handing the new connection out (and drops the connection if it fails).
      // The server gives a statement up before this process does: one that timed out here
      // might still have committed (a claim, its rows then SENDING for nobody until the lease).
      // pg-pool times neither it nor the connection's first statement: a connection silent from
      // then on is dropped here, as the watchdog drops the others.
      onConnect: async (client) => {
        const timer = setTimeout(() => dropConnection(client), options.databaseTimeoutMs ?? QUERY_TIMEOUT_MS);
        try {
          await client.query(`${QUEUE_SESSION_SETTINGS}; set statement_timeout = ${Math.round(0.8 * (options.databaseTimeoutMs ?? QUERY_TIMEOUT_MS))}`);
        } finally {
          clearTimeout(timer);
        }
      },
    });
    this.pool.on('error', (error) => this.log.warn({ err: error }, 'idle database connection failed'));
    this.queryTimeoutMs = options.databaseTimeoutMs ?? QUERY_TIMEOUT_MS;
    this.pool.on('acquire', (client) => this.checkedOut.set(client, performance.now()));
    this.pool.on('release', (_error, client) => this.checkedOut.delete(client));
    this.agent = deliveryAgent(config.allowPrivateTargets, config.deliveryTimeoutMs);
    this.sender = new Sender(this.agent, config.deliveryTimeoutMs);
    // Long enough for an attempt and the flush that records it; short enough that a
    // dead worker's deliveries are retried well within a minute.
    this.leaseMs = options.leaseMs ?? 2 * config.deliveryTimeoutMs + 5_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 1_000;
    this.reclaimIntervalMs = options.reclaimIntervalMs ?? 5_000;
    this.lostAfterMs = options.workerLostAfterMs ?? Math.min(WORKER_LOST_AFTER_MS, this.leaseMs);
    // Its own connection: a busy pool must not keep it from saying it runs in time.
    this.heartbeatPool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: 1,
      application_name: 'hookline-dispatcher-heartbeat',
      query_timeout: this.lostAfterMs / 4,
      connectionTimeoutMillis: this.lostAfterMs / 4,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEP_ALIVE_AFTER_MS,
    });
    this.heartbeatPool.on('error', (error) => this.log.warn({ err: error }, 'idle database connection failed'));
    this.slowAfterMs = options.slowAfterMs ?? Math.min(SLOW_AFTER_MS, config.deliveryTimeoutMs / 2);
    this.slowCapacity = options.slowCapacity ?? SLOW_CAPACITY_FACTOR * config.dispatchConcurrency;
    this.reservedSlots = Math.floor(config.dispatchConcurrency / RESERVE_DIVISOR);
    // Slots free up at least every slowAfterMs (an attempt gives its slot back by then), so this
    // many tenants' first deliveries start within half the time a claimed delivery has to start.
    const startWithinMs = this.leaseMs - config.deliveryTimeoutMs - RECORD_MARGIN_MS;
    this.firstSlotQueue = Math.max(1, Math.floor((config.dispatchConcurrency * startWithinMs) / this.slowAfterMs / 2));
    this.cappedClaimGapMs = options.cappedClaimGapMs ?? CAPPED_CLAIM_GAP_MS;
    this.dueScanIntervalMs = options.dueScanIntervalMs ?? DUE_SCAN_INTERVAL_MS;
  }

  async start(): Promise<void> {
    // Known as running before it holds anything: a dispatcher unknown here is left to its leases.
    await this.heartbeatPool.query('select 1'); // connected: the first round trip tells the clock
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => {
      this.checkListener();
      if (this.heartbeating) return;
      this.heartbeating = this.heartbeat()
        .catch((error) => this.log.warn({ err: error }, 'could not say this worker runs'))
        .finally(() => (this.heartbeating = undefined));
    }, this.lostAfterMs / 4);
    this.heartbeatTimer.unref();
    this.watchdogTimer = setInterval(() => this.watchStatements(), this.queryTimeoutMs / 4);
    this.watchdogTimer.unref();
    this.running = true;
    await this.listen();
    this.reclaimTimer = setInterval(() => {
      void this.reclaim();
      this.releaseLate(0);
      this.pump(); // counts the parked ones again
    }, this.reclaimIntervalMs);
    this.reclaimTimer.unref();
    void this.reclaim();
    this.loopDone = this.loop();
    this.log.info({ leaseMs: this.leaseMs }, 'dispatcher started');
  }

  /** Stops claiming, lets attempts in flight finish and records them. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.reclaimTimer);
    clearTimeout(this.retryTimer);
    this.retryAt = Number.POSITIVE_INFINITY;
    this.retryTimes.clear();
    this.poke();
    await this.loopDone;
    // Inserts that claim for this worker land in `ready`, and go back with the rest.
    while (this.reserved) await new Promise<void>((resolve) => this.unreserved.add(resolve));
    // Claimed but not started: back to the queue for another worker, untried.
    const unsent = this.ready.splice(0);
    for (const { delivery } of unsent) this.unhold(delivery);
    if (unsent.length) await releaseUntried(this.pool, this.workerId, unsent.map((r) => r.delivery)).catch(() => {});
    while (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.add(resolve));
    // flush() first waits for one under way (the last attempt's own); a statement per MAX_RECORD_BATCH.
    do await this.flush();
    while (this.pending.length);
    // Outcomes waiting for a subscription's row: tried once more, then left to the sign-off.
    clearTimeout(this.deferTimer);
    this.deferTimer = undefined;
    if (this.deferred.length) {
      this.pending.push(...this.deferred.splice(0));
      do await this.flush();
      while (this.pending.length);
      clearTimeout(this.deferTimer);
      if (this.deferred.length) this.unrecorded(new Error('their subscription was still held by another transaction'), this.deferred.splice(0));
    }
    // Heard from until now: others would take its attempts in flight for lost.
    clearInterval(this.heartbeatTimer);
    await this.heartbeating; // lest it land after the sign-off
    // What it still holds (an outcome it could not record, a delivery it could not hand back)
    // goes back to the queue with the sign-off.
    await signOff(this.pool, this.workerId).catch(() => {});
    // Its live_listeners row stays, passed over once its backend has gone (see listen()).
    await this.listener?.end().catch(() => {});
    await this.pool.end(); // the watchdog still drops statements of a silent database
    clearInterval(this.watchdogTimer);
    await this.heartbeatPool.end();
    await this.agent.close();
    this.log.info('dispatcher stopped');
  }

  /**
   * Room for the deliveries an insert of this process is about to create, claimed by
   * that insert: when this worker has nothing due waiting (a fresh delivery must not
   * pass older ones) and free slots, they are sent the moment the insert returns.
   */
  handOff(tenantId: string): HandOff | undefined {
    const { dispatchConcurrency: concurrency, dispatchPerSubscription: perSubscription, dispatchPerTenant: perTenant } = this.options.config;
    // Not beside a tenant's claim either: both would fill the same shares from the same counts.
    if (!this.running || !this.drained || this.ready.length || this.claimingFor || this.fenced()) return undefined;
    const limit = Math.min(concurrency - (this.inFlight - this.slow) - this.reserved, 2 * perTenant - (this.tenantHeld.get(tenantId) ?? 0));
    if (limit <= 0) return undefined;
    const settle = this.reserve(limit);
    // The insert that claims sets its leases after this moment: counted from here, they end later.
    const leasedAfter = Date.now();
    return {
      workerId: this.workerId,
      leaseMs: this.leaseMs,
      limit,
      perSubscription,
      busy: new Map(this.held),
      // A notified tenant's claim may have waited for the hand-off (claimForNotifiedTenants).
      adopt: (claimed) => {
        if (!settle.open) return;
        this.options.metrics?.handOffs.inc(claimed.length);
        // The slots are given back once the deliveries are in `ready` (stop() waits for both).
        void this.dispatch(claimed, leasedAfter).finally(() => {
          settle();
          this.claimForNotifiedTenants();
        });
      },
      cancel: () => {
        if (settle()) this.claimForNotifiedTenants();
      },
    };
  }

  /**
   * Takes `n` slots for a claim under way outside the loop; the function given back returns
   * them (once: true), and tells whether it has not yet (`open`).
   */
  private reserve(n: number): { (): boolean; readonly open: boolean } {
    this.reserved += n;
    let open = true;
    const settle = () => {
      if (!open) return false;
      open = false;
      this.reserved -= n;
      if (!this.reserved) {
        for (const resolve of this.unreserved) resolve();
        this.unreserved.clear();
      }
      return true;
    };
    return Object.defineProperty(settle, 'open', { get: () => open }) as { (): boolean; readonly open: boolean };
  }

  private retryTimer: NodeJS.Timeout | undefined;
  /** When the retry timer fires (the database's clock). */
  private retryAt = Number.POSITIVE_INFINITY;
  /** The due times of the retries this worker scheduled and has not woken for yet. */
  private readonly retryTimes = new MinHeap();

  /**
   * The database's clock, as this process reckons it: the times the queue compares with
   * PostgreSQL's now() (a retry's due time, an attempt's start) are written in it, so that a
   * worker whose clock is off neither retries at once nor late.
   */
  private dbNow(): number {
    return Date.now() + this.skewMs;
  }

  /** How far the database's clock is ahead of this process's (ms), measured as it says it runs. */
  private skewMs = 0;
  /** The quickest round trip that measured it, and when the last measure was taken (this process's clock). */
  private skewRoundTripMs = Number.POSITIVE_INFINITY;
  private skewMeasuredAt = 0;

  /**
   * Says this worker runs (on its own connection, or the pool's should that one fail); notes
   * when it was last heard from, and the database's clock. After a gap long enough for others
   * to have taken it for dead, what it had claimed and not started goes back to the queue.
   */
  private async heartbeat(): Promise<void> {
    const before = Date.now();
    const sent = performance.now();
    let databaseMs: number;
    try {
      databaseMs = await heartbeat(this.heartbeatPool, this.workerId, this.lostAfterMs).catch(() =>
        heartbeat(this.pool, this.workerId, this.lostAfterMs),
      );
    } catch (error) {
      this.pump(); // which stops starting attempts once the silence lasts (fenced())
      throw error;
    }
    const after = Date.now();
    if (this.heardLast && sent - this.heardLast > this.lostAfterMs / 2) this.unfence();
    this.heardLast = performance.now();
    // Half the round trip is the most the reckoning can be off by: the quicker ones are kept,
    // unless none has come for a minute.
    const roundTrip = after - before;
    if (roundTrip <= Math.max(20, 2 * this.skewRoundTripMs) || after - this.skewMeasuredAt > 60_000) {
      this.skewMs = databaseMs - (before + after) / 2;
      this.skewRoundTripMs = Math.min(this.skewRoundTripMs, roundTrip);
      this.skewMeasuredAt = after;
    }
  }

  /**
   * Ends the connections of statements unanswered for longer than the query timeout (the
   * server gives them up sooner, by statement_timeout: these are on connections that went
   * silent). The statement fails, its connection is dropped, and its step is tried again.
   */
  private watchStatements(): void {
    const now = performance.now();
    for (const [client, since] of this.checkedOut) {
      if (now - since <= this.queryTimeoutMs) continue;
      this.checkedOut.delete(client);
      this.log.warn({ ms: Math.round(now - since) }, 'a database statement went unanswered; dropping its connection');
      dropConnection(client);
    }
  }

  /**
   * Not heard from for half the time after which others take it for dead: it starts no attempt
   * and makes no claim, lest it send what another has taken back.
   */
  private fenced(): boolean {
    return this.heardLast > 0 && performance.now() - this.heardLast > this.lostAfterMs / 2;
  }

  /**
   * Heard from again after such a gap: what it claimed and did not start may have been taken
   * back and sent by another, so it goes back to the queue (a hand-back leaves rows no longer
   * this worker's alone), and the loop claims afresh.
   */
  private unfence(): void {
    const unsent = this.ready.splice(0);
    this.parked = 0;
    for (const { delivery } of unsent) this.unhold(delivery);
    if (unsent.length) this.handBack(unsent.map((r) => r.delivery), 'not heard from for a while: claimed deliveries handed back to the queue', 'warn');
    else this.poke();
  }

  /**
   * Wakes the loop when a retry this worker scheduled falls due at `at` (the database's clock),
   * and at each of the others it scheduled, in turn: the loop asks the database when the next
   * row falls due only after a claim that found nothing, with its shares leaving room, so the
   * other retries would otherwise wait for the poll, up to a second late. Retries a worker that
   * died scheduled come by that question, or by polling.
   */
  private wakeAt(at: number): void {
    if (!this.running) return; // stopping: attempts still recording wake no one
    const earliest = this.retryTimes.peek();
    if (this.retryTimes.size >= MAX_RETRY_WAKES && earliest !== undefined && at >= earliest) return; // the poll will do
    this.retryTimes.push(at);
    this.armRetryTimer();
  }

  private armRetryTimer(): void {
    const next = this.retryTimes.peek();
    if (next === undefined || next >= this.retryAt) return;
    clearTimeout(this.retryTimer);
    this.retryAt = next;
    // setTimeout takes at most 2^31-1 ms (24.8 days; more fires at once): a later retry wakes
    // the loop then, early, and the timer is armed again.
    this.retryTimer = setTimeout(() => {
      this.retryAt = Number.POSITIVE_INFINITY;
      // Only what is due now: the timer fires 5 ms late, and a retry due in those 5 ms is not
      // due yet for the claim this wakes; it keeps its own turn.
      const due = this.dbNow();
      while ((this.retryTimes.peek() ?? Number.POSITIVE_INFINITY) <= due) this.retryTimes.pop();
      this.armRetryTimer();
      this.poke();
    }, Math.min(Math.max(0, next - this.dbNow()) + 5, 2 ** 31 - 1));
    this.retryTimer.unref();
  }

  /**
   * A notification: the tenants it names (none: anyone) have deliveries due. A worker with
   * nothing left to claim finds them at the head of the queue; a busy one claims for them
   * apart (claimForNotifiedTenants), or they would wait behind the backlog.
   */
  private notified(payload: string | undefined): void {
    // Drained, the next claim finds them at the head of the queue: unless it waits for room
    // (taken by rows kept from the last slots, say), which a tenant's claim does not.
    if (payload && (!this.drained || this.boundByRoom(this.room()))) {
      // Anything but tenant ids (no one else should notify here) is a notification of anyone's.
      for (const tenantId of payload.split(',')) if (isUuid(tenantId)) this.notifiedTenants.add(tenantId.toLowerCase());
      this.claimForNotifiedTenants();
    }
    this.poke();
  }

  /** Wakes the loop (a notification, a timer): something may have fallen due. */
  poke(): void {
    this.drained = false;
    this.wakeLoop();
  }

  private wakeLoop(): void {
    this.wakeRequested = true;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.options.databaseUrl,
      application_name: 'hookline-dispatcher-listen',
      // Silent while nothing is created: keep-alive finds a dead server, and keeps NAT and firewalls from dropping it.
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEP_ALIVE_AFTER_MS,
      connectionTimeoutMillis: this.options.databaseTimeoutMs ?? CONNECT_TIMEOUT_MS,
      query_timeout: this.options.databaseTimeoutMs ?? QUERY_TIMEOUT_MS,
    });
    client.on('notification', ({ channel, payload }) =>
      channel === SUBSCRIPTION_STOPPED_CHANNEL ? this.subscriptionStopped(payload, client) : this.notified(payload),
    );
    client.on('error', (error) => {
      this.log.warn({ err: error }, 'LISTEN connection lost; reconnecting');
      this.reconnect(client);
    });
    client.on('end', () => this.reconnect(client));
    try {
      await client.connect();
      await client.query(`listen ${DELIVERIES_DUE_CHANNEL}; listen ${SUBSCRIPTION_STOPPED_CHANNEL}`);
      // Said in live_listeners, so that a change of a subscription knows whose hand-back to wait
      // for (see subscriptionStopped); a row left by a connection that died is passed over. The
      // row of the connection this one replaces goes: one dropped for its silence (a network cut)
      // may live on in the server for as long as TCP takes to find it dead, and never answer.
      await client.query(
        `with gone as (delete from ${LIVE_LISTENERS_TABLE} where channel = $1 and pid = $2)
         insert into ${LIVE_LISTENERS_TABLE} (channel, pid) values ($1, pg_backend_pid()) on conflict (channel, pid) do update set since = now()`,
        [SUBSCRIPTION_STOPPED_CHANNEL, this.listenerPid ?? 0],
      );
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
    if (!this.running) {
      // Stopped while (re)connecting: this connection is nobody's to end.
      await client.end().catch(() => {});
      return;
    }
    this.listener = client;
    this.listenerPid = (client as pg.Client & { processID?: number }).processID;
    // Anything that became due while we were not listening.
    this.poke();
    // And any subscription stopped meanwhile, unannounced to this worker.
    if (this.listenedBefore) this.recheckStopped();
    this.listenedBefore = true;
  }

  /**
   * After LISTEN was down: a subscription of the claimed deliveries not started yet may have been
   * deleted, deactivated or changed (address, headers, secret) meanwhile, unannounced to this
   * worker. They all go back to the queue, to be claimed again as their subscriptions now are
   * (canceled, paused, or sent as changed).
   */
  private recheckStopped(): void {
    const back = this.takeReady(() => true);
    this.handBack(back, 'LISTEN was down: claimed deliveries handed back, to be claimed again as their subscriptions now are');
    this.pump();
  }

  /**
   * Asks the LISTEN connection for an answer. It only reads: a server gone silent (its host
   * lost, no reset) would leave this worker deaf to notifications (new deliveries waiting for
   * the poll, stopped subscriptions unheard) for the minutes TCP keep-alive takes. One that
   * gives no answer in time is dropped, and so reconnected.
   */
  private checkListener(): void {
    const client = this.listener;
    if (!client || this.checkingListener) return;
    this.checkingListener = true;
    const limit = Math.min(this.lostAfterMs / 4, LISTENER_ANSWER_MS);
    within(client.query('select 1'), limit, `no answer on the LISTEN connection within ${limit} ms`)
      .catch((error: unknown) => {
        if (this.listener !== client) return;
        this.log.warn({ err: error }, 'the LISTEN connection went silent; dropping it');
        dropConnection(client);
      })
      .finally(() => (this.checkingListener = false));
  }

  private reconnect(client: pg.Client): void {
    if (this.listener !== client || !this.running) return;
    this.listener = undefined;
    void pRetry(() => this.listen(), {
      retries: Number.POSITIVE_INFINITY,
      minTimeout: 200,
      maxTimeout: 5_000,
      shouldRetry: () => this.running,
      onFailedAttempt: ({ attemptNumber }) => {
        if (attemptNumber % 10 === 1) this.log.warn({ attemptNumber }, 'cannot LISTEN yet; polling meanwhile');
      },
    }).catch(() => {});
  }

  private async reclaim(): Promise<void> {
    try {
      const count = await reclaimLostDeliveries(this.pool, this.workerId);
      if (count) {
        this.log.warn({ count }, 'deliveries of a lost worker returned to the queue');
        this.poke();
      }
    } catch (error) {
      this.log.warn({ err: error }, 'reclaiming the deliveries of lost workers failed');
    }
  }

  /**
   * Claims ahead: while a batch is being sent the next one is claimed, so slots
   * never wait for a round trip. At most two batches are held (sending and
   * ready), and each subscription at most twice its share (one that answers fast,
   * FAST_DEPTH times), so a ready delivery starts well within its lease.
   */
  private async loop(): Promise<void> {
    const { dispatchPerTenant: perTenant } = this.options.config;
    while (this.running) {
      this.wakeRequested = false;
      let sleepMs = this.pollIntervalMs;
      const room = this.room();
      this.roomBound = this.boundByRoom(room);
      const backoffMs = this.claimNotBefore - Date.now();
      if (backoffMs <= 0) this.claimNotBefore = 0; // waited out: freed slots refill as usual again
      // Behind a backlog, rows that fell due on their own (retries, above all) are nobody's
      // notification: each tenant with some is found, and claimed for apart.
      if (!this.drained && (this.roomBound || this.lastClaimFull)) this.scanDueTenants();
      // Tenants' claims go when the loop will not claim (backing off; without room, unless it
      // is the loop's turn, which it keeps until it claims), or after its claim.
      if (backoffMs > 0) this.loopTurn = false;
      if (backoffMs > 0 || this.roomBound) this.claimForNotifiedTenants();
      if (backoffMs > 0) {
        sleepMs = Math.min(sleepMs, backoffMs);
      } else if (this.claimingFor) {
        // A tenant's claim is under way; it wakes the loop when it ends.
      } else if (this.fenced()) {
        sleepMs = Math.min(sleepMs, 250); // until heard from again (unfence() pokes)
      } else if (!this.roomBound) {
        try {
          const claimStarted = Date.now();
          this.claimNotBefore = 0;
          this.shareFreed = false;
          this.loopClaiming = true;
          this.loopTurn = false;
          let claimed: ClaimedDelivery[];
          const deeper = [...this.held.keys()].filter((id) => this.depthOf(id) > 2);
          const limit = deeper.length ? Math.min(room, FAST_CLAIM_LIMIT) : room;
          try {
            claimed = await this.claim(limit, this.tenantsBusy(2 * perTenant), deeper);
            if (this.claimFailures) {
              this.log.info({ failures: this.claimFailures }, 'claiming deliveries works again');
              this.claimFailures = 0;
            }
            this.lastClaimFull = claimed.length === claimSize(limit);
            if (claimed.length) await this.dispatch(claimed, claimStarted);
          } finally {
            this.loopClaiming = false;
            this.claimForNotifiedTenants(); // held while this claim ran
          }
          if (claimed.length === claimSize(limit)) continue; // more may be due
          // A subscription at its share may have had rows left out, and left others' rows
          // behind them: the next claim leaves it out. Its own rows wait for its slots
          // (a freed slot claims again), not for a timer.
          const capped = this.capped();
          if (claimed.length && capped) continue;
          // Nothing new while shares are full: every freed slot and notification would claim
          // again, each walking past the full shares' due rows. The next waits a little,
          // longer when claims take long.
          this.claimNotBefore =
            !claimed.length && capped && !this.shareFreed ? Date.now() + Math.max(this.cappedClaimGapMs, 4 * (Date.now() - claimStarted)) : 0;
          // A share freed while the claim ran may have left rows it could not see: not drained.
          if (!this.wakeRequested) this.drained = !capped && !this.shareFreed;
          // (After a claim that found some, this worker's retries still wake it each at its
          // time: wakeAt(). Asking here after every claim was a query per delivery when they
          // come one by one.)
          if (!claimed.length && !capped && !this.wakeRequested) {
            const due = await nextDueAt(this.pool);
            // Due already, yet not claimed: locked by a transaction (SKIP LOCKED passed it by).
            // Claiming again at once would spin until it ends; a short wait will do.
            const wait = due ? due.getTime() - this.dbNow() : sleepMs;
            sleepMs = Math.min(sleepMs, wait > 0 ? wait : LOCKED_DUE_GAP_MS);
          }
          // Otherwise what falls due next comes by notification, by wakeAt() for this
          // worker's retries, or by the next poll.
        } catch (error) {
          // Tried again every 500 ms (a database restarting, say), said at the first failure
          // and then once every CLAIM_FAILURE_LOG_MS, not twice a second.
          this.claimFailures++;
          if (this.claimFailures === 1 || Date.now() - this.claimFailureLoggedAt >= CLAIM_FAILURE_LOG_MS) {
            this.claimFailureLoggedAt = Date.now();
            this.log.error({ err: error, failures: this.claimFailures }, 'claiming deliveries failed; trying again every 500 ms');
          }
          sleepMs = 500;
        }
      }
      if (!this.running) break;
      if (this.wakeRequested) continue;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.wakeTimer = setTimeout(() => this.poke(), sleepMs);
      });
      clearTimeout(this.wakeTimer);
    }
  }

  /**
   * Room for claims: two batches' worth of slots, less what is being sent and what is ready to
   * start. Slow attempts and parked deliveries wait for their own receivers, not for slots:
   * they take no room (parked ones' subscriptions and tenants, at their shares, are left out
   * of the claim, and one that waits too long goes back to the queue: releaseLate).
   */
  private room(): number {
    const startable = this.ready.length - this.parked;
    return 2 * this.options.config.dispatchConcurrency - (this.inFlight - this.slow) - startable - this.reserved;
  }

  /** Whether the loop's claim waits for room: a batch is ready to start, or `room` is taken. */
  private boundByRoom(room: number): boolean {
    return !(this.ready.length - this.parked < this.options.config.dispatchConcurrency && room > 0);
  }

  /**
   * A claim within each subscription's and tenant's share (`tenantId`: for that tenant alone;
   * `deeper`, the loop's: the held subscriptions whose share reaches FAST_DEPTH times theirs), counted.
   */
  private async claim(limit: number, tenantsBusy: ReadonlyMap<string, number>, deeper?: string[], tenantId?: string): Promise<ClaimedDelivery[]> {
    const { dispatchPerSubscription: perSubscription, dispatchPerTenant: perTenant } = this.options.config;
    // A fast subscription's share is deeper: it counts as holding that much less (the claim's
    // SQL takes one share for all).
    const busy = deeper?.length ? new Map(this.held) : this.held;
    for (const id of deeper ?? []) busy.set(id, this.held.get(id)! - (FAST_DEPTH - 2) * perSubscription);
    if (deeper) {
      this.deepened.clear();
      for (const id of deeper) this.deepened.add(id);
    }
    const claimed = await claimDeliveries(this.pool, {
      workerId: this.workerId,
      limit,
      leaseMs: this.leaseMs,
      subscriptions: { share: 2 * perSubscription, busy },
      tenants: { share: 2 * perTenant, busy: tenantsBusy },
      tenantId,
    });
    this.options.metrics?.claims.inc({ result: claimed.length ? 'found' : 'empty' });
    return claimed;
  }

  /**
   * How many times its share of slots the loop's claim fills for a subscription held here: a
   * fast one's (FAST_DEPTH), unless its tenant has slow attempts.
   */
  private depthOf(subscriptionId: string): number {
    return this.answersFast(subscriptionId) && !this.tenantLingering.has(this.subscriptionTenant.get(subscriptionId)!) ? FAST_DEPTH : 2;
  }

  /** Whether a subscription's attempts take less than FAST_ATTEMPT_MS, on average of late. */
  private answersFast(subscriptionId: string): boolean {
    const ms = this.attemptMs.get(subscriptionId);
    return ms !== undefined && ms < FAST_ATTEMPT_MS;
  }

  /** The depth the loop's last claim gave a subscription (see deepened). */
  private claimedDepth(subscriptionId: string): number {
    return this.deepened.has(subscriptionId) ? FAST_DEPTH : 2;
  }

  /** Whether a subscription is at the share its claim gave it, and deeper now (depthOf). */
  private deepensAtShare(subscriptionId: string): boolean {
    const claimed = this.claimedDepth(subscriptionId);
    return this.depthOf(subscriptionId) > claimed && (this.held.get(subscriptionId) ?? 0) >= claimed * this.options.config.dispatchPerSubscription;
  }

  /** Whether a subscription of `tenantId` held here is at its claimed share and fast: deeper once the tenant has no slow attempts. */
  private deepensOnceNotSlow(tenantId: string): boolean {
    const perSubscription = this.options.config.dispatchPerSubscription;
    for (const [id, n] of this.held) {
      const claimed = this.claimedDepth(id);
      if (this.subscriptionTenant.get(id) === tenantId && claimed < FAST_DEPTH && n >= claimed * perSubscription && this.answersFast(id)) return true;
    }
    return false;
  }

  /** Counts an attempt of a subscription held here that took `ms` (see depthOf). */
  private timed(subscriptionId: string, ms: number): void {
    const average = this.attemptMs.get(subscriptionId);
    if (average === undefined && this.attemptMs.size >= 10_000) this.attemptMs.clear();
    this.attemptMs.set(subscriptionId, average === undefined ? ms : average + (ms - average) / 8);
    // Deeper now than its claim made it, which found it full: the claim has room for it. (Not
    // one that was not full: each of its answers would wake claims that back off behind
    // another's full share, to walk that share's backlog for nothing.)
    if (this.deepensAtShare(subscriptionId)) {
      this.shareFreed = true;
      if (this.claimNotBefore) {
        this.claimNotBefore = 0;
        this.wakeLoop();
      }
    }
  }

  /** Whether a subscription or tenant is at its share: a claim then walks past its due rows. */
  private capped(): boolean {
    const { dispatchPerSubscription: perSubscription, dispatchPerTenant: perTenant } = this.options.config;
    return (
      [...this.held].some(([id, n]) => n >= this.claimedDepth(id) * perSubscription) ||
      [...this.tenantHeld.values()].some((n) => n >= 2 * perTenant) ||
      (this.slow >= this.slowCapacity && this.tenantLingering.size > 0)
    );
  }

  /**
   * Claims for notified tenants, each alone through its own due index, so that another's
   * backlog delays none of them: the general claim takes the oldest due rows first, and
   * with a backlog at the head of the queue (a burst, or a hanging endpoint's at its share)
   * sees no one else's until the backlog is gone, or walks past all of it (backing off
   * between such claims). One such claim at a time, taking turns with the loop's claims
   * (never beside one, nor beside a hand-off: both would fill the same shares from the same
   * counts; the loop waits for it, and goes next), on slots reserved for it, at most
   * TENANT_CLAIM_LIMIT deliveries and the tenant's window. A tenant whose claim came back
   * full is claimed for again, at its next turn.
   * Left to the general claim: a tenant at its share, or with a subscription at its share,
   * whose claim would walk that subscription's backlog. (Nor is the tenant whose rows the
   * general claim takes left to it: telling so from one claim's answer races with the next
   * insert, and its claim here takes rows that are due all the same.)
   */
  private claimForNotifiedTenants(): void {
    // Slots reserved now are a hand-off's (an insert claiming for this worker): it settles soon.
    if (this.claimingFor || this.loopClaiming || this.reserved || !this.notifiedTenants.size || !this.running || this.fenced()) return;
    const { dispatchConcurrency: concurrency, dispatchPerSubscription: perSubscription, dispatchPerTenant: perTenant } = this.options.config;
    const room = this.room();
    // The tenant holding the fewest deliveries here goes first (between equals, the first
    // notified), as a freed slot goes to the tenant with the fewest in flight (pump). One holding
    // none goes even beyond the room (by up to one concurrency's worth) and before the loop's
    // turn: otherwise, with the room kept full by others' backlogs (ready to start at the next
    // freed slot, each of their claims refilling it), its delivery waited behind each of their
    // claims in turn, and then the loop's, one freed slot each.
    // Beyond even that (crowded: the room taken by others' backlogs, or by the rows of tenants
    // whose attempts turned slow, kept from the last slots until their attempts end), a tenant
    // holding none is still claimed for, a delivery at a time: a freed slot goes to a tenant with
    // nothing in flight first (pump), so it starts within a round of freed slots, where the
    // general claim would find it only behind the backlogs (two tenants with slow receivers held
    // it 0.7-2 s, in waves; 200 tenants' backlogs, 14 s: reviews). But only while fewer tenants
    // wait so for their first slot than freed slots can start in time (firstSlotQueueFull): a claim
    // for every tenant notified or found due brought more rows than that, handed back untried
    // past their deadline and claimed again (a review: 300 hand-backs, some rows four times).
    const crowded = room + concurrency <= 0;
    if (crowded && this.firstSlotQueueFull()) return; // a freed slot (release) or the loop comes back here
    const full = new Set<string>();
    for (const [subscriptionId, n] of this.held) if (n >= 2 * perSubscription) full.add(this.subscriptionTenant.get(subscriptionId)!);
    const tenantsBusy = this.tenantsBusy(2 * perTenant);
    let pick: string | undefined;
    let fewest = Infinity;
    for (const tenantId of this.notifiedTenants) {
      if (full.has(tenantId) || 2 * perTenant - (tenantsBusy.get(tenantId) ?? 0) <= 0) {
        this.notifiedTenants.delete(tenantId);
        continue;
      }
      const held = this.tenantHeld.get(tenantId) ?? 0;
      if (held >= fewest || (held > 0 && (room <= 0 || this.loopTurn))) continue;
      pick = tenantId;
      fewest = held;
      if (held === 0) break;
    }
    if (pick === undefined) return;
    this.notifiedTenants.delete(pick);
    const tenantId = pick;
    const window = 2 * perTenant - (tenantsBusy.get(tenantId) ?? 0);
    const limit = claimSize(Math.min(fewest > 0 ? room : crowded ? 1 : room + concurrency, TENANT_CLAIM_LIMIT, window));
    this.claimingFor = tenantId;
    const settle = this.reserve(limit);
    void this.claimForTenant(tenantId, limit, tenantsBusy)
      .catch((error) => this.log.error({ err: error, tenantId }, 'claiming deliveries for a tenant failed'))
      .finally(() => {
        settle();
        this.claimingFor = undefined;
        // Taking turns: the loop's claim (retries that fell due, rows handed back, tenants
        // no notification named) does not wait for every notified tenant's backlog.
        this.loopTurn = true;
        this.wakeLoop();
      });
  }

  /**
   * Whether firstSlotQueue tenants have deliveries ready and none in flight (each freed slot goes
   * to one of them first: pump). Asked at every freed slot while crowded: fewer ready rows than
   * that cannot be, and are not walked, and the walk stops once it finds that many.
   */
  private firstSlotQueueFull(): boolean {
    if (this.ready.length < this.firstSlotQueue) return false;
    const waiting = new Set<string>();
    for (const { delivery } of this.ready) {
      if (this.tenantSending.has(delivery.tenantId)) continue;
      waiting.add(delivery.tenantId);
      if (waiting.size >= this.firstSlotQueue) return true;
    }
    return false;
  }

  /**
   * Names the tenants that have deliveries due, as notifications name those with new ones, so
   * that a busy worker claims for them apart (claimForNotifiedTenants): what falls due on its
   * own (a retry, a delivery handed back) has no notification, and the general claim would
   * reach it only behind the backlog ahead of it, oldest first. At most once per
   * DUE_SCAN_INTERVAL_MS, walking DUE_SCAN_WALK tenants with deliveries waiting, the next look
   * going on where this one stopped.
   */
  private scanDueTenants(): void {
    if (this.scanning || Date.now() < this.scanNotBefore) return;
    this.scanning = true;
    this.scanNotBefore = Date.now() + this.dueScanIntervalMs;
    void dueTenants(this.pool, this.scanFrom, DUE_SCAN_WALK)
      .then(({ due, next }) => {
        this.scanFrom = next;
        if (this.drained || !due.length) return; // the general claim has reached everything due
        for (const tenantId of due) this.notifiedTenants.add(tenantId);
        this.claimForNotifiedTenants();
      })
      .catch((error) => this.log.warn({ err: error }, 'looking for tenants with deliveries due failed'))
      .finally(() => (this.scanning = false));
  }

  private async claimForTenant(tenantId: string, limit: number, tenantsBusy: ReadonlyMap<string, number>): Promise<void> {
    const sentAt = Date.now();
    const claimed = await this.claim(limit, tenantsBusy, undefined, tenantId);
    // More of its deliveries may be due: it goes round again (at the back).
    if (claimed.length === limit) this.notifiedTenants.add(tenantId);
    if (claimed.length) await this.dispatch(claimed, sentAt);
  }

  /**
   * What each tenant holds, for the claim's window. While slow attempts are at capacity a
   * tenant with slow ones starts no more (pump), so none of its deliveries is claimed either:
   * it would only wait, parked, under a lease.
   */
  private tenantsBusy(share: number): ReadonlyMap<string, number> {
    if (this.slow < this.slowCapacity || !this.tenantLingering.size) return this.tenantHeld;
    const busy = new Map(this.tenantHeld);
    for (const tenantId of this.tenantLingering.keys()) busy.set(tenantId, Math.max(busy.get(tenantId) ?? 0, share));
    return busy;
  }

  private count(map: Map<string, number>, id: string | null, delta: number): void {
    if (!id) return;
    const n = (map.get(id) ?? 0) + delta;
    if (n > 0) map.set(id, n);
    else map.delete(id);
  }

  /** Retries a database step briefly (a restart, a dropped connection), as claims and flushes do. */
  private retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return pRetry(fn, {
      retries: 5,
      minTimeout: 100,
      maxTimeout: 1_000,
      onFailedAttempt: ({ error, attemptNumber }) => this.log.warn({ err: error, attemptNumber }, `${what} failed; retrying`),
    });
  }

  /**
   * A subscription was deleted or deactivated: what this worker claimed for it and has not
   * started goes back to the queue, where it waits paused with the subscription's other
   * deliveries, or is canceled by the next claim if it was deleted. An attempt under way
   * finishes. Remembered a while for claims under way, which may have read it before.
   */
  private subscriptionStopped(subscriptionId: string | undefined, heardOn?: pg.Client): void {
    if (!subscriptionId || !isUuid(subscriptionId)) return;
    subscriptionId = subscriptionId.toLowerCase(); // as the claim gives it
    const now = Date.now();
    for (const [id, at] of this.stopped) if (now - at > STOPPED_MEMORY_MS) this.stopped.delete(id);
    this.stopped.set(subscriptionId, now);
    const back = this.takeReady((r) => r.delivery.subscriptionId === subscriptionId);
    // None of them can start now: the change may answer its caller (LiveUpdates.expectHandBack).
    heardOn
      ?.query(`select pg_notify($1, $2 || ':' || pg_backend_pid())`, [SUBSCRIPTION_STOPPED_HEARD_CHANNEL, subscriptionId])
      .catch(() => {});
    this.handBack(back, 'subscription deleted, deactivated or changed: its claimed deliveries handed back to the queue');
    this.pump(); // counts the parked ones again
  }

  /**
   * Returns claimed deliveries, untried, to the queue (a deactivated subscription's stay
   * paused, but for untried test events: see releaseClaims); if that fails,
   * their lease (or their worker's silence) returns them.
   */
  private handBack(deliveries: ClaimedDelivery[], message: string, level: 'info' | 'warn' = 'info', tries = 0): void {
    if (!deliveries.length) return;
    if (!tries) this.log[level]({ count: deliveries.length }, message);
    void releaseUntried(this.pool, this.workerId, deliveries)
      .then((leftIds) => {
        const kept = new Set(leftIds);
        const left = deliveries.filter((d) => kept.has(d.id));
        // Their subscription held by another transaction (a deactivation, another 410's record):
        // handed back once it is let go, tried every second for a while; then their lease will.
        if (left.length && tries < HAND_BACK_TRIES && this.running) {
          setTimeout(() => this.handBack(left, message, level, tries + 1), RECORD_AGAIN_MS).unref();
        }
      })
      .catch((error) => this.log.warn({ err: error }, 'could not hand claimed deliveries back; their lease will'))
      .finally(() => this.poke());
  }

  /** Takes claimed deliveries in, to send as slots free up; their leases began after `leasedAfter` (this process's clock). */
  private async dispatch(claimed: ClaimedDelivery[], leasedAfter: number): Promise<void> {
    const orphans = claimed.filter((d) => d.secret === null).map((d) => d.id);
    let live = orphans.length ? claimed.filter((d) => d.secret !== null) : claimed;
    try {
      if (orphans.length) await this.retrying('canceling orphans', () => cancelOrphans(this.pool, this.workerId, orphans));
    } catch (error) {
      // Hand the batch back now rather than leave it to the lease; if even that fails, the lease will.
      this.log.error({ err: error, count: claimed.length }, 'could not prepare a claimed batch; releasing it');
      await releaseUntried(this.pool, this.workerId, claimed).catch(() => {});
      return;
    }
    // A claim under way when a subscription stopped or changed (up to now: the cancel above
    // awaited) may have read it before, or read its new address with its old headers and
    // secrets: its deliveries go back (their address made the subscription's as they do).
    if (this.stopped.size || live.some((d) => d.staleUrl)) {
      const isStale = (d: ClaimedDelivery) =>
        d.staleUrl === true ||
        (d.subscriptionId !== null && (this.stopped.get(d.subscriptionId) ?? -Infinity) >= leasedAfter);
      const stale = live.filter(isStale);
      if (stale.length) {
        live = live.filter((d) => !isStale(d));
        this.handBack(stale, 'subscription deleted, deactivated or changed during a claim: its deliveries handed back to the queue');
      }
    }
    // The claim gives each event's body once; its other deliveries share it.
    const bodies = new Map<string, string>();
    for (const d of claimed) if (d.body !== null) bodies.set(d.eventId, d.body);
    // The latest start that still leaves the attempt and its record within the lease.
    const deadline = leasedAfter + this.leaseMs - this.options.config.deliveryTimeoutMs - RECORD_MARGIN_MS;
    for (const delivery of live) {
      this.count(this.held, delivery.subscriptionId, 1);
      if (delivery.subscriptionId) this.subscriptionTenant.set(delivery.subscriptionId, delivery.tenantId);
      this.count(this.tenantHeld, delivery.tenantId, 1);
      this.ready.push({ delivery, body: bodies.get(delivery.eventId), deadline });
    }
    this.pump();
  }

  /**
   * Hands back, untried, the ready deliveries that could no longer be sent and recorded
   * within their lease (they waited too long behind slow receivers): another claim gives
   * them a lease of their own, rather than this one expiring while they are sent (and
   * another worker sending them too). `from` is where in `ready` to look.
   */
  private releaseLate(from: number): void {
    const now = Date.now();
    this.handBack(this.takeReady((r) => r.deadline <= now, from), 'claimed deliveries waited too long for a slot; handed back to the queue', 'warn');
  }

  /** Takes the ready deliveries `which` picks (from index `from` on) out of `ready` and the shares: their ids. */
  private takeReady(which: (ready: Ready) => boolean, from = 0): ClaimedDelivery[] {
    const taken: ClaimedDelivery[] = [];
    for (let i = from; i < this.ready.length; ) {
      const ready = this.ready[i]!;
      if (!which(ready)) {
        i++;
        continue;
      }
      this.ready.splice(i, 1);
      this.unhold(ready.delivery);
      taken.push(ready.delivery);
    }
    return taken;
  }

  private unhold(delivery: ClaimedDelivery): void {
    this.count(this.held, delivery.subscriptionId, -1);
    if (delivery.subscriptionId && !this.held.has(delivery.subscriptionId)) this.subscriptionTenant.delete(delivery.subscriptionId);
    this.count(this.tenantHeld, delivery.tenantId, -1);
  }

  /**
   * Starts ready deliveries while slots are free, each subscription and tenant within its
   * share. Each free slot goes to the tenant with the fewest attempts being sent (its oldest
   * ready delivery; between equals, the oldest): a tenant whose backlog fills `ready` (its
   * endpoints answering just under a second, never slow) would otherwise have every delivery
   * of it go before another tenant's that came after.
   */
  private pump(): void {
    const { dispatchConcurrency: concurrency } = this.options.config;
    if (this.fenced()) return; // unfence() hands `ready` back
    // Ready deliveries ahead of the first that may start: they wait for their shares (parked),
    // and a start only fills shares further, so the next look begins after them.
    let parked = 0;
    const now = Date.now();
    while (this.inFlight - this.slow < concurrency && this.running) {
      let pick = -1;
      let fewest = Infinity;
      const oneTenant = this.tenantHeld.size <= 1;
      let i = parked;
      parked = this.ready.length;
      while (i < this.ready.length) {
        const ready = this.ready[i]!;
        if (ready.deadline <= now) {
          this.releaseLate(i); // takes every late one from i on
          continue;
        }
        if (!this.mayStart(ready.delivery)) {
          i++;
          continue;
        }
        if (concurrency - (this.inFlight - this.slow) <= this.reservedSlots && this.tenantLingering.has(ready.delivery.tenantId)) {
          // The last slots are the others' (RESERVE_DIVISOR): it waits for a slot, not a share, so it
          // is not parked but takes room (see room()), and no claim brings more of its tenant's rows
          // only to wait past their deadline.
          parked = Math.min(parked, i);
          i++;
          continue;
        }
        if (pick < 0) parked = Math.min(parked, i);
        const sending = oneTenant ? 0 : (this.tenantSending.get(ready.delivery.tenantId) ?? 0);
        if (sending < fewest) {
          pick = i;
          fewest = sending;
          if (sending === 0) break; // none fewer
        }
        i++;
      }
      if (pick < 0) break;
      const [{ delivery, body }] = this.ready.splice(pick, 1) as [Ready];
      this.inFlight++;
      this.count(this.sending, delivery.subscriptionId, 1);
      this.count(this.tenantSending, delivery.tenantId, 1);
      this.options.metrics?.inFlight.inc();
      const flight: Flight = { delivery, slow: false, overdue: false, done: false, timer: undefined };
      flight.timer = setTimeout(() => this.slowed(flight), this.slowAfterMs);
      flight.timer.unref();
      void this.attempt(delivery, body).finally(() => this.release(flight));
    }
    this.parked = Math.min(parked, this.ready.length);
  }

  /** Whether a ready delivery may start now: its subscription and tenant within their shares. */
  private mayStart(delivery: ClaimedDelivery): boolean {
    const { dispatchPerSubscription: perSubscription, dispatchPerTenant: perTenant } = this.options.config;
    const id = delivery.subscriptionId;
    return !(
      (id && ((this.sending.get(id) ?? 0) >= perSubscription || this.goneHere.has(id) || this.heldSubscriptions.has(id))) ||
      (this.tenantSending.get(delivery.tenantId) ?? 0) >= perTenant ||
      // Slow attempts at capacity: a tenant whose receivers are slow waits, and the slots
      // go to the others (its next attempt would only hold one, overdue).
      (this.slow >= this.slowCapacity && this.tenantLingering.has(delivery.tenantId))
    );
  }

  /** An attempt still unanswered: its slot goes to the next delivery, if slow ones have room. */
  private slowed(flight: Flight): void {
    flight.timer = undefined;
    if (flight.done) return;
    if (!flight.overdue) this.count(this.tenantLingering, flight.delivery.tenantId, 1);
    if (this.slow >= this.slowCapacity) {
      flight.overdue = true;
      this.overdue.push(flight); // keeps its slot until a slow one ends
      return;
    }
    flight.overdue = false;
    flight.slow = true;
    this.slow++;
    this.options.metrics?.slowInFlight.inc();
    this.pump();
    // A claim can find more only if the last one was cut short for want of room.
    if (this.roomBound) this.wakeLoop();
  }

  private release(flight: Flight): void {
    const { delivery } = flight;
    const { dispatchPerSubscription: perSubscription, dispatchPerTenant: perTenant } = this.options.config;
    // Whether this frees a full share (or room among slow attempts at capacity, which lets
    // tenants with slow attempts be claimed for again; or ends its tenant's slow attempts, which
    // lets its fast subscriptions at their share be claimed for deeper: depthOf).
    const endsSlow = (flight.slow || flight.overdue) && this.tenantLingering.get(delivery.tenantId) === 1;
    const wasAtShare =
      (delivery.subscriptionId !== null && (this.held.get(delivery.subscriptionId) ?? 0) >= this.claimedDepth(delivery.subscriptionId) * perSubscription) ||
      (this.tenantHeld.get(delivery.tenantId) ?? 0) >= 2 * perTenant ||
      ((flight.slow || flight.overdue) && this.slow >= this.slowCapacity) ||
      (endsSlow && this.deepensOnceNotSlow(delivery.tenantId));
    if (wasAtShare) this.shareFreed = true;
    flight.done = true;
    clearTimeout(flight.timer);
    if (flight.slow || flight.overdue) this.count(this.tenantLingering, delivery.tenantId, -1);
    if (flight.slow) {
      this.slow--;
      this.options.metrics?.slowInFlight.dec();
      // Its room among the slow ones goes to the longest overdue attempt still under way.
      for (let next = this.overdue.shift(); next; next = this.overdue.shift()) {
        if (next.done) continue;
        this.slowed(next);
        break;
      }
    }
    this.inFlight--;
    this.options.metrics?.inFlight.dec();
    this.count(this.sending, delivery.subscriptionId, -1);
    this.count(this.tenantSending, delivery.tenantId, -1);
    this.unhold(delivery);
    if (this.inFlight === 0) {
      for (const resolve of this.idle) resolve();
      this.idle.clear();
    }
    this.pump();
    this.claimForNotifiedTenants(); // a notified tenant may have waited for a slot
    if (this.loopTurn) this.wakeLoop(); // or the loop, whose turn it is
    if (this.claimNotBefore) {
      // Shares were full and nothing else was due: only a share this frees can give a claim work.
      if (wasAtShare) {
        this.claimNotBefore = 0;
        this.wakeLoop();
      }
      return;
    }
    // Refill once the ready batch runs low, unless the last claim found nothing more.
    if (this.ready.length - this.parked < this.options.config.dispatchConcurrency && !this.drained) this.wakeLoop();
  }

  private keyOf(secret: string): Buffer {
    let key = this.keys.get(secret);
    if (!key) {
      if (this.keys.size > 10_000) this.keys.clear();
      key = decodeSecrets([secret])[0]!;
      this.keys.set(secret, key);
    }
    return key;
  }

  private async attempt(delivery: ClaimedDelivery, body: string | undefined): Promise<void> {
    const startedAt = new Date(this.dbNow());
    let outcome: AttemptOutcome;
    if (body === undefined) {
      outcome = this.failure(delivery, startedAt, { error: 'event body missing', statusCode: null, responseBody: null, durationMs: 0 });
    } else {
      let result: Awaited<ReturnType<Sender['send']>>;
      try {
        const secrets = signingSecrets(
          {
            secret: delivery.secret!,
            previousSecret: delivery.previousSecret,
            previousSecretExpiresAt: delivery.previousSecretExpiresAt,
            earlierSecrets: delivery.earlierSecrets,
          },
          this.clock.now(),
        );
        result = await this.sender.send({
          deliveryId: delivery.id,
          event: delivery.event,
          url: delivery.targetUrl,
          body,
          keys: secrets.map((s) => this.keyOf(s)),
          headers: delivery.headers,
        });
      } catch (error) {
        // Nothing was sent (a stored secret or header that cannot be used, say): a failed
        // attempt like any other, recorded, rather than an error that ends the process.
        this.log.error({ err: error, deliveryId: delivery.id }, 'could not make an attempt');
        result = { ok: false, statusCode: null, responseBody: null, durationMs: 0, error: `not sent: ${(error as Error).message}` };
      }
      this.options.metrics?.attemptDuration.observe(result.durationMs / 1000);
      if (delivery.subscriptionId) this.timed(delivery.subscriptionId, result.durationMs);
      outcome = result.ok
        ? {
            deliveryId: delivery.id,
            tenantId: delivery.tenantId,
            subscriptionId: delivery.subscriptionId,
            lease: delivery.lease,
            status: 'DELIVERED',
            startedAt,
            durationMs: result.durationMs,
            statusCode: result.statusCode,
            error: null,
            responseBody: result.responseBody,
            nextAttemptAt: null,
            gone: false,
          }
        : this.failure(delivery, startedAt, result);
    }
    const metrics = this.options.metrics;
    if (outcome.status === 'DELIVERED') metrics?.attempts.inc({ outcome: 'success' });
    else {
      const reason = failureReason(outcome.statusCode, outcome.error ?? '');
      metrics?.attempts.inc({ outcome: 'failure' });
      metrics?.failures.inc({ reason });
      // Ids and the reason only: never the address (its query may hold a token) nor headers.
      const fields = { deliveryId: delivery.id, subscriptionId: delivery.subscriptionId, tenantId: delivery.tenantId, reason, statusCode: outcome.statusCode };
      if (outcome.status === 'FAILED') this.log.info({ ...fields, attempts: delivery.attempts + 1 }, 'delivery FAILED: its retry schedule is used up');
      else this.log.debug({ ...fields, nextAttemptAt: outcome.nextAttemptAt }, 'delivery attempt failed; retried later');
    }
    this.record(outcome);
  }

  private failure(
    delivery: ClaimedDelivery,
    startedAt: Date,
    result: { error: string; statusCode: number | null; responseBody: string | null; durationMs: number; retryAfter?: string },
  ): AttemptOutcome {
    const now = Date.now();
    const throttled = result.statusCode === 429 || result.statusCode === 503;
    const step = nextAttempt(
      this.options.config.retrySchedule,
      delivery.scheduleAttempts + 1,
      throttled ? parseRetryAfter(result.retryAfter, now) : undefined,
    );
    return {
      deliveryId: delivery.id,
      tenantId: delivery.tenantId,
      subscriptionId: delivery.subscriptionId,
      lease: delivery.lease,
      status: step.kind === 'exhausted' ? 'FAILED' : 'PENDING',
      startedAt,
      durationMs: result.durationMs,
      statusCode: result.statusCode,
      error: result.error,
      responseBody: result.responseBody,
      nextAttemptAt: step.kind === 'exhausted' ? null : new Date(this.dbNow() + step.delayMs),
      // Only when asked for (HOOKLINE_DISABLE_ON_GONE): otherwise a 410 follows the schedule.
      gone: result.statusCode === 410 && this.options.config.disableOnGone,
      targetUrl: delivery.targetUrl,
    };
  }

  private record(outcome: AttemptOutcome): void {
    if (outcome.nextAttemptAt) this.wakeAt(outcome.nextAttemptAt.getTime());
    if (outcome.gone && outcome.subscriptionId) this.goneHere.add(outcome.subscriptionId);
    this.pending.push(outcome);
    // Alone (nothing else in flight or waiting), there is nothing to batch with: record it now.
    if (this.pending.length >= FLUSH_BATCH || (this.inFlight === 1 && !this.ready.length)) void this.flush();
    else this.flushTimer ??= setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
  }

  /**
   * Records a batch in one statement (one transaction with a 410's deactivation), retried on
   * transient errors; answers the outcomes left for later (see recordAttempts).
   */
  private async recordBatch(batch: AttemptOutcome[]): Promise<AttemptOutcome[]> {
    const { gone, moved, deferred } = await pRetry(() => recordOutcomes(this.pool, this.workerId, batch, 'the endpoint answered 410 Gone'), {
      retries: 8,
      minTimeout: 100,
      maxTimeout: 2_000,
      // A value refused now is refused on every try.
      shouldRetry: ({ error }) => transient(error),
      onFailedAttempt: ({ error, attemptNumber }) =>
        this.log.warn({ err: error, attemptNumber, count: batch.length }, 'recording attempts failed; retrying'),
    });
    if (gone.length) this.log.warn({ subscriptions: gone }, 'subscriptions disabled after 410 Gone');
    // Their url changed while the attempt was under way (the 410 was the old endpoint's), or they
    // were inactive or deleted already.
    if (moved.length) this.log.info({ subscriptions: moved }, 'a 410 Gone deactivated nothing: the subscription\'s url changed since the attempt began, or it was inactive or deleted already');
    for (const id of moved) this.goneHere.delete(id);
    if (moved.length) this.pump(); // their deliveries held back meanwhile may start
    for (const id of gone) {
      this.goneHere.delete(id);
      this.subscriptionStopped(id); // without waiting for the notification
    }
    return deferred;
  }

  /**
   * Retries whose subscription's row another transaction holds (a change of it under way, or
   * anyone's lock): recorded again every RECORD_AGAIN_MS until it is let go, the others of
   * their batch recorded meanwhile.
   */
  private defer(outcomes: AttemptOutcome[]): void {
    if (!outcomes.length) return;
    this.log.info({ count: outcomes.length, subscriptions: [...new Set(outcomes.map((o) => o.subscriptionId))].slice(0, 10) }, 'a subscription is held by another transaction: the outcomes of its retries are recorded once it is let go');
    // Meanwhile its deliveries start no attempts here (mayStart): each failing one would add an
    // outcome to keep, for as long as the row is held.
    for (const o of outcomes) if (o.subscriptionId) this.heldSubscriptions.add(o.subscriptionId);
    this.deferred.push(...outcomes);
    this.deferTimer ??= setTimeout(() => {
      this.deferTimer = undefined;
      this.pending.push(...this.deferred.splice(0));
      void this.flush();
    }, RECORD_AGAIN_MS);
  }

  /** Subscriptions whose outcomes were deferred and are now recorded: their deliveries start again. */
  private letGo(batch: AttemptOutcome[], deferred: AttemptOutcome[]): void {
    if (!this.heldSubscriptions.size) return;
    const still = new Set(deferred.map((o) => o.subscriptionId));
    let freed = false;
    for (const o of batch) {
      if (o.subscriptionId && !still.has(o.subscriptionId) && this.heldSubscriptions.delete(o.subscriptionId)) freed = true;
    }
    if (freed) this.pump();
  }

  private unrecorded(error: unknown, batch: AttemptOutcome[]): void {
    for (const outcome of batch) if (outcome.gone && outcome.subscriptionId) this.goneHere.delete(outcome.subscriptionId);
    // Given up on: what waited for its subscription waits no more (nor do the subscription's deliveries).
    this.letGo(batch, [...this.deferred, ...this.pending]);
    // The leases expire and these deliveries are attempted again: at least once.
    this.log.error(
      { err: error, count: batch.length, deliveries: batch.slice(0, 10).map((o) => o.deliveryId) },
      'could not record attempts; their deliveries will be attempted again by whichever worker takes them back (as a lost worker\'s, or once their leases expire)',
    );
  }

  /**
   * Writes recorded outcomes in one statement; one flush at a time, retried on database errors.
   * While the database is away (anything but a refusal of the data) the outcomes are kept and
   * tried again, for as long as this worker runs: dropped, a delivery that landed would be sent
   * again, and a failure's schedule lost.
   */
  async flush(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    while (this.flushing) await this.flushing;
    if (!this.pending.length) return;
    const batch = this.pending.splice(0, MAX_RECORD_BATCH);
    let kept = false;
    this.flushing = (async () => {
      try {
        const deferred = await this.recordBatch(batch);
        this.letGo(batch, deferred);
        this.defer(deferred);
      } catch (error) {
        if (batch.length > 1 && !transient(error)) {
          // One outcome PostgreSQL refuses (its data, a trigger of the operator's) must not keep
          // the others unrecorded (and sent again): each is recorded on its own, and only the
          // refused one is left to its lease.
          this.log.warn({ err: error, count: batch.length }, 'a batch of attempts was refused; recording them one by one');
          for (const outcome of batch) {
            await this.recordBatch([outcome]).then(
              (deferred) => (this.letGo([outcome], deferred), this.defer(deferred)),
              (failed) => this.unrecorded(failed, [outcome]),
            );
          }
        } else if (this.running && transient(error)) {
          this.log.error({ err: error, count: batch.length }, 'could not record attempts yet; keeping them to try again');
          this.pending.unshift(...batch);
          kept = true;
          // Bounded: past MAX_KEPT the oldest are left to their leases (sent again, never lost).
          if (this.pending.length > MAX_KEPT) this.unrecorded(error, this.pending.splice(0, this.pending.length - MAX_KEPT));
        } else {
          this.unrecorded(error, batch);
        }
      }
    })();
    try {
      await this.flushing;
    } finally {
      this.flushing = undefined;
    }
    if (kept) this.flushTimer ??= setTimeout(() => void this.flush(), RECORD_AGAIN_MS);
    else if (this.pending.length >= FLUSH_BATCH) await this.flush();
    else if (this.pending.length) this.flushTimer ??= setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
  }
}

/** Hands claimed deliveries back untried (releaseClaims). Gives back the ids left claimed. */
function releaseUntried(pool: pg.Pool, workerId: string, deliveries: ClaimedDelivery[]): Promise<string[]> {
  return releaseClaims(pool, workerId, deliveries.map((d) => d.id));
}
