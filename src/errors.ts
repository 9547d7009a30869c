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

export const badInput = (field: string, message: string) =>
  new HooklineError(ErrorCode.BAD_USER_INPUT, `${field}: ${message}`, field);

// PostgreSQL stores no NUL character, in text or jsonb alike: without these
// checks it fails the statement and the caller sees an unexpected error.
const NUL_MESSAGE = 'must not contain the NUL character (\\u0000)';

/** Refuses a text input that holds a NUL character, naming the field. */
export function rejectNul(field: string, value: string | null | undefined): void {
  if (typeof value === 'string' && value.includes('\0')) throw badInput(field, NUL_MESSAGE);
}

/** The same for a JSON input, given as its JSON.stringify text (which escapes NUL as \u0000, in keys and values). */
/**
 * Refuses JSON (as JSON.stringify wrote it) that PostgreSQL's jsonb cannot store: a NUL
 * character, or a lone UTF-16 surrogate (half of a pair, which JSON.stringify writes as a
 * \ud800-\udfff escape; a whole pair it writes as it is).
 */
export function rejectUnstorableJson(field: string, json: string): void {
  // An even run of backslashes before it (none included) means the \u is an escape, not literal text.
  if (/(?:^|[^\\])(?:\\\\)*\\u0000/.test(json)) throw badInput(field, NUL_MESSAGE);
  if (/(?:^|[^\\])(?:\\\\)*\\ud[89a-f]/.test(json)) throw badInput(field, 'holds text that is not valid Unicode (half of a UTF-16 surrogate pair)');
}

/** How deeply JSON input (event data, a schema) may nest objects and arrays: far beyond any real document. */
export const MAX_JSON_DEPTH = 100;

/**
 * Refuses a value nested deeper than MAX_JSON_DEPTH, looked at without recursion: one nested
 * thousands deep would overflow the stack of JSON.stringify, of a schema validator, or of
 * PostgreSQL's jsonb (a cyclic object from a library caller is refused the same way).
 */
export function rejectDeepJson(field: string, value: object): void {
  const stack: Array<[value: object, depth: number]> = [[value, 1]];
  while (stack.length) {
    const [next, depth] = stack.pop()!;
    if (depth > MAX_JSON_DEPTH) throw badInput(field, `nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep`);
    for (const child of Object.values(next)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
}

export const notFound = (what: string, id: string) =>
  new HooklineError(ErrorCode.NOT_FOUND, `${what} ${id} was not found`);
export const unauthenticated = (message = 'a valid API key is required: Authorization: Bearer <key>') =>
  new HooklineError(ErrorCode.UNAUTHENTICATED, message);
export const forbidden = (message: string) => new HooklineError(ErrorCode.FORBIDDEN, message);

/** Normalises an unknown throw once, keeping it as the cause. */
export function coerceError(error: unknown): Error {
  if (error instanceof Error) return error;
  return new Error(typeof error === 'string' ? error : `non-error thrown: ${JSON.stringify(error)}`, { cause: error });
}
