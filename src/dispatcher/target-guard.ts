// Keeps webhooks away from loopback, private, link-local and other non-public
// addresses (README, "What a receiver gets"), unless HOOKLINE_ALLOW_PRIVATE_TARGETS=true.
//
// Two checks, because a name's addresses can change between them (DNS rebinding):
//  - TargetGuard.checkUrl, when a subscription is saved: a clear BAD_USER_INPUT;
//  - createGuardedAgent, at delivery time: the undici Agent checks the address it
//    is about to connect to, both for names (through a guarded `lookup`, which
//    net.connect uses to resolve) and for literal IPs (which net.connect
//    connects to without any lookup, so the connector checks them first).
import dns from 'node:dns';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { Agent, buildConnector } from 'undici';
import { badInput } from '../errors.js';
import { validateTargetUrl } from '../webhooks/target-url.js';
import { sharedResolver } from './resolver.js';
import { within } from '../within.js';

export const TARGET_REFUSED = 'HOOKLINE_TARGET_REFUSED' as const;

const REFUSAL_HINT = 'private or internal targets are not allowed (an operator allows them with HOOKLINE_ALLOW_PRIVATE_TARGETS=true)';

/** Thrown (or passed to a connect callback) when a delivery would reach a non-public address. */
export class TargetRefusedError extends Error {
  readonly code = TARGET_REFUSED;
  constructor(
    readonly hostname: string,
    readonly address: string,
    readonly range: string,
  ) {
    super(
      hostname === address
        ? `refusing to connect to ${address}, ${describeRange(range)} address: ${REFUSAL_HINT}`
        : // Not which address: the tenant reads this, and the operator's internal names are not theirs to map.
          `refusing to connect to ${hostname}: it resolves to ${describeRange(range)} address: ${REFUSAL_HINT}`,
    );
    this.name = 'TargetRefusedError';
  }
}

// 2000::/3 is the only IPv6 space IANA allocates as global unicast; ipaddr.js
// calls everything it has no name for "unicast" (e.g. ::7f00:1, the deprecated
// IPv4-compatible form of 127.0.0.1), so outside 2000::/3 we refuse.
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3') as [ipaddr.IPv6, number];
// The well-known NAT64 prefix (RFC 6052): the last 32 bits are an IPv4 address.
const NAT64_WELL_KNOWN = ipaddr.parseCIDR('64:ff9b::/96') as [ipaddr.IPv6, number];

/**
 * Public addresses that answer only inside a cloud's own hosts, as a metadata service does:
 * Azure's platform endpoint (WireServer), which hands a VM its configuration and certificates.
 * (Other clouds' metadata services are link-local, 169.254.169.254, or unique-local, fd00:ec2::254.)
 */
const PLATFORM_ENDPOINTS = new Set(['168.63.129.16']);

function ipv4Range(ip: ipaddr.IPv4): string {
  return PLATFORM_ENDPOINTS.has(ip.toString()) ? 'cloudPlatform' : ip.range();
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/**
 * The ipaddr.js range name of an address ('unicast' for public ones), judging
 * IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses by the IPv4
 * address they carry. 'invalid' for anything that is not an IP literal.
 */
export function classifyAddress(address: string): string {
  const bare = stripBrackets(address.trim());
  // net.isIP accepts only the canonical forms net.connect would treat as literals;
  // ipaddr.js alone would also accept forms like "0x7f000001" or "127.1".
  if (net.isIP(bare) === 0 || !ipaddr.isValid(bare)) return 'invalid';
  const ip = ipaddr.process(bare); // unwraps ::ffff:a.b.c.d to IPv4
  if (ip.kind() === 'ipv4') return ipv4Range(ip as ipaddr.IPv4);
  const v6 = ip as ipaddr.IPv6;
  if (v6.match(NAT64_WELL_KNOWN)) {
    const [, , , , , , hi, lo] = v6.parts as number[];
    return ipv4Range(new ipaddr.IPv4([hi! >> 8, hi! & 0xff, lo! >> 8, lo! & 0xff]));
  }
  const range = v6.range();
  if (range !== 'unicast') return range;
  return v6.match(GLOBAL_UNICAST_V6) ? 'unicast' : 'reserved';
}

/** True only for globally routable unicast addresses. */
export function isPublicAddress(address: string): boolean {
  return classifyAddress(address) === 'unicast';
}

const RANGE_WORDS: Record<string, string> = {
  linkLocal: 'link-local',
  uniqueLocal: 'unique-local',
  carrierGradeNat: 'carrier-grade NAT',
  deprecatedSiteLocal: 'site-local',
  rfc6052: 'NAT64',
  rfc6145: 'IPv4-translated',
  ipv4Mapped: 'IPv4-mapped',
  as112: 'AS112',
  as112v6: 'AS112',
  amt: 'AMT',
  cloudPlatform: 'cloud platform (Azure WireServer)',
  invalid: 'unparseable',
};

/** "a loopback", "an unspecified", "a unique-local", ... */
function describeRange(range: string): string {
  const words = RANGE_WORDS[range] ?? range.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
  const an = /^([aeiou]|AS|AMT|IPv)/i.test(words) && !/^uni(?!n)/i.test(words);
  return `${an ? 'an' : 'a'} ${words}`;
}

/** Throws TargetRefusedError if `hostname` is an IP literal that is not public. Names pass. */
export function checkLiteralHost(hostname: string, allowPrivate: boolean): void {
  if (allowPrivate) return;
  const bare = stripBrackets(hostname);
  if (net.isIP(bare) === 0) return;
  const range = classifyAddress(bare);
  if (range !== 'unicast') throw new TargetRefusedError(bare, bare, range);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;
/** Node's callback `dns.lookup`, in the form net.connect's `lookup` option uses. */
export type CallbackLookup = (hostname: string, options: dns.LookupAllOptions, callback: (err: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]) => void) => void;

/**
 * A `lookup` for net/tls.connect that resolves with `lookup` (default the process's resolver,
 * see resolver.ts) and fails with TargetRefusedError when any address is not public, so the
 * address actually connected to is the one checked.
 */
export function guardedLookup(allowPrivate: boolean, lookup: CallbackLookup = sharedResolver()): net.LookupFunction {
  return (hostname: string, options: dns.LookupOptions | number | LookupCallback, callback?: LookupCallback) => {
    let cb = callback;
    let opts: dns.LookupOptions = {};
    if (typeof options === 'function') cb = options;
    else if (typeof options === 'number') opts = { family: options };
    else if (options) opts = options;
    const done = cb!;
    lookup(hostname, { ...opts, all: true }, (err, addresses) => {
      if (err) return done(err, opts.all ? [] : '');
      if (!addresses || addresses.length === 0) {
        const notFound: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
        notFound.code = 'ENOTFOUND';
        return done(notFound, opts.all ? [] : '');
      }
      if (!allowPrivate) {
        for (const { address } of addresses) {
          const range = classifyAddress(address);
          if (range !== 'unicast') return done(new TargetRefusedError(hostname, address, range), opts.all ? [] : '');
        }
      }
      if (opts.all) return done(null, addresses);
      const first = addresses[0]!;
      return done(null, first.address, first.family);
    });
  };
}

export type GuardedAgentOptions = Omit<Agent.Options, 'connect'> & {
  allowPrivate: boolean;
  /** Options for undici's buildConnector (timeout, TLS, ...); `lookup` and `socketPath` are ours. */
  connect?: Omit<buildConnector.BuildOptions, 'lookup' | 'socketPath'>;
  /** The resolver behind the guard (tests); default the process's (resolver.ts). */
  lookup?: CallbackLookup;
};

/**
 * An undici Agent that refuses to connect to non-public addresses: literal IP
 * hosts are checked before connecting, names are checked after resolution.
 * Redirects, keep-alive reconnects and TLS all go through the same connector.
 */
export function createGuardedAgent(options: GuardedAgentOptions): Agent {
  const { allowPrivate, connect, lookup, ...agentOptions } = options;
  const connector = buildConnector({
    ...(connect ?? {}),
    lookup: guardedLookup(allowPrivate, lookup),
  } as buildConnector.BuildOptions);
  const guarded: buildConnector.connector = (opts, callback) => {
    try {
      checkLiteralHost(opts.hostname, allowPrivate);
    } catch (err) {
      // Fail asynchronously, like a socket error would.
      process.nextTick(() => callback(err as Error, null));
      return;
    }
    connector(opts, callback);
  };
  return new Agent({ ...agentOptions, connect: guarded });
}

/** Headers of an answer read, at most: as much as its body's (sender.ts), not Node's 16 KiB. */
export const MAX_ANSWER_HEADER_BYTES = 64 * 1024;

/**
 * How long an idle connection to a receiver is kept, when its answers name no `Keep-Alive:
 * timeout` (undici's default): below the idle timeouts of common servers that send none
 * (uvicorn's 5 s), so that Hookline lets a connection go before the receiver does. One closed
 * by the receiver just as a delivery is written on it fails that attempt (undici sends a POST
 * once), with `UND_ERR_SOCKET: other side closed`, to an endpoint that is up.
 */
export const IDLE_CONNECTION_MS = 4_000;

/** The dispatcher's Agent: the guard, and how it keeps and reads connections to receivers. */
export function deliveryAgent(allowPrivate: boolean, deliveryTimeoutMs: number, lookup?: CallbackLookup): Agent {
  return createGuardedAgent({
    allowPrivate,
    lookup,
    // No limit per origin: the dispatcher's shares bound what is sent at once, and a request
    // queued in the pool would spend its attempt's timeout before it was even sent
    // (several subscriptions, of several tenants, may share one host).
    connections: null,
    keepAliveTimeout: IDLE_CONNECTION_MS,
    keepAliveMaxTimeout: 120_000,
    // A 2xx with large headers (cookies, a long policy) is an answer, not a failed attempt.
    maxHeaderSize: MAX_ANSWER_HEADER_BYTES,
    connect: { timeout: Math.min(deliveryTimeoutMs, 10_000) },
  });
}

export type PromiseLookup = (hostname: string, options: { all: true }) => Promise<dns.LookupAddress[]>;

function promiseLookup(lookup: CallbackLookup): PromiseLookup {
  return (hostname, options) =>
    new Promise((resolve, reject) => lookup(hostname, options, (err, addresses) => (err ? reject(err) : resolve(addresses))));
}

export interface TargetGuardOptions {
  allowPrivate: boolean;
  /** Resolver for host names; default the process's (resolver.ts). */
  lookup?: PromiseLookup;
  /** How long the save-time look-up may take before the name is accepted unchecked (ms); default 3,000. */
  lookupTimeoutMs?: number;
}

/** The save-time check: validates a target URL and the addresses its host resolves to now. */
export class TargetGuard {
  readonly allowPrivate: boolean;
  private readonly lookup: PromiseLookup;
  private readonly lookupTimeoutMs: number;

  constructor(opts: TargetGuardOptions) {
    this.allowPrivate = opts.allowPrivate;
    this.lookup = opts.lookup ?? promiseLookup(sharedResolver());
    this.lookupTimeoutMs = opts.lookupTimeoutMs ?? 3_000;
  }

  /**
   * Throws BAD_USER_INPUT (naming `field`) for a malformed URL, or a host any of whose
   * addresses is not public (unless private targets are allowed). A name that does not
   * resolve now is accepted: it may tomorrow (a receiver not deployed yet, a resolver down
   * for a moment, a machine with no DNS, where the guide's Test 1 script must still run), and
   * whatever it resolves to is checked again at each connection; attempts fail meanwhile,
   * on the retry schedule, with the resolver's error. So is one whose DNS is slower than
   * lookupTimeoutMs to answer, for the same reasons.
   */
  async checkUrl(url: URL | string, field = 'url'): Promise<void> {
    const parsed = validateTargetUrl(typeof url === 'string' ? url : url.href, field);
    const host = stripBrackets(parsed.hostname);
    if (net.isIP(host) !== 0) {
      if (this.allowPrivate) return;
      const range = classifyAddress(host);
      if (range !== 'unicast') throw badInput(field, `host ${host} is ${describeRange(range)} address: ${REFUSAL_HINT}`);
      return;
    }
    if (this.allowPrivate) return;
    let addresses: dns.LookupAddress[];
    try {
      addresses = await within(this.lookup(host, { all: true }), this.lookupTimeoutMs, 'timed out');
    } catch {
      return;
    }
    for (const { address } of addresses) {
      const range = classifyAddress(address);
      if (range !== 'unicast') {
        // Not which address (see TargetRefusedError).
        throw badInput(field, `host "${host}" resolves to ${describeRange(range)} address: ${REFUSAL_HINT}`);
      }
    }
  }
}
