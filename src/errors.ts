// The error codes of the contract, and the one error class that carries them.
// Anything else thrown inside a resolver is unexpected: Yoga masks it and we
// log it with its detail (server/graphql.ts gives HooklineErrors their code).

export const ErrorCode = {
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  NOT_FOUND: 'NOT_FOUND',
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  RATE_LIMITED: 'RATE_LIMITED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** HTTP status that REST answers use for each code. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  BAD_USER_INPUT: 400,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
};

export class HooklineError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HooklineError';
  }
}

/**
 * How a request is answered that failed because the database could not be reached (down,
 * restarting, out of connections): 503 with Retry-After, for the client to try again, rather
 * than 500 "unexpected error". The code stays INTERNAL_SERVER_ERROR, outside the contract's
 * codes (which are the client's to fix).
 */
export const DATABASE_UNAVAILABLE = {
  status: 503,
  retryAfterSeconds: 5,
  code: 'INTERNAL_SERVER_ERROR',
  message: 'the database cannot be reached for now: try again shortly',
} as const;

/** SQLSTATEs of a server shutting down, starting, or out of connections; class 08 (connection exceptions) too. */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);
/** pg's and pg-pool's own words for a connection lost or not made. */
const CONNECTION_LOST = /^(Connection terminated|Connection ended|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/** Whether `error` (or what it wraps: TypeORM's driverError, a cause) says the database could not be reached. */
export function databaseUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code) || UNREACHABLE.has(code)) return true;
      // The database taken out of service (ALTER DATABASE … ALLOW_CONNECTIONS false).
      if (code === '55000' && /not currently accepting connections/.test(e.message)) return true;
    }
    if (CONNECTION_LOST.test(e.message)) return true;
    e = (e as { driverError?: unknown }).driverError ?? e.cause ?? (e instanceof AggregateError ? e.errors[0] : undefined);
  }
  return false;
}

export const badInput = (field: string, message: string) =>
  new HooklineError(ErrorCode.BAD_USER_INPUT, `${field}: ${message}`, field);

// PostgreSQL stores no NUL character, in text or jsonb alike: without these
// checks it fails the statement and the caller sees an unexpected error. Nor
// does it store half of a UTF-16 surrogate pair: pg writes it as U+FFFD, so
// what is stored would differ from what was accepted (two idempotency keys
// differing only there would be one).
const NUL_MESSAGE = 'must not contain the NUL character (\\u0000)';
const SURROGATE_MESSAGE = 'holds text that is not valid Unicode (half of a UTF-16 surrogate pair)';

/** Refuses a text input that PostgreSQL cannot store as it is (a NUL character, half a surrogate pair), naming the field. */
export function rejectUnstorableText(field: string, value: string | null | undefined): void {
  if (typeof value !== 'string') return;
  if (value.includes('\0')) throw badInput(field, NUL_MESSAGE);
  if (!(value as string & { isWellFormed(): boolean }).isWellFormed()) throw badInput(field, SURROGATE_MESSAGE);
}

/** Control characters (C0, DEL, C1: a tab, a line break, NEL) and Unicode's line and paragraph separators. */
export const CONTROL_CHARACTERS = /[\p{Cc}\u2028\u2029]/u;

/** A text input that may be absent: else non-blank, storable and at most `max` characters. */
export function checkText(field: string, value: string | null | undefined, max: number): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string' || !value.trim()) throw badInput(field, 'must be a non-empty string');
  // An id or a key, not text to lay out: a tab or a line break in one is a slip, kept unseen.
  if (CONTROL_CHARACTERS.test(value)) throw badInput(field, 'must not contain control characters (a tab or a line break, say)');
  rejectUnstorableText(field, value);
  rejectLongText(field, value, max);
  return value;
}

/**
 * Whether `text` is longer than `max` characters, counted as the README's limits and PostgreSQL's
 * char_length count them: code points, not UTF-16 units (an emoji is one character, two units).
 * Text of more than twice `max` units is too long whatever it holds, so a huge one is not walked.
 */
export function longerThan(text: string, max: number): boolean {
  if (text.length <= max) return false;
  if (text.length > 2 * max) return true;
  let characters = 0;
  for (const _ of text) if (++characters > max) return true;
  return false;
}

/** Refuses text of more than `max` characters (see longerThan), naming the field. */
export function rejectLongText(field: string, text: string, max: number): void {
  if (longerThan(text, max)) throw badInput(field, `must be at most ${max} characters`);
}

/**
 * Refuses JSON (as JSON.stringify wrote it) that PostgreSQL's jsonb cannot store: a NUL
 * character, or a lone UTF-16 surrogate (half of a pair, which JSON.stringify writes as a
 * \ud800-\udfff escape; a whole pair it writes as it is).
 */
export function rejectUnstorableJson(field: string, json: string): void {
  // An even run of backslashes before it (none included) means the \u is an escape, not literal text.
  if (/(?:^|[^\\])(?:\\\\)*\\u0000/.test(json)) throw badInput(field, NUL_MESSAGE);
  if (/(?:^|[^\\])(?:\\\\)*\\ud[89a-f]/.test(json)) throw badInput(field, SURROGATE_MESSAGE);
}

/** How deeply JSON input (event data, a schema) may nest objects and arrays: far beyond any real document. */
export const MAX_JSON_DEPTH = 100;

/**
 * JSON input (event data, a schema) as JSON.stringify writes it, which is what is stored and
 * sent: refused if it cannot be written (a cycle, a BigInt) or nests objects and arrays
 * deeper than MAX_JSON_DEPTH (thousands deep would overflow the stack of JSON.stringify, of a
 * schema validator, or of PostgreSQL's jsonb). Measured on the text, so an object whose
 * toJSON leaves out a back-reference is judged by what it writes.
 */
export function toJsonText(field: string, value: unknown): string {
  let json: string;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    if (error instanceof RangeError) throw badInput(field, `nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep`);
    throw badInput(field, `cannot be written as JSON: ${(error as Error).message}`);
  }
  // undefined, a function, a symbol, or a toJSON() answering one of them: no JSON text at all.
  if (typeof json !== 'string') throw badInput(field, 'cannot be written as JSON: it writes nothing (undefined, a function, or a toJSON() that returns no value)');
  if (json.length > MAX_JSON_DEPTH && jsonDeeperThan(json, MAX_JSON_DEPTH)) {
    throw badInput(field, `nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep`);
  }
  // JSON.stringify writes a number JSON cannot hold (1e999 parses as Infinity) as null: what
  // is stored and sent would not be what was checked. Only then does the text hold a null.
  if (json.includes('null')) {
    const path = nonFinitePath(value, field, new Set());
    if (path) throw badInput(field, `${path} is not a finite number (JSON has no Infinity or NaN; 1e999 is too large)`);
  }
  return json;
}

/**
 * The path (`data.amount`, `data.items[2]`) of the first number in `value` that is not
 * finite. An object with toJSON (a Date) writes something else: not looked into.
 */
function nonFinitePath(value: unknown, path: string, seen: Set<object>): string | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : path;
  if (value === null || typeof value !== 'object' || seen.has(value)) return undefined;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return undefined;
  seen.add(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = nonFinitePath(value[i], `${path}[${i}]`, seen);
      if (found) return found;
    }
    return undefined;
  }
  for (const key of Object.keys(value)) {
    const found = nonFinitePath((value as Record<string, unknown>)[key], `${path}.${key}`, seen);
    if (found) return found;
  }
  return undefined;
}

/** Whether JSON text opens more than `max` objects and arrays at once (brackets in strings are text). */
function jsonDeeperThan(json: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 34 /* " */) {
      // To the string's end: a backslash escapes the next character.
      for (i++; i < json.length && json.charCodeAt(i) !== 34; i++) if (json.charCodeAt(i) === 92) i++;
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > max) return true;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      depth--;
    }
  }
  return false;
}

/** An id as a message shows it: quoted (an empty one is seen), and at most 100 characters of it. */
const shownId = (id: string) => JSON.stringify(id.length > 100 ? `${id.slice(0, 100)}…` : id);

export const notFound = (what: string, id: string) =>
  new HooklineError(ErrorCode.NOT_FOUND, `${what} ${shownId(id)} was not found`);

/**
 * A row an answer read a moment ago is gone (the retention sweep deleted an event with its
 * deliveries between two reads of one request): a query meeting one is executed again, once or
 * twice, and then reads a world without it (see retryVanished in server/graphql.ts).
 */
export class Vanished extends HooklineError {
  constructor(what: string, id: string) {
    super(ErrorCode.NOT_FOUND, `${what} ${shownId(id)} was not found`);
  }
}
export const unauthenticated = (message = 'a valid API key is required: Authorization: Bearer <key>') =>
  new HooklineError(ErrorCode.UNAUTHENTICATED, message);
export const forbidden = (message: string) => new HooklineError(ErrorCode.FORBIDDEN, message);

/** Normalises an unknown throw once, keeping it as the cause. */
export function coerceError(error: unknown): Error {
  if (error instanceof Error) return error;
  return new Error(typeof error === 'string' ? error : `non-error thrown: ${JSON.stringify(error)}`, { cause: error });
}

/**
 * A start refused for a reason its message says whole (the data folder or the port another
 * process has): printed as it is, without a stack (main.ts).
 */
export class StartRefused extends Error {}
