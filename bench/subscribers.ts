// Live-subscriber clients for the benchmark, in a process of their own so
// their JavaScript does not run in the API process (it still shares the
// machine's cores). Forked by bench/run.ts with an IPC channel: it opens N
// graphql-ws connections (API key as connection parameter), subscribes each
// to deliveryUpdated, and records when each client received each
// (delivery id, status) update, on the shared clock (performance.timeOrigin +
// performance.now()).
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import type { SubscribersReply, SubscribersRequest } from './protocol.js';

const now = () => performance.timeOrigin + performance.now();

// Only fields a live snapshot carries, so no update makes the API load anything.
const QUERY = `subscription { deliveryUpdated { id event status attempts lastError lastStatusCode nextAttemptAt updatedAt } }`;

interface Seen {
  count: number;
  first: number;
  last: number;
}

const seen = new Map<string, Seen>();
const clients: Client[] = [];
const errors: string[] = [];
type Waiter = () => boolean;
const waiters = new Set<Waiter>();

function send(reply: SubscribersReply): void {
  process.send?.(reply);
}

function record(id: string, status: string): void {
  const t = now();
  const key = `${id}:${status}`;
  const s = seen.get(key);
  if (s) {
    s.count++;
    s.last = t;
  } else {
    seen.set(key, { count: 1, first: t, last: t });
  }
  if (waiters.size) for (const w of waiters) if (w()) waiters.delete(w);
}

function connectOne(url: string, token: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not connected within ${timeoutMs} ms`)), timeoutMs);
    const client = createClient({
      url,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      lazy: false,
      retryAttempts: 0,
      keepAlive: 0,
      onNonLazyError: (error) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(`connection failed: ${String((error as { reason?: string })?.reason ?? error)}`));
      },
      on: {
        connected: () => {
          clearTimeout(timer);
          resolve();
        },
      },
    });
    clients.push(client);
    client.subscribe<{ deliveryUpdated: { id: string; status: string } }>(
      { query: QUERY },
      {
        next: (value) => {
          const d = value.data?.deliveryUpdated;
          if (d) record(d.id, d.status);
          else if (value.errors && errors.length < 20) errors.push(JSON.stringify(value.errors));
        },
        error: (error) => {
          if (errors.length < 20) errors.push(String((error as { reason?: string })?.reason ?? (error as Error)?.message ?? error));
        },
        complete: () => {},
      },
    );
  });
}

process.on('message', async (message: SubscribersRequest) => {
  switch (message.type) {
    case 'connect': {
      let connected = 0;
      let next = 0;
      const worker = async () => {
        while (next < message.clients) {
          next++;
          try {
            await connectOne(message.url, message.token, message.timeoutMs);
            connected++;
          } catch (error) {
            if (errors.length < 20) errors.push((error as Error).message);
          }
        }
      };
      await Promise.all(Array.from({ length: message.parallel }, worker));
      send({ type: 'reply', seq: message.seq, count: connected, errors: errors.splice(0) });
      return;
    }
    case 'await': {
      // Replies when every client received (deliveryId, status), or at the deadline.
      const key = `${message.deliveryId}:${message.status}`;
      const deadline = now() + message.timeoutMs;
      const check: Waiter = () => {
        const s = seen.get(key);
        const done = (s?.count ?? 0) >= clients.length;
        if (done || now() >= deadline) {
          clearTimeout(timer);
          send({ type: 'reply', seq: message.seq, count: s?.count ?? 0, first: s?.first, last: s?.last, timedOut: !done, errors: errors.splice(0) });
          seen.delete(key);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => check() && waiters.delete(check), message.timeoutMs + 5);
      if (!check()) waiters.add(check);
      return;
    }
    case 'close': {
      await Promise.all(clients.map((c) => c.dispose()));
      send({ type: 'reply', seq: message.seq, count: clients.length });
      clients.length = 0;
      return;
    }
  }
});

process.on('disconnect', () => process.exit(0));
send({ type: 'started', pid: process.pid });
