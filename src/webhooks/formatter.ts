// The envelope every receiver gets (README, "What a receiver gets").
import { randomUUID } from 'node:crypto';

export interface EventEnvelope {
  id: string;
  event: string;
  resource_type: string | null;
  resource_id: string | null;
  tenant_id: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export interface FormatEventInput {
  /** The event's id; a new random one when not given (the guide's format_event_payload takes none). */
  id?: string;
  event: string;
  resourceType?: string | null;
  resourceId?: string | null;
  tenantId: string;
  data: Record<string, unknown>;
  timestamp?: Date | string;
}

export class WebhookFormatter {
  /** Builds the envelope; keys in the contract's order. */
  static formatEventPayload(input: FormatEventInput): EventEnvelope {
    const timestamp = input.timestamp ?? new Date();
    return {
      id: input.id ?? randomUUID(),
      event: input.event,
      resource_type: input.resourceType ?? null,
      resource_id: input.resourceId ?? null,
      tenant_id: input.tenantId,
      timestamp: typeof timestamp === 'string' ? timestamp : timestamp.toISOString(),
      data: input.data,
    };
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

/** `invoice` for `invoice.created`: the default resource type. */
export function resourceTypeOf(event: string): string {
  return event.slice(0, event.indexOf('.'));
}

/** `data.invoice_id` (or `data.id`) as the default resource id, when it is a string or number. */
export function resourceIdOf(resourceType: string, data: Record<string, unknown>): string | null {
  for (const key of [`${resourceType}_id`, 'id']) {
    const value = data[key];
    // A number only when it is a whole one JSON keeps exactly (not 1e+21, not a rounded id).
    if (typeof value === 'string' || (typeof value === 'number' && Number.isSafeInteger(value))) return String(value);
  }
  return null;
}
