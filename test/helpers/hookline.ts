// Starts a real Hookline (HTTP server, WebSocket, dispatcher) on a fresh test
// database, and offers small clients for GraphQL over HTTP and WebSocket.
import { createClient, type Client } from 'graphql-ws';
import { pino } from 'pino';
import WebSocket from 'ws';
import { loadConfig, type Config } from '../../src/config.js';
import { startHookline, type Hookline, type StartOptions } from '../../src/hookline.js';
import type { Clock } from '../../src/services.js';
import { createTestDatabase } from './database.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface GraphQLResponse<T = any> {
  data?: T;
  errors?: Array<{ message: string; extensions?: { code?: string; field?: string } }>;
}

export interface TestHookline extends Hookline {
  url: string;
  gql<T = any>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GraphQLResponse<T>>;
  /** Creates a tenant with the admin token; returns its id and API key. */
  createTenant(name?: string): Promise<{ id: string; apiKey: string }>;
  wsClient(token?: string, extra?: Partial<Parameters<typeof createClient>[0]>): Client;
  /** A counter or gauge of its GET /metrics, summed over its labels (those with the `labels` given). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

export async function startTestHookline(
  env: Record<string, string> = {},
  options: { clock?: Clock; databaseUrl?: string; dispatcher?: StartOptions['dispatcher']; log?: StartOptions['log']; livenessMs?: number; requestTimeouts?: StartOptions['requestTimeouts']; retentionFirstSweepMs?: number; databaseWatchMs?: number } = {},
): Promise<TestHookline> {
  const databaseUrl = options.databaseUrl ?? (await createTestDatabase());
  const config: Readonly<Config> = loadConfig({
    ADMIN_TOKEN,
    PORT: '0',
    HOOKLINE_ALLOW_PRIVATE_TARGETS: 'true',
    HOOKLINE_RETRY_SCHEDULE: '100ms,200ms,300ms',
    HOOKLINE_DELIVERY_TIMEOUT: '2s',
    ...env,
    DATABASE_URL: databaseUrl,
  });
  const log = options.log ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const hookline = await startHookline({ config, log, clock: options.clock, host: '127.0.0.1', dispatcher: options.dispatcher, livenessMs: options.livenessMs, requestTimeouts: options.requestTimeouts, retentionFirstSweepMs: options.retentionFirstSweepMs, databaseWatchMs: options.databaseWatchMs });
  const url = hookline.app.url;

  async function gql<T>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GraphQLResponse<T>> {
    const res = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    return (await res.json()) as GraphQLResponse<T>;
  }

  return {
    ...hookline,
    url,
    gql,
    async createTenant(name = 'Acme') {
      const res = await gql<any>(
        'mutation($name: String!) { createTenant(name: $name) { tenant { id } apiKey } }',
        { name },
        ADMIN_TOKEN,
      );
      if (res.errors) throw new Error(JSON.stringify(res.errors));
      return { id: res.data.createTenant.tenant.id, apiKey: res.data.createTenant.apiKey };
    },
    async metric(name, labels = {}) {
      const text = await (await fetch(`${url}/metrics`)).text();
      const wanted = Object.entries(labels).map(([label, value]) => `${label}="${value}"`);
      return [...text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))]
        .filter((m) => wanted.every((pair) => (m[1] ?? '').split(',').includes(pair)))
        .reduce((n, m) => n + Number(m[2]), 0);
    },
    wsClient(token, extra = {}) {
      return createClient({
        url: `${url.replace('http', 'ws')}/graphql`,
        webSocketImpl: WebSocket,
        connectionParams: token ? { authorization: `Bearer ${token}` } : {},
        retryAttempts: 0,
        lazy: false,
        onNonLazyError: () => {}, // the tests look at close codes themselves
        ...extra,
      });
    },
  };
}
