// Configuration from the environment: defaults, units, and a ConfigError
// naming the variable for every wrong value, in-process and as a real start.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { trusted } from '../src/auth/rate-limit.js';
import { ConfigError, loadConfig, parseDuration } from '../src/config.js';

const ROOT = resolve(import.meta.dirname, '..');
const TSX = resolve(ROOT, 'node_modules/.bin/tsx');

describe('defaults', () => {
  const config = loadConfig({});

  it('listens on port 4000 in role all, with no DATABASE_URL (embedded PostgreSQL under .hookline)', () => {
    expect(config.port).toBe(4000);
    expect(config.role).toBe('all');
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toBe('.hookline');
    expect(config.logLevel).toBe('info');
    expect(config.metricsToken, '/metrics asks for no token').toBeUndefined();
  });

  it('retries on 5s,5m,30m,2h,5h,10h,10h: 7 delays, 8 attempts in all', () => {
    const s = 1000;
    const m = 60 * s;
    const h = 60 * m;
    expect(config.retrySchedule).toEqual([5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]);
  });

  it('times an attempt out after 15 s and refuses private targets', () => {
    expect(config.deliveryTimeoutMs).toBe(15_000);
    expect(config.allowPrivateTargets).toBe(false);
  });

  it('takes a 410 Gone for a failed attempt like any other, as the contract says', () => {
    expect(config.disableOnGone).toBe(false);
  });

  it('takes 200 requests a second from an address without a valid API key', () => {
    expect(config.anonymousRateLimitPerSecond).toBe(200);
  });

  it("checks tenants' schemas in 2 threads, each check within 2 s", () => {
    expect(config.validationThreads).toBe(2);
    expect(config.validationTimeoutMs).toBe(2_000);
  });

  it('dispatches 128 at once, 64 per subscription', () => {
    expect(config.dispatchConcurrency).toBe(128);
    expect(config.dispatchPerSubscription).toBe(64);
  });

  it('keeps up to 10000 live updates waiting per subscriber, and disconnects one stalled for 5 s', () => {
    expect(config.liveBufferLimit).toBe(10_000);
    expect(config.liveStallMs).toBe(5_000);
  });

  it('accepts a short ADMIN_TOKEN of the operator\'s (the contract sets no length), flagged to be warned of', () => {
    const config = loadConfig({ ADMIN_TOKEN: 'admin' });
    expect(config).toMatchObject({ adminToken: 'admin', adminTokenGenerated: false, adminTokenShort: true });
    expect(loadConfig({ ADMIN_TOKEN: 'a-chosen-admin-token' }).adminTokenShort).toBe(false);
    expect(loadConfig({}).adminTokenShort).toBe(false);
  });

  it('generates a long random admin token when ADMIN_TOKEN is unset or empty', () => {
    expect(config.adminTokenGenerated).toBe(true);
    expect(config.adminToken).toMatch(/^hla_[A-Za-z0-9_-]{32,}$/);
    const other = loadConfig({ ADMIN_TOKEN: '' });
    expect(other.adminTokenGenerated).toBe(true);
    expect(other.adminToken).not.toBe(config.adminToken);
  });

  it('is frozen', () => {
    expect(Object.isFrozen(config)).toBe(true);
  });
});

describe('given values', () => {
  it('reads every variable', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://u:p@db.example:5432/hookline',
      PORT: '8080',
      ADMIN_TOKEN: 'a-chosen-admin-token',
      HOOKLINE_ROLE: 'worker',
      HOOKLINE_RETRY_SCHEDULE: '250ms, 2s,1m ,1h',
      HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
      HOOKLINE_DISABLE_ON_GONE: 'yes',
      HOOKLINE_DELIVERY_TIMEOUT: '2m',
      LOG_LEVEL: 'debug',
      HOOKLINE_DATA_DIR: '/var/lib/hookline',
      HOOKLINE_DISPATCH_CONCURRENCY: '8',
      HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '2',
      HOOKLINE_LIVE_BUFFER: '50',
      HOOKLINE_LIVE_STALL: '750ms',
      HOOKLINE_METRICS_TOKEN: 'prometheus-scrape-token',
      HOOKLINE_LIVE_PER_TENANT: '300',
      HOOKLINE_MAX_CONNECTIONS: '2000',
      HOOKLINE_MAX_CONNECTIONS_PER_ADDRESS: '50',
    });
    expect(config).toMatchObject({
      databaseUrl: 'postgres://u:p@db.example:5432/hookline',
      port: 8080,
      adminToken: 'a-chosen-admin-token',
      adminTokenGenerated: false,
      role: 'worker',
      retrySchedule: [250, 2_000, 60_000, 3_600_000],
      allowPrivateTargets: true,
      disableOnGone: true,
      deliveryTimeoutMs: 120_000,
      logLevel: 'debug',
      dataDir: '/var/lib/hookline',
      dispatchConcurrency: 8,
      dispatchPerSubscription: 2,
      liveBufferLimit: 50,
      liveStallMs: 750,
      metricsToken: 'prometheus-scrape-token',
      liveSubscriptionsPerTenant: 300,
      maxConnections: 2_000,
      maxConnectionsPerAddress: 50,
    });
  });

  it('accepts postgresql: URLs, port 0, roles api and all, and booleans 0/1/yes/no', () => {
    expect(loadConfig({ DATABASE_URL: 'postgresql://localhost/h' }).databaseUrl).toBe('postgresql://localhost/h');
    // A % written as %25 is a %.
    expect(loadConfig({ DATABASE_URL: 'postgres://u:50%25off@db.example/h' }).databaseUrl).toBe('postgres://u:50%25off@db.example/h');
    // A socket's directory as `host`, no host before the path: pg takes it as it is.
    for (const socket of ['postgres://u:p@/hookline?host=/run/postgresql&port=5433', 'postgresql:///hookline?host=/tmp', 'postgres://u@/h']) {
      expect(loadConfig({ DATABASE_URL: socket }).databaseUrl).toBe(socket);
    }
    expect(loadConfig({ PORT: '0' }).port).toBe(0);
    expect(loadConfig({ HOOKLINE_ROLE: 'api' }).role).toBe('api');
    expect(loadConfig({ HOOKLINE_ROLE: 'all' }).role).toBe('all');
    for (const [text, value] of [['1', true], ['yes', true], ['TRUE', true], ['0', false], ['no', false], ['false', false]] as const) {
      expect(loadConfig({ HOOKLINE_ALLOW_PRIVATE_TARGETS: text }).allowPrivateTargets).toBe(value);
    }
  });

  it('caps the per-subscription limit at the overall concurrency', () => {
    const config = loadConfig({ HOOKLINE_DISPATCH_CONCURRENCY: '4', HOOKLINE_DISPATCH_PER_SUBSCRIPTION: '10' });
    expect(config.dispatchPerSubscription).toBe(4);
  });
});

describe('durations', () => {
  it.each([
    ['500ms', 500],
    ['1ms', 1],
    ['5s', 5_000],
    ['1.5s', 1_500],
    ['30m', 1_800_000],
    ['2h', 7_200_000],
    ['30d', 30 * 86_400_000],
    [' 10s ', 10_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['5', '5x', '5 s', 's', '-1s', '0s', '0.4ms', '0.0001s', '1w', ''])('"%s" is refused', (text) => {
    expect(() => parseDuration(text)).toThrow();
  });

  it('reads every unit in HOOKLINE_RETRY_SCHEDULE and HOOKLINE_DELIVERY_TIMEOUT', () => {
    expect(loadConfig({ HOOKLINE_RETRY_SCHEDULE: '100ms,1s,1m,1h' }).retrySchedule).toEqual([100, 1_000, 60_000, 3_600_000]);
    expect(loadConfig({ HOOKLINE_RETRY_SCHEDULE: '720h' }).retrySchedule).toEqual([720 * 3_600_000]); // 30 days, the longest
    expect(loadConfig({ HOOKLINE_DELIVERY_TIMEOUT: '750ms' }).deliveryTimeoutMs).toBe(750);
    expect(loadConfig({ HOOKLINE_DELIVERY_TIMEOUT: '20s' }).deliveryTimeoutMs).toBe(20_000);
    expect(loadConfig({ HOOKLINE_DELIVERY_TIMEOUT: '5m' }).deliveryTimeoutMs).toBe(300_000);
  });
});

describe('wrong values throw a ConfigError naming the variable', () => {
  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['PORT', '80.5'],
    ['HOOKLINE_ROLE', 'boss'],
    ['HOOKLINE_ROLE', 'ALL'],
    ['HOOKLINE_RETRY_SCHEDULE', '5x'],
    ['HOOKLINE_RETRY_SCHEDULE', '5s,,1m'],
    ['HOOKLINE_RETRY_SCHEDULE', '5s,'],
    ['HOOKLINE_RETRY_SCHEDULE', Array(51).fill('1s').join(',')],
    // A due time this far off could not be written: the delivery would be sent again and again, uncounted.
    ['HOOKLINE_RETRY_SCHEDULE', '5s,3000000000h'],
    ['HOOKLINE_RETRY_SCHEDULE', '721h'],
    ['HOOKLINE_DISPATCH_PER_TENANT', '0'],
    ['HOOKLINE_ALLOW_PRIVATE_TARGETS', 'maybe'],
    ['HOOKLINE_DISABLE_ON_GONE', 'sometimes'],
    ['HOOKLINE_DELIVERY_TIMEOUT', '-1s'],
    ['HOOKLINE_DELIVERY_TIMEOUT', '0s'],
    ['HOOKLINE_DELIVERY_TIMEOUT', '15'],
    ['HOOKLINE_DELIVERY_TIMEOUT', '6m'],
    ['LOG_LEVEL', 'loud'],
    ['DATABASE_URL', 'mysql://x'],
    ['DATABASE_URL', 'not a url'],
    ['DATABASE_URL', ' postgres://u:p@db.example/hookline'],
    // No host and no path after it (a host variable left unset): pg cannot read these either.
    ['DATABASE_URL', 'postgres://u:p@'],
    ['DATABASE_URL', 'postgres://u@?host=/run/postgresql'],
    ['DATABASE_URL', 'postgres://u:p@db.example/hookline\n'],
    // A % that starts no escape, which the connection's decoding threw on (a stack at start-up).
    ['DATABASE_URL', 'postgres://u:SECRET%zzPW@db.example/hookline'],
    ['DATABASE_URL', 'postgres://u%:p@db.example/hookline'],
    ['DATABASE_URL', 'postgres://u:p@db.example/hook%line'],
    // No "//": a URL with no host, which pg would take to localhost.
    ['DATABASE_URL', 'postgres:/app:S3cretPass@db.example.com:5432/hookline'],
    ['DATABASE_URL', 'postgresql:app:S3cretPass@db.example.com:5432/hookline'],
    ['HOOKLINE_DISPATCH_CONCURRENCY', '0'],
    ['HOOKLINE_DISPATCH_CONCURRENCY', 'many'],
    ['HOOKLINE_DISPATCH_PER_SUBSCRIPTION', '0'],
    ['HOOKLINE_LIVE_BUFFER', '0'],
    ['HOOKLINE_LIVE_BUFFER', 'lots'],
    ['HOOKLINE_LIVE_STALL', '5'],
    ['HOOKLINE_LIVE_STALL', '1000h'],
    ['HOOKLINE_LIVE_STALL', '61m'],
    ['HOOKLINE_LIVE_PER_KEY', '0'],
    ['HOOKLINE_LIVE_PER_KEY', 'lots'],
    ['HOOKLINE_LIVE_PER_CONNECTION', '0'],
    ['HOOKLINE_LIVE_PER_TENANT', '0'],
    ['HOOKLINE_LIVE_PER_TENANT', 'many'],
    ['HOOKLINE_RATE_LIMIT_ANONYMOUS', '-1'],
    ['HOOKLINE_RATE_LIMIT_ANONYMOUS', 'lots'],
    ['HOOKLINE_TRUSTED_PROXIES', '10.0.0.0/33'],
    ['HOOKLINE_TRUSTED_PROXIES', '10.0.0.1, proxy.internal'],
    // ipaddr.js's short forms mean other addresses: 172.0.0.16/12 (public ones among them), 0.0.0.10.
    ['HOOKLINE_TRUSTED_PROXIES', '172.16/12'],
    ['HOOKLINE_TRUSTED_PROXIES', '10'],
    ['HOOKLINE_TRUSTED_PROXIES', '0x0a.0.0.1'],
    // An empty entry (a list cut short), or nothing but blanks.
    ['HOOKLINE_TRUSTED_PROXIES', '10.0.0.0/8,'],
    ['HOOKLINE_TRUSTED_PROXIES', '10.0.0.0/8,,192.0.2.7'],
    ['HOOKLINE_TRUSTED_PROXIES', ' '],
    ['HOOKLINE_VALIDATION_THREADS', '0'],
    ['HOOKLINE_VALIDATION_THREADS', '65'],
    ['HOOKLINE_VALIDATION_TIMEOUT', '2'],
    ['HOOKLINE_VALIDATION_TIMEOUT', '2m'],
    ['HOOKLINE_METRICS_TOKEN', 'two words'],
    ['HOOKLINE_MAX_CONNECTIONS', '0'],
    ['HOOKLINE_MAX_CONNECTIONS_PER_ADDRESS', 'many'],
    // Shorter than the idempotency window, whose answer is the event; or not a duration.
    ['HOOKLINE_RETENTION', '12h'],
    ['HOOKLINE_RETENTION', 'forever'],
    ['HOOKLINE_RETENTION', '100000d'],
    // Accepted, such a token could never be sent: every admin call would be UNAUTHENTICATED.
    ['ADMIN_TOKEN', 'a-chosen-admin-token\n'],
    ['ADMIN_TOKEN', 'a chosen admin token'],
    // Set but empty, where unset would turn off what the variable is set for (a template's secret missing).
    ['DATABASE_URL', ''],
    ['HOOKLINE_METRICS_TOKEN', ''],
    // A folder of that name would hold a new, empty database.
    ['HOOKLINE_DATA_DIR', '/var/lib/hookline '],
    ['HOOKLINE_DATA_DIR', ' '],
  ])('%s=%s', (variable, value) => {
    let caught: unknown;
    try {
      loadConfig({ [variable]: value });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const error = caught as ConfigError;
    expect(error.variable).toBe(variable);
    expect(error.message.startsWith(`${variable}: `)).toBe(true);
  });

  it('reads the trusted proxies people write: zones, upper case, host bits in a range, blanks around commas, IPv4-mapped entries as IPv4', () => {
    const { trustedProxies } = loadConfig({ HOOKLINE_TRUSTED_PROXIES: ' 10.0.0.5/8 ,\t2001:DB8::/32, fe80::1%eth0, ::ffff:192.0.2.7, ::ffff:198.51.100.0/120 ' });
    for (const address of ['10.200.0.1', '2001:db8::1', '192.0.2.7', '::ffff:192.0.2.7', '198.51.100.42', '::ffff:198.51.100.42']) {
      expect(trusted(address, trustedProxies), address).toBe(true);
    }
    for (const address of ['11.0.0.1', '2001:db9::1', '192.0.2.8', '198.51.101.1']) expect(trusted(address, trustedProxies), address).toBe(false);
  });

  it('takes any other variable set but empty as unset, and says how to leave an empty DATABASE_URL unset', () => {
    const defaults = loadConfig({ ADMIN_TOKEN: 'a-chosen-admin-token' });
    const empty = Object.fromEntries(
      ['PORT', 'HOOKLINE_ROLE', 'HOOKLINE_RETRY_SCHEDULE', 'LOG_LEVEL', 'HOOKLINE_DATA_DIR', 'HOOKLINE_RETENTION', 'HOOKLINE_TRUSTED_PROXIES'].map((name) => [name, '']),
    );
    expect(loadConfig({ ...empty, ADMIN_TOKEN: 'a-chosen-admin-token' })).toEqual(defaults);
    expect(() => loadConfig({ DATABASE_URL: '' })).toThrow('DATABASE_URL: is set but empty: leave it unset for the embedded PostgreSQL');
  });

  it('bounds every duration that feeds a timer, naming the variable and its bound', () => {
    // Past 2^31-1 ms setTimeout fires at once: a 1000h stall limit would be a timer spinning every millisecond.
    expect(() => loadConfig({ HOOKLINE_LIVE_STALL: '1000h' })).toThrow('HOOKLINE_LIVE_STALL: "1000h" is too long: it must be at most 1h');
    expect(loadConfig({ HOOKLINE_LIVE_STALL: '1h' }).liveStallMs).toBe(3_600_000);
    expect(() => loadConfig({ HOOKLINE_DELIVERY_TIMEOUT: '6m' })).toThrow('HOOKLINE_DELIVERY_TIMEOUT: "6m" is too long: it must be at most 5m');
    expect(() => loadConfig({ HOOKLINE_RETRY_SCHEDULE: '5s,721h' })).toThrow(/^HOOKLINE_RETRY_SCHEDULE: each delay must be at most 720h/);
  });

  it('keeps events for ever unless HOOKLINE_RETENTION says how long (at least 1d)', () => {
    expect(loadConfig({}).retentionMs).toBeUndefined();
    expect(loadConfig({ HOOKLINE_RETENTION: '' }).retentionMs).toBeUndefined();
    expect(loadConfig({ HOOKLINE_RETENTION: '30d' }).retentionMs).toBe(30 * 86_400_000);
    expect(loadConfig({ HOOKLINE_RETENTION: '24h' }).retentionMs).toBe(86_400_000);
    expect(() => loadConfig({ HOOKLINE_RETENTION: '23h' })).toThrow(/^HOOKLINE_RETENTION: "23h" is too short: events are kept at least 1d/);
  });

  it('names the wrong variable even when others are right', () => {
    expect(() => loadConfig({ PORT: '4001', HOOKLINE_ROLE: 'api', LOG_LEVEL: 'loud' })).toThrow(/^LOG_LEVEL: /);
  });
});

describe('the process', () => {
  function run(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((done, fail) => {
      const child = spawn(TSX, ['src/main.ts'], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        fail(new Error(`no exit within 45 s; stdout: ${stdout}; stderr: ${stderr}`));
      }, 45_000);
      child.on('error', fail);
      child.on('exit', (code) => {
        clearTimeout(timer);
        done({ code, stdout, stderr });
      });
    });
  }

  it('exits with code 1 and names PORT when PORT=abc, before starting anything', { timeout: 60_000 }, async () => {
    const { code, stdout, stderr } = await run({ PORT: 'abc' });
    expect(code).toBe(1);
    expect(stderr).toContain('PORT');
    expect(stderr).toMatch(/invalid configuration: PORT: "abc"/);
    expect(stdout).not.toContain('admin token');
  });

  it('exits with code 1 and names HOOKLINE_DATA_DIR when it cannot be a folder, before starting PostgreSQL', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-config-'));
    try {
      const file = join(dir, 'a-file');
      await writeFile(file, '');
      const { code, stderr } = await run({ HOOKLINE_DATA_DIR: file, PORT: '0' });
      expect(code).toBe(1);
      expect(stderr).toMatch(/^hookline: invalid configuration: HOOKLINE_DATA_DIR: ".*a-file" cannot be the embedded PostgreSQL's data folder: EEXIST/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('exits with code 1 and names HOOKLINE_ROLE when it is wrong', { timeout: 60_000 }, async () => {
    const { code, stderr } = await run({ HOOKLINE_ROLE: 'boss' });
    expect(code).toBe(1);
    expect(stderr).toMatch(/HOOKLINE_ROLE: "boss"/);
  });
});
