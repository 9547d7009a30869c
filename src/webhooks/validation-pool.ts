// Tenants' schemas are checked in threads of their own, with a deadline. The bounds of
// checkSchemaCost make a check cheap, not free: a schema within them can still take a tenth of
// a second over a large event, and RE2's one fixed memory can fill. On the thread that serves
// every tenant's requests, that time would be every tenant's. Here a check that runs past its
// deadline ends with its thread (a fresh one takes its place, with fresh memory), a tenant has
// one check running at a time, and tenants take turns, so one tenant's costly checks leave the
// other thread to the rest. What waits is bounded too, in time and in bytes: a check that has
// not started within waitMs is refused (RATE_LIMITED), so a request never waits without end.
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
  /** The schema did not compile (a pattern RE2 cannot run, stored before RE2 was used, say). */
  | { seq: number; invalid: string }
  | { seq: number; failed: string };

/** What a thread says besides replies: loaded, or done compiling (the check's own deadline starts). */
type Notice = { ready: true } | { seq: number; compiled: true };

/** How a check ended, as the caller sees it. */
export type CheckOutcome =
  | { kind: 'done'; reply: CheckReply }
  /** Ran past the deadline (of the schema's compile, or of the check): its thread was ended. */
  | { kind: 'timeout'; phase: 'compile' | 'check' }
  /** The schema does not compile, on a fresh thread too. */
  | { kind: 'invalid'; message: string }
  /** The engine failed twice, or ran out of its memory limit. */
  | { kind: 'failed'; message: string }
  /** No thread could be started (twice): Hookline's fault, not the schema's. */
  | { kind: 'unavailable'; message: string }
  /**
   * Not run: the tenant (`tenant`) or the process (`process`) has as many checks waiting as
   * it may, or this one waited waitMs without starting (`waited`).
   */
  | { kind: 'busy'; why: 'tenant' | 'process' | 'waited' }
  | { kind: 'closed' };

export interface CheckPoolOptions {
  /** Threads at most, started when first needed (default 2). */
  threads?: number;
  /** How long one check may run (default 2 s). */
  deadlineMs?: number;
  /** How long compiling a schema may take, apart from its check (default the greater of 5 s and deadlineMs). */
  compileDeadlineMs?: number;
  /** How long a check may wait for its turn before it is refused (default 5 s). */
  waitMs?: number;
  /** A thread that has compiled this many types is replaced, which frees RE2's memory (default 500). */
  typesPerThread?: number;
  /** Checks of one tenant waiting at most (default 100). */
  waitingPerTenant?: number;
  /** The data of one tenant's waiting checks at most, in characters of JSON (default 16 Mi). */
  waitingBytesPerTenant?: number;
  /** The data of all waiting checks at most (default 64 Mi). */
  waitingBytes?: number;
  /** A thread's JavaScript heap at most, in MB (default 256). */
  memoryMb?: number;
  /** A thread idle this long ends, and its memory with it (default 60 s). */
  idleMs?: number;
}

interface Job {
  tenantId: string;
  request: CheckAsk;
  /** What its data holds in memory while it waits. */
  bytes: number;
  resolve: (outcome: CheckOutcome) => void;
  /** Tried once already: this try runs on a thread started for it, with fresh memory. */
  retried: boolean;
  waitTimer?: NodeJS.Timeout;
}

interface Thread {
  worker: Worker;
  /** Types whose validators it holds (or is compiling). */
  known: Set<string>;
  /** Whether it has loaded: a check's clock starts then, as loading is not the check's time. */
  online: boolean;
  job?: Job & { seq: number; phase: 'compile' | 'check'; timer?: NodeJS.Timeout };
  idleTimer?: NodeJS.Timeout;
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

let shared: CheckPool | undefined;

/**
 * The pool of catalogs made without options (the library's `new WebhookService(dataSource)`):
 * one per process, whatever the number of catalogs, its threads ending when idle.
 */
export function sharedCheckPool(): CheckPool {
  return (shared ??= new CheckPool());
}

export class CheckPool {
  private readonly threads: Array<Thread | undefined>;
  private readonly deadlineMs: number;
  private readonly compileDeadlineMs: number;
  readonly waitMs: number;
  private readonly typesPerThread: number;
  private readonly waitingPerTenant: number;
  private readonly waitingBytesPerTenant: number;
  private readonly waitingBytesLimit: number;
  private readonly memoryMb: number;
  private readonly idleMs: number;
  /** Waiting checks by tenant. */
  private readonly waiting = new Map<string, Job[]>();
  private readonly bytesByTenant = new Map<string, number>();
  private waitingBytes = 0;
  /** Tenants with a check running. */
  private readonly running = new Set<string>();
  /**
   * The turn each tenant with checks waiting or running last had, or (less a half) the turn it
   * came in at: the lowest goes next, so a tenant back after a pause takes its place behind
   * those that have waited since before, not before them.
   */
  private readonly lastTurn = new Map<string, number>();
  private turns = 0;
  private seq = 0;
  private started = 0;
  private done = 0;
  private closed = false;

  constructor(options: CheckPoolOptions = {}) {
    this.threads = new Array<Thread | undefined>(Math.max(1, options.threads ?? 2)).fill(undefined);
    this.deadlineMs = options.deadlineMs ?? 2_000;
    this.compileDeadlineMs = options.compileDeadlineMs ?? Math.max(5_000, this.deadlineMs);
    this.waitMs = options.waitMs ?? 5_000;
    this.typesPerThread = options.typesPerThread ?? 500;
    this.waitingPerTenant = options.waitingPerTenant ?? 100;
    this.waitingBytesPerTenant = options.waitingBytesPerTenant ?? 16 * 1024 * 1024;
    this.waitingBytesLimit = options.waitingBytes ?? 64 * 1024 * 1024;
    this.memoryMb = options.memoryMb ?? 256;
    this.idleMs = options.idleMs ?? 60_000;
  }

  /** How long a phase may take, in ms. */
  deadline(phase: 'compile' | 'check'): number {
    return phase === 'compile' ? this.compileDeadlineMs : this.deadlineMs;
  }

  /** Threads started so far (replacements included). */
  get threadsStarted(): number {
    return this.started;
  }

  /** Checks answered so far. */
  get checksDone(): number {
    return this.done;
  }

  /** Runs one check for the tenant, in its turn. */
  check(tenantId: string, request: CheckAsk): Promise<CheckOutcome> {
    if (this.closed) return Promise.resolve({ kind: 'closed' });
    const bytes = request.kind === 'data' ? request.dataJson.length : 0;
    if ((this.waiting.get(tenantId)?.length ?? 0) >= this.waitingPerTenant || (this.bytesByTenant.get(tenantId) ?? 0) + bytes > this.waitingBytesPerTenant) {
      return Promise.resolve({ kind: 'busy', why: 'tenant' });
    }
    if (this.waitingBytes + bytes > this.waitingBytesLimit) return Promise.resolve({ kind: 'busy', why: 'process' });
    return new Promise((resolve) => {
      this.enqueue({ tenantId, request, bytes, resolve, retried: false });
      this.pump();
    });
  }

  /** Ends the threads; checks waiting or running end as `closed`. */
  async close(): Promise<void> {
    this.closed = true;
    for (const jobs of this.waiting.values()) {
      for (const job of jobs) {
        clearTimeout(job.waitTimer);
        job.resolve({ kind: 'closed' });
      }
    }
    this.waiting.clear();
    this.bytesByTenant.clear();
    this.waitingBytes = 0;
    this.lastTurn.clear();
    await Promise.all(
      this.threads.map((thread, index) => {
        if (!thread) return undefined;
        this.threads[index] = undefined;
        clearTimeout(thread.idleTimer);
        const job = thread.job;
        thread.job = undefined;
        if (job) {
          clearTimeout(job.timer);
          job.resolve({ kind: 'closed' });
        }
        return thread.worker.terminate();
      }),
    );
  }

  private enqueue(job: Job, front = false): void {
    let jobs = this.waiting.get(job.tenantId);
    if (!jobs) this.waiting.set(job.tenantId, (jobs = []));
    if (front) jobs.unshift(job);
    else jobs.push(job);
    // Coming in now: behind those who had a turn before now, ahead of the one that just had it.
    if (!this.lastTurn.has(job.tenantId)) this.lastTurn.set(job.tenantId, this.turns - 0.5);
    this.bytesByTenant.set(job.tenantId, (this.bytesByTenant.get(job.tenantId) ?? 0) + job.bytes);
    this.waitingBytes += job.bytes;
    job.waitTimer = setTimeout(() => this.waitedTooLong(job), this.waitMs);
  }

  /** Takes a job out of the waiting ones (to run it, or to refuse it). */
  private unqueue(job: Job): void {
    clearTimeout(job.waitTimer);
    const jobs = this.waiting.get(job.tenantId);
    const at = jobs?.indexOf(job) ?? -1;
    if (at < 0) return;
    jobs!.splice(at, 1);
    if (!jobs!.length) {
      this.waiting.delete(job.tenantId);
      if (!this.running.has(job.tenantId)) this.lastTurn.delete(job.tenantId);
    }
    const left = (this.bytesByTenant.get(job.tenantId) ?? 0) - job.bytes;
    if (left > 0) this.bytesByTenant.set(job.tenantId, left);
    else this.bytesByTenant.delete(job.tenantId);
    this.waitingBytes -= job.bytes;
  }

  private waitedTooLong(job: Job): void {
    this.unqueue(job);
    job.resolve({ kind: 'busy', why: 'waited' });
  }

  private pump(): void {
    for (let index = 0; index < this.threads.length && !this.closed; index++) {
      if (this.threads[index]?.job) continue;
      const job = this.next();
      if (!job) return;
      // A retry takes a place with no thread if there is one, rather than end a warm idle one.
      const place = job.retried ? this.threads.findIndex((thread) => !thread) : -1;
      const at = place >= 0 ? place : index;
      if (at !== index) index--; // this place is still free for the next job
      try {
        this.start(at, job);
      } catch (error) {
        // No thread could be made (the system's limit of threads): this check ends, the others go on.
        this.running.delete(job.tenantId);
        if (!this.waiting.has(job.tenantId)) this.lastTurn.delete(job.tenantId);
        job.resolve({ kind: 'unavailable', message: String((error as Error)?.message ?? error) });
      }
    }
  }

  /** The first waiting check of the tenant, among those with none running, whose turn is the oldest. */
  private next(): Job | undefined {
    let chosen: string | undefined;
    let oldest = Infinity;
    for (const tenantId of this.waiting.keys()) {
      if (this.running.has(tenantId)) continue;
      const turn = this.lastTurn.get(tenantId)!;
      if (turn < oldest) [chosen, oldest] = [tenantId, turn];
    }
    if (chosen === undefined) return undefined;
    const job = this.waiting.get(chosen)![0]!;
    this.running.add(chosen); // before unqueue, which forgets the turn of a tenant with nothing left
    this.unqueue(job);
    this.lastTurn.set(chosen, ++this.turns);
    return job;
  }

  private start(index: number, job: Job): void {
    let thread = this.threads[index];
    const typeId = job.request.kind === 'data' ? job.request.typeId : undefined;
    // A retry runs on a thread of its own (whatever filled the other's memory is not in it); a
    // thread that compiled its share of types is replaced, and its validators (and what they
    // hold in RE2's memory) go with it.
    if (thread && (job.retried || (typeId && !thread.known.has(typeId) && thread.known.size >= this.typesPerThread))) {
      this.retire(index, thread);
      thread = undefined;
    }
    thread ??= this.spawn(index);
    clearTimeout(thread.idleTimer);
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
    thread.worker.ref();
    thread.worker.postMessage(request);
  }

  private startClock(index: number, thread: Thread): void {
    const job = thread.job;
    if (!job || this.closed) return;
    clearTimeout(job.timer);
    job.timer = setTimeout(() => this.timedOut(index, thread), this.deadline(job.phase));
  }

  private spawn(index: number): Thread {
    const worker = startWorker(this.memoryMb); // throws if the system gives no thread (see pump)
    this.started++;
    const thread: Thread = { worker, known: new Set(), online: false };
    worker.unref();
    worker.on('message', (reply: CheckReply | Notice) => this.replied(index, thread, reply));
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
    if (this.threads[index] === thread) {
      thread.worker.unref();
      // Ends when idle, and what it holds with it (pump() may give it a job first).
      thread.idleTimer = setTimeout(() => {
        if (!thread.job && this.threads[index] === thread) this.retire(index, thread);
      }, this.idleMs);
      thread.idleTimer.unref();
    }
    return job;
  }

  private replied(index: number, thread: Thread, reply: CheckReply | Notice): void {
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
    if ('invalid' in reply) {
      // The schema's own error (the engine's failures come as `failed`): final, and the thread goes on.
      if (job.request.kind === 'data') thread.known.delete(job.request.typeId);
      job.resolve({ kind: 'invalid', message: reply.invalid });
    } else if ('failed' in reply || 'unknownType' in reply) {
      // A fresh thread, with fresh memory, gets one more try; then it is the schema's doing.
      if (!job.retried) this.tryAgain(index, thread, job);
      else {
        this.retire(index, thread);
        job.resolve({ kind: 'failed', message: 'failed' in reply ? reply.failed : 'the validation thread lost the type' });
      }
    } else {
      this.done++;
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
    if (job && !job.retried && !this.closed) this.enqueue({ ...job, retried: true }, true);
    else job?.resolve(this.closed ? { kind: 'closed' } : thread.online ? { kind: 'failed', message } : { kind: 'unavailable', message });
    this.pump();
  }

  /** Ends a thread and frees its place. */
  private retire(index: number, thread: Thread): void {
    clearTimeout(thread.idleTimer);
    if (this.threads[index] === thread) this.threads[index] = undefined;
    void thread.worker.terminate();
  }

  /** Once more, on a fresh thread, at the front of its tenant's checks. */
  private tryAgain(index: number, thread: Thread, job: Job): void {
    this.retire(index, thread);
    if (this.closed) return job.resolve({ kind: 'closed' });
    this.enqueue({ ...job, retried: true }, true);
  }
}
