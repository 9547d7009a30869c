// One execution per update, not per subscriber. Every subscriber of a tenant
// receives the same snapshot object (see delivery-updates.ts), and the result
// of executing one operation with the same variables on it is the same for
// all of them, so it is computed once and shared: with a thousand dashboards
// open, an update costs one execution and a thousand sends.
//
// Each execution gets its own context (contextForEvent): what it loads (the
// loaders' caches) belongs to that one update, so the next update reads the
// database afresh, and a subscription that lives for days holds nothing from
// the updates it has sent.
import {
  createSourceEventStream,
  execute,
  getOperationAST,
  GraphQLError,
  Kind,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';

type Mask = (error: unknown) => GraphQLError;

export interface SharedExecutionOptions {
  /** Masks the errors of the results (see server/graphql.ts). */
  mask: Mask;
  /**
   * The context of one execution, from the subscriber's: fresh per update, so nothing
   * loaded for one update is served for the next. It is shared by every subscriber of
   * the update, which all belong to the snapshot's tenant.
   */
  contextForEvent: (context: unknown) => unknown;
}

/** Only deliveryUpdated is known to emit shared, tenant-scoped snapshots. */
export function isSharedSubscription(document: DocumentNode, operationName?: string | null): boolean {
  const operation = getOperationAST(document, operationName);
  if (operation?.operation !== 'subscription') return false;
  const [field, ...others] = operation.selectionSet.selections;
  return !others.length && field?.kind === Kind.FIELD && field.name.value === 'deliveryUpdated';
}

const documentIds = new WeakMap<DocumentNode, number>();
let lastDocumentId = 0;
/** Results per update object, per operation and variables; they go when the update does. */
const results = new WeakMap<object, Map<string, Promise<ExecutionResult>>>();

function maskResult(result: ExecutionResult, mask: Mask): ExecutionResult {
  return result.errors ? { ...result, errors: result.errors.map((e) => mask(e)) } : result;
}

export async function subscribeShared(
  args: ExecutionArgs,
  { mask, contextForEvent }: SharedExecutionOptions,
): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  const source = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in source)) return maskResult(source, mask);
  let documentId = documentIds.get(args.document);
  if (documentId === undefined) documentIds.set(args.document, (documentId = ++lastDocumentId));
  const key = `${documentId}|${args.operationName ?? ''}|${JSON.stringify(args.variableValues ?? {})}`;
  const events = (source as AsyncIterable<object>)[Symbol.asyncIterator]();
  let finished = false;

  const iterator: AsyncIterableIterator<ExecutionResult> = {
    async next() {
      if (finished) return { value: undefined, done: true };
      let event: IteratorResult<object>;
      try {
        event = await events.next();
      } catch (error) {
        // The stream ended with an error (a subscriber cut off, say): say why, then end.
        finished = true;
        return { value: { errors: [mask(error)] }, done: false };
      }
      if (event.done) return event;
      let byKey = results.get(event.value);
      if (!byKey) results.set(event.value, (byKey = new Map()));
      let result = byKey.get(key);
      if (!result) {
        const contextValue = contextForEvent(args.contextValue);
        result = Promise.resolve(execute({ ...args, rootValue: event.value, contextValue })).then((r) => maskResult(r, mask));
        byKey.set(key, result);
      }
      return { value: await result, done: false };
    },
    async return() {
      finished = true;
      await events.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
