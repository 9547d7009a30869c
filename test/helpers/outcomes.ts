// Outcomes of attempts as the dispatcher records them (dispatcher/queue.ts), for tests
// that call the record statement directly.
import type { AttemptOutcome } from '../../src/dispatcher/queue.js';

/** An attempt answered HTTP 500 just now, its next try a minute away. */
export function failedOutcome(claim: Pick<AttemptOutcome, 'deliveryId' | 'tenantId' | 'subscriptionId' | 'lease'>): AttemptOutcome {
  return {
    ...claim,
    status: 'PENDING',
    startedAt: new Date(),
    durationMs: 5,
    statusCode: 500,
    error: 'HTTP 500',
    responseBody: null,
    nextAttemptAt: new Date(Date.now() + 60_000),
    gone: false,
  };
}
