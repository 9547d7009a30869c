// Prometheus metrics of one process, served at /metrics by every role.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Why an attempt failed, as hookline_delivery_failures_total counts it: a bounded set. */
export const FAILURE_REASONS = ['status_4xx', 'status_429', 'status_5xx', 'status_other', 'timeout', 'connection', 'other'] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

/** The reason of a failed attempt: its answer's status class, or what kept it from one. */
export function failureReason(statusCode: number | null, error: string): FailureReason {
  if (statusCode !== null) {
    if (statusCode === 429) return 'status_429';
    if (statusCode >= 500 && statusCode < 600) return 'status_5xx';
    if (statusCode >= 400 && statusCode < 500) return 'status_4xx';
    return 'status_other';
  }
  if (error.startsWith('timeout')) return 'timeout';
  // Not sent (a stored secret unusable), or no event body: Hookline's own.
  if (error.startsWith('not sent') || error === 'event body missing') return 'other';
  return 'connection'; // refused, reset, DNS, TLS, an address refused by the target guard
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'hookline_' });
  const metrics = {
    registry,
    attempts: new Counter({
      name: 'hookline_delivery_attempts_total',
      help: 'HTTP delivery attempts, by outcome (success, failure).',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    failures: new Counter({
      name: 'hookline_delivery_failures_total',
      help: `Failed delivery attempts, by reason (${FAILURE_REASONS.join(', ')}): the receiver's answers apart from what kept the request from being answered.`,
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    attemptDuration: new Histogram({
      name: 'hookline_delivery_attempt_duration_seconds',
      help: 'Duration of HTTP delivery attempts.',
      // Up to HOOKLINE_DELIVERY_TIMEOUT's longest, 5 minutes.
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
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
    liveCutOff: new Counter({
      name: 'hookline_live_subscriptions_cut_off_total',
      help: 'Live deliveryUpdated subscriptions this process ended because their client stopped reading (RATE_LIMITED, WebSocket close 4429).',
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'hookline_requests_rate_limited_total',
      help: 'Requests refused by the request rate limits of this process, by limit: api_key (HOOKLINE_RATE_LIMIT), address (HOOKLINE_RATE_LIMIT_ANONYMOUS: requests without a valid key, key lookups, WebSocket connections). Not the limits on live subscriptions or schema checks, which answer RATE_LIMITED too.',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    liveUpdatesAhead: new Gauge({
      name: 'hookline_live_updates_ahead',
      help: 'Live updates executed (or executing) for subscribers whose clients have not read them yet.',
      registers: [registry],
    }),
  };
  // Every series of a labelled counter from the start, at 0: Prometheus's increase() and rate()
  // take a series' first sample as its base, so one born at 1 would hide that first increment.
  for (const outcome of ['success', 'failure']) metrics.attempts.inc({ outcome }, 0);
  for (const reason of FAILURE_REASONS) metrics.failures.inc({ reason }, 0);
  for (const result of ['found', 'empty']) metrics.claims.inc({ result }, 0);
  for (const kind of ['events', 'deliveries']) metrics.retentionDeleted.inc({ kind }, 0);
  for (const limit of ['api_key', 'address']) metrics.rateLimited.inc({ limit }, 0);
  return metrics;
}
export type Metrics = ReturnType<typeof createMetrics>;
