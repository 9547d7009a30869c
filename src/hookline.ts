// Starts the roles of one Hookline process on a database: migrations, the
// HTTP server (API or health only) and, later, the dispatcher. Tests start it
// in-process; main.ts starts it from the environment.
import { constants as fsConstants } from 'node:fs';
import { access } from 'node:fs/promises';
import { resolve } from 'node:path';
import pRetry from 'p-retry';
import type { DataSource } from 'typeorm';
import { KEY_USE_WAIT_MS, unusableApiKeys } from './auth/viewer.js';
import { EVERY_API_KEY } from './auth/tenants.js';
import { ConfigError, parseDatabaseUrl, type Config } from './config.js';
import { createDataSource } from './db/data-source.js';
import type pg from 'pg';
import { STATEMENT_WATCH_MS } from './db/connection.js';
import { poolOf, watchStatements } from './db/query.js';
import { makeFolders, startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.js';
import { shareConnections } from './db/tenant-scope.js';
import { runMigrations } from './db/migrate.js';
import { StartRefused } from './errors.js';
import { Dispatcher, type DispatcherOptions } from './dispatcher/dispatcher.js';
import { RetentionSweeper } from './dispatcher/retention.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { buildApp, checkPortFree, type App, type RequestTimeouts } from './server/app.js';
import { createServices, systemClock, type Clock, type Services } from './services.js';

/** Connections of a process's API pool (the dispatcher and the ingest have their own). */
const API_POOL_SIZE = 20;

export interface Hookline {
  app: App;
  services: Services;
  dataSource: DataSource;
  databaseUrl: string;
  dispatcher?: Dispatcher;
  stop(): Promise<void>;
}

export interface StartOptions {
  config: Readonly<Config>;
  log: Logger;
  clock?: Clock;
  host?: string;
  /**
   * Called when the process can no longer serve and should stop: its embedded PostgreSQL
   * ended on its own. Without it, that is only logged.
   */
  onFatal?: (error: Error) => void;
  /** The dispatcher's timings, for tests. */
  dispatcher?: Pick<
    DispatcherOptions,
    'pollIntervalMs' | 'reclaimIntervalMs' | 'leaseMs' | 'slowCapacity' | 'slowAfterMs' | 'cappedClaimGapMs' | 'dueScanIntervalMs' | 'databaseTimeoutMs' | 'workerLostAfterMs'
  >;
  /** How often the live LISTEN connection must answer (ms), for tests; by default LIVENESS_MS. */
  livenessMs?: number;
  /** How long a client may take to send a request, for tests; by default REQUEST_TIMEOUTS. */
  requestTimeouts?: RequestTimeouts;
  /** From the start to the first retention sweep (ms), for tests (see dispatcher/retention.ts). */
  retentionFirstSweepMs?: number;
  /** How long a statement of the API's may go unanswered before its connection is dropped, for tests; by default STATEMENT_WATCH_MS. */
  databaseWatchMs?: number;
}

export async function startHookline({
  config,
  log,
  clock = systemClock,
  host,
  onFatal,
  dispatcher: timings,
  livenessMs,
  requestTimeouts,
  retentionFirstSweepMs,
  databaseWatchMs,
}: StartOptions): Promise<Hookline> {
  let embedded: EmbeddedDatabase | undefined;
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) {
      await stop().catch((error) => log.error({ err: error }, 'error while stopping'));
    }
  };
  try {
    await checkPortFree(config.port, host);
    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      await usableDataDir(config.dataDir);
      embedded = await startEmbeddedPostgres(config.dataDir, log, { onUnexpectedExit: onFatal });
      stops.push(embedded.stop);
      databaseUrl = embedded.url;
    }
    const dataSource = createDataSource({ url: databaseUrl, poolSize: API_POOL_SIZE, applicationName: `hookline-${config.role}` });
    // A quarter of the connections per tenant: however many costly requests one sends, the rest are others'.
    shareConnections(dataSource, Math.max(2, Math.floor(API_POOL_SIZE / 4)));
    try {
      await dataSource.initialize();
    } catch (error) {
      // A DATABASE_URL that names no database to be reached (a wrong host or port, a password
      // refused): said in one line naming the variable, not as a stack.
      if (!config.databaseUrl) throw error;
      throw new StartRefused(`cannot connect to the database of DATABASE_URL (${databaseWhere(config.databaseUrl)}): ${(error as Error)?.message ?? error}`);
    }
    stops.push(() => dataSource.destroy());
    await runMigrations(dataSource, log);
    // From here on, a statement of the API's unanswered for long (the database gone silent) has
    // its connection dropped, and the request is answered 503; migrations may take their time.
    const watchPool = (pool: pg.Pool) => {
      const stop = watchStatements(pool, databaseWatchMs ?? STATEMENT_WATCH_MS, {
        databaseUrl: databaseUrl!,
        onDrop: (ms, why) => log.warn({ ms, why }, 'a database statement went unanswered; dropping its connection'),
      });
      stops.push(async () => stop());
    };
    watchPool(poolOf(dataSource));

    const metrics = createMetrics();
    const services = createServices(config, dataSource, log, clock, watchPool);
    stops.push(() => services.catalog.close());
    stops.push(() => services.webhooks.close());
    services.metrics = metrics;
    services.webhooks.countEventsIn(metrics.eventsTriggered);
    services.rateLimiter.countRefusalsIn(metrics.rateLimited.labels('api_key'));
    services.addressLimiter.countRefusalsIn(metrics.rateLimited.labels('address'));
    const serveApi = config.role !== 'worker';
    /** Set once the API serves: finds revocations whose notice was lost among the keys in use. */
    let recheckKeysInUse: (() => Promise<void>) | undefined;
    if (serveApi) {
      const { LiveUpdates } = await import('./live/delivery-updates.js');
      const live = new LiveUpdates(databaseUrl, log.child({ component: 'live' }), config.liveBufferLimit, config.liveStallMs, livenessMs, {
        perTenant: config.liveSubscriptionsPerTenant,
        perKey: config.liveSubscriptionsPerKey,
        perConnection: config.liveSubscriptionsPerConnection,
      });
      // Revocations may have been missed while not listening: forget every cached key, and
      // check the keys of the open connections and live subscriptions.
      live.target.onConnect = () => {
        services.apiKeys.clear();
        void recheckKeysInUse?.();
      };
      // Cached keys are trusted only while revocations are heard, and once onConnect() has
      // forgotten those cached before a reconnect.
      services.apiKeys.usable = () => live.target.caughtUp;
      await live.start();
      stops.push(() => live.close());
      services.live = live;
      services.subscriptions.handBacks = (id) => live.expectHandBack(id);
    }
    const routes = serveApi ? (await import('./server/rest.js')).createRestRoutes(services) : undefined;
    const app = await buildApp({ services, metrics, serveApi, port: config.port, host, routes, timeouts: requestTimeouts });
    stops.push(() => app.stop());
    // A revoked key stops working at once in every API process: its cached lookup is
    // dropped and its live connections close.
    const live = services.live;
    if (live) {
      live.onApiKeyRevoked(async (apiKeyId) => {
        if (apiKeyId === EVERY_API_KEY) {
          // Keys truncated (migration 0020): any may be gone. As after a reconnect, the cache is
          // forgotten and the keys in use checked; each gone is announced as revoked, here.
          services.apiKeys.clear();
          await recheckKeysInUse?.();
          return;
        }
        services.apiKeys.invalidate(apiKeyId);
        app.closeConnections((viewer) => viewer.kind === 'tenant' && viewer.apiKeyId === apiKeyId, 'API key revoked');
        // Operations begun with it before (a triggerEvent waiting for its batch, say) end before
        // this process says it has acted, so that none writes after revokeApiKey answers; no
        // longer than the revoking process waits for the answer.
        const left = await services.apiKeys.idle(apiKeyId, KEY_USE_WAIT_MS);
        if (left) log.warn({ apiKeyId, operations: left }, 'operations with a revoked API key still under way after waiting for them');
      });
      // Runs once LISTEN is back: a revocation committed later is heard, one committed before is read here.
      recheckKeysInUse = async () => {
        const inUse = new Set([...app.apiKeyIdsInUse(), ...live.apiKeyIdsInUse()]);
        try {
          const unusable = await pRetry(() => unusableApiKeys(dataSource, [...inUse]), { retries: 5, minTimeout: 200 });
          for (const apiKeyId of unusable) live.announceRevoked(apiKeyId);
        } catch (error) {
          // New operations are still refused (each checks its key); open streams wait for the next reconnect.
          log.error({ err: error }, 'could not check the API keys in use after the LISTEN connection came back');
        }
      };
    }

    let dispatcher: Dispatcher | undefined;
    if (config.role !== 'api') {
      dispatcher = new Dispatcher({ ...timings, config, databaseUrl, log, metrics, clock });
      await dispatcher.start();
      // An API process sends the deliveries it creates itself, when its dispatcher is idle.
      if (serveApi) services.webhooks.handOffTo(dispatcher);
      // Stopped before the HTTP server and the database (stops run in reverse).
      stops.push(() => dispatcher!.stop());
      if (config.retentionMs) {
        const sweeper = new RetentionSweeper(poolOf(dataSource), config.retentionMs, log.child({ component: 'retention' }), metrics);
        sweeper.start(retentionFirstSweepMs);
        stops.push(() => sweeper.stop());
      }
    }

    app.setReady(true);
    if (config.adminTokenShort) {
      log.warn('ADMIN_TOKEN is shorter than 16 characters: whoever guesses it can create tenants; choose a long random one');
    }
    log.info({ url: app.url, role: config.role }, 'Hookline is ready');
    let stopping: Promise<void> | undefined;
    return {
      app,
      services,
      dataSource,
      databaseUrl,
      dispatcher,
      stop: () => {
        app.setReady(false);
        return (stopping ??= stopAll());
      },
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/**
 * Makes HOOKLINE_DATA_DIR if need be; one that cannot be a folder (a file is there, or a folder
 * above it is not one's to write) is a configuration error naming the variable.
 */
async function usableDataDir(dataDir: string): Promise<void> {
  try {
    await makeFolders(dataDir);
    // One that exists but is not this user's to write (made by root, the service run as another).
    await access(resolve(dataDir), fsConstants.W_OK | fsConstants.X_OK).catch((error: NodeJS.ErrnoException) => {
      throw new Error(`not writable by this user (${error.code})`);
    });
  } catch (error) {
    throw new ConfigError('HOOKLINE_DATA_DIR', `${JSON.stringify(dataDir)} cannot be the embedded PostgreSQL's data folder: ${(error as Error).message}`);
  }
}

/** Where a DATABASE_URL points (host, port, database), its user and password left out. */
export function databaseWhere(url: string): string {
  try {
    const parsed = parseDatabaseUrl(url);
    const host = parsed.searchParams.get('host') ?? (parsed.hostname || 'localhost');
    return `${host}${parsed.port ? `:${parsed.port}` : ''}${parsed.pathname || '/'}`;
  } catch {
    return 'unreadable';
  }
}
