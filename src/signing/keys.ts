// Key handling shared by both signature schemes. The rule (README, "What
// a receiver gets"): a `whsec_` secret's key is its base64-decoded part; any
// other secret's key is its UTF-8 bytes.
import { createHmac } from 'node:crypto';

/** A secret as configured (`whsec_...` or any string), or an already decoded key. */
export type SecretOrKey = string | Uint8Array;

/** Bytes that are signed as they are (a string as its UTF-8 bytes). */
export type RawBody = string | Uint8Array;

export const WHSEC_PREFIX = 'whsec_';

// Standard (not URL-safe) base64, padded: what `whsec_` + base64(32 random
// bytes) produces and what standardwebhooks/svix decode. Node's own base64
// decoder would silently skip anything else (and accept base64url), giving a
// key no other verifier agrees with, so anything else is refused.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The HMAC key of a secret. Throws a TypeError for an empty key, or for a
 * `whsec_` secret whose rest is not padded standard base64.
 */
export function secretKey(secret: string): Buffer {
  if (typeof secret !== 'string') throw new TypeError('Webhook secret must be a string');
  let key: Buffer;
  if (secret.startsWith(WHSEC_PREFIX)) {
    const encoded = secret.slice(WHSEC_PREFIX.length);
    if (!BASE64.test(encoded)) {
      throw new TypeError('A whsec_ webhook secret must be followed by standard, padded base64');
    }
    key = Buffer.from(encoded, 'base64');
  } else {
    key = Buffer.from(secret, 'utf8');
  }
  if (key.byteLength === 0) throw new TypeError('Webhook secret must not be empty');
  return key;
}

/** A secret string decoded by `secretKey`; a Uint8Array is taken as the key bytes themselves. */
export function toKey(secret: SecretOrKey): Buffer {
  if (typeof secret === 'string') return secretKey(secret);
  if (secret instanceof Uint8Array) {
    if (secret.byteLength === 0) throw new TypeError('Webhook key must not be empty');
    return Buffer.isBuffer(secret) ? secret : Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength);
  }
  throw new TypeError('Webhook secret must be a string or a Uint8Array key');
}

export function hmacSha256(key: Buffer, body: RawBody): Buffer {
  return createHmac('sha256', key).update(body).digest();
}
