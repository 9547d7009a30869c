// The envelope every receiver gets (README, "What a receiver gets"), and the rules for its
// resource fields, which triggerEvent and the library's formatEventPayload share.
import { randomUUID } from 'node:crypto';
import { DATE_TIME_EXPECTED, parseDateTime } from '../date-time.js';
import { badInput, checkText } from '../errors.js';
import { checkEventName } from './catalog.js';

export interface EventEnvelope {
  id: string;
  event: string;
  resource_type: string;
  resource_id: string | null;
  tenant_id: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export interface FormatEventInput {
  /** The event's id; a new random one when not given (the guide's format_event_payload takes none). */
  id?: string;
  event: string;
  /** Default: the event's prefix (`invoice` for `invoice.created`). */
  resourceType?: string | null;
  /** The record's id (an integer is taken as its decimal text). Default: `data.<resource type>_id`, else `data.id`. */
  resourceId?: string | number | null;
  tenantId: string;
  /** Any object type, an interface too (as triggerEvent's `data`). */
  data: object;
  /** Default: now. A date and time without an offset is UTC, as the guide's `datetime.utcnow().isoformat()` writes it. */
  timestamp?: Date | string;
}

/** The envelope's fields once decided: what triggerEvent records. */
export interface EnvelopeFields {
  id: string;
  event: string;
  resourceType: string;
  resourceId: string | null;
  tenantId: string;
  data: Record<string, unknown>;
  timestamp: Date;
}

/** The envelope of fields already decided; keys in the contract's order. */
export function envelopeOf(fields: EnvelopeFields): EventEnvelope {
  return {
    id: fields.id,
    event: fields.event,
    resource_type: fields.resourceType,
    resource_id: fields.resourceId,
    tenant_id: fields.tenantId,
    timestamp: fields.timestamp.toISOString(),
    data: fields.data,
  };
}

export class WebhookFormatter {
  /**
   * The envelope the dispatcher sends for this event, as triggerEvent makes it: the resource
   * fields checked and defaulted by the same rules, the timestamp in the contract's form
   * (`2024-02-14T10:30:00.000Z`). Input triggerEvent would refuse for its form (an unknown
   * field, an event name, `data`, the resource fields, a timestamp) is BAD_USER_INPUT here too;
   * the tenant id and the event name are written as given, looked up nowhere (the guide's
   * format_event_payload formats for any tenant id, and knows no catalog).
   */
  static formatEventPayload(input: FormatEventInput): EventEnvelope {
    refuseUnknownFields(input, FORMAT_FIELDS, 'formatEventPayload');
    if (typeof input.tenantId !== 'string' || !input.tenantId) throw badInput('tenantId', 'is required: the id of the tenant whose event it is');
    checkEventName('event', input.event);
    if (input.data === null || typeof input.data !== 'object' || Array.isArray(input.data)) throw badInput('data', 'must be a JSON object');
    return envelopeOf({
      ...resourceOf(input, input.data as Record<string, unknown>),
      id: input.id ?? randomUUID(),
      event: input.event,
      tenantId: input.tenantId,
      data: input.data as Record<string, unknown>,
      timestamp: timestampOf(input.timestamp),
    });
  }

  /** The exact bytes sent: serialised once, stored, and sent unchanged on every attempt. */
  static serialize(envelope: EventEnvelope): string {
    return JSON.stringify(envelope);
  }

  /**
   * The same bytes as serialize(), with `data` given already serialised (it was, to
   * measure it): the envelope ends with `data`, so its JSON is spliced in, not redone.
   */
  static serializeWithData(envelope: EventEnvelope, dataJson: string): string {
    const head = JSON.stringify({ ...envelope, data: 0 });
    return `${head.slice(0, -2)}${dataJson}}`;
  }
}

const FORMAT_FIELDS: ReadonlySet<string> = new Set(['id', 'event', 'resourceType', 'resourceId', 'tenantId', 'data', 'timestamp']);

/**
 * A library call's input with a field it does not know (the guide's `resource_id` for
 * `resourceId`, say, from JavaScript, where no type says so) is BAD_USER_INPUT naming it:
 * left out silently, the envelope would lack what the caller meant it to hold.
 */
export function refuseUnknownFields(input: object, known: ReadonlySet<string>, call: string): void {
  for (const field of Object.keys(input)) {
    if (!known.has(field)) {
      const camel = field.replaceAll(/_([a-z])/g, (_, c: string) => c.toUpperCase());
      throw badInput(field, `is not a field of ${call}'s input${known.has(camel) ? ` (did you mean ${camel}?)` : ''}; it takes ${[...known].join(', ')}`);
    }
  }
}

/** `invoice` for `invoice.created`: the default resource type. */
export function resourceTypeOf(event: string): string {
  return event.slice(0, event.indexOf('.'));
}

/**
 * `data.invoice_id` (or, without one, `data.id`) as the default resource id, when it is one a
 * caller could have given (see checkResourceId): a whole number, or a string of at most 200
 * characters that is not blank; otherwise none (not the other key's, another thing's id). A
 * type of several words is also named by its last (`data.order_id` for `sales_order`, as the
 * guide's sales_order events carry it), after its whole name and before `data.id`.
 */
export function resourceIdOf(resourceType: string, data: Record<string, unknown>): string | null {
  const given = (v: unknown) => v !== undefined && v !== null;
  const last = resourceType.slice(resourceType.lastIndexOf('_') + 1);
  const keys = [`${resourceType}_id`, ...(last && last !== resourceType ? [`${last}_id`] : []), 'id'];
  const value = data[keys.find((key) => given(data[key])) ?? 'id'];
  try {
    // A number only when it is a whole one JSON keeps exactly (not 1e+21, not a rounded id).
    return typeof value === 'string' || (typeof value === 'number' && Number.isSafeInteger(value)) ? checkResourceId(value) : null;
  } catch {
    return null;
  }
}

/**
 * A record's id as the app has it: text, or a whole number (the guide passes
 * `resource_id=invoice.id`), kept as its decimal text; one JSON cannot hold exactly is refused.
 */
export function checkResourceId(value: unknown): string | null {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw badInput('resourceId', 'must be a string or a whole number up to 9007199254740991 (send a larger id as a string)');
    return String(value);
  }
  if (value !== null && value !== undefined && typeof value !== 'string') throw badInput('resourceId', 'must be a string or a whole number');
  return checkText('resourceId', value, 200);
}

/** `resource_type` and `resource_id` as given (checked), else their defaults (README). */
export function resourceOf(
  input: { event: string; resourceType?: string | null; resourceId?: string | number | null },
  data: Record<string, unknown>,
): { resourceType: string; resourceId: string | null } {
  const resourceType = checkText('resourceType', input.resourceType, 200) ?? resourceTypeOf(input.event);
  return { resourceType, resourceId: checkResourceId(input.resourceId) ?? resourceIdOf(resourceType, data) };
}

/**
 * The contract's form of a timestamp: text is read as ISO 8601's usual forms (RFC 3339's, and
 * see date-time.ts; no offset: UTC), anything else is BAD_USER_INPUT.
 */
function timestampOf(value: Date | string | undefined): Date {
  if (value === undefined) return new Date();
  if (typeof value === 'string') {
    const parsed = parseDateTime(value, { utcWithoutOffset: true, lenient: true });
    if ('problem' in parsed) throw badInput('timestamp', `must be a Date or ${DATE_TIME_EXPECTED}; ${JSON.stringify(value.slice(0, 100))} ${parsed.problem}`);
    return parsed;
  }
  // Years past 9999 (or before 1) toISOString() writes as +010000-…, not the contract's form.
  const year = value instanceof Date ? value.getUTCFullYear() : Number.NaN;
  if (!(year >= 1 && year <= 9999)) throw badInput('timestamp', `must be a Date or ${DATE_TIME_EXPECTED}`);
  return value;
}
