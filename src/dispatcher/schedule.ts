// When the next attempt is due after a failure: the configured schedule with
// ±20% jitter, or the receiver's Retry-After (429/503) kept within 1× to 2× of
// the scheduled delay, and spread over the 20% after it.

export const JITTER = 0.2;

/** Parses Retry-After (seconds or an HTTP date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (!value) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export type NextStep = { kind: 'retry'; delayMs: number } | { kind: 'exhausted' };

/**
 * @param schedule delays between attempts (HOOKLINE_RETRY_SCHEDULE)
 * @param failedAttempts attempts made since the schedule (re)started, this one included
 */
export function nextAttempt(
  schedule: readonly number[],
  failedAttempts: number,
  retryAfterMs?: number,
  random: () => number = Math.random,
): NextStep {
  const base = schedule[failedAttempts - 1];
  if (base === undefined) return { kind: 'exhausted' };
  if (retryAfterMs !== undefined) {
    // Never before the receiver asked, nor before the schedule's delay; and spread, as the
    // schedule's own retries are: a receiver throttling a burst at once (`Retry-After: 1`, or
    // the same date for all) would otherwise have all of it back at the same moment.
    const wanted = Math.max(retryAfterMs, base) * (1 + random() * JITTER);
    return { kind: 'retry', delayMs: Math.round(Math.min(wanted, 2 * base)) };
  }
  const jitter = 1 + (random() * 2 - 1) * JITTER;
  return { kind: 'retry', delayMs: Math.round(base * jitter) };
}
