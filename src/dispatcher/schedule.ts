// When the next attempt is due after a failure: the configured schedule with
// ±20% jitter, or the receiver's Retry-After (429/503) kept within 1× to 2× of
// the scheduled delay, and spread by 20% (see nextAttempt).

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
    // Spread, as the schedule's own retries are: a receiver throttling a burst at once
    // (`Retry-After: 1`, 60, or the same date for all) would otherwise have all of it back at
    // the same moment. Over the 20% after the time asked for (or the schedule's delay, if
    // later), up to the 2× cap; where the time asked for is at or past the cap (which is then
    // earlier than asked anyway), over the 20% below the cap.
    const wanted = Math.max(retryAfterMs, base);
    const latest = Math.min(wanted * (1 + JITTER), 2 * base);
    const earliest = wanted < 2 * base ? wanted : latest / (1 + JITTER);
    return { kind: 'retry', delayMs: Math.round(earliest + random() * (latest - earliest)) };
  }
  const jitter = 1 + (random() * 2 - 1) * JITTER;
  return { kind: 'retry', delayMs: Math.round(base * jitter) };
}
