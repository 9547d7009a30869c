// What resolvers, REST routes and the dispatcher share in one process.
import type { DataSource } from 'typeorm';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };

export interface Services {
  config: Readonly<Config>;
  dataSource: DataSource;
  log: Logger;
  clock: Clock;
}
