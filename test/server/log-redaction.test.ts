// A statement that fails unexpectedly is logged with its text, never with its
// parameters: those may be a subscription's signing secret or a receiver's
// Authorization header. And the input that made one such failure reachable (a
// pattern too long for the index on events) is refused as BAD_USER_INPUT.
import pg from 'pg';
import { QueryFailedError } from 'typeorm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';

let hl: TestHookline;
let lines: string[];

beforeAll(async () => {
  lines = [];
  hl = await startTestHookline({}, { log: createLogger('info', { write: (line: string) => void lines.push(line) }) });
});
afterAll(async () => {
  await hl?.stop();
});

it('logs a failed statement\'s text and error, not its parameters or the values in its detail', () => {
  const log = createLogger('info', { write: (line: string) => void lines.push(line) });
  const driverError = Object.assign(new Error('index row size 2728 exceeds btree version 4 maximum 2704'), {
    code: '54000',
    detail: 'Failing row contains (whsec_ZGV0YWlsLXNpZ25pbmcta2V5, {"Authorization": "Bearer detail-token"}).',
  });
  const failed = new QueryFailedError('insert into webhook_subscriptions (secret, headers) values ($1, $2)', ['whsec_c2VjcmV0LXNpZ25pbmcta2V5', { Authorization: 'Bearer receiver-token' }], driverError);
  lines.length = 0;
  log.error({ err: failed }, 'unexpected error in a GraphQL operation');
  log.error({ err: new Error('wrapped', { cause: failed }) }, 'REST request failed');
  // Other shapes: several errors at once, deeper causes, and what Yoga logs (its own arguments).
  log.error({ err: new AggregateError([failed], 'several') }, 'aggregate');
  log.error({ err: new Error('outer', { cause: new Error('middle', { cause: failed }) }) }, 'deep');
  log.error({ yoga: ['an error', failed] }, 'yoga');
  const text = lines.join('\n');
  expect(text).not.toContain('c2VjcmV0');
  expect(text).not.toContain('receiver-token');
  expect(text).not.toContain('ZGV0YWls');
  expect(text).not.toContain('detail-token');
  expect(text).toContain('insert into webhook_subscriptions');
  expect(text).toContain('index row size');
  expect(lines).toHaveLength(5);
});

it('logs the error of a pool\'s idle connection that failed without the pg client pg-pool attaches to it', async () => {
  const log = createLogger('info', { write: (line: string) => void lines.push(line) });
  const pool = new pg.Pool({ connectionString: hl.databaseUrl, max: 1 });
  const admin = new pg.Client({ connectionString: hl.databaseUrl });
  await admin.connect();
  try {
    const client = await pool.connect();
    // A statement with a secret in its values, kept by the client (prepared, named).
    await client.query({ name: 'probe', text: 'select $1::text as secret', values: ['whsec_aWRsZS1jbGllbnQtc2VjcmV0'] });
    const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
    client.release();
    const failed = new Promise<Error & { client?: unknown }>((resolve) => pool.once('error', resolve));
    await admin.query('select pg_terminate_backend($1)', [rows[0]!.pid]);
    const error = await failed;
    expect(error.client).toBeDefined(); // what pg-pool does
    lines.length = 0;
    log.warn({ err: error }, 'idle database connection failed');
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!);
    expect(line.err.message).toMatch(/terminat/);
    expect(line.err.client).toBe('[not logged]');
    expect(lines[0]).not.toContain('aWRsZS1jbGllbnQtc2VjcmV0');
    expect(lines[0]!.length).toBeLessThan(2_000);
  } finally {
    await admin.end();
    await pool.end();
  }
});

it('refuses a pattern whose prefix is longer than an event name may be, naming the field', async () => {
  const { apiKey } = await hl.createTenant();
  const res = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret } }',
    { input: { url: 'http://127.0.0.1:9/hook', events: [`${'a'.repeat(4_000)}.*`], secret: 'my-very-secret-signing-key' } },
    apiKey,
  );
  expect(res.errors?.[0]?.extensions, JSON.stringify(res.errors)).toMatchObject({ code: 'BAD_USER_INPUT', field: 'events' });
  expect(lines.join('\n')).not.toContain('my-very-secret-signing-key');
});

it('logs no variable or literal values at debug level: a refused input may hold a signing secret or a receiver\'s Authorization header', async () => {
  const debugLines: string[] = [];
  const debug = await startTestHookline({}, { log: createLogger('debug', { write: (line: string) => void debugLines.push(line) }) });
  try {
    const { apiKey } = await debug.createTenant();
    const create = 'mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { secret } }';
    const input = { events: ['invoice.created'], url: 'http://127.0.0.1:9/ok', secret: 'LEAKCHECK-VARSECRET-123456', headers: { Authorization: 'Bearer LEAKCHECK-VARHDR' } };
    // Refused by graphql-js's coercion (an unknown field), whose message quotes the whole value.
    const coerced = await debug.gql(create, { i: { ...input, bogus: 1 } }, apiKey);
    expect(coerced.errors?.[0]?.message).toContain('bogus');
    // Refused by Hookline's own check, and an inline literal refused by validation.
    expect((await debug.gql(create, { i: { ...input, url: 'ftp://x' } }, apiKey)).errors).toHaveLength(1);
    const inline = await debug.gql('mutation { createWebhookSubscription(input: { events: ["invoice.created"], url: 5, secret: "LEAKCHECK-INLINESECRET-1234" }) { secret } }', {}, apiKey);
    expect(inline.errors?.length).toBeGreaterThan(0);
    // And one that succeeds.
    expect((await debug.gql(create, { i: input }, apiKey)).errors).toBeUndefined();
    const text = debugLines.join('\n');
    expect(text).toContain('yoga: error answered'); // the errors are logged, at debug
    expect(text).not.toContain('LEAKCHECK');
    // With the code and field the client is answered (Hookline's error is logged before the masker gives the answer its code).
    const answered = debugLines.map((line) => JSON.parse(line)).filter((l) => l.msg === 'yoga: error answered');
    expect(answered).toContainEqual(expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'url', error: expect.stringContaining('scheme "ftp"') }));
  } finally {
    await debug.stop();
  }
});
