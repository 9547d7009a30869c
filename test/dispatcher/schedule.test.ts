// When the next attempt falls due: the schedule with ±20% jitter, Retry-After
// kept within 1x to 2x of the scheduled delay, and the end of the schedule.
import { describe, expect, it } from 'vitest';
import { nextAttempt, parseRetryAfter } from '../../src/dispatcher/schedule.js';

const SCHEDULE = [5_000, 300_000, 1_800_000];

describe('nextAttempt', () => {
  it('follows the schedule with at most 20% jitter either way', () => {
    expect(nextAttempt(SCHEDULE, 1, undefined, () => 0)).toEqual({ kind: 'retry', delayMs: 4_000 });
    expect(nextAttempt(SCHEDULE, 1, undefined, () => 1)).toEqual({ kind: 'retry', delayMs: 6_000 });
    expect(nextAttempt(SCHEDULE, 2, undefined, () => 0.5)).toEqual({ kind: 'retry', delayMs: 300_000 });
    for (let i = 0; i < 200; i++) {
      const step = nextAttempt(SCHEDULE, 3);
      expect(step.kind).toBe('retry');
      if (step.kind === 'retry') {
        expect(step.delayMs).toBeGreaterThanOrEqual(1_440_000);
        expect(step.delayMs).toBeLessThanOrEqual(2_160_000);
      }
    }
  });

  it('is exhausted after the last delay', () => {
    expect(nextAttempt(SCHEDULE, 4)).toEqual({ kind: 'exhausted' });
    expect(nextAttempt([], 1)).toEqual({ kind: 'exhausted' });
  });

  it('honours Retry-After within 1x to 2x of the scheduled delay, spread over the 20% after it', () => {
    expect(nextAttempt(SCHEDULE, 1, 7_000, () => 0)).toEqual({ kind: 'retry', delayMs: 7_000 });
    expect(nextAttempt(SCHEDULE, 1, 7_000, () => 1)).toEqual({ kind: 'retry', delayMs: 8_400 });
    expect(nextAttempt(SCHEDULE, 1, 1_000, () => 0)).toEqual({ kind: 'retry', delayMs: 5_000 });
    expect(nextAttempt(SCHEDULE, 1, 1_000, () => 0.5)).toEqual({ kind: 'retry', delayMs: 5_500 });
    // Below the 2x cap, never earlier than asked: the spread narrows to the cap.
    expect(nextAttempt(SCHEDULE, 1, 9_000, () => 1)).toEqual({ kind: 'retry', delayMs: 10_000 });
    expect(nextAttempt(SCHEDULE, 1, 9_000, () => 0)).toEqual({ kind: 'retry', delayMs: 9_000 });
    // At or past the cap (earlier than asked anyway), the 20% below it.
    expect(nextAttempt(SCHEDULE, 1, 3_600_000, () => 0)).toEqual({ kind: 'retry', delayMs: 8_333 });
    expect(nextAttempt(SCHEDULE, 1, 3_600_000, () => 1)).toEqual({ kind: 'retry', delayMs: 10_000 });
    // A burst throttled with one Retry-After comes back spread out, whatever it asked for.
    const spread = (retryAfter: number) => Array.from({ length: 200 }, () => (nextAttempt(SCHEDULE, 1, retryAfter) as { delayMs: number }).delayMs);
    for (const [retryAfter, low, high] of [[1_000, 5_000, 6_000], [7_000, 7_000, 8_400], [9_000, 9_000, 10_000], [10_000, 8_333, 10_000], [60_000, 8_333, 10_000]] as const) {
      const delays = spread(retryAfter);
      expect(Math.min(...delays), String(retryAfter)).toBeGreaterThanOrEqual(low);
      expect(Math.max(...delays), String(retryAfter)).toBeLessThanOrEqual(high);
      expect(new Set(delays).size, String(retryAfter)).toBeGreaterThan(100);
    }
  });
});

describe('parseRetryAfter', () => {
  it('reads seconds and HTTP dates, and ignores anything else', () => {
    const now = Date.parse('2024-02-14T10:30:00Z');
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('Wed, 14 Feb 2024 10:31:00 GMT', now)).toBe(60_000);
    expect(parseRetryAfter('Wed, 14 Feb 2024 10:29:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});
