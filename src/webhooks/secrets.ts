import { randomBytes } from 'node:crypto';
import { badInput, rejectUnstorableText } from '../errors.js';
import { secretKey } from '../signing/keys.js';

/** After a rotation the previous secret keeps signing for this long. */
export const ROTATION_GRACE_MS = 24 * 60 * 60 * 1000;
export const MIN_SECRET_LENGTH = 16;
export const MAX_SECRET_LENGTH = 256;

export function generateSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** A client's secret, or a new one when none is given. */
export function acceptSecret(secret: string | null | undefined, field = 'secret'): string {
  if (secret === null || secret === undefined) return generateSecret();
  // Characters, not UTF-16 units: 8 emoji are 8 characters, short of the minimum.
  const characters = secret.length > 2 * MAX_SECRET_LENGTH ? secret.length : [...secret].length; // no array of a huge one
  if (characters < MIN_SECRET_LENGTH) throw badInput(field, `must be at least ${MIN_SECRET_LENGTH} characters`);
  if (characters > MAX_SECRET_LENGTH) throw badInput(field, `must be at most ${MAX_SECRET_LENGTH} characters`);
  // Spaces inside are the client's choice (a passphrase); at either end, or a line break or
  // other control character anywhere, a copy and paste or a config file would lose or change.
  if (/^\s|\s$/.test(secret)) throw badInput(field, 'must not start or end with white space');
  if (/[\p{Cc}\u2028\u2029]/u.test(secret)) throw badInput(field, 'must not contain control characters or line breaks');
  rejectUnstorableText(field, secret);
  if (secret.startsWith('whsec_')) {
    let key: Buffer;
    try {
      key = secretKey(secret);
    } catch {
      key = Buffer.alloc(0);
    }
    // Its key is the decoded part (the contract): that must be there; how long is the client's
    // choice within the secret's 16 characters, as for any other secret.
    if (!key.length) throw badInput(field, 'a whsec_ secret must be followed by standard, padded base64 (its key)');
  }
  return secret;
}

/** The secrets that sign now: the newest first, then the previous one during its grace period. */
export function signingSecrets(
  row: { secret: string; previousSecret: string | null; previousSecretExpiresAt: Date | null },
  now: Date,
): string[] {
  if (row.previousSecret && row.previousSecretExpiresAt && row.previousSecretExpiresAt > now) {
    return [row.secret, row.previousSecret];
  }
  return [row.secret];
}
