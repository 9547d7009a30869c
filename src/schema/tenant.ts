import { MAX_ACTIVE_API_KEYS, createApiKey, createTenant, findTenant, listApiKeys, revokeApiKey, type ApiKeyInfo } from '../auth/tenants.js';
import { REVOCATION_WAIT_MS, requireAdmin, requireTenant } from '../auth/viewer.js';
import type { Tenant as TenantRow } from '../entities/tenant.js';
import { poolOf } from '../db/query.js';
import { builder } from './builder.js';

export const TenantRef = builder.objectRef<TenantRow>('Tenant').implement({
  description: 'A customer of Hookline. All its data is visible only with one of its API keys.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const CreateTenantPayload = builder
  .objectRef<{ tenant: TenantRow; apiKey: string; apiKeyId: string }>('CreateTenantPayload')
  .implement({
    description: 'A new tenant and its first API key.',
    fields: (t) => ({
      tenant: t.field({ type: TenantRef, description: 'The tenant made.', resolve: (p) => p.tenant }),
      apiKey: t.exposeString('apiKey', { description: 'The first API key of the tenant. Shown only here.' }),
      apiKeyId: t.exposeID('apiKeyId', { description: 'The id of that key (named "default"), for revokeApiKey; `apiKeys` lists it too.' }),
    }),
  });

const ApiKeyRef = builder.objectRef<ApiKeyInfo & { current: boolean }>('ApiKey').implement({
  description: 'An active API key of the tenant. The key itself is never shown again: Hookline keeps only its hash.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    current: t.exposeBoolean('current', { description: 'Whether this is the key the request is made with.' }),
  }),
});

builder.queryField('apiKeys', (t) =>
  t.field({
    type: [ApiKeyRef],
    description: `The calling tenant's active API keys (at most ${MAX_ACTIVE_API_KEYS}), oldest first: what revokeApiKey takes.`,
    complexity: { field: 1, multiplier: MAX_ACTIVE_API_KEYS },
    resolve: async (_root, _args, { viewer, services }) => {
      const keys = await listApiKeys(services.dataSource, requireTenant(viewer));
      const inUse = viewer.kind === 'tenant' ? viewer.apiKeyId : undefined;
      return keys.map((key) => ({ ...key, current: key.id === inUse }));
    },
  }),
);

const CreatedApiKey = builder
  .objectRef<{ apiKey: string; id: string; name: string; createdAt: Date }>('CreatedApiKey')
  .implement({
    description: 'A new API key, shown this once.',
    fields: (t) => ({
      apiKey: t.exposeString('apiKey', { description: 'The key itself. Shown only here; Hookline keeps only its hash.' }),
      id: t.exposeID('id'),
      name: t.exposeString('name'),
      createdAt: t.expose('createdAt', { type: 'DateTime' }),
    }),
  });

builder.queryField('viewer', (t) =>
  t.field({
    type: TenantRef,
    description: 'The tenant of the API key in use.',
    resolve: (_root, _args, { viewer, services }) => findTenant(services.dataSource, requireTenant(viewer)),
  }),
);

builder.mutationField('createTenant', (t) =>
  t.field({
    type: CreateTenantPayload,
    description: 'Creates a tenant and its first API key. Admin token only.',
    args: { name: t.arg.string({ required: true, description: "The tenant's name: one line, up to 200 characters." }) },
    resolve: (_root, { name }, { viewer, services }) => {
      requireAdmin(viewer);
      return createTenant(services.dataSource, name);
    },
  }),
);

builder.mutationField('createApiKey', (t) =>
  t.field({
    type: CreatedApiKey,
    description: 'Creates another API key for the calling tenant. The key is shown only in this answer.',
    args: { name: t.arg.string({ required: true, description: "The key's name (where it is used: ci, erp): one line, up to 200 characters." }) },
    resolve: async (_root, { name }, { viewer, services }) => {
      const { apiKey, record } = await createApiKey(services.dataSource, requireTenant(viewer), name);
      return { apiKey, id: record.id, name: record.name, createdAt: record.createdAt };
    },
  }),
);

builder.mutationField('revokeApiKey', (t) =>
  t.boolean({
    description: 'Revokes an API key of the calling tenant. It stops working at once, live connections included.',
    args: { id: t.arg.id({ required: true, description: "The key's id (apiKeys, createApiKey's or createTenant's apiKeyId)." }) },
    resolve: async (_root, { id }, { viewer, services, endKeyUse }) => {
      const tenantId = requireTenant(viewer);
      // As PostgreSQL writes it: caches, live streams and notices compare ids as text, and an
      // id typed in upper case (which the database matches) revoked the key there only.
      const keyId = String(id).toLowerCase();
      const expected = services.live?.expectRevocation(keyId);
      let revoked: boolean;
      try {
        revoked = await revokeApiKey(services.dataSource, tenantId, keyId);
      } catch (error) {
        expected?.cancel();
        throw error;
      } finally {
        // Its write committed (or failed), this operation writes nothing more: its key's use
        // ends before it waits for the acknowledgements, which wait for the operations under way
        // with the revoked key (ApiKeyCache.use): its own key's revocation would wait for this
        // one, and two keys revoking each other for each other. (Ended before the write, a
        // revocation of this key meanwhile could answer with the write still to come.)
        endKeyUse?.();
      }
      services.apiKeys.invalidate(keyId);
      // Other API processes hear it by NOTIFY: answered once each has dropped the key.
      const heard = await expected?.heard(poolOf(services.dataSource), REVOCATION_WAIT_MS);
      if (heard?.missing) services.log.warn({ apiKeyId: keyId, ...heard }, 'API processes did not acknowledge a revoked key in time');
      return revoked;
    },
  }),
);
