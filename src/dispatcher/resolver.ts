// Name resolution for deliveries and for the save-time check, kept off libuv's thread pool.
//
// dns.lookup (getaddrinfo) runs on the thread pool, 4 threads by default. A tenant whose
// target's DNS never answers holds a thread until the system resolver gives up (10-30 s), so
// a few such attempts stalled every other tenant's connections (and fs, crypto and zlib in the
// same process). Names are looked up as getaddrinfo would ("files dns"), without it: in the
// hosts file first (read here), then asked of DNS directly (c-ares, asynchronous, with a
// timeout); only a name DNS answers it does not know as written (one that needs a search
// domain, or another source of the system's) falls back to dns.lookup, a few at a time.
import dns from 'node:dns';
import { readFileSync, statSync } from 'node:fs';
import net from 'node:net';
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
  /** The hosts file; default /etc/hosts. */
  hostsFile?: string;
}

/** Once one family's addresses are in, how long the other's query is waited for (ms), as Happy Eyeballs does. */
const OTHER_FAMILY_GRACE_MS = 300;
/** How often the hosts file is checked for changes, at most (ms). */
const HOSTS_CHECK_MS = 1_000;
/**
 * A hosts file larger than this is not read here (a blocklist of hundreds of thousands of
 * names would stall every delivery for the second its parse takes, and hold a map of them):
 * its names go to DNS, and those DNS does not know to the system's resolver, which reads it.
 */
export const MAX_HOSTS_BYTES = 1024 * 1024;

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

/**
 * The hosts file's names and their addresses, in the file's order; read again when it
 * changes (checked at most once a second). A file that cannot be read holds no names.
 */
class HostsFile {
  private names = new Map<string, Address[]>();
  private checkedAt = -Infinity;
  private version = '';

  constructor(private readonly path: string) {}

  addresses(hostname: string): Address[] | undefined {
    this.refresh();
    return this.names.get(hostname.toLowerCase().replace(/\.$/, ''));
  }

  private refresh(): void {
    const now = performance.now();
    if (now - this.checkedAt < HOSTS_CHECK_MS) return;
    this.checkedAt = now;
    let version: string;
    let size = 0;
    try {
      const stat = statSync(this.path);
      size = stat.size;
      version = `${stat.mtimeMs}:${stat.size}:${stat.ino}`;
    } catch {
      version = 'none';
    }
    if (version === this.version) return;
    this.version = version;
    const names = new Map<string, Address[]>();
    let text = '';
    try {
      if (size <= MAX_HOSTS_BYTES) text = readFileSync(this.path, 'utf8');
    } catch {
      // no file: no names
    }
    for (const line of text.split('\n')) {
      const [address, ...hostnames] = line.replace(/#.*/, '').trim().split(/\s+/);
      const family = address ? net.isIP(address) : 0;
      if (family === 0) continue;
      for (const name of hostnames) {
        const key = name.toLowerCase().replace(/\.$/, '');
        const list = names.get(key) ?? [];
        if (!list.some((a) => a.address === address)) list.push({ address: address!, family });
        names.set(key, list);
      }
    }
    this.names = names;
  }
}

/**
 * The answers of the queries, once all are in, or once one has addresses and the others have
 * had OTHER_FAMILY_GRACE_MS more (a server that never answers AAAA would hold a known A
 * record back for its whole timeout). Results not in by then count as not found.
 */
function gather(queries: Array<Promise<Address[]>>): Promise<Array<PromiseSettledResult<Address[]>>> {
  return new Promise((resolve) => {
    const results: Array<PromiseSettledResult<Address[]> | undefined> = queries.map(() => undefined);
    let pending = queries.length;
    let grace: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(grace);
      resolve(results.map((result) => result ?? { status: 'rejected', reason: lookupError('ENODATA', '') }));
    };
    queries.forEach((query, i) =>
      query.then(
        (value) => (results[i] = { status: 'fulfilled', value }),
        (reason: unknown) => (results[i] = { status: 'rejected', reason }),
      ).then(() => {
        pending -= 1;
        if (pending === 0) return done();
        const answered = results[i];
        if (!grace && answered?.status === 'fulfilled' && answered.value.length > 0) grace = setTimeout(done, OTHER_FAMILY_GRACE_MS);
      }),
    );
  });
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
  const hosts = new HostsFile(options.hostsFile ?? '/etc/hosts');

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
    // The hosts file first, as the system's resolver does; a name there is not asked of DNS
    // (for the family asked: one listed for the other only is).
    const listed = hosts.addresses(hostname)?.filter((a) => family === 0 || a.family === family);
    if (listed?.length) {
      process.nextTick(() => callback(null, listed));
      return;
    }
    const queries: Array<Promise<Address[]>> = [];
    if (family !== 6) queries.push(resolver.resolve4(hostname).then((list) => list.map((address) => ({ address, family: 4 }))));
    if (family !== 4) queries.push(resolver.resolve6(hostname).then((list) => list.map((address) => ({ address, family: 6 }))));
    void gather(queries).then((results) => {
      const addresses = results.flatMap((result) => (result.status === 'fulfilled' ? result.value : []));
      if (addresses.length > 0) return callback(null, addresses);
      const failure = results
        .map((result) => (result.status === 'rejected' ? (result.reason as NodeJS.ErrnoException) : null))
        .find((error) => error && !UNKNOWN_NAME.has(error.code ?? ''));
      // DNS failed (timed out, refused...): that is the answer, and the thread pool is spared.
      if (failure) return callback(failure, []);
      // DNS answered that it does not know the name as written: the system's resolver (search
      // domains, its other sources), a few at a time.
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
