// An EventTarget fed by PostgreSQL LISTEN/NOTIFY, for Yoga's createPubSub:
// notifications of any process reach the subscribers of this one, with no
// server besides PostgreSQL. Each channel has a route that turns a payload
// into (topic, detail) events, parsed once however many subscribe.
import pg from 'pg';
import pRetry from 'p-retry';
import type { Logger } from '../logger.js';

export type Route = (payload: string) => Iterable<[topic: string, detail: unknown]>;

type Listener = EventListenerOrEventListenerObject;

export class PostgresEventTarget implements EventTarget {
  private readonly listeners = new Map<string, Set<Listener>>();
  private client: pg.Client | undefined;
  private closed = false;
  private connecting: Promise<void> | undefined;
  /** Called each time the LISTEN connection is (re)established. */
  onConnect: () => void = () => {};

  /** True while notifications are being heard. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  constructor(
    private readonly databaseUrl: string,
    private readonly routes: Record<string, Route>,
    private readonly log: Logger,
  ) {}

  /** Connects and LISTENs to every routed channel; reconnects by itself after a loss. */
  start(): Promise<void> {
    return (this.connecting ??= this.connect().finally(() => (this.connecting = undefined)));
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: 'hookline-live' });
    client.on('notification', (message) => this.deliver(message.channel, message.payload ?? ''));
    const lost = (error?: Error) => {
      if (this.client !== client || this.closed) return;
      this.client = undefined;
      this.log.warn({ err: error }, 'live updates: LISTEN connection lost; reconnecting');
      client.removeAllListeners('notification');
      void pRetry(() => this.start(), {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 200,
        maxTimeout: 5_000,
        shouldRetry: () => !this.closed,
      }).catch(() => {});
    };
    client.on('error', lost);
    client.on('end', () => lost());
    await client.connect();
    for (const channel of Object.keys(this.routes)) await client.query(`listen ${pg.escapeIdentifier(channel)}`);
    if (this.closed) {
      await client.end();
      return;
    }
    this.client = client;
    this.onConnect();
  }

  private deliver(channel: string, payload: string): void {
    const route = this.routes[channel];
    if (!route) return;
    let events: Iterable<[string, unknown]>;
    try {
      events = route(payload);
    } catch (error) {
      this.log.error({ err: error, channel }, 'live updates: unreadable notification');
      return;
    }
    for (const [topic, detail] of events) {
      const listeners = this.listeners.get(topic);
      if (!listeners) continue;
      const event = new CustomEvent(topic, { detail });
      for (const listener of listeners) {
        if (typeof listener === 'function') listener(event);
        else listener.handleEvent(event);
      }
    }
  }

  addEventListener(type: string, listener: Listener | null): void {
    if (!listener) return;
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
  }

  removeEventListener(type: string, listener: Listener | null): void {
    if (!listener) return;
    const set = this.listeners.get(type);
    if (!set) return;
    set.delete(listener);
    if (!set.size) this.listeners.delete(type);
  }

  /** Local publish (Yoga's pubSub.publish); cross-process events come from NOTIFY. */
  dispatchEvent(event: Event): boolean {
    const listeners = this.listeners.get(event.type);
    for (const listener of listeners ?? []) {
      if (typeof listener === 'function') listener(event);
      else listener.handleEvent(event);
    }
    return true;
  }

  /** Topics with at least one listener (tests check that none leak). */
  get listenerCount(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connecting?.catch(() => {});
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }
}
