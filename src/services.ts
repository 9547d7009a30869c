// What resolvers, REST routes and the dispatcher share in one process.
import type { DataSource } from 'typeorm';
import { AddressLimiter, RateLimiter } from './auth/rate-limit.js';
import { ApiKeyCache } from './auth/viewer.js';
import type { Config } from './config.js';
import { TargetGuard } from './dispatcher/target-guard.js';
import type { LiveUpdates } from './live/delivery-updates.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { EventCatalog } from './webhooks/catalog.js';
import { DeliveryService } from './webhooks/deliveries.js';
import { WebhookService } from './webhooks/service.js';
import { SubscriptionService } from './webhooks/subscriptions.js';

import { systemClock, type Clock } from './clock.js';

export { systemClock, type Clock };

export interface Services {
  config: Readonly<Config>;
  dataSource: DataSource;
  log: Logger;
  clock: Clock;
  catalog: EventCatalog;
  targetGuard: TargetGuard;
  subscriptions: SubscriptionService;
  webhooks: WebhookService;
  deliveries: DeliveryService;
  /** Valid API keys remembered briefly (used only while revocations are heard). */
  apiKeys: ApiKeyCache;
  /** Requests per second per API key. */
  rateLimiter: RateLimiter;
  /** Requests per second per client address that come without a valid key (see resolveViewer). */
  addressLimiter: AddressLimiter;
  /** Set in processes that serve the API. */
  live?: LiveUpdates;
  metrics?: Metrics;
}

export function createServices(
  config: Readonly<Config>,
  dataSource: DataSource,
  log: Logger,
  clock: Clock = systemClock,
  /** Watches a pool of the process's own for statements gone unanswered (see watchStatements). */
  watchPool?: (pool: import('pg').Pool) => unknown,
): Services {
  const catalog = new EventCatalog(dataSource, { threads: config.validationThreads, deadlineMs: config.validationTimeoutMs });
  const targetGuard = new TargetGuard({ allowPrivate: config.allowPrivateTargets });
  const base = { config, dataSource, log, clock, catalog, targetGuard };
  return {
    ...base,
    subscriptions: new SubscriptionService(base),
    webhooks: new WebhookService(dataSource, catalog, clock, { tenantSessions: true, watchPool }),
    deliveries: new DeliveryService(base),
    apiKeys: new ApiKeyCache(),
    rateLimiter: new RateLimiter(config.rateLimitPerSecond),
    addressLimiter: new AddressLimiter(config.anonymousRateLimitPerSecond, config.trustedProxies),
  };
}
