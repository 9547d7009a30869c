// The event catalog: built-in types and each tenant's own, each with a JSON
// Schema of its `data`. Types never change once created, so compiled
// validators are kept: the built-in types' here, tenants' in the validation
// threads that run them (see validation-pool.ts).
import type { DataSource } from 'typeorm';
import { EventType } from '../entities/event-type.js';
import { ErrorCode, HooklineError, badInput, longerThan, notFound, rejectLongText, rejectUnstorableText, rejectUnstorableJson, toJsonText } from '../errors.js';
import { queryRows, type Sql } from '../db/query.js';
import { withTenant, withTenantCreation, type TenantId } from '../db/tenant-scope.js';
import { createAjv, verdictOf, type ValidateFunction } from './schema-engine.js';
import { CheckPool, sharedCheckPool, type CheckOutcome, type CheckPoolOptions } from './validation-pool.js';

export const EVENT_NAME = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$/;
/** What comes before `.*` in a pattern: one or more words of an event name. */
export const EVENT_PREFIX = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;
export const MAX_EVENT_NAME = 100;

export interface CatalogEntry {
  id: string;
  name: string;
  /** Null for a built-in type. */
  tenantId: string | null;
  schema: object;
  /** Its `updated_at`, as text: a schema changed since (updateEventType) is another version. */
  version: string;
  /** When this process last read it (Date.now()): a tenant's type is read again after TYPE_RECHECK_MS. */
  readAt: number;
  /** A built-in type's validator, run here; a tenant's schema runs in a validation thread. */
  validate?: ValidateFunction;
  /** Why its schema cannot be run (it did not compile), once found. */
  broken?: string;
}

/** Every pattern that selects an event: its name, each `prefix.*` above it, and `*`. */
export function patternsFor(event: string): string[] {
  const parts = event.split('.');
  const patterns = [event];
  for (let i = parts.length - 1; i >= 1; i--) patterns.push(`${parts.slice(0, i).join('.')}.*`);
  patterns.push('*');
  return patterns;
}

export function checkEventName(field: string, name: string): void {
  // The library's JavaScript callers (formatEventPayload) may pass anything.
  if (typeof name !== 'string') throw badInput(field, 'is required: an event name such as invoice.created');
  rejectUnstorableText(field, name);
  rejectLongText(field, name, MAX_EVENT_NAME);
  if (!EVENT_NAME.test(name)) {
    throw badInput(field, `"${name}" is not a dotted event name like invoice.created (lower case, digits, _ and -)`);
  }
}

/**
 * What a subscription's `events` entry, or a filter of subscriptions by event, may be: an event
 * name, a `prefix.*` pattern or `*`. Answers whether it is a name (patterns select events; a name
 * is one). Check it before patternsFor(), whose work grows with the square of the name's length.
 */
export function checkEventPattern(field: string, pattern: string): 'name' | 'pattern' {
  rejectUnstorableText(field, pattern);
  if (pattern === '*') return 'pattern';
  if (pattern.endsWith('.*')) {
    const prefix = pattern.slice(0, -2);
    if (longerThan(prefix, MAX_EVENT_NAME)) throw badInput(field, `a pattern's prefix must be at most ${MAX_EVENT_NAME} characters, as event names are`);
    if (!EVENT_PREFIX.test(prefix)) throw badInput(field, `"${pattern}" is not a valid prefix.* pattern`);
    return 'pattern';
  }
  checkEventName(field, pattern);
  return 'name';
}

/** Keywords whose values are data, not schemas: a `{"uniqueItems": true}` there is a value. */
const DATA_KEYWORDS = new Set(['const', 'default', 'enum', 'examples', 'example']);
/** Keywords whose values map names to schemas: a property named `default` is a schema there. */
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', 'definitions', '$defs', 'dependentSchemas', 'dependencies']);

/**
 * What checking data against a tenant's schema may cost, bounded when the type is created, as
 * the check runs in the process every tenant shares. The schema's size with each `$ref`
 * counted as what it refers to: every part of a schema may apply to every value of the data, so
 * that size bounds the work per value (a `$ref` that leads back to itself does not: with `anyOf`
 * over nested arrays, 190 bytes of data took 16 s; nor does a chain of definitions each using
 * the next twice). An enum's values count a tenth each (each is compared). And its patterns: how
 * many, how long, how many times a part of one repeats.
 */
export const SCHEMA_LIMITS = { bytes: 64 * 1024, nodes: 1_000, patterns: 20, patternLength: 256, repetition: 100, typesPerTenant: 100 } as const;

/** Whether checkSchemaCost() passes the schema. */
function withinSchemaLimits(schema: Record<string, unknown>): boolean {
  try {
    checkSchemaCost(schema);
    return true;
  } catch {
    return false;
  }
}

/**
 * Refuses a schema whose checks could cost more than SCHEMA_LIMITS, naming where. Walked by
 * keyword: the values of `properties`, `$defs`… are schemas whatever their names, those of
 * `enum`, `default`… data.
 */
export function checkSchemaCost(root: Record<string, unknown>): void {
  // Each part's cost counted as often as it is used: a pattern used through 495 $refs runs 495 times.
  const costs = new Map<object, { size: number; patterns: number }>();
  // What RE2 compiles, each pattern once: a Unicode property is a large automaton (20 patterns
  // of \pL{10} took 3.7 s to compile).
  let compiledSize = 0;
  const compiled = (size: number, path: string) => {
    compiledSize += size;
    if (compiledSize > MAX_PATTERN_SIZE * 2) throw badInput('schema', `${path}: the schema's patterns may hold at most ${MAX_PATTERN_SIZE * 2} parts together (see the one pattern's limit)`);
  };
  const visiting = new Set<object>();
  let anchors: Map<string, unknown> | undefined;
  const resolve = (ref: string, path: string): unknown => {
    if (ref === '#' || ref.startsWith('#/')) return resolvePointer(root, ref);
    if (/^#[A-Za-z][\w.-]*$/.test(ref)) {
      // A draft-07 anchor ($id "#name"), where a schema is: one in data (an example) is no
      // schema here, while ajv would find it.
      const target = (anchors ??= anchorsOf(root)).get(ref.slice(1));
      if (target === undefined) throw badInput('schema', `${path}: no schema has the anchor ${ref} (one in data, as an example's, is none)`);
      return target;
    }
    throw badInput('schema', `${path}: only a $ref within the schema (#/... or an anchor #name) is supported, not ${JSON.stringify(ref.slice(0, 100))}`);
  };
  const costOf = (schema: unknown, path: string): { size: number; patterns: number } => {
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return { size: 0, patterns: 0 }; // true, false
    const known = costs.get(schema);
    if (known !== undefined) return known;
    if (visiting.has(schema)) throw badInput('schema', `${path}: a $ref that leads back to where it is (recursion) is not supported`);
    visiting.add(schema);
    const node = schema as Record<string, unknown>;
    checkUniqueItems(node, path);
    checkProtoNames(node, path);
    // Another $id would make its $refs relative to another address than the one checked here.
    if (node !== root && typeof node.$id === 'string' && !node.$id.startsWith('#')) {
      throw badInput('schema', `${path}: $id is supported only at the top of the schema (or as an anchor, "#name")`);
    }
    const cost = { size: 1, patterns: 0 };
    const add = (part: { size: number; patterns: number }) => {
      cost.size += part.size;
      cost.patterns += part.patterns;
    };
    for (const [key, value] of Object.entries(node)) {
      const at = `${path}.${key}`;
      if (DATA_KEYWORDS.has(key)) {
        // Each value of an enum is compared with the data: a scalar cheaply, another deeply.
        if (key === 'enum' && Array.isArray(value)) {
          for (const option of value) cost.size += option !== null && typeof option === 'object' ? 1 + Math.ceil(JSON.stringify(option).length / 10) : 0.5;
        }
        continue;
      }
      if (key === '$ref' && typeof value === 'string') {
        add(costOf(resolve(value, at), value.startsWith('#/') ? `schema${value.slice(1).replaceAll('/', '.')}` : at));
      } else if (key === '$dynamicRef' || key === '$recursiveRef') {
        throw badInput('schema', `${at}: ${key} is not supported`);
      } else if (key === 'pattern') {
        if (typeof value === 'string') {
          cost.patterns++;
          const work = checkPatternCost(value, at);
          compiled(work.size, at);
          checkPatternWork(work, node.maxLength, at);
        }
      } else if (SCHEMA_MAPS.has(key) && value !== null && typeof value === 'object' && !Array.isArray(value)) {
        for (const [name, sub] of Object.entries(value)) {
          if (key === 'patternProperties') {
            cost.patterns++;
            // A property's name has no maxLength of its own here.
            const names = checkPatternCost(name, `${at}.${name}`);
            compiled(names.size, `${at}.${name}`);
            if (!names.bounded && names.tail > FREE_SIZE) {
              throw badInput('schema', `${at}.${name}: a pattern of property names may hold at most ${FREE_SIZE} parts matching more than one character after an unbounded repetition or an unsure start`);
            }
          }
          add(costOf(sub, `${at}.${name}`));
        }
      } else if (Array.isArray(value)) {
        value.forEach((sub, i) => add(costOf(sub, `${at}[${i}]`)));
      } else {
        add(costOf(value, at));
      }
    }
    visiting.delete(schema);
    costs.set(schema, cost);
    if (cost.size > SCHEMA_LIMITS.nodes) {
      throw badInput('schema', `${path}: too large, counting each $ref as what it refers to (at most ${SCHEMA_LIMITS.nodes} parts): checks would take too long`);
    }
    if (cost.patterns > SCHEMA_LIMITS.patterns) {
      throw badInput('schema', `${path}: at most ${SCHEMA_LIMITS.patterns} patterns in a schema, counting each $ref as what it refers to`);
    }
    return cost;
  };
  costOf(root, 'schema');
}

/**
 * A pattern can make RE2's fast matcher give up for a slow one over a long string (250 KB took 4 s
 * against `[ab]*a[ab]{20}c`, and as long spelt out, `[ab]{7}[ab]{7}`): one of more than FREE_SIZE
 * parts (see PatternCost) once its counted repetitions are spelt out needs a `maxLength` beside it, that size times
 * the length at most PATTERN_WORK (a string too long fails maxLength first); unless it is anchored
 * at both ends with nothing unbounded (`^[0-9]{13}$` reads at most 13 characters).
 */
const FREE_SIZE = 10;
const PATTERN_WORK = 100_000;
/** A pattern's size at most, whatever it is (see PatternCost): what RE2 compiles stays small. */
const MAX_PATTERN_SIZE = 1_000;

function checkPatternWork(cost: PatternCost, maxLength: unknown, path: string): void {
  if (cost.bounded || cost.tail <= FREE_SIZE) return;
  if (typeof maxLength === 'number' && maxLength * cost.tail <= PATTERN_WORK) return;
  throw badInput(
    'schema',
    `${path}: a pattern with more than ${FREE_SIZE} parts matching more than one character (${cost.tail}, counted repetitions spelt out) after an unbounded repetition or an unsure start (no bare ^ first) needs a maxLength beside it of at most ${Math.floor(PATTERN_WORK / cost.tail)}`,
  );
}

const SCALAR_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null']);

/**
 * `uniqueItems` compares every pair of items unless `items` says they are all scalars
 * (then ajv hashes them): 36,000 untyped numbers in 256 KiB of data held the process for 3 s,
 * for every tenant. So it needs `items` with a scalar `type`.
 */
function checkUniqueItems(schema: Record<string, unknown>, path: string): void {
  if (schema.uniqueItems !== true) return;
  const items = schema.items as { type?: unknown } | undefined;
  const types = items && typeof items === 'object' && !Array.isArray(items) ? [items.type].flat() : [];
  if (!types.length || !types.every((t) => typeof t === 'string' && SCALAR_TYPES.has(t))) {
    throw badInput(
      'schema',
      `${path}: uniqueItems needs "items" with a scalar "type" (string, number, integer, boolean, null): comparing other items takes time growing with the square of their number`,
    );
  }
}

/** Where a schema names properties: ajv passes over one named "__proto__" there, checking nothing of it. */
const NAMING_MAPS = ['properties', 'dependentSchemas', 'dependentRequired', 'dependencies'];
const NAMING_LISTS = ['required'];

function checkProtoNames(schema: Record<string, unknown>, path: string): void {
  const refuse = (at: string) => {
    throw badInput('schema', `${at}: a property named "__proto__" cannot be checked here (the schema engine passes over it); use patternProperties, e.g. {"^__proto__$": {...}}`);
  };
  for (const key of NAMING_MAPS) {
    const map = schema[key];
    if (map === null || typeof map !== 'object' || Array.isArray(map)) continue;
    if (Object.hasOwn(map, '__proto__')) refuse(`${path}.${key}`);
    for (const [name, names] of Object.entries(map)) if (Array.isArray(names) && names.includes('__proto__')) refuse(`${path}.${key}.${name}`);
  }
  for (const key of NAMING_LISTS) if (Array.isArray(schema[key]) && (schema[key] as unknown[]).includes('__proto__')) refuse(`${path}.${key}`);
}

/**
 * The draft-07 anchors of a schema: `$id: "#name"` (and `$anchor: "name"`) where a schema is,
 * not in data (a `default` holding one is no anchor to ajv); one name twice is refused.
 */
function anchorsOf(root: unknown): Map<string, unknown> {
  const found = new Map<string, unknown>();
  const seen = new Set<object>();
  const name = (anchor: string, node: unknown) => {
    if (found.has(anchor) && found.get(anchor) !== node) throw badInput('schema', `the anchor #${anchor} is defined more than once`);
    found.set(anchor, node);
  };
  const walk = (node: unknown) => {
    if (node === null || typeof node !== 'object' || seen.has(node)) return;
    seen.add(node);
    if (Array.isArray(node)) {
      node.forEach(walk);
      return;
    }
    const { $id, $anchor } = node as { $id?: unknown; $anchor?: unknown };
    if (typeof $id === 'string' && $id.startsWith('#')) name($id.slice(1), node);
    if (typeof $anchor === 'string') name($anchor, node);
    for (const [key, value] of Object.entries(node)) {
      if (DATA_KEYWORDS.has(key)) continue;
      if (SCHEMA_MAPS.has(key) && value !== null && typeof value === 'object' && !Array.isArray(value)) Object.values(value).forEach(walk);
      else walk(value);
    }
  };
  walk(root);
  return found;
}

/** What a JSON pointer `$ref` (`#`, `#/$defs/name`) refers to, or undefined (ajv refuses it). */
function resolvePointer(root: Record<string, unknown>, ref: string): unknown {
  let node: unknown = root;
  for (const part of ref === '#' ? [] : ref.slice(2).split('/')) {
    let key: string;
    try {
      key = decodeURIComponent(part).replaceAll('~1', '/').replaceAll('~0', '~');
    } catch {
      return undefined;
    }
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** What a pattern may cost RE2 (see checkPatternCost). */
interface PatternCost {
  /** The most any part of it repeats, counted repetitions inside others multiplied. */
  repetition: number;
  /**
   * Its parts that match more than one character (classes, `.`, `\d`…; a Unicode property,
   * `\pL`, as 100: RE2 compiles it to a large automaton), counted repetitions spelt out
   * (`[ab]{7}[ab]{7}` is 14). Plain characters do not count.
   */
  size: number;
  /**
   * The part of `size` that can multiply RE2's states over a long string: what follows the first
   * unbounded repetition, or all of it without a sure start (`[ab]*a[ab]{20}c`: 20).
   */
  tail: number;
  /** Anchored at both ends (a bare ^ first, a bare $ last, no (?m)), with nothing unbounded (*, +, {n,}) nor | outside groups. */
  bounded: boolean;
}

/** A Unicode property class's weight in a pattern's size (see PatternCost). */
const UNICODE_CLASS_SIZE = 100;

/**
 * Bounds one pattern's size for RE2: its length, and how many times a part of it repeats, with
 * counted repetitions inside counted repetitions multiplied (`(?:a?){1000}b` over 255 KB of data
 * filled RE2's memory, every tenant's patterns failing after). Answers what it may cost.
 */
function checkPatternCost(text: string, path: string): PatternCost {
  if (text.length > SCHEMA_LIMITS.patternLength) throw badInput('schema', `${path}: a pattern may be at most ${SCHEMA_LIMITS.patternLength} characters`);
  const frames = [{ size: 0, repetition: 1 }]; // each open group: its size, the most repeated inside
  let lastSize = 0; // the part just read: its size and repetition
  let lastRepetition = 1;
  let most = 1;
  let unbounded = false;
  let alternatives = false;
  let multiline = false;
  let tokens = 0; // tokens read, to know the first
  let startAnchored = false;
  let endAnchored = false; // the last token read was a bare $ outside groups
  let beforeLoop: number | undefined; // the size read up to the first unbounded repetition
  const total = () => frames.reduce((sum, frame) => sum + frame.size, 0);
  const atom = (size: number) => {
    lastSize = size;
    lastRepetition = 1;
    frames[frames.length - 1]!.size += size;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    const first = tokens++ === 0;
    let bareEnd = false;
    if (c === '\\' && text[i + 1] === 'Q') {
      const end = text.indexOf('\\E', i + 2); // literal text up to \E
      i = end < 0 ? text.length : end + 1;
      atom(0);
    } else if (c === '\\') {
      const next = text[++i] ?? '';
      // A class escape matches many characters; any other escape (\. \- \$) is one character.
      atom(next === 'p' || next === 'P' ? UNICODE_CLASS_SIZE : /[dDwWsSbB]/.test(next) ? 1 : 0);
      // The property's name: one letter (\pL), or in braces (\p{Greek}).
      if (next === 'p' || next === 'P') i = text[i + 1] === '{' ? Math.max(i + 1, text.indexOf('}', i)) : i + 1;
    } else if (c === '[') {
      // A class: a ] first (after any ^) is a character of it, as are [:alpha:] names.
      const start = i;
      i++;
      if (text[i] === '^') i++;
      if (text[i] === ']') i++;
      for (; i < text.length && text[i] !== ']'; i++) {
        if (text[i] === '\\') i++;
        else if (text[i] === '[' && text[i + 1] === ':') {
          const end = text.indexOf(':]', i + 2);
          if (end >= 0) i = end + 1;
        }
      }
      atom(/\\[pP]/.test(text.slice(start, i)) ? UNICODE_CLASS_SIZE : 1);
    } else if (c === '(') {
      // Inline flags: with m, ^ and $ are the ends of lines, not of the text.
      const flags = /^\(\?([a-zA-Z]*)(?:-[a-zA-Z]*)?[:)]/.exec(text.slice(i));
      if (flags?.[1]?.includes('m')) multiline = true;
      frames.push({ size: 0, repetition: 1 });
      lastSize = 0;
      lastRepetition = 1;
      continue;
    } else if (c === ')') {
      const group = frames.length > 1 ? frames.pop()! : { size: 0, repetition: 1 };
      frames[frames.length - 1]!.size += group.size;
      lastSize = group.size;
      lastRepetition = group.repetition;
    } else if (c === '{' && /^\{(\d+)(,(\d*))?\}/.test(text.slice(i))) {
      const counted = /^\{(\d+)(,(\d*))?\}/.exec(text.slice(i))!;
      const times = Math.max(counted[3] ? Number(counted[3]) : Number(counted[1]) + (counted[2] ? 1 : 0), 1);
      if (tokens === 2) startAnchored = false; // ^{0,1}: the start is no longer sure
      frames[frames.length - 1]!.size += lastSize * (times - 1);
      lastSize *= times;
      lastRepetition *= times;
      if (counted[2] && !counted[3]) {
        unbounded = true;
        beforeLoop ??= total();
      }
      i += counted[0].length - 1;
    } else if (c === '*' || c === '+' || c === '?') {
      if (c !== '?') {
        unbounded = true;
        beforeLoop ??= total();
      }
      if (tokens === 2) startAnchored = false; // ^? or ^*: the start is no longer sure
    } else if (c === '|') {
      if (frames.length === 1) alternatives = true;
    } else if (c === '^') {
      if (first) startAnchored = true;
      atom(0);
    } else if (c === '$') {
      bareEnd = frames.length === 1;
      atom(0);
    } else {
      atom(c === '.' ? 1 : 0);
    }
    endAnchored = bareEnd;
    if (lastRepetition > SCHEMA_LIMITS.repetition) {
      throw badInput(
        'schema',
        `${path}: a pattern may repeat a part at most ${SCHEMA_LIMITS.repetition} times, counted repetitions inside others multiplied (for a length, use minLength and maxLength)`,
      );
    }
    frames[frames.length - 1]!.repetition = Math.max(frames[frames.length - 1]!.repetition, lastRepetition);
    most = Math.max(most, lastRepetition);
  }
  const size = frames[0]!.size;
  if (size > MAX_PATTERN_SIZE) {
    throw badInput('schema', `${path}: a pattern may hold at most ${MAX_PATTERN_SIZE} parts that match more than one character (${size}, counted repetitions spelt out, a Unicode property as ${UNICODE_CLASS_SIZE})`);
  }
  // What follows the first unbounded repetition (or everything, without a sure start: RE2 then
  // tries every position) is what can multiply RE2's states.
  const anchored = startAnchored && !multiline && !alternatives;
  const tail = anchored ? (beforeLoop === undefined ? 0 : size - beforeLoop) : size;
  return { repetition: most, size, tail, bounded: anchored && endAnchored && !unbounded };
}

/**
 * How long a process trusts its copy of a tenant's event type before it reads its version
 * again: a change (updateEventType) is checked against in every process, the library's
 * included, within this long. Built-in types never change while a process runs.
 */
export const TYPE_RECHECK_MS = 5_000;

type TypeRow = { id: string; name: string; tenantId: string | null; schema: object; version: string };

/** The columns of a TypeRow, from event_types. */
const TYPE_ROW = 'id, name, tenant_id as "tenantId", schema, updated_at::text as version';

export class EventCatalog {
  /** Built-in types' schemas only: tenants' run in the validation threads. */
  private readonly ajv = createAjv();
  private readonly checks: CheckPool;
  /** Whether close() ends the pool: not the process's shared one. */
  private readonly ownChecks: boolean;
  private readonly validators = new Map<string, CatalogEntry>();

  /**
   * With `checks`, this catalog's own validation threads (Hookline's processes, from its
   * configuration), which close() ends; without, the process's shared ones (the library's),
   * whose threads end when idle.
   */
  constructor(
    private readonly dataSource: DataSource,
    checks?: CheckPoolOptions,
  ) {
    this.checks = checks ? new CheckPool(checks) : sharedCheckPool();
    this.ownChecks = !!checks;
  }

  /** Ends this catalog's own validation threads. */
  async close(): Promise<void> {
    if (this.ownChecks) await this.checks.close();
  }

  private compile(row: TypeRow): CatalogEntry {
    let entry = this.validators.get(versionKey(row));
    if (!entry) {
      // A type created before these bounds were checked is not run unchecked either.
      try {
        checkSchemaCost(row.schema as Record<string, unknown>);
      } catch (error) {
        throw badInput('event', `the schema of ${row.name} costs too much to check (${(error as Error).message}): createEventType with its name and a schema within the limits replaces it`);
      }
      if (this.validators.size > 10_000) this.validators.clear();
      entry = { ...row, readAt: Date.now(), validate: row.tenantId === null ? this.ajv.compile(row.schema) : undefined };
      this.validators.set(versionKey(row), entry);
    }
    return entry;
  }

  private readonly byName = new Map<string, CatalogEntry>();

  /** The type named `event` for this tenant (own first, then built-in), or a BAD_USER_INPUT. */
  async find(manager: Sql, tenantId: TenantId, event: string, field = 'event'): Promise<CatalogEntry> {
    const key = `${tenantId}:${event}`;
    const cached = this.byName.get(key);
    if (cached && (cached.tenantId === null || Date.now() - cached.readAt < TYPE_RECHECK_MS)) return cached;
    const rows = await queryRows<TypeRow>(
      manager,
      `select ${TYPE_ROW} from event_types
        where name = $1 and (tenant_id = $2 or tenant_id is null)
        order by tenant_id nulls last limit 1`,
      [event, tenantId],
    );
    if (!rows[0]) throw badInput(field, `unknown event "${event}": see eventTypes for the catalog, or createEventType`);
    const entry = this.compile(rows[0]);
    entry.readAt = Date.now(); // read now, whether compiled now or found unchanged
    if (this.byName.size > 10_000) this.byName.clear();
    this.byName.set(key, entry);
    return entry;
  }

  /**
   * Validates data, as its JSON `dataJson` (what is stored and sent), against the type's
   * schema; BAD_USER_INPUT naming the field on mismatch. A tenant's schema runs in a validation
   * thread, in the tenant's turn, within a deadline; a built-in type's here, on `parsed` if
   * given (data known to be that JSON's parse: a request's), or on the JSON parsed afresh (an
   * app's object may hold a Date, which the JSON holds as a string).
   */
  async validateData(tenantId: TenantId, entry: CatalogEntry, dataJson: string, parsed?: unknown, field = 'data'): Promise<void> {
    let verdict: { errors: string } | { async: true } | undefined;
    if (entry.broken) throw badInput('event', entry.broken);
    if (entry.validate) {
      verdict = verdictOf(entry.validate, parsed ?? JSON.parse(dataJson));
    } else {
      const outcome = await this.checks.check(tenantId, { kind: 'data', typeId: versionKey(entry), schema: entry.schema, dataJson });
      if (outcome.kind === 'invalid') {
        // Stored before RE2 checked patterns at creation, say: the same answer every time.
        entry.broken = `the schema of ${entry.name} ${outcome.message}`;
        throw badInput('event', entry.broken);
      }
      verdict = (this.settled(outcome, field, `checked against the schema of ${entry.name}`) as { verdict?: typeof verdict }).verdict;
    }
    if (!verdict) return;
    if ('async' in verdict) throw badInput(field, `cannot be checked: the schema of ${entry.name} is asynchronous ($async)`);
    throw badInput(field, `does not match the schema of ${entry.name}: ${verdict.errors.replaceAll(/(^|; )data/g, `$1${field}`)}`);
  }

  /** The reply of a check that ran, or the error of one that did not. */
  private settled(outcome: CheckOutcome, field: string, what: string): object {
    switch (outcome.kind) {
      case 'done':
        return outcome.reply;
      case 'timeout':
        if (outcome.phase === 'compile') throw badInput(field, `could not be ${what}: the schema took more than ${this.checks.deadline('compile') / 1000} s to compile (fewer or simpler patterns)`);
        throw badInput(field, `could not be ${what} within ${this.checks.deadline('check') / 1000} s: the schema costs too much for this value (fewer or simpler patterns, a maxLength on long strings, fewer alternatives)`);
      case 'invalid':
        throw badInput(field, outcome.message);
      case 'failed':
        throw badInput(field, `could not be ${what}: the check failed (${outcome.message}); the schema costs too much for this value`);
      case 'busy': {
        const why = {
          tenant: "too many of this tenant's events are waiting to be checked against their schemas",
          process: 'too many events are waiting to be checked against their schemas in this process',
          waited: `no validation thread was free for it within ${this.checks.waitMs / 1000} s (costly checks under way)`,
        }[outcome.why];
        throw new HooklineError(ErrorCode.RATE_LIMITED, `${field}: ${why}; try again shortly`);
      }
      case 'unavailable':
        throw new Error(`no validation thread: ${outcome.message}`);
      case 'closed':
        throw new Error('the event catalog is closed');
    }
  }

  list(tenantId: TenantId): Promise<EventType[]> {
    return withTenant(this.dataSource, tenantId, (manager) =>
      manager
        .createQueryBuilder(EventType, 't')
        .where('t.tenant_id is null or t.tenant_id = :tenantId', { tenantId })
        .orderBy('t.tenant_id', 'ASC', 'NULLS FIRST')
        .addOrderBy('t.name', 'ASC')
        .getMany(),
    );
  }

  /** A type's description as stored: trimmed, at most 1,000 characters. */
  private static description(input: string | null | undefined): string {
    rejectUnstorableText('description', input);
    const description = (input ?? '').trim();
    rejectLongText('description', description, 1000);
    return description;
  }

  /** A type's schema, checked as createEventType and updateEventType take it: its JSON text. */
  private async schemaText(tenantId: TenantId, schema: unknown): Promise<string> {
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
      throw badInput('schema', 'must be a JSON Schema object, e.g. {"type": "object", "required": ["id"]}');
    }
    const text = toJsonText('schema', schema);
    rejectUnstorableJson('schema', text);
    if (Buffer.byteLength(text) > SCHEMA_LIMITS.bytes) throw badInput('schema', `may be at most ${SCHEMA_LIMITS.bytes / 1024} KiB as JSON`);
    checkSchemaCost(schema as Record<string, unknown>);
    // Compiled in a validation thread, within its deadline, as its checks will run.
    const { problem } = this.settled(await this.checks.check(tenantId, { kind: 'schema', schema }), 'schema', 'compiled') as { problem?: string };
    if (problem) throw badInput('schema', problem);
    return text;
  }

  async create(tenantId: TenantId, input: { name: string; description?: string | null; schema: unknown }): Promise<EventType> {
    const name = input.name.trim();
    checkEventName('name', name);
    const description = EventCatalog.description(input.description);
    const text = await this.schemaText(tenantId, input.schema);
    return withTenantCreation(this.dataSource, tenantId, 'event types', async (manager) => {
      const [taken] = await queryRows<{ id: string; tenantId: string | null; schema: Record<string, unknown> }>(
        manager,
        'select id, tenant_id as "tenantId", schema from event_types where name = $1 and (tenant_id is null or tenant_id = $2)',
        [name, tenantId],
      );
      if (taken) {
        // The tenant's own type stored before its schema's cost was bounded, beyond the bounds
        // (triggerEvent refuses it): created again, its schema is replaced, so the name is usable.
        if (taken.tenantId === tenantId && !withinSchemaLimits(taken.schema)) {
          await manager.query('update event_types set schema = $2::jsonb, description = $3, updated_at = now() where id = $1', [taken.id, text, description]);
          return (await manager.findOneByOrFail(EventType, { id: taken.id }));
        }
        throw badInput('name', `event type "${name}" already exists`);
      }
      const [{ n }] = await queryRows<{ n: number }>(manager, 'select count(*)::int as n from event_types where tenant_id = $1', [tenantId]);
      if (n >= SCHEMA_LIMITS.typesPerTenant) {
        throw badInput('name', `a tenant may have at most ${SCHEMA_LIMITS.typesPerTenant} event types of its own`);
      }
      try {
        // Written as its JSON text, like events' data: an object copied property by property (as
        // TypeORM's create does) loses a "__proto__" key, which JSON and JSON Schema allow.
        const [created] = await queryRows<EventType>(
          manager,
          `insert into event_types (tenant_id, name, description, schema) values ($1, $2, $3, $4::jsonb)
           returning id, tenant_id as "tenantId", name, description, schema, created_at as "createdAt", updated_at as "updatedAt"`,
          [tenantId, name, description, text],
        );
        return Object.assign(new EventType(), created);
      } catch (error) {
        if ((error as { code?: string }).code === '23505') throw badInput('name', `event type "${name}" already exists`);
        throw error;
      }
    });
  }

  /**
   * Changes a type of the tenant's own: its description, its schema, or both (left out or null:
   * as it is). Events triggered after it commits are checked against the new schema, in every
   * process within TYPE_RECHECK_MS; those recorded before are kept and sent as they are. A
   * built-in type cannot be changed; a name the tenant has no type of is NOT_FOUND.
   */
  async update(tenantId: TenantId, name: string, input: { description?: string | null; schema?: unknown }): Promise<EventType> {
    checkEventName('name', name);
    const description = input.description === undefined || input.description === null ? undefined : EventCatalog.description(input.description);
    const text = input.schema === undefined || input.schema === null ? undefined : await this.schemaText(tenantId, input.schema);
    return withTenant(this.dataSource, tenantId, async (manager) => {
      const [type] = await queryRows<{ id: string; tenantId: string | null }>(
        manager,
        'select id, tenant_id as "tenantId" from event_types where name = $1 and (tenant_id is null or tenant_id = $2)',
        [name, tenantId],
      );
      if (!type) throw notFound('event type', name);
      if (type.tenantId === null) throw badInput('name', `"${name}" is a built-in event type, which cannot be changed: create a type of your own under another name`);
      // A change of what differs only: one changing nothing writes nothing (its version, and every
      // process's copy of it, stay).
      await manager.query(
        `update event_types set description = coalesce($2, description), schema = coalesce($3::jsonb, schema), updated_at = now()
          where id = $1 and (description is distinct from coalesce($2, description) or schema is distinct from coalesce($3::jsonb, schema))`,
        [type.id, description ?? null, text ?? null],
      );
      return manager.findOneByOrFail(EventType, { id: type.id });
    }).then((updated) => {
      // This process checks against it at once; the others within TYPE_RECHECK_MS.
      this.byName.delete(`${tenantId}:${name}`);
      return updated;
    });
  }
}

/** A type's version as the validators (here and in the threads) know it. */
function versionKey(type: { id: string; version: string }): string {
  return `${type.id}@${type.version}`;
}
