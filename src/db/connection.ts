// How Hookline's pools reach PostgreSQL, the API's and the dispatcher's alike: none waits
// forever for a server that went silent (a host lost without a reset, a stopped process).

export const CONNECT_TIMEOUT_MS = 10_000;
/** TCP keep-alive probes after this much silence: dead peers are found, idle connections kept open through NAT. */
export const KEEP_ALIVE_AFTER_MS = 10_000;

/**
 * How long an API process waits for a statement's answer before it drops the connection
 * (watchStatements): past any statement of the API's, as the dispatcher's watchdog.
 */
export const STATEMENT_WATCH_MS = 30_000;

/** pg's connection options for the above. */
export const connectionLimits = {
  connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  keepAlive: true,
  keepAliveInitialDelayMillis: KEEP_ALIVE_AFTER_MS,
} as const;
