// Every entity says `synchronize: false`: the tables are made by Hookline's migrations, with
// indexes, checks, triggers and defaults the entities do not describe, so an app's
// `synchronize` or `migration:generate` (its DataSource holds these entities too) must leave
// them alone rather than "fix" them.
//
// They are EntitySchemas, not decorated classes: decorators write into TypeORM's global metadata
// store, which every copy of TypeORM in a process shares (an app on TypeORM 0.3 beside Hookline's
// 1.x), and a store made by one copy breaks the other's DataSource. A schema is read by the
// DataSource it is given to, and nowhere else. The classes are what `manager.create(Tenant, …)`
// and `find` take and give, by the schemas' `target`.
import { ApiKey, ApiKeySchema } from './api-key.js';
import { DeliveryAttempt, DeliveryAttemptSchema } from './delivery-attempt.js';
import { EventType, EventTypeSchema } from './event-type.js';
import { Tenant, TenantSchema } from './tenant.js';
import { WebhookDelivery, WebhookDeliverySchema } from './webhook-delivery.js';
import { WebhookEvent, WebhookEventSchema } from './webhook-event.js';
import { WebhookSubscription, WebhookSubscriptionSchema } from './webhook-subscription.js';

export { ApiKey, DeliveryAttempt, EventType, Tenant, WebhookDelivery, WebhookEvent, WebhookSubscription };
export type { DeliveryStatus } from './webhook-delivery.js';
export { DELIVERY_STATUSES } from './webhook-delivery.js';

/**
 * Every entity of Hookline, for a DataSource of its own or a caller's. Typed as what every copy
 * of TypeORM takes in `entities`: an EntitySchema of one copy is another type than another's
 * (0.3's, or the same 1.x installed twice), which TypeScript refuses, where a Function is one.
 */
export const entities = [
  TenantSchema,
  ApiKeySchema,
  EventTypeSchema,
  WebhookSubscriptionSchema,
  WebhookEventSchema,
  WebhookDeliverySchema,
  DeliveryAttemptSchema,
] as unknown as Function[];
