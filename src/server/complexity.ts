// How much an operation may ask for, reckoned from its shape before anything runs: each
// field costs 1, and a list repeats the cost of its selection as many times as it can be
// long (a page by its `first`/`last`, an event's deliveries by 1,000; see the fields'
// `complexity` in src/schema). Depth alone does not bound the work: an event's deliveries,
// each with its event, each with its deliveries... multiplies by the fan-out at every level,
// and one tenant's request could keep the process busy for every tenant.
//
// Nor does counting fields bound the answer: a field that holds up to 256 KiB (an event's
// `data`, a delivery's `payload`) counted 1 like an id, so 822 bytes of query (8 aliases of a
// page of 100 deliveries with their payloads and events' data) built a 408 MB answer, and the
// process 2 GB, while other tenants waited. Such a field costs by its size: see sizeComplexity.
import { createComplexityRule } from '@pothos/plugin-complexity';
import { GraphQLError, getOperationAST, validate, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ErrorCode, HooklineError } from '../errors.js';
import { TenantShares } from '../db/tenant-scope.js';
import { SCHEMA_LIMITS } from '../webhooks/catalog.js';

/** At most this cost per operation: 50 pages of 100 rows of 10 fields, or one event's 1,000 deliveries 16 times over. */
export const MAX_QUERY_COMPLEXITY = 50_000;

/**
 * The cost of a value of up to 256 KiB (an event's `data`, a delivery's `payload`, a
 * subscription's `headers`): an operation reads at most 125 of them, about 31 MiB, and a page of
 * 100 deliveries with their payloads (the largest page) still fits.
 */
export const LARGE_VALUE_COMPLEXITY = 400;

/** Said in the descriptions of the fields that cost LARGE_VALUE_COMPLEXITY. */
export const LARGE_VALUE_NOTE = `A large value: it counts ${LARGE_VALUE_COMPLEXITY} toward the ${MAX_QUERY_COMPLEXITY.toLocaleString('en')} an operation may cost, where most fields count 1.`;

/** The cost of a field whose value may take up to `bytes`: as a large value's, in proportion, and at least 1 (a value of up to 655 bytes). */
export function sizeComplexity(bytes: number): number {
  return Math.max(1, Math.ceil((LARGE_VALUE_COMPLEXITY * bytes) / (256 * 1024)));
}

export interface OperationArgs {
  schema: GraphQLSchema;
  document: DocumentNode;
  variableValues?: Record<string, unknown> | null;
  operationName?: string | null;
  contextValue?: unknown;
}

/** Set on the context by a field whose cost depends on its arguments (a page's size). */
const DEPENDS_ON_ARGUMENTS = Symbol('complexity depends on arguments');

/** For a field's `complexity` function: says that this operation's cost cannot be reused for other variables. */
export function dependsOnArguments(ctx: unknown): void {
  if (ctx && typeof ctx === 'object') (ctx as Record<symbol, boolean>)[DEPENDS_ON_ARGUMENTS] = true;
}

/**
 * The cost of operations that does not depend on their variables (no page in them), by
 * document and operation name: the parse cache hands the same document for the same text,
 * so a client's repeated mutation is reckoned once (a reckoning takes ~60 µs).
 */
const fixedCosts = new WeakMap<DocumentNode, Map<string, number>>();

/** About how many bytes of answer one unit of cost stands for (a large value's 256 KiB over its cost). */
export const BYTES_PER_COMPLEXITY = (256 * 1024) / LARGE_VALUE_COMPLEXITY;

/** The refusal of an operation that costs more than MAX_QUERY_COMPLEXITY, or undefined. */
export function complexityRefusal(args: OperationArgs): GraphQLError | undefined {
  const complexity = operationComplexity(args);
  if (complexity === undefined || complexity <= MAX_QUERY_COMPLEXITY) return undefined;
  return new GraphQLError(
    `the operation could cost ${complexity}, more than ${MAX_QUERY_COMPLEXITY} (a field costs 1, a value of up to 256 KiB such as payload, data or headers ${LARGE_VALUE_COMPLEXITY}, smaller values in proportion (an event type's schema ${sizeComplexity(SCHEMA_LIMITS.bytes)}), and a list its selection once per row it can hold): ask for smaller pages (first/last), fewer nested lists (an event's deliveries count as 1,000) or fewer large values`,
    { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 400 } } },
  );
}

/** What an operation could cost (see above), or undefined if it cannot be reckoned (an unknown operation name, say). */
export function operationComplexity(args: OperationArgs): number | undefined {
  const name = args.operationName ?? '';
  let complexity = fixedCosts.get(args.document)?.get(name);
  if (complexity === undefined) {
    // Reckoned with a context of its own, which tells whether a page's size was read.
    const context: Record<string | symbol, unknown> = { ...((args.contextValue ?? {}) as object) };
    const rule = createComplexityRule({
      context,
      variableValues: args.variableValues ?? {},
      operationName: args.operationName,
      onResult: (result, errors) => {
        if (!errors.length) complexity = Math.max(complexity ?? 0, result.complexity);
      },
    });
    // Only this rule's verdict: the variables' and the operation name's errors are
    // execution's to report, in its words.
    validate(args.schema, args.document, [rule]);
    if (complexity === undefined) return undefined;
    if (!context[DEPENDS_ON_ARGUMENTS]) {
      let byName = fixedCosts.get(args.document);
      if (!byName) fixedCosts.set(args.document, (byName = new Map()));
      byName.set(name, complexity);
    }
  }
  return complexity;
}

/** An operation that could cost more than this (more than ten payloads or events' data, 2.5 MiB) is heavy: see heavyTurns. */
export const HEAVY_COMPLEXITY = 10 * LARGE_VALUE_COMPLEXITY;

/** How long a tenant's heavy operation waits for its turn (heavyTurns), and how many may wait. */
const HEAVY_WAIT_MS = 10_000;
const HEAVY_WAITING = 16;

/**
 * A tenant's heavy reads (queries over HEAVY_COMPLEXITY: pages of payloads or events' data), one
 * at a time in this process, the others waiting their turn, in order (at most HEAVY_WAITING of them,
 * each at most HEAVY_WAIT_MS; then RATE_LIMITED). Their answers are read and written out (tens of
 * MB of JSON: events' data parsed and written again; payloads are spliced in as stored over HTTP,
 * WebSocket and Server-Sent Events, see RawJson) on the process's one thread, which every
 * tenant's requests and the dispatcher share: a review had one tenant's 8 pages of 100 payloads of 256 KiB
 * at a time hold another tenant's `{ viewer { id } }` for 2.4 s at the median, and its deliveries
 * for up to 3.7 s. One at a time, another tenant waits at most for the part of one of them that
 * runs without a pause.
 */
export function heavyTurns(): Plugin {
  const turns = new TenantShares(
    1,
    HEAVY_WAIT_MS,
    () =>
      new HooklineError(
        ErrorCode.RATE_LIMITED,
        `this tenant's operations that read many large values (a cost over ${HEAVY_COMPLEXITY.toLocaleString('en')}: more than 10 payloads or events' data) run one at a time in a process, and more are waiting than get a turn within ${HEAVY_WAIT_MS / 1000} s; send them one after another, or ask for smaller pages`,
      ),
    HEAVY_WAITING,
  );
  return {
    onExecute({ args, executeFn, setExecuteFn, setResultAndStopExecution }) {
      const viewer = (args.contextValue as { viewer?: { kind: string; tenantId?: string } }).viewer;
      if (viewer?.kind !== 'tenant' || !viewer.tenantId) return;
      // Reads: a mutation's answer, reckoned with an event's 1,000 deliveries, may look heavy
      // and is not (a trigger answered with its deliveries), and triggers go side by side.
      if (getOperationAST(args.document, args.operationName)?.operation !== 'query') return;
      const cost = operationComplexity(args);
      if (cost === undefined || cost <= HEAVY_COMPLEXITY) return;
      return turns.take(viewer.tenantId).then(
        (release) => {
          // Its answer is written out just after (in the same turn of the event loop as the
          // execution's end): the next one's turn begins after that. Once, whichever comes: the
          // execution's end, or its failure (after which no onExecuteDone runs).
          let released = false;
          const done = () => {
            if (released) return;
            released = true;
            setImmediate(release);
          };
          setExecuteFn(async (executeArgs) => {
            try {
              return await executeFn(executeArgs);
            } catch (error) {
              done();
              throw error;
            }
          });
          return { onExecuteDone: done };
        },
        (error: HooklineError) => {
          // As the key's rate limit answers: a turn comes within a second or so.
          setResultAndStopExecution({
            errors: [new GraphQLError(error.message, { extensions: { code: error.code, http: { status: 429, headers: { 'retry-after': '1' } } } })],
          });
        },
      );
    },
  };
}

/** Refuses a costly operation before it executes or subscribes (HTTP and Server-Sent Events; app.ts checks WebSocket operations). */
export const complexityLimit: Plugin = {
  onExecute({ args, setResultAndStopExecution }) {
    const refusal = complexityRefusal(args);
    if (refusal) setResultAndStopExecution({ errors: [refusal] });
  },
  onSubscribe({ args, setResultAndStopExecution }) {
    const refusal = complexityRefusal(args);
    if (refusal) setResultAndStopExecution({ errors: [refusal] });
  },
};
