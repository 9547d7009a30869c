// The one SchemaBuilder of Hookline: its plugins, scalars and Context type.
// Each domain file adds its own query, mutation and subscription fields.
import SchemaBuilder from '@pothos/core';
import ComplexityPlugin from '@pothos/plugin-complexity';
import RelayPlugin from '@pothos/plugin-relay';
import { GraphQLError, Kind, type ValueNode } from 'graphql';
import type { Viewer } from '../auth/viewer.js';
import type { Services } from '../services.js';
import type { Logger } from '../logger.js';
import type { Loaders } from './loaders.js';

export interface Context {
  viewer: Viewer;
  services: Services;
  log: Logger;
  loaders: Loaders;
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
  },
});

/** RFC 3339's date-time (ISO-8601's profile for the internet): a date, a time, and its offset from UTC. */
const RFC3339_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;
const DATE_TIME_EXPECTED = 'DateTime must be an RFC 3339 (ISO-8601) date-time with its offset, in the years 0001 to 9999, like 2024-02-14T10:30:00.000Z';

/**
 * The point in time an input DateTime names. Only what the description promises: `new Date()`
 * also took years PostgreSQL cannot store (-010000-01-01T00:00:00Z failed the statement, an
 * INTERNAL_SERVER_ERROR), dates without an offset (read in the server's time zone) and days that
 * are not there (February 30th, moved into March).
 */
function parseDateTime(value: unknown): Date {
  const match = typeof value === 'string' ? RFC3339_DATE_TIME.exec(value) : null;
  if (!match) throw new GraphQLError(`${DATE_TIME_EXPECTED}; got ${JSON.stringify(value)?.slice(0, 100)}`);
  const [year, month, day, hour, minute, second, , , offsetHours, offsetMinutes] = match.slice(1).map(Number) as number[];
  const daysInMonth = new Date(Date.UTC(2000, month!, 0)).getUTCDate() - (month === 2 && !isLeapYear(year!) ? 1 : 0);
  if (year! < 1 || month! < 1 || month! > 12 || day! < 1 || day! > daysInMonth || hour! > 23 || minute! > 59 || second! > 59) {
    throw new GraphQLError(`${DATE_TIME_EXPECTED}; ${value as string} is no such moment`);
  }
  if (match[8] && (offsetHours! > 23 || offsetMinutes! > 59)) throw new GraphQLError(`${DATE_TIME_EXPECTED}; ${value as string} has no such offset`);
  const date = new Date(0);
  // setUTCFullYear, not Date.UTC: that one takes the years 0-99 as 1900-1999.
  date.setUTCFullYear(year!, month! - 1, day!);
  date.setUTCHours(hour!, minute!, second!, Number((match[7] ?? '0').slice(0, 3).padEnd(3, '0')));
  const offset = match[8] ? (match[8] === '-' ? -1 : 1) * (offsetHours! * 60 + offsetMinutes!) : 0;
  return new Date(date.getTime() - offset * 60_000);
}

function isLeapYear(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

builder.scalarType('DateTime', {
  description:
    'A point in time. Output: an ISO-8601 string in UTC (e.g. 2024-02-14T10:30:00.000Z). Input: an RFC 3339 (ISO-8601) date-time with its offset (Z or +01:00), in the years 0001 to 9999.',
  serialize: (value) => (value instanceof Date ? value.toISOString() : new Date(value).toISOString()),
  parseValue: parseDateTime,
  parseLiteral: (node) => {
    if (node.kind !== Kind.STRING) throw new GraphQLError(`${DATE_TIME_EXPECTED}, written as a string`);
    return parseDateTime(node.value);
  },
});

function literalToJson(node: ValueNode, variables?: Record<string, unknown> | null): JsonValue {
  switch (node.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return node.value;
    case Kind.INT:
    case Kind.FLOAT:
      return Number(node.value);
    case Kind.NULL:
      return null;
    case Kind.LIST:
      return node.values.map((v) => literalToJson(v, variables));
    case Kind.OBJECT:
      return Object.fromEntries(node.fields.map((f) => [f.name.value, literalToJson(f.value, variables)]));
    case Kind.VARIABLE:
      return variables?.[node.name.value];
    case Kind.ENUM:
      throw new GraphQLError(`JSON has no enum values: write ${node.value} as a string, "${node.value}"`);
    default:
      throw new GraphQLError(`unsupported JSON literal ${(node as ValueNode).kind}`);
  }
}

builder.scalarType('JSON', {
  description: 'Any JSON value.',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: (node, variables) => literalToJson(node, variables),
});

builder.queryType({ description: 'Reads. Every field needs a tenant API key (Authorization: Bearer <key>).' });
builder.mutationType({ description: 'Writes. A rejected call writes nothing.' });
