// How much an operation may ask for, reckoned from its shape before anything runs: each
// field costs 1, and a list repeats the cost of its selection as many times as it can be
// long (a page by its `first`/`last`, an event's deliveries by 1,000; see the fields'
// `complexity` in src/schema). Depth alone does not bound the work: an event's deliveries,
// each with its event, each with its deliveries... multiplies by the fan-out at every level,
// and one tenant's request could keep the process busy for every tenant.
import { createComplexityRule } from '@pothos/plugin-complexity';
import { GraphQLError, validate, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ErrorCode } from '../errors.js';

/** At most this cost per operation: 50 pages of 100 rows of 10 fields, or one event's 1,000 deliveries 16 times over. */
export const MAX_QUERY_COMPLEXITY = 50_000;

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

/** The refusal of an operation that costs more than MAX_QUERY_COMPLEXITY, or undefined. */
export function complexityRefusal(args: OperationArgs): GraphQLError | undefined {
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
  if (complexity <= MAX_QUERY_COMPLEXITY) return undefined;
  return new GraphQLError(
    `the operation could read about ${complexity} fields, more than ${MAX_QUERY_COMPLEXITY}: ask for smaller pages (first/last) or fewer nested lists (an event's deliveries count as 1,000)`,
    { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 400 } } },
  );
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
