// Hookline as separate service processes (`tsx src/main.ts`), to kill and
// restart them as an operator or a crash would.
//
// `tsx` runs the program in a child node process of its own, so killing the
// tsx pid with SIGKILL would orphan the real service and leave it running.
// Each service therefore runs in a process group of its own (detached), and
// kill() signals the whole group: the crash reaches the process doing the work.
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { freePort } from '../../src/db/embedded.js';

export const ROOT = resolve(import.meta.dirname, '../..');
const TSX = resolve(ROOT, 'node_modules/.bin/tsx');

export interface ServiceProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  url: string;
  output(): { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Signals the whole process group (tsx and the node process running main.ts); resolves on exit. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Polls GET /readyz until 200; fails early, with the output, if the process exits. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** The value of a counter or gauge on GET /metrics, summed over the series that match `labels`. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

const running = new Set<ServiceProcess>();

/**
 * Starts `tsx src/main.ts` with the given variables (plus PATH and HOME). PORT
 * defaults to a free port, so /readyz and /metrics can be reached.
 */
export async function spawnService(env: Record<string, string>): Promise<ServiceProcess> {
  const port = env.PORT && env.PORT !== '0' ? Number(env.PORT) : await freePort();
  const child = spawn(TSX, ['src/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn', ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => (stdout += chunk));
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  let hasExited = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    child.on('exit', (code, signal) => {
      hasExited = true;
      running.delete(service);
      done({ code, signal });
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const service: ServiceProcess = {
    child,
    pid: child.pid!,
    port,
    url,
    output: () => ({ stdout, stderr }),
    exited,
    async kill(signal = 'SIGKILL') {
      signalGroup(child.pid!, signal);
      return exited;
    },
    async waitReady(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline && !hasExited) {
        try {
          const res = await fetch(`${url}/readyz`);
          if (res.status === 200) return;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`${hasExited ? 'exited' : `not ready within ${timeoutMs} ms`}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
    },
    async metric(name, labels = {}) {
      const text = await (await fetch(`${url}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
        if (!m || m[1] !== name) continue;
        const found = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
        if (Object.entries(labels).every(([k, v]) => found[k] === v)) sum += Number(m[3]);
      }
      return sum;
    },
  };
  running.add(service);
  return service;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

/** SIGKILLs every service process still running (for afterAll). */
export async function killAllServices(): Promise<void> {
  await Promise.all([...running].map((s) => s.kill('SIGKILL')));
}

/** A process number that no longer runs (a start that was killed). */
export async function goneProcessNumber(): Promise<number> {
  const gone = spawn(process.execPath, ['-e', '']);
  await new Promise((done) => gone.once('exit', done));
  return gone.pid!;
}
