import { pino, stdSerializers, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * What a log line never holds. A failed statement's error (TypeORM's QueryFailedError)
 * carries the statement's parameters, and those may be a subscription's signing secret
 * or a receiver's Authorization header; PostgreSQL's detail of a failure can quote the
 * row's values ("Failing row contains (...)", "Key (...)=(...)"). pg-pool hands an idle
 * connection's error on with the whole pg client attached (`client`: its socket, its queue of
 * statements with their values, its settings), kilobytes of which nothing helps. Dropped wherever they are in
 * an error (its cause, driverError, an AggregateError's errors, however deep), and in what
 * Yoga logs; the statement's text and the error's message and code stay, for diagnosis.
 */
const SECRET_KEYS = new Set(['parameters', 'detail', 'client']);
const CENSOR = '[not logged]';

function withoutSecrets(value: unknown, depth = 0): unknown {
  if (value instanceof Error) value = stdSerializers.err(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth > 8) return CENSOR; // not walked, so not shown
  if (Array.isArray(value)) return value.map((item) => withoutSecrets(item, depth + 1));
  const copy: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) copy[key] = SECRET_KEYS.has(key) ? CENSOR : withoutSecrets(item, depth + 1);
  return copy;
}

/** Structured JSON logs on stdout; one root logger per process, children per component. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'hookline', pid: process.pid },
      serializers: { err: (error: unknown) => withoutSecrets(error), yoga: (args: unknown) => withoutSecrets(args) },
    },
    destination,
  );
}

/** Where a logger made by createLogger writes (pino's destination on stdout), for its errors. */
export function destinationOf(log: Logger): NodeJS.EventEmitter | undefined {
  return (log as unknown as Record<symbol, NodeJS.EventEmitter | undefined>)[pino.symbols.streamSym];
}

/**
 * Makes a logger drop what it is given from now on, its output gone: what pino does itself on
 * EPIPE (and only then: on EIO, a closed terminal, it lets go of its handling, and sonic-boom's
 * flush on exit then retries the write for ever).
 */
export function silence(log: Logger): void {
  const destination = destinationOf(log) as unknown as Record<string, unknown> | undefined;
  if (!destination) return;
  const noop = () => {};
  for (const method of ['write', 'end', 'flushSync', 'destroy']) if (typeof destination[method] === 'function') destination[method] = noop;
}
