// Tenants' schemas are checked in threads of their own, within a deadline, one check of a
// tenant at a time: a tenant whose schema costs a lot over its events holds neither the
// process every tenant's requests run on, nor the other tenants' checks.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CheckPool, type CheckOutcome } from '../../src/webhooks/validation-pool.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { TRIGGER_EVENT as TRIGGER } from '../helpers/operations.js';

/**
 * A schema beyond the bounds createEventType sets (a recursive `$ref` with `anyOf`), which
 * takes 2^depth steps over nested arrays ending in a value no branch takes: the pool itself
 * does not judge schemas, so it stands for any check that runs too long.
 */
const RECURSIVE = {
  $defs: { n: { anyOf: [{ type: 'array', items: { $ref: '#/$defs/n' }, maxItems: 5 }, { type: 'array', items: { $ref: '#/$defs/n' } }, { const: 'y' }] } },
  type: 'object',
  properties: { a: { $ref: '#/$defs/n' } },
};
function nested(depth: number): string {
  let value: unknown = 'x';
  for (let i = 0; i < depth; i++) value = [value];
  return JSON.stringify({ a: value });
}
/** Seconds, more than any deadline here. */
const ENDLESS = { kind: 'data' as const, typeId: 'recursive', schema: RECURSIVE, dataJson: nested(40) };
const OBJECT = { kind: 'data' as const, typeId: 'object', schema: { type: 'object', required: ['id'] }, dataJson: '{"id":1}' };

describe('the validation threads', () => {
  let pool: CheckPool | undefined;
  afterEach(() => pool?.close());

  it('refuse a check past its deadline, end its thread, and run the next check on a fresh one', async () => {
    pool = new CheckPool({ threads: 1, deadlineMs: 200 });
    expect(await pool.check('a', ENDLESS)).toEqual({ kind: 'timeout', phase: 'check' });
    // The thread was busy for good: only a fresh one can answer this.
    expect(await pool.check('a', OBJECT)).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: undefined }) });
    expect(await pool.check('a', { ...OBJECT, dataJson: '{}' })).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: { errors: 'data.id is required' } }) });
  });

  it("give a schema's compile an allowance of its own, apart from its check's", async () => {
    // Twenty Unicode properties repeated: a large automaton for RE2 (seconds), beyond createEventType's bounds.
    const huge = { type: 'object', properties: { s: { type: 'string', allOf: Array.from({ length: 20 }, (_, i) => ({ pattern: `^\\pL{${10 + i}}$` })) } } };
    pool = new CheckPool({ threads: 1, deadlineMs: 5_000, compileDeadlineMs: 100 });
    expect(await pool.check('a', { kind: 'schema', schema: huge })).toEqual({ kind: 'timeout', phase: 'compile' });
    expect(await pool.check('a', { kind: 'data', typeId: 'huge', schema: huge, dataJson: '{}' })).toEqual({ kind: 'timeout', phase: 'compile' });
    // A compile within its allowance, then a check within the check's.
    await pool.close();
    pool = new CheckPool({ threads: 1, deadlineMs: 100, compileDeadlineMs: 5_000 });
    expect(await pool.check('a', OBJECT)).toMatchObject({ kind: 'done' });
  });

  it("leave the other thread to other tenants while one tenant's check runs", async () => {
    pool = new CheckPool({ threads: 2, deadlineMs: 600 });
    const order: string[] = [];
    const slow = pool.check('a', ENDLESS).then((o) => order.push(`a:${o.kind}`));
    // A's second check waits for A's first, even with a thread free.
    const slowAgain = pool.check('a', ENDLESS).then((o) => order.push(`a:${o.kind}`));
    const other = pool.check('b', OBJECT).then((o) => order.push(`b:${o.kind}`));
    await Promise.all([slow, slowAgain, other]);
    expect(order).toEqual(['b:done', 'a:timeout', 'a:timeout']);
  });

  it("let tenants take turns: one tenant's waiting checks do not go before another's", async () => {
    pool = new CheckPool({ threads: 1, deadlineMs: 150 });
    const order: string[] = [];
    const checks: Array<Promise<unknown>> = [];
    for (let i = 1; i <= 4; i++) checks.push(pool.check('a', ENDLESS).then(() => order.push(`a${i}`)));
    checks.push(pool.check('b', OBJECT).then(() => order.push('b')));
    await Promise.all(checks);
    // In arrival order B would have waited for all four of A's.
    expect(order).toEqual(['a1', 'b', 'a2', 'a3', 'a4']);
  });

  it("refuse a tenant's check when that tenant already has as many waiting as it may", async () => {
    pool = new CheckPool({ threads: 1, deadlineMs: 150, waitingPerTenant: 2 });
    const outcomes: Array<Promise<CheckOutcome>> = [];
    // The first runs; two wait; the fourth is one too many. Another tenant still gets in.
    for (let i = 0; i < 4; i++) outcomes.push(pool.check('a', ENDLESS));
    const other = pool.check('b', OBJECT);
    expect((await Promise.all(outcomes)).map((o) => o.kind)).toEqual(['timeout', 'timeout', 'timeout', 'busy']);
    expect((await other).kind).toBe('done');
  });

  it('try a check that makes its thread fail once more on a fresh thread, then report the failure', async () => {
    pool = new CheckPool({ threads: 1 });
    // A pattern RE2 cannot compile: the check throws in the thread (as a full RE2 memory would).
    const broken = { kind: 'data' as const, typeId: 'broken', schema: { type: 'object', properties: { s: { type: 'string', pattern: '(' } } }, dataJson: '{"s":"x"}' };
    expect(await pool.check('a', broken)).toEqual({ kind: 'failed', message: expect.stringContaining('missing )') });
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
  });

  it('replace a thread that runs out of its memory, try once more, then report the failure', async () => {
    pool = new CheckPool({ threads: 1, memoryMb: 48 });
    const properties: Record<string, unknown> = {};
    for (let i = 0; i < 20_000; i++) properties[`p${i}`] = { type: 'object', properties: { a: { type: 'string', minLength: i }, b: { enum: [i, `x${i}`] } } };
    const outcome = await pool.check('a', { kind: 'data', typeId: 'vast', schema: { type: 'object', properties }, dataJson: '{}' });
    expect(outcome).toEqual({ kind: 'failed', message: expect.stringContaining('memory limit') });
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
  });

  it('say a thread that cannot start is unavailable, not that the schema failed', async () => {
    // Too little memory to load at all.
    pool = new CheckPool({ threads: 1, memoryMb: 4 });
    expect(await pool.check('a', OBJECT)).toEqual({ kind: 'unavailable', message: expect.stringContaining('memory limit') });
  });

  it("give a fresh thread a type's schema again once the thread that compiled it was replaced", async () => {
    // One type per thread: each other type replaces the thread.
    pool = new CheckPool({ threads: 1, typesPerThread: 1 });
    const email = { kind: 'data' as const, typeId: 'email', schema: { type: 'object', properties: { to: { type: 'string', format: 'email' } } }, dataJson: '{"to":"nobody"}' };
    for (let round = 0; round < 2; round++) {
      expect(await pool.check('a', email)).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: { errors: 'data.to must match format "email"' } }) });
      expect(await pool.check('a', OBJECT)).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: undefined }) });
    }
  });

  it('end checks waiting or running as closed when the pool closes', async () => {
    const closing = new CheckPool({ threads: 1, deadlineMs: 10_000 });
    const running = closing.check('a', ENDLESS);
    const waiting = closing.check('b', OBJECT);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await closing.close();
    expect(await running).toEqual({ kind: 'closed' });
    expect(await waiting).toEqual({ kind: 'closed' });
    expect(await closing.check('a', OBJECT)).toEqual({ kind: 'closed' });
  });
});

describe("a tenant's costly schema, through the API", () => {
  const CREATE_EVENT_TYPE = 'mutation($input: CreateEventTypeInput!) { createEventType(input: $input) { name } }';
  /**
   * Within createEventType's bounds (twenty patterns of ten parts after their `*`), and about
   * a tenth of a second over a string of 250,000 characters on the machine this was written on.
   */
  const COSTLY_SCHEMA = {
    type: 'object',
    properties: { text: { type: 'string', allOf: Array.from({ length: 20 }, (_, i) => ({ pattern: `^[a-z]*[${String.fromCharCode(97 + i)}z][a-z]{9}$` })) } },
  };
  const LONG_TEXT = Array.from({ length: 250_000 }, (_, i) => 'abcdefghij'[(i * 7 + (i >> 3)) % 10]).join('') + 'zabcdefghi';
  let hl: TestHookline;
  let quick: TestHookline;
  let costly: string;
  let other: string;

  beforeAll(async () => {
    [hl, quick] = await Promise.all([startTestHookline(), startTestHookline({ HOOKLINE_VALIDATION_TIMEOUT: '20ms' })]);
    for (const server of [hl, quick]) {
      const a = (await server.createTenant('Costly')).apiKey;
      const b = (await server.createTenant('Other')).apiKey;
      expect((await server.gql(CREATE_EVENT_TYPE, { input: { name: 'report.made', schema: COSTLY_SCHEMA } }, a)).errors).toBeUndefined();
      expect((await server.gql(CREATE_EVENT_TYPE, { input: { name: 'order.placed', schema: { type: 'object', required: ['id'] } } }, b)).errors).toBeUndefined();
      if (server === hl) [costly, other] = [a, b];
      else {
        // Refused past the deadline, with the code of bad input, writing nothing.
        const before = await server.dataSource.query('select (select count(*) from webhook_events)::int as events');
        const res = await server.gql(TRIGGER, { input: { event: 'report.made', data: { text: LONG_TEXT } } }, a);
        expect(res.errors?.[0]).toMatchObject({
          extensions: { code: 'BAD_USER_INPUT', field: 'data' },
          message: expect.stringContaining('data: could not be checked against the schema of report.made within 0.02 s'),
        });
        expect(await server.dataSource.query('select (select count(*) from webhook_events)::int as events')).toEqual(before);
        // The tenant's next event, quick to check, is accepted.
        const next = await server.gql(TRIGGER, { input: { event: 'report.made', data: { text: 'abcz123456789' } } }, a);
        expect(next.errors?.[0]?.message).toContain('does not match the schema of report.made: data.text must match pattern');
      }
    }
  });
  afterAll(() => Promise.all([hl?.stop(), quick?.stop()]));

  it('is refused past the deadline with BAD_USER_INPUT, and the tenant goes on (see beforeAll)', () => {
    expect(quick).toBeDefined();
  });

  it("holds neither the process nor the other tenants' events while its checks run", async () => {
    // Both threads started, as they are after the first events of a busy process.
    await Promise.all([
      hl.gql(TRIGGER, { input: { event: 'report.made', data: { text: 'x' } } }, costly),
      hl.gql(TRIGGER, { input: { event: 'order.placed', data: { id: 0 } } }, other),
    ]);
    const order: string[] = [];
    const costlyEvents = [1, 2, 3].map((i) =>
      hl.gql(TRIGGER, { input: { event: 'report.made', data: { text: LONG_TEXT } } }, costly).then((res) => {
        expect(res.errors).toBeUndefined();
        order.push(`costly ${i}`);
      }),
    );
    // Sent once the costly ones are in: their checks have started.
    await new Promise((resolve) => setTimeout(resolve, 30));
    const otherEvent = hl.gql(TRIGGER, { input: { event: 'order.placed', data: { id: 1 } } }, other).then((res) => {
      expect(res.errors).toBeUndefined();
      order.push('other tenant');
    });
    const typename = hl.gql('{ __typename }').then(() => order.push('__typename'));
    await Promise.all([...costlyEvents, otherEvent, typename]);
    expect(order.indexOf('other tenant')).toBeLessThan(order.indexOf('costly 1'));
    expect(order.indexOf('__typename')).toBeLessThan(order.indexOf('costly 1'));
  });
});
