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

/** A secret replaced before a subscription's previous one, signing until `expiresAt` (ISO 8601). */
export interface EarlierSecret {
  secret: string;
  expiresAt: string;
}

/** What of a subscription signs: its secret, and those replaced within the last 24 hours. */
export interface SecretsRow {
  secret: string;
  previousSecret: string | null;
  previousSecretExpiresAt: Date | null;
  earlierSecrets?: EarlierSecret[] | null;
}

/**
 * A subscription `s`'s earlier secrets as the dispatcher reads them: none once the previous
 * secret's 24 hours are over, as theirs are then too (the previous one was replaced last), so
 * a list left by the last rotation is not read and parsed for every delivery after.
 */
export const EARLIER_SECRETS = 'case when s.previous_secret_expires_at > now() then s.earlier_secrets end';

/** Secrets replaced within 24 hours that one subscription keeps signing with, at most. */
export const MAX_RETIRED_SECRETS = 10;

/** The secrets that sign now: the newest first, then each one replaced less than 24 hours ago, newest first. */
export function signingSecrets(row: SecretsRow, now: Date): string[] {
  const secrets = [row.secret];
  if (row.previousSecret && row.previousSecretExpiresAt && row.previousSecretExpiresAt > now && row.previousSecret !== row.secret) {
    secrets.push(row.previousSecret);
  }
  if (row.earlierSecrets) {
    for (const { secret, expiresAt } of row.earlierSecrets) {
      if (Date.parse(expiresAt) > now.getTime() && !secrets.includes(secret)) secrets.push(secret);
    }
  }
  return secrets;
}

/**
 * What a rotation to `next` leaves signing beside it: the secret it replaces for 24 hours,
 * and every one replaced before whose 24 hours still run (a second rotation within the day,
 * a retried one, keeps the promise made by the first), at most MAX_RETIRED_SECRETS: beyond,
 * the one whose 24 hours end first stops early (a rotation is never refused: it may be the
 * way out of a leaked secret). `next` itself is not among them.
 */
export function retireSecret(row: SecretsRow, next: string, now: Date): Omit<SecretsRow, 'secret'> {
  const retired: Array<{ secret: string; expiresAt: Date }> = [{ secret: row.secret, expiresAt: new Date(now.getTime() + ROTATION_GRACE_MS) }];
  const keep = (secret: string, expiresAt: Date) => {
    if (expiresAt > now && secret !== next && !retired.some((r) => r.secret === secret)) retired.push({ secret, expiresAt });
  };
  if (row.previousSecret && row.previousSecretExpiresAt) keep(row.previousSecret, row.previousSecretExpiresAt);
  for (const earlier of row.earlierSecrets ?? []) keep(earlier.secret, new Date(earlier.expiresAt));
  // The one replaced now is the previous one whatever the clocks said before (a rotation by a
  // process whose clock ran ahead); of the others, those whose 24 hours end last are kept.
  const [previous, ...others] = retired;
  const earlier = others.sort((a, b) => b.expiresAt.getTime() - a.expiresAt.getTime()).slice(0, MAX_RETIRED_SECRETS - 1);
  return {
    previousSecret: previous!.secret,
    previousSecretExpiresAt: previous!.expiresAt,
    earlierSecrets: earlier.length ? earlier.map((e) => ({ secret: e.secret, expiresAt: e.expiresAt.toISOString() })) : null,
  };
}
