// One execution per update, not per subscriber. Every subscriber of a tenant
// receives the same snapshot object (see delivery-updates.ts), and the result
// of executing one operation with the same variables on it is the same for
// all of them, so it is computed once and shared: with a thousand dashboards
// open, an update costs one execution and a thousand sends.
//
// Updates are executed ahead of the client, several at once, and sent in their
// order: executed one at a time, each waiting for its database reads before the
// next began, a busy tenant's updates piled up behind the server's own work and
// a client reading promptly was cut off as too slow. Only so many updates are
// taken ahead of what the client has read (LOOKAHEAD, fewer for an operation whose
// answers can be large: see lookaheadFor), so one that stops reading still leaves
// the rest waiting in its buffer, where the limits apply.
//
// The updates taken together share one context (contextForEvent): their lookups
// (a delivery's subscription, say) go to the database as one batched query, and
// what they load belongs to them, so later updates read the database afresh, and
// a subscription that lives for days holds nothing from the updates it has sent.
import {
  createSourceEventStream,
  execute,
  getOperationAST,
  GraphQLError,
  Kind,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type FragmentDefinitionNode,
} from 'graphql';
// graphql-js's own, so a root field is found exactly as execution will find it.
import { collectFields } from 'graphql/execution/collectFields.js';
import { BYTES_PER_COMPLEXITY, operationComplexity } from '../server/complexity.js';

type Mask = (error: unknown) => GraphQLError;
type SubscriptionArgs = Pick<ExecutionArgs, 'schema' | 'document' | 'operationName' | 'variableValues'>;

export interface SharedExecutionOptions {
  /** Masks the errors of the results (see server/graphql.ts). */
  mask: Mask;
  /**
   * The context of the executions of updates taken together, from the subscriber's: fresh
   * for each such batch, so nothing loaded for it is served for later updates. It is shared
   * by every subscriber of those updates, which all belong to the snapshot's tenant.
   */
  contextForEvent: (context: unknown) => unknown;
  /** Counts the updates taken ahead of the clients (hookline_live_updates_ahead). */
  ahead?: { inc(n?: number): void; dec(n?: number): void };
}

/**
 * Only deliveryUpdated is known to emit shared, tenant-scoped snapshots. Its root field is
 * found as execution finds it, through fragments too: one in a fragment, taken for another
 * subscription, would be executed by Yoga with the subscriber's context for every update,
 * its loaders serving what they loaded first (a subscription's old url) for ever.
 */
export function isSharedSubscription({ schema, document, operationName, variableValues }: SubscriptionArgs): boolean {
  const operation = getOperationAST(document, operationName);
  const subscriptionType = schema.getSubscriptionType();
  if (operation?.operation !== 'subscription' || !subscriptionType) return false;
  const fragments: Record<string, FragmentDefinitionNode> = {};
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments[definition.name.value] = definition;
  }
  const fields = [...collectFields(schema, fragments, variableValues ?? {}, subscriptionType, operation.selectionSet).values()];
  return fields.length === 1 && fields[0]!.every((field) => field.name.value === 'deliveryUpdated');
}

const documentIds = new WeakMap<DocumentNode, number>();
let lastDocumentId = 0;
/** Results per update object, per operation and variables; they go when the update does. */
const results = new WeakMap<object, Map<string, Promise<ExecutionResult>>>();

function maskResult(result: ExecutionResult, mask: Mask): ExecutionResult {
  return result.errors ? { ...result, errors: result.errors.map((e) => mask(e)) } : result;
}

/**
 * The executions of every subscriber go through one line, one subscriber's batch a turn of the
 * event loop, tenants taking turns: so every request and socket gets its turn between them.
 * Started at once, each by a setImmediate of its own, the batches of a tenant's 200 subscribers
 * (whose operations differ, a name or an alias) ran in one go at each update, and every other
 * tenant's request waited behind them, seconds under that tenant's stream of updates.
 */
export class LiveTurns {
  /** Tasks by tenant; the map's order is the tenants' turns. */
  private readonly queues = new Map<string, Array<() => void>>();
  private scheduled = false;

  add(tenant: string, task: () => void): void {
    let queue = this.queues.get(tenant);
    if (!queue) this.queues.set(tenant, (queue = []));
    queue.push(task);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // Set within the check phase, an immediate runs at the next turn of the loop, after its I/O.
    setImmediate(() => this.turn());
  }

  private turn(): void {
    this.scheduled = false;
    const next = this.queues.entries().next();
    if (next.done) return;
    const [tenant, queue] = next.value;
    const task = queue.shift()!;
    this.queues.delete(tenant);
    if (queue.length) this.queues.set(tenant, queue); // behind the other tenants
    if (this.queues.size) this.schedule();
    task();
  }
}

const liveTurns = new LiveTurns();

/** Updates executed, or being executed, ahead of what the client has read: at most this many. */
export const LOOKAHEAD = 100;
/**
 * And at most about this much answer: an update's answer can be as large as its operation's
 * cost allows (a delivery's payload and its event's data are 256 KiB each; an operation may
 * cost 50,000, some 31 MiB), and a client that stops reading holds what was taken for it, as
 * long as its socket lasts. 100 answers of payload and data ahead of each of a tenant's
 * stalled subscribers took a process from 0.3 to 1.1 GB in seconds.
 */
export const LOOKAHEAD_BYTES = 2 * 1024 * 1024;

/** How many updates are taken ahead of a client whose operation costs `cost` (at least 1). */
export function lookaheadFor(cost: number | undefined): number {
  if (cost === undefined) return 1;
  return Math.max(1, Math.min(LOOKAHEAD, Math.floor(LOOKAHEAD_BYTES / (Math.max(cost, 1) * BYTES_PER_COMPLEXITY))));
}
/** Updates one subscriber's turn executes, at most. */
const TURN_BATCH = 25;

/**
 * A source may have this method: called with true while the client waits for an update the
 * server is still executing (its reads held up by a lock, a slow database), and with false
 * once it has it. Meanwhile the client is not the one behind, and must not be cut off as if
 * it had stopped reading (see LiveUpdates.subscribe).
 */
export const SERVER_BEHIND = Symbol.for('hookline.live.serverBehind');

export interface ServerBehindAware {
  [SERVER_BEHIND]?: (behind: boolean) => void;
}

export async function subscribeShared(
  args: ExecutionArgs,
  { mask, contextForEvent, ahead: aheadGauge }: SharedExecutionOptions,
): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  const source = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in source)) return maskResult(source, mask);
  const lookahead = lookaheadFor(operationComplexity(args));
  let documentId = documentIds.get(args.document);
  if (documentId === undefined) documentIds.set(args.document, (documentId = ++lastDocumentId));
  const key = `${documentId}|${args.operationName ?? ''}|${JSON.stringify(args.variableValues ?? {})}`;
  const events = (source as AsyncIterable<object>)[Symbol.asyncIterator]() as AsyncIterator<object> & ServerBehindAware;

  /** What the client will read next, in order: results (settled or not), then the end. */
  const ahead: Array<{ result: Promise<IteratorResult<ExecutionResult>>; settled: boolean }> = [];
  const push = (result: Promise<IteratorResult<ExecutionResult>>) => {
    const entry = { result, settled: false };
    const settled = () => (entry.settled = true);
    void result.then(settled, settled);
    ahead.push(entry);
    aheadGauge?.inc();
  };
  let finished = false; // returned by the client
  let pumping = false;
  // The client waits for `ahead` to fill, the pump for it to empty: each wakes the other.
  let waiters: Array<() => void> = [];
  const wake = () => {
    const woken = waiters;
    waiters = [];
    for (const resolve of woken) resolve();
  };
  const nextChange = () => new Promise<void>((resolve) => waiters.push(resolve));

  // Executions run in batches, one batch at a time: the updates taken while one runs make the
  // next, with one context, so their loaders read the database once for them all however many
  // there are, and one subscriber never has more than one batch of reads under way.
  const batch: Array<{ event: object; settle: (result: Promise<ExecutionResult>) => void }> = [];
  let running = false; // set when a run is scheduled (resultOf), cleared when it ends
  let tenant = '';
  // One batch a turn (see liveTurns); once its reads are done, the next waits for another turn.
  const runBatches = async () => {
    try {
      const taken = batch.splice(0, TURN_BATCH);
      // Made inside the executions, so that a failure to make it is theirs, answered as an error.
      let contextValue: unknown;
      const executions = taken.map(({ event, settle }) => {
        const result = Promise.resolve()
          .then(() => execute({ ...args, rootValue: event, contextValue: (contextValue ??= contextForEvent(args.contextValue)) }))
          .then((r) => maskResult(r, mask), (error: unknown) => ({ errors: [mask(error)] }));
        settle(result);
        return result;
      });
      await Promise.allSettled(executions); // (each answers its failure as an error result)
    } finally {
      if (batch.length) liveTurns.add(tenant, () => void runBatches());
      else running = false;
    }
  };
  const resultOf = (event: object): Promise<ExecutionResult> => {
    let byKey = results.get(event);
    if (!byKey) results.set(event, (byKey = new Map()));
    let result = byKey.get(key);
    if (!result) {
      result = new Promise((settle) => batch.push({ event, settle }));
      byKey.set(key, result);
      // At this subscriber's turn (see liveTurns): the updates waiting then are taken in one batch.
      if (!running) {
        running = true;
        tenant = String((event as { tenantId?: unknown }).tenantId ?? '');
        liveTurns.add(tenant, () => void runBatches());
      }
    }
    return result;
  };

  // Takes updates from the source as they come, while the client is less than `lookahead` behind.
  const pump = async () => {
    while (!finished) {
      if (ahead.length >= lookahead) {
        await nextChange();
        continue;
      }
      let event: IteratorResult<object>;
      try {
        event = await events.next();
      } catch (error) {
        if (finished) return; // returned meanwhile: nothing more is read
        // The stream ended with an error (a subscriber cut off, say): say why, after what came before.
        push(Promise.resolve({ value: { errors: [mask(error)] }, done: false }));
        push(Promise.resolve({ value: undefined, done: true }));
        wake();
        return;
      }
      if (finished) return;
      if (event.done) {
        push(Promise.resolve({ value: undefined, done: true }));
        wake();
        return;
      }
      push(resultOf(event.value).then((value) => ({ value, done: false })));
      wake();
    }
  };

  const iterator: AsyncIterableIterator<ExecutionResult> = {
    async next() {
      if (!pumping) {
        pumping = true;
        void pump();
      }
      while (!ahead.length) {
        if (finished) return { value: undefined, done: true };
        await nextChange();
      }
      const head = ahead.shift()!;
      aheadGauge?.dec();
      wake(); // room for one more
      let result: IteratorResult<ExecutionResult>;
      if (head.settled) result = await head.result;
      else {
        // The client is reading: it is the server that has yet to execute what it will read.
        events[SERVER_BEHIND]?.(true);
        try {
          result = await head.result;
        } finally {
          events[SERVER_BEHIND]?.(false);
        }
      }
      if (result.done) finished = true;
      return result;
    },
    async return() {
      finished = true;
      aheadGauge?.dec(ahead.length);
      ahead.length = 0;
      wake();
      await events.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
