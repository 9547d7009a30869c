import { createHash } from 'node:crypto';
import pgModule from 'pg';
import type pg from 'pg';
import type { DataSource, EntityManager } from 'typeorm';

/** Where SQL can run: a TypeORM manager (maybe a caller's transaction), a DataSource, or a pg client. */
export type Sql = EntityManager | DataSource | pg.ClientBase | pg.Pool;

const names = new Map<string, string>();
/** A stable statement name per SQL text, so each pooled connection prepares it once. */
function statementName(sql: string): string {
  let name = names.get(sql);
  if (!name) {
    name = `hl_${createHash('sha1').update(sql).digest('hex').slice(0, 16)}`;
    names.set(sql, name);
  }
  return name;
}

// TypeORM's objects are told apart by their shape, not `instanceof`: an app using Hookline as
// a library may hand it a DataSource or manager of its own copy of typeorm (a linked install,
// a hoisting that kept two), whose classes are not Hookline's.

/** A TypeORM DataSource, of whichever copy of typeorm. */
export function isDataSource(source: unknown): source is DataSource {
  const s = source as Partial<DataSource> | null;
  return typeof s?.createQueryRunner === 'function' && typeof s.manager === 'object' && typeof s.driver === 'object';
}

/** A TypeORM EntityManager, of whichever copy of typeorm. */
export function isEntityManager(source: unknown): source is EntityManager {
  const s = source as Partial<EntityManager> | null;
  return typeof s?.getRepository === 'function' && typeof s.transaction === 'function' && typeof s.connection === 'object' && !isDataSource(s);
}

function isPg(source: Sql): source is pg.ClientBase | pg.Pool {
  return !isEntityManager(source) && !isDataSource(source);
}

/**
 * Runs SQL and returns its rows, whatever the statement. On a pg client the
 * statement is prepared once per connection (parsed and planned once, not per
 * call). TypeORM's plain query() answers UPDATE and DELETE with [rows, count]
 * on PostgreSQL; this does not.
 */
export async function queryRows<T = Record<string, any>>(source: Sql, sql: string, params: unknown[] = []): Promise<T[]> {
  if (isPg(source)) return (await source.query({ name: statementName(sql), text: sql, values: params })).rows as T[];
  const existing = isEntityManager(source) ? source.queryRunner : undefined;
  if (existing) return (await existing.query(sql, params, true)).records as T[];
  const dataSource = isEntityManager(source) ? source.connection : source;
  const runner = dataSource.createQueryRunner();
  try {
    return (await runner.query(sql, params, true)).records as T[];
  } finally {
    await runner.release();
  }
}

/** The pg pool behind a TypeORM DataSource, for the hot paths that skip TypeORM's machinery. */
export function poolOf(dataSource: DataSource): pg.Pool {
  const pool = (dataSource.driver as unknown as { master?: pg.Pool }).master;
  // Not yet initialized, or destroyed: said so, rather than a TypeError reading its pool.
  if (!pool || !dataSource.isInitialized) throw new Error('the DataSource is not initialized (call its initialize() first; a destroyed one cannot be used)');
  return pool;
}

/**
 * A client checked out of a pg pool, listening for its `error` event while it is out: a
 * connection that dies under a checked-out client (a database restart, a failover, a
 * terminated backend) emits one, and with no listener Node throws it and the process ends.
 * The failing query rejects as well, so the listener only notes that the connection is
 * gone; `release()` then destroys it rather than return it to the pool.
 */
export async function checkOut(pool: pg.Pool): Promise<{ client: pg.PoolClient; release(broken?: boolean): void }> {
  const client = await pool.connect();
  let lost = false;
  const onError = () => {
    lost = true;
  };
  client.on('error', onError);
  return {
    client,
    release(broken = false) {
      client.off('error', onError);
      client.release(broken || lost);
    },
  };
}

/** Drops a connection whose server may be silent: pg has no public way (end() waits for the server). */
export function dropConnection(client: pg.ClientBase): void {
  (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
}

/** Clients whose statements may run long on purpose (a retention sweep's): watchStatements leaves them be while marked. */
const unwatched = new WeakSet<pg.ClientBase>();

/** Marks a checked-out client's statements as not to be timed by watchStatements, or (`false`) unmarks it. */
export function leaveUnwatched(client: pg.ClientBase, leave = true): void {
  if (leave) unwatched.add(client);
  else unwatched.delete(client);
}

/**
 * Drops the connection of a statement of `pool`'s unanswered for longer than `ms` when the
 * database has gone silent (a host lost without a reset, a stopped server), as the dispatcher's
 * watchdog does its own: the request would wait the minutes TCP takes to give the connection up.
 * A statement that is merely slow (a lock wait, a big update) is left alone: a probe on a
 * connection of its own asks pg_stat_activity about each overdue statement's session, and drops
 * only those whose session is gone or has been idle for `ms` (the connection was lost on the
 * way), or all of them when the probe gets no answer within `ms` either. A dropped statement
 * fails (pg's "Connection terminated", answered 503), and the pool makes a new connection for
 * the next. Not caught: a connection lost while its session still writes a large answer or reads
 * a large statement (`active`, waiting on the client), which waits for TCP.
 * Each statement is timed by a timestamp, not a timer of its own; the watch looks every `ms`/4.
 * Returns what ends the watch.
 */
export function watchStatements(pool: pg.Pool, ms: number, { databaseUrl, onDrop }: { databaseUrl: string; onDrop: (unansweredMs: number, why: string) => void }): () => void {
  /** Clients with statements sent and not yet answered: how many, and since when the first of them has waited. */
  const waiting = new Map<pg.ClientBase, { pending: number; since: number }>();
  const timed = new WeakSet<pg.ClientBase>();
  const onAcquire = (client: pg.PoolClient) => {
    if (timed.has(client)) return;
    timed.add(client);
    const query = client.query as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = function (this: pg.PoolClient, ...args: unknown[]) {
      // A submittable (a cursor, a stream) is not timed: none of Hookline's pools uses one.
      if (unwatched.has(client) || typeof (args[0] as { submit?: unknown } | undefined)?.submit === 'function') return query.apply(this, args);
      let state = waiting.get(client);
      if (!state) waiting.set(client, (state = { pending: 0, since: performance.now() }));
      state.pending++;
      let answered = false;
      const answer = () => {
        if (answered) return;
        answered = true;
        const now = waiting.get(client);
        if (!now) return; // dropped meanwhile
        // The next queued statement is sent now: a state of its own, so that a verdict on the one
        // before (see drop) is never taken for it.
        if (now.pending <= 1) waiting.delete(client);
        else waiting.set(client, { pending: now.pending - 1, since: performance.now() });
      };
      const last = args.length - 1;
      if (typeof args[last] === 'function') {
        const callback = args[last] as (...results: unknown[]) => unknown;
        args[last] = (...results: unknown[]) => {
          answer();
          return callback(...results);
        };
        return query.apply(this, args);
      }
      const result = query.apply(this, args);
      if (typeof (result as Promise<unknown> | undefined)?.then === 'function') (result as Promise<unknown>).then(answer, answer);
      else answer();
      return result;
    };
  };
  pool.on('acquire', onAcquire);
  let probing = false;
  /** Drops `client`'s connection if the statement found overdue (`overdue`, its state then) still waits. */
  const drop = (client: pg.ClientBase, overdue: { pending: number; since: number }, why: string) => {
    if (waiting.get(client) !== overdue) return; // answered meanwhile (and maybe another statement sent since)
    waiting.delete(client);
    onDrop(Math.round(performance.now() - overdue.since), why);
    dropConnection(client);
  };
  const overdueNow = () => {
    const now = performance.now();
    return [...waiting].filter(([, state]) => now - state.since > ms);
  };
  const look = async () => {
    const overdue = overdueNow();
    if (!overdue.length) return;
    const pids = overdue.map(([client]) => (client as unknown as { processID?: number }).processID ?? 0);
    let probe: pg.Client;
    try {
      // pg reads an sslrootcert's file here, and throws if it is gone: no probe, no verdict.
      probe = new pgModule.Client({ connectionString: databaseUrl, connectionTimeoutMillis: ms, query_timeout: ms, application_name: 'hookline-watch' } as pg.ClientConfig);
    } catch {
      return;
    }
    probe.on('error', () => {}); // a failure is the query's (below) or of no matter once it ended
    let rows: Array<{ pid: number | null; lost: boolean | null; me: number }>;
    try {
      await probe.connect();
      // A session is taken for lost only when it has been idle for the whole watch (`ms`): one
      // that has only just finished may have its answer on the way (a large result, a slow
      // link), and one whose state cannot be seen (track_activities off: 'disabled'; another
      // user's) is not judged.
      rows = (
        await probe.query<{ pid: number | null; lost: boolean | null; me: number }>(
          `select s.pid, s.state like 'idle%' and s.state_change < clock_timestamp() - make_interval(secs => $2::double precision / 1000) as lost,
                  m.me
             from (select pg_backend_pid() as me) as m
             left join pg_stat_activity s on s.pid = any($1::int[])`,
          [pids, ms],
        )
      ).rows;
    } catch (error) {
      dropConnection(probe); // end() would wait for a server that does not answer
      // Refused with an error of its own (too many connections, starting up): the database
      // answers, so nothing is taken for silent.
      if (sqlState(error) !== undefined) return;
      // Silent: every statement overdue by now goes, those that became so while the probe waited too.
      for (const [client, state] of overdueNow()) drop(client, state, 'the database does not answer');
      return;
    }
    probe.end().catch(() => {});
    // Behind a pooler (PgBouncer) a connection's process id is not its server session's: the
    // probe's own tells. Then no session can be looked up, and only silence drops a statement.
    if (rows[0]?.me !== (probe as unknown as { processID?: number }).processID) return;
    const seen = new Map(rows.filter((row) => row.pid !== null).map((row) => [row.pid!, row.lost]));
    overdue.forEach(([client, state], i) => {
      const lost = seen.get(pids[i]!);
      // Gone (its session ended: a failover, a terminated backend), or idle all this while.
      if (lost === undefined || lost === true) drop(client, state, 'its server session is no longer running it: the connection was lost');
    });
  };
  const timer = setInterval(() => {
    if (probing) return;
    probing = true;
    void look()
      .catch(() => {}) // nothing in it should throw; a watch never ends the process
      .finally(() => (probing = false));
  }, ms / 4);
  timer.unref();
  return () => {
    clearInterval(timer);
    pool.off('acquire', onAcquire);
  };
}

/**
 * The SQLSTATE of an error the database answered, or undefined for any other error: one of
 * the connection (Node's `ECONNREFUSED`, `EPIPE`…, whose codes may look like a SQLSTATE) or
 * of pg itself. The server's errors are the ones that carry a severity.
 */
export function sqlState(error: unknown): string | undefined {
  const { code, severity } = (error ?? {}) as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * The connection is no good any more: not an answer of the database to a statement, or
 * one that ends the session (class 08, connection exception; 57P01-57P03, the server
 * shutting down or restarting), which pg reports before the socket closes.
 */
export function connectionLost(error: unknown): boolean {
  const code = sqlState(error);
  if (code === undefined) return true;
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03';
}
