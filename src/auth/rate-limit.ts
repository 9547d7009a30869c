// A token bucket per API key, so one tenant's burst cannot take a process's
// capacity from the others. Each process keeps its own buckets: with N API
// processes behind a balancer a key gets up to N times the rate.
import { ErrorCode, HooklineError } from '../errors.js';

export class RateLimitedError extends HooklineError {
  constructor(
    readonly perSecond: number,
    readonly retryAfterSeconds: number,
  ) {
    super(ErrorCode.RATE_LIMITED, `rate limit of ${perSecond} requests per second for this API key exceeded; retry after ${retryAfterSeconds} s`);
  }
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  /** @param perSecond sustained rate per key; bursts of up to one second's worth pass. 0 turns it off. */
  constructor(readonly perSecond: number) {}

  /** Takes one token for the key, or throws RateLimitedError. */
  take(key: string, now = performance.now()): void {
    if (!this.perSecond) return;
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= 100_000) this.buckets.clear();
      this.buckets.set(key, (bucket = { tokens: this.perSecond, at: now }));
    } else {
      bucket.tokens = Math.min(this.perSecond, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
      bucket.at = now;
    }
    if (bucket.tokens < 1) {
      throw new RateLimitedError(this.perSecond, Math.max(1, Math.ceil((1 - bucket.tokens) / this.perSecond)));
    }
    bucket.tokens -= 1;
  }
}
