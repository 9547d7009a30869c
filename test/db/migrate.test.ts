// Migrations run at every start, in every process: several processes starting
// at once on an empty database must apply each migration exactly once.
import 'reflect-metadata';
import pg from 'pg';
import { DataSource, type MigrationInterface, type QueryRunner } from 'typeorm';
import { pino } from 'pino';
import { expect, inject, it } from 'vitest';
import { createDataSource } from '../../src/db/data-source.js';
import { checkTenantRole, runMigrations } from '../../src/db/migrate.js';
import { within } from '../../src/within.js';
import { poolOf } from '../../src/db/query.js';
import { createTestDatabase, lockWaiters } from '../helpers/database.js';
import { eventually } from '../helpers/receiver.js';
import { migrations } from '../../src/migrations/index.js';
import { StartRefused } from '../../src/errors.js';
import { hooklineMigrations } from '../../src/index.js';

const NAMES = migrations.map((m) => new m().name);
/** The names of migration `number` (17 for 0017) and of every one after it. */
const fromMigration = (number: number) => NAMES.slice(NAMES.findIndex((n) => n.endsWith(String(1764300000000 + number))));

/** Undoes migrations until the last one applied is migration `number`: a database of that version. */
async function undoTo(source: DataSource, number: number): Promise<void> {
  const name = fromMigration(number)[0]!;
  for (;;) {
    const [last] = await source.query('select name from hookline_migrations order by id desc limit 1');
    if (last.name === name) return;
    await source.undoLastMigration({ transaction: 'each' });
  }
}

it('three processes migrating one empty database at once apply each migration once', async () => {
  const admin = new pg.Client({ connectionString: inject('postgresUrl').replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  const name = `hookline_empty_${Date.now()}`;
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = inject('postgresUrl').replace(/\/[^/]*$/, `/${name}`);
  const sources = [0, 1, 2].map(() => createDataSource({ url, poolSize: 2 }));
  await Promise.all(sources.map((s) => s.initialize()));
  try {
    const applied = await Promise.all(sources.map((s) => runMigrations(s)));
    expect(applied.flat().sort()).toEqual(migrations.map((m) => new m().name).sort());
    const rows = await sources[0]!.query('select name from hookline_migrations');
    expect(rows).toHaveLength(migrations.length);
    const [{ n }] = await sources[0]!.query(`select count(*)::int as n from event_types where tenant_id is null`);
    expect(n).toBe(10); // the catalog was seeded once
  } finally {
    await Promise.all(sources.map((s) => s.destroy()));
  }
});

it('refuses to go on when the tenant role could see past row-level security', async () => {
  const source = createDataSource({ url: await createTestDatabase(), poolSize: 2 });
  await source.initialize();
  // Roles belong to the whole server: a role of this test's own stands for hookline_tenant.
  const role = `hookline_tenant_probe_${process.pid}`;
  try {
    await expect(checkTenantRole(source)).resolves.toBeUndefined(); // as the migrations made it
    await source.query(`create role ${role} nologin bypassrls`);
    await expect(checkTenantRole(source, role)).rejects.toThrow(/tenant isolation would be off: it has BYPASSRLS/);
    await source.query(`alter role ${role} nobypassrls`);
    await expect(checkTenantRole(source, role)).resolves.toBeUndefined();
    // An app sharing the database may have tables and policies of its own: not Hookline's concern.
    await source.query(`create schema erp; create table erp.orders (id int, tenant_id uuid); alter table erp.orders owner to ${role};
      create policy orders_tenant_isolation on erp.orders using (true)`);
    await expect(checkTenantRole(source, role)).resolves.toBeUndefined();
    await source.query(`alter table api_keys owner to ${role}`);
    await expect(checkTenantRole(source, role)).rejects.toThrow(/it owns api_keys/);
    // Owning through membership of the owner is owning: row-level security does not apply either.
    const owner = `${role}_owner`;
    await source.query(`alter table api_keys owner to current_user; create role ${owner} nologin; grant ${owner} to ${role}; alter table webhook_events owner to ${owner}`);
    await expect(checkTenantRole(source, role)).rejects.toThrow(/it owns webhook_events/);
    await source.query(`alter table webhook_events owner to current_user; drop role ${owner}`);
    await source.query('alter table webhook_events disable row level security');
    await expect(checkTenantRole(source, role)).rejects.toThrow(/row-level security is off on webhook_events/);
  } finally {
    await source.query(`drop schema if exists erp cascade; drop role if exists ${role}_owner; drop role if exists ${role}`).catch(() => {});
    await source.destroy();
  }
});

it('refuses to start, saying what to grant, when the database user cannot switch to the tenant role', async () => {
  // The role exists already (made by the test run's template, as by another database's
  // Hookline), under another user: a user with CREATEROLE may not grant it to itself.
  const admin = new pg.Client({ connectionString: inject('postgresUrl').replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  const user = `hookline_app_${process.pid}`;
  const name = `hookline_not_member_${Date.now()}`;
  await admin.query(`create role ${user} login password 'apppw' createrole`);
  await admin.query(`create database ${name} owner ${user}`);
  const url = new URL(inject('postgresUrl'));
  Object.assign(url, { username: user, password: 'apppw', pathname: `/${name}` });
  const source = createDataSource({ url: String(url), poolSize: 2 });
  await source.initialize();
  try {
    await expect(runMigrations(source)).rejects.toThrow(`cannot switch to the role hookline_tenant, as every tenant's call does: make it a member, as a superuser or the role's creator: GRANT hookline_tenant TO "${user}"`);
    await admin.query(`grant hookline_tenant to ${user}`);
    await expect(runMigrations(source)).resolves.toEqual([]); // applied the first time; checked each time
  } finally {
    await source.destroy();
    await admin.query(`drop database if exists ${name}`).catch(() => {});
    await admin.query(`drop role if exists ${user}`).catch(() => {});
    await admin.end();
  }
});

it('migrates for a user without CREATEROLE once a superuser has made the tenant role and granted it (the least-privilege set-up)', async () => {
  // The role exists (made by the test run's template, as by a DBA). Creating it anyway was
  // refused, "permission denied to create role", before PostgreSQL looked whether it existed.
  const admin = new pg.Client({ connectionString: inject('postgresUrl').replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  const user = `hookline_plain_${process.pid}`;
  const name = `hookline_plain_${Date.now()}`;
  await admin.query(`create role ${user} login password 'apppw' nocreaterole`);
  await admin.query(`create database ${name} owner ${user}`);
  await admin.query(`grant hookline_tenant to ${user}`);
  const url = new URL(inject('postgresUrl'));
  Object.assign(url, { username: user, password: 'apppw', pathname: `/${name}` });
  const source = createDataSource({ url: String(url), poolSize: 2 });
  await source.initialize();
  try {
    const applied = await runMigrations(source);
    expect(applied).toEqual(migrations.map((m) => new m().name));
  } finally {
    await source.destroy();
    await admin.query(`drop database if exists ${name}`).catch(() => {});
    await admin.query(`drop role if exists ${user}`).catch(() => {});
    await admin.end();
  }
});

it('an app\'s DataSource applies Hookline\'s migrations with TypeORM\'s defaults (all in one transaction) and with each in its own', async () => {
  // The package exports them for apps' own DataSources (src/index.ts); TypeORM runs them all
  // in one transaction by default, where CREATE INDEX CONCURRENTLY (migration 0009) is refused.
  const admin = new pg.Client({ connectionString: inject('postgresUrl').replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  try {
    for (const mode of ['all', 'each'] as const) {
      const name = `hookline_app_${mode}_${Date.now()}`;
      await admin.query(`create database ${name}`);
      const app = new DataSource({
        type: 'postgres',
        url: inject('postgresUrl').replace(/\/[^/]*$/, `/${name}`),
        migrations: hooklineMigrations,
        migrationsTableName: 'hookline_migrations',
        ...(mode === 'each' ? { migrationsTransactionMode: mode } : {}),
      });
      await app.initialize();
      try {
        const applied = await app.runMigrations();
        expect(applied.map((m) => m.name)).toEqual(migrations.map((m) => new m().name));
        const [index] = await app.query(
          `select i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = 'webhook_deliveries_due_tenant'`,
        );
        expect(index).toEqual({ valid: true });
      } finally {
        await app.destroy();
      }
    }
  } finally {
    await admin.end();
  }
}, 60_000);

it("a migration waiting for a table a long transaction holds lets the service's statements by, and is applied once it can be", async () => {
  const url = await createTestDatabase();
  const source = createDataSource({ url, poolSize: 2 });
  await source.initialize();
  const holder = new pg.Client({ connectionString: url });
  const service = new pg.Client({ connectionString: url });
  await holder.connect();
  await service.connect();
  try {
    // A database of the version before 0017 (the last that alters the table; 0018 builds an index concurrently, 0019 adds a trigger to api_keys).
    await undoTo(source, 16);
    const after = fromMigration(17);
    const last = after.at(-1)!;
    // A long transaction (an app's, an operator's psql) that has read the table the migration alters.
    await holder.query('begin');
    await holder.query('select count(*) from webhook_deliveries');
    const lines: Array<{ msg: string }> = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const migrating = runMigrations(source, log);
    await eventually(() => lines.some((l) => /a migration waits for a table another transaction holds/.test(l.msg)));
    // Meanwhile the service's statements on the table go on; queued behind the ALTER, they waited as long as the holder.
    for (let i = 0; i < 3; i++) {
      await within(service.query('select count(*) from webhook_deliveries'), 10_000, 'a statement on the table waited behind the migration');
      await new Promise((r) => setTimeout(r, 300));
    }
    await holder.query('commit');
    expect(await migrating).toEqual(after);
    const [{ n }] = await source.query(`select count(*)::int as n from hookline_migrations where name = $1`, [last]);
    expect(n).toBe(1);
    // The lock timeout was the migration's only: the connection goes back to the pool as it was.
    const timeouts = await Promise.all([0, 1].map(() => source.query('show lock_timeout')));
    expect(timeouts.map(([row]) => row.lock_timeout)).toEqual(['0', '0']);
  } finally {
    await holder.end();
    await service.end();
    await source.destroy();
  }
}, 60_000);

it('an index built concurrently (0018) that waits too long for an older transaction refuses the start, naming what to look for; the next start builds it', async () => {
  const url = await createTestDatabase();
  const name = new URL(url).pathname.slice(1);
  const source = createDataSource({ url, poolSize: 2 });
  await source.initialize();
  const holder = new pg.Client({ connectionString: url });
  await holder.connect();
  try {
    await undoTo(source, 17);
    await source.query(`alter database ${pg.escapeIdentifier(name)} set hookline.queue_index_wait = '1s'`);
    await source.destroy();
    await source.initialize(); // connections that read the setting
    // A transaction with a snapshot older than the build (an app's, a psql session left open).
    await holder.query('begin isolation level repeatable read');
    await holder.query('select count(*) from tenants');
    const refused = await runMigrations(source).then(() => undefined, (error: unknown) => error);
    expect(refused).toBeInstanceOf(StartRefused);
    expect((refused as Error).message).toMatch(/building the index webhook_deliveries_claimed_tests concurrently waited 1s for transactions older than it.*pg_stat_activity.*start again/);
    await holder.query('commit');
    expect(await runMigrations(source)).toEqual(fromMigration(18));
    const [{ valid }] = await source.query(`select indisvalid as valid from pg_index where indexrelid = 'webhook_deliveries_claimed_tests'::regclass`);
    expect(valid).toBe(true);
  } finally {
    await holder.end();
    if (source.isInitialized) await source.destroy();
  }
}, 60_000);

it('migration 0017 marks the test events waiting as it runs, and nothing else', async () => {
  const source = createDataSource({ url: await createTestDatabase(), poolSize: 2 });
  await source.initialize();
  try {
    await undoTo(source, 16);
    const [{ id: tenant }] = await source.query(`insert into tenants (name) values ('Upgraded') returning id`);
    const subscription = async (active: boolean) =>
      (await source.query(`insert into webhook_subscriptions (tenant_id, url, events, secret, active) values ($1, 'https://example.com/hook', '{*}', 'whsec_upgrade', $2) returning id`, [tenant, active]))[0].id;
    const [inactive, active] = [await subscription(false), await subscription(true)];
    const [{ id: eventId }] = await source.query(`insert into webhook_events (id, tenant_id, event, data, body, created_at) values (gen_random_uuid(), $1, 'test.event', '{}', '{}', now()) returning id`, [tenant]);
    const rows: Array<[name: string, subscription: string, status: string, paused: boolean, attempts: number, event: string, marked: boolean]> = [
      ['untried test event waiting, inactive', inactive, 'PENDING', false, 0, 'test.event', true],
      ['untried test event being sent, inactive', inactive, 'SENDING', false, 0, 'test.event', true],
      ['paused delivery of an inactive one', inactive, 'PENDING', true, 0, 'invoice.created', false],
      ['tried test event, its retry waiting', inactive, 'PENDING', true, 1, 'test.event', false],
      ['delivery being sent to an inactive one', inactive, 'SENDING', false, 0, 'invoice.created', false],
      ['waiting delivery of an active one', active, 'PENDING', false, 0, 'test.event', false],
      ['delivered test event', inactive, 'DELIVERED', false, 1, 'test.event', false],
    ];
    const ids: string[] = [];
    for (const [, sub, status, paused, attempts, event] of rows) {
      const sending = status === 'SENDING';
      const [{ id }] = await source.query(
        `insert into webhook_deliveries (tenant_id, event_id, subscription_id, event, target_url, status, paused, attempts, next_attempt_at, locked_by, lease_expires_at)
         values ($1, $2, $3, $4, 'https://example.com/hook', $5, $6, $7, now(), $8, $9) returning id`,
        [tenant, eventId, sub, event, status, paused, attempts, sending ? 'old-worker' : null, sending ? new Date(Date.now() + 60_000) : null],
      );
      ids.push(id);
    }
    expect(await runMigrations(source)).toEqual(fromMigration(17));
    const marks = await source.query(`select id, test_event from webhook_deliveries where id = any($1::uuid[])`, [ids]);
    const byId = new Map(marks.map((r: { id: string; test_event: boolean }) => [r.id, r.test_event]));
    expect(Object.fromEntries(rows.map(([name], i) => [name, byId.get(ids[i]!)]))).toEqual(Object.fromEntries(rows.map(([name, , , , , , marked]) => [name, marked])));
  } finally {
    await source.destroy();
  }
});

it("an app's own migrations run by Hookline's runMigrations wait for their locks as PostgreSQL makes them, as under the app's runner", async () => {
  const url = await createTestDatabase();
  // An app's migration outside a transaction, of more than one step: a lock timeout half-way
  // would leave its index invalid, and a try again would find it there.
  class AppIndex1800000000001 implements MigrationInterface {
    name = 'AppIndex1800000000001';
    transaction = false as const;
    async up(db: QueryRunner) {
      await db.query('create index concurrently app_invoices_n on app_invoices (n)');
    }
    async down() {}
  }
  const app = new DataSource({
    type: 'postgres',
    url,
    migrations: [...hooklineMigrations, AppIndex1800000000001],
    migrationsTableName: 'hookline_migrations',
    migrationsTransactionMode: 'each',
    logging: false,
  });
  await app.initialize();
  const holder = new pg.Client({ connectionString: url });
  await holder.connect();
  try {
    await app.query('create table app_invoices (n int)');
    // A transaction with a snapshot of its own, which CREATE INDEX CONCURRENTLY waits for.
    await holder.query('begin isolation level repeatable read');
    await holder.query('select count(*) from app_invoices');
    const migrating = runMigrations(app);
    await eventually(async () => (await lockWaiters(poolOf(app))).length > 0);
    await new Promise((r) => setTimeout(r, 2_500)); // past Hookline's own migrations' lock timeout
    await holder.query('commit');
    expect(await migrating).toEqual(['AppIndex1800000000001']);
    const [index] = await app.query(`select i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = 'app_invoices_n'`);
    expect(index).toEqual({ valid: true });
  } finally {
    await holder.end();
    await app.destroy();
  }
}, 60_000);
