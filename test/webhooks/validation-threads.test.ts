// Tenants' schemas are checked in threads of their own, within a deadline, one check of a
// tenant at a time: a tenant whose schema costs a lot over its events holds neither the
// process every tenant's requests run on, nor the other tenants' checks.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebhookService } from '../../src/webhooks/service.js';
import { CheckPool, sharedCheckPool, type CheckOutcome } from '../../src/webhooks/validation-pool.js';
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
const ROOT = resolve(import.meta.dirname, '../..');
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
    expect(pool.threadsStarted).toBe(2);
  });

  it("give a schema's compile an allowance of its own, apart from its check's", async () => {
    // Twenty Unicode properties repeated: a large automaton for RE2 (seconds), beyond createEventType's bounds.
    const huge = { type: 'object', properties: { s: { type: 'string', allOf: Array.from({ length: 20 }, (_, i) => ({ pattern: `^\\pL{${10 + i}}$` })) } } };
    pool = new CheckPool({ threads: 1, deadlineMs: 5_000, compileDeadlineMs: 100 });
    expect(await pool.check('a', { kind: 'schema', schema: huge })).toEqual({ kind: 'timeout', phase: 'compile' });
    expect(await pool.check('a', { kind: 'data', typeId: 'huge', schema: huge, dataJson: '{}' })).toEqual({ kind: 'timeout', phase: 'compile' });
    await pool.close();
    // One such pattern compiles in a few tenths of a second, past a check's 50 ms: the compile
    // is not counted in the check's time.
    const one = { type: 'object', properties: { s: { type: 'string', pattern: '^\\pL{10}$' } } };
    pool = new CheckPool({ threads: 1, deadlineMs: 50, compileDeadlineMs: 60_000 });
    expect(await pool.check('a', { kind: 'data', typeId: 'one', schema: one, dataJson: '{"s":"abcdefghij"}' })).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: undefined }) });
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
    pool = new CheckPool({ threads: 1, deadlineMs: 150, waitMs: 60_000 });
    const order: string[] = [];
    const checks: Array<Promise<unknown>> = [];
    for (let i = 1; i <= 4; i++) checks.push(pool.check('a', ENDLESS).then(() => order.push(`a${i}`)));
    checks.push(pool.check('b', OBJECT).then(() => order.push('b')));
    await Promise.all(checks);
    // In arrival order B would have waited for all four of A's.
    expect(order).toEqual(['a1', 'b', 'a2', 'a3', 'a4']);
  });

  it('let a tenant with checks waiting go before tenants that come back one check at a time', async () => {
    pool = new CheckPool({ threads: 1, deadlineMs: 150, waitMs: 60_000 });
    const order: string[] = [];
    const backlog = [1, 2].map((i) => pool!.check('y', ENDLESS).then(() => order.push(`y${i}`)));
    // Three tenants each sending their next check as soon as the last is answered.
    const oneAtATime = ['x1', 'x2', 'x3'].map(async (tenant) => {
      for (let i = 0; i < 3; i++) {
        await pool!.check(tenant, OBJECT);
        order.push(tenant);
      }
    });
    await Promise.all([...backlog, ...oneAtATime]);
    // Y's second check comes after each of them has had one turn, not after all of theirs.
    expect(order.slice(0, 5)).toEqual(['y1', 'x1', 'x2', 'x3', 'y2']);
  });

  it("refuse a tenant's check when that tenant has as many waiting as it may, in number or in bytes", async () => {
    pool = new CheckPool({ threads: 1, deadlineMs: 150, waitingPerTenant: 2, waitMs: 60_000 });
    const outcomes: Array<Promise<CheckOutcome>> = [];
    // The first runs; two wait; the fourth is one too many. Another tenant still gets in.
    for (let i = 0; i < 4; i++) outcomes.push(pool.check('a', ENDLESS));
    const other = pool.check('b', OBJECT);
    expect((await Promise.all(outcomes)).map((o) => o.kind)).toEqual(['timeout', 'timeout', 'timeout', 'busy']);
    expect(await outcomes[3]).toEqual({ kind: 'busy', why: 'tenant' });
    expect((await other).kind).toBe('done');
    await pool.close();

    // Bytes: the data of the checks waiting, per tenant and for the whole process.
    const big = { ...OBJECT, dataJson: JSON.stringify({ id: 1, pad: 'x'.repeat(1_000) }) };
    pool = new CheckPool({ threads: 1, deadlineMs: 150, waitingBytesPerTenant: 2_500, waitingBytes: 3_500, waitMs: 60_000 });
    const running = pool.check('a', ENDLESS);
    const waiting = [pool.check('a', big), pool.check('a', big)];
    expect(await pool.check('a', big)).toEqual({ kind: 'busy', why: 'tenant' });
    const b = pool.check('b', big);
    expect(await pool.check('c', big)).toEqual({ kind: 'busy', why: 'process' });
    expect((await Promise.all([running, ...waiting, b])).map((o) => o.kind)).toEqual(['timeout', 'done', 'done', 'done']);
  });

  it('refuse a check that waited its whole wait without starting, and never run it', async () => {
    pool = new CheckPool({ threads: 1, deadlineMs: 1_000, waitMs: 200 });
    const running = pool.check('a', ENDLESS);
    expect(await pool.check('b', OBJECT)).toEqual({ kind: 'busy', why: 'waited' });
    expect(await running).toEqual({ kind: 'timeout', phase: 'check' });
    // The thread that ran A's check was replaced once; B's check was run by none.
    expect(await pool.check('b', OBJECT)).toMatchObject({ kind: 'done' });
    expect(pool.threadsStarted).toBe(2);
  });

  it('say a schema that does not compile is invalid, without trying again or replacing the thread', async () => {
    pool = new CheckPool({ threads: 1 });
    // A pattern RE2 cannot compile (stored before patterns were checked at creation, say).
    const broken = { kind: 'data' as const, typeId: 'broken', schema: { type: 'object', properties: { s: { type: 'string', pattern: '(' } } }, dataJson: '{"s":"x"}' };
    expect(await pool.check('a', broken)).toEqual({ kind: 'invalid', message: expect.stringMatching(/^cannot be compiled: .*missing \)/) });
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
    expect(pool.threadsStarted).toBe(1);
    // On a thread that compiled before too; and words in the pattern are not taken for the
    // engine's own failure (which would be tried again on a fresh thread).
    expect(await pool.check('a', { kind: 'schema', schema: broken.schema })).toEqual({ kind: 'invalid', message: expect.stringContaining('cannot be compiled') });
    const quoting = { type: 'object', properties: { s: { type: 'string', pattern: '[abort(]x(?=y)' } } };
    expect(await pool.check('a', { kind: 'schema', schema: quoting })).toEqual({ kind: 'invalid', message: expect.stringContaining('invalid perl operator') });
    expect(pool.threadsStarted).toBe(1);
  });

  it('try a check that makes its thread fail once more on a fresh thread, then report the failure', async () => {
    pool = new CheckPool({ threads: 1 });
    // Arrays nested 100,000 deep: the validator's recursion overflows the thread's stack.
    const schema = { $defs: { n: { type: 'array', items: { $ref: '#/$defs/n' } } }, type: 'object', properties: { a: { $ref: '#/$defs/n' } } };
    const deep = { kind: 'data' as const, typeId: 'deep', schema, dataJson: `{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}` };
    expect(await pool.check('a', deep)).toEqual({ kind: 'failed', message: expect.stringContaining('call stack') });
    expect(pool.threadsStarted).toBe(2);
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
    expect(pool.threadsStarted).toBe(3);
  });

  it('try again on a thread started for it, not on one that has done other work', async () => {
    pool = new CheckPool({ threads: 2 });
    // B's check compiles for a few tenths of a second (a Unicode property), then overflows the stack.
    const schema = { $defs: { n: { type: 'array', items: { $ref: '#/$defs/n' } } }, type: 'object', properties: { a: { $ref: '#/$defs/n' }, s: { type: 'string', pattern: '^\\pL{10}$' } } };
    const deep = { kind: 'data' as const, typeId: 'deep-slow', schema, dataJson: `{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}` };
    const [a, b] = await Promise.all([pool.check('a', OBJECT), pool.check('b', deep)]);
    expect(a.kind).toBe('done');
    expect(b).toMatchObject({ kind: 'failed' });
    // A's thread, B's, and the one started for B's second try (A's, idle then, was not it).
    expect(pool.threadsStarted).toBe(3);
  });

  it('replace a thread that runs out of its memory, try once more, then report the failure', async () => {
    pool = new CheckPool({ threads: 1, memoryMb: 48, compileDeadlineMs: 60_000 });
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

  it("replace a thread that compiled its share of types, and give the fresh one a type's schema again", async () => {
    // One type per thread: each other type replaces the thread.
    pool = new CheckPool({ threads: 1, typesPerThread: 1 });
    const email = { kind: 'data' as const, typeId: 'email', schema: { type: 'object', properties: { to: { type: 'string', format: 'email' } } }, dataJson: '{"to":"nobody"}' };
    for (let round = 0; round < 2; round++) {
      expect(await pool.check('a', email)).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: { errors: 'data.to must match format "email"' } }) });
      expect(await pool.check('a', OBJECT)).toEqual({ kind: 'done', reply: expect.objectContaining({ verdict: undefined }) });
    }
    expect(pool.threadsStarted).toBe(4);
    // The same type again keeps its thread.
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
    expect(pool.threadsStarted).toBe(4);
  });

  it('end a thread left idle, and start another when needed', async () => {
    pool = new CheckPool({ threads: 1, idleMs: 100 });
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
    expect(pool.threadsStarted).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect((await pool.check('a', OBJECT)).kind).toBe('done');
    expect(pool.threadsStarted).toBe(2);
  });

  it('let a process that used them exit on its own, without closing them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookline-pool-exit-'));
    const script = join(dir, 'check.mts');
    await writeFile(
      script,
      `import { CheckPool } from ${JSON.stringify(new URL('../../src/webhooks/validation-pool.ts', import.meta.url).href)};
       const outcome = await new CheckPool().check('a', ${JSON.stringify(OBJECT)});
       console.log(outcome.kind);`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    const exit = await Promise.race([
      new Promise((resolve) => child.once('exit', (code) => resolve(code))),
      new Promise((resolve) => setTimeout(() => resolve('still running'), 20_000)),
    ]);
    child.kill();
    await rm(dir, { recursive: true, force: true });
    expect(exit).toBe(0);
    expect(out.trim()).toBe('done');
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
   * Within createEventType's bounds (400 alternatives), yet checking 10,000 items against it
   * takes about a second on the machine this was written on (ajv tries each alternative in
   * turn, and makes an error of each that fails): 20,000 times 400 for 250 KB of data.
   */
  const COSTLY_SCHEMA = {
    type: 'object',
    properties: { list: { type: 'array', items: { anyOf: Array.from({ length: 400 }, (_, i) => ({ type: 'integer', minimum: i * 10, maximum: i * 10 + 1 })) } } },
  };
  const LIST = (items: number) => Array.from({ length: items }, () => 3991);
  let hl: TestHookline;
  let quick: TestHookline;
  let costly: { id: string; apiKey: string };
  let other: string;

  beforeAll(async () => {
    // hl: a deadline no busy machine reaches for the costly checks that must pass.
    [hl, quick] = await Promise.all([startTestHookline({ HOOKLINE_VALIDATION_TIMEOUT: '30s' }), startTestHookline({ HOOKLINE_VALIDATION_TIMEOUT: '500ms' })]);
    for (const server of [hl, quick]) {
      const a = await server.createTenant('Costly');
      const b = (await server.createTenant('Other')).apiKey;
      expect((await server.gql(CREATE_EVENT_TYPE, { input: { name: 'list.made', schema: COSTLY_SCHEMA } }, a.apiKey)).errors).toBeUndefined();
      expect((await server.gql(CREATE_EVENT_TYPE, { input: { name: 'order.placed', schema: { type: 'object', required: ['id'] } } }, b)).errors).toBeUndefined();
      if (server === hl) [costly, other] = [a, b];
    }
  });
  afterAll(() => Promise.all([hl?.stop(), quick?.stop()]));

  it('is refused past the deadline with BAD_USER_INPUT, writing nothing, and the tenant goes on', async () => {
    const a = await quick.createTenant('Costly again');
    expect((await quick.gql(CREATE_EVENT_TYPE, { input: { name: 'list.made', schema: COSTLY_SCHEMA } }, a.apiKey)).errors).toBeUndefined();
    const count = () => quick.dataSource.query('select count(*)::int as n from webhook_events');
    const before = await count();
    const res = await quick.gql(TRIGGER, { input: { event: 'list.made', data: { list: LIST(20_000) } } }, a.apiKey);
    expect(res.errors?.[0]).toMatchObject({
      extensions: { code: 'BAD_USER_INPUT', field: 'data' },
      message: expect.stringContaining('data: could not be checked against the schema of list.made within 0.5 s'),
    });
    expect(await count()).toEqual(before);
    // The tenant's next event, quick to check, is answered on its merits.
    const next = await quick.gql(TRIGGER, { input: { event: 'list.made', data: { list: [5] } } }, a.apiKey);
    expect(next.errors?.[0]?.message).toContain('does not match the schema of list.made: data.list.0 must be <= 1');
  });

  it("holds neither the process nor the other tenants' events while its checks run", async () => {
    // Both threads started, as they are after the first events of a busy process.
    await Promise.all([
      hl.gql(TRIGGER, { input: { event: 'list.made', data: { list: [1] } } }, costly.apiKey),
      hl.gql(TRIGGER, { input: { event: 'order.placed', data: { id: 0 } } }, other),
    ]);
    const order: string[] = [];
    // How long this process (where the API runs) goes without running what it has to.
    const stalls = monitorEventLoopDelay({ resolution: 10 });
    stalls.enable();
    const costlyEvent = hl.gql(TRIGGER, { input: { event: 'list.made', data: { list: LIST(10_000) } } }, costly.apiKey).then((res) => {
      expect(res.errors).toBeUndefined();
      order.push('costly');
    });
    // Sent once the costly one is in: its check has started.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const otherEvent = hl.gql(TRIGGER, { input: { event: 'order.placed', data: { id: 1 } } }, other).then((res) => {
      expect(res.errors).toBeUndefined();
      order.push('other tenant');
    });
    const typename = hl.gql('{ __typename }').then(() => order.push('__typename'));
    await Promise.all([costlyEvent, otherEvent, typename]);
    stalls.disable();
    expect(order).toHaveLength(3);
    expect(order.at(-1)).toBe('costly');
    // The check took about a second (more on a busy machine); on the request's thread that would be one stall.
    expect(stalls.max / 1e6).toBeLessThan(300);
  });

  it("keeps no database connection waiting while a tenant's checks wait their turn (idempotency keys)", async () => {
    // Keyed events have a transaction of their own: were their checks made inside it, 40 of
    // them waiting their turn would hold every connection of the process's pools.
    const order: string[] = [];
    const keyed = Array.from({ length: 40 }, (_, i) =>
      hl.gql(TRIGGER, { input: { event: 'list.made', idempotencyKey: `wait-${i}`, data: { list: LIST(3_000) } } }, costly.apiKey).then(() => order.push(`costly ${i}`)),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    const others = [
      hl.gql(TRIGGER, { input: { event: 'order.placed', data: { id: 2 } } }, other).then((res) => {
        expect(res.errors).toBeUndefined();
        order.push('other event');
      }),
      hl.gql('{ webhookSubscriptions { edges { node { id } } } }', {}, other).then((res) => {
        expect(res.errors).toBeUndefined();
        order.push('other query');
      }),
      hl.gql(TRIGGER, { input: { event: 'order.placed', idempotencyKey: 'other-keyed', data: { id: 3 } } }, other).then((res) => {
        expect(res.errors).toBeUndefined();
        order.push('other keyed event');
      }),
    ];
    await Promise.all([...keyed, ...others]);
    // The other tenant is answered before the costly tenant's checks have gone far (each a few tenths of a second).
    const firstCostly = order.findIndex((entry) => entry.startsWith('costly'));
    expect(order.slice(0, firstCostly + 3).filter((entry) => entry.startsWith('other')).sort()).toEqual(['other event', 'other keyed event', 'other query']);
  });

  it("checks an app's data as the JSON that is stored and sent, for built-in types and tenants' alike", async () => {
    // A Date is a string in JSON: what the receiver gets, and what the schema is asked about.
    const sentAt = new Date('2024-02-14T10:30:00Z');
    const webhooks = new WebhookService(hl.dataSource);
    const builtIn = await webhooks.triggerEvent({ tenantId: costly.id, event: 'invoice.sent', data: { invoice_id: 'inv-1', invoice_number: '001', sent_at: sentAt } });
    const stored = async (id: string) => (await hl.dataSource.query('select data from webhook_events where id = $1', [id]))[0].data;
    expect(await stored(builtIn.event.id)).toEqual({ invoice_id: 'inv-1', invoice_number: '001', sent_at: '2024-02-14T10:30:00.000Z' });
    expect((await hl.gql(CREATE_EVENT_TYPE, { input: { name: 'visit.logged', schema: { type: 'object', properties: { at: { type: 'string' } }, required: ['at'] } } }, costly.apiKey)).errors).toBeUndefined();
    const own = await webhooks.triggerEvent({ tenantId: costly.id, event: 'visit.logged', data: { at: sentAt } });
    expect(await stored(own.event.id)).toEqual({ at: '2024-02-14T10:30:00.000Z' });

    // What is sent is what was checked and stored, though the app changes its object meanwhile
    // (a keyed event is checked before its transaction, and waits for its thread).
    const data: Record<string, unknown> = { at: 'first' };
    const pending = webhooks.triggerEvent({ tenantId: costly.id, event: 'visit.logged', idempotencyKey: 'changed-after', data });
    data.at = 'changed';
    const keyed = await pending;
    const [row] = await hl.dataSource.query('select data, body from webhook_events where id = $1', [keyed.event.id]);
    expect(row.data).toEqual({ at: 'first' });
    expect(JSON.parse(row.body).data).toEqual({ at: 'first' });

    // A GraphQL variable inside a literal is its JSON too (a DateTime variable is a date, its JSON a string).
    const viaVariable = await hl.gql(
      'mutation($d: DateTime!) { triggerEvent(input: { event: "invoice.sent", data: { invoice_id: "inv-2", invoice_number: "002", sent_at: $d } }) { event { id } } }',
      { d: '2024-02-14T10:30:00Z' },
      costly.apiKey,
    );
    expect(viaVariable.errors).toBeUndefined();
    expect(await stored(viaVariable.data.triggerEvent.event.id)).toEqual({ invoice_id: 'inv-2', invoice_number: '002', sent_at: '2024-02-14T10:30:00.000Z' });
  });

  it("shares one pool of threads among the library's catalogs, however many services an app makes", async () => {
    const [threads, checks] = [sharedCheckPool().threadsStarted, sharedCheckPool().checksDone];
    for (let i = 0; i < 5; i++) {
      const result = await new WebhookService(hl.dataSource).triggerEvent({ tenantId: costly.id, event: 'list.made', data: { list: [i * 10] } });
      expect(result.duplicate).toBe(false);
    }
    // All five checked there, on one thread at most (none, if an earlier test's is still up).
    expect(sharedCheckPool().checksDone - checks).toBe(5);
    expect(sharedCheckPool().threadsStarted - threads).toBeLessThanOrEqual(1);
  });
});
