// Tenants' schemas are checked in threads of their own, with a deadline. The bounds of
// checkSchemaCost make a check cheap, not free: a schema within them can still take a second
// over a large event, and RE2's one fixed memory can fill. On the thread that serves every
// tenant's requests, that second would be every tenant's. Here a check that runs past its
// deadline ends with its thread (a fresh one takes its place, with fresh memory), and a tenant
// has one check running at a time, taking turns with the others, so one tenant's costly checks
// leave the other thread to the rest.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

/** What a validation thread is asked: to check a schema as createEventType is given it, or data against a type's schema. */
export type CheckAsk =
  | { kind: 'schema'; schema: object }
  /** `schema` is sent the first time a thread sees the type; it keeps the compiled validator. */
  | { kind: 'data'; typeId: string; schema?: object; dataJson: string };
export type CheckRequest = CheckAsk & { seq: number };

export type CheckReply =
  | { seq: number; problem?: string }
  | { seq: number; verdict?: { errors: string } | { async: true } }
  | { seq: number; unknownType: true }
  | { seq: number; failed: string };

/** How a check ended, as the caller sees it. */
export type CheckOutcome =
  | { kind: 'done'; reply: CheckReply }
  /** Ran past the deadline (of the schema's compile, or of the check): its thread was ended. */
  | { kind: 'timeout'; phase: 'compile' | 'check' }
  /** The engine failed twice, or ran out of its memory limit. */
  | { kind: 'failed'; message: string }
  /** No thread could be started (twice): Hookline's fault, not the schema's. */
  | { kind: 'unavailable'; message: string }
  /** The tenant already has this many checks waiting. */
  | { kind: 'busy' }
  | { kind: 'closed' };

export interface CheckPoolOptions {
  /** Threads at most, started when first needed (default 2). */
  threads?: number;
  /** How long one check may run (default 2 s). */
  deadlineMs?: number;
  /** How long compiling a schema may take, apart from its check (default the greater of 5 s and deadlineMs). */
  compileDeadlineMs?: number;
  /** A thread that has compiled this many types is replaced, which frees RE2's memory (default 500). */
  typesPerThread?: number;
  /** Checks of one tenant waiting for a thread at most (default 1,000). */
  waitingPerTenant?: number;
  /** A thread's JavaScript heap at most, in MB (default 256). */
  memoryMb?: number;
}

interface Job {
  tenantId: string;
  request: CheckAsk;
  resolve: (outcome: CheckOutcome) => void;
  retried: boolean;
}

interface Thread {
  worker: Worker;
  /** Types whose validators it holds. */
  known: Set<string>;
  /** Whether it has loaded: a check's clock starts then, as loading is not the check's time. */
  online: boolean;
  job?: Job & { seq: number; phase: 'compile' | 'check'; timer?: NodeJS.Timeout };
}

const HERE = import.meta.url;
/** How long a thread may take to load before it is given up (about 0.1 s when the machine is not starved). */
const START_MS = 10_000;

/** A validation thread: the compiled file, or the TypeScript source through tsx when run from source (tests, `npm run dev`). */
function startWorker(memoryMb: number): Worker {
  const resourceLimits = { maxOldGenerationSizeMb: memoryMb };
  if (!HERE.endsWith('.ts')) return new Worker(new URL('./validation-worker.js', HERE), { resourceLimits });
  const source = new URL('./validation-worker.ts', HERE).href;
  // tsx's ESM entry (require.resolve finds its CommonJS one, which cannot register in a thread).
  const tsx = pathToFileURL(createRequire(HERE).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const load = `import(${JSON.stringify(tsx)}).then(({ tsImport }) => tsImport(${JSON.stringify(source)}, ${JSON.stringify(source)}))`;
  return new Worker(load, { eval: true, resourceLimits });
}

export class CheckPool {
  private readonly threads: Array<Thread | undefined>;
  private readonly deadlineMs: number;
  private readonly compileDeadlineMs: number;
  private readonly typesPerThread: number;
  private readonly waitingPerTenant: number;
  private readonly memoryMb: number;
  /** Waiting checks by tenant; the order of the keys is the order tenants take turns in. */
  private readonly waiting = new Map<string, Job[]>();
  /** Tenants with a check running. */
  private readonly running = new Set<string>();
  /** When each tenant with checks waiting or running last had a turn: the longest waiting goes next. */
  private readonly lastTurn = new Map<string, number>();
  private turns = 0;
  private seq = 0;
  private closed = false;

  constructor(options: CheckPoolOptions = {}) {
    this.threads = new Array<Thread | undefined>(Math.max(1, options.threads ?? 2)).fill(undefined);
    this.deadlineMs = options.deadlineMs ?? 2_000;
    this.compileDeadlineMs = options.compileDeadlineMs ?? Math.max(5_000, this.deadlineMs);
    this.typesPerThread = options.typesPerThread ?? 500;
    this.waitingPerTenant = options.waitingPerTenant ?? 1_000;
    this.memoryMb = options.memoryMb ?? 256;
  }

  /** How long a phase may take, in ms. */
  deadline(phase: 'compile' | 'check'): number {
    return phase === 'compile' ? this.compileDeadlineMs : this.deadlineMs;
  }

  /** Runs one check for the tenant, in its turn. */
  check(tenantId: string, request: CheckAsk): Promise<CheckOutcome> {
    if (this.closed) return Promise.resolve({ kind: 'closed' });
    const jobs = this.waiting.get(tenantId) ?? [];
    if (jobs.length >= this.waitingPerTenant) return Promise.resolve({ kind: 'busy' });
    return new Promise((resolve) => {
      jobs.push({ tenantId, request, resolve, retried: false });
      if (jobs.length === 1) this.waiting.set(tenantId, jobs);
      this.pump();
    });
  }

  /** Ends the threads; checks waiting or running end as `closed`. */
  async close(): Promise<void> {
    this.closed = true;
    for (const jobs of this.waiting.values()) for (const job of jobs) job.resolve({ kind: 'closed' });
    this.waiting.clear();
    this.lastTurn.clear();
    await Promise.all(
      this.threads.map((thread, index) => {
        if (!thread) return undefined;
        this.threads[index] = undefined;
        if (thread.job) {
          clearTimeout(thread.job.timer);
          thread.job.resolve({ kind: 'closed' });
        }
        return thread.worker.terminate();
      }),
    );
  }

  private pump(): void {
    for (let index = 0; index < this.threads.length && !this.closed; index++) {
      if (this.threads[index]?.job) continue;
      const job = this.next();
      if (!job) return;
      this.start(index, job);
    }
  }

  /**
   * The first waiting check of the tenant, among those with none running, whose last turn is
   * the oldest (none: first come first served).
   */
  private next(): Job | undefined {
    let chosen: string | undefined;
    let oldest = Infinity;
    for (const tenantId of this.waiting.keys()) {
      if (this.running.has(tenantId)) continue;
      const turn = this.lastTurn.get(tenantId) ?? -1;
      if (turn < oldest) [chosen, oldest] = [tenantId, turn];
    }
    if (chosen === undefined) return undefined;
    const jobs = this.waiting.get(chosen)!;
    const job = jobs.shift()!;
    if (!jobs.length) this.waiting.delete(chosen);
    this.lastTurn.set(chosen, ++this.turns);
    return job;
  }

  private start(index: number, job: Job): void {
    let thread = this.threads[index];
    const typeId = job.request.kind === 'data' ? job.request.typeId : undefined;
    if (thread && typeId && !thread.known.has(typeId) && thread.known.size >= this.typesPerThread) {
      // Its validators (and what they hold in RE2's memory) go with it.
      void thread.worker.terminate();
      thread = undefined;
    }
    thread ??= this.spawn(index);
    const seq = ++this.seq;
    let request = { ...job.request, seq } as CheckRequest;
    // What the thread must compile first has the compile's allowance, then the check's (see replied).
    let phase: 'compile' | 'check' = 'compile';
    if (request.kind === 'data') {
      if (thread.known.has(request.typeId)) [request, phase] = [{ ...request, schema: undefined }, 'check'];
      thread.known.add(request.typeId);
    }
    thread.job = { ...job, seq, phase };
    if (thread.online) this.startClock(index, thread);
    else thread.job.timer = setTimeout(() => this.lost(index, thread, `the validation thread did not start within ${START_MS / 1000} s`), START_MS);
    this.running.add(job.tenantId);
    thread.worker.ref();
    thread.worker.postMessage(request);
  }

  private startClock(index: number, thread: Thread): void {
    const job = thread.job;
    if (!job) return;
    clearTimeout(job.timer);
    job.timer = setTimeout(() => this.timedOut(index, thread), this.deadline(job.phase));
  }

  private spawn(index: number): Thread {
    const worker = startWorker(this.memoryMb);
    const thread: Thread = { worker, known: new Set(), online: false };
    worker.unref();
    worker.on('message', (reply: CheckReply | { ready: true } | { seq: number; compiled: true }) => this.replied(index, thread, reply));
    // An uncaught error or the heap limit: the thread is gone.
    worker.on('error', (error) => this.lost(index, thread, error.message));
    worker.on('exit', () => this.lost(index, thread, 'the validation thread stopped'));
    this.threads[index] = thread;
    return thread;
  }

  private finish(index: number, thread: Thread): (Job & { phase: 'compile' | 'check' }) | undefined {
    const job = thread.job;
    if (!job) return undefined;
    clearTimeout(job.timer);
    thread.job = undefined;
    this.running.delete(job.tenantId);
    if (!this.waiting.has(job.tenantId)) this.lastTurn.delete(job.tenantId);
    if (this.threads[index] === thread) thread.worker.unref();
    return job;
  }

  private replied(index: number, thread: Thread, reply: CheckReply | { ready: true } | { seq: number; compiled: true }): void {
    if ('ready' in reply) {
      thread.online = true;
      this.startClock(index, thread);
      return;
    }
    if (thread.job?.seq !== reply.seq) return;
    if ('compiled' in reply) {
      // The check itself now, with its own deadline.
      thread.job.phase = 'check';
      this.startClock(index, thread);
      return;
    }
    const job = this.finish(index, thread)!;
    if ('failed' in reply || 'unknownType' in reply) {
      // A fresh thread, with fresh memory, gets one more try; then it is the schema's doing.
      this.retire(index, thread);
      if (!job.retried) this.retry(job);
      else job.resolve({ kind: 'failed', message: 'failed' in reply ? reply.failed : 'the validation thread lost the type' });
    } else {
      job.resolve({ kind: 'done', reply });
    }
    this.pump();
  }

  private timedOut(index: number, thread: Thread): void {
    const job = this.finish(index, thread);
    this.retire(index, thread);
    job?.resolve({ kind: 'timeout', phase: job.phase });
    this.pump();
  }

  private lost(index: number, thread: Thread, message: string): void {
    if (this.threads[index] !== thread) return;
    this.retire(index, thread);
    const job = this.finish(index, thread);
    if (job && !job.retried) this.retry(job);
    else job?.resolve(thread.online ? { kind: 'failed', message } : { kind: 'unavailable', message });
    this.pump();
  }

  /** Ends a thread and frees its place. */
  private retire(index: number, thread: Thread): void {
    if (this.threads[index] === thread) this.threads[index] = undefined;
    void thread.worker.terminate();
  }

  /** Back to the front of its tenant's turn. */
  private retry(job: Job): void {
    if (this.closed) return job.resolve({ kind: 'closed' });
    const jobs = this.waiting.get(job.tenantId);
    const again = { ...job, retried: true };
    if (jobs) jobs.unshift(again);
    else this.waiting.set(job.tenantId, [again]);
  }
}
