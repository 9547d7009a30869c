// Shared SQL fragments for migrations: row-level security is the second wall
// of tenant isolation (the first is tenant-scoped finders). Tenant-scoped
// transactions run as the role hookline_tenant with hookline.tenant_id set
// (see db/tenant-scope.ts); the table owner, used by the dispatcher, is not
// subject to the policies.
export const TENANT_ROLE = 'hookline_tenant';

/** Hookline's tables that row-level security binds to a tenant (see checkTenantRole). */
export const TENANT_TABLES = [
  'tenants',
  'api_keys',
  'event_types',
  'webhook_subscriptions',
  'webhook_events',
  'idempotency_keys',
  'webhook_deliveries',
  'delivery_attempts',
];
export const CURRENT_TENANT = `nullif(current_setting('hookline.tenant_id', true), '')::uuid`;

export function enableTenantRls(table: string, column = 'tenant_id'): string {
  return `
    alter table ${table} enable row level security;
    create policy ${table}_tenant_isolation on ${table}
      using (${column} = ${CURRENT_TENANT})
      with check (${column} = ${CURRENT_TENANT});
    grant select, insert, update, delete on ${table} to ${TENANT_ROLE};
  `;
}
