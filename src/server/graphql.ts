// Yoga, with GraphiQL from the installed assets, GraphQL Armor's limits, the
// contract's error codes, and masking of everything unexpected.
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { GraphQLError } from 'graphql';
import { createGraphQLError, createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { RateLimitedError } from '../auth/rate-limit.js';
import { resolveViewer, type Viewer } from '../auth/viewer.js';
import { HooklineError } from '../errors.js';
import type { Context } from '../schema/builder.js';
import { schema } from '../schema/index.js';
import { createLoaders } from '../schema/loaders.js';
import type { Services } from '../services.js';

export const MAX_QUERY_DEPTH = 10;

export interface ServerContext {
  /** Set for WebSocket operations: the viewer resolved when the socket connected. */
  viewer?: Viewer;
  connectionParams?: Record<string, unknown>;
}

export type Yoga = YogaServerInstance<ServerContext, Context>;

/** Validation failures (Armor's limits among them) carry a code, like every other error. */
const limitsErrorCode: Plugin = {
  onValidate() {
    return ({ result, setResult }) => {
      if (!result.length) return;
      setResult(
        result.map((error) =>
          error.extensions?.code
            ? error
            : createGraphQLError(error.message, {
                nodes: error.nodes,
                extensions: { ...error.extensions, code: 'GRAPHQL_VALIDATION_FAILED' },
              }),
        ),
      );
    };
  },
};

/**
 * Unexpected errors are logged with their detail and shown as an opaque error;
 * HooklineErrors keep their message and get their contract code.
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
    if (error instanceof GraphQLError && (!original || original instanceof GraphQLError)) return error;
    log.error({ err: original ?? error, path: (error as GraphQLError).path }, 'unexpected error in a GraphQL operation');
    return createGraphQLError(message, {
      nodes: (error as GraphQLError).nodes,
      path: (error as GraphQLError).path,
      extensions: { code: 'INTERNAL_SERVER_ERROR' },
    });
  };
}

export function connectionAuthorization(params: Record<string, unknown> | undefined): string | undefined {
  const value = params?.authorization ?? params?.Authorization;
  return typeof value === 'string' ? value : undefined;
}

export function createGraphQLServer(services: Services): Yoga {
  const { log, dataSource, config } = services;
  return createYoga<ServerContext, Context>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    logging: {
      // Yoga logs at debug level several times per request: build nothing unless it is on.
      debug: (...args) => {
        if (log.isLevelEnabled('debug')) log.debug({ yoga: args }, 'yoga');
      },
      info: (...args) => log.info({ yoga: args }, 'yoga'),
      warn: (...args) => log.warn({ yoga: args }, 'yoga'),
      error: (...args) => log.error({ yoga: args }, 'yoga'),
    },
    graphiql: {
      title: 'Hookline GraphiQL',
      defaultQuery: '# Set the header {"Authorization": "Bearer <your API key>"} below, then run:\nquery Viewer {\n  viewer { id name createdAt }\n}\n',
      shouldPersistHeaders: true,
      subscriptionsProtocol: 'SSE',
    },
    renderGraphiQL,
    // app.ts reads every body itself, within MAX_BODY_BYTES (413 PAYLOAD_TOO_LARGE), before Yoga
    // sees the request; Yoga's own limit would pipe each body through a TransformStream again.
    maxRequestBodySize: false,
    context: async (initial) => {
      const request = (initial as { request?: Request }).request;
      const viewer =
        initial.viewer ??
        (await resolveViewer(
          dataSource,
          config.adminToken,
          request?.headers.get('authorization') ?? connectionAuthorization(initial.connectionParams),
          services.apiKeys,
        ));
      if (viewer.kind === 'tenant') {
        try {
          services.rateLimiter.take(viewer.apiKeyId);
        } catch (error) {
          if (!(error instanceof RateLimitedError)) throw error;
          throw createGraphQLError(error.message, {
            extensions: {
              code: error.code,
              http: { status: 429, headers: { 'retry-after': String(error.retryAfterSeconds) } },
            },
          });
        }
      }
      return { viewer, services, log, loaders: createLoaders(services, viewer) };
    },
    maskedErrors: {
      maskError: createErrorMasker(log),
    },
    plugins: [
      EnvelopArmorPlugin({
        maxDepth: { n: MAX_QUERY_DEPTH, ignoreIntrospection: true, flattenFragments: true },
        maxAliases: { n: 30 },
        maxDirectives: { n: 20 },
        maxTokens: { n: 3000 },
        costLimit: { maxCost: 20_000 },
        // Field suggestions stay on: they help people exploring in GraphiQL.
        blockFieldSuggestion: { enabled: false },
      }),
      limitsErrorCode,
    ],
  });
}
