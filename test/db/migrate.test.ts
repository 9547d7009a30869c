// Migrations run at every start, in every process: several processes starting
// at once on an empty database must apply each migration exactly once.
import pg from 'pg';
import { expect, inject, it } from 'vitest';
import { createDataSource } from '../../src/db/data-source.js';
import { runMigrations } from '../../src/db/migrate.js';
import { migrations } from '../../src/migrations/index.js';

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
