// Name resolution for deliveries and for the save-time check, kept off libuv's thread pool.
//
// dns.lookup (getaddrinfo) runs on the thread pool, 4 threads by default. A tenant whose
// target's DNS never answers holds a thread until the system resolver gives up (10-30 s), so
// a few such attempts stalled every other tenant's connections (and fs, crypto and zlib in the
// same process). Names are asked of DNS directly instead (c-ares, asynchronous, with a
// timeout), and only a name DNS answers it does not know as written (one from /etc/hosts, one
// that needs a search domain) falls back to dns.lookup, a few at a time.
import dns from 'node:dns';
import type { CallbackLookup } from './target-guard.js';

export interface ResolverOptions {
  /** DNS servers ('address' or 'address:port'); default the system's (/etc/resolv.conf). */
  servers?: string[];
  /** The first try's timeout (ms; c-ares doubles it on each retry); default 2,000. */
  timeoutMs?: number;
  /** Tries per server; default 2 (with the default timeout, about 6 s before a server is given up). */
  tries?: number;
  /** The fallback for names DNS does not know as written; default dns.lookup. */
  fallback?: CallbackLookup;
  /** Fallback lookups at once (each may hold a thread of the pool); default 2 of its 4. */
  fallbackConcurrency?: number;
  /** How long a fallback lookup may wait for its turn (ms); default 10,000. */
  fallbackWaitMs?: number;
}

type Address = dns.LookupAddress;

/** DNS's answers for a name it does not have (or has no record of that family for). */
const UNKNOWN_NAME = new Set(['ENOTFOUND', 'ENODATA']);

function lookupError(code: string, hostname: string, message = `${code} ${hostname}`): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException & { hostname?: string } = new Error(message);
  error.code = code;
  error.hostname = hostname;
  return error;
}

/** RFC 6761: localhost and names under it are loopback, and are never asked of DNS. */
function localhostAddresses(hostname: string): Address[] | null {
  const name = hostname.toLowerCase().replace(/\.$/, '');
  if (name !== 'localhost' && !name.endsWith('.localhost')) return null;
  return [
    { address: '127.0.0.1', family: 4 },
    { address: '::1', family: 6 },
  ];
}

/** A queue that lets `limit` tasks run at once; a task not started within `waitMs` fails. */
class Turns {
  private running = 0;
  private readonly waiting: Array<{ start(): void }> = [];

  constructor(
    private readonly limit: number,
    private readonly waitMs: number,
  ) {}

  run(task: (done: () => void) => void, onTimeout: () => void): void {
    const entry = {
      start: () => {
        clearTimeout(timer);
        this.running += 1;
        let finished = false;
        task(() => {
          if (finished) return;
          finished = true;
          this.running -= 1;
          this.waiting.shift()?.start();
        });
      },
    };
    let timer: NodeJS.Timeout | undefined;
    if (this.running < this.limit) return entry.start();
    timer = setTimeout(() => {
      const index = this.waiting.indexOf(entry);
      if (index >= 0) this.waiting.splice(index, 1);
      onTimeout();
    }, this.waitMs);
    timer.unref();
    this.waiting.push(entry);
  }
}

/**
 * A `lookup` in dns.lookup's callback form (what net.connect and TargetGuard use) that asks
 * DNS directly: A and AAAA records at once (or the one family asked for), IPv4 first.
 */
export function createResolver(options: ResolverOptions = {}): CallbackLookup {
  const resolver = new dns.promises.Resolver({ timeout: options.timeoutMs ?? 2_000, tries: options.tries ?? 2 });
  if (options.servers) resolver.setServers(options.servers);
  const fallback = options.fallback ?? (dns.lookup as unknown as CallbackLookup);
  const turns = new Turns(options.fallbackConcurrency ?? 2, options.fallbackWaitMs ?? 10_000);

  const fallBack = (hostname: string, family: number, callback: (err: NodeJS.ErrnoException | null, addresses: Address[]) => void) =>
    turns.run(
      (done) =>
        fallback(hostname, { all: true, family }, (err, addresses) => {
          done();
          callback(err, err ? [] : addresses);
        }),
      () => callback(lookupError('ETIMEOUT', hostname, `lookup of ${hostname} waited too long for its turn`), []),
    );

  return (hostname, lookupOptions, callback) => {
    const family = lookupOptions.family === 4 || lookupOptions.family === 'IPv4' ? 4 : lookupOptions.family === 6 || lookupOptions.family === 'IPv6' ? 6 : 0;
    const local = localhostAddresses(hostname);
    if (local) {
      const addresses = local.filter((a) => family === 0 || a.family === family);
      process.nextTick(() => callback(null, addresses));
      return;
    }
    const queries: Array<Promise<Address[]>> = [];
    if (family !== 6) queries.push(resolver.resolve4(hostname).then((list) => list.map((address) => ({ address, family: 4 }))));
    if (family !== 4) queries.push(resolver.resolve6(hostname).then((list) => list.map((address) => ({ address, family: 6 }))));
    void Promise.allSettled(queries).then((results) => {
      const addresses = results.flatMap((result) => (result.status === 'fulfilled' ? result.value : []));
      if (addresses.length > 0) return callback(null, addresses);
      const failure = results
        .map((result) => (result.status === 'rejected' ? (result.reason as NodeJS.ErrnoException) : null))
        .find((error) => error && !UNKNOWN_NAME.has(error.code ?? ''));
      // DNS failed (timed out, refused...): that is the answer, and the thread pool is spared.
      if (failure) return callback(failure, []);
      // DNS answered that it does not know the name as written: the system's resolver (hosts
      // file, search domains), a few at a time.
      fallBack(hostname, family, callback);
    });
  };
}

let shared: CallbackLookup | undefined;

/** The process's resolver (one queue of fallback lookups for the whole process). */
export function sharedResolver(): CallbackLookup {
  shared ??= createResolver();
  return shared;
}
