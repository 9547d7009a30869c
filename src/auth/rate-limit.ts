// A token bucket per API key, so one tenant's burst cannot take a process's
// capacity from the others; and one per client address for what comes without a
// valid key, so nobody can make the API look up keys (or answer introspection)
// without end. Each process keeps its own buckets: with N API processes behind a
// balancer a key gets up to N times the rate.
import ipaddr from 'ipaddr.js';
import { ErrorCode, HooklineError } from '../errors.js';

export class RateLimitedError extends HooklineError {
  constructor(
    readonly perSecond: number,
    readonly retryAfterSeconds: number,
    what = 'this API key',
  ) {
    super(ErrorCode.RATE_LIMITED, `rate limit of ${perSecond} requests per second for ${what} exceeded; retry after ${retryAfterSeconds} s`);
  }
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  /**
   * @param perSecond sustained rate per key; bursts of up to one second's worth pass. 0 turns it off.
   * @param what whose rate it is, as its error says.
   */
  constructor(
    readonly perSecond: number,
    private readonly what = 'this API key',
  ) {}

  /** Takes one token for the key, or throws RateLimitedError. */
  take(key: string, now = performance.now()): void {
    const bucket = this.check(key, now);
    if (bucket) bucket.tokens -= 1;
  }

  /** Gives back a token taken (a key lookup that found a valid key). */
  giveBack(key: string): void {
    const bucket = this.buckets.get(key);
    if (bucket) bucket.tokens = Math.min(this.perSecond, bucket.tokens + 1);
  }

  /** Throws RateLimitedError if the key has no token left, taking none. */
  check(key: string, now = performance.now()): { tokens: number } | undefined {
    if (!this.perSecond) return undefined;
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= 100_000) this.buckets.clear();
      this.buckets.set(key, (bucket = { tokens: this.perSecond, at: now }));
    } else {
      bucket.tokens = Math.min(this.perSecond, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
      bucket.at = now;
    }
    if (bucket.tokens < 1) {
      throw new RateLimitedError(this.perSecond, Math.max(1, Math.ceil((1 - bucket.tokens) / this.perSecond)), this.what);
    }
    return bucket;
  }
}

/**
 * The bucket of a client address: an IPv4 address, or an IPv6 address's /64 (what one
 * household or host is usually given, and can pick any address of).
 */
export function addressKey(address: string | undefined): string {
  if (!address) return 'unknown';
  try {
    let parsed = ipaddr.parse(address);
    if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) parsed = (parsed as ipaddr.IPv6).toIPv4Address();
    if (parsed.kind() === 'ipv4') return parsed.toString();
    return `${(parsed as ipaddr.IPv6).parts.slice(0, 4).map((part) => part.toString(16)).join(':')}::/64`;
  } catch {
    return address;
  }
}

/** What resolveViewer asks of a client address's limit (see resolveViewer). */
export interface AddressLimit {
  /** Counts a request without a valid key, or a key lookup about to be made; RateLimitedError past the rate. */
  take(): void;
  /** Gives back what a lookup took once it found a valid key. */
  giveBack(): void;
}

/** The limit of one client's address; its key is worked out only if asked (a key known to the process never is). */
export function addressLimit(limiter: RateLimiter, address: string | undefined): AddressLimit {
  return { take: () => limiter.take(addressKey(address)), giveBack: () => limiter.giveBack(addressKey(address)) };
}
