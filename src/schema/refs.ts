// Object refs declared once, so domain files can point at each other's types
// without import cycles; each domain file implements its own.
import type { WebhookSubscription } from '../entities/webhook-subscription.js';
import { DELIVERY_STATUSES } from '../entities/webhook-delivery.js';
import type { AttemptRow, DeliveryRow, EventRow } from '../webhooks/deliveries.js';
import { builder } from './builder.js';

export const WebhookSubscriptionRef = builder.objectRef<WebhookSubscription>('WebhookSubscription');
/** A delivery, or a live snapshot of one (fields not in the snapshot are loaded by id). */
export const DeliveryRef = builder.objectRef<DeliveryRow>('Delivery');
export const WebhookEventRef = builder.objectRef<EventRow>('WebhookEvent');
export const DeliveryAttemptRef = builder.objectRef<AttemptRow>('DeliveryAttempt');

export const DeliveryStatusEnum = builder.enumType('DeliveryStatus', {
  description: 'PENDING: waiting for its first or next attempt (or, while its subscription is inactive, for the subscription: its nextAttemptAt may then be past). SENDING: an attempt is under way. DELIVERED: a 2xx answer. FAILED: the retry schedule is exhausted. CANCELED: its subscription was deleted before it was made (retryDelivery sends it all the same).',
  values: DELIVERY_STATUSES,
});
