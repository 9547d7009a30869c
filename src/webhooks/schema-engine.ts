// How tenants' JSON Schemas are compiled and run: ajv with RE2 for patterns and the standard
// formats. Used by the validation threads (see validation-pool.ts) and, for the built-in types
// only, by the main thread.
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import type { RegExpEngine } from 'ajv/dist/types/index.js';
import formats from 'ajv-formats';
import { RE2 } from 're2-wasm';

// ajv-formats is CommonJS: as imported here, its function is the module's `default`.
const addFormats = formats.default;

/**
 * Formats ajv's first errors as `data.amount: must be string,number`, naming the property an
 * error is about where ajv says it apart (a missing one, one not allowed, a name refused).
 */
export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .slice(0, 3)
    .map((e) => {
      // A JSON pointer's steps, unescaped (`a~1b` is the key `a/b`).
      const path = `data${e.instancePath
        .split('/')
        .slice(1)
        .map((step) => `.${step.replaceAll('~1', '/').replaceAll('~0', '~')}`)
        .join('')}`;
      const params = e.params as { missingProperty?: string; additionalProperty?: string; propertyName?: string };
      if (e.keyword === 'required') return `${path}.${params.missingProperty} is required`;
      if (e.keyword === 'additionalProperties') return `${path}.${params.additionalProperty} is not allowed (the schema allows no other properties)`;
      if (e.keyword === 'propertyNames') return `${path} has a property name the schema refuses: ${JSON.stringify(params.propertyName)}`;
      return `${path} ${e.message}`;
    })
    .join('; ');
}

/**
 * Keywords of the JSON Schema drafts after draft-07 (2019-09, 2020-12). Hookline validates
 * draft-07, as ajv's default does, which would ignore them: a schema using them is refused at
 * creation rather than never enforced. (Other keywords it does not know, annotations like
 * `x-…` or `example`, are left alone, as draft-07 says.)
 */
const LATER_DRAFT_KEYWORDS = new Set([
  'unevaluatedProperties',
  'unevaluatedItems',
  'dependentRequired',
  'dependentSchemas',
  'prefixItems',
  'minContains',
  'maxContains',
  '$anchor',
  '$dynamicRef',
  '$dynamicAnchor',
  '$recursiveRef',
  '$recursiveAnchor',
  '$vocabulary',
]);

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
// (No multipleOfPrecision: ajv's slack is on the quotient, so with multipleOf 1e10 it let
// 50000000009 pass; a decimal multipleOf is judged in doubles, see README.)
// ownProperties: data is JSON, whose objects have only their own keys; without it ajv also reads
// what every object inherits (an optional "constructor" property, absent, was "not a string";
// a required one was there).
const AJV_OPTIONS: Options = { allErrors: false, strict: false, addUsedSchema: false, inlineRefs: false, ownProperties: true, code: { regExp: re2 } };

/**
 * An ajv for tenants' schemas: RE2 patterns, and the standard formats (email, date-time, uri…)
 * enforced, not ignored. With `notes`, as a schema is created: what its compile says of
 * keywords it does not know goes there (see LATER_DRAFT_KEYWORDS), and a format it does not
 * know is an error.
 */
export function createAjv(notes?: string[]): Ajv {
  const note = (...args: unknown[]) => notes?.push(args.map(String).join(' '));
  const ajv = new Ajv(
    notes
      ? { ...AJV_OPTIONS, strict: 'log', strictTypes: false, strictTuples: false, strictRequired: false, logger: { log() {}, warn: note, error: note } }
      : AJV_OPTIONS,
  );
  addFormats(ajv);
  return ajv;
}

/**
 * What is wrong with a schema as createEventType is given it (its cost aside), or undefined;
 * throws if it does not compile (see compileProblem).
 */
export function schemaProblem(ajv: Ajv, schema: object): string | undefined {
  const dialect = (schema as { $schema?: unknown }).$schema;
  if (typeof dialect === 'string' && !/^http:\/\/json-schema\.org\/draft-07\/schema#?$/.test(dialect)) {
    return `names $schema ${JSON.stringify(dialect.slice(0, 100))}: Hookline validates draft-07 JSON Schemas ("http://json-schema.org/draft-07/schema#", as draft-07 writes it, or no $schema)`;
  }
  if (!(ajv.validateSchema(schema) as boolean)) return `is not a valid JSON Schema: ${ajv.errorsText(ajv.errors, { dataVar: 'schema' })}`;
  const notes: string[] = [];
  let compiled: { $async?: boolean };
  try {
    compiled = compiledOnce(() => createAjv(notes).compile(schema)) as { $async?: boolean };
  } catch (error) {
    // A format misspelt (`e-mail`) or of another validator would never be checked.
    const unknown = /^unknown format "([^"]*)" ignored in schema at path "([^"]*)"/.exec((error as Error).message);
    if (unknown) return `uses the format ${JSON.stringify(unknown[1])} at ${unknown[2]}, which Hookline does not know (it would never be checked): known are those of ajv-formats, such as email, date-time, uri, uuid`;
    throw error;
  }
  const later = notes.map((note) => /^strict mode: unknown keyword: "([^"]+)"$/.exec(note)?.[1]).find((keyword) => keyword && LATER_DRAFT_KEYWORDS.has(keyword));
  if (later) return `uses "${later}", a keyword of a later JSON Schema draft (2019-09, 2020-12): Hookline validates draft-07, which would ignore it`;
  // An asynchronous schema's validator answers with a promise, which is no verdict here.
  if (compiled.$async) return 'must not be asynchronous ($async): Hookline validates events as they come';
  // An event's data is a JSON object: a schema that admits none would refuse every event.
  const none = admitsNoObject(schema, schema, 'its top');
  if (none) return `has ${none}, so no event could pass (an event's data is a JSON object)`;
  return undefined;
}

const isObject = (value: unknown) => value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * Where and why `schema` (at `where` in `root`) admits no JSON object at all, or undefined when
 * one may pass: only what holds for every object is judged (a `type`, `enum` or `const` leaving
 * objects out, `not: {}`, `false`, through `allOf`, every branch of `anyOf`/`oneOf`, and a `$ref`
 * by JSON pointer, which draft-07 takes alone); anything else (an anchor, `if`, …) may let some
 * object through. Each part of the schema is judged once (`judged`), so a web of `$ref`s costs no
 * more than the schema's size.
 */
function admitsNoObject(schema: unknown, root: object, where: string, judged = new Map<object, string | undefined>()): string | undefined {
  if (schema === false) return `false at ${where}`;
  if (!isObject(schema)) return undefined;
  const node = schema as Record<string, unknown>;
  // A part with a base of its own resolves its $refs against it: not judged (what the API takes
  // has none, checkSchemaCost refusing such an $id; an anchor, #name, sets no base).
  if (node !== root && typeof node.$id === 'string' && !node.$id.startsWith('#')) return undefined;
  if (judged.has(node)) return judged.get(node);
  judged.set(node, undefined); // a $ref back to it (recursion) admits, while it is judged
  const why = judge(node, root, where, judged);
  judged.set(node, why);
  return why;
}

function judge(node: Record<string, unknown>, root: object, where: string, judged: Map<object, string | undefined>): string | undefined {
  const at = (path: string) => `${where === 'its top' ? '#' : where}/${path}`;
  if (typeof node.$ref === 'string') {
    // A JSON pointer within the schema; an anchor (#name) or another document is not judged.
    if (node.$ref !== '#' && !node.$ref.startsWith('#/')) return undefined;
    let target: unknown = root;
    for (const part of node.$ref.slice(2).split('/').filter((p, i) => p !== '' || i > 0)) {
      const key = decodeURIComponent(part).replaceAll('~1', '/').replaceAll('~0', '~');
      target = isObject(target) ? (target as Record<string, unknown>)[key] : undefined;
    }
    return target === undefined ? undefined : admitsNoObject(target, root, node.$ref, judged);
  }
  const { type } = node;
  if (type !== undefined && !(type === 'object' || (Array.isArray(type) && type.includes('object')))) return `"type": ${JSON.stringify(type)} at ${where}`;
  if (Array.isArray(node.enum) && !node.enum.some(isObject)) return `an "enum" with no object at ${where}`;
  if ('const' in node && !isObject(node.const)) return `a "const" that is no object at ${where}`;
  if (node.not === true || (isObject(node.not) && Object.keys(node.not as object).length === 0)) return `"not": ${JSON.stringify(node.not)} at ${where}`;
  if (Array.isArray(node.allOf)) {
    for (const [i, part] of node.allOf.entries()) {
      const why = admitsNoObject(part, root, at(`allOf/${i}`), judged);
      if (why) return why;
    }
  }
  for (const key of ['anyOf', 'oneOf'] as const) {
    const branches = node[key];
    if (!Array.isArray(branches) || !branches.length) continue;
    let first: string | undefined;
    for (const [i, part] of branches.entries()) {
      const why = admitsNoObject(part, root, at(`${key}/${i}`), judged);
      if (!why) {
        first = undefined;
        break; // one branch may admit an object: so may the whole
      }
      first ??= why;
    }
    if (first) return `no branch of "${key}" at ${where} that admits an object (${first}, …)`;
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
