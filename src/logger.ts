import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/** Structured JSON logs on stdout; one root logger per process, children per component. */
export function createLogger(level: LogLevel): Logger {
  return pino({ level, base: { service: 'hookline', pid: process.pid } });
}
