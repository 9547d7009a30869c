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
