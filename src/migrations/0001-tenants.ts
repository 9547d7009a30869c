import pg from 'pg';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { sqlState } from '../db/query.js';
import { StartRefused } from '../errors.js';
import { enableTenantRls, TENANT_ROLE } from './sql.js';

export class Tenants1764300000001 implements MigrationInterface {
  name = 'Tenants1764300000001';

  async up(db: QueryRunner): Promise<void> {
    // Roles are shared by the whole cluster: another database may create it at
    // the same moment, so a duplicate is not an error. One that exists (made by a
    // superuser for a user without CREATEROLE, who may not even try) is left as it is.
    const [{ user }] = await db.query('select current_user as user');
    try {
      await db.query(`
        do $$ begin
          if not exists (select from pg_roles where rolname = '${TENANT_ROLE}') then
            create role ${TENANT_ROLE} nologin;
          end if;
        exception when duplicate_object or unique_violation then null;
        end $$;
      `);
    } catch (error) {
      if (sqlState(error) !== '42501') throw error; // insufficient_privilege
      const name = pg.escapeIdentifier(user);
      throw new StartRefused(
        `the database user ${name} may not create the role ${TENANT_ROLE} (it has no CREATEROLE), which tenant isolation needs: ` +
          `a superuser runs CREATE ROLE ${TENANT_ROLE} NOLOGIN; GRANT ${TENANT_ROLE} TO ${name}; (or gives ${name} CREATEROLE), then start again`,
        { cause: error },
      );
    }
    // A role made by another database's Hookline, under another user, may not be ours to
    // grant: the start's check (checkTenantRole) then says how to fix it. Nothing else is
    // passed over, so any other failure is seen.
    await db.query(`
      do $$ begin
        execute format('grant ${TENANT_ROLE} to %I', current_user);
      exception when insufficient_privilege then null;
      end $$;
    `);
    await db.query(`grant usage on schema public to ${TENANT_ROLE}`);
    await db.query(`
      create table tenants (
        id uuid primary key default gen_random_uuid(),
        name text not null,
        created_at timestamptz not null default now()
      );
      create table api_keys (
        id uuid primary key default gen_random_uuid(),
        tenant_id uuid not null references tenants(id) on delete cascade,
        name text not null,
        key_hash bytea not null,
        created_at timestamptz not null default now(),
        revoked_at timestamptz
      );
      create unique index api_keys_key_hash on api_keys (key_hash);
      create index api_keys_tenant on api_keys (tenant_id, created_at);
    `);
    await db.query(enableTenantRls('tenants', 'id'));
    await db.query(enableTenantRls('api_keys'));
  }

  async down(db: QueryRunner): Promise<void> {
    await db.query('drop table api_keys; drop table tenants;');
  }
}
