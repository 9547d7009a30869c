// X-Signature: `sha256=<hex HMAC-SHA256 of the raw body>`, the scheme of the
// integration guide's Python helper (`WebhookSignature.sign`, `verify`,
// `verify_raw`). The key rule is shared with the Standard Webhooks headers
// (see keys.ts): a `whsec_` secret's key is its base64-decoded part, any other
// secret's key is its UTF-8 bytes.
import { timingSafeEqual } from 'node:crypto';
import { hmacSha256, secretKey, toKey, WHSEC_PREFIX, type RawBody, type SecretOrKey } from './keys.js';

export type { RawBody, SecretOrKey } from './keys.js';

const SIGNATURE_PREFIX = 'sha256=';
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;

/** Payload → the bytes that are signed: strings and byte arrays as they are, anything else JSON.stringify'd. */
function payloadBytes(payload: unknown): RawBody {
  if (typeof payload === 'string' || payload instanceof Uint8Array) return payload;
  const json = JSON.stringify(payload);
  if (json === undefined) throw new TypeError('Webhook payload cannot be serialized to JSON');
  return json;
}

/** The 32 digest bytes a `sha256=<hex>` (or bare `<hex>`) value names, or null when it names none. */
function parseSignature(signature: unknown): Buffer | null {
  if (typeof signature !== 'string') return null;
  let value = signature.trim();
  if (value.slice(0, SIGNATURE_PREFIX.length).toLowerCase() === SIGNATURE_PREFIX) {
    value = value.slice(SIGNATURE_PREFIX.length);
  }
  if (!HEX_SHA256.test(value)) return null;
  return Buffer.from(value, 'hex');
}

/**
 * The guide's `WebhookSignature` helper. Every method is static.
 *
 * `secret` may be the configured secret string or an already decoded key
 * (a Uint8Array is taken as the key bytes themselves).
 */
export class WebhookSignature {
  static readonly SECRET_PREFIX = WHSEC_PREFIX;
  static readonly SIGNATURE_PREFIX = SIGNATURE_PREFIX;

  /**
   * The HMAC key of a secret: for `whsec_<base64>` the decoded bytes, for any
   * other secret its UTF-8 bytes. Throws a TypeError for an empty key or a
   * `whsec_` secret whose rest is not padded standard base64.
   */
  static secretKey(secret: string): Buffer {
    return secretKey(secret);
  }

  /** `sha256=<hex HMAC-SHA256>` of the raw body bytes (a string is signed as its UTF-8 bytes). */
  static signRaw(secret: SecretOrKey, body: RawBody): string {
    return SIGNATURE_PREFIX + hmacSha256(toKey(secret), body).toString('hex');
  }

  /**
   * `sha256=<hex HMAC-SHA256>` of a payload: a string, Buffer or Uint8Array
   * is signed as it is, anything else as `JSON.stringify(payload)`. So it
   * equals the X-Signature of a body only if that body is exactly those bytes;
   * a receiver should prefer `verifyRaw` on the body it received.
   * Throws a TypeError for an unusable secret or a payload JSON cannot encode.
   */
  static sign(secret: SecretOrKey, payload: unknown): string {
    return WebhookSignature.signRaw(secret, payloadBytes(payload));
  }

  /** Whether `signature` (`sha256=<hex>` or `<hex>`) signs `payload` as `sign` would. Never throws. */
  static verify(secret: SecretOrKey, payload: unknown, signature: string | null | undefined): boolean {
    try {
      return WebhookSignature.verifyRaw(secret, payloadBytes(payload), signature);
    } catch {
      return false;
    }
  }

  /**
   * Whether `signature` (the X-Signature header value, `sha256=<hex>` or
   * `<hex>`) is the HMAC of these exact bytes. Timing-safe; never throws:
   * malformed input of any kind is false.
   */
  static verifyRaw(secret: SecretOrKey, rawBody: RawBody, signature: string | null | undefined): boolean {
    try {
      const given = parseSignature(signature);
      if (given === null) return false;
      if (typeof rawBody !== 'string' && !(rawBody instanceof Uint8Array)) return false;
      return timingSafeEqual(given, hmacSha256(toKey(secret), rawBody));
    } catch {
      return false;
    }
  }
}
