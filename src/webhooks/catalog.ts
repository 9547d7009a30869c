// The event catalog: built-in types and each tenant's own, each with a JSON
// Schema of its `data`. Types never change once created, so compiled
// validators are cached for the life of the process.
import { Ajv, type Options, type ValidateFunction } from 'ajv';
import type { RegExpEngine } from 'ajv/dist/types/index.js';
import formats from 'ajv-formats';
import { RE2 } from 're2-wasm';
import type { DataSource } from 'typeorm';
import { EventType } from '../entities/event-type.js';
import { HooklineError, badInput, longerThan, rejectLongText, rejectUnstorableText, rejectUnstorableJson, toJsonText } from '../errors.js';
import { queryRows, type Sql } from '../db/query.js';
import { withTenant, type TenantId } from '../db/tenant-scope.js';

// ajv-formats is CommonJS: as imported here, its function is the module's `default`.
const addFormats = formats.default;

export const EVENT_NAME = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$/;
/** What comes before `.*` in a pattern: one or more words of an event name. */
export const EVENT_PREFIX = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;
export const MAX_EVENT_NAME = 100;

export interface CatalogEntry {
  id: string;
  name: string;
  validate: ValidateFunction;
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

/** Formats ajv's first errors as `data.amount: must be string,number`. */
function describeErrors(validate: ValidateFunction): string {
  return (validate.errors ?? [])
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
const re2: RegExpEngine = Object.assign((pattern: string, flags: string) => new RE2(pattern, flags.includes('u') ? flags : `${flags}u`), {
  code: 'new (require("re2-wasm").RE2)',
});

// addUsedSchema: false, so two tenants' schemas with the same $id never collide.
const AJV_OPTIONS: Options = { allErrors: false, strict: false, addUsedSchema: false, code: { regExp: re2 } };

/** An ajv for tenants' schemas: RE2 patterns, and the standard formats (email, date-time, uri…) enforced, not ignored. */
function createAjv(): Ajv {
  const ajv = new Ajv(AJV_OPTIONS);
  addFormats(ajv);
  return ajv;
}

const SCALAR_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null']);

/**
 * `uniqueItems` compares every pair of items unless `items` says they are all scalars
 * (then ajv hashes them): 36,000 untyped numbers in 256 KiB of data held the process for 3 s,
 * for every tenant. So it needs `items` with a scalar `type`.
 */
function checkUniqueItems(node: unknown, path = 'schema'): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    node.forEach((item, i) => checkUniqueItems(item, `${path}[${i}]`));
    return;
  }
  const schema = node as Record<string, unknown>;
  if (schema.uniqueItems === true) {
    const items = schema.items as { type?: unknown } | undefined;
    const types = items && typeof items === 'object' && !Array.isArray(items) ? [items.type].flat() : [];
    if (!types.length || !types.every((t) => typeof t === 'string' && SCALAR_TYPES.has(t))) {
      throw badInput(
        'schema',
        `${path}: uniqueItems needs "items" with a scalar "type" (string, number, integer, boolean, null): comparing other items takes time growing with the square of their number`,
      );
    }
  }
  for (const [key, value] of Object.entries(schema)) {
    if (!DATA_KEYWORDS.has(key)) checkUniqueItems(value, `${path}.${key}`);
  }
}

/** Keywords whose values are data, not schemas: a `{"uniqueItems": true}` there is a value. */
const DATA_KEYWORDS = new Set(['const', 'default', 'enum', 'examples', 'example']);

export class EventCatalog {
  private readonly ajv = createAjv();
  private readonly validators = new Map<string, CatalogEntry>();

  constructor(private readonly dataSource: DataSource) {}

  private compile(row: { id: string; name: string; schema: object }): CatalogEntry {
    let entry = this.validators.get(row.id);
    if (!entry) {
      if (this.validators.size > 10_000) this.validators.clear();
      entry = { id: row.id, name: row.name, validate: this.ajv.compile(row.schema) };
      this.validators.set(row.id, entry);
    }
    return entry;
  }

  private readonly byName = new Map<string, CatalogEntry>();

  /** The type named `event` for this tenant (own first, then built-in), or a BAD_USER_INPUT. */
  async find(manager: Sql, tenantId: TenantId, event: string, field = 'event'): Promise<CatalogEntry> {
    const key = `${tenantId}:${event}`;
    const cached = this.byName.get(key);
    if (cached) return cached;
    const rows = await queryRows<{ id: string; name: string; schema: object }>(
      manager,
      `select id, name, schema from event_types
        where name = $1 and (tenant_id = $2 or tenant_id is null)
        order by tenant_id nulls last limit 1`,
      [event, tenantId],
    );
    if (!rows[0]) throw badInput(field, `unknown event "${event}": see eventTypes for the catalog, or createEventType`);
    const entry = this.compile(rows[0]);
    if (this.byName.size > 10_000) this.byName.clear();
    this.byName.set(key, entry);
    return entry;
  }

  /** Validates `data` against the type's schema; BAD_USER_INPUT naming the field on mismatch. */
  validateData(entry: CatalogEntry, data: unknown, field = 'data'): void {
    if (data === null || typeof data !== 'object' || Array.isArray(data)) throw badInput(field, 'must be a JSON object');
    const valid: unknown = entry.validate(data);
    if (valid === true) return;
    if (valid instanceof Promise) {
      // A schema stored before createEventType refused asynchronous ones: never taken as valid.
      valid.catch(() => {});
      throw badInput(field, `cannot be checked: the schema of ${entry.name} is asynchronous ($async)`);
    }
    throw badInput(field, `does not match the schema of ${entry.name}: ${describeErrors(entry.validate).replaceAll(/^data/g, field)}`);
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

  async create(tenantId: TenantId, input: { name: string; description?: string | null; schema: unknown }): Promise<EventType> {
    const name = input.name.trim();
    checkEventName('name', name);
    rejectUnstorableText('description', input.description);
    const description = (input.description ?? '').trim();
    rejectLongText('description', description, 1000);
    const schema = input.schema;
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
      throw badInput('schema', 'must be a JSON Schema object, e.g. {"type": "object", "required": ["id"]}');
    }
    rejectUnstorableJson('schema', toJsonText('schema', schema));
    checkUniqueItems(schema);
    let valid: boolean;
    try {
      valid = this.ajv.validateSchema(schema) as boolean;
      // An asynchronous schema's validator answers with a promise, which is no verdict here.
      if (valid && (createAjv().compile(schema) as { $async?: boolean }).$async) throw badInput('schema', 'must not be asynchronous ($async): Hookline validates events as they come');
    } catch (error) {
      if (error instanceof HooklineError) throw error;
      throw badInput('schema', `cannot be compiled: ${(error as Error).message}`);
    }
    if (!valid) {
      throw badInput('schema', `is not a valid JSON Schema: ${this.ajv.errorsText(this.ajv.errors, { dataVar: 'schema' })}`);
    }
    return withTenant(this.dataSource, tenantId, async (manager) => {
      const taken = await queryRows(
        manager,
        'select 1 from event_types where name = $1 and (tenant_id is null or tenant_id = $2)',
        [name, tenantId],
      );
      if (taken.length) throw badInput('name', `event type "${name}" already exists`);
      try {
        return await manager.save(manager.create(EventType, { tenantId, name, description, schema: schema as Record<string, unknown> }));
      } catch (error) {
        if ((error as { code?: string }).code === '23505') throw badInput('name', `event type "${name}" already exists`);
        throw error;
      }
    });
  }
}
