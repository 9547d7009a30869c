// The REST endpoints of the integration guide, under /api/v1/tenant/webhooks/.
// A thin HTTP skin over the services GraphQL uses: the same auth
// (resolveViewer + requireTenant), the same validation and tenant scoping
// (SubscriptionService, WebhookService.triggerEvent, DeliveryService), the
// same error codes. This file only translates JSON in (snake_case) to service
// calls and rows out to snake_case JSON.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RateLimitedError } from '../auth/rate-limit.js';
import { keyRevoked, requireTenant, resolveViewer, useApiKey } from '../auth/viewer.js';
import { MAX_PAGE_SIZE, cursorOf, type PageWindow } from '../db/keyset.js';
import type { TenantId } from '../db/tenant-scope.js';
import { DELIVERY_STATUSES, type DeliveryStatus } from '../entities/webhook-delivery.js';
import type { WebhookSubscription } from '../entities/webhook-subscription.js';
import { ErrorCode, HTTP_STATUS, HooklineError, badInput, notFound } from '../errors.js';
import type { Services } from '../services.js';
import type { AttemptRow, DeliveryRow } from '../webhooks/deliveries.js';
import { DATA_IS_JSON } from '../webhooks/service.js';
import { checkEventPattern } from '../webhooks/catalog.js';
import { answerFailure, sendJson } from './app.js';
import { BodyTooLargeError, bodyText } from './http-body.js';
import { refuseInexactNumbers } from '../json-numbers.js';

export const REST_PREFIX = '/api/v1/tenant/webhooks';

type Routes = NonNullable<import('./app.js').AppOptions['routes']>;
type Method = 'GET' | 'POST';

interface RestRequest {
  tenantId: TenantId;
  params: string[];
  /** The request's path, for links to further pages. */
  path: string;
  query: URLSearchParams;
  /** The parsed JSON body: an object, or a BAD_USER_INPUT. */
  json(): Promise<Record<string, unknown>>;
}

interface RestAnswer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

type Handler = (services: Services, request: RestRequest) => Promise<RestAnswer>;

interface Route {
  /** Path segments after the prefix; ':id' matches one segment. */
  path: string[];
  methods: Partial<Record<Method, Handler>>;
  /** The query parameters each method reads; any other is refused (see checkQuery). */
  query?: Partial<Record<Method, readonly string[]>>;
}

// ---- JSON shapes (snake_case, as in the guide) ----------------------------

function iso(value: Date | string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

function subscriptionJson(s: WebhookSubscription, secret?: string) {
  return {
    id: s.id,
    url: s.url,
    // The guide's single-event form reads `event`; `events` is the full list.
    event: s.events[0] ?? null,
    events: s.events,
    description: s.description,
    active: s.active,
    disabled_reason: s.disabledReason,
    headers: s.headers,
    created_at: iso(s.createdAt),
    updated_at: iso(s.updatedAt),
    ...(secret === undefined ? {} : { secret }),
  };
}

function deliveryJson(d: DeliveryRow) {
  return {
    id: d.id,
    event_id: d.eventId,
    subscription_id: d.subscriptionId,
    event: d.event,
    target_url: d.targetUrl,
    status: d.status,
    attempts: d.attempts,
    last_error: d.lastError,
    last_status_code: d.lastStatusCode,
    next_attempt_at: iso(d.nextAttemptAt),
    delivered_at: iso(d.deliveredAt),
    created_at: iso(d.createdAt),
    updated_at: iso(d.updatedAt),
  };
}

function attemptJson(a: AttemptRow) {
  return {
    number: a.number,
    started_at: iso(a.startedAt),
    duration_ms: a.durationMs,
    status_code: a.statusCode,
    error: a.error,
    response_body: a.responseBody,
  };
}

// ---- input checks ----------------------------------------------------------

/** The service layer names fields as GraphQL does; REST callers know them in snake_case. */
const REST_FIELD: Record<string, string> = {
  data: 'payload',
  resourceType: 'resource_type',
  resourceId: 'resource_id',
  idempotencyKey: 'idempotency_key',
  subscriptionId: 'subscription_id',
  eventId: 'event_id',
  disabledReason: 'disabled_reason',
};

/**
 * A refusal naming a query parameter or a body field by the name the client wrote: restError
 * leaves it alone (`eventId` is not `event_id`, which this API reads).
 */
class AsWrittenError extends HooklineError {
  constructor(field: string, message: string) {
    super(ErrorCode.BAD_USER_INPUT, `${field}: ${message}`, field);
  }
}

function restError(error: HooklineError): { field?: string; message: string } {
  if (!error.field || error instanceof AsWrittenError) return { field: error.field, message: error.message };
  // Own entries only: a body's "__proto__" or "toString" is a field name like any other.
  const field = Object.hasOwn(REST_FIELD, error.field) ? REST_FIELD[error.field]! : error.field;
  let message = error.message.startsWith(`${error.field}:`) ? field + error.message.slice(error.field.length) : error.message;
  // The paths inside the payload ("data.amount is required") too, where they follow ": " or "; ".
  if (error.field === 'data') message = message.replace(/(?<=: |; )data(?=[.[ ]|$)/g, field);
  return { field, message };
}

/**
 * An error about the subscription's `events` names `event` when that is where the names came
 * from: the body gave `event` alone (the guide's form), or gave both and the error is about the
 * name in `event` only (an unknown event: the catalog is checked over both at once).
 */
function asGiven(error: unknown, body: Record<string, unknown>): unknown {
  if (!(error instanceof HooklineError) || error.field !== 'events') return error;
  if (body.events !== undefined && body.events !== null) {
    const event = body.event;
    const named = (name: unknown) => typeof name === 'string' && error.message.includes(JSON.stringify(name.trim()));
    if (!named(event) || (body.events as unknown[]).some(named)) return error;
  }
  return new HooklineError(error.code, `event${error.message.slice('events'.length)}`, 'event');
}

function checkKnownFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw new AsWrittenError(key, `is not a field of this request; expected ${allowed.join(', ')}`);
  }
}

function optionalString(body: Record<string, unknown>, field: string): string | null | undefined {
  const value = body[field];
  if (value === undefined || value === null) return value as null | undefined;
  if (typeof value !== 'string') throw badInput(field, 'must be a string');
  return value;
}

function optionalBoolean(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw badInput(field, 'must be true or false');
  return value;
}

function booleanParam(query: URLSearchParams, name: string): boolean | undefined {
  const value = query.get(name);
  if (value === null || value === '') return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw badInput(name, 'must be true or false');
}

/**
 * `?limit=&after=`: a keyset page, as GraphQL's `first`/`after` (newest or oldest first per list).
 * With no limit, the most a page may hold: the contract's `GET deliveries` answers "a JSON array
 * of deliveries", and a client reading it as the whole list sees as much as it can.
 */
function pageWindow(query: URLSearchParams): PageWindow {
  const raw = query.get('limit');
  let limit = MAX_PAGE_SIZE;
  if (raw !== null && raw !== '') {
    // Digits only: Number() also reads '0x10', '1e1' and ' 1'.
    limit = /^\d{1,3}$/.test(raw) ? Number(raw) : Number.NaN;
    if (!(limit >= 1 && limit <= MAX_PAGE_SIZE)) throw badInput('limit', `must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  }
  const after = query.get('after') || undefined;
  return { after, limit, inverted: false };
}

/**
 * A page of a list, with a `Link: <…>; rel="next"` header when the page is full. Its
 * cursor carries the last item's time beside its id, so it goes on past that item
 * should it be deleted meanwhile (a bare `after=<id>` of a deleted item is refused).
 */
function pageAnswer<Row extends { id: string; createdAt: Date }>(request: RestRequest, window: PageWindow, rows: Row[], json: (row: Row) => unknown): RestAnswer {
  const last = rows.at(-1);
  if (!last || rows.length < window.limit) return { status: 200, body: rows.map(json) };
  const next = new URLSearchParams(request.query);
  next.set('after', cursorOf(last));
  return { status: 200, body: rows.map(json), headers: { link: `<${request.path}?${next}>; rel="next"` } };
}

// ---- handlers --------------------------------------------------------------

const SUBSCRIPTION_FIELDS = ['event', 'events', 'url', 'secret', 'description', 'headers', 'active'] as const;

/**
 * The query parameters an endpoint reads, each at most once: another (a misspelt
 * `subscripton_id`, an `offset` this API does not have) would otherwise be passed over and
 * the answer look like the one asked for, unfiltered.
 */
function checkQuery(request: RestRequest, method: Method, known: readonly string[]): void {
  const seen = new Set<string>();
  for (const name of request.query.keys()) {
    const reads = known.length ? `it reads ${known.join(', ')}` : 'it reads none';
    if (!name) throw new HooklineError(ErrorCode.BAD_USER_INPUT, `a query parameter has no name (…?=… or …&=…); ${method} ${request.path}: ${reads}`);
    if (!known.includes(name)) throw new AsWrittenError(name, `is not a query parameter of ${method} ${request.path}; ${reads}`);
    if (seen.has(name)) throw new AsWrittenError(name, 'is given more than once');
    seen.add(name);
  }
}

const createSubscription: Handler = async (services, { tenantId, json }) => {
  const body = await json();
  checkKnownFields(body, SUBSCRIPTION_FIELDS);
  const event = optionalString(body, 'event');
  let events: string[] | undefined;
  if (body.events !== undefined && body.events !== null) {
    if (!Array.isArray(body.events) || !body.events.every((e) => typeof e === 'string')) {
      throw badInput('events', 'must be an array of event names');
    }
    events = body.events as string[];
  }
  // `{event}` (the guide) and `{events}` both work; given together, both count.
  // Given with the list, `event` is checked on its own, its field named (not the list's); an empty
  // one too, as a name in the list would be, not passed over.
  if (typeof event === 'string' && events !== undefined) checkEventPattern('event', event.trim());
  const all = [...(event ? [event] : []), ...(events ?? [])];
  if (!event && events === undefined) throw badInput('event', 'is required: give "event" (one name) or "events" (a list)');
  const headers = body.headers;
  if (headers !== undefined && headers !== null && (typeof headers !== 'object' || Array.isArray(headers))) {
    throw badInput('headers', 'must be an object of header names to strings');
  }
  const url = optionalString(body, 'url');
  if (!url) throw badInput('url', 'is required');
  const { subscription, secret } = await services.subscriptions
    .create(tenantId, {
      url,
      events: all,
      secret: optionalString(body, 'secret'),
      description: optionalString(body, 'description'),
      headers: headers as Record<string, unknown> | null | undefined,
      active: optionalBoolean(body, 'active'),
    })
    .catch((error: unknown) => {
      throw asGiven(error, body);
    });
  return { status: 201, body: subscriptionJson(subscription, secret) };
};

const listSubscriptions: Handler = async (services, request) => {
  const { tenantId, query } = request;
  const window = pageWindow(query);
  const rows = await services.subscriptions.list(
    tenantId,
    { event: query.get('event') || undefined, active: booleanParam(query, 'active') },
    window,
  );
  return pageAnswer(request, window, rows, (s) => subscriptionJson(s));
};

const getSubscription: Handler = async (services, { tenantId, params }) => {
  const subscription = await services.subscriptions.find(tenantId, params[0]!);
  if (!subscription) throw notFound('webhook subscription', params[0]!);
  return { status: 200, body: subscriptionJson(subscription) };
};

const DELIVERY_FIELDS = ['event', 'payload', 'resource_type', 'resource_id', 'idempotency_key'] as const;

const createDeliveries: Handler = async (services, { tenantId, json }) => {
  const body = await json();
  checkKnownFields(body, DELIVERY_FIELDS);
  const event = optionalString(body, 'event');
  if (!event) throw badInput('event', 'is required');
  if (body.payload === undefined) throw badInput('payload', 'is required: the event data, a JSON object');
  // triggerEvent validates the payload (an object, at most 256 KiB, the event's schema) exactly as for GraphQL.
  const result = await services.webhooks.triggerEvent({
    tenantId,
    event,
    data: body.payload as Record<string, unknown>,
    resourceType: optionalString(body, 'resource_type'),
    // Checked by the service (text or a whole number), its errors named resource_id here.
    resourceId: body.resource_id as string | number | null | undefined,
    idempotencyKey: optionalString(body, 'idempotency_key'),
    [DATA_IS_JSON]: true,
  });
  return {
    status: 202,
    body: {
      event_id: result.event.id,
      duplicate: result.duplicate,
      deliveries: result.deliveries.map(deliveryJson),
    },
  };
};

function statusParam(query: URLSearchParams): DeliveryStatus | undefined {
  const value = query.get('status');
  if (!value) return undefined;
  const upper = value.toUpperCase();
  if (!(DELIVERY_STATUSES as readonly string[]).includes(upper)) throw badInput('status', `must be one of ${DELIVERY_STATUSES.join(', ')}`);
  return upper as DeliveryStatus;
}

const listDeliveries: Handler = async (services, request) => {
  const { tenantId, query } = request;
  const window = pageWindow(query);
  const rows = await services.deliveries.list(
    tenantId,
    {
      event: query.get('event') || undefined,
      status: statusParam(query),
      subscriptionId: query.get('subscription_id') || undefined,
      eventId: query.get('event_id') || undefined,
    },
    window,
  );
  return pageAnswer(request, window, rows, deliveryJson);
};

const getDelivery: Handler = async (services, { tenantId, params }) => {
  const id = params[0]!;
  const delivery = await services.deliveries.find(tenantId, id);
  if (!delivery) throw notFound('delivery', id);
  const attempts = await services.deliveries.attempts(tenantId, id, delivery.attempts);
  return { status: 200, body: { ...deliveryJson(delivery), attempt_log: attempts.map(attemptJson) } };
};

const ROUTES: Route[] = [
  { path: ['subscriptions'], methods: { GET: listSubscriptions, POST: createSubscription }, query: { GET: ['event', 'active', 'limit', 'after'] } },
  { path: ['subscriptions', ':id'], methods: { GET: getSubscription } },
  {
    path: ['deliveries'],
    methods: { GET: listDeliveries, POST: createDeliveries },
    query: { GET: ['event', 'status', 'subscription_id', 'event_id', 'limit', 'after'] },
  },
  { path: ['deliveries', ':id'], methods: { GET: getDelivery } },
];

function match(segments: string[]): { route: Route; params: string[] } | undefined {
  for (const route of ROUTES) {
    if (route.path.length !== segments.length) continue;
    const params: string[] = [];
    const ok = route.path.every((part, i) => {
      if (part === ':id') {
        params.push(segments[i]!);
        return true;
      }
      return part === segments[i];
    });
    if (ok) return { route, params };
  }
  return undefined;
}

/**
 * The request's URL. An origin-form target is read as a path even when it begins with `//`
 * (which `new URL(target, base)` would take for a host: `//api/v1/...` as host `api`).
 */
function requestUrl(req: IncomingMessage): URL {
  const target = req.url ?? '/';
  return target.startsWith('/') ? new URL(`http://localhost${target}`) : new URL(target, 'http://localhost');
}

function sendError(res: ServerResponse, status: number, code: string, message: string, field?: string): void {
  sendJson(res, status, { error: { code, message, ...(field ? { field } : {}) } });
}

/** The `routes` hook of buildApp(): answers everything under REST_PREFIX, and nothing else. */
export function createRestRoutes(services: Services): Routes {
  return async (req: IncomingMessage, res: ServerResponse, readBody: () => Promise<Buffer>): Promise<boolean> => {
    const url = requestUrl(req);
    // Repeated slashes count as one, as behind nginx (its merge_slashes): a base URL written
    // with a trailing slash (`http://host/` + `/api/...`) reaches the same endpoint.
    const path = url.pathname.replace(/\/{2,}/g, '/');
    if (path !== REST_PREFIX && !path.startsWith(`${REST_PREFIX}/`)) return false;

    const segments = path.slice(REST_PREFIX.length).split('/').filter(Boolean);
    let decoded: string[];
    try {
      decoded = segments.map(decodeURIComponent);
    } catch {
      decoded = segments;
    }
    const found = match(decoded);
    if (!found) {
      sendError(res, 404, ErrorCode.NOT_FOUND, `no such endpoint: ${path}; see the REST API in the README`);
      return true;
    }
    // HEAD is GET without the body (Node's server leaves it out).
    const method = (req.method === 'HEAD' ? 'GET' : req.method) as Method;
    const handler = found.route.methods[method];
    if (!handler) {
      const allowed = Object.keys(found.route.methods);
      res.setHeader('allow', (allowed.includes('GET') ? [...allowed, 'HEAD'] : allowed).join(', '));
      sendError(res, 405, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}`);
      return true;
    }

    // The key's use (ApiKeyCache.use): a revocation heard once the request is in hand refuses it,
    // and one heard while it runs waits for it to end (not for a slow upload of its body).
    let endKeyUse = () => {};
    try {
      const viewer = await resolveViewer(
        services.dataSource,
        services.config.adminToken,
        req.headers.authorization,
        services.apiKeys,
        services.addressLimiter.of(req),
      );
      const tenantId = requireTenant(viewer);
      if (viewer.kind === 'tenant') services.rateLimiter.take(viewer.apiKeyId);
      const useKey = async () => {
        if (viewer.kind !== 'tenant') return;
        const end = await useApiKey(services.dataSource, services.apiKeys, viewer.apiKeyId);
        if (!end) throw keyRevoked();
        endKeyUse = end;
      };
      const json = async (): Promise<Record<string, unknown>> => {
        endKeyUse();
        const raw = bodyText(await readBody());
        await useKey();
        let parsed: unknown;
        try {
          parsed = JSON.parse(raw);
        } catch (error) {
          throw new HooklineError(ErrorCode.BAD_USER_INPUT, `the request body is not valid JSON: ${(error as Error).message}`);
        }
        refuseInexactNumbers(raw);
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
          throw new HooklineError(ErrorCode.BAD_USER_INPUT, 'the request body must be a JSON object');
        }
        return parsed as Record<string, unknown>;
      };
      const request: RestRequest = { tenantId, params: found.params, path, query: url.searchParams, json };
      checkQuery(request, method, found.route.query?.[method] ?? []);
      await useKey();
      const answer = await handler(services, request);
      for (const [name, value] of Object.entries(answer.headers ?? {})) res.setHeader(name, value);
      sendJson(res, answer.status, answer.body);
    } catch (error) {
      // buildApp answers 413 for a body over 1 MiB, as it does for GraphQL.
      if (error instanceof BodyTooLargeError) throw error;
      if (error instanceof HooklineError) {
        const { field, message } = restError(error);
        if (error.code === ErrorCode.UNAUTHENTICATED) res.setHeader('www-authenticate', 'Bearer');
        if (error instanceof RateLimitedError) res.setHeader('retry-after', String(error.retryAfterSeconds));
        sendError(res, HTTP_STATUS[error.code], error.code, message, field);
        return true;
      }
      answerFailure(req, res, error, services.log);
    } finally {
      endKeyUse();
    }
    return true;
  };
}
