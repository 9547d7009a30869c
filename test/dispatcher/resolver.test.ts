// Name resolution off the thread pool: a DNS server on loopback that answers some names, says
// NXDOMAIN to others and never answers names under hang.test, with real deliveries beside it.
import crypto from 'node:crypto';
import type dns from 'node:dns';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createResolver, MAX_HOSTS_BYTES } from '../../src/dispatcher/resolver.js';
import { Sender } from '../../src/dispatcher/sender.js';
import { createGuardedAgent, TargetGuard, type CallbackLookup } from '../../src/dispatcher/target-guard.js';
import { decodeSecrets } from '../../src/signing/standard-webhooks.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';

let dnsServer: DnsServer;

beforeAll(async () => {
  dnsServer = await startDnsServer({
    'receiver.test': ['127.0.0.1'],
    'dual.test': ['93.184.216.34', '2606:2800:220:1::1'],
    'private.test': ['10.1.2.3'],
    'internal.v6hang.test': ['10.1.2.3'],
    'public.v6hang.test': ['93.184.216.34'],
  });
});
afterAll(() => dnsServer.close());

const resolve = (lookup: CallbackLookup, hostname: string, options: dns.LookupAllOptions = { all: true }) =>
  new Promise<dns.LookupAddress[]>((done, fail) => lookup(hostname, options, (err, addresses) => (err ? fail(err) : done(addresses))));

const failure = (promise: Promise<unknown>) => promise.then(() => null, (error: NodeJS.ErrnoException) => error);

/** A fallback (what dns.lookup is by default) that records its calls and answers only for hosts.test. */
function recordingFallback() {
  const calls: string[] = [];
  let inFlight = 0;
  let most = 0;
  const fallback: CallbackLookup = (hostname, _options, callback) => {
    calls.push(hostname);
    inFlight += 1;
    most = Math.max(most, inFlight);
    if (hostname.startsWith('stuck')) return; // getaddrinfo waiting on a DNS server that never answers
    setTimeout(() => {
      inFlight -= 1;
      if (hostname === 'hosts.test') return callback(null, [{ address: '192.0.2.7', family: 4 }]);
      const error: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
      error.code = 'ENOTFOUND';
      callback(error, []);
    }, 5);
  };
  return { fallback, calls, most: () => most };
}

describe('createResolver', () => {
  it('asks DNS for A and AAAA records at once, IPv4 first, or for the one family asked', async () => {
    const lookup = createResolver({ servers: [dnsServer.server], fallback: recordingFallback().fallback });
    expect(await resolve(lookup, 'dual.test')).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
    ]);
    expect(await resolve(lookup, 'dual.test', { all: true, family: 6 })).toEqual([{ address: '2606:2800:220:1::1', family: 6 }]);
    const asked = dnsServer.questions.length;
    expect(await resolve(lookup, 'dual.test', { all: true, family: 4 })).toEqual([{ address: '93.184.216.34', family: 4 }]);
    expect(dnsServer.questions.slice(asked)).toEqual(['dual.test A']);
  });

  it('answers localhost and names under it with loopback without asking anyone', async () => {
    const { fallback, calls } = recordingFallback();
    const lookup = createResolver({ servers: [dnsServer.server], fallback });
    const asked = dnsServer.questions.length;
    expect(await resolve(lookup, 'localhost')).toEqual([
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ]);
    expect(await resolve(lookup, 'App.LOCALHOST.', { all: true, family: 4 })).toEqual([{ address: '127.0.0.1', family: 4 }]);
    expect(dnsServer.questions.length).toBe(asked);
    expect(calls).toEqual([]);
  });

  it('leaves a name DNS does not know to the system resolver (hosts file, search domains), two at a time', async () => {
    const { fallback, calls, most } = recordingFallback();
    const lookup = createResolver({ servers: [dnsServer.server], fallback, fallbackWaitMs: 300 });
    expect(await resolve(lookup, 'hosts.test')).toEqual([{ address: '192.0.2.7', family: 4 }]);
    expect((await failure(resolve(lookup, 'nowhere.test')))?.code).toBe('ENOTFOUND');
    expect(calls).toEqual(['hosts.test', 'nowhere.test']);

    // System lookups that never end hold two turns; the others wait for theirs, then give up.
    const stuck = ['stuck1.test', 'stuck2.test', 'stuck3.test'].map((name) => failure(resolve(lookup, name)));
    const started = performance.now();
    const waited = await failure(resolve(lookup, 'hosts.test'));
    expect(waited?.code).toBe('ETIMEOUT');
    expect(waited?.message).toMatch(/hosts\.test waited too long/);
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect((await stuck[2])?.code).toBe('ETIMEOUT');
    expect(calls.filter((name) => name.startsWith('stuck'))).toEqual(['stuck1.test', 'stuck2.test']);
    expect(most()).toBe(2);
  });

  it('fails a name whose DNS server never answers after its timeout, leaving the thread pool to others', async () => {
    const { fallback, calls } = recordingFallback();
    const lookup = createResolver({ servers: [dnsServer.server], fallback, timeoutMs: 200, tries: 2 });
    const hanging = Array.from({ length: 16 }, (_, i) => failure(resolve(lookup, `t${i}.hang.test`)));
    // Meanwhile: other names resolve, and work on the thread pool (4 threads) runs at once.
    expect(await resolve(lookup, 'receiver.test')).toEqual([{ address: '127.0.0.1', family: 4 }]);
    const pbkdf2 = promisify(crypto.pbkdf2);
    await Promise.all(Array.from({ length: 4 }, () => pbkdf2('secret', 'salt', 1_000, 32, 'sha256')));
    const errors = await Promise.all(hanging);
    for (const [i, error] of errors.entries()) {
      expect(error?.code).toBe('ETIMEOUT');
      expect(error?.message).toContain(`t${i}.hang.test`);
    }
    expect(calls).toEqual([]); // a DNS failure is the answer: not asked again of the system resolver
  });

  it('uses the A records once in when the AAAA query goes unanswered, rather than wait for its timeout', async () => {
    const lookup = createResolver({ servers: [dnsServer.server], timeoutMs: 2_000, tries: 2 });
    const started = performance.now();
    expect(await resolve(lookup, 'public.v6hang.test')).toEqual([{ address: '93.184.216.34', family: 4 }]);
    expect(performance.now() - started).toBeLessThan(1_500); // the AAAA query's own timeout is 6 s
  });

  it('reads the hosts file first, as the system does, also when DNS cannot be reached', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-hosts-'));
    const hostsFile = join(dir, 'hosts');
    try {
      await writeFile(hostsFile, ['# comment', '127.0.0.1 app.hosts.test Alias.Hosts.Test  # trailing', '::1 app.hosts.test v6.hosts.test', '', 'not-an-address bad.hosts.test'].join('\n'));
      const { fallback, calls } = recordingFallback();
      // No DNS server on this port: every query is refused.
      const lookup = createResolver({ servers: ['127.0.0.1:9'], hostsFile, fallback });
      expect(await resolve(lookup, 'app.hosts.test')).toEqual([
        { address: '127.0.0.1', family: 4 },
        { address: '::1', family: 6 },
      ]);
      expect(await resolve(lookup, 'alias.hosts.test.', { all: true, family: 4 })).toEqual([{ address: '127.0.0.1', family: 4 }]);
      expect(await resolve(lookup, 'V6.hosts.test')).toEqual([{ address: '::1', family: 6 }]);
      expect((await failure(resolve(lookup, 'bad.hosts.test')))?.code).toBe('ECONNREFUSED');
      expect(calls).toEqual([]);
      // A change to the file is seen (within a second).
      await writeFile(hostsFile, '192.0.2.9 new.hosts.test\n');
      const seen = await eventuallyResolves(lookup, 'new.hosts.test');
      expect(seen).toEqual([{ address: '192.0.2.9', family: 4 }]);
      // One too large to read here (a blocklist) is left to the system's resolver.
      const big = `192.0.2.10 big.hosts.test\n${'0.0.0.0 blocked.example\n'.repeat(MAX_HOSTS_BYTES / 24 + 1)}`;
      await writeFile(hostsFile, big);
      const started = performance.now();
      expect(await eventuallyFails(lookup, 'new.hosts.test')).toBe('ECONNREFUSED');
      expect(performance.now() - started).toBeLessThan(3_000);
      expect((await failure(resolve(lookup, 'big.hosts.test')))?.code).toBe('ECONNREFUSED'); // DNS was asked, not the file
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

async function eventuallyFails(lookup: CallbackLookup, hostname: string): Promise<string | undefined> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const error = await failure(resolve(lookup, hostname));
    if (error || Date.now() > deadline) return error?.code;
    await new Promise((done) => setTimeout(done, 100));
  }
}

async function eventuallyResolves(lookup: CallbackLookup, hostname: string): Promise<dns.LookupAddress[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      return await resolve(lookup, hostname);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((done) => setTimeout(done, 100));
    }
  }
}

describe('deliveries beside a tenant whose DNS never answers', () => {
  it('reach another tenant at once, and the hanging ones fail on their own', async () => {
    const server = http.createServer((_req, res) => res.writeHead(204).end());
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const port = (server.address() as AddressInfo).port;
    const lookup = createResolver({ servers: [dnsServer.server], timeoutMs: 400, tries: 2 });
    const agent = createGuardedAgent({ allowPrivate: true, connections: null, lookup, connect: { timeout: 10_000 } });
    const sender = new Sender(agent, 15_000);
    const send = (url: string) =>
      sender.send({ deliveryId: 'dlv_1', event: 'invoice.created', url, body: '{}', keys: decodeSecrets(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']), headers: null });
    try {
      const hanging = Array.from({ length: 16 }, (_, i) => send(`http://t${i}.hang.test:${port}/`));
      const started = performance.now();
      const other = await send(`http://receiver.test:${port}/`);
      const otherMs = performance.now() - started;
      expect(other).toMatchObject({ ok: true, statusCode: 204 });
      const results = await Promise.all(hanging);
      const hangingMs = performance.now() - started;
      for (const result of results) expect(result).toMatchObject({ ok: false, statusCode: null, error: expect.stringMatching(/ETIMEOUT/) });
      // The other tenant's delivery did not wait for the hanging lookups (about 1.2 s here).
      expect(otherMs).toBeLessThan(hangingMs / 2);
    } finally {
      await agent.close();
      await new Promise((done) => server.close(done));
    }
  });
});

describe('TargetGuard.checkUrl', () => {
  it('checks what DNS answers, and accepts a name whose DNS is too slow to answer', async () => {
    const lookup = createResolver({ servers: [dnsServer.server], timeoutMs: 2_000, tries: 2 });
    const promised = (hostname: string, options: { all: true }) => resolve(lookup, hostname, options);
    const guard = new TargetGuard({ allowPrivate: false, lookup: promised, lookupTimeoutMs: 1_000 });
    await expect(guard.checkUrl('https://private.test/hook')).rejects.toThrow(/resolves to a private address/);
    await expect(guard.checkUrl('https://dual.test/hook')).resolves.toBeUndefined();
    // Its A record private, its AAAA query unanswered: refused all the same.
    await expect(guard.checkUrl('https://internal.v6hang.test/hook')).rejects.toThrow(/resolves to a private address/);
    const started = performance.now();
    await expect(guard.checkUrl('https://slow.hang.test/hook')).resolves.toBeUndefined();
    expect(performance.now() - started).toBeLessThan(2_500); // its DNS would take 6 s to fail
  });
});
