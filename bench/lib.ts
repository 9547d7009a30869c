// Helpers of the benchmark: the shared clock, child processes (each in a
// process group of its own, all killed at the end whatever happens), CPU
// accounting from /proc, statistics, and a small GraphQL client.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Agent, request } from 'undici';

export const ROOT = resolve(import.meta.dirname, '..');

/** The clock every benchmark process shares: wall-clock based, sub-millisecond. */
export const now = () => performance.timeOrigin + performance.now();
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function percentile(values: number[], p: number): number {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  // Nearest rank: the smallest value with at least p% of the values at or below it.
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/**
 * How far chance alone moves percentile(a, p) / percentile(b, p): the 2.5th and 97.5th
 * percentiles of that ratio over `rounds` bootstrap resamples (each series drawn again,
 * with replacement, to its own size). With 300 samples a p99 is the fourth-largest (the 297th), so
 * three or four stalls of the machine decide it; the interval says whether a ratio above
 * 1 could be such luck. The generator is seeded, so a run's interval can be recomputed.
 */
export function ratioInterval(a: number[], b: number[], p: number, rounds = 2000, seed = 1): [number, number] {
  if (!a.length || !b.length) return [NaN, NaN];
  let state = seed >>> 0;
  const random = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const resample = (values: number[]) => values.map(() => values[Math.floor(random() * values.length)]!);
  const ratios: number[] = [];
  for (let i = 0; i < rounds; i++) ratios.push(percentile(resample(a), p) / percentile(resample(b), p));
  return [percentile(ratios, 2.5), percentile(ratios, 97.5)];
}

// ---------------------------------------------------------------------------
// Child processes

export interface Child {
  name: string;
  child: ChildProcess;
  pid: number;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
  /** Signals the child's whole process group; waits for the exit (SIGKILL after `graceMs`). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
  /** Messages over IPC (forked children only). */
  request<T>(message: Record<string, unknown>, timeoutMs: number): Promise<T>;
  waitMessage<T>(predicate: (message: any) => boolean, timeoutMs: number): Promise<T>;
}

const children = new Set<Child>();
const CPU_PROF = new Set<string>();

/** Children started with these names write V8 CPU profiles (bench/run.ts's --cpu-prof). */
export function profileProcesses(names: string[]): void {
  for (const name of names) CPU_PROF.add(name);
}

/**
 * Starts the compiled `<script>` (dist/…/*.js, built by bench/run.ts first) with
 * node in a process group of its own, with an IPC channel when `ipc` is set (the
 * benchmark's own children leave when it closes). Hookline (src/main.ts) runs as
 * `npm start` runs it: `node dist/src/main.js`.
 */
export function startNode(name: string, script: string, env: Record<string, string>, ipc = false): Child {
  const compiled = join('dist', script.replace(/\.ts$/, '.js'));
  // --cpu-prof=<names>: V8 CPU profiles of those children, in bench/results/profiles/<name>/.
  const profile = CPU_PROF.has(name) ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, 'bench', 'results', 'profiles', name)}`] : [];
  const child = spawn(process.execPath, [...profile, compiled], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 64_000) output = output.slice(-32_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  // A failed spawn, or a message to a child that died: reported by the waits below, never thrown here.
  child.on('error', (error) => keep(Buffer.from(`\n[${name}: ${error.message}]\n`)));
  let exited = false;
  const exitPromise = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.on('exit', (code, signal) => {
      exited = true;
      children.delete(handle);
      done({ code, signal });
    }),
  );
  let seq = 0;
  const handle: Child = {
    name,
    child,
    pid: child.pid!,
    output: () => output,
    exited: exitPromise,
    hasExited: () => exited,
    async stop(signal = 'SIGTERM', graceMs = 5_000) {
      if (exited) return;
      signalGroup(child.pid!, signal);
      const timer = setTimeout(() => signalGroup(child.pid!, 'SIGKILL'), graceMs);
      await exitPromise;
      clearTimeout(timer);
      // Anything left in the group (there should be nothing) goes too.
      signalGroup(child.pid!, 'SIGKILL');
    },
    request<T>(message: Record<string, unknown>, timeoutMs: number) {
      if (exited || !child.connected) return Promise.reject(new Error(`${name} is not running\n${output.slice(-4000)}`));
      const mySeq = ++seq;
      const answer = handle.waitMessage<T>((m) => m?.type === 'reply' && m.seq === mySeq, timeoutMs);
      child.send({ ...message, seq: mySeq });
      return answer;
    },
    waitMessage<T>(predicate: (message: any) => boolean, timeoutMs: number) {
      return new Promise<T>((resolvePromise, reject) => {
        const onMessage = (message: any) => {
          if (!predicate(message)) return;
          cleanup();
          resolvePromise(message as T);
        };
        const onExit = () => {
          cleanup();
          reject(new Error(`${name} exited while waiting for a message\n${output.slice(-4000)}`));
        };
        if (exited) return onExit();
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`${name}: no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          child.off('message', onMessage);
          child.off('exit', onExit);
        };
        child.on('message', onMessage);
        child.on('exit', onExit);
      });
    },
  };
  children.add(handle);
  return handle;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

/** Kills every child still running (their whole process groups). */
/** The last output of each child still running whose name starts with `prefix` (for a failure's report). */
export function childOutputs(prefix: string): string {
  return [...children]
    .filter((c) => c.name.startsWith(prefix))
    .map((c) => `--- ${c.name} (pid ${c.pid}) ---\n${c.output().slice(-3000)}`)
    .join('\n');
}

export async function stopAllChildren(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  await Promise.all([...children].map((c) => c.stop(signal, 2_000)));
}

/** Synchronous last resort (process 'exit'): SIGKILL every child group. */
export function killAllChildrenNow(): void {
  for (const c of children) signalGroup(c.pid, 'SIGKILL');
}

// ---------------------------------------------------------------------------
// /proc: memory and CPU of processes

interface ProcStat {
  pid: number;
  ppid: number;
  pgrp: number;
  comm: string;
  /**
   * utime + stime + cutime + cstime, in clock ticks: the process's CPU and that of
   * its children that ended and were waited for (a PostgreSQL backend that exits
   * moves its CPU time into the postmaster's), so a group's total never goes down.
   */
  ticks: number;
}

const TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    const comm = text.slice(text.indexOf('(') + 1, close);
    const fields = text.slice(close + 2).split(' ');
    // fields[0] is state (field 3); ppid is field 4, pgrp 5, utime 14, stime 15, cutime 16, cstime 17.
    const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    return { pid, comm, ppid: Number(fields[1]), pgrp: Number(fields[2]), ticks };
  } catch {
    return undefined;
  }
}

function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** Pids of a process group (a Hookline service, the graphile-worker process, ...). */
export function groupPids(pgid: number): number[] {
  return allStats()
    .filter((s) => s.pgrp === pgid)
    .map((s) => s.pid);
}

/** Peak resident set (VmHWM) of each process of a group, largest first. */
export function groupMemory(pgid: number): Array<{ pid: number; comm: string; peakRssBytes: number; rssBytes: number }> {
  const out: Array<{ pid: number; comm: string; peakRssBytes: number; rssBytes: number }> = [];
  for (const s of allStats().filter((p) => p.pgrp === pgid)) {
    try {
      const status = readFileSync(`/proc/${s.pid}/status`, 'utf8');
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      const rss = /VmRSS:\s+(\d+) kB/.exec(status);
      if (hwm) out.push({ pid: s.pid, comm: s.comm, peakRssBytes: Number(hwm[1]) * 1024, rssBytes: Number(rss?.[1] ?? 0) * 1024 });
    } catch {
      // gone
    }
  }
  return out.sort((a, b) => b.peakRssBytes - a.peakRssBytes);
}

/** Peak resident set (VmHWM) of the group's largest process, in bytes. */
export function peakRss(pgid: number): number {
  return groupMemory(pgid)[0]?.peakRssBytes ?? 0;
}

/** Every process descending from `root` (the postmaster: its backends and helpers), itself included. */
function descendants(root: number, stats: ProcStat[]): ProcStat[] {
  const byParent = new Map<number, ProcStat[]>();
  for (const s of stats) byParent.set(s.ppid, [...(byParent.get(s.ppid) ?? []), s]);
  const out: ProcStat[] = [];
  const self = stats.find((s) => s.pid === root);
  if (self) out.push(self);
  const stack = [root];
  while (stack.length) {
    for (const c of byParent.get(stack.pop()!) ?? []) {
      out.push(c);
      stack.push(c.pid);
    }
  }
  return out;
}

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export interface CpuGroups {
  /** Process groups by name (children of the benchmark). */
  groups: Record<string, number>;
  /** The postmaster pid: PostgreSQL is it and its descendants. */
  postmaster?: number;
}

export interface CpuSample {
  at: number;
  ticks: Record<string, number>;
  machine: { busy: number; total: number };
}

export function sampleCpu(what: CpuGroups): CpuSample {
  const stats = allStats();
  const ticks: Record<string, number> = {};
  // Ticks of processes that exited are lost; the benchmark samples around windows in which the processes live.
  for (const [name, pgid] of Object.entries(what.groups)) {
    ticks[name] = stats.filter((s) => s.pgrp === pgid).reduce((a, s) => a + s.ticks, 0);
  }
  if (what.postmaster) ticks.postgres = descendants(what.postmaster, stats).reduce((a, s) => a + s.ticks, 0);
  ticks.bench = stats.filter((s) => s.pid === process.pid).reduce((a, s) => a + s.ticks, 0);
  return { at: now(), ticks, machine: machineTicks() };
}

/** CPU used between two samples, in cores (1.0 = one core busy the whole time), per name; plus the machine's. */
export function cpuBetween(a: CpuSample, b: CpuSample, cores: number): Record<string, number> {
  const seconds = (b.at - a.at) / 1000;
  const out: Record<string, number> = {};
  for (const name of Object.keys(b.ticks)) {
    out[name] = round2((b.ticks[name]! - (a.ticks[name] ?? 0)) / TICKS_PER_SECOND / seconds);
  }
  const total = b.machine.total - a.machine.total;
  out.machine = total > 0 ? round2(((b.machine.busy - a.machine.busy) / total) * cores) : NaN;
  const ours = Object.entries(out)
    .filter(([k]) => k !== 'machine')
    .reduce((s, [, v]) => s + v, 0);
  out.other = round2(Math.max(0, out.machine - ours));
  return out;
}

export const round2 = (n: number) => Math.round(n * 100) / 100;

// ---------------------------------------------------------------------------
// GraphQL over HTTP (keep-alive)

export class GraphQLError extends Error {}

export class GraphQLClient {
  constructor(
    readonly url: string,
    readonly agent: Agent,
  ) {}

  query<T = any>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
    return this.post<T>(JSON.stringify({ query, variables }), token);
  }

  /** A request body serialised already: a load generator repeating one operation does it once. */
  async post<T = any>(body: string, token: string): Promise<T> {
    const res = await request(`${this.url}/graphql`, {
      method: 'POST',
      dispatcher: this.agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body,
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const json = (await res.body.json()) as { data?: T; errors?: unknown[] };
    if (json.errors || res.statusCode !== 200) throw new GraphQLError(`HTTP ${res.statusCode}: ${JSON.stringify(json.errors ?? json).slice(0, 500)}`);
    return json.data as T;
  }
}

/** Runs `task(i)` for i in [0, n) with at most `parallel` at once; resolves with the results in order. */
export async function pool<T>(n: number, parallel: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, n) }, async () => {
      while (next < n) {
        const i = next++;
        results[i] = await task(i);
      }
    }),
  );
  return results;
}
