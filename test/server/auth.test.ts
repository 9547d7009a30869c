// Who may call what: anonymous, wrong, revoked, admin and tenant keys, over
// HTTP and WebSocket, with the contract's error codes.
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { nextClose, wsRequest } from '../helpers/ws.js';
import { within } from '../../src/within.js';

const VIEWER = 'query Viewer { viewer { id name createdAt } }';
const CREATE_TENANT = 'mutation CreateTenant($name: String!) { createTenant(name: $name) { tenant { id name createdAt } apiKey } }';
const CREATE_API_KEY = 'mutation CreateApiKey($name: String!) { createApiKey(name: $name) { apiKey id name createdAt } }';
const REVOKE_API_KEY = 'mutation RevokeApiKey($id: ID!) { revokeApiKey(id: $id) }';

let hl: TestHookline;
let tenant: { id: string; apiKey: string };

beforeAll(async () => {
  hl = await startTestHookline();
  tenant = await hl.createTenant('Acme');
});
afterAll(() => hl?.stop());

describe('over HTTP', () => {
  it('the admin token creates a tenant whose key sees that tenant', async () => {
    const created = await hl.gql(CREATE_TENANT, { name: 'Globex' }, ADMIN_TOKEN);
    expect(created.errors).toBeUndefined();
    const { tenant: t, apiKey } = created.data.createTenant;
    expect(apiKey).toMatch(/^hkl_[A-Za-z0-9_-]{40,}$/);
    const viewer = await hl.gql(VIEWER, {}, apiKey);
    expect(viewer.data.viewer).toEqual({ id: t.id, name: 'Globex', createdAt: t.createdAt });
  });

  it('stores only a hash of API keys', async () => {
    const rows = await hl.dataSource.query('select key_hash from api_keys');
    for (const row of rows) expect(Buffer.from(row.key_hash).toString()).not.toContain('hkl_');
    expect(JSON.stringify(rows)).not.toContain(tenant.apiKey);
  });

  it('refuses anonymous, malformed and wrong keys with UNAUTHENTICATED', async () => {
    for (const token of [undefined, 'hkl_wrong', 'not-a-key']) {
      const res = await hl.gql(VIEWER, {}, token);
      expect(res.data).toBeNull();
      expect(res.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    }
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Basic abc' },
      body: JSON.stringify({ query: VIEWER }),
    });
    expect((await res.json()).errors[0].extensions.code).toBe('UNAUTHENTICATED');
  });

  it('keeps admin and tenant apart with FORBIDDEN', async () => {
    const asTenant = await hl.gql(CREATE_TENANT, { name: 'Evil' }, tenant.apiKey);
    expect(asTenant.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const asAdmin = await hl.gql(VIEWER, {}, ADMIN_TOKEN);
    expect(asAdmin.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const anonymous = await hl.gql(CREATE_TENANT, { name: 'Nobody' });
    expect(anonymous.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const [{ count }] = await hl.dataSource.query(`select count(*)::int as count from tenants where name in ('Evil', 'Nobody')`);
    expect(count).toBe(0);
  });

  it('a revoked key stops working at once; another tenant cannot revoke it', async () => {
    const created = await hl.gql(CREATE_API_KEY, { name: 'ci' }, tenant.apiKey);
    const { apiKey, id, name } = created.data.createApiKey;
    expect(name).toBe('ci');
    expect((await hl.gql(VIEWER, {}, apiKey)).data.viewer.id).toBe(tenant.id);

    const other = await hl.createTenant('Other');
    const foreign = await hl.gql(REVOKE_API_KEY, { id }, other.apiKey);
    expect(foreign.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect((await hl.gql(VIEWER, {}, apiKey)).data.viewer.id).toBe(tenant.id);

    expect((await hl.gql(REVOKE_API_KEY, { id }, tenant.apiKey)).data.revokeApiKey).toBe(true);
    const after = await hl.gql(VIEWER, {}, apiKey);
    expect(after.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect((await hl.gql(VIEWER, {}, tenant.apiKey)).data.viewer.id).toBe(tenant.id);
  });

  it('a key whose tenant an operator deletes in SQL stops working at once, its socket closed as a revoked key\'s', async () => {
    const gone = await hl.createTenant('Deleted in SQL');
    const kept = await hl.gql(CREATE_API_KEY, { name: 'revoked already' }, gone.apiKey);
    await hl.gql(REVOKE_API_KEY, { id: kept.data.createApiKey.id }, gone.apiKey);
    // Remembered by the process, which would trust it for a minute unless told.
    expect((await hl.gql(VIEWER, {}, gone.apiKey)).data.viewer.id).toBe(gone.id);
    const socket = hl.wsClient(gone.apiKey);
    expect((await wsRequest(socket, VIEWER)).data.viewer.id).toBe(gone.id);
    const closed = nextClose(socket);
    await hl.dataSource.query('delete from tenants where id = $1', [gone.id]); // its keys go with it
    // Told by the database (its notice of the keys gone), not by its cache's expiry a minute on.
    expect((await within(closed, 5_000, 'the socket of a key gone with its tenant closed')).code).toBe(4401);
    await socket.dispose();
    const viewer = await hl.gql(VIEWER, {}, gone.apiKey);
    expect(viewer.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const write = await hl.gql('mutation { createWebhookSubscription(input: { url: "https://example.com/hook", events: ["*"] }) { subscription { id } } }', {}, gone.apiKey);
    expect(write.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect((await hl.gql(VIEWER, {}, tenant.apiKey)).data.viewer.id).toBe(tenant.id);
  });

  it('keys truncated with their tenants (an operator\'s reset) stop working at once, their sockets closed; keys made after work', async () => {
    // A database of its own: the truncation takes every tenant.
    const reset = await startTestHookline();
    try {
      const [a, b] = [await reset.createTenant('Reset A'), await reset.createTenant('Reset B')];
      // Both remembered by the process, which would trust them for a minute unless told.
      for (const t of [a, b]) expect((await reset.gql(VIEWER, {}, t.apiKey)).data.viewer.id).toBe(t.id);
      const socket = reset.wsClient(a.apiKey);
      expect((await wsRequest(socket, VIEWER)).data.viewer.id).toBe(a.id);
      const closed = nextClose(socket);
      // TRUNCATE fires no delete trigger, and names no rows: announced as every key (migration 0020).
      await reset.dataSource.query('truncate tenants cascade');
      expect((await within(closed, 5_000, 'the socket of a truncated key closed')).code).toBe(4401);
      await socket.dispose();
      for (const t of [a, b]) expect((await reset.gql(VIEWER, {}, t.apiKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
      const again = await reset.createTenant('After the reset');
      expect((await reset.gql(VIEWER, {}, again.apiKey)).data.viewer.id).toBe(again.id);
      const kept = reset.wsClient(again.apiKey);
      expect((await wsRequest(kept, VIEWER)).data.viewer.id).toBe(again.id);
      await kept.dispose();
    } finally {
      await reset.stop();
    }
  });

  it("lists a tenant's active keys, its first among them, whose id createTenant gives: each can be revoked, the first too", async () => {
    // The first key's id was never shown, and nothing listed keys: a leaked first key stayed valid for ever.
    const API_KEYS = '{ apiKeys { id name createdAt current } }';
    const created = await hl.gql('mutation($name: String!) { createTenant(name: $name) { tenant { id } apiKey apiKeyId } }', { name: 'Keyring' }, ADMIN_TOKEN);
    const { apiKey: first, apiKeyId: firstId } = created.data.createTenant;
    const second = (await hl.gql(CREATE_API_KEY, { name: 'ci' }, first)).data.createApiKey;
    const third = (await hl.gql(CREATE_API_KEY, { name: 'erp' }, first)).data.createApiKey;
    const listed = (await hl.gql(API_KEYS, {}, second.apiKey)).data.apiKeys;
    expect(listed.map((k: { id: string; name: string; current: boolean }) => [k.id, k.name, k.current])).toEqual([
      [firstId, 'default', false],
      [second.id, 'ci', true],
      [third.id, 'erp', false],
    ]);
    expect(JSON.stringify(listed)).not.toContain('hkl_');
    // Another tenant sees only its own; the admin token has no tenant.
    const other = (await hl.gql(API_KEYS, {}, tenant.apiKey)).data.apiKeys;
    expect(other.map((k: { id: string }) => k.id)).not.toContain(firstId);
    expect(other.every((k: { id: string }) => ![second.id, third.id].includes(k.id))).toBe(true);
    expect((await hl.gql(API_KEYS, {}, ADMIN_TOKEN)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    // The first key, revoked by its id, stops working, and leaves the list.
    expect((await hl.gql(REVOKE_API_KEY, { id: firstId }, second.apiKey)).data.revokeApiKey).toBe(true);
    expect((await hl.gql(VIEWER, {}, first)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const after = (await hl.gql(API_KEYS, {}, third.apiKey)).data.apiKeys;
    expect(after.map((k: { id: string; current: boolean }) => [k.id, k.current])).toEqual([
      [second.id, false],
      [third.id, true],
    ]);
  });

  it('holds at most 100 active keys a tenant, even created at once (each key has a rate of its own); revoking frees a place', async () => {
    const busy = await hl.createTenant('Many keys'); // its first key is one
    const answers = await Promise.all(Array.from({ length: 110 }, (_, i) => hl.gql(CREATE_API_KEY, { name: `k${i}` }, busy.apiKey)));
    const refused = answers.filter((a) => a.errors);
    expect(refused).toHaveLength(11);
    expect(refused[0]!.errors![0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('at most 100 active API keys') });
    const [{ n }] = await hl.dataSource.query('select count(*)::int as n from api_keys where tenant_id = $1 and revoked_at is null', [busy.id]);
    expect(n).toBe(100);
    const { id } = answers.find((a) => !a.errors)!.data.createApiKey;
    expect((await hl.gql(REVOKE_API_KEY, { id }, busy.apiKey)).data.revokeApiKey).toBe(true);
    expect((await hl.gql(CREATE_API_KEY, { name: 'after' }, busy.apiKey)).errors).toBeUndefined();
    // Another tenant's count is its own.
    expect((await hl.gql(CREATE_API_KEY, { name: 'other' }, tenant.apiKey)).errors).toBeUndefined();
  });

  it('names the field of bad input with BAD_USER_INPUT and writes nothing', async () => {
    const res = await hl.gql(CREATE_API_KEY, { name: '   ' }, tenant.apiKey);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'name' });
    expect(res.errors?.[0]?.message).toContain('name');
    // A name is one line: a line break or a tab within is refused (at either end, it is trimmed).
    const keysBefore = await hl.dataSource.query('select count(*)::int as n from api_keys');
    const tenantsBefore = await hl.dataSource.query('select count(*)::int as n from tenants');
    for (const name of ['ci\nadmin', 'ci\tkey', 'ci\u2028key', 'ci\u0085key']) {
      const key = await hl.gql(CREATE_API_KEY, { name }, tenant.apiKey);
      expect(key.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'name' }, message: expect.stringContaining('control characters') });
      const made = await hl.gql(CREATE_TENANT, { name }, ADMIN_TOKEN);
      expect(made.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'name' }, message: expect.stringContaining('control characters') });
    }
    expect(await hl.dataSource.query('select count(*)::int as n from api_keys')).toEqual(keysBefore);
    expect(await hl.dataSource.query('select count(*)::int as n from tenants')).toEqual(tenantsBefore);
    const trimmed = await hl.gql(CREATE_API_KEY, { name: ' ci key\n' }, tenant.apiKey);
    expect(trimmed.data?.createApiKey?.name, JSON.stringify(trimmed)).toBe('ci key');
    const unknownId = await hl.gql(REVOKE_API_KEY, { id: 'nope' }, tenant.apiKey);
    expect(unknownId.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });
});

describe('from a browser on another origin', () => {
  it('may call with an API key, never with the browser\'s credentials', async () => {
    const preflight = await fetch(`${hl.url}/graphql`, {
      method: 'OPTIONS',
      headers: { origin: 'https://dashboard.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://dashboard.example');
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization');
    expect(preflight.headers.get('access-control-allow-credentials')).toBeNull();
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { origin: 'https://dashboard.example', 'content-type': 'application/json', authorization: `Bearer ${tenant.apiKey}` },
      body: JSON.stringify({ query: '{ viewer { id } }' }),
    });
    expect((await res.json()).data.viewer.id).toBe(tenant.id);
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
  });
});

describe('limits and malformed requests', () => {
  it('refuses a query deeper than 10 before execution', async () => {
    // __type(name) { ofType { ofType ... } } nests without limit.
    let selection = 'name';
    for (let i = 0; i < 12; i++) selection = `ofType { ${selection} }`;
    const res = await hl.gql(`{ __type(name: "Tenant") { ${selection} } }`, {}, tenant.apiKey);
    expect(res.data).toBeUndefined();
    expect(res.errors?.[0]?.message).toMatch(/depth/i);
    const shallow = await hl.gql('{ __type(name: "Tenant") { ofType { name } } }', {}, tenant.apiKey);
    expect(shallow.errors).toBeUndefined();
  });

  it('answers malformed JSON with a 4xx', async () => {
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query": ',
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
  });

  it('answers JSON bodies that are not an operation with an error naming the problem', async () => {
    const post = async (body: string) => {
      const res = await fetch(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: res.status, message: ((await res.json()) as any).errors?.[0]?.message as string };
    };
    expect(await post('{}')).toEqual({ status: 200, message: 'Must provide query string.' });
    expect(await post('"{ viewer { id } }"')).toEqual({ status: 400, message: 'POST body is expected to be object but received string' });
    expect(await post('null')).toEqual({ status: 400, message: 'POST body is expected to be object but received null' });
    expect(await post('[]')).toEqual({ status: 400, message: 'Batching is not supported.' });
    expect(await post('{"query": 1}')).toEqual({ status: 400, message: 'Expected "query" param to be a string, but given number.' });
  });

  it('refuses a body over 1 MiB with 413, as a GraphQL error with its code', async () => {
    const res = await fetch(`${hl.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: VIEWER, variables: { pad: 'x'.repeat(1024 * 1024) } }),
    });
    expect(res.status).toBe(413);
    expect((await res.json()).errors).toEqual([{ message: expect.stringMatching(/exceeds/), extensions: { code: 'PAYLOAD_TOO_LARGE' } }]);
  });

  it('reads a body that arrives in pieces, and takes a JSON type with parameters', async () => {
    const body = Buffer.from(JSON.stringify({ query: VIEWER, operationName: 'Viewer' }));
    const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length, authorization: `Bearer ${tenant.apiKey}` },
      });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c) => (text += c)).on('end', () => resolve({ status: res.statusCode!, text }));
      });
      req.on('error', reject);
      req.flushHeaders();
      req.write(body.subarray(0, 10));
      setTimeout(() => req.end(body.subarray(10)), 50);
    });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.text).data.viewer.id).toBe(tenant.id);
  });

  it('keeps serving when a client leaves in the middle of a body', async () => {
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${hl.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': 1000 } });
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      req.flushHeaders();
      req.write('{"query": "{ viewer');
      setTimeout(() => req.destroy(), 50);
    });
    const viewer = await hl.gql(VIEWER, {}, tenant.apiKey);
    expect(viewer.data.viewer.id).toBe(tenant.id);
  });

  it('masks unexpected errors', async () => {
    // A syntax error in a value PostgreSQL rejects must not leak SQL detail.
    const res = await hl.gql('query { viewer { id } }', {}, tenant.apiKey);
    expect(res.errors).toBeUndefined();
  });

  it('serves GraphiQL from its own assets, health and readiness', async () => {
    const page = await fetch(`${hl.url}/graphql`, { headers: { accept: 'text/html' } });
    const html = await page.text();
    expect(page.status).toBe(200);
    expect(html).toContain('Hookline GraphiQL');
    expect(html).not.toMatch(/unpkg\.com|cdn\.jsdelivr/);
    expect((await fetch(`${hl.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${hl.url}/readyz`)).json()).toEqual({ status: 'ready' });
    const metrics = await fetch(`${hl.url}/metrics`);
    expect(await metrics.text()).toContain('hookline_process_cpu_user_seconds_total');
  });
});

describe("GraphiQL's page", () => {
  // Yoga rendered its 9 MB afresh for every GET, before any limit, and kept each copy until
  // the client read it: 250 page loads that were never read took an `all` process's heap.
  it('is rendered once, gzipped, revalidated by its ETag, and not to be framed by another site', async () => {
    const { graphiqlPage } = await import('../../src/server/graphql.js');
    expect(graphiqlPage()).toBe(graphiqlPage());
    const hl = await startTestHookline();
    try {
      const page = await fetch(`${hl.url}/graphql`, { headers: { accept: 'text/html', 'accept-encoding': 'gzip' } });
      expect(page.status).toBe(200);
      expect(page.headers.get('content-encoding')).toBe('gzip');
      expect(Number(page.headers.get('content-length'))).toBe(graphiqlPage().gzip.length);
      expect(graphiqlPage().gzip.length).toBeLessThan(graphiqlPage().html.length / 2);
      expect(await page.text()).toBe(graphiqlPage().html.toString());
      expect(page.headers.get('x-frame-options')).toBe('DENY');
      expect(page.headers.get('content-security-policy')).toBe("frame-ancestors 'none'");
      expect(page.headers.get('x-content-type-options')).toBe('nosniff');
      const again = await fetch(`${hl.url}/graphql/`, { headers: { accept: 'text/html', 'if-none-match': page.headers.get('etag')! } });
      expect(again.status).toBe(304);
    } finally {
      await hl.stop();
    }
  });

  it('counts each load against its address\'s limit on requests without a key', async () => {
    const hl = await startTestHookline({ HOOKLINE_RATE_LIMIT_ANONYMOUS: '3' });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) {
        const page = await fetch(`${hl.url}/graphql`, { headers: { accept: 'text/html' } });
        await page.arrayBuffer();
        statuses.push(page.status);
      }
      expect(statuses.filter((status) => status === 200).length).toBeLessThanOrEqual(4); // 3 a second, a second's burst
      expect(statuses).toContain(429);
    } finally {
      await hl.stop();
    }
  });
});

describe('GET /metrics with HOOKLINE_METRICS_TOKEN', () => {
  it('answers only its bearer, 401 with WWW-Authenticate otherwise; health stays open', async () => {
    const guarded = await startTestHookline({ HOOKLINE_METRICS_TOKEN: 'scrape-7f3a9c' });
    try {
      for (const authorization of [undefined, 'Bearer scrape-7f3a9', 'Bearer scrape-7f3a9c0', `Bearer ${ADMIN_TOKEN}`, 'Basic scrape-7f3a9c']) {
        const res = await fetch(`${guarded.url}/metrics`, { headers: authorization ? { authorization } : {} });
        expect(res.status, String(authorization)).toBe(401);
        expect(res.headers.get('www-authenticate')).toBe('Bearer realm="metrics"');
        const body = await res.json();
        expect(body.error.code).toBe('UNAUTHENTICATED');
        expect(JSON.stringify(body)).not.toContain('hookline_');
      }
      const res = await fetch(`${guarded.url}/metrics`, { headers: { authorization: 'Bearer scrape-7f3a9c' } });
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('hookline_process_cpu_user_seconds_total');
      expect((await fetch(`${guarded.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${guarded.url}/readyz`)).status).toBe(200);
    } finally {
      await guarded.stop();
    }
  });
});

describe('over WebSocket', () => {
  it('runs operations with the key of the connection parameter', async () => {
    const client = hl.wsClient(tenant.apiKey);
    const res = await wsRequest(client, VIEWER);
    expect(res.data.viewer.id).toBe(tenant.id);
    await client.dispose();
  });

  it('accepts the parameter spelled Authorization', async () => {
    const client = hl.wsClient(undefined, { connectionParams: { Authorization: `Bearer ${tenant.apiKey}` } });
    expect((await wsRequest(client, VIEWER)).data.viewer.id).toBe(tenant.id);
    await client.dispose();
  });

  it('refuses a connection without a valid key, naming the contract\'s code', async () => {
    for (const token of [undefined, 'hkl_wrong']) {
      const client = hl.wsClient(token);
      const closed = nextClose(client);
      await expect(wsRequest(client, VIEWER)).rejects.toBeDefined();
      expect(await closed).toMatchObject({ code: 4403, reason: expect.stringMatching(/^UNAUTHENTICATED: /) });
      await client.dispose();
    }
  });

  it('refuses a revoked key, and keeps admin and tenant apart', async () => {
    const { data } = await hl.gql(CREATE_API_KEY, { name: 'ws' }, tenant.apiKey);
    await hl.gql(REVOKE_API_KEY, { id: data.createApiKey.id }, tenant.apiKey);
    const revoked = hl.wsClient(data.createApiKey.apiKey);
    const closed = nextClose(revoked);
    await expect(wsRequest(revoked, VIEWER)).rejects.toBeDefined();
    expect((await closed).code).toBe(4403);
    await revoked.dispose();

    const admin = hl.wsClient(ADMIN_TOKEN);
    const res = await wsRequest(admin, VIEWER);
    expect(res.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    await admin.dispose();
  });
});
