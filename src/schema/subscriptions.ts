import { requireTenant } from '../auth/viewer.js';
import type { WebhookSubscription } from '../entities/webhook-subscription.js';
import { LARGE_VALUE_COMPLEXITY, LARGE_VALUE_NOTE, sizeComplexity } from '../server/complexity.js';
import { MAX_EVENT_NAME } from '../webhooks/catalog.js';
import { MAX_EVENTS_PER_SUBSCRIPTION } from '../webhooks/subscriptions.js';
import { MAX_TARGET_URL_LENGTH } from '../webhooks/target-url.js';
import { builder, jsonResult } from './builder.js';
import { pageComplexity, pageOf, keysetTable } from './pagination.js';
import { DeliveryRef, DeliveryStatusEnum, WebhookSubscriptionRef } from './refs.js';

WebhookSubscriptionRef.implement({
  description: 'Where a tenant\'s events go: a URL and the events it receives.',
  fields: (t) => ({
    id: t.exposeID('id'),
    url: t.exposeString('url', { description: 'Where its deliveries are POSTed.', complexity: sizeComplexity(MAX_TARGET_URL_LENGTH) }),
    events: t.exposeStringList('events', {
      description: 'Exact event names, `prefix.*` patterns, or `*`.',
      // Each written with its quotes and comma (and a pattern's `.*`).
      complexity: sizeComplexity(MAX_EVENTS_PER_SUBSCRIPTION * (MAX_EVENT_NAME + 5)),
    }),
    description: t.exposeString('description', { nullable: true, description: "The tenant's own note on it, up to 1,000 characters.", complexity: sizeComplexity(4 * 1000) }), // 1,000 characters of up to 4 bytes
    active: t.exposeBoolean('active', { description: 'Deliveries of an inactive subscription wait until it is active again.' }),
    disabledReason: t.exposeString('disabledReason', {
      nullable: true,
      description: 'Why Hookline deactivated it (the endpoint answered 410 Gone, with HOOKLINE_DISABLE_ON_GONE=true).',
    }),
    headers: t.field({ type: 'JSON', resolve: (s) => jsonResult(s.headers), description: `Extra headers sent with every delivery, as given (readable by every key of the tenant, unlike the secret). ${LARGE_VALUE_NOTE}`, complexity: LARGE_VALUE_COMPLEXITY }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When it was last changed (an update, a rotation, a 410 that deactivated it).' }),
    deliveries: t.connection({
      type: DeliveryRef,
      description: 'Deliveries to this subscription, newest first.',
      args: { status: t.arg({ type: DeliveryStatusEnum, description: 'Only deliveries with this status.' }) },
      complexity: pageComplexity,
      extensions: keysetTable('webhook_deliveries'),
      resolve: (subscription, args, { viewer, services }) =>
        pageOf(args, (window) =>
            services.deliveries.list(requireTenant(viewer), { subscriptionId: subscription.id, status: args.status }, window),
        ),
    }),
  }),
});

const HEADERS_DESCRIPTION =
  'Extra headers sent with every delivery: an object of at most 20 names (of at most 256 characters) to strings of at most 4096 printable ASCII characters (tabs within), no space or tab at either end. Headers Hookline sets (content-type/-length/-encoding, user-agent, webhook-*, x-signature, x-webhook-*) and those that change how the request travels (host, connection, expect, upgrade, proxy-*, …) are refused.';

const CreateWebhookSubscriptionInput = builder.inputType('CreateWebhookSubscriptionInput', {
  description: 'A new subscription.',
  fields: (t) => ({
    url: t.string({ required: true, description: 'http(s) URL of a public endpoint.' }),
    events: t.stringList({ required: true, description: 'Exact event names, `prefix.*` patterns, or `*`: each name in eventTypes, each pattern the beginning of one.' }),
    description: t.string({ description: 'A note of the tenant\'s own, up to 1,000 characters.' }),
    active: t.boolean({ defaultValue: true, description: 'false: saved inactive, and events get no delivery to it until it is made active.' }),
    headers: t.field({ type: 'JSON', description: HEADERS_DESCRIPTION }),
    secret: t.string({ description: 'At least 16 characters; generated (whsec_…) when omitted.' }),
  }),
});

const UpdateWebhookSubscriptionInput = builder.inputType('UpdateWebhookSubscriptionInput', {
  description: 'Fields left out, or null, stay as they are (description: null clears it). An update that changes nothing writes nothing: updatedAt stays.',
  fields: (t) => ({
    url: t.string({ description: 'A new address: deliveries waiting, and those claimed and not begun, go there.' }),
    events: t.stringList({ description: 'The whole new list (it replaces the old): exact event names, `prefix.*` patterns, or `*`.' }),
    description: t.string({ description: 'A new note; null clears it.' }),
    active: t.boolean({ description: 'true clears disabledReason and resumes waiting deliveries.' }),
    headers: t.field({ type: 'JSON', description: HEADERS_DESCRIPTION }),
  }),
});

const SubscriptionWithSecret = builder
  .objectRef<{ subscription: WebhookSubscription; secret: string }>('WebhookSubscriptionWithSecret')
  .implement({
    description: 'A subscription and its signing secret, which is shown only here.',
    fields: (t) => ({
      secret: t.exposeString('secret', { description: 'The signing secret (webhook-signature, X-Signature): store it now, it is never shown again.' }),
      subscription: t.field({ type: WebhookSubscriptionRef, description: 'The subscription.', resolve: (p) => p.subscription }),
    }),
  });

builder.queryField('webhookSubscription', (t) =>
  t.field({
    type: WebhookSubscriptionRef,
    nullable: true,
    description: "One of the tenant's subscriptions; null for an id of none (a deleted one's, another tenant's).",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, { viewer, services }) => services.subscriptions.find(requireTenant(viewer), String(id)),
  }),
);

builder.queryField('webhookSubscriptions', (t) =>
  t.connection({
    type: WebhookSubscriptionRef,
    description: 'The tenant\'s subscriptions, oldest first.',
    complexity: pageComplexity,
    extensions: keysetTable('webhook_subscriptions'),
    args: {
      event: t.arg.string({ description: 'Only subscriptions that receive this event (or exactly this pattern): an event name, a `prefix.*` pattern or `*`. Empty: no filter.' }),
      active: t.arg.boolean({ description: 'Only active (true) or inactive (false) ones.' }),
    },
    resolve: (_root, args, { viewer, services }) =>
      pageOf(args, (window) =>
        services.subscriptions.list(requireTenant(viewer), { event: args.event, active: args.active }, window),
      ),
  }),
);

builder.mutationField('createWebhookSubscription', (t) =>
  t.field({
    type: SubscriptionWithSecret,
    description: 'Subscribes a URL to events. Its secret is answered here only. Events triggered after it has committed, while it is active, get a delivery to it.',
    args: { input: t.arg({ type: CreateWebhookSubscriptionInput, required: true }) },
    resolve: (_root, { input }, { viewer, services }) =>
      services.subscriptions.create(requireTenant(viewer), input as Parameters<typeof services.subscriptions.create>[1]),
  }),
);

builder.mutationField('updateWebhookSubscription', (t) =>
  t.field({
    type: WebhookSubscriptionRef,
    description:
      'Changes what is given. A new url or headers (and rotateWebhookSecret\'s secret) apply to every attempt not yet begun, its deliveries claimed by a dispatcher included (of any process: the change answers once each has handed them back, or after 2 s for one that does not answer); an attempt already on its way goes as it began.',
    args: { id: t.arg.id({ required: true, description: "The subscription's id." }), input: t.arg({ type: UpdateWebhookSubscriptionInput, required: true }) },
    resolve: (_root, { id, input }, { viewer, services }) =>
      services.subscriptions.update(requireTenant(viewer), String(id), input as Parameters<typeof services.subscriptions.update>[2]),
  }),
);

builder.mutationField('deleteWebhookSubscription', (t) =>
  t.boolean({
    description: 'Deletes the subscription; its deliveries not yet made are CANCELED.',
    args: { id: t.arg.id({ required: true, description: "The subscription's id." }) },
    resolve: (_root, { id }, { viewer, services }) => services.subscriptions.delete(requireTenant(viewer), String(id)),
  }),
);

builder.mutationField('rotateWebhookSecret', (t) =>
  t.field({
    type: SubscriptionWithSecret,
    description:
      'Replaces the signing secret. The one replaced keeps signing webhook-signature beside the new one for 24 hours, as does each replaced before it within its own 24 hours (the 10 replaced last; an 11th rotation within the day ends the oldest one\'s early). Given the secret the subscription has (a retried call), it changes nothing.',
    args: { id: t.arg.id({ required: true, description: "The subscription's id." }), secret: t.arg.string({ description: 'The new secret; generated when omitted.' }) },
    resolve: (_root, { id, secret }, { viewer, services }) =>
      services.subscriptions.rotateSecret(requireTenant(viewer), String(id), secret),
  }),
);
