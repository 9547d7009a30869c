import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { HooklineError } from '../../src/errors.js';
import {
  TARGET_REFUSED,
  TargetGuard,
  TargetRefusedError,
  checkLiteralHost,
  classifyAddress,
  createGuardedAgent,
  guardedLookup,
  isPublicAddress,
} from '../../src/dispatcher/target-guard.js';
import { validateTargetUrl } from '../../src/webhooks/target-url.js';

const REFUSED_LITERALS = [
  '127.0.0.1',
  '10.1.2.3',
  '172.16.0.1',
  '192.168.1.1',
  '169.254.169.254',
  '100.64.0.1',
  '0.0.0.0',
  '224.0.0.1',
  '255.255.255.255',
  '192.0.2.1', // documentation (TEST-NET-1)
  '198.18.0.1', // benchmarking
  '240.0.0.1', // reserved
  '::1',
  '::',
  'fe80::1',
  'fc00::1',
  'fd12::1',
  'ff02::1',
  '::ffff:127.0.0.1',
  '::ffff:10.0.0.1',
  '::ffff:169.254.169.254',
  '64:ff9b::7f00:1', // NAT64 of 127.0.0.1
  '::7f00:1', // deprecated IPv4-compatible form of 127.0.0.1
  '2001:db8::1', // documentation
  '2002:7f00:1::1', // 6to4
  '2001:0:4136:e378::1', // teredo
];
const PUBLIC_LITERALS = ['93.184.216.34', '8.8.8.8', '2606:4700::1111', '2001:4860:4860::8888', '64:ff9b::808:808'];

const urlFor = (address: string) => (address.includes(':') ? `http://[${address}]:8080/x` : `http://${address}:8080/x`);

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

function expectBadInput(error: unknown, field: string, pattern?: RegExp) {
  expect(error).toBeInstanceOf(HooklineError);
  const e = error as HooklineError;
  expect(e.code).toBe('BAD_USER_INPUT');
  expect(e.field).toBe(field);
  expect(e.message).toContain(field);
  if (pattern) expect(e.message).toMatch(pattern);
}

describe('isPublicAddress', () => {
  it.each(REFUSED_LITERALS)('refuses %s', (address) => {
    expect(isPublicAddress(address)).toBe(false);
  });
  it.each(PUBLIC_LITERALS)('accepts %s', (address) => {
    expect(isPublicAddress(address)).toBe(true);
  });
  it('refuses non-literals and non-canonical forms', () => {
    for (const value of ['', 'localhost', '0x7f000001', '2130706433', '127.1', 'not an ip']) {
      expect(isPublicAddress(value)).toBe(false);
    }
  });
  it('judges IPv4-mapped addresses by their IPv4 address', () => {
    expect(classifyAddress('::ffff:127.0.0.1')).toBe('loopback');
    expect(classifyAddress('::ffff:169.254.169.254')).toBe('linkLocal');
    expect(isPublicAddress('::ffff:93.184.216.34')).toBe(true);
  });
  it("refuses Azure's platform endpoint, a public address that answers only inside Azure's hosts (as a metadata service)", () => {
    for (const value of ['168.63.129.16', '::ffff:168.63.129.16', '64:ff9b::a83f:8110']) expect(classifyAddress(value)).toBe('cloudPlatform');
    expect(isPublicAddress('168.63.129.17')).toBe(true);
    expect(() => checkLiteralHost('168.63.129.16', false)).toThrow(/a cloud platform \(Azure WireServer\) address/);
  });
});

describe('validateTargetUrl', () => {
  it('accepts http and https URLs', () => {
    expect(validateTargetUrl('https://example.com/hooks?x=1').hostname).toBe('example.com');
    expect(validateTargetUrl('http://[::1]:8080/x').hostname).toBe('[::1]');
  });
  it('accepts every host name DNS can look up, and address literals', () => {
    for (const url of [
      'https://hooks.example.com./x',
      'https://xn--bcher-kva.example/x',
      'https://bücher.example/x',
      'http://my_service:8080/x',
      'http://a-b.c-d.example/x',
      `https://${'a'.repeat(63)}.com/`,
      'http://127.0.0.1:65535/',
      'http://0x7f.1/',
      'http://[2001:db8::1]/',
      'http://localhost/',
      // Joiners, which real names need: a Persian one with a ZWNJ, an emoji sequence with a ZWJ.
      'https://\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.example/hooks',
      'https://example.com/\u{1F468}\u200d\u{1F469}\u200d\u{1F467}',
      // In a path or a query, invisible characters are percent-encoded and sent as they are.
      'https://example.com/a\u200bb?name=\u200f\u05e9\u05dc\u05d5\u05dd',
      'https://example.com/\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}',
    ]) {
      expect(() => validateTargetUrl(url), url).not.toThrow();
    }
  });
  it.each([
    ['ftp://example.com/file', /scheme "ftp"/],
    ['javascript:alert(1)', /scheme/],
    ['file:///etc/passwd', /scheme/],
    ['https://user:pass@example.com/', /username or password/],
    ['https://user@example.com/', /username or password/],
    [`https://example.com/${'a'.repeat(2048)}`, /at most 2048/],
    ['not a url', /not a valid absolute URL/],
    ['/relative/path', /not a valid absolute URL/],
    ['http://', /must start with http:\/\/ or https:\/\/ and a host/],
    // Forms the URL parser mends, taking the path for the host, or dropping what was pasted in.
    ['http:///path', /must start with http:\/\/ or https:\/\/ and a host/],
    ['http:127.0.0.1:4000/hooks', /must start with http:\/\/ or https:\/\/ and a host/],
    ['https:\\\\example.com\\hooks', /must start with http:\/\/ or https:\/\/ and a host/],
    ['https://exa\nmple.com/hooks', /control characters/],
    ['https://example.com/hooks\t', /control characters/],
    ['https://example.com/\u0085x', /control characters/],
    ['https://example.com/a\u2028b', /control characters/],
    ['https://ex\u00adample.com/hooks', /invisible characters in its host/],
    ['https://exa\u200bmple.com/hooks', /invisible characters in its host/],
    ['https://\u202eelpmaxe.com/', /invisible characters in its host/],
    ['https://ex%C2%ADample.com/', /invisible characters in its host/],
    ['https://ex%E2%80%8Bample.com/', /invisible characters in its host/],
    ['https://exa\u034fmple.com/', /invisible characters in its host/],
    ['https://exa\ufe0fmple.com/', /invisible characters in its host/],
    ['https://exa\u180bmple.com/', /invisible characters in its host/],
    // A fragment is never sent: what it carries (a token, say) would be lost.
    ['https://example.com/hooks#token=abc', /must not have a fragment/],
    ['https://example.com/hooks#', /must not have a fragment/],
    ['', /required/],
    ['http://example.com:0/', /port 0 cannot be connected to/],
    ['http://[::1]:0/', /port 0/],
    ['http://example.com:65536/', /port 65536 is out of range: a port is from 1 to 65535/],
    ['http://[::1]:99999/hook', /port 99999 is out of range/],
    // The URL parser reads these backslashes as slashes: the address kept would be another.
    ['https://example.com\\@evil.com/', /must not contain a backslash/],
    ['https://example.com/a\\b', /must not contain a backslash/],
    ['https://example.com/#frag\\x', /must not have a fragment/],
    ['http://a..b/', /host "a..b" has an empty label/],
    ['http://.com/', /host ".com" has an empty label/],
    ['http://-a.com/', /host "-a.com" has a label, "-a", that is no DNS name/],
    ['http://a-.com/', /label, "a-"/],
    [`http://${'a'.repeat(64)}.com/`, /a label of 64 characters; DNS allows 63/],
    [`http://${'abcdefghi.'.repeat(26)}com/`, /longer than the 253 characters/],
    ['http://exa$mple.com/', /label, "exa\$mple"/],
  ])('refuses %s', (url, pattern) => {
    let error: unknown;
    try {
      validateTargetUrl(url, 'target');
    } catch (e) {
      error = e;
    }
    expectBadInput(error, 'target', pattern);
  });
  it('uses "url" as the default field', () => {
    expect(() => validateTargetUrl('ftp://x')).toThrow(/^url: /);
  });
});

describe('TargetGuard.checkUrl', () => {
  const guard = new TargetGuard({ allowPrivate: false });
  const permissive = new TargetGuard({ allowPrivate: true });

  it.each(REFUSED_LITERALS)('refuses %s by literal address', async (address) => {
    expectBadInput(await rejection(guard.checkUrl(urlFor(address))), 'url', /private or internal targets are not allowed/);
  });

  it('names the range in the message', async () => {
    expectBadInput(await rejection(guard.checkUrl('http://169.254.169.254/latest/meta-data/', 'endpoint')), 'endpoint', /a link-local address/);
    expectBadInput(await rejection(guard.checkUrl('http://[::ffff:127.0.0.1]/')), 'url', /a loopback address/);
  });

  it.each(PUBLIC_LITERALS)('accepts the public literal %s without DNS', async (address) => {
    const lookup = async () => {
      throw new Error('no DNS for literals');
    };
    await expect(new TargetGuard({ allowPrivate: false, lookup }).checkUrl(urlFor(address))).resolves.toBeUndefined();
  });

  it('accepts a URL object', async () => {
    await expect(guard.checkUrl(new URL('https://93.184.216.34/hook'))).resolves.toBeUndefined();
    expectBadInput(await rejection(guard.checkUrl(new URL('http://10.0.0.1/'))), 'url');
  });

  it('refuses a name that resolves to loopback (real DNS: localhost)', async () => {
    expectBadInput(await rejection(guard.checkUrl('http://localhost/')), 'url', /"localhost" resolves to .*loopback address/);
  });

  it('refuses a name when any of its addresses is private (injected lookup)', async () => {
    const lookup = async (hostname: string) => {
      expect(hostname).toBe('rebind.example');
      return [
        { address: '93.184.216.34', family: 4 },
        { address: '10.0.0.5', family: 4 },
      ];
    };
    const error = await rejection(new TargetGuard({ allowPrivate: false, lookup }).checkUrl('https://rebind.example/hook'));
    expectBadInput(error, 'url', /resolves to a private address/);
    expect((error as Error).message).not.toContain('10.0.0.5'); // the operator's network is not the tenant's to map
  });

  it('accepts a name whose addresses are all public (injected lookup)', async () => {
    const lookup = async () => [{ address: '2606:4700::1111', family: 6 }];
    await expect(new TargetGuard({ allowPrivate: false, lookup }).checkUrl('https://public.example/')).resolves.toBeUndefined();
  });

  it('accepts a name that does not resolve now: what it resolves to is checked at each connection', async () => {
    let asked = 0;
    const lookup = async () => {
      asked++;
      throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.invalid'), { code: 'ENOTFOUND' });
    };
    await expect(new TargetGuard({ allowPrivate: false, lookup }).checkUrl('https://nowhere.invalid/')).resolves.toBeUndefined();
    expect(asked).toBe(1);
    await expect(new TargetGuard({ allowPrivate: true, lookup }).checkUrl('https://nowhere.invalid/')).resolves.toBeUndefined();
    await expect(new TargetGuard({ allowPrivate: false, lookup: async () => [] }).checkUrl('https://x.example/')).resolves.toBeUndefined();
  });

  it.each(REFUSED_LITERALS)('accepts %s when private targets are allowed', async (address) => {
    await expect(permissive.checkUrl(urlFor(address))).resolves.toBeUndefined();
  });

  it('accepts localhost when private targets are allowed', async () => {
    await expect(permissive.checkUrl('http://localhost:3000/hook')).resolves.toBeUndefined();
  });

  it('applies the syntax rules first', async () => {
    expectBadInput(await rejection(permissive.checkUrl('ftp://10.0.0.1/', 'target')), 'target', /scheme/);
    expectBadInput(await rejection(guard.checkUrl('https://a:b@93.184.216.34/')), 'url', /username or password/);
  });
});

describe('checkLiteralHost and guardedLookup', () => {
  it('throws TargetRefusedError for non-public literals only', () => {
    for (const address of REFUSED_LITERALS) {
      let error: unknown;
      try {
        checkLiteralHost(address.includes(':') ? `[${address}]` : address, false);
      } catch (e) {
        error = e;
      }
      expect(error, address).toBeInstanceOf(TargetRefusedError);
      expect((error as TargetRefusedError).code).toBe(TARGET_REFUSED);
      expect(() => checkLiteralHost(address, true)).not.toThrow();
    }
    for (const address of PUBLIC_LITERALS) expect(() => checkLiteralHost(address, false)).not.toThrow();
    expect(() => checkLiteralHost('localhost', false)).not.toThrow(); // names are left to the lookup
  });

  const fakeLookup =
    (addresses: { address: string; family: number }[]) =>
    (_host: string, _opts: unknown, cb: (err: NodeJS.ErrnoException | null, a: { address: string; family: number }[]) => void) =>
      process.nextTick(() => cb(null, addresses));

  it('calls back with a coded error for a private resolution', async () => {
    const lookup = guardedLookup(false, fakeLookup([{ address: '192.168.0.10', family: 4 }]));
    const error = await new Promise((resolve) => lookup('rebind.example', {}, (err) => resolve(err)));
    expect(error).toBeInstanceOf(TargetRefusedError);
    expect((error as TargetRefusedError).code).toBe('HOOKLINE_TARGET_REFUSED');
    expect((error as Error).message).toMatch(/rebind\.example.*private/);
    // The attempt log shows the message to the tenant: the address is kept for the operator only.
    expect((error as Error).message).not.toContain('192.168.0.10');
    expect((error as TargetRefusedError).address).toBe('192.168.0.10');
  });

  it('answers in both the single and the `all` forms', async () => {
    const lookup = guardedLookup(false, fakeLookup([{ address: '93.184.216.34', family: 4 }]));
    const single = await new Promise((resolve) => lookup('public.example', { family: 0 }, (...args) => resolve(args)));
    expect(single).toEqual([null, '93.184.216.34', 4]);
    const all = await new Promise((resolve) => lookup('public.example', { all: true }, (...args) => resolve(args)));
    expect(all).toEqual([null, [{ address: '93.184.216.34', family: 4 }]]);
  });

  it('lets private resolutions through when allowed', async () => {
    const lookup = guardedLookup(true, fakeLookup([{ address: '127.0.0.1', family: 4 }]));
    const single = await new Promise((resolve) => lookup('localhost', {}, (...args) => resolve(args)));
    expect(single).toEqual([null, '127.0.0.1', 4]);
  });
});

describe('createGuardedAgent (connect time)', () => {
  let server: http.Server;
  let port: number;
  let seen = 0;

  beforeAll(async () => {
    server = http.createServer((_req, res) => {
      seen += 1;
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('refuses a literal loopback address and a name that resolves to one', async () => {
    const agent = createGuardedAgent({ allowPrivate: false });
    try {
      for (const url of [`http://127.0.0.1:${port}/`, `http://localhost:${port}/`, `http://[::ffff:127.0.0.1]:${port}/`]) {
        const error = await rejection(request(url, { dispatcher: agent }));
        expect(error, url).toBeInstanceOf(TargetRefusedError);
        expect((error as TargetRefusedError).code).toBe('HOOKLINE_TARGET_REFUSED');
      }
      expect(seen).toBe(0);
    } finally {
      await agent.close();
    }
  });

  it('refuses a name whose resolution changed to a private address (rebinding)', async () => {
    // The save-time check saw a public address; at connect time it resolves to loopback.
    const lookup = (_host: string, _opts: unknown, cb: (err: null, a: { address: string; family: number }[]) => void) =>
      process.nextTick(() => cb(null, [{ address: '127.0.0.1', family: 4 }]));
    const agent = createGuardedAgent({ allowPrivate: false, lookup });
    try {
      const error = await rejection(request(`http://rebind.example:${port}/`, { dispatcher: agent }));
      expect((error as TargetRefusedError).code).toBe(TARGET_REFUSED);
      expect(seen).toBe(0);
    } finally {
      await agent.close();
    }
  });

  it('connects when private targets are allowed', async () => {
    const agent = createGuardedAgent({ allowPrivate: true, connections: 4, keepAliveTimeout: 1000 });
    try {
      for (const url of [`http://127.0.0.1:${port}/`, `http://localhost:${port}/`]) {
        const response = await request(url, { dispatcher: agent });
        expect(response.statusCode).toBe(200);
        expect(await response.body.text()).toBe('ok');
      }
      expect(seen).toBe(2);
    } finally {
      await agent.close();
    }
  });
});
