// Yoga, with GraphiQL from the installed assets, GraphQL Armor's limits, the
// contract's error codes, and masking of everything unexpected.
import type { IncomingMessage } from 'node:http';
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { PothosValidationError } from '@pothos/core';
import {
  execute as executeInOrder,
  getArgumentValues,
  getDirectiveValues,
  getNamedType,
  getOperationAST,
  getVariableValues,
  GraphQLError,
  GraphQLIncludeDirective,
  GraphQLSkipDirective,
  isInterfaceType,
  isObjectType,
  Kind,
  type ASTVisitor,
  type DocumentNode,
  type FieldNode,
  type GraphQLField,
  type GraphQLNamedType,
  type GraphQLSchema,
  type FragmentDefinitionNode,
  type FragmentSpreadNode,
  type InlineFragmentNode,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
} from 'graphql';
import { createGraphQLError, createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { RateLimitedError } from '../auth/rate-limit.js';
import { complexityLimit, heavyTurns } from './complexity.js';
import { keyRevoked, resolveViewer, useApiKey, type Viewer } from '../auth/viewer.js';
import { DATABASE_UNAVAILABLE, ErrorCode, HooklineError, Vanished, databaseUnavailable } from '../errors.js';
import { isSharedSubscription, subscribeShared } from '../live/shared-execution.js';
import { writeRawJson, type Context } from '../schema/builder.js';
import { schema } from '../schema/index.js';
import { createLoaders } from '../schema/loaders.js';
import { checkPageArguments } from '../schema/pagination.js';
import { checkCursors } from '../db/keyset.js';
import type { DefaultConnectionArguments } from '@pothos/plugin-relay';
import type { Services } from '../services.js';

export const MAX_QUERY_DEPTH = 10;

export interface ServerContext {
  /** Set for WebSocket operations: the viewer of the socket's key, resolved again for each operation. */
  viewer?: Viewer;
  connectionParams?: Record<string, unknown>;
}

export type Yoga = YogaServerInstance<ServerContext, Context>;

/** Codes that already say whose fault an error is; the GraphQL layer's own (GRAPHQL_PARSE_FAILED, …) are not among them. */
const FINAL_CODES = new Set<unknown>([...Object.values(ErrorCode), 'INTERNAL_SERVER_ERROR']);

/**
 * A refusal of the client's request, with BAD_USER_INPUT unless it already has a contract
 * code. extensions.http holds Yoga's HTTP status for it; a request refused before execution
 * that has none (GraphQL Armor's limits throw rather than report) gets the one Yoga gives
 * validation errors: 400 for `application/graphql-response+json`, 200 for `application/json`.
 */
function withCode(error: GraphQLError): GraphQLError {
  if (FINAL_CODES.has(error.extensions?.code)) return error;
  const http = error.extensions?.http ?? (error.path ? undefined : { spec: true, status: 400 });
  return createGraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: { ...error.extensions, code: ErrorCode.BAD_USER_INPUT, ...(http ? { http } : {}) },
  });
}

/**
 * Validation errors (GraphQL Armor's limits among them) are refusals of the request. Yoga
 * answers them over HTTP without masking them, so they get their code here.
 */
const validationErrorCode: Plugin = {
  onValidate() {
    return ({ result, setResult }) => {
      if (result.length) setResult(result.map((error) => (error instanceof GraphQLError ? withCode(explained(error)) : error)));
    };
  },
};

/**
 * A mutation operation has one field (`__typename` aside). Each field's write commits on its own,
 * and the fields are non-null: one refused after another wrote answered `data: null`, losing what
 * was written (a created tenant's only API key, an event whose retry would duplicate it).
 *
 * Fields left out by `@skip`/`@include` do not count. Those whose directives are written as
 * literals are settled when the document is validated; those that depend on a variable are
 * counted again before execution, with the request's variables (oneMutationFieldRule).
 */
export function oneMutationField(context: ValidationContext): ASTVisitor {
  return {
    OperationDefinition(node) {
      if (node.operation !== 'mutation') return;
      const names = mutationFieldNames(node.selectionSet, (name) => context.getFragment(name));
      if (names.size > 1) context.reportError(tooManyMutationFields(names, node));
    },
  };
}

type Included = boolean | 'depends on a variable';

/**
 * Whether `@skip`/`@include` keep a selection. Without `variables`, one whose condition reads a
 * variable is kept, and the answer says it depends on one.
 */
function included(node: FieldNode | FragmentSpreadNode | InlineFragmentNode, variables?: Record<string, unknown>): Included {
  let result: Included = true;
  for (const directive of node.directives ?? []) {
    const name = directive.name.value;
    if (name !== 'skip' && name !== 'include') continue;
    const condition = directive.arguments?.find((a) => a.name.value === 'if')?.value;
    let value: unknown;
    if (condition?.kind === Kind.BOOLEAN) value = condition.value;
    else if (condition?.kind === Kind.VARIABLE && variables) value = variables[condition.name.value];
    else if (condition?.kind === Kind.VARIABLE) {
      result = 'depends on a variable';
      continue;
    }
    // A condition that is not a Boolean is refused by validation or by the variables' coercion.
    if (typeof value !== 'boolean') continue;
    if (value === (name === 'skip')) return false;
  }
  return result;
}

/**
 * The root fields a mutation's selection set writes. Without `variables`, a field whose
 * `@skip`/`@include` reads a variable is left out and the result says so in `conditional`.
 */
function mutationFieldNames(
  selectionSet: SelectionSetNode,
  fragment: (name: string) => FragmentDefinitionNode | undefined | null,
  variables?: Record<string, unknown>,
): Set<string> & { conditional?: boolean } {
  const names: Set<string> & { conditional?: boolean } = new Set<string>();
  const spread = new Set<string>();
  const collect = (selections: SelectionSetNode) => {
    for (const selection of selections.selections) {
      const inclusion = included(selection, variables);
      if (inclusion !== true) {
        if (inclusion) names.conditional = true;
        continue;
      }
      if (selection.kind === Kind.FIELD) {
        if (selection.name.value !== '__typename') names.add(selection.alias?.value ?? selection.name.value);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        collect(selection.selectionSet);
      } else if (!spread.has(selection.name.value)) {
        spread.add(selection.name.value);
        const definition = fragment(selection.name.value);
        if (definition) collect(definition.selectionSet);
      }
    }
  };
  collect(selectionSet);
  return names;
}

function tooManyMutationFields(names: Set<string>, node: OperationDefinitionNode): GraphQLError {
  return createGraphQLError(
    `a mutation operation may have one field, not ${names.size} (${[...names].join(', ')}): send each in a request of its own, so that each answer says what its call wrote`,
    { nodes: node, extensions: { code: ErrorCode.BAD_USER_INPUT, http: { spec: true, status: 400 } } },
  );
}

/**
 * graphql-js parses nested values and selections recursively: a document nesting a few thousand
 * lists (`[[[…]]]`, within the token limit or just past it) overflowed the stack before GraphQL
 * Armor's token count refused it, answered as an internal error and logged with its stack.
 */
const parseDepthRefusal: Plugin = {
  onParse({ parseFn, setParseFn }) {
    setParseFn((source, options) => {
      try {
        return parseFn(source, options);
      } catch (error) {
        if (!(error instanceof RangeError)) throw error;
        throw createGraphQLError('Syntax Error: the document nests lists, objects or selections too deeply to be read', {
          extensions: { code: ErrorCode.BAD_USER_INPUT, http: { spec: true, status: 400 } },
        });
      }
    });
  },
};

/**
 * A query whose answer met a row gone since another of its reads (Vanished: the retention sweep
 * deleted an event and its deliveries in between; each batch of loads reads on its own) is
 * executed again with fresh loaders, twice at most, rather than answer a page wiped out by one
 * missing non-null field, or an event without its deliveries. Then it answers as it finds.
 */
const retryVanished: Plugin<Context> = {
  onExecute({ args, executeFn, setExecuteFn }) {
    if (getOperationAST(args.document, args.operationName)?.operation !== 'query') return;
    setExecuteFn(async (executeArgs) => {
      const context = executeArgs.contextValue as Context;
      let result = await executeFn(executeArgs);
      for (let again = 0; again < 2 && vanished(result); again++) {
        context.loaders = createLoaders(context.services, context.viewer);
        result = await executeFn(executeArgs);
      }
      return result;
    });
  },
};

function vanished(result: unknown): boolean {
  const errors = (result as { errors?: readonly GraphQLError[] }).errors;
  return !!errors?.some((error) => error.originalError instanceof Vanished);
}

/** How often an operation may read the schema's introspection fields at its root. */
export const INTROSPECTION_LIMITS = { __schema: 1, __type: 10 } as const;

/**
 * Introspection within bounds: `__schema` once an operation and `__type` ten times (by response
 * key, as graphql-js runs them), and no aliases inside them. The complexity limit does not count
 * introspection: 30 aliases of `__schema`, or 29 of `types` in one, nested through fragments
 * (a few hundred characters, open to anyone), answered 2.7 and 5.9 MB. GraphiQL and code
 * generators send getIntrospectionQuery(): one `__schema`, no aliases.
 */
export function introspectionWithinLimits(context: ValidationContext): ASTVisitor {
  let aliasRefused = false;
  return {
    OperationDefinition(node) {
      const keys = { __schema: new Set<string>(), __type: new Set<string>() };
      // Each fragment walked once, however often it is spread (keys are a set: a second spread
      // adds nothing): walked per spread, a chain of fragments each spreading the next twice
      // cost 2^n walks, 26 s for 24 of them, the event loop held.
      const walked = new Set<string>();
      const walk = (set: SelectionSetNode) => {
        for (const selection of set.selections) {
          if (selection.kind === Kind.FIELD) {
            const name = selection.name.value;
            if (name === '__schema' || name === '__type') keys[name].add(selection.alias?.value ?? name);
          } else if (selection.kind === Kind.INLINE_FRAGMENT) {
            walk(selection.selectionSet);
          } else if (!walked.has(selection.name.value)) {
            walked.add(selection.name.value); // a cycle too is walked once (its own rule refuses it)
            const fragment = context.getFragment(selection.name.value);
            if (fragment) walk(fragment.selectionSet);
          }
        }
      };
      walk(node.selectionSet);
      for (const name of ['__schema', '__type'] as const) {
        const limit = INTROSPECTION_LIMITS[name];
        if (keys[name].size > limit) {
          context.reportError(
            new GraphQLError(`an operation may read ${name} at most ${limit === 1 ? 'once' : `${limit} times`}; this one reads it ${keys[name].size} times`, { nodes: [node] }),
          );
        }
      }
    },
    Field(node) {
      // Inside introspection (fields of __Schema, __Type, __Field…), an alias only repeats it.
      if (!node.alias || aliasRefused || !context.getParentType()?.name.startsWith('__')) return;
      aliasRefused = true;
      context.reportError(new GraphQLError(`aliases are not taken inside introspection ("${node.alias.value}: ${node.name.value}"): ask for each field once`, { nodes: [node] }));
    },
  };
}

const oneMutationFieldRule: Plugin = {
  onValidate({ addValidationRule }) {
    addValidationRule(oneMutationField);
    addValidationRule(introspectionWithinLimits);
  },
  onExecute({ args, setResultAndStopExecution }) {
    const operation = getOperationAST(args.document, args.operationName);
    if (operation?.operation !== 'mutation') return;
    const fragments = fragmentsOf(args.document);
    const fragment = (name: string) => fragments.get(name);
    if (!mutationFieldNames(operation.selectionSet, fragment).conditional) return;
    // Variables as execution will coerce them; if they cannot be, execution says so itself.
    const coerced = getVariableValues(args.schema, operation.variableDefinitions ?? [], args.variableValues ?? {});
    if (!coerced.coerced) return;
    const names = mutationFieldNames(operation.selectionSet, fragment, coerced.coerced);
    if (names.size > 1) setResultAndStopExecution({ errors: [tooManyMutationFields(names, operation)] });
  },
};

/**
 * An operation made with an API key is under way (ApiKeyCache.use) from the start of its
 * execution to its end: a revocation this process hears meanwhile is acknowledged only once it
 * has ended, and one heard before it began refuses it, though the key was valid when the
 * request came (a triggerEvent sent just before revokeApiKey, say, writes before that answers,
 * or not at all). Live subscriptions are not waited for: the revocation ends them.
 */
const keyInUse: Plugin = {
  // A promise only while the key's revocation is asked of the database (see useApiKey).
  onExecute({ args, setResultAndStopExecution }) {
    const context = args.contextValue as Partial<Context>;
    const { viewer, services } = context;
    if (viewer?.kind !== 'tenant' || !services) return;
    const began = (end: (() => void) | undefined) => {
      if (!end) {
        const refusal = keyRevoked();
        setResultAndStopExecution({ errors: [createGraphQLError(refusal.message, { extensions: { code: refusal.code, http: { spec: true, status: 401 } } })] });
        return;
      }
      context.endKeyUse = end;
      return { onExecuteDone: () => end() };
    };
    const { apiKeys } = services;
    if (!apiKeys.unheard(viewer.apiKeyId)) return began(apiKeys.use(viewer.apiKeyId));
    return useApiKey(services.dataSource, apiKeys, viewer.apiKeyId).then(began);
  },
};

/**
 * Queries and mutations run on graphql-js's own execute, not Yoga's (@graphql-tools/executor),
 * which writes an object's fields that wait for a promise after those that do not (pothos
 * issue #1511), where the spec's serialized map ordering has them in the order selected.
 * Subscriptions keep Yoga's (Server-Sent Events; graphql-ws's deliveryUpdated is executed by
 * graphql-js already, see shared-execution.ts).
 */
const fieldsInSelectedOrder: Plugin = {
  onExecute({ executeFn, setExecuteFn }) {
    setExecuteFn((args) => {
      const result = executeInOrder(args);
      // Refused before anything ran (its variables, its operation: no `data`): Yoga's executor
      // answers that, with its status 400 and its codes.
      return 'then' in result || 'data' in result ? result : executeFn(args);
    });
  },
};

/**
 * Answers written with writeRawJson (Yoga writes an execution result with its `stringify` when it
 * has one: JSON answers, and each result of an event stream or multipart answer), so that a
 * payload goes out as the text stored, not parsed and written again (see RawJson).
 */
const rawJsonAnswers: Plugin = {
  onExecute: () => ({
    onExecuteDone({ result }) {
      if (result && typeof result === 'object' && !(Symbol.asyncIterator in result)) Object.assign(result, { stringify: writeRawJson });
    },
  }),
  // Each live update sent over Server-Sent Events: a copy, since one result goes to every
  // subscriber of the update (see shared-execution.ts).
  onSubscribe: () => ({
    onSubscribeResult: () => ({
      onNext({ result, setResult }) {
        setResult(Object.assign({}, result, { stringify: writeRawJson }));
      },
    }),
  }),
};

/**
 * What a mutation's answer asks for, checked before it writes. Anything refused once the
 * mutation had written nulled its non-null payload (`data: null`): a subscription created with
 * a secret nobody saw, a rotation whose new secret was lost, a client told its call failed.
 * - Pages (a subscription's `deliveries(first: 101)`, a cursor the list never wrote, a bare id
 *   of no row of the list, another list's row): each page field's arguments, as execution will read them, get the
 *   checks its resolver makes (checkPageArguments, checkCursors).
 * - `@skip`/`@include` whose condition comes out null (`$s: Boolean = false` sent as null):
 *   graphql-js refuses those as it collects the payload's fields, after the write.
 * One that fails refuses the whole operation. Documents with neither (triggerEvent's, say) are
 * told apart once, by their parsed operation.
 */
const mutationAnswerRule: Plugin = {
  // Not async: every other operation (a triggerEvent's, say) passes with no promise to wait for.
  onExecute({ args, setResultAndStopExecution }) {
    const operation = getOperationAST(args.document, args.operationName);
    if (operation?.operation !== 'mutation') return;
    const root = args.schema.getMutationType();
    // A caller without a key is refused by every mutation (UNAUTHENTICATED) before it writes,
    // and told that first; so is the admin token by a tenant's mutations (FORBIDDEN), the only
    // ones whose answers have pages: for it, only the conditions are checked (createTenant's
    // answer holds the new tenant's only API key).
    const context = args.contextValue as Partial<Context>;
    const viewer = context.viewer;
    if (!root || !viewer || viewer.kind === 'anonymous') return;
    let asks = answerAsks.get(operation);
    if (asks === undefined) {
      let found = false;
      const ask = () => void (found = true);
      walkAnswer(args.schema, operation.selectionSet, root, fragmentsOf(args.document), undefined, { page: ask, condition: ask });
      asks = found;
      answerAsks.set(operation, asks);
    }
    if (!asks) return;
    // Variables as execution will coerce them; if they cannot be, execution says so itself.
    const coerced = getVariableValues(args.schema, operation.variableDefinitions ?? [], args.variableValues ?? {});
    if (!coerced.coerced) return;
    const variables = coerced.coerced;
    const refuse = (error: unknown) => {
      let refusal = answerRefusal(error);
      if (!refusal) {
        // Answered as a resolver's failure is (masked, logged), not thrown: graphql-ws would
        // close the whole connection, its other subscriptions with it. No data: a 5xx.
        const masked = createErrorMasker(context.services!.log)(error);
        refusal = createGraphQLError(masked.message, { extensions: { ...masked.extensions, http: { spec: true, status: 500 } } });
      }
      setResultAndStopExecution({ errors: [refusal] });
    };
    const pages: Array<{ table: string; cursors: { after?: string; before?: string } }> = [];
    try {
      walkAnswer(args.schema, operation.selectionSet, root, fragmentsOf(args.document), variables, {
        page(field, node) {
          if (viewer.kind !== 'tenant') return;
          const page = getArgumentValues(field, node, variables) as DefaultConnectionArguments;
          checkPageArguments(page);
          const table = field.extensions?.keysetTable;
          const cursors = { after: page.after ?? undefined, before: page.before ?? undefined };
          if (typeof table === 'string' && (cursors.after !== undefined || cursors.before !== undefined)) pages.push({ table, cursors });
        },
      });
    } catch (error) {
      return refuse(error);
    }
    const dataSource = context.services?.dataSource;
    if (!pages.length || !dataSource || viewer.kind !== 'tenant') return;
    const { tenantId } = viewer;
    return (async () => {
      try {
        for (const { table, cursors } of pages) await checkCursors(dataSource.manager, tenantId, table, cursors);
      } catch (error) {
        refuse(error);
      }
    })();
  },
};

/** Whether an operation's answer has a page field or a condition that reads a variable. */
const answerAsks = new WeakMap<OperationDefinitionNode, boolean>();

function fragmentsOf(document: DocumentNode): Map<string, FragmentDefinitionNode> {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  return fragments;
}

/**
 * Walks a selection and the fragments it spreads, and calls `page` for each connection field
 * (one with `first` and `after` arguments). With `variables`, selections that `@skip`/`@include`
 * leave out are passed over and a condition that comes out null throws graphql-js's own error;
 * without, everything is walked, and `condition` is called for each condition that reads a
 * variable. As graphql-js collects fields, a fragment is taken once in a selection set (the
 * fragments spread into it included), at its first spread that is kept.
 */
function walkAnswer(
  schema: GraphQLSchema,
  selectionSet: SelectionSetNode,
  parent: GraphQLNamedType,
  fragments: Map<string, FragmentDefinitionNode>,
  variables: Record<string, unknown> | undefined,
  visit: { page(field: GraphQLField<unknown, unknown>, node: FieldNode): void; condition?(): void },
): void {
  // Each selection set once for a parent type: what it checks is in its own nodes, the same on
  // every path (variables are the request's). Walked per path, a fragment repeating one field m
  // times, each spreading the next fragment, cost m^depth walks: 15 s for a 2 KB mutation.
  const walked = new Map<SelectionSetNode, Set<string>>();
  const walk = (set: SelectionSetNode, type: GraphQLNamedType, taken: Set<string>): void => {
    const types = walked.get(set) ?? new Set<string>();
    if (types.has(type.name)) return;
    walked.set(set, types.add(type.name));
    for (const selection of set.selections) {
      if (variables) {
        if (!keeps(selection, variables)) continue;
      } else if (included(selection) === 'depends on a variable') {
        visit.condition?.();
      }
      if (selection.kind === Kind.FIELD) {
        const field = isObjectType(type) || isInterfaceType(type) ? type.getFields()[selection.name.value] : undefined;
        if (!field) continue;
        if (field.args.some((a) => a.name === 'first') && field.args.some((a) => a.name === 'after')) visit.page(field, selection);
        if (selection.selectionSet) walk(selection.selectionSet, getNamedType(field.type), new Set());
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        const condition = selection.typeCondition ? schema.getType(selection.typeCondition.name.value) : type;
        if (condition) walk(selection.selectionSet, condition, taken);
      } else if (!taken.has(selection.name.value)) {
        taken.add(selection.name.value);
        const definition = fragments.get(selection.name.value);
        const condition = definition && schema.getType(definition.typeCondition.name.value);
        if (definition && condition) walk(definition.selectionSet, condition, taken);
      }
    }
  };
  walk(selectionSet, parent, new Set());
}

/** graphql-js's own test of `@skip`/`@include` (its shouldIncludeNode), which throws for a null condition. */
function keeps(node: FieldNode | FragmentSpreadNode | InlineFragmentNode, variables: Record<string, unknown>): boolean {
  if (getDirectiveValues(GraphQLSkipDirective, node, variables)?.if === true) return false;
  return getDirectiveValues(GraphQLIncludeDirective, node, variables)?.if !== false;
}

/** A refusal as the resolver's would have been answered (see createErrorMasker), before anything ran. */
function answerRefusal(error: unknown): GraphQLError | undefined {
  if (error instanceof HooklineError) {
    return createGraphQLError(error.message, { extensions: { code: error.code, ...(error.field ? { field: error.field } : {}), http: { spec: true, status: 400 } } });
  }
  if (error instanceof PothosValidationError || error instanceof GraphQLError) {
    return createGraphQLError(error.message, { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { spec: true, status: 400 } } });
  }
  return undefined;
}

/**
 * graphql-js stops validating a query whose fields would take too long to compare with each
 * other (hundreds of the same field side by side) and says only "Validation aborted.".
 */
function explained(error: GraphQLError): GraphQLError {
  if (error.message !== 'Validation aborted.') return error;
  return new GraphQLError(
    'Validation aborted: the query selects too many fields side by side for them to be checked against each other; ask for each field once (use aliases sparingly)',
    { extensions: error.extensions },
  );
}

/** The media types Yoga's result processors answer in (its useResultProcessors). */
const ANSWER_TYPES = ['application/graphql-response+json', 'application/json', 'text/event-stream', 'multipart/mixed'] as const;

/**
 * Whether an Accept header lets Yoga answer, read as Yoga reads it (result-processor/accept.js):
 * its media ranges, wildcards matching, a range with a charset other than UTF-8 passed over.
 */
export function acceptsAnAnswer(accept: string, types: readonly string[] = ANSWER_TYPES): boolean {
  for (const range of accept.replace(/\s/g, '').toLowerCase().split(',')) {
    const [mediaType = '', ...params] = range.split(';');
    const charset = params.find((p) => p.includes('charset=')) ?? 'charset=utf-8';
    if (charset !== 'charset=utf-8') continue;
    const [pre, suf] = mediaType.split('/');
    if (types.some((type) => {
      const [tpre, tsuf] = type.split('/');
      return (pre === '*' || pre === tpre) && (suf === '*' || suf === tsuf);
    })) return true;
  }
  return false;
}

/**
 * The request's own shape, before any GraphQL: a `variables` or `extensions` parameter that
 * is not JSON (in a GET's query string or a form body) made Yoga's parser throw a bare
 * SyntaxError, answered as an internal error; and a content type no parser takes got an empty
 * 415. Both are the client's to fix, and say so with BAD_USER_INPUT.
 */
const requestShapeErrors: Plugin = {
  onRequestParse({ requestParser, setRequestParser, endResponse, fetchAPI, request }) {
    // An answer the client cannot take is refused before the operation runs: Yoga finds out only
    // once it has a result to format, and answered an empty 406 for a mutation already committed.
    // An empty header is none (Yoga reads it as */*).
    const accept = request.headers.get('accept');
    if (accept && !acceptsAnAnswer(accept)) {
      const message = `the Accept header (${accept.slice(0, 200)}) takes none of the types GraphQL answers in: ${ANSWER_TYPES.join(', ')} (or leave Accept out)`;
      endResponse(
        new fetchAPI.Response(JSON.stringify({ errors: [{ message, extensions: { code: ErrorCode.BAD_USER_INPUT } }] }), {
          status: 406,
          headers: { 'content-type': 'application/json; charset=utf-8' },
        }),
      );
      return;
    }
    // Other methods are Yoga's to refuse (405 with Allow), after this hook.
    if (!requestParser && request.method === 'POST') {
      const type = request.headers.get('content-type') ?? 'none';
      const message = `content type ${type} is not supported: send application/json (or application/graphql, or a GET)`;
      endResponse(
        new fetchAPI.Response(JSON.stringify({ errors: [{ message, extensions: { code: ErrorCode.BAD_USER_INPUT } }] }), {
          status: 415,
          headers: { 'content-type': 'application/json; charset=utf-8' },
        }),
      );
      return;
    }
    if (!requestParser) return;
    setRequestParser(async (req) => {
      try {
        return await requestParser(req);
      } catch (error) {
        if (!(error instanceof SyntaxError)) throw error;
        throw createGraphQLError(`the request's variables or extensions are not valid JSON: ${error.message}`, {
          extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 400 } },
        });
      }
    });
  },
};

/**
 * A subscription over HTTP is answered as Server-Sent Events only (Yoga serves none as
 * multipart/mixed or JSON). An Accept header that takes no event stream got an empty 406, and
 * only once the subscription had been set up: it is refused before, with BAD_USER_INPUT, as an
 * Accept that takes no answer at all is (requestShapeErrors).
 */
const subscriptionAnswerType: Plugin = {
  onSubscribe({ args, setResultAndStopExecution }) {
    const ctx = args.contextValue as { request?: Request; socket?: unknown };
    if (ctx.socket || typeof ctx.request?.headers?.get !== 'function') return; // WebSocket: graphql-ws's own messages
    const accept = ctx.request.headers.get('accept');
    if (!accept || acceptsAnAnswer(accept, ['text/event-stream'])) return;
    const message = `the Accept header (${accept.slice(0, 200)}) takes no text/event-stream: over HTTP a subscription is answered as Server-Sent Events only (or subscribe over WebSocket)`;
    setResultAndStopExecution({ errors: [createGraphQLError(message, { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 406 } } })] });
  },
  // A subscription's refusal, to an Accept that takes none of the types Yoga answers those in
  // (multipart/mixed alone): the answer is JSON nonetheless, rather than an empty 406.
  onResultProcess({ resultProcessor, setResultProcessor }) {
    if (resultProcessor) return;
    setResultProcessor(async (result, fetchAPI) => {
      if (Symbol.asyncIterator in result) await (result as AsyncIterableIterator<unknown>).return?.();
      // As Yoga writes errors: without the HTTP settings some carry in their extensions.
      const written = (e: unknown) => {
        const { extensions, ...rest } = (e instanceof GraphQLError ? e.toJSON() : e) as { extensions?: Record<string, unknown> };
        const { http: _http, ...kept } = extensions ?? {};
        return extensions ? { ...rest, extensions: kept } : rest;
      };
      const errors = 'errors' in result && result.errors?.length ? result.errors.map(written) : [{ message: 'no answer in a type the Accept header takes', extensions: { code: ErrorCode.BAD_USER_INPUT } }];
      return new fetchAPI.Response(JSON.stringify({ errors }), { status: 406, headers: { 'content-type': 'application/json; charset=utf-8' } });
    }, 'application/json');
  },
};

/**
 * Whether GraphQL refused the request itself, for the client to fix: its text (parse and
 * validation errors, Armor's limits among them), its variables, the operation to run, or an
 * argument's value. Such errors have no path (they come before any field runs), or come from
 * reading an argument: Pothos's checks (`first` must be non-negative) and graphql's coercion,
 * whose error points at the request's text. A GraphQLError that code raises while a field
 * runs (a scalar that cannot serialize its value) is the server's fault.
 */
function isRequestError(error: GraphQLError): boolean {
  const original = error.originalError;
  if (original instanceof PothosValidationError) return true;
  if (!error.path) return !original || original instanceof GraphQLError;
  return original instanceof GraphQLError && !!original.nodes?.length;
}

/**
 * Every error leaves with a contract code: HooklineErrors keep their message and get
 * their code, GraphQL's refusals of a request get BAD_USER_INPUT with graphql's message
 * (which names the argument, variable or field), and anything unexpected is logged with
 * its detail and shown as an opaque error.
 */
export function createErrorMasker(log: Services['log']) {
  return (error: unknown, message = 'Unexpected error.'): GraphQLError => {
    const original = error instanceof GraphQLError ? error.originalError : error;
    if (original instanceof HooklineError) {
      return createGraphQLError(original.message, {
        nodes: (error as GraphQLError).nodes,
        path: (error as GraphQLError).path,
        extensions: { code: original.code, ...(original.field ? { field: original.field } : {}) },
      });
    }
    if (error instanceof GraphQLError && FINAL_CODES.has(error.extensions?.code)) return error;
    if (error instanceof GraphQLError && isRequestError(error)) return withCode(error);
    if (databaseUnavailable(original ?? error)) {
      log.warn({ err: original ?? error, path: (error as GraphQLError).path }, 'a GraphQL operation failed: the database cannot be reached');
      return createGraphQLError(DATABASE_UNAVAILABLE.message, {
        nodes: (error as GraphQLError).nodes,
        path: (error as GraphQLError).path,
        extensions: {
          code: DATABASE_UNAVAILABLE.code,
          http: { status: DATABASE_UNAVAILABLE.status, headers: { 'retry-after': String(DATABASE_UNAVAILABLE.retryAfterSeconds) } },
        },
      });
    }
    log.error({ err: original ?? error, path: (error as GraphQLError).path }, 'unexpected error in a GraphQL operation');
    return createGraphQLError(message, {
      nodes: (error as GraphQLError).nodes,
      path: (error as GraphQLError).path,
      extensions: { code: 'INTERNAL_SERVER_ERROR' },
    });
  };
}

/** A context for the executions of a batch of live updates: the subscriber's, with loaders of their own (see shared-execution.ts). */
export function contextForLiveUpdate(context: unknown): Context {
  const subscriber = context as Context;
  return { ...subscriber, loaders: createLoaders(subscriber.services, subscriber.viewer) };
}

/**
 * deliveryUpdated over Server-Sent Events runs through shared-execution.ts: executed once
 * per update for all its subscribers, each batch of updates with fresh loaders. Over WebSocket, app.ts
 * hands it to shared-execution.ts itself, past Yoga's per-subscriber handling of each result.
 */
function sharedLiveExecution(mask: ReturnType<typeof createErrorMasker>): Plugin {
  return {
    onSubscribe({ args, setSubscribeFn }) {
      if (!isSharedSubscription(args)) return;
      setSubscribeFn((subscribeArgs) =>
        subscribeShared(subscribeArgs, { mask, contextForEvent: contextForLiveUpdate, ahead: (subscribeArgs.contextValue as Context).services.metrics?.liveUpdatesAhead }),
      );
    },
  };
}

/**
 * GraphQL errors as sent over WebSocket: without extensions.http, which holds what Yoga
 * answers over HTTP (status, headers) and means nothing to a WebSocket client.
 */
export function forWebSocket(errors: readonly GraphQLError[]): GraphQLError[] {
  return errors.map((error) => {
    if (!error.extensions?.http) return error;
    const { http: _http, ...extensions } = error.extensions;
    return new GraphQLError(error.message, {
      nodes: error.nodes,
      source: error.source,
      positions: error.positions,
      path: error.path,
      originalError: error.originalError,
      extensions,
    });
  });
}

export function connectionAuthorization(params: Record<string, unknown> | undefined): string | undefined {
  const value = params?.authorization ?? params?.Authorization;
  return typeof value === 'string' ? value : undefined;
}

const GRAPHIQL_OPTIONS = {
  title: 'Hookline GraphiQL',
  defaultQuery: '# Set the header {"Authorization": "Bearer <your API key>"} below, then run:\nquery Viewer {\n  viewer { id name createdAt }\n}\n',
  // The Authorization header holds an API key: kept for the page's life, never written to
  // the browser's storage (which any script of the origin, or the next user, can read).
  shouldPersistHeaders: false,
  subscriptionsProtocol: 'SSE' as const,
};

export interface GraphiQLPage {
  html: Buffer;
  gzip: Buffer;
  etag: string;
}

let graphiql: GraphiQLPage | undefined;

/**
 * GraphiQL's page (its scripts inlined, from the installed assets: about 9 MB), rendered once
 * and gzipped once (about 2 MB), shared by every answer: however many load it at once, or
 * never read it, they hold no copy of their own.
 */
export function graphiqlPage(): GraphiQLPage {
  if (!graphiql) {
    const html = Buffer.from(renderGraphiQL(GRAPHIQL_OPTIONS));
    graphiql = { html, gzip: gzipSync(html), etag: `"${createHash('sha256').update(html).digest('base64url').slice(0, 27)}"` };
  }
  return graphiql;
}

/**
 * Who sent each HTTP request to /graphql, resolved (and counted against its key's or its
 * address's limit) by app.ts before the request is read: a request without a valid key whose
 * document failed to parse or validate never reached the context, and was never counted.
 */
export const requestViewers = new WeakMap<IncomingMessage, Viewer>();

/**
 * What the debug log says of an error answered to a client: its code and where, and the message
 * only when Hookline wrote it (its messages name fields, never their values). graphql-js's quote
 * what was sent: a variable refused by coercion is printed whole, a signing secret or a
 * receiver's Authorization header among it. The client has the message in its answer.
 */
function answeredError(error: Error): Record<string, unknown> {
  const graphql = error instanceof GraphQLError ? error : undefined;
  // Logged before the masker gives the answer its code: Hookline's own error carries it.
  const hookline = graphql ? graphql.originalError : error;
  const own = hookline instanceof HooklineError ? hookline : undefined;
  return {
    code: own?.code ?? graphql?.extensions.code,
    field: own?.field ?? graphql?.extensions.field,
    path: graphql?.path,
    locations: graphql?.locations,
    error: own ? error.message : `${error.name} (its message is not logged: it may quote the request's values)`,
  };
}

export function createGraphQLServer(services: Services): Yoga {
  const { log, dataSource, config } = services;
  const maskError = createErrorMasker(log);
  return createYoga<ServerContext, Context>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // Any origin may call the API with an API key (a dashboard of its own); none with the
    // browser's credentials (cookies), which Hookline never uses: Yoga's default allowed them.
    cors: { credentials: false },
    logging: {
      // Yoga logs at debug level several times per request: build nothing unless it is on.
      debug: (...args) => {
        if (log.isLevelEnabled('debug')) log.debug({ yoga: args }, 'yoga');
      },
      info: (...args) => log.info({ yoga: args }, 'yoga'),
      warn: (...args) => log.warn({ yoga: args }, 'yoga'),
      // Yoga logs each error its masker replaced: a client's (the answer says all there is to
      // say) or an unexpected one, which createErrorMasker has logged already with its detail.
      error: (...args) => {
        if (args.length === 1 && args[0] instanceof Error) {
          if (log.isLevelEnabled('debug')) log.debug(answeredError(args[0]), 'yoga: error answered');
        } else {
          log.error({ yoga: args }, 'yoga');
        }
      },
    },
    // GraphiQL's page is served by app.ts (graphiqlPage): Yoga rendered its 9 MB afresh for
    // every GET, before any limit, and held each copy until the client had read it all.
    graphiql: false,
    // app.ts reads every body itself, within MAX_BODY_BYTES (413 PAYLOAD_TOO_LARGE), before Yoga
    // sees the request; Yoga's own limit would pipe each body through a TransformStream again.
    maxRequestBodySize: false,
    // No file uploads: a multipart request's File in a JSON variable would be checked by its
    // getters and stored by its internal fields.
    multipart: false,
    context: async (initial) => {
      const request = (initial as { request?: Request }).request;
      // Resolved, and counted, by app.ts before the request was read (HTTP).
      const known = requestViewers.get((initial as { req?: IncomingMessage }).req as IncomingMessage);
      try {
        const viewer =
          initial.viewer ??
          known ??
          (await resolveViewer(
            dataSource,
            config.adminToken,
            request?.headers.get('authorization') ?? connectionAuthorization(initial.connectionParams),
            services.apiKeys,
            services.addressLimiter.of((initial as { req?: IncomingMessage }).req),
          ));
        if (viewer.kind === 'tenant' && !known) services.rateLimiter.take(viewer.apiKeyId);
        return { viewer, services, log, loaders: createLoaders(services, viewer) };
      } catch (error) {
        if (!(error instanceof RateLimitedError)) throw error;
        throw createGraphQLError(error.message, {
          extensions: {
            code: error.code,
            http: { status: 429, headers: { 'retry-after': String(error.retryAfterSeconds) } },
          },
        });
      }
    },
    maskedErrors: { maskError },
    plugins: [
      EnvelopArmorPlugin({
        maxDepth: { n: MAX_QUERY_DEPTH, ignoreIntrospection: true, flattenFragments: true },
        maxAliases: { n: 30 },
        maxDirectives: { n: 20 },
        maxTokens: { n: 3000 },
        // No cost limit of Armor's: Pothos's complexity (complexityLimit) is the one, counted as
        // the README says; Armor's (20,000, times 1.5 a level, page sizes in the text only)
        // refused ordinary nested pages as a "Syntax Error", and hid the check of `first`.
        costLimit: { enabled: false },
        // Field suggestions stay on: they help people exploring in GraphiQL.
        blockFieldSuggestion: { enabled: false },
      }),
      fieldsInSelectedOrder,
      parseDepthRefusal,
      requestShapeErrors,
      subscriptionAnswerType,
      oneMutationFieldRule,
      keyInUse,
      rawJsonAnswers,
      mutationAnswerRule,
      retryVanished,
      validationErrorCode,
      complexityLimit,
      heavyTurns(),
      sharedLiveExecution(maskError),
    ],
  });
}
