import { requireTenant } from '../auth/viewer.js';
import type { EventType as EventTypeRow } from '../entities/event-type.js';
import { BUILT_IN_EVENT_TYPES } from '../migrations/0002-catalog-subscriptions.js';
import { MAX_QUERY_COMPLEXITY, sizeComplexity } from '../server/complexity.js';
import { SCHEMA_LIMITS, TYPE_RECHECK_MS } from '../webhooks/catalog.js';
import { builder, jsonResult } from './builder.js';

export const EventTypeRef = builder.objectRef<EventTypeRow>('EventType').implement({
  description: 'An entry of the event catalog: a name, what it means, and the JSON Schema its `data` must match.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'Dotted name, e.g. invoice.created.' }),
    description: t.exposeString('description', { description: 'What the event means.', complexity: sizeComplexity(4 * 1000) }), // 1,000 characters of up to 4 bytes
    schema: t.field({
      type: 'JSON',
      resolve: (e) => jsonResult(e.schema),
      description: `JSON Schema of the event \`data\`: up to ${SCHEMA_LIMITS.bytes / 1024} KiB, counting ${sizeComplexity(SCHEMA_LIMITS.bytes)} toward the ${MAX_QUERY_COMPLEXITY.toLocaleString('en')} an operation may cost.`,
      complexity: sizeComplexity(SCHEMA_LIMITS.bytes),
    }),
    builtIn: t.boolean({ description: 'True for Hookline\'s own types; false for the tenant\'s.', resolve: (e) => e.tenantId === null }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When its description or schema last changed (updateEventType).' }),
  }),
});

const UpdateEventTypeInput = builder.inputType('UpdateEventTypeInput', {
  description: 'Fields left out, or null, stay as they are. A change that changes nothing writes nothing: updatedAt stays.',
  fields: (t) => ({
    description: t.string({ description: 'What the event means, up to 1,000 characters.' }),
    schema: t.field({ type: 'JSON', description: 'A JSON Schema for `data`, within the same limits as createEventType\'s.' }),
  }),
});

const CreateEventTypeInput = builder.inputType('CreateEventTypeInput', {
  description: "An event type of the tenant's own.",
  fields: (t) => ({
    name: t.string({ required: true, description: 'Dotted name, e.g. shipment.dispatched.' }),
    description: t.string({ description: 'What the event means, up to 1,000 characters.' }),
    schema: t.field({ type: 'JSON', required: true, description: 'A JSON Schema for `data`.' }),
  }),
});

builder.queryField('eventTypes', (t) =>
  t.field({
    type: [EventTypeRef],
    description: 'The built-in event types and the tenant\'s own.',
    // The built-in types and at most SCHEMA_LIMITS.typesPerTenant of the tenant's own.
    // The built-in types, test.event among them (listed apart from BUILT_IN_EVENT_TYPES), and a tenant's own.
    complexity: { field: 1, multiplier: BUILT_IN_EVENT_TYPES.length + 1 + SCHEMA_LIMITS.typesPerTenant },
    resolve: (_root, _args, { viewer, services }) => services.catalog.list(requireTenant(viewer)),
  }),
);

builder.mutationField('createEventType', (t) =>
  t.field({
    type: EventTypeRef,
    description: 'Registers an event type of the tenant, with a JSON Schema for its data.',
    args: { input: t.arg({ type: CreateEventTypeInput, required: true }) },
    resolve: (_root, { input }, { viewer, services }) => services.catalog.create(requireTenant(viewer), { ...input, schema: input.schema }),
  }),
);

builder.mutationField('updateEventType', (t) =>
  t.field({
    type: EventTypeRef,
    description: `Changes an event type of the tenant's own (a built-in one cannot be changed). Events triggered after it commits are checked against the new schema, in every process within ${TYPE_RECHECK_MS / 1000} s; those recorded before are kept, and sent, as they are.`,
    args: {
      name: t.arg.string({ required: true, description: 'The name of the type: NOT_FOUND if the tenant has none of it.' }),
      input: t.arg({ type: UpdateEventTypeInput, required: true }),
    },
    resolve: (_root, { name, input }, { viewer, services }) => services.catalog.update(requireTenant(viewer), name, { description: input.description, schema: input.schema }),
  }),
);
