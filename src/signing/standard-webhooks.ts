// The Standard Webhooks headers (https://www.standardwebhooks.com/), which the
// npm packages `standardwebhooks` and `svix` verify:
//   webhook-id:        the delivery's message id (same on every attempt)
//   webhook-timestamp: integer seconds since the epoch of this attempt
//   webhook-signature: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`,
//                      one per active secret, space-separated, newest first
// plus the guide's `X-Signature: sha256=<hex HMAC of the raw body>` with the
// newest secret. Keys follow keys.ts (`whsec_` → base64-decoded, else UTF-8).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { hmacSha256, secretKey, toKey, type RawBody, type SecretOrKey } from './keys.js';

/** Keys are given either as the configured secrets or as keys decoded beforehand (e.g. cached). */
export type SecretsOrKeys =
  | { secrets: readonly string[]; keys?: undefined }
  | { keys: readonly Uint8Array[]; secrets?: undefined };

export type SignStandardWebhookInput = {
  /** The `webhook-id` value. */
  id: string;
  /** The `webhook-timestamp` value: integer seconds since the epoch. */
  timestamp: number;
  /** The exact body that is sent (a string is sent and signed as its UTF-8 bytes). */
  body: RawBody;
} & SecretsOrKeys;

export type BuildSignedHeadersInput = {
  /** The delivery id: `X-Webhook-Delivery`. */
  deliveryId: string;
  /** The event name: `X-Webhook-Event`. */
  eventName: string;
  /** The `webhook-id`, the same on every attempt of one delivery. */
  webhookId: string;
  /** Integer seconds since the epoch; defaults to now. */
  timestamp?: number;
  body: RawBody;
} & SecretsOrKeys;

export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
  'X-Signature': string;
  'X-Webhook-Event': string;
  'X-Webhook-Delivery': string;
  'content-type': 'application/json';
  [name: string]: string;
}

/** Decodes secrets once (see `WebhookSignature.secretKey`), for callers that keep the keys. */
export function decodeSecrets(secrets: readonly string[]): Buffer[] {
  return secrets.map(secretKey);
}

function keysOf(input: SecretsOrKeys): Buffer[] {
  const keys = input.keys !== undefined ? input.keys.map(toKey) : (input.secrets ?? []).map(secretKey);
  if (keys.length === 0) throw new TypeError('At least one webhook secret is needed to sign');
  return keys;
}

function checkHeaderValue(name: string, value: unknown): asserts value is string {
  // Header values cannot hold control characters; an id with one is a bug upstream.
  if (typeof value !== 'string' || value === '' || /[\u0000-\u001f\u007f]/.test(value)) {
    throw new TypeError(`${name} must be a non-empty string without control characters`);
  }
}

function checkTimestamp(timestamp: unknown): asserts timestamp is number {
  // A fractional or negative value would be written into the header as it is
  // and no verifier would agree with it.
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new TypeError('webhook timestamp must be a non-negative integer number of seconds');
  }
}

function bodyBytes(body: RawBody): Buffer {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('webhook body must be a string or bytes');
}

/** The base64 HMAC of "<id>.<timestamp>.<body>" per key: the body bytes are encoded once and hashed once per key. */
function digests(keys: readonly Buffer[], id: string, timestamp: number, body: Buffer): string[] {
  const prefix = Buffer.from(`${id}.${timestamp}.`, 'utf8');
  return keys.map((key) => createHmac('sha256', key).update(prefix).update(body).digest('base64'));
}

/** `v1,<sig> v1,<sig> ...` */
function signatures(keys: readonly Buffer[], id: string, timestamp: number, body: Buffer): string {
  return digests(keys, id, timestamp, body)
    .map((sig) => `v1,${sig}`)
    .join(' ');
}

/**
 * The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of
 * "<id>.<timestamp>.<body>">` for each secret (or pre-decoded key), in the
 * order given (newest first), space-separated.
 */
export function signStandardWebhook(input: SignStandardWebhookInput): string {
  checkHeaderValue('webhook id', input.id);
  checkTimestamp(input.timestamp);
  return signatures(keysOf(input), input.id, input.timestamp, bodyBytes(input.body));
}

/**
 * Every signature header of one delivery attempt. `secrets` (or `keys`) are
 * newest first: all of them sign `webhook-signature`, the first alone signs
 * `X-Signature`.
 */
export function buildSignedHeaders(input: BuildSignedHeadersInput): SignedHeaders {
  checkHeaderValue('deliveryId', input.deliveryId);
  checkHeaderValue('eventName', input.eventName);
  checkHeaderValue('webhookId', input.webhookId);
  const timestamp = input.timestamp ?? Math.floor(Date.now() / 1000);
  checkTimestamp(timestamp);
  const keys = keysOf(input);
  const body = bodyBytes(input.body);
  return {
    'webhook-id': input.webhookId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': signatures(keys, input.webhookId, timestamp, body),
    'X-Signature': `sha256=${hmacSha256(keys[0]!, body).toString('hex')}`,
    'X-Webhook-Event': input.eventName,
    'X-Webhook-Delivery': input.deliveryId,
    'content-type': 'application/json',
  };
}

export type WebhookVerificationReason =
  | 'MISSING_HEADERS'
  | 'INVALID_TIMESTAMP'
  | 'TIMESTAMP_TOO_OLD'
  | 'TIMESTAMP_TOO_NEW'
  | 'NO_MATCHING_SIGNATURE'
  | 'INVALID_PAYLOAD';

/** Why a webhook was refused; `reason` is stable, `message` is for people. */
export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError';
  constructor(
    message: string,
    readonly reason: WebhookVerificationReason,
  ) {
    super(message);
  }
}

/** Incoming request headers: a fetch `Headers`, or a plain object such as Node's `req.headers`. */
export type HeadersInput = Headers | Record<string, string | readonly string[] | undefined>;

export interface StandardWebhookVerifierOptions {
  /** How far `webhook-timestamp` may be from now, in either direction. Default 300. */
  toleranceSeconds?: number;
  /** The current time in milliseconds since the epoch, like `Date.now` (the default). */
  now?: () => number;
}

function isHeaders(headers: HeadersInput): headers is Headers {
  return typeof (headers as Headers).get === 'function';
}

/** The header's value (case-insensitive name); repeated values are joined with `joiner`. */
function header(headers: HeadersInput, name: string, joiner: string): string | undefined {
  if (isHeaders(headers)) return headers.get(name) ?? undefined;
  const values: string[] = [];
  for (const key of Object.keys(headers)) {
    if (key.toLowerCase() !== name) continue;
    const value = headers[key];
    if (typeof value === 'string') values.push(value);
    else if (Array.isArray(value)) values.push(...value.filter((v): v is string => typeof v === 'string'));
  }
  return values.length === 0 ? undefined : values.join(joiner);
}

/**
 * Verifies Standard Webhooks headers for a receiver, with one secret or
 * several (e.g. during a rotation on the receiver's side).
 *
 * ```ts
 * const verifier = new StandardWebhookVerifier(process.env.WEBHOOK_SECRET!);
 * const payload = verifier.verify(rawBody, req.headers); // throws WebhookVerificationError
 * ```
 */
export class StandardWebhookVerifier {
  private readonly keys: Buffer[];
  private readonly toleranceSeconds: number;
  private readonly now: () => number;

  /** Throws a TypeError for an unusable secret (empty, or `whsec_` without valid base64). */
  constructor(secret: SecretOrKey | readonly SecretOrKey[], options: StandardWebhookVerifierOptions = {}) {
    const secrets: readonly SecretOrKey[] = Array.isArray(secret) ? secret : [secret as SecretOrKey];
    if (secrets.length === 0) throw new TypeError('StandardWebhookVerifier needs at least one secret');
    this.keys = secrets.map(toKey);
    const tolerance = options.toleranceSeconds ?? 300;
    if (typeof tolerance !== 'number' || Number.isNaN(tolerance) || tolerance < 0) {
      throw new TypeError('toleranceSeconds must be a non-negative number');
    }
    this.toleranceSeconds = tolerance;
    this.now = options.now ?? Date.now;
  }

  /**
   * Checks the headers and signature of `rawBody` (the exact bytes received)
   * and returns the parsed JSON payload (undefined for an empty body).
   * Throws a WebhookVerificationError when anything is missing or wrong.
   */
  verify<T = unknown>(rawBody: RawBody, headers: HeadersInput): T {
    this.verifySignature(rawBody, headers);
    const text = typeof rawBody === 'string' ? rawBody : Buffer.from(rawBody).toString('utf8');
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new WebhookVerificationError('Webhook body is signed but is not valid JSON', 'INVALID_PAYLOAD');
    }
  }

  /** As `verify`, without parsing the body. */
  verifySignature(rawBody: RawBody, headers: HeadersInput): void {
    if (headers === null || typeof headers !== 'object') {
      throw new WebhookVerificationError('Missing required headers: webhook-id, webhook-timestamp, webhook-signature', 'MISSING_HEADERS');
    }
    const id = header(headers, 'webhook-id', ', ');
    const timestampHeader = header(headers, 'webhook-timestamp', ', ');
    const signatureHeader = header(headers, 'webhook-signature', ' ');
    const missing = [
      ['webhook-id', id],
      ['webhook-timestamp', timestampHeader],
      ['webhook-signature', signatureHeader],
    ]
      .filter(([, value]) => !value)
      .map(([name]) => name);
    if (missing.length > 0) {
      throw new WebhookVerificationError(`Missing required header${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`, 'MISSING_HEADERS');
    }

    const trimmedTimestamp = timestampHeader!.trim();
    if (!/^\d{1,15}$/.test(trimmedTimestamp)) {
      throw new WebhookVerificationError('Invalid webhook-timestamp header: expected integer seconds since the epoch', 'INVALID_TIMESTAMP');
    }
    const timestamp = Number(trimmedTimestamp);
    const nowSeconds = Math.floor(this.now() / 1000);
    if (nowSeconds - timestamp > this.toleranceSeconds) {
      throw new WebhookVerificationError(`Message timestamp too old: ${nowSeconds - timestamp}s, tolerance ${this.toleranceSeconds}s`, 'TIMESTAMP_TOO_OLD');
    }
    if (timestamp - nowSeconds > this.toleranceSeconds) {
      throw new WebhookVerificationError(`Message timestamp too far in the future: ${timestamp - nowSeconds}s, tolerance ${this.toleranceSeconds}s`, 'TIMESTAMP_TOO_NEW');
    }

    let body: Buffer;
    try {
      body = bodyBytes(rawBody);
    } catch {
      throw new WebhookVerificationError('Webhook body must be the raw request body as a string or bytes', 'INVALID_PAYLOAD');
    }

    const given = signatureHeader!
      .split(/\s+/)
      .filter((part) => part.startsWith('v1,'))
      .map((part) => Buffer.from(part.slice(3), 'utf8'));
    if (given.length > 0) {
      const expected = digests(this.keys, id!, timestamp, body).map((sig) => Buffer.from(sig, 'utf8'));
      for (const want of expected) {
        for (const got of given) {
          if (got.byteLength === want.byteLength && timingSafeEqual(got, want)) return;
        }
      }
    }
    throw new WebhookVerificationError('No matching webhook signature found (wrong secret, or the body or headers were changed)', 'NO_MATCHING_SIGNATURE');
  }
}
