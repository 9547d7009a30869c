// Every entity says `synchronize: false`: the tables are made by Hookline's migrations, with
// indexes, checks, triggers and defaults the entities do not describe, so an app's
// `synchronize` or `migration:generate` (its DataSource holds these entities too) must leave
// them alone rather than "fix" them.
import { ApiKey } from './api-key.js';
import { DeliveryAttempt } from './delivery-attempt.js';
import { EventType } from './event-type.js';
import { Tenant } from './tenant.js';
import { WebhookDelivery } from './webhook-delivery.js';
import { WebhookEvent } from './webhook-event.js';
import { WebhookSubscription } from './webhook-subscription.js';

export { ApiKey, DeliveryAttempt, EventType, Tenant, WebhookDelivery, WebhookEvent, WebhookSubscription };
export type { DeliveryStatus } from './webhook-delivery.js';
export { DELIVERY_STATUSES } from './webhook-delivery.js';

/** Every entity of Hookline, for a DataSource of its own or a caller's. */
export const entities = [Tenant, ApiKey, EventType, WebhookSubscription, WebhookEvent, WebhookDelivery, DeliveryAttempt];
