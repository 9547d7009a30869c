// buildApp(): one HTTP server per process. Every role serves /healthz,
// /readyz and /metrics; roles `all` and `api` also serve GraphQL (HTTP, SSE
// and graphql-ws on /graphql) and the REST routes of the guide.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import type { WebSocketServer } from 'ws';
import type pg from 'pg';
import { RateLimitedError, addressKey, refill, trusted, type TokenBucket } from '../auth/rate-limit.js';
import { bearerToken, resolveViewer, sameSecret, type Viewer } from '../auth/viewer.js';
import { poolOf } from '../db/query.js';
import { DATABASE_UNAVAILABLE, StartRefused, coerceError, databaseUnavailable, unauthenticated } from '../errors.js';
import { within } from '../within.js';
import type { Metrics } from '../metrics.js';
import type { Services } from '../services.js';
import type { Yoga } from './graphql.js';
import { BodyEncodedError, BodyNotUtf8Error, BodyTooLargeError, MAX_BODY_BYTES, bodyText, checkFormUtf8, readBody } from './http-body.js';
import { InexactNumberError, inexactNumberError, refuseInexactNumbers } from '../json-numbers.js';

export interface AppOptions {
  services: Services;
  metrics: Metrics;
  /** Serve the API (GraphQL and REST); false for the worker role. */
  serveApi: boolean;
  port: number;
  host?: string;
  /** Extra routes tried before GraphQL (REST); answers true when it handled the request. */
  routes?: (req: IncomingMessage, res: ServerResponse, body: () => Promise<Buffer>) => Promise<boolean>;
  /** How long a client may take to send a request (see REQUEST_TIMEOUTS); shorter in tests. */
  timeouts?: RequestTimeouts;
}

export interface RequestTimeouts {
  /** To send the request's headers (ms). */
  headersMs: number;
  /** To send the whole request, body included (ms). */
  requestMs: number;
}

/**
 * A client that opens a request and sends it slowly, or stops half-way, holds its connection and
 * what it sent (up to a 1 MiB body): Node's own limit is 300 s for the whole request, so a thousand
 * such clients held a gigabyte for five minutes without a key. Headers come at once, and a 1 MiB
 * body over a slow link (300 kbit/s) still fits: past these the client is answered 408 and cut.
 * Answers (a Server-Sent Events stream, say) take as long as they take; an upgraded WebSocket is not a request.
 */
export const REQUEST_TIMEOUTS: RequestTimeouts = { headersMs: 10_000, requestMs: 30_000 };

/** How long a stopping server waits for the requests in flight before it closes their connections. */
export const SHUTDOWN_REQUESTS_MS = 10_000;

export interface App {
  server: Server;
  yoga?: Yoga;
  url: string;
  port: number;
  /**
   * /readyz answers 200 only once every role of the process has started, and 503 again from
   * the moment it starts to stop (setReady(false) after true), while it finishes what is in flight.
   */
  setReady(ready: boolean): void;
  /** The API keys of the open WebSocket connections. */
  apiKeyIdsInUse(): string[];
  /** Closes WebSocket connections whose viewer matches (e.g. a revoked API key). */
  closeConnections(match: (viewer: Viewer) => boolean, reason: string): number;
  stop(): Promise<void>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const WS_CLOSE_REVOKED = 4401;
/** Why a WebSocket connection without a valid key is closed (at most 123 bytes). */
export const WS_UNAUTHENTICATED_REASON = 'UNAUTHENTICATED: connection parameter authorization: "Bearer <API key>" missing or invalid';
/**
 * A connection refused as its address made too many requests without a valid key
 * (HOOKLINE_RATE_LIMIT_ANONYMOUS): not 4429, which graphql-ws's client takes for fatal and
 * never retries, where this one passes once the rate refills.
 */
export const WS_RATE_LIMITED = 4503;
/** What a WebSocket not yet accepted may send in one message: a connection_init, a ping. */
const PRE_INIT_MESSAGE_BYTES = 16 * 1024;
/** What may wait to be sent on a WebSocket: past it the client does not read, and is cut off. */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;

function wsMessageBytes(data: import('ws').RawData): number {
  return Array.isArray(data) ? data.reduce((n, part) => n + part.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
}

export const WS_RATE_LIMITED_REASON = 'RATE_LIMITED: too many requests without a valid API key from this address; retry later';
/** A connection whose key could not be looked up, the database out of reach: 4503 too, which graphql-ws's client retries (4500 it never does). */
export const WS_UNAVAILABLE_REASON = `${DATABASE_UNAVAILABLE.code}: ${DATABASE_UNAVAILABLE.message}`;

/**
 * Messages a second an accepted WebSocket may send (subscribe, complete, ping…), bursts of a
 * second's worth: a dashboard sends a few. Unbounded, one socket's flood of subscribe and
 * complete (1.8 million pairs in 14 s) held every other tenant's requests for seconds, each
 * subscribe looked up, parsed and validated before the key's own rate was counted.
 */
export const WS_MESSAGES_PER_SECOND = 1_000;
export const WS_MESSAGES_REASON = `RATE_LIMITED: more than ${WS_MESSAGES_PER_SECOND} messages a second on this connection; retry later`;
const messageBuckets = new WeakMap<object, TokenBucket>();
/** Sockets closed for their message rate. */
const overRate = new WeakSet<object>();

/** Takes one message of the socket's bucket; false when it is empty. */
function takeMessage(socket: object, now = performance.now()): boolean {
  const bucket = refill(messageBuckets.get(socket) ?? { tokens: WS_MESSAGES_PER_SECOND, at: now }, WS_MESSAGES_PER_SECOND, now);
  messageBuckets.set(socket, bucket);
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

interface SocketEntry {
  /** Resolved when the socket connected; each operation resolves it again from `authorization`. */
  viewer: Viewer;
  authorization: string | undefined;
  close: (code: number, reason: string) => void;
  /** Ids of its queries and mutations under way, whose answers are still to be sent. */
  answering: Set<string>;
  /** Called once an operation's answer is sent (graphql-ws's onComplete). */
  answered: (id: string) => void;
  /** Closes it once those have been answered (a key revoking itself gets its `true`), within REVOKED_CLOSE_WAIT_MS. */
  closeAnswered: (code: number, reason: string) => void;
}

/** How long a socket to be closed waits for the answers of its operations under way. */
const REVOKED_CLOSE_WAIT_MS = 5_000;

/**
 * The body of an `application/json` request (as Yoga tells one) when it is a JSON object,
 * parsed, for Yoga to use as it is, as it does for frameworks that parse bodies. Given the
 * Buffer, its server adapter first lists the Buffer's keys, one per byte, on every request.
 * Anything else (another type, invalid JSON, not an object) goes to Yoga as read, for its
 * own answer. `text` is the body decoded (bodyText), whatever the type.
 */
function jsonObjectBody(req: IncomingMessage, text: string): Record<string, unknown> | undefined {
  const type = jsonMediaType(req);
  if (type === 'application/graphql+json') refuseInexactJson(text); // left to Yoga to read
  if (type !== 'application/json') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  refuseInexactNumbers(text);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) || !Object.keys(parsed).length) return undefined;
  return parsed as Record<string, unknown>;
}

/**
 * Refuses a form body's `variables` (JSON, as GraphQL over HTTP sends them there) holding a
 * number JavaScript would not keep exactly. (A GET's cannot be a mutation, and no query takes
 * JSON.) Invalid JSON is left to Yoga's answer.
 */
function refuseInexactVariables(form: string): void {
  for (const variables of new URLSearchParams(form).getAll('variables')) refuseInexactJson(variables, 'variables');
}

/** refuseInexactNumbers for text that may not be JSON: parsed first (invalid JSON is left to Yoga's answer). */
function refuseInexactJson(text: string, root = ''): void {
  try {
    JSON.parse(text);
  } catch {
    return;
  }
  refuseInexactNumbers(text, root);
}

/** The JSON media types Yoga reads a POST body as (its isPOSTJsonRequest), as it tells them. */
function jsonMediaType(req: IncomingMessage): 'application/json' | 'application/graphql+json' | undefined {
  const type = req.headers['content-type']?.split(',')[0];
  for (const json of ['application/json', 'application/graphql+json'] as const) if (type === json || type?.startsWith(`${json};`)) return json;
  return undefined;
}

/** Whether a request is to GraphQL's endpoint, /graphql (a query string, a trailing slash aside). */
function toGraphQL(req: IncomingMessage): boolean {
  return (req.url ?? '').split('?')[0]!.replace(/\/+$/, '') === '/graphql';
}

/** A browser's page load of /graphql (a GET that takes HTML), as Yoga tells one. */
function wantsGraphiQL(req: IncomingMessage): boolean {
  return toGraphQL(req) && !!req.headers.accept?.includes('text/html');
}

/**
 * Caps the connections open at once (HTTP, WebSockets among them): in all, so that clients
 * cannot use up the process's file descriptors (its database pool then fails to connect), and
 * from one address (trusted proxies apart, whose connections are many clients'), so that one
 * client cannot take them all. An idle keep-alive connection is held 65 s, renewed by one request
 * a minute: a review held 20,000 with no key. One more is closed as it comes.
 */
function limitConnections(server: import('node:http').Server, config: Services['config']): void {
  server.maxConnections = config.maxConnections;
  const open = new Map<string, number>();
  server.on('connection', (socket: import('node:net').Socket) => {
    const address = socket.remoteAddress;
    if (!address || trusted(address, config.trustedProxies)) return;
    const key = addressKey(address);
    const n = (open.get(key) ?? 0) + 1;
    if (n > config.maxConnectionsPerAddress) {
      socket.destroy();
      return;
    }
    open.set(key, n);
    socket.once('close', () => {
      const left = open.get(key)! - 1;
      if (left > 0) open.set(key, left);
      else open.delete(key);
    });
  });
}

/** The media type Yoga answers in: the first of its two JSON types that `accept` lists, else application/json. */
function graphqlResponseType(accept: string | undefined): string {
  for (const range of accept?.split(',') ?? []) {
    const type = range.split(';')[0]!.trim().toLowerCase();
    if (type === 'application/graphql-response+json' || type === 'application/json') return type;
  }
  return 'application/json';
}

/** How long /readyz waits for the database: a load balancer's probe gives up after a few seconds. */
export const READINESS_TIMEOUT_MS = 3_000;

/**
 * A round trip to the database, failing past READINESS_TIMEOUT_MS: a server that went silent
 * (stopped, its host lost) would otherwise hold the check, and the probe, forever. The
 * statement's own time limit fails it in pg, which then drops its connection rather than
 * leave it stuck in the pool; waiting for a connection is timed by the race.
 */
async function databaseAnswers(pool: pg.Pool): Promise<void> {
  const answer = pool.query({ text: 'select 1', query_timeout: READINESS_TIMEOUT_MS } as pg.QueryConfig);
  await within(answer, READINESS_TIMEOUT_MS, `no answer within ${READINESS_TIMEOUT_MS} ms`);
}

/** How long one answer of the database (or its silence) stands for every /readyz after it. */
export const READINESS_REUSE_MS = 1_000;

/**
 * The database's answer for /readyz, shared: probes asking at once wait for one round trip, and
 * its outcome answers those of the next READINESS_REUSE_MS too. /readyz is open to anyone, and a
 * round trip per request let a flood of probes hold the pool the API needs (7,600 a second
 * slowed other requests to 75-120 ms); a database that went away is seen within a second.
 */
function sharedReadiness(check: () => Promise<void>, onFailure: (error: unknown) => void): () => Promise<void> {
  // On the monotonic clock: a wall clock set back an hour would keep an answer an hour.
  let last: { answer: Promise<void>; until: number } | undefined;
  return () => {
    if (last && performance.now() < last.until) return last.answer;
    const answer = check();
    const entry = { answer, until: Number.POSITIVE_INFINITY };
    last = entry;
    const settled = () => (entry.until = performance.now() + READINESS_REUSE_MS);
    answer.then(settled, (error) => {
      settled();
      onFailure(error); // once per round trip, not once per probe
    });
    return answer;
  };
}

export async function buildApp(options: AppOptions): Promise<App> {
  const { services, metrics, serveApi } = options;
  const { log, dataSource } = services;
  // The API stack (Yoga, the schema, GraphiQL's assets, graphql-ws) is loaded only by
  // processes that serve it: a worker stays small.
  const api = serveApi
    ? {
        ...(await import('./graphql.js')),
        ...(await import('../live/shared-execution.js')),
        ...(await import('./complexity.js')),
        useServer: (await import('graphql-ws/use/ws')).useServer,
        WebSocketServer: (await import('ws')).WebSocketServer,
        getOperationAST: (await import('graphql')).getOperationAST,
        withRawJsonPlaceholders: (await import('../schema/builder.js')).withRawJsonPlaceholders,
      }
    : undefined;
  const yoga = api?.createGraphQLServer(services);
  let state: 'starting' | 'ready' | 'stopping' = 'starting';
  const databaseReady = sharedReadiness(
    async () => databaseAnswers(poolOf(dataSource)),
    // The detail (the database's address, say) goes to the log, not to whoever asks.
    (error) => log.warn({ err: error }, 'readiness check: the database does not answer'),
  );

  async function health(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const path = (req.url ?? '/').split('?')[0];
    // /health too: Yoga answered it (its own liveness check) before unknown paths were refused.
    if (path === '/healthz' || path === '/health') {
      sendJson(res, 200, { status: 'ok' });
      return true;
    }
    if (path === '/readyz') {
      if (state !== 'ready') {
        // Stopping: a load balancer sends no more, while what is in flight finishes.
        sendJson(res, 503, { status: state });
        return true;
      }
      try {
        await databaseReady();
        sendJson(res, 200, { status: 'ready' });
      } catch {
        sendJson(res, 503, { status: 'unavailable', error: 'the database does not answer' });
      }
      return true;
    }
    if (path === '/metrics') {
      const token = services.config.metricsToken;
      if (token && !sameSecret(bearerToken(req.headers.authorization), token)) {
        res.setHeader('www-authenticate', 'Bearer realm="metrics"');
        sendJson(res, 401, { error: { code: 'UNAUTHENTICATED', message: 'GET /metrics asks for "Authorization: Bearer <HOOKLINE_METRICS_TOKEN>"' } });
        return true;
      }
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'content-type': metrics.registry.contentType });
      res.end(text);
      return true;
    }
    return false;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (await health(req, res)) return;
    if (!yoga) {
      sendJson(res, 404, { error: { code: 'NOT_FOUND', message: 'this process runs the worker role: only /healthz, /readyz and /metrics' } });
      return;
    }
    // A query string's escapes too (GET /graphql, REST's filters): decoded leniently, a byte no
    // UTF-8 text holds would become U+FFFD, a filter the client did not send.
    const query = req.url?.indexOf('?') ?? -1;
    if (query >= 0) checkFormUtf8(req.url!.slice(query + 1), "the query string's");
    let body: Buffer | undefined;
    const readOnce = async () => (body ??= await readBody(req));
    if (options.routes && (await options.routes(req, res, readOnce))) return;
    if (api && req.method === 'GET' && wantsGraphiQL(req)) {
      serveGraphiQL(req, res, api.graphiqlPage());
      return;
    }
    if (!toGraphQL(req)) {
      // Nothing else is served: a mistyped address is told so in the API's own form (Yoga
      // would answer an empty 404).
      req.resume();
      const path = (req.url ?? '/').split('?')[0]!;
      sendJson(res, 404, {
        error: { code: 'NOT_FOUND', message: `no such endpoint: ${path.slice(0, 200)}; GraphQL is at /graphql, and the README lists the REST endpoints` },
      });
      return;
    }
    if (api && req.method !== 'OPTIONS' && toGraphQL(req)) {
      // Who asks, before any of the request is read or parsed: a request without a valid key
      // counts against its address's limit (a key's against the key's), whatever its document.
      let viewer: Viewer;
      try {
        viewer = await resolveViewer(dataSource, services.config.adminToken, req.headers.authorization, services.apiKeys, services.addressLimiter.of(req));
        if (viewer.kind === 'tenant') services.rateLimiter.take(viewer.apiKeyId);
      } catch (error) {
        if (!(error instanceof RateLimitedError)) throw error;
        res.setHeader('retry-after', String(error.retryAfterSeconds));
        sendJson(res, 429, { errors: [{ message: error.message, extensions: { code: error.code } }] }, graphqlResponseType(req.headers.accept));
        req.resume();
        return;
      }
      api.requestViewers.set(req, viewer);
    }
    if (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH') {
      // Read (and limit) the body here; Yoga then uses it instead of the consumed stream. Its
      // bytes must be UTF-8 whatever the type: Yoga's own decoding would put U+FFFD in their place.
      const buffer = await readOnce();
      if (buffer.length) {
        const text = bodyText(buffer);
        if (req.headers['content-type']?.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
          checkFormUtf8(text);
          refuseInexactVariables(text);
        }
        (req as IncomingMessage & { body?: unknown }).body = jsonObjectBody(req, text) ?? buffer;
      }
    }
    await yoga.requestListener(req, res);
  }

  /**
   * GraphiQL's page: one page load counts against its address's limit on requests without a
   * key (a browser sends none), and is answered from the page rendered once, gzipped if the
   * client takes it, revalidated by its ETag, and not to be framed by another site.
   */
  function serveGraphiQL(req: IncomingMessage, res: ServerResponse, page: import('./graphql.js').GraphiQLPage): void {
    try {
      services.addressLimiter.of(req).take();
    } catch (error) {
      if (!(error instanceof RateLimitedError)) throw error;
      res.writeHead(429, { 'content-type': 'text/plain; charset=utf-8', 'retry-after': String(error.retryAfterSeconds) });
      res.end(`${error.message}\n`);
      return;
    }
    const headers: Record<string, string | number> = {
      'content-type': 'text/html; charset=utf-8',
      etag: page.etag,
      'cache-control': 'no-cache',
      vary: 'Accept-Encoding',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'content-security-policy': "frame-ancestors 'none'",
      'referrer-policy': 'no-referrer',
    };
    if (req.headers['if-none-match'] === page.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const gzip = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
    const body = gzip ? page.gzip : page.html;
    res.writeHead(200, { ...headers, 'content-length': body.length, ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
    res.end(body);
  }

  const inFlight = new Set<ServerResponse>();
  let closed = false;
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    // Stopping: this request is served, and its connection closed after the answer (Connection:
    // close), so that a keep-alive client sends no more on it, rather than have one cut mid-way;
    // so are those in flight as the stop begins (see setReady).
    if (state === 'stopping') res.shouldKeepAlive = false;
    if (closed) {
      // Past stop(): the port is closed; a request still coming on a connection is not begun.
      sendJson(res, 503, { status: 'stopping' });
      return;
    }
    inFlight.add(res);
    res.once('close', () => inFlight.delete(res));
    handle(req, res).catch((error: unknown) => {
      if (error instanceof BodyTooLargeError || error instanceof BodyNotUtf8Error || error instanceof BodyEncodedError || error instanceof InexactNumberError) {
        const [status, refusal] =
          error instanceof BodyTooLargeError
            ? [413, { code: 'PAYLOAD_TOO_LARGE', message: `the request body exceeds ${MAX_BODY_BYTES} bytes` }]
            : [error instanceof BodyEncodedError ? 415 : 400, { code: error.code, message: error.message }];
        // In the shape each client reads: GraphQL's errors on /graphql (in the media type Yoga
        // answers a malformed body in), REST's error elsewhere.
        const graphql = toGraphQL(req);
        if (graphql) sendJson(res, status, { errors: [{ message: refusal.message, extensions: { code: refusal.code } }] }, graphqlResponseType(req.headers.accept));
        else sendJson(res, status, { error: refusal });
        req.resume();
        return;
      }
      // Before GraphQL (the caller's key looked up while the database is down, say): in GraphQL's shape on /graphql.
      answerFailure(req, res, error, log, toGraphQL(req) ? graphqlResponseType(req.headers.accept) : undefined);
    });
  };
  const timeouts = options.timeouts ?? REQUEST_TIMEOUTS;
  const server = createServer(
    {
      headersTimeout: timeouts.headersMs,
      requestTimeout: timeouts.requestMs,
      // How often they are checked: Node's default, 30 s, would let a request have twice its time.
      connectionsCheckingInterval: Math.min(1_000, timeouts.headersMs / 4),
    },
    onRequest,
  );
  server.keepAliveTimeout = 65_000;
  limitConnections(server, services.config);

  const sockets = new Set<SocketEntry>();
  let wss: WebSocketServer | undefined;
  if (yoga && api) {
    const { connectionAuthorization, forWebSocket } = api;
    const mask = api.createErrorMasker(log);
    const { adminToken } = services.config;
    wss = new api.WebSocketServer({ server, path: '/graphql', maxPayload: MAX_BODY_BYTES });
    // graphql-ws reads each message with JSON.parse, which rounds a number a double cannot hold:
    // this listener, added before graphql-ws's, sees the message's text first and notes such a
    // number of a `subscribe`, and onSubscribe refuses that operation with it.
    const inexactOperations = new WeakMap<object, Map<string, InexactNumberError>>();
    /** Sockets whose connection_init had a valid key (onConnect). */
    const acceptedSockets = new WeakSet<object>();
    /** Per socket, the messages under way whose RawJson placeholders its send() splices (by nonce). */
    const rawMessages = new WeakMap<object, Map<string, (json: string) => string>>();
    wss.on('connection', (socket, request) => {
      const spliced = new Map<string, (json: string) => string>();
      rawMessages.set(socket, spliced);
      const send = socket.send.bind(socket);
      socket.send = ((data: unknown, ...rest: unknown[]) => {
        if (spliced.size && typeof data === 'string') {
          let text = data;
          for (const [nonce, splice] of spliced) {
            if (!text.includes(nonce)) continue;
            spliced.delete(nonce);
            text = splice(text);
          }
          data = text;
        }
        return (send as (...args: unknown[]) => void)(data, ...rest);
      }) as typeof socket.send;
      socket.on('message', (data) => {
        // Sent on after the server closed it (graphql-ws's init timeout, say): ws would wait 30 s
        // for the client's close, parsing all the while.
        // One closed for its message rate gets its second to take the close frame (see below).
        if (socket.readyState !== socket.OPEN) return overRate.has(socket) ? undefined : socket.terminate();
        // graphql-ws answers a ping with its payload; a client that never reads would have the
        // answers kept for it without end.
        if (socket.bufferedAmount > MAX_BUFFERED_BYTES) return socket.terminate();
        // Not yet accepted (no valid key): none needs more than a connection_init's few bytes.
        const accepted = acceptedSockets.has(socket);
        if (!accepted && wsMessageBytes(data) > PRE_INIT_MESSAGE_BYTES) return socket.terminate();
        if (accepted && !takeMessage(socket)) {
          // Closed with the reason, and read no more (graphql-ws takes none of what it sends on),
          // then ended: reading its answer to the close frame would take its flood in too.
          // Messages of the chunk already read still come (ws parses a chunk whole), and are passed over.
          overRate.add(socket);
          socket.close(WS_RATE_LIMITED, WS_MESSAGES_REASON);
          socket.pause();
          setTimeout(() => socket.terminate(), 1_000).unref();
          return;
        }
        const text = String(data);
        let message: { type?: unknown; id?: unknown } | null | undefined;
        try {
          message = JSON.parse(text);
        } catch {
          // not JSON: graphql-ws closes the socket (counted below all the same)
        }
        if (!accepted && message?.type !== 'connection_init') {
          // Each message but the connection_init is a request without a key.
          try {
            services.addressLimiter.of(request).take();
          } catch (error) {
            if (!(error instanceof RateLimitedError)) throw error;
            return socket.close(WS_RATE_LIMITED, WS_RATE_LIMITED_REASON);
          }
        }
        if (message?.type !== 'subscribe' || typeof message.id !== 'string') return;
        // The operation's path (`variables.…`), as over HTTP, not the message's (`payload.variables.…`).
        const error = inexactNumberError(text, '', 'payload.');
        if (!error) return;
        let noted = inexactOperations.get(socket);
        if (!noted) inexactOperations.set(socket, (noted = new Map()));
        noted.set(message.id, error);
      });
    });
    api.useServer<Record<string, unknown>, { entry?: SocketEntry }>(
      {
        // Yoga's enveloped execute and subscribe, as onSubscribe hands them over. deliveryUpdated
        // is executed once per update and shared by its subscribers (see shared-execution.ts),
        // straight from graphql-ws: Yoga's subscribe would wrap each subscriber's results.
        execute: (args: any) => args.rootValue.execute(args),
        subscribe: (args: any) =>
          api.isSharedSubscription(args)
            ? api.subscribeShared({ ...args, rootValue: undefined }, { mask, contextForEvent: api.contextForLiveUpdate, ahead: metrics.liveUpdatesAhead })
            : args.rootValue.subscribe(args),
        onConnect: async (ctx) => {
          const authorization = connectionAuthorization(ctx.connectionParams);
          const socket = (ctx.extra as any).socket as import('ws').WebSocket;
          let viewer: Viewer;
          try {
            viewer = await resolveViewer(dataSource, adminToken, authorization, services.apiKeys, services.addressLimiter.of((ctx.extra as any).request));
          } catch (error) {
            if (databaseUnavailable(error)) {
              log.warn({ err: error }, 'WebSocket connection refused: the database cannot be reached');
              socket.close(WS_RATE_LIMITED, WS_UNAVAILABLE_REASON);
              return false;
            }
            if (!(error instanceof RateLimitedError)) throw error;
            socket.close(WS_RATE_LIMITED, WS_RATE_LIMITED_REASON);
            return false;
          }
          if (viewer.kind === 'anonymous') {
            // 4403 Forbidden, as graphql-ws refuses a connection, with the contract's code in the reason.
            socket.close(4403, WS_UNAUTHENTICATED_REASON);
            return false;
          }
          let closing: (() => void) | undefined;
          const entry: SocketEntry = {
            viewer,
            authorization,
            close: (code, reason) => socket.close(code, reason),
            answering: new Set(),
            answered: (id) => {
              // graphql-ws sends the operation's `complete` once onComplete has returned.
              if (entry.answering.delete(id) && !entry.answering.size && closing) setImmediate(closing);
            },
            closeAnswered: (code, reason) => {
              if (!entry.answering.size) return socket.close(code, reason);
              const timer = setTimeout(() => closing?.(), REVOKED_CLOSE_WAIT_MS).unref();
              closing = () => {
                closing = undefined;
                clearTimeout(timer);
                socket.close(code, reason);
              };
            },
          };
          acceptedSockets.add(socket);
          sockets.add(entry);
          socket.once('close', () => sockets.delete(entry));
          ctx.extra.entry = entry;
          return true;
        },
        onSubscribe: async (ctx, id, params) => {
          const extra = ctx.extra as any;
          const entry = extra.entry as SocketEntry;
          const noted = inexactOperations.get(extra.socket);
          const inexact = noted?.get(id);
          noted?.delete(id);
          // The key is checked again for every operation, as for every HTTP request (through
          // the same cache): the notice of its revocation may have been lost.
          let viewer: Viewer;
          try {
            viewer = await resolveViewer(dataSource, adminToken, entry.authorization, services.apiKeys, services.addressLimiter.of(extra.request));
          } catch (error) {
            return forWebSocket([mask(error)]);
          }
          if (viewer.kind === 'anonymous') {
            // After graphql-ws has sent the operation its error, and the answers of those under
            // way (a revokeApiKey of the key itself among them).
            setImmediate(() => entry.closeAnswered(WS_CLOSE_REVOKED, 'API key revoked'));
            return forWebSocket([mask(unauthenticated('the API key of this connection is no longer valid (revoked)'))]);
          }
          if (inexact) return forWebSocket([mask(inexact)]);
          const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
            ...ctx,
            req: extra.request,
            socket: extra.socket,
            params,
            viewer,
          });
          let document;
          try {
            document = parse(params.query);
          } catch (error) {
            return forWebSocket([mask(error)]);
          }
          let errors: readonly unknown[];
          try {
            errors = validate(schema, document);
          } catch (error) {
            errors = [error]; // GraphQL Armor's limits throw their refusal
          }
          if (errors.length) return forWebSocket(errors.map((error) => mask(error)));
          let contextValue;
          try {
            contextValue = await contextFactory(); // refuses an operation over the key's rate limit
          } catch (error) {
            return forWebSocket([mask(error)]);
          }
          // Here, as a refusal of the operation like the checks above (an `error` message), and
          // for deliveryUpdated, which the subscribe above hands past Yoga's plugins.
          const refusal = api.complexityRefusal({ schema, document, variableValues: params.variables, operationName: params.operationName, contextValue });
          if (refusal) return forWebSocket([refusal]);
          if (api.getOperationAST(document, params.operationName)?.operation !== 'subscription') entry.answering.add(id);
          return {
            schema,
            operationName: params.operationName,
            document,
            variableValues: params.variables,
            contextValue,
            rootValue: { execute, subscribe },
          };
        },
        onComplete: (ctx, id) => (ctx.extra as { entry?: SocketEntry }).entry?.answered(id),
        onNext: (ctx, _id, _params, _args, result) => {
          // A delivery's payload goes out as its stored text, unparsed, as over HTTP (see RawJson):
          // graphql-ws writes the message with these placeholders, and the socket's send() splices.
          const raw = result.data ? api.withRawJsonPlaceholders(result.data) : undefined;
          if (raw) rawMessages.get((ctx.extra as { socket: object }).socket)?.set(raw.nonce, raw.splice);
          if (!raw && !result.errors) return undefined;
          return { ...result, ...(raw && { data: raw.value as typeof result.data }), ...(result.errors && { errors: forWebSocket(result.errors) }) };
        },
      },
      wss,
    );
    wss.on('connection', (socket) => {
      // A socket's `error` is nearly always a client breaking the protocol (a message over
      // maxPayload, a frame not masked: ws's WS_ERR_ codes), and ws has already closed the
      // socket with the code that says so (1009, 1002). graphql-ws's own listener, added just
      // before this one, printed each with its stack to stderr as "an internal error… check
      // your implementation": lines out of the JSON log, as many as any client liked to cause.
      socket.removeAllListeners('error');
      socket.on('error', (error: Error & { code?: string }) => {
        if (error.code?.startsWith('WS_ERR_')) log.debug({ code: error.code, reason: error.message }, 'WebSocket closed: the client broke the protocol');
        else log.warn({ err: error }, 'WebSocket closed on an error');
      });
    });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(error.code === 'EADDRINUSE' ? portTaken(options.port, options.host ?? '0.0.0.0') : error));
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  return {
    server,
    yoga,
    url,
    port,
    setReady(value) {
      state = value ? 'ready' : state === 'starting' ? 'starting' : 'stopping';
      if (state === 'stopping') for (const res of inFlight) if (!res.headersSent) res.shouldKeepAlive = false;
    },
    apiKeyIdsInUse() {
      const ids = new Set<string>();
      for (const { viewer } of sockets) if (viewer.kind === 'tenant') ids.add(viewer.apiKeyId);
      return [...ids];
    },
    closeConnections(match, reason) {
      let closed = 0;
      for (const entry of sockets) {
        if (match(entry.viewer)) {
          entry.closeAnswered(WS_CLOSE_REVOKED, reason);
          closed++;
        }
      }
      return closed;
    },
    async stop() {
      for (const entry of sockets) entry.close(1001, 'server shutting down');
      // A client that does not answer the close handshake (one that stopped reading) is cut off.
      const terminate = setTimeout(() => wss?.clients.forEach((client) => client.terminate()), 1_000);
      await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
      clearTimeout(terminate);
      // Server-Sent Events streams last as long as their subscriptions: ended like the sockets.
      closed = true;
      for (const res of inFlight) {
        if (isEventStream(res)) res.destroy();
        else if (!res.headersSent) endIfEventStream(res); // one still being read or looked up may turn out a stream
      }
      server.closeIdleConnections();
      const closing = new Promise<void>((resolve) => server.close(() => resolve()));
      // Requests in flight finish (each connection closes after its answer); one still running
      // after SHUTDOWN_REQUESTS_MS is cut off.
      const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_REQUESTS_MS);
      await closing;
      clearTimeout(force);
    },
  };
}

export { WS_CLOSE_REVOKED };

/** A request's path for the log, without its query: a GET's GraphQL variables are there, and may be a tenant's data. */
/**
 * Answers a request that failed unexpectedly, in GraphQL's shape (given its media type) or
 * REST's: nothing to a client gone, 503 with Retry-After when the database cannot be reached,
 * else an opaque 500; the detail is logged.
 */
export function answerFailure(req: IncomingMessage, res: ServerResponse, error: unknown, log: Services['log'], graphqlType?: string): void {
  // The client's connection is gone (a request read in full is destroyed too, on Node 20: not
  // that; and an ECONNRESET may be the database's).
  if (req.socket?.destroyed) {
    log.debug({ err: coerceError(error), path: pathOnly(req.url) }, 'client went away');
    return;
  }
  const unavailable = databaseUnavailable(error);
  if (unavailable) log.warn({ err: coerceError(error), path: pathOnly(req.url) }, 'request failed: the database cannot be reached');
  else log.error({ err: coerceError(error), path: pathOnly(req.url) }, 'request failed');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const failure = unavailable ? { code: DATABASE_UNAVAILABLE.code, message: DATABASE_UNAVAILABLE.message } : { code: 'INTERNAL_SERVER_ERROR', message: 'unexpected error' };
  const status = unavailable ? DATABASE_UNAVAILABLE.status : 500;
  if (unavailable) res.setHeader('retry-after', String(DATABASE_UNAVAILABLE.retryAfterSeconds));
  if (graphqlType) sendJson(res, status, { errors: [{ message: failure.message, extensions: { code: failure.code } }] }, graphqlType);
  else sendJson(res, status, { error: failure });
}

function pathOnly(url: string | undefined): string | undefined {
  return url?.split('?', 1)[0];
}

/**
 * Whether `res` streams Server-Sent Events, by the head it wrote (a client may accept
 * text/event-stream for any request, and is answered JSON but for a subscription). Read from the
 * written head: Yoga's adapter may write its headers with writeHead, which getHeader does not see.
 */
function isEventStream(res: ServerResponse): boolean {
  const head = (res as ServerResponse & { _header?: string | null })._header;
  return typeof head === 'string' && /\r\ncontent-type: *text\/event-stream/i.test(head);
}

/** Ends `res` as soon as it writes its head, if that head begins an event stream (see stop()). */
function endIfEventStream(res: ServerResponse): void {
  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, ...args: Parameters<ServerResponse['writeHead']>) {
    const written = writeHead.apply(this, args);
    if (isEventStream(this)) setImmediate(() => this.destroy());
    return written;
  } as ServerResponse['writeHead'];
}

/**
 * Refuses a PORT that another process listens on at once, rather than after the embedded
 * PostgreSQL and the migrations (seconds) only to stop them again. (The port may still be
 * taken in between: the listen's own error says so then.)
 */
export async function checkPortFree(port: number, host = '0.0.0.0'): Promise<void> {
  if (!port) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createNetServer();
    probe.once('error', (error: NodeJS.ErrnoException) => reject(error.code === 'EADDRINUSE' ? portTaken(port, host) : error));
    // Not exclusive: a cluster's workers share the primary's handle, as their listen() will.
    probe.listen({ port, host }, () => probe.close(() => resolve()));
  });
}

function portTaken(port: number, host: string): Error {
  return new StartRefused(`PORT ${port} is already in use on ${host}: stop what listens there, or set PORT to another port`);
}
