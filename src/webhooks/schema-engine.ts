// How tenants' JSON Schemas are compiled and run: ajv with RE2 for patterns and the standard
// formats. Used by the validation threads (see validation-pool.ts) and, for the built-in types
// only, by the main thread.
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import type { RegExpEngine } from 'ajv/dist/types/index.js';
import formats from 'ajv-formats';
import { RE2 } from 're2-wasm';

// ajv-formats is CommonJS: as imported here, its function is the module's `default`.
const addFormats = formats.default;

/** Formats ajv's first errors as `data.amount: must be string,number`. */
export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .slice(0, 3)
    .map((e) => {
      const path = e.instancePath ? `data${e.instancePath.replaceAll('/', '.')}` : 'data';
      if (e.keyword === 'required') return `${path}.${(e.params as { missingProperty: string }).missingProperty} is required`;
      return `${path} ${e.message}`;
    })
    .join('; ');
}

/**
 * A tenant's schema may hold any `pattern`: JavaScript's backtracking engine can take
 * exponential time on one (`^(a+)+$` against 40 a's and a !), blocking the process for
 * every tenant. RE2 runs in time linear in the input, and refuses what it cannot run so
 * (backreferences, lookarounds) when the schema is created.
 */
const re2: RegExpEngine = Object.assign(
  (pattern: string, flags: string) => {
    const made = new RE2(pattern, flags.includes('u') ? flags : `${flags}u`);
    collecting?.push(made);
    return made;
  },
  { code: 'new (require("re2-wasm").RE2)' },
);

/** RE2 objects made while a throwaway compile runs (see compiledOnce). */
let collecting: RE2[] | undefined;

/**
 * Runs a compile whose validator is thrown away, and frees the RE2 objects it made: RE2 runs
 * in WebAssembly, in one memory of a fixed size for the whole thread, where nothing is freed
 * on its own, so each check of a schema at createEventType would take some of it for good.
 */
export function compiledOnce<T>(compile: () => T): T {
  const made: RE2[] = [];
  collecting = made;
  try {
    return compile();
  } finally {
    collecting = undefined;
    for (const regExp of made) (regExp as unknown as { wrapper?: { delete?: () => void } }).wrapper?.delete?.();
  }
}

// addUsedSchema: false, so two tenants' schemas with the same $id never collide. inlineRefs:
// false, so a $ref used in many places is compiled once, not copied into each (200 uses of a
// definition of 200 properties took 13 s and 1.5 GB to compile).
const AJV_OPTIONS: Options = { allErrors: false, strict: false, addUsedSchema: false, inlineRefs: false, code: { regExp: re2 } };

/** An ajv for tenants' schemas: RE2 patterns, and the standard formats (email, date-time, uri…) enforced, not ignored. */
export function createAjv(): Ajv {
  const ajv = new Ajv(AJV_OPTIONS);
  addFormats(ajv);
  return ajv;
}

/**
 * What is wrong with a schema as createEventType is given it (its cost aside), or undefined;
 * throws if it does not compile (see compileProblem).
 */
export function schemaProblem(ajv: Ajv, schema: object): string | undefined {
  if (!(ajv.validateSchema(schema) as boolean)) return `is not a valid JSON Schema: ${ajv.errorsText(ajv.errors, { dataVar: 'schema' })}`;
  // An asynchronous schema's validator answers with a promise, which is no verdict here.
  if ((compiledOnce(() => createAjv().compile(schema)) as { $async?: boolean }).$async) {
    return 'must not be asynchronous ($async): Hookline validates events as they come';
  }
  return undefined;
}

/** A compile's failure as said to the tenant: its first line only (an engine's may carry its stack, paths of this server). */
export function compileProblem(error: unknown): string {
  return `cannot be compiled: ${String((error as Error)?.message ?? error).split('\n')[0]!.slice(0, 300)}`;
}

/** The verdict of one validator on one value: undefined when it passes, else what is wrong. */
export function verdictOf(validate: ValidateFunction, data: unknown): { errors: string } | { async: true } | undefined {
  const valid: unknown = validate(data);
  if (valid === true) return undefined;
  if (valid instanceof Promise) {
    // A schema stored before createEventType refused asynchronous ones: never taken as valid.
    valid.catch(() => {});
    return { async: true };
  }
  return { errors: describeErrors(validate.errors) };
}

export type { ValidateFunction };
