// An EventTarget fed by PostgreSQL LISTEN/NOTIFY, for Yoga's createPubSub:
// notifications of any process reach the subscribers of this one, with no
// server besides PostgreSQL. Each channel has a route that turns a payload
// into (topic, detail) events, parsed once however many subscribe.
import pg from 'pg';
import pRetry from 'p-retry';
import { connectionLimits } from '../db/connection.js';
import { dropConnection } from '../db/query.js';
import type { Logger } from '../logger.js';
import { within } from '../within.js';
import { LIVE_LISTENERS_TABLE } from '../migrations/0007-live-listeners.js';

/** How long hearing a channel waits for transactions that had already decided not to announce on it. */
const EARLIER_WRITERS_WAIT_MS = 5_000;
/** Before the moment a loss was noticed, how far back what changed is looked up again. */
const RESUME_MARGIN_MS = 10_000;
/**
 * How often the LISTEN connection is asked for an answer, and how long one may take. It only
 * reads: a server gone silent (its host lost in a failover, a network cut, with no reset)
 * would go unnoticed for minutes with TCP keep-alive alone, and every notification with it,
 * while the process looked healthy. A silent one is dropped, and so reconnected.
 */
export const LIVENESS_MS = 5_000;
/**
 * It is asked five times as often as that, and what it taught (a cache of API keys) is trusted
 * only while it answered within the last three asks: a connection gone silent, not yet dropped,
 * must not keep a revoked key working for longer than revokeApiKey waits for it (see
 * REVOCATION_WAIT_MS), which a trust of three liveness periods (15 s) did.
 */
const PROBES_PER_LIVENESS = 5;
const TRUSTED_PROBES = 3;
/** How long, with the default liveness, the cache is trusted after the LISTEN connection's last answer. */
export const CACHE_TRUST_MS = (TRUSTED_PROBES * LIVENESS_MS) / PROBES_PER_LIVENESS;
/** Setting a connection up (its LISTENs, the wait for earlier writers) takes at most this long. */
const SETUP_TIMEOUT_MS = 30_000;

export type Route = (payload: string) => Iterable<[topic: string, detail: unknown]>;

type Listener = EventListenerOrEventListenerObject;

export class PostgresEventTarget implements EventTarget {
  private readonly listeners = new Map<string, Set<Listener>>();
  /** Listeners ever added. */
  private added = 0;
  /** On-demand channels that someone wants heard, with how many want each. */
  private readonly demanded = new Map<string, number>();
  /** On-demand channels LISTENed on the current connection. */
  private readonly listening = new Set<string>();
  /** LISTEN and UNLISTEN of on-demand channels, one at a time, in order. */
  private changes: Promise<void> = Promise.resolve();
  private client: pg.Client | undefined;
  /** The connection is up and onConnect() has run for it (see caughtUp). */
  private current = false;
  private closed = false;
  private connecting: Promise<void> | undefined;
  /** Called each time the LISTEN connection is (re)established. */
  onConnect: () => void = () => {};
  /**
   * Called once the connection is back after a loss, with the database's time (ms) from which
   * notifications may have been missed; what it resolves to is taken as caught up. Its own
   * loss (the connection lost again) keeps the window open for the next time.
   */
  onResume: (missedSinceMs: number) => Promise<void> | void = () => {};
  /** When (this process's clock) notifications stopped being heard, until onResume has dealt with it. */
  private lostAt: number | undefined;
  /** How many times onResume has dealt with a loss (tests wait for it). */
  resumes = 0;
  /** LISTEN connections made so far: the number of the current one tells what was heard on it. */
  connections = 0;
  /** The database's clock less this process's, as last measured on the LISTEN connection. */
  private skewMs = 0;
  /** When the current connection last answered (this process's clock). */
  private answeredAt = 0;
  /** The backend of the LISTEN connection lost last, whose live_listeners rows the next one removes. */
  private replacedPid: number | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;
  private checking = false;
  /** Queries under way on the connection (see query()). */
  private querying = 0;

  /** True while notifications are being heard. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  /** True from the loss of the connection until onResume has dealt with what it missed. */
  get resuming(): boolean {
    return this.lostAt !== undefined;
  }

  /**
   * True while notifications are heard and onConnect() has dealt with what may have been
   * missed before: what a process learnt from notifications (a cache of API keys, say)
   * may be trusted only then.
   */
  get caughtUp(): boolean {
    // And lately heard from: a connection that went silent is not yet known to be lost.
    return this.current && this.client !== undefined && Date.now() - this.answeredAt < (TRUSTED_PROBES * this.livenessMs) / PROBES_PER_LIVENESS;
  }

  /**
   * NOTIFYs `<payload>:<backend pid of the LISTEN connection>` from the LISTEN connection, if
   * it is up: an acknowledgement others can tell apart by connection. False if not sent.
   */
  async acknowledge(channel: string, payload: string): Promise<boolean> {
    const client = this.client;
    if (!client) return false;
    try {
      await client.query(`select pg_notify($1, $2 || ':' || pg_backend_pid())`, [channel, payload]);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * @param onDemand routed channels LISTENed only while someone wants them (see demand()):
   *   a process with no one to tell is not sent, and does not read, every notification.
   *   Their listeners are written in the live_listeners table (migration 0007), so that
   *   what notifies on them can skip the work while no process listens.
   */
  constructor(
    private readonly databaseUrl: string,
    private readonly routes: Record<string, Route>,
    private readonly log: Logger,
    private readonly onDemand: readonly string[] = [],
    private readonly livenessMs = LIVENESS_MS,
  ) {}

  /**
   * Has an on-demand channel heard until the returned function is called (by every caller
   * that asked for it). Resolves once the channel is LISTENed (or, while the connection is
   * down, at once: reconnecting LISTENs to it).
   */
  async demand(channel: string): Promise<() => void> {
    if (!this.onDemand.includes(channel)) throw new Error(`not an on-demand channel: ${channel}`);
    this.demanded.set(channel, (this.demanded.get(channel) ?? 0) + 1);
    await this.reconcile();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.demanded.get(channel)! - 1;
      if (n > 0) this.demanded.set(channel, n);
      else this.demanded.delete(channel);
      void this.reconcile();
    };
  }

  /** Whether an on-demand channel is LISTENed right now. */
  isListening(channel: string): boolean {
    return this.listening.has(channel);
  }

  /** Brings the connection's on-demand LISTENs in line with what is wanted. */
  private reconcile(): Promise<void> {
    this.changes = this.changes
      .then(async () => {
        const client = this.client;
        for (const channel of this.onDemand) {
          const wanted = this.demanded.has(channel);
          if (!client || this.client !== client || wanted === this.listening.has(channel)) continue;
          if (wanted) {
            await this.hear(client, channel);
            this.listening.add(channel);
          } else {
            await client.query(
              `unlisten ${pg.escapeIdentifier(channel)};
               delete from ${LIVE_LISTENERS_TABLE} where channel = ${client.escapeLiteral(channel)} and pid = pg_backend_pid()`,
            );
            this.listening.delete(channel);
          }
        }
      })
      // A lost connection: reconnecting starts from what is wanted then.
      .catch((error) => this.log.warn({ err: error }, 'live updates: could not change what is listened to'));
    return this.changes;
  }

  /**
   * LISTENs to an on-demand channel and says so in live_listeners (clearing the rows of
   * connections that are gone). A transaction that wrote before that row was committed
   * may have skipped its announcement and still be open: a change it commits now would
   * be missed. Each such transaction read live_listeners and holds a lock on it until it
   * ends, so this waits for the transactions holding one when the row is in.
   */
  private async hear(client: pg.Client, channel: string): Promise<void> {
    await client.query(
      `listen ${pg.escapeIdentifier(channel)};
       insert into ${LIVE_LISTENERS_TABLE} (channel, pid) values (${client.escapeLiteral(channel)}, pg_backend_pid()) on conflict (channel, pid) do update set since = now();
       delete from ${LIVE_LISTENERS_TABLE} l where not exists (select 1 from pg_stat_activity a where a.pid = l.pid)`,
    );
    const holdersOf = async (sql: string, values: unknown[] = []) => (await client.query<{ v: string[] }>(sql, values)).rows[0]!.v;
    let holders = await holdersOf(
      `select coalesce(array_agg(distinct virtualtransaction), '{}') as v from pg_locks
        where locktype = 'relation' and relation = '${LIVE_LISTENERS_TABLE}'::regclass and pid <> pg_backend_pid()`,
    );
    const deadline = Date.now() + EARLIER_WRITERS_WAIT_MS;
    while (holders.length) {
      if (Date.now() > deadline) {
        this.log.warn({ channel, transactions: holders }, 'live updates: transactions open since before listening may go unannounced');
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
      // A transaction holds the lock of its own virtual id until it ends.
      holders = await holdersOf(
        `select coalesce(array_agg(virtualxid), '{}') as v from pg_locks where locktype = 'virtualxid' and virtualxid = any($1::text[])`,
        [holders],
      );
    }
  }

  /** Connects and LISTENs to every routed channel; reconnects by itself after a loss. */
  start(): Promise<void> {
    if (!this.livenessTimer && !this.closed) {
      this.livenessTimer = setInterval(() => this.checkAlive(), this.livenessMs / PROBES_PER_LIVENESS);
      this.livenessTimer.unref();
    }
    return (this.connecting ??= this.connect().finally(() => (this.connecting = undefined)));
  }

  /** Asks the connection for an answer; one that gives none in time is dropped (see LIVENESS_MS). */
  private checkAlive(): void {
    const client = this.client;
    if (!client || this.checking || this.querying) return;
    this.checking = true;
    within(client.query('select 1'), this.livenessMs, `no answer on the LISTEN connection within ${this.livenessMs} ms`)
      .then(() => {
        if (this.client === client) this.answeredAt = Date.now();
      })
      .catch((error: unknown) => {
        if (this.client !== client) return;
        this.log.warn({ err: error }, 'live updates: the LISTEN connection went silent; dropping it');
        dropConnection(client); // its end is the loss: reconnected, and what was missed announced again
      })
      .finally(() => (this.checking = false));
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: 'hookline-live', ...connectionLimits });
    try {
      await within(this.setUp(client), SETUP_TIMEOUT_MS, `the LISTEN connection was not set up within ${SETUP_TIMEOUT_MS} ms`);
    } catch (error) {
      // A server gone silent while it was set up would hold this start for ever: dropped (if it
      // was taken already, that is its loss, and it is reconnected).
      dropConnection(client);
      throw error;
    }
  }

  private async setUp(client: pg.Client): Promise<void> {
    this.connections++;
    client.on('notification', (message) => this.deliver(message.channel, message.payload ?? ''));
    const lost = (error?: Error) => {
      if (this.client !== client || this.closed) return;
      // Dropped for its silence, its backend may live on in the server (see below).
      this.replacedPid = (client as pg.Client & { processID?: number }).processID ?? undefined;
      this.lostAt ??= Date.now();
      this.client = undefined;
      this.current = false;
      this.listening.clear();
      this.log.warn({ err: error }, 'live updates: LISTEN connection lost; reconnecting');
      client.removeAllListeners('notification');
      void pRetry(
        async () => {
          // Lost while still being set up (its LISTENs, the wait for earlier writers): that
          // connect() is still running and start() would hand it back. It ends first.
          await this.connecting?.catch(() => {});
          if (this.closed || this.client) return;
          await this.start();
          if (!this.closed && !this.client) throw new Error('the LISTEN connection was lost again while connecting');
        },
        { retries: Number.POSITIVE_INFINITY, minTimeout: 200, maxTimeout: 5_000, shouldRetry: () => !this.closed },
      ).catch(() => {});
    };
    client.on('error', lost);
    client.on('end', () => lost());
    await client.connect();
    const sent = Date.now();
    const [{ now }] = (await client.query<{ now: number }>('select (extract(epoch from clock_timestamp()) * 1000)::float8 as now')).rows;
    this.skewMs = now! - (sent + Date.now()) / 2;
    for (const channel of Object.keys(this.routes)) {
      if (this.onDemand.includes(channel)) continue;
      // Written in live_listeners too, so that a process can tell who hears the channel
      // (revokeApiKey waits for each to acknowledge).
      await client.query(
        `listen ${pg.escapeIdentifier(channel)};
         insert into ${LIVE_LISTENERS_TABLE} (channel, pid) values (${client.escapeLiteral(channel)}, pg_backend_pid()) on conflict (channel, pid) do update set since = now()`,
      );
    }
    // Rows of connections that are gone (a process killed), lest a new backend reuse their pid;
    // and those of the connection this one replaces: dropped for its silence (a network cut), its
    // backend lives on in the server until TCP finds it dead, and would never acknowledge.
    await client.query(
      `delete from ${LIVE_LISTENERS_TABLE} l where l.pid = $1 or not exists (select 1 from pg_stat_activity a where a.pid = l.pid)`,
      [this.replacedPid ?? 0],
    );
    if (this.closed) {
      await client.end();
      return;
    }
    this.client = client;
    this.answeredAt = Date.now();
    this.listening.clear();
    await this.reconcile();
    // Lost during the reconcile: the reconnect under way calls onConnect() when it is back.
    if (this.client === client) {
      this.onConnect();
      this.current = true;
      const lostAt = this.lostAt;
      if (lostAt !== undefined) {
        // Heard again from here on: what changed since the loss is looked up once (a margin
        // before it, for a loss noticed late), and the window closes only once that is done.
        void (async () => {
          try {
            await this.onResume(lostAt + this.skewMs - RESUME_MARGIN_MS);
            if (this.client === client && this.lostAt === lostAt) this.lostAt = undefined;
            this.resumes++;
          } catch (error) {
            // Lost again (or closing): the window stays open for the next connection.
            if (!this.closed) this.log.warn({ err: error }, 'live updates: could not look up what changed while LISTEN was down');
          }
        })();
      }
    }
  }

  /**
   * A query on the LISTEN connection (none while it is down), given at most `timeoutMs`: the
   * notifications it must go on reading wait for nothing longer.
   */
  async query<R extends pg.QueryResultRow>(text: string, values: unknown[], timeoutMs = 10_000): Promise<R[]> {
    const client = this.client;
    if (!client) throw new Error('the LISTEN connection is down');
    const run = async () => {
      await client.query(`set statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
      try {
        return (await client.query<R>(text, values)).rows;
      } finally {
        await client.query('reset statement_timeout').catch(() => {});
      }
    };
    // While it runs the liveness check waits behind it: it has its own limit instead (the
    // server's statement_timeout, or, from a server gone silent, no answer: dropped).
    this.querying++;
    try {
      const limit = timeoutMs + this.livenessMs;
      const silent = `no answer on the LISTEN connection within ${limit} ms`;
      const rows = await within(run(), limit, silent).catch((error: unknown) => {
        if (this.client === client && (error as Error).message === silent) dropConnection(client);
        throw error;
      });
      if (this.client === client) this.answeredAt = Date.now();
      return rows;
    } finally {
      this.querying--;
    }
  }

  /** The topics with listeners whose names start with `prefix`. */
  topics(prefix: string): string[] {
    return [...this.listeners.keys()].filter((topic) => topic.startsWith(prefix));
  }

  private deliver(channel: string, payload: string): void {
    const route = this.routes[channel];
    if (!route) return;
    let events: Iterable<[string, unknown]>;
    try {
      events = route(payload);
    } catch (error) {
      this.log.error({ err: error, channel }, 'live updates: unreadable notification');
      return;
    }
    for (const [topic, detail] of events) {
      const listeners = this.listeners.get(topic);
      if (!listeners) continue;
      const event = new CustomEvent(topic, { detail });
      for (const listener of listeners) {
        if (typeof listener === 'function') listener(event);
        else listener.handleEvent(event);
      }
    }
  }

  addEventListener(type: string, listener: Listener | null): void {
    if (!listener) return;
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
    this.added++;
  }

  removeEventListener(type: string, listener: Listener | null): void {
    if (!listener) return;
    const set = this.listeners.get(type);
    if (!set) return;
    set.delete(listener);
    if (!set.size) this.listeners.delete(type);
  }

  /** Local publish (Yoga's pubSub.publish); cross-process events come from NOTIFY. */
  dispatchEvent(event: Event): boolean {
    const listeners = this.listeners.get(event.type);
    for (const listener of listeners ?? []) {
      if (typeof listener === 'function') listener(event);
      else listener.handleEvent(event);
    }
    return true;
  }

  /** How many listeners were ever added (tests wait for their subscriptions). */
  get listenersAdded(): number {
    return this.added;
  }

  /** Topics with at least one listener (tests check that none leak). */
  get listenerCount(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.livenessTimer);
    await this.connecting?.catch(() => {});
    const client = this.client;
    this.client = undefined;
    this.current = false;
    if (!client) return;
    // No longer a listener (a connection that just ends leaves its rows for the next one to clear).
    // Neither waits for a server gone silent: the shutdown would never end.
    const silent = `the LISTEN connection gave no answer within ${this.livenessMs} ms`;
    await within(client.query(`delete from ${LIVE_LISTENERS_TABLE} where pid = pg_backend_pid()`), this.livenessMs, silent).catch(() => {});
    await within(client.end(), this.livenessMs, silent).catch(() => dropConnection(client));
  }
}
