// The contract's operations (../shared/contract/operations.graphql), as the
// clients send them, for the tests that drive Hookline through them.

export const TRIGGER_EVENT = `mutation TriggerEvent($input: TriggerEventInput!) {
  triggerEvent(input: $input) {
    duplicate
    event { id event resourceType resourceId data createdAt }
    deliveries { id status subscription { id } targetUrl }
  }
}`;

export const DELIVERY = `query Delivery($id: ID!) {
  delivery(id: $id) {
    id event status attempts lastError lastStatusCode nextAttemptAt deliveredAt createdAt updatedAt
    targetUrl payload
    webhookEvent { id event }
    subscription { id url }
    attemptLog { number startedAt durationMs statusCode error responseBody }
  }
}`;

export const WEBHOOK_SUBSCRIPTION = `query WebhookSubscription($id: ID!) {
  webhookSubscription(id: $id) {
    id url events description active disabledReason createdAt updatedAt
    deliveries(first: 20) { edges { node { id status attempts } } }
  }
}`;

export const WEBHOOK_SUBSCRIPTIONS = `query WebhookSubscriptions($first: Int, $after: String, $event: String, $active: Boolean) {
  webhookSubscriptions(first: $first, after: $after, event: $event, active: $active) {
    edges { cursor node { id url events active } }
    pageInfo { hasNextPage endCursor }
  }
}`;

export const ROTATE_WEBHOOK_SECRET = `mutation RotateWebhookSecret($id: ID!, $secret: String) {
  rotateWebhookSecret(id: $id, secret: $secret) { secret subscription { id } }
}`;

export const DELETE_WEBHOOK_SUBSCRIPTION = 'mutation DeleteWebhookSubscription($id: ID!) { deleteWebhookSubscription(id: $id) }';
