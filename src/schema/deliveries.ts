import { requireTenant } from '../auth/viewer.js';
import { Vanished, notFound } from '../errors.js';
import { RETRY_FAILED_BATCH, type DeliveryRow } from '../webhooks/deliveries.js';
import { DATA_IS_JSON } from '../webhooks/service.js';
import { MAX_SUBSCRIPTIONS } from '../webhooks/subscriptions.js';
import { LARGE_VALUE_COMPLEXITY, LARGE_VALUE_NOTE, sizeComplexity } from '../server/complexity.js';
import { MAX_TARGET_URL_LENGTH } from '../webhooks/target-url.js';
import { RESPONSE_EXCERPT_BYTES } from '../dispatcher/sender.js';
import { builder, jsonResult, rawJsonResult, type Context } from './builder.js';
import { pageComplexity, pageOf, keysetTable } from './pagination.js';
import { DeliveryAttemptRef, DeliveryRef, DeliveryStatusEnum, WebhookEventRef, WebhookSubscriptionRef } from './refs.js';

/** An event's deliveries, as its `deliveries` field lists them: at most this many, one per subscription a tenant may have. */
const EVENT_DELIVERIES_LIMIT = MAX_SUBSCRIPTIONS;
/** How many attempts a delivery's log is reckoned to hold (the default schedule makes 8). */
const ATTEMPTS_COMPLEXITY = 10;

DeliveryAttemptRef.implement({
  description: 'One HTTP attempt of a delivery.',
  fields: (t) => ({
    number: t.exposeInt('number', { description: '1 for the first attempt ever made, and so on.' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', description: 'When the attempt began.' }),
    durationMs: t.exposeInt('durationMs', { description: 'From its start to the answer, the error or the timeout.' }),
    statusCode: t.exposeInt('statusCode', { nullable: true, description: 'The HTTP status answered; null if none came (a timeout, a network error).' }),
    error: t.exposeString('error', { nullable: true, description: 'Why it failed (`HTTP 500`, `timeout after 15000 ms`, a network error); null for a 2xx.' }),
    responseBody: t.exposeString('responseBody', {
      nullable: true,
      description: 'The first 4 KiB of the answer, as UTF-8 text (a NUL character shows as U+FFFD).',
      // Each byte that is not UTF-8 becomes U+FFFD, three bytes.
      complexity: sizeComplexity(3 * RESPONSE_EXCERPT_BYTES),
    }),
  }),
});

/**
 * What the fields of one live snapshot load, loaded once for all its subscribers: every
 * subscriber of its tenant gets that snapshot object, and executes its own operation on it
 * (one execution per operation, and anyone may name or alias theirs apart), so that each
 * subscriber's lookups would be the database's work once per subscriber. Keyed by tenant as
 * well, whoever's the snapshot is; gone with the snapshot, so later updates read afresh.
 */
const snapshotLoads = new WeakMap<object, Map<string, Promise<unknown>>>();

function isSnapshot(d: DeliveryRow): boolean {
  return !!(d as { snapshot?: boolean }).snapshot;
}

/** `load()`, or for a live snapshot what it gave for the snapshot's first subscriber asking. */
function loadOnce<T>(d: DeliveryRow, viewer: Context['viewer'], what: string, load: () => Promise<T>): Promise<T> {
  if (!isSnapshot(d)) return load();
  let loads = snapshotLoads.get(d);
  if (!loads) snapshotLoads.set(d, (loads = new Map()));
  const key = `${requireTenant(viewer)}:${what}`;
  let loaded = loads.get(key) as Promise<T> | undefined;
  if (!loaded) {
    loaded = load();
    loads.set(key, loaded);
    loaded.catch(() => loads.delete(key)); // a failure is not served to later subscribers
  }
  return loaded;
}

/** A live snapshot lacks a few fields; they are loaded by id (batched) when asked for. */
async function complete(d: DeliveryRow, { loaders, viewer }: Context): Promise<DeliveryRow> {
  if (!isSnapshot(d)) return d;
  const full = await loadOnce(d, viewer, 'delivery', () => loaders.delivery.load(d.id));
  if (!full) throw notFound('delivery', d.id);
  return full;
}

DeliveryRef.implement({
  description: 'One event on its way to one subscription.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Also sent as X-Webhook-Delivery.' }),
    event: t.exposeString('event', { description: "The event's name (invoice.created), also sent as X-Webhook-Event." }),
    status: t.field({ type: DeliveryStatusEnum, description: 'Where it stands: see DeliveryStatus.', resolve: (d) => d.status }),
    attempts: t.exposeInt('attempts', { description: 'Attempts ever made, retries included.' }),
    lastError: t.string({
      nullable: true,
      description: "What its last attempt met when it failed (`HTTP 500`, a timeout, a network error); null when none has been made or the last succeeded (`attemptLog` has each attempt's).",
      // A live update's snapshot leaves out a long one (see migration 0015): loaded whole.
      resolve: async (d, _args, ctx) => ((d as { lastErrorLeftOut?: true }).lastErrorLeftOut ? (await complete(d, ctx)).lastError : d.lastError),
    }),
    lastStatusCode: t.exposeInt('lastStatusCode', { nullable: true, description: "The HTTP status of the last attempt's answer; null if it got none (a timeout, a network error) or none was made." }),
    nextAttemptAt: t.expose('nextAttemptAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When its next attempt is due (PENDING), or when the attempt under way fell due (SENDING); null once DELIVERED, FAILED or CANCELED. A PENDING delivery of an inactive subscription waits for it past that time (`subscription { active }`), and goes as soon as it is active again.',
    }),
    deliveredAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the 2xx answer came; null unless DELIVERED.',
      // A live update may be written after the delivery has moved on (see shared-execution.ts):
      // the row loaded then is of now, and a SENDING update would say when it was delivered.
      resolve: async (d, _args, ctx) => (isSnapshot(d) && d.status !== 'DELIVERED' ? null : (await complete(d, ctx)).deliveredAt),
    }),
    createdAt: t.field({ type: 'DateTime', description: 'When the event was triggered (the start of the transaction that recorded it).', resolve: async (d, _args, ctx) => (await complete(d, ctx)).createdAt }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When it last changed: its status, attempts or address, or its waiting for an inactive subscription.' }),
    targetUrl: t.field({ type: 'String', description: "Where it goes: the subscription's url when it was made, moved with the subscription's url while it waits; an attempt under way keeps the address it was claimed with.", complexity: sizeComplexity(MAX_TARGET_URL_LENGTH), resolve: async (d, _args, ctx) => (await complete(d, ctx)).targetUrl }),
    payload: t.field({
      type: 'JSON',
      description: `The exact envelope sent (parsed): the event's data, up to 256 KiB, and its fields. ${LARGE_VALUE_NOTE}`,
      complexity: LARGE_VALUE_COMPLEXITY,
      resolve: async (d, _args, { viewer, loaders }) => {
        const payload = await loadOnce(d, viewer, 'payload', () => loaders.payload.load(d.eventId));
        // Read with the delivery, its event is gone since: deleted together, past the retention.
        if (payload === null) throw new Vanished('event', d.eventId);
        return rawJsonResult(payload);
      },
    }),
    webhookEvent: t.field({
      type: WebhookEventRef,
      description: 'The event it carries.',
      resolve: async (d, _args, { loaders, viewer }) => {
        const event = await loadOnce(d, viewer, 'event', () => loaders.event.load(d.eventId));
        if (!event) throw new Vanished('event', d.eventId); // see payload
        return event;
      },
    }),
    subscription: t.field({
      type: WebhookSubscriptionRef,
      nullable: true,
      description: 'Null once the subscription was deleted.',
      resolve: (d, _args, { loaders, viewer }) => (d.subscriptionId ? loadOnce(d, viewer, 'subscription', () => loaders.subscription.load(d.subscriptionId!)) : null),
    }),
    attemptLog: t.field({
      type: [DeliveryAttemptRef],
      description: 'Every attempt, oldest first.',
      complexity: { field: 1, multiplier: ATTEMPTS_COMPLEXITY },
      resolve: async (d, _args, { viewer, loaders, services }) => {
        const log = await loadOnce(d, viewer, 'attempts', () => loaders.attempts.load({ id: d.id, upTo: d.attempts }));
        // Fewer than the row counts: deleted with its event since it was read (see payload).
        if (log.length < d.attempts && !(await services.deliveries.eventExists(requireTenant(viewer), d.eventId))) throw new Vanished('event', d.eventId);
        return log;
      },
    }),
  }),
});

WebhookEventRef.implement({
  description: 'An event a tenant triggered.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The envelope `id`.' }),
    event: t.exposeString('event', { description: 'Its name (invoice.created).' }),
    resourceType: t.exposeString('resourceType', { nullable: true, description: 'The envelope `resource_type`.' }),
    resourceId: t.exposeString('resourceId', { nullable: true, description: 'The envelope `resource_id`.' }),
    data: t.field({ type: 'JSON', resolve: (e) => jsonResult(e.data), description: `As triggered, the same JSON value (its keys may come in another order: a delivery's \`payload\` is the bytes sent): up to 256 KiB. ${LARGE_VALUE_NOTE}`, complexity: LARGE_VALUE_COMPLEXITY }),
    idempotencyKey: t.exposeString('idempotencyKey', { nullable: true, description: 'As given to triggerEvent; a repeat within 24 hours answers this event.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was triggered: the envelope `timestamp`.' }),
    deliveries: t.field({
      type: [DeliveryRef],
      description: `One per subscription the event went to, oldest first: at most ${EVENT_DELIVERIES_LIMIT.toLocaleString('en')}, as many as a tenant may have subscriptions; \`deliveries(eventId:)\` pages through them.`,
      complexity: { field: 1, multiplier: EVENT_DELIVERIES_LIMIT },
      resolve: async (e, _args, { viewer, services }) => {
        const deliveries = await services.deliveries.list(requireTenant(viewer), { eventId: e.id }, { limit: EVENT_DELIVERIES_LIMIT, inverted: true });
        // None: an event no subscription matched, or one deleted (with its deliveries) since it was read.
        if (!deliveries.length && !(await services.deliveries.eventExists(requireTenant(viewer), e.id))) throw new Vanished('event', e.id);
        return deliveries;
      },
    }),
  }),
});

const TriggerEventInput = builder.inputType('TriggerEventInput', {
  description: 'An event of the tenant: its name, its data, and what the envelope says of it.',
  fields: (t) => ({
    event: t.string({ required: true, description: 'A name from eventTypes.' }),
    data: t.field({ type: 'JSON', required: true, description: 'Must match the event type\'s schema; at most 256 KiB.' }),
    resourceType: t.string({ description: 'Defaults to the event\'s prefix (invoice for invoice.created).' }),
    resourceId: t.string({ description: 'Defaults to data.<resourceType>_id (for a type of several words also its last, data.order_id for sales_order), else data.id.' }),
    idempotencyKey: t.string({ description: 'The same key within 24 hours returns the first event and creates nothing.' }),
  }),
});

const TriggerEventPayload = builder
  .objectRef<{ duplicate: boolean; event: import('../webhooks/service.js').TriggeredEvent; deliveries: DeliveryRow[] }>(
    'TriggerEventPayload',
  )
  .implement({
    description: 'The event recorded and its deliveries, committed together.',
    fields: (t) => ({
      duplicate: t.exposeBoolean('duplicate', { description: 'True when an earlier call with the same idempotencyKey made the event.' }),
      event: t.field({ type: WebhookEventRef, description: 'The event made, or for a duplicate the one made first.', resolve: (p) => p.event }),
      deliveries: t.field({
        type: [DeliveryRef],
        description: "One per active subscription the event matched (none if none did), in the order of the event's own `deliveries`, and the same for a duplicate.",
        complexity: { field: 1, multiplier: EVENT_DELIVERIES_LIMIT },
        resolve: (p) => p.deliveries,
      }),
    }),
  });

builder.mutationField('triggerEvent', (t) =>
  t.field({
    type: TriggerEventPayload,
    description: 'Records an event and a delivery for each matching active subscription, in one transaction.',
    args: { input: t.arg({ type: TriggerEventInput, required: true }) },
    resolve: async (_root, { input }, { viewer, services }) => {
      const result = await services.webhooks.triggerEvent({
        tenantId: requireTenant(viewer),
        event: input.event,
        data: input.data as Record<string, unknown>,
        resourceType: input.resourceType,
        resourceId: input.resourceId,
        idempotencyKey: input.idempotencyKey,
        [DATA_IS_JSON]: true,
      });
      return result;
    },
  }),
);

builder.mutationField('sendTestEvent', (t) =>
  t.field({
    type: DeliveryRef,
    description: 'Sends a test.event to one subscription, whatever events it selects, and also when it is inactive (a test before turning it on); should that attempt fail, or the subscription be turned off before it is made, it waits for the subscription to be active, like its other deliveries.',
    args: { subscriptionId: t.arg.id({ required: true, description: 'The subscription to send it to.' }) },
    resolve: async (_root, { subscriptionId }, { viewer, services }) => {
      const tenantId = requireTenant(viewer);
      const subscription = await services.subscriptions.find(tenantId, String(subscriptionId));
      if (!subscription) throw notFound('webhook subscription', String(subscriptionId));
      const result = await services.webhooks.triggerEvent({
        tenantId,
        event: 'test.event',
        data: { message: 'This is a test event from Hookline.', subscription_id: subscription.id },
        resourceType: 'test',
        resourceId: subscription.id,
        subscriptionId: subscription.id,
        [DATA_IS_JSON]: true,
      });
      return result.deliveries[0]!;
    },
  }),
);

builder.mutationField('retryDelivery', (t) =>
  t.field({
    type: DeliveryRef,
    description:
      'Puts a FAILED or CANCELED delivery back to PENDING with the retry schedule started afresh; `attempts` keeps counting. A CANCELED delivery (its subscription was deleted) goes to the deleted subscription\'s last address, signed with its secret.',
    args: { id: t.arg.id({ required: true, description: "The delivery's id." }) },
    resolve: (_root, { id }, { viewer, services }) => services.deliveries.retry(requireTenant(viewer), String(id)),
  }),
);

const RetryFailedDeliveriesPayload = builder.objectRef<{ count: number; more: boolean }>('RetryFailedDeliveriesPayload').implement({
  description: 'What retryFailedDeliveries put back.',
  fields: (t) => ({
    count: t.exposeInt('count', { description: 'How many deliveries were put back to PENDING.' }),
    more: t.exposeBoolean('more', { description: `True when FAILED deliveries since then are left (at most ${RETRY_FAILED_BATCH} go back a call): call again.` }),
  }),
});

builder.mutationField('retryFailedDeliveries', (t) =>
  t.field({
    type: RetryFailedDeliveriesPayload,
    description:
      `After an outage of a subscription's endpoint: puts back to PENDING, as retryDelivery does, each of its FAILED deliveries created at or after \`since\`, oldest first, at most ${RETRY_FAILED_BATCH} a call. They go to its address of now; while it is inactive they wait paused, like its other deliveries. A deleted subscription is NOT_FOUND (retryDelivery still takes its CANCELED deliveries one by one). One put back is FAILED again only once its retry schedule, started afresh, is exhausted.`,
    args: {
      subscriptionId: t.arg.id({ required: true, description: 'The subscription whose FAILED deliveries go back.' }),
      since: t.arg({ type: 'DateTime', required: true, description: 'Those created at or after this time (the start of the outage).' }),
    },
    resolve: (_root, { subscriptionId, since }, { viewer, services }) =>
      services.deliveries.retryFailed(requireTenant(viewer), String(subscriptionId), since),
  }),
);

builder.queryField('delivery', (t) =>
  t.field({
    type: DeliveryRef,
    nullable: true,
    description: "One of the tenant's deliveries; null for an id of none (another tenant's included).",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, { viewer, services }) => services.deliveries.find(requireTenant(viewer), String(id)),
  }),
);

builder.queryField('webhookEvent', (t) =>
  t.field({
    type: WebhookEventRef,
    nullable: true,
    description: "One of the tenant's events (a triggerEvent's `event { id }`); null for an id of none (another tenant's included).",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, { viewer, services }) => services.deliveries.findEvent(requireTenant(viewer), String(id)),
  }),
);

builder.queryField('deliveries', (t) =>
  t.connection({
    type: DeliveryRef,
    description: 'The tenant\'s deliveries, newest first.',
    complexity: pageComplexity,
    extensions: keysetTable('webhook_deliveries'),
    args: {
      event: t.arg.string({ description: 'Only deliveries of this event: an event name (a pattern is refused). Empty, as every filter: no filter.' }),
      status: t.arg({ type: DeliveryStatusEnum, description: 'Only deliveries with this status.' }),
      subscriptionId: t.arg.id({ description: 'Only deliveries to this subscription. Empty, as every filter: no filter (a dashboard\'s "all").' }),
      eventId: t.arg.id({ description: 'Only deliveries of this event (a webhookEvent\'s id), a page at a time.' }),
    },
    resolve: (_root, args, { viewer, services }) =>
      pageOf(args, (window) =>
        services.deliveries.list(
          requireTenant(viewer),
          {
            event: args.event,
            status: args.status,
            subscriptionId: args.subscriptionId ? String(args.subscriptionId) : null,
            eventId: args.eventId ? String(args.eventId) : null,
          },
          window,
        ),
      ),
  }),
);
