// Prometheus metrics of one process, served at /metrics by every role.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'hookline_' });
  return {
    registry,
    attempts: new Counter({
      name: 'hookline_delivery_attempts_total',
      help: 'HTTP delivery attempts, by outcome (success, failure).',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    attemptDuration: new Histogram({
      name: 'hookline_delivery_attempt_duration_seconds',
      help: 'Duration of HTTP delivery attempts.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    inFlight: new Gauge({
      name: 'hookline_deliveries_in_flight',
      help: 'Deliveries being sent by this process right now.',
      registers: [registry],
    }),
    slowInFlight: new Gauge({
      name: 'hookline_deliveries_slow_in_flight',
      help: 'Deliveries being sent by this process that have waited over a second (or half the delivery timeout) for their answer, and gave their slot back.',
      registers: [registry],
    }),
    claims: new Counter({
      name: 'hookline_queue_claims_total',
      help: 'Claims of due deliveries by this process\'s dispatcher, by whether they found any (found, empty).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    handOffs: new Counter({
      name: 'hookline_deliveries_handed_off_total',
      help: 'Deliveries claimed by the insert that created them, for this process\'s dispatcher, and sent without a claim.',
      registers: [registry],
    }),
    eventsTriggered: new Counter({
      name: 'hookline_events_triggered_total',
      help: 'Events accepted (duplicates excluded).',
      registers: [registry],
    }),
    liveClients: new Gauge({
      name: 'hookline_live_subscriptions',
      help: 'Live deliveryUpdated subscriptions connected to this process.',
      registers: [registry],
    }),
    retentionDeleted: new Counter({
      name: 'hookline_retention_deleted_total',
      help: 'Events, and their deliveries, deleted past HOOKLINE_RETENTION by this process, by kind (events, deliveries).',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    liveUpdatesAhead: new Gauge({
      name: 'hookline_live_updates_ahead',
      help: 'Live updates executed (or executing) for subscribers whose clients have not read them yet.',
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
