// The one SchemaBuilder of Hookline: its plugins, scalars and Context type.
// Each domain file adds its own query, mutation and subscription fields.
import { randomUUID } from 'node:crypto';
import SchemaBuilder from '@pothos/core';
import ComplexityPlugin from '@pothos/plugin-complexity';
import RelayPlugin from '@pothos/plugin-relay';
import { GraphQLError, Kind, type ValueNode } from 'graphql';
import type { Viewer } from '../auth/viewer.js';
import { DATE_TIME_EXPECTED, parseDateTime } from '../date-time.js';
import { InexactNumberError, keptExactly, stepInto } from '../json-numbers.js';
import type { Services } from '../services.js';
import type { Logger } from '../logger.js';
import type { Loaders } from './loaders.js';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../db/keyset.js';

export interface Context {
  viewer: Viewer;
  services: Services;
  log: Logger;
  loaders: Loaders;
  /** Ends this operation's use of its API key (ApiKeyCache.use), set while it executes. */
  endKeyUse?: () => void;
}

type JsonValue = unknown;

export const builder = new SchemaBuilder<{
  Context: Context;
  DefaultFieldNullability: false;
  Scalars: {
    DateTime: { Input: Date; Output: Date | string };
    JSON: { Input: JsonValue; Output: JsonValue };
  };
}>({
  plugins: [ComplexityPlugin, RelayPlugin],
  defaultFieldNullability: false,
  // Each field's cost, and how many times a list repeats its selection (a list's own
  // `complexity` says how long it can be: see server/complexity.ts, which enforces the limit
  // before anything runs, over every transport).
  complexity: { defaultComplexity: 1, defaultListMultiplier: 1 },
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    nodeQueryOptions: false,
    nodesQueryOptions: false,
    // What every page says of its arguments and answer (limits: db/keyset.ts, schema/pagination.ts).
    firstArgOptions: { description: `Pages forward: the first N items (after \`after\`), 0 to ${MAX_PAGE_SIZE}; ${DEFAULT_PAGE_SIZE} when neither first nor last is given. Not with last.` },
    afterArgOptions: { description: "Items after this cursor (an edge's `cursor`, or `pageInfo.endCursor`) of the same list." },
    lastArgOptions: { description: `Pages backward: the last N items (before \`before\`), 0 to ${MAX_PAGE_SIZE}. Not with first.` },
    beforeArgOptions: { description: "Items before this cursor (an edge's `cursor`, or `pageInfo.startCursor`) of the same list." },
    pageInfoTypeOptions: { description: 'Where a page stands in its list (Relay cursor connections).' },
    hasNextPageFieldOptions: { description: 'Paging forward: whether items follow this page. Paging backward: whether `before` was given.' },
    hasPreviousPageFieldOptions: { description: 'Paging backward: whether items precede this page. Paging forward: whether `after` was given.' },
    startCursorFieldOptions: { description: "The first edge's cursor (`before` of the page ahead); null for an empty page with no cursor given." },
    endCursorFieldOptions: { description: "The last edge's cursor (`after` of the next page); null for an empty page with no cursor given." },
    cursorFieldOptions: { description: 'Where this item stands in its list: `after` or `before` of another page.' },
  },
});

const DATE_TIME_INPUT = `DateTime must be ${DATE_TIME_EXPECTED}, with its offset`;

/** The point in time an input DateTime names: only what the description promises (see date-time.ts). */
function parseDateTimeInput(value: unknown): Date {
  const parsed = typeof value === 'string' ? parseDateTime(value) : { problem: 'is not a string' };
  if ('problem' in parsed) throw new GraphQLError(`${DATE_TIME_INPUT}; ${JSON.stringify(value)?.slice(0, 100)} ${parsed.problem}`);
  return parsed;
}

builder.scalarType('DateTime', {
  description:
    'A point in time. Output: an ISO-8601 string in UTC (e.g. 2024-02-14T10:30:00.000Z). Input: an RFC 3339 (ISO-8601) date-time with its offset (Z or +01:00), in the years 0001 to 9999.',
  serialize: (value) => (value instanceof Date ? value.toISOString() : new Date(value).toISOString()),
  parseValue: parseDateTimeInput,
  parseLiteral: (node) => {
    if (node.kind !== Kind.STRING) throw new GraphQLError(`${DATE_TIME_INPUT}, written as a string`);
    return parseDateTimeInput(node.value);
  },
});

/** A JSON literal as its value; `path` is where `node` is within the literal (a refusal names it). */
function literalToJson(node: ValueNode, variables?: Record<string, unknown> | null, path = ''): JsonValue {
  switch (node.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return node.value;
    case Kind.INT:
    case Kind.FLOAT:
      if (!keptExactly(node.value)) throw new InexactNumberError(node.value, path);
      return Number(node.value);
    case Kind.NULL:
      return null;
    case Kind.LIST:
      return node.values.map((v, i) => literalToJson(v, variables, stepInto(path, i)));
    case Kind.OBJECT:
      return Object.fromEntries(node.fields.map((f) => [f.name.value, literalToJson(f.value, variables, stepInto(path, f.name.value))]));
    case Kind.VARIABLE: {
      // As JSON: a variable coerced by its own type (a DateTime is a Date) is JSON's string in data.
      const value = variables?.[node.name.value];
      return value === undefined ? undefined : (JSON.parse(JSON.stringify(value)) as JsonValue);
    }
    case Kind.ENUM:
      throw new GraphQLError(`JSON has no enum values: write ${node.value} as a string, "${node.value}"`);
    default:
      throw new GraphQLError(`unsupported JSON literal ${(node as ValueNode).kind}`);
  }
}

/**
 * A JSON value as a resolver gives it: wrapped, because the executor takes any value with a `then`
 * key for a promise, a field's result and its serialized value alike (data `{"then": 1}`, or a
 * schema's `if`/`then`, failed the field with "then is not a function" after the write). The JSON
 * scalar unwraps it, but for an object with a `then` key, which it answers still wrapped: the
 * response is written with JSON.stringify, which writes the value through `toJSON`.
 */
class JsonResult {
  constructor(readonly value: unknown) {}
  toJSON() {
    return this.value;
  }
}

/** What a JSON field's resolver returns for `value` (null stays null). */
export function jsonResult(value: unknown): unknown {
  return value === null || value === undefined ? value : new JsonResult(value);
}

/**
 * A JSON value kept as the text it was stored as (a delivery's payload: the bytes sent), not
 * parsed: an answer written with writeRawJson() carries the text as it is, where parsing it and
 * writing it out again cost about 7 ms of the process's one thread for 256 KiB of small keys
 * (0.7 s for a page of 100, which held every other tenant's requests as long). Live updates over
 * Server-Sent Events are written so too (the rawJsonAnswers plugin), and graphql-ws's messages
 * carry it with placeholders (withRawJsonPlaceholders). Written any other way, it is parsed then.
 */
class RawJson {
  /** Parsed once, however many times it is written another way (a live update, to each subscriber). */
  private parsed: { value: unknown } | undefined;
  constructor(readonly text: string) {}
  toJSON(): unknown {
    const writing = rawWriting;
    if (!writing) return (this.parsed ??= { value: JSON.parse(this.text) }).value;
    return placeholder(writing, this.text);
  }
}

/** What a JSON field's resolver returns for a JSON value stored as `text` (null stays null): see RawJson. */
export function rawJsonResult(text: string | null | undefined): unknown {
  return text === null || text === undefined ? text : new RawJson(text);
}

/** The answer being written by writeRawJson(), if one is. */
let rawWriting: RawWriting | undefined;

interface RawWriting {
  nonce: string;
  texts: string[];
}

/**
 * A string JSON.stringify writes as "\u0000<nonce>:<n>": no text of the answer holds a NUL
 * (PostgreSQL stores none), nor the nonce, drawn for this answer.
 */
function placeholder(writing: RawWriting, text: string): string {
  return `\u0000${writing.nonce}:${writing.texts.push(text) - 1}`;
}

/** `json` with each RawJson's placeholder of `writing` replaced by its text. */
function splice(json: string, writing: RawWriting): string {
  if (!writing.texts.length) return json;
  return json.replace(new RegExp(`"\\\\u0000${writing.nonce}:(\\d+)"`, 'g'), (_, n: string) => writing.texts[Number(n)]!);
}

/**
 * JSON.stringify(value), with each RawJson in it written as its text, unparsed (for Yoga's
 * `stringify` of an execution result: see the rawJsonAnswers plugin).
 */
export function writeRawJson(value: unknown): string {
  const writing: RawWriting = { nonce: randomUUID(), texts: [] };
  rawWriting = writing;
  let json: string;
  try {
    json = JSON.stringify(value);
  } finally {
    rawWriting = undefined;
  }
  return splice(json, writing);
}

/**
 * For a writer given no stringify of its own (graphql-ws writes each message with its own
 * JSON.stringify): `value` (a result's data: plain objects and arrays) with each RawJson in it
 * replaced by a placeholder string, and the function that puts the texts in place of the
 * placeholders in the message once written. Undefined when `value` holds no RawJson.
 */
export function withRawJsonPlaceholders(value: unknown): { value: unknown; nonce: string; splice: (json: string) => string } | undefined {
  let writing: RawWriting | undefined;
  const replaced = withPlaceholders(value, () => (writing ??= { nonce: randomUUID(), texts: [] }));
  if (!writing) return undefined;
  const done = writing;
  return { value: replaced, nonce: done.nonce, splice: (json) => splice(json, done) };
}

function withPlaceholders(value: unknown, writing: () => RawWriting): unknown {
  if (value instanceof RawJson) return placeholder(writing(), value.text);
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const replaced = withPlaceholders(item, writing);
      if (replaced !== item) (copy ??= [...value])[i] = replaced;
    });
    return copy ?? value;
  }
  // Only a result's own objects, which graphql-js makes without a prototype: a JSON field's
  // value (parsed data, JsonResult) is not walked. (A RawJson missed is parsed when written.)
  if (Object.getPrototypeOf(value) !== null) return value;
  let copy: Record<string, unknown> | undefined;
  for (const [key, item] of Object.entries(value)) {
    const replaced = withPlaceholders(item, writing);
    if (replaced !== item) (copy ??= { ...value })[key] = replaced;
  }
  return copy ?? value;
}

builder.scalarType('JSON', {
  description: 'Any JSON value.',
  serialize: (value) => {
    if (value instanceof RawJson) return value; // written out as its text (see writeRawJson)
    if (!(value instanceof JsonResult)) return value;
    return (value.value as { then?: unknown }).then == null ? value.value : value;
  },
  parseValue: (value) => value,
  parseLiteral: (node, variables) => literalToJson(node, variables),
});

builder.queryType({ description: 'Reads. Every field needs a tenant API key (Authorization: Bearer <key>).' });
builder.mutationType({ description: 'Writes, one field an operation. A rejected call writes nothing.' });
