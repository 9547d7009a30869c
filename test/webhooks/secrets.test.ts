// What a rotation leaves signing, whatever the clocks of the processes that rotated before.
import { expect, it } from 'vitest';
import { ROTATION_GRACE_MS, retireSecret, signingSecrets, type SecretsRow } from '../../src/webhooks/secrets.js';

const HOUR = 60 * 60 * 1000;

/** Rotates `row` to `next` at `at`, as rotateSecret does. */
function rotate(row: SecretsRow, next: string, at: number): SecretsRow {
  return { ...row, ...retireSecret(row, next, new Date(at)), secret: next };
}

it('keeps the secret just replaced signing for 24 hours, also after rotations by a process whose clock ran ahead', () => {
  const now = Date.parse('2026-11-29T12:00:00Z');
  let row: SecretsRow = { secret: 's00', previousSecret: null, previousSecretExpiresAt: null, earlierSecrets: null };
  // Ten rotations by a process 10 minutes ahead, then one by a process on time.
  for (let i = 1; i <= 10; i++) row = rotate(row, `s${String(i).padStart(2, '0')}`, now + 10 * 60 * 1000);
  row = rotate(row, 's11', now);
  expect(row.previousSecret).toBe('s10');
  expect(row.previousSecretExpiresAt).toEqual(new Date(now + ROTATION_GRACE_MS));
  const signing = signingSecrets(row, new Date(now + HOUR));
  expect(signing.slice(0, 2)).toEqual(['s11', 's10']);
  expect(signing).toHaveLength(11); // the newest and the ten replaced last
  expect(signing).not.toContain('s00'); // the oldest one's grace ended early
  // s10's day ends first; the others' (replaced by the clock ahead) 10 minutes later.
  expect(signingSecrets(row, new Date(now + ROTATION_GRACE_MS + 1))).not.toContain('s10');
  expect(signingSecrets(row, new Date(now + ROTATION_GRACE_MS + 10 * 60 * 1000 + 1))).toEqual(['s11']);
});
