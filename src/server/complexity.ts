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

/** The refusal of an operation that costs more than MAX_QUERY_COMPLEXITY, or undefined. */
export function complexityRefusal(args: OperationArgs): GraphQLError | undefined {
  let refusal: GraphQLError | undefined;
  const rule = createComplexityRule({
    context: (args.contextValue ?? {}) as object,
    variableValues: args.variableValues ?? {},
    operationName: args.operationName,
    validate: ({ complexity }) => {
      if (complexity <= MAX_QUERY_COMPLEXITY) return;
      refusal = new GraphQLError(
        `the operation could read about ${complexity} fields, more than ${MAX_QUERY_COMPLEXITY}: ask for smaller pages (first/last) or fewer nested lists (an event's deliveries count as 1,000)`,
        { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 400 } } },
      );
    },
  });
  // Only this rule's own verdict: the variables' and the operation name's errors are
  // execution's to report, in its words.
  validate(args.schema, args.document, [rule]);
  return refusal;
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
