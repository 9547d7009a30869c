import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * What a log line never holds. A failed statement's error (TypeORM's QueryFailedError)
 * carries the statement's parameters, and those may be a subscription's signing secret
 * or a receiver's Authorization header; PostgreSQL's detail of a failure can quote the
 * row's values ("Failing row contains (...)", "Key (...)=(...)"). The statement's text and
 * the error's message and code stay, for diagnosis.
 */
export const REDACTED_PATHS = ['err', 'err.driverError', 'err.cause', 'err.cause.driverError'].flatMap((at) => [`${at}.parameters`, `${at}.detail`]);

/** Structured JSON logs on stdout; one root logger per process, children per component. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino({ level, base: { service: 'hookline', pid: process.pid }, redact: { paths: REDACTED_PATHS, censor: '[not logged]' } }, destination);
}
