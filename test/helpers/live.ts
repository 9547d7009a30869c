import type { Client } from 'graphql-ws';
import { afterAll, beforeAll } from 'vitest';
import type { Hookline } from '../../src/hookline.js';
import { startTestHookline, type TestHookline } from './hookline.js';
import { startReceiver, type Receiver } from './receiver.js';

export const DELIVERY_UPDATED = `subscription DeliveryUpdated($event: String, $subscriptionId: ID, $deliveryId: ID, $status: DeliveryStatus) {
  deliveryUpdated(event: $event, subscriptionId: $subscriptionId, deliveryId: $deliveryId, status: $status) {
    id event status attempts lastError lastStatusCode nextAttemptAt updatedAt
    subscription { id }
  }
}`;

export interface Collected<T = any> {
  items: T[];
  errors: unknown[];
  closed: boolean;
  waitFor(predicate: (items: T[]) => boolean, timeoutMs?: number): Promise<T[]>;
  stop(): void;
}

function collector<T>(): Collected<T> & { wake(): void } {
  const waiters = new Set<() => void>();
  const c = {
    items: [] as T[],
    errors: [] as unknown[],
    closed: false,
    wake() {
      for (const w of waiters) w();
    },
    async waitFor(predicate: (items: T[]) => boolean, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(c.items)) {
        if (Date.now() > deadline) throw new Error(`live updates not as expected after ${timeoutMs} ms: ${JSON.stringify(c.items)}`);
        await new Promise<void>((resolve) => {
          waiters.add(resolve);
          setTimeout(resolve, 50);
        });
      }
      return c.items;
    },
    stop: () => {},
  };
  return c;
}

/** Subscribes over graphql-ws and collects every deliveryUpdated payload (of DELIVERY_UPDATED, or `query`). */
export function collectWs(client: Client, variables: Record<string, unknown> = {}, query = DELIVERY_UPDATED): Collected {
  const c = collector<any>();
  c.stop = client.subscribe(
    { query, variables },
    {
      next: (value: any) => {
        if (value.errors) c.errors.push(value.errors);
        if (value.data) c.items.push(value.data.deliveryUpdated);
        c.wake();
      },
      error: (error) => {
        c.errors.push(error);
        c.closed = true;
        c.wake();
      },
      complete: () => {
        c.closed = true;
        c.wake();
      },
    },
  );
  return c;
}

/** Subscribes over Server-Sent Events (Authorization header) and collects payloads. */
export function collectSse(url: string, token: string, variables: Record<string, unknown> = {}, query = DELIVERY_UPDATED): Collected & { ready: Promise<void> } {
  const c = collector<any>();
  const abort = new AbortController();
  c.stop = () => abort.abort();
  const ready = (async () => {
    const res = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
      signal: abort.signal,
    });
    if (!res.ok || !res.body) throw new Error(`SSE answered ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      let buffer = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1];
            const data = block
              .split('\n')
              .filter((l) => l.startsWith('data: '))
              .map((l) => l.slice(6))
              .join('\n');
            if (event === 'next' && data) {
              const payload = JSON.parse(data);
              if (payload.errors) c.errors.push(payload.errors);
              if (payload.data) c.items.push(payload.data.deliveryUpdated);
            }
            if (event === 'complete') c.closed = true;
            c.wake();
          }
        }
      } catch (error) {
        if (!abort.signal.aborted) c.errors.push(error);
      }
      c.closed = true;
      c.wake();
    })();
  })();
  return Object.assign(c, { ready });
}

/** The statuses seen for one delivery, in order. */
export const statusesOf = (items: any[], id: string) => items.filter((i) => i.id === id).map((i) => `${i.status}:${i.attempts}`);

/**
 * Call before subscribing `n` times to deliveryUpdated of an in-process Hookline; the returned
 * function resolves once those subscriptions hear updates (a fixed wait is not enough on a busy
 * machine: setting one up may wait for transactions open since before).
 */
export function moreSubscribers(hl: Pick<Hookline, 'services'>, n = 1, timeoutMs = 15_000): () => Promise<void> {
  const target = hl.services.live!.target;
  const wanted = target.listenersAdded + n;
  return async () => {
    const deadline = Date.now() + timeoutMs;
    while (target.listenersAdded < wanted) {
      if (Date.now() > deadline) throw new Error(`${n} more live subscribers expected within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
}

/**
 * For a test file: an `api` process (no dispatcher, so deliveries change only as the test
 * changes them) whose live subscribers may have `buffer` updates waiting, and a receiver;
 * both started before the file's tests and stopped after them.
 */
export function apiWithLiveBuffer(buffer: number): { hl: TestHookline; receiver: Receiver } {
  return hooklineAndReceiver({ HOOKLINE_ROLE: 'api', HOOKLINE_LIVE_BUFFER: String(buffer) });
}

/** For a test file: a Hookline (with `env`) and a receiver, started before its tests and stopped after them. */
export function hooklineAndReceiver(env: Record<string, string> = {}): { hl: TestHookline; receiver: Receiver } {
  const fixture = {} as { hl: TestHookline; receiver: Receiver };
  beforeAll(async () => {
    fixture.hl = await startTestHookline(env);
    fixture.receiver = await startReceiver();
  });
  afterAll(async () => {
    await fixture.hl?.stop();
    await fixture.receiver?.close();
  });
  return fixture;
}
