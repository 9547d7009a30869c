// Configuration comes from the environment, is validated once at start-up,
// and is then passed down as a plain frozen object. A wrong value stops the
// process with a message naming the variable (see main.ts).
import { randomBytes } from 'node:crypto';
import { parseTrustedProxies, type TrustedProxies } from './auth/rate-limit.js';

export type Role = 'all' | 'api' | 'worker';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  databaseUrl: string | undefined;
  port: number;
  adminToken: string;
  adminTokenGenerated: boolean;
  /** ADMIN_TOKEN was chosen shorter than 16 characters: accepted (the contract sets no length), and warned of at start-up. */
  adminTokenShort: boolean;
  role: Role;
  /** Delays between attempts, in ms; attempts in all = length + 1. */
  retrySchedule: number[];
  allowPrivateTargets: boolean;
  /**
   * A 410 Gone deactivates the subscription (Standard Webhooks' advice) instead of being a
   * failed attempt like any other non-2xx answer, which is what the contract says by default.
   */
  disableOnGone: boolean;
  deliveryTimeoutMs: number;
  logLevel: LogLevel;
  /** Where the embedded PostgreSQL keeps its data when DATABASE_URL is unset. */
  dataDir: string;
  /**
   * Deliveries being sent at once in one dispatcher process, not counting those
   * that have waited over a second for their answer (see Dispatcher).
   */
  dispatchConcurrency: number;
  /** Deliveries in flight at once to one subscription, per dispatcher process. */
  dispatchPerSubscription: number;
  /** Deliveries in flight at once for one tenant, per dispatcher process. */
  dispatchPerTenant: number;
  /** Live updates a subscriber may have waiting before it is disconnected. */
  liveBufferLimit: number;
  /** A live subscriber with updates waiting that has not read for this long is disconnected (ms). */
  liveStallMs: number;
  /** Requests per second one API key may make to one API process (0: no limit). */
  rateLimitPerSecond: number;
  /** Requests per second one client address may make to one API process without a valid API key (0: no limit). */
  anonymousRateLimitPerSecond: number;
  /** Proxies whose X-Forwarded-For gives the client's address (for anonymousRateLimitPerSecond). */
  trustedProxies: TrustedProxies;
  /** deliveryUpdated subscriptions open at once for one tenant in one API process (all its keys). */
  liveSubscriptionsPerTenant: number;
  /** deliveryUpdated subscriptions open at once for one API key in one API process (WebSocket and Server-Sent Events). */
  liveSubscriptionsPerKey: number;
  /** deliveryUpdated subscriptions open at once on one WebSocket connection. */
  liveSubscriptionsPerConnection: number;
  /** Connections (HTTP and WebSocket) open at once to one process; more are closed as they come. */
  maxConnections: number;
  /** Of those, from one client address (an IPv4 address, an IPv6 /64), trusted proxies apart. */
  maxConnectionsPerAddress: number;
  /** Threads that check events' data against tenants' own schemas (see validation-pool.ts). */
  validationThreads: number;
  /** How long one such check may run before it is refused and its thread replaced (ms). */
  validationTimeoutMs: number;
  /** The bearer token GET /metrics asks for; undefined: it asks for none. */
  metricsToken: string | undefined;
  /** How long finished events are kept (ms, see dispatcher/retention.ts); undefined: for ever. */
  retentionMs: number | undefined;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `250ms`, `5s`, `30m`, `2h`, `30d` into milliseconds; throws on anything else. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a duration like 500ms, 5s, 30m, 2h or 30d`);
  // Rounded first: 0.4ms would otherwise pass as 0 (an attempt timed out at once, a retry with no delay).
  const ms = Math.round(Number(match[1]) * UNIT_MS[match[2]!]!);
  if (!Number.isFinite(ms) || ms < 1) throw new Error(`"${text}" must be at least 1ms`);
  return ms;
}

/**
 * A duration that feeds a timer: setTimeout takes at most 2^31-1 ms (24.8 days) and fires at
 * once past it, so each such variable has a bound of its own, well below, that says what makes sense.
 */
function parseDurationUpTo(text: string, maxMs: number, max: string): number {
  const ms = parseDuration(text);
  if (ms > maxMs) throw new Error(`"${text}" is too long: it must be at most ${max}`);
  return ms;
}

export const DEFAULT_RETRY_SCHEDULE = '5s,5m,30m,2h,5h,10h,10h';

const MAX_RETRY_DELAY_MS = 30 * 24 * 3_600_000;

export function parseRetrySchedule(text: string): number[] {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) {
    throw new Error(`"${text}" must be a comma-separated list of durations, e.g. ${DEFAULT_RETRY_SCHEDULE}`);
  }
  if (parts.length > 50) throw new Error('at most 50 retries are allowed');
  const delays = parts.map(parseDuration);
  // Past this a due time could not be written (and no one waits a month for a webhook).
  const longest = delays.find((ms) => ms > MAX_RETRY_DELAY_MS);
  if (longest !== undefined) throw new Error(`each delay must be at most 720h (30 days); ${parts[delays.indexOf(longest)]} is longer`);
  return delays;
}

function parseBoolean(text: string): boolean {
  if (/^(true|1|yes)$/i.test(text)) return true;
  if (/^(false|0|no)$/i.test(text)) return false;
  throw new Error(`"${text}" must be true or false (or 1 or 0, yes or no)`);
}

function parseInteger(text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new Error(`"${text}" must be a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new Error(`${n} must be between ${min} and ${max}`);
  return n;
}

type Env = Record<string, string | undefined>;

/** What a token sent as `Authorization: Bearer <token>` may hold: printable ASCII, no spaces. */
const BEARER_TOKEN = /^[\x21-\x7e]+$/;
const BEARER_TOKEN_RULE = 'must be printable ASCII without spaces (it is sent as "Authorization: Bearer <token>")';

/**
 * A variable's value, parsed. An empty one counts as unset, but for variables given
 * `ifEmpty`: there unset turns off what the variable was set for (a database of one's own,
 * a token on /metrics), and an empty value is more likely a deployment's template with a
 * secret missing (`DATABASE_URL=${DB_URL}`) than a wish for the default.
 */
function read<T>(env: Env, name: string, fallback: string | undefined, parse: (text: string) => T, ifEmpty?: string): T {
  const raw = env[name];
  if (raw === '' && ifEmpty) throw new ConfigError(name, `is set but empty: ${ifEmpty}`);
  const text = raw === undefined || raw === '' ? fallback : raw;
  try {
    return parse(text as string);
  } catch (error) {
    throw new ConfigError(name, (error as Error).message);
  }
}

/**
 * A PostgreSQL connection string as a URL. With no host before the path
 * (`postgres://user:pw@/db?host=/run/postgresql`, a socket's directory given as `host`, as
 * behind the Cloud SQL proxy) pg and libpq take it; URL would not, so it is read as if the host
 * were localhost (pg's default). Throws as URL does.
 */
export function parseDatabaseUrl(text: string): URL {
  return new URL(text.replace(/^([a-z]+:\/\/(?:[^@/?#]*@)?)(?=\/)/i, '$1localhost'));
}

export function loadConfig(env: Env = process.env): Readonly<Config> {
  const databaseUrl = read(env, 'DATABASE_URL', '', (text) => {
    if (text === '') return undefined;
    // URL would read past them, pg would not (a host named after the blank, say).
    if (text.trim() !== text) throw new Error('has spaces or line breaks around it');
    let url: URL;
    try {
      url = parseDatabaseUrl(text);
    } catch {
      throw new Error('is not a URL like postgres://user:password@host:5432/database');
    }
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
      throw new Error(`scheme "${url.protocol}" is not postgres: or postgresql:`);
    }
    // postgres:user:pw@host/db is a URL too, with no host: pg would go to localhost, and the
    // refusal to connect would name the rest, password included.
    if (!/^[a-z]+:\/\//i.test(text)) throw new Error(`must begin with ${url.protocol}// (the "//" before the user and host is missing)`);
    // Its user, password and database name are percent-decoded where they are used: a % that
    // starts no escape (a generated password's, say) failed there, with a stack.
    for (const [part, value] of [['user', url.username], ['password', url.password], ['database name', url.pathname]] as const) {
      try {
        decodeURIComponent(value);
      } catch {
        throw new Error(`its ${part} has a % that starts no escape (two hex digits): write a % there as %25`);
      }
    }
    return text;
  }, 'leave it unset for the embedded PostgreSQL (see HOOKLINE_DATA_DIR), or give a connection string');
  const adminTokenRaw = read(env, 'ADMIN_TOKEN', '', (t) => {
    // A bearer token is one word (viewer.ts reads `Bearer <token>`): one with a space or a line
    // break (as a file or a secret store may end it) would be accepted here and never matched.
    if (t && !BEARER_TOKEN.test(t)) throw new Error(`${BEARER_TOKEN_RULE}; a line break at its end, as a file or secret may add, included`);
    return t;
  });
  const adminTokenGenerated = !adminTokenRaw;
  const config: Config = {
    databaseUrl,
    port: read(env, 'PORT', '4000', (t) => parseInteger(t, 0, 65535)),
    adminToken: adminTokenRaw || `hla_${randomBytes(24).toString('base64url')}`,
    adminTokenGenerated,
    adminTokenShort: !adminTokenGenerated && adminTokenRaw!.length < 16,
    role: read(env, 'HOOKLINE_ROLE', 'all', (t) => {
      if (t !== 'all' && t !== 'api' && t !== 'worker') throw new Error(`"${t}" must be one of all, api, worker`);
      return t;
    }),
    retrySchedule: read(env, 'HOOKLINE_RETRY_SCHEDULE', DEFAULT_RETRY_SCHEDULE, parseRetrySchedule),
    allowPrivateTargets: read(env, 'HOOKLINE_ALLOW_PRIVATE_TARGETS', 'false', parseBoolean),
    disableOnGone: read(env, 'HOOKLINE_DISABLE_ON_GONE', 'false', parseBoolean),
    deliveryTimeoutMs: read(env, 'HOOKLINE_DELIVERY_TIMEOUT', '15s', (t) => parseDurationUpTo(t, 300_000, '5m')),
    logLevel: read(env, 'LOG_LEVEL', 'info', (t) => {
      if (!(LOG_LEVELS as readonly string[]).includes(t)) throw new Error(`"${t}" must be one of ${LOG_LEVELS.join(', ')}`);
      return t as LogLevel;
    }),
    dataDir: read(env, 'HOOKLINE_DATA_DIR', '.hookline', (t) => {
      // A folder of that name would be made: a new, empty database beside the one meant.
      if (t.trim() !== t) throw new Error('has spaces or line breaks around it');
      return t;
    }),
    dispatchConcurrency: read(env, 'HOOKLINE_DISPATCH_CONCURRENCY', '128', (t) => parseInteger(t, 1, 10_000)),
    dispatchPerSubscription: read(env, 'HOOKLINE_DISPATCH_PER_SUBSCRIPTION', '64', (t) => parseInteger(t, 1, 10_000)),
    dispatchPerTenant: read(env, 'HOOKLINE_DISPATCH_PER_TENANT', '256', (t) => parseInteger(t, 1, 100_000)),
    liveBufferLimit: read(env, 'HOOKLINE_LIVE_BUFFER', '10000', (t) => parseInteger(t, 1, 1_000_000)),
    liveStallMs: read(env, 'HOOKLINE_LIVE_STALL', '5s', (t) => parseDurationUpTo(t, 3_600_000, '1h')),
    rateLimitPerSecond: read(env, 'HOOKLINE_RATE_LIMIT', '10000', (t) => parseInteger(t, 0, 10_000_000)),
    anonymousRateLimitPerSecond: read(env, 'HOOKLINE_RATE_LIMIT_ANONYMOUS', '200', (t) => parseInteger(t, 0, 10_000_000)),
    trustedProxies: read(env, 'HOOKLINE_TRUSTED_PROXIES', '', parseTrustedProxies),
    liveSubscriptionsPerTenant: read(env, 'HOOKLINE_LIVE_PER_TENANT', '200', (t) => parseInteger(t, 1, 1_000_000)),
    liveSubscriptionsPerKey: read(env, 'HOOKLINE_LIVE_PER_KEY', '100', (t) => parseInteger(t, 1, 1_000_000)),
    liveSubscriptionsPerConnection: read(env, 'HOOKLINE_LIVE_PER_CONNECTION', '20', (t) => parseInteger(t, 1, 1_000_000)),
    maxConnections: read(env, 'HOOKLINE_MAX_CONNECTIONS', '10000', (t) => parseInteger(t, 1, 1_000_000)),
    maxConnectionsPerAddress: read(env, 'HOOKLINE_MAX_CONNECTIONS_PER_ADDRESS', '256', (t) => parseInteger(t, 1, 1_000_000)),
    validationThreads: read(env, 'HOOKLINE_VALIDATION_THREADS', '2', (t) => parseInteger(t, 1, 64)),
    validationTimeoutMs: read(env, 'HOOKLINE_VALIDATION_TIMEOUT', '2s', (t) => parseDurationUpTo(t, 60_000, '1m')),
    metricsToken: read(env, 'HOOKLINE_METRICS_TOKEN', '', (t) => {
      if (t && !BEARER_TOKEN.test(t)) throw new Error(BEARER_TOKEN_RULE);
      return t || undefined;
    }, 'leave it unset to serve /metrics to anyone, or give the token it asks for'),
    retentionMs: read(env, 'HOOKLINE_RETENTION', '', (t) => {
      if (!t) return undefined;
      const ms = parseDuration(t);
      // An idempotency key answers for 24 hours: its event must be there to answer with.
      if (ms < 86_400_000) throw new Error(`"${t}" is too short: events are kept at least 1d (an idempotency key answers for 24 hours)`);
      if (ms > 100 * 365 * 86_400_000) throw new Error(`"${t}" is too long: leave HOOKLINE_RETENTION unset to keep events for ever`);
      return ms;
    }),
  };
  if (config.dispatchPerSubscription > config.dispatchConcurrency) {
    config.dispatchPerSubscription = config.dispatchConcurrency;
  }
  if (config.dispatchPerSubscription > config.dispatchPerTenant) {
    config.dispatchPerSubscription = config.dispatchPerTenant;
  }
  return Object.freeze(config);
}
