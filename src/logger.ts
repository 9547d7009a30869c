import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * What a log line never holds. A failed statement's error (TypeORM's QueryFailedError)
 * carries the statement's parameters, and those may be a subscription's signing secret
 * or a receiver's Authorization header; the statement's text stays, for diagnosis.
 */
export const REDACTED_PATHS = ['err.parameters', 'err.driverError.parameters', 'err.cause.parameters', 'err.cause.driverError.parameters'];

/** Structured JSON logs on stdout; one root logger per process, children per component. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino({ level, base: { service: 'hookline', pid: process.pid }, redact: { paths: REDACTED_PATHS, censor: '[not logged]' } }, destination);
}
