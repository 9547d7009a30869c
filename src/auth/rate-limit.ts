// A token bucket per API key, so one tenant's burst cannot take a process's
// capacity from the others; and one per client address for what comes without a
// valid key, so nobody can make the API look up keys (or answer introspection)
// without end. Each process keeps its own buckets: with N API processes behind a
// balancer a key gets up to N times the rate.
import type { IncomingMessage } from 'node:http';
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

/** A token bucket: `tokens` left as of `at` (performance.now()). */
export interface TokenBucket {
  tokens: number;
  at: number;
}

/** Refills `bucket` up to `now` at `perSecond`, holding a second's worth at most. */
export function refill(bucket: TokenBucket, perSecond: number, now: number): TokenBucket {
  bucket.tokens = Math.min(perSecond, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
  bucket.at = now;
  return bucket;
}

export class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private refusals?: { inc(): void };

  /**
   * @param perSecond sustained rate per key; bursts of up to one second's worth pass. 0 turns it off.
   * @param what whose rate it is, as its error says.
   */
  constructor(
    readonly perSecond: number,
    private readonly what = 'this API key',
  ) {}

  /** Counts each refusal in `counter` (a metric). */
  countRefusalsIn(counter: { inc(): void }): void {
    this.refusals = counter;
  }

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
      refill(bucket, this.perSecond, now);
    }
    if (bucket.tokens < 1) {
      this.refusals?.inc();
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

/** Proxies whose X-Forwarded-For is believed: address ranges (HOOKLINE_TRUSTED_PROXIES). */
export type TrustedProxies = ReadonlyArray<[ipaddr.IPv4 | ipaddr.IPv6, number]>;

/**
 * Parses `10.0.0.0/8, 192.0.2.7, fd00::/8`; throws naming the entry that is none. An IPv4
 * address is taken only as four decimal parts: ipaddr.js also reads the old short forms, which
 * mean other addresses than they seem to (`172.16/12` is 172.0.0.16/12, `10` is 0.0.0.10).
 */
export function parseTrustedProxies(text: string): TrustedProxies {
  if (text === '') return [];
  return text.split(',').map((raw) => {
    const entry = raw.trim();
    if (!entry) throw new Error(`"${text}" has an empty entry: give addresses or ranges separated by commas, e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8`);
    const [address = '', bits] = entry.split('/');
    const fourParts = ipaddr.IPv4.isValidFourPartDecimal(address);
    try {
      if (!fourParts && !ipaddr.IPv6.isValid(address)) throw new Error('not an address');
      const [range, length] = bits !== undefined ? ipaddr.parseCIDR(entry) : [ipaddr.parse(address), fourParts ? 32 : 128];
      // An IPv4-mapped entry (::ffff:10.0.0.1) as the IPv4 address it stands for: trusted() reads
      // a request's mapped address so, and an IPv6 range would never match it.
      if (range.kind() === 'ipv6' && (range as ipaddr.IPv6).isIPv4MappedAddress() && length >= 96) {
        return [(range as ipaddr.IPv6).toIPv4Address(), length - 96] as [ipaddr.IPv4, number];
      }
      return [range, length] as [ipaddr.IPv4 | ipaddr.IPv6, number];
    } catch {
      const hint = /^[\d.]+$/.test(address) && !fourParts ? ' (an IPv4 address needs its four parts: 172.16.0.0/12, not 172.16/12)' : '';
      throw new Error(`"${entry}" is not an address or a range like 10.0.0.0/8${hint}`);
    }
  });
}

/** Whether `address` is one of the trusted proxies. */
export function trusted(address: string, proxies: TrustedProxies): boolean {
  if (!ipaddr.isValid(address)) return false;
  const parsed = ipaddr.process(address); // an IPv4-mapped IPv6 address as IPv4
  return proxies.some(([range, bits]) => range.kind() === parsed.kind() && parsed.match(range as never, bits));
}

/**
 * Where a request comes from: its socket's address, or, when that is a trusted proxy, the
 * last address of X-Forwarded-For that is not one (what a trusted proxy appended; what a
 * client wrote to the left of it is not believed).
 */
export function clientAddress(req: IncomingMessage | undefined, proxies: TrustedProxies): string | undefined {
  let address = req?.socket?.remoteAddress;
  if (!address || !proxies.length || !trusted(address, proxies)) return address;
  const header = req!.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',').map((hop) => hop.trim()).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = bareAddress(hops[i]!);
    // Not an address (`unknown`, garbage): counted against the proxy that passed it on.
    if (!hop) return address;
    address = hop;
    if (!trusted(address, proxies)) return address;
  }
  return address;
}

/** An X-Forwarded-For entry's address without a port or brackets (`203.0.113.7:51234`, `[2001:db8::1]:443`), or undefined. */
function bareAddress(hop: string): string | undefined {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  const withPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(hop);
  const address = bracketed?.[1] ?? withPort?.[1] ?? hop;
  return ipaddr.isValid(address) ? address : undefined;
}

/** Per-address limits of requests without a valid key (HOOKLINE_RATE_LIMIT_ANONYMOUS), behind the trusted proxies. */
export class AddressLimiter {
  private readonly limiter: RateLimiter;

  constructor(
    perSecond: number,
    private readonly proxies: TrustedProxies = [],
  ) {
    this.limiter = new RateLimiter(perSecond, 'requests without a valid API key and key lookups from this address');
  }

  countRefusalsIn(counter: { inc(): void }): void {
    this.limiter.countRefusalsIn(counter);
  }

  /** The limit of one request's client; its address is worked out only if asked (a key known to the process never is). */
  of(req: IncomingMessage | undefined): AddressLimit {
    let key: string | undefined;
    const bucket = () => (key ??= addressKey(clientAddress(req, this.proxies)));
    return { take: () => this.limiter.take(bucket()), giveBack: () => this.limiter.giveBack(bucket()) };
  }
}
