// A page a mutation's selection asks for is checked before the mutation writes: one refused
// afterwards nulled the non-null payload (`data: null`), so a subscription was created, or its
// secret rotated, with the new secret never answered, and a client told its call failed.
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { wsRequest } from '../helpers/ws.js';

let hl: TestHookline;
let tenant: { id: string; apiKey: string };
let socket: Client;
let subscriptionId: string;

const PAGE = 'edges { node { id } } pageInfo { hasNextPage }';
const CURSOR = '0b0e5d3a-4a7b-4f6e-9a51-2d1f3c4b5a69~1764400000000';

beforeAll(async () => {
  hl = await startTestHookline();
  tenant = await hl.createTenant();
  socket = hl.wsClient(tenant.apiKey);
  const created = await hl.gql(
    'mutation { createWebhookSubscription(input: { url: "https://example.com/hook", events: ["test.event"], secret: "first-secret-abcdefgh", description: "as made" }) { subscription { id } } }',
    {},
    tenant.apiKey,
  );
  subscriptionId = created.data.createWebhookSubscription.subscription.id;
});
afterAll(async () => {
  await socket?.dispose();
  await hl?.stop();
});

async function counts() {
  const [row] = await hl.dataSource.query(
    `select (select count(*)::int from webhook_subscriptions where tenant_id = $1) as subscriptions,
            (select count(*)::int from webhook_deliveries where tenant_id = $1) as deliveries,
            (select secret from webhook_subscriptions where id = $2) as secret,
            (select description from webhook_subscriptions where id = $2) as description`,
    [tenant.id, subscriptionId],
  );
  return row as { subscriptions: number; deliveries: number; secret: string; description: string };
}

function expectRefused(res: { data?: unknown; errors?: any[] }, field: string, message: RegExp) {
  expect(res.data ?? null).toBeNull();
  expect(res.errors).toHaveLength(1);
  expect(res.errors![0].extensions.code).toBe('BAD_USER_INPUT');
  if (field) expect(res.errors![0].extensions.field).toBe(field);
  expect(res.errors![0].message).toMatch(message);
}

describe('a mutation whose selection asks for a page it cannot have', () => {
  const cases: Array<{ name: string; query: string; variables?: Record<string, unknown>; field: string; message: RegExp }> = [
    {
      name: 'createWebhookSubscription, first over 100',
      query: `mutation { createWebhookSubscription(input: { url: "https://example.com/other", events: ["test.event"] }) { secret subscription { id deliveries(first: 101) { ${PAGE} } } } }`,
      field: 'first',
      message: /^first: must be at most 100/,
    },
    {
      name: 'rotateWebhookSecret, a cursor this list never wrote (a variable)',
      query: `mutation($id: ID!, $after: String) { rotateWebhookSecret(id: $id) { secret subscription { deliveries(first: 5, after: $after) { ${PAGE} } } } }`,
      variables: { after: 'garbage' },
      field: 'after',
      message: /^after: is not a cursor of this list/,
    },
    {
      name: 'updateWebhookSubscription, through a fragment, last with first',
      query: `mutation($id: ID!) { updateWebhookSubscription(id: $id, input: { description: "changed" }) { ...Pages } }
        fragment Pages on WebhookSubscription { id deliveries(first: 1, last: 1) { ${PAGE} } }`,
      field: 'last',
      message: /^last: cannot be given with first/,
    },
    {
      name: 'createWebhookSubscription, a bare id of no row of the list (another tenant\'s, or deleted)',
      query: `mutation { createWebhookSubscription(input: { url: "https://example.com/other", events: ["test.event"] }) { secret subscription { deliveries(first: 5, after: "3f0c0f0e-1111-4222-8333-444455556666") { ${PAGE} } } } }`,
      field: 'after',
      message: /^after: no item of this list has the id 3f0c0f0e-1111-4222-8333-444455556666/,
    },
    {
      name: 'rotateWebhookSecret, an @include whose variable is sent as null',
      query: `mutation($id: ID!, $s: Boolean = false) { rotateWebhookSecret(id: $id) { secret subscription { id @include(if: $s) } } }`,
      variables: { s: null },
      field: '',
      message: /^Argument "if" of non-null type "Boolean!" must not be null/,
    },
    {
      name: 'sendTestEvent, a @skip on a fragment spread whose variable is sent as null',
      query: `mutation($id: ID!, $s: Boolean = true) { sendTestEvent(subscriptionId: $id) { id ...Status @skip(if: $s) } }
        fragment Status on Delivery { status }`,
      variables: { s: null },
      field: '',
      message: /^Argument "if" of non-null type "Boolean!" must not be null/,
    },
    {
      name: 'sendTestEvent, a negative first deep in an inline fragment',
      query: `mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id ... on Delivery { subscription { deliveries(first: -1) { ${PAGE} } } } } }`,
      field: 'first',
      message: /first: must be 0 to 100/,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: refused before it writes, over HTTP and WebSocket`, async () => {
      const before = await counts();
      const variables = { id: subscriptionId, ...c.variables };
      expectRefused(await hl.gql(c.query, variables, tenant.apiKey), c.field, c.message);
      const overSocket = await wsRequest(socket, c.query, variables).then(
        (result) => result,
        (errors: unknown) => ({ errors: errors as any[] }),
      );
      expectRefused(overSocket, c.field, c.message);
      expect(await counts()).toEqual(before);
    });
  }

  it('tells a caller without a tenant\'s key that first, as the mutation itself does', async () => {
    const before = await counts();
    for (const [token, code] of [
      ['not-a-key', 'UNAUTHENTICATED'],
      [ADMIN_TOKEN, 'FORBIDDEN'],
    ] as const) {
      const res = await hl.gql(cases[1]!.query, { id: subscriptionId, ...cases[1]!.variables }, token);
      expect(res.errors?.[0]?.extensions?.code, token).toBe(code);
    }
    expect(await counts()).toEqual(before);
  });

  it('refuses the admin token\'s createTenant whose answer has a null condition, before the tenant (and its only key) is made', async () => {
    const tenants = async () => (await hl.dataSource.query('select count(*)::int as n from tenants'))[0].n as number;
    const before = await tenants();
    const query = 'mutation($v: Boolean = true) { createTenant(name: "CondT") { apiKey @include(if: $v) tenant { id } } }';
    expectRefused(await hl.gql(query, { v: null }, ADMIN_TOKEN), '', /^Argument "if" of non-null type "Boolean!" must not be null/);
    expect(await tenants()).toBe(before);
    const made = await hl.gql(query, { v: true }, ADMIN_TOKEN);
    expect(made.data.createTenant.apiKey).toMatch(/^hkl_/);
    expect(await tenants()).toBe(before + 1);
  });

  it('answers a failure of the bare cursor\'s lookup as an unexpected error, writing nothing, and keeps the WebSocket open', async () => {
    const before = await counts();
    const query = `mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret subscription { deliveries(first: 1, after: "6a3d8b5e-1111-4222-8333-944455556666") { ${PAGE} } } } }`;
    await hl.dataSource.query('alter table webhook_deliveries rename to webhook_deliveries_away');
    try {
      const overHttp = await hl.gql(query, { id: subscriptionId }, tenant.apiKey);
      expect(overHttp.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
      expect(overHttp.errors?.[0]?.message).toBe('Unexpected error.');
      const strict = await fetch(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization: `Bearer ${tenant.apiKey}` },
        body: JSON.stringify({ query, variables: { id: subscriptionId } }),
      });
      expect(strict.status, 'no data: a 5xx for graphql-response+json').toBe(500);
      await strict.text();
      const overSocket = await wsRequest(socket, query, { id: subscriptionId }).then(
        (result) => result,
        (errors: unknown) => ({ errors: errors as any[] }),
      );
      expect(overSocket.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    } finally {
      await hl.dataSource.query('alter table webhook_deliveries_away rename to webhook_deliveries');
    }
    expect(await counts()).toEqual(before);
    expect((await wsRequest(socket, '{ viewer { id } }')).data.viewer.id).toBe(tenant.id);
  });

  it('answers with the HTTP status of a request refused before execution (400 for graphql-response+json)', async () => {
    for (const [accept, status] of [
      ['application/json', 200],
      ['application/graphql-response+json', 400],
    ] as const) {
      const res = await fetch(`${hl.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${tenant.apiKey}` },
        body: JSON.stringify({ query: cases[0]!.query }),
      });
      expect(res.status, accept).toBe(status);
      expect(((await res.json()) as any).errors[0].extensions.code).toBe('BAD_USER_INPUT');
    }
  });

  it('runs when the page is left out by @skip/@include, and answers pages that can be had', async () => {
    const before = await counts();
    const skipped = await hl.gql(
      `mutation($id: ID!, $skip: Boolean!) { updateWebhookSubscription(id: $id, input: { description: "changed" }) { id deliveries(first: 101) @skip(if: $skip) { ${PAGE} } } }`,
      { id: subscriptionId, skip: true },
      tenant.apiKey,
    );
    expect(skipped.errors).toBeUndefined();
    expect(skipped.data.updateWebhookSubscription).toEqual({ id: subscriptionId });
    expect((await counts()).description).toBe('changed');

    const rotated = await hl.gql(
      `mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret subscription { deliveries(first: 100, after: "${CURSOR}") { ${PAGE} } } } }`,
      { id: subscriptionId },
      tenant.apiKey,
    );
    expect(rotated.errors).toBeUndefined();
    expect(rotated.data.rotateWebhookSecret.secret).toMatch(/^whsec_/);
    expect(rotated.data.rotateWebhookSecret.subscription.deliveries).toEqual({ edges: [], pageInfo: { hasNextPage: false } });
    expect((await counts()).secret).not.toBe(before.secret);

    // A bare id of a row of the list goes on from it; a fragment spread twice, skipped once, is taken.
    const sent = await hl.gql('mutation($id: ID!) { sendTestEvent(subscriptionId: $id) { id } }', { id: subscriptionId }, tenant.apiKey);
    const deliveryId = sent.data.sendTestEvent.id;
    const fromOwn = await hl.gql(
      `mutation($id: ID!, $after: String) { updateWebhookSubscription(id: $id, input: { description: "again" }) { ...Pages @skip(if: true) ...Pages } }
        fragment Pages on WebhookSubscription { deliveries(first: 5, after: $after) { ${PAGE} } }`,
      { id: subscriptionId, after: deliveryId },
      tenant.apiKey,
    );
    expect(fromOwn.errors).toBeUndefined();
    expect(fromOwn.data.updateWebhookSubscription.deliveries).toEqual({ edges: [], pageInfo: { hasNextPage: false } });
    expect((await counts()).description).toBe('again');
  });
});
