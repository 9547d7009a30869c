// The baseline: graphile-worker doing Hookline's job, in a process of its own
// (like Hookline's worker). Its one task signs and POSTs the webhook body
// carried in the job's payload with Hookline's own Sender and the dispatcher's
// own Agent (deliveryAgent: the same signing, keep-alive pool, connection limits
// and timeout), so the two differ only in their queues; a non-2xx answer throws,
// so graphile-worker retries it.
//
// Environment: DATABASE_URL, RECEIVER_URL, GW_CONCURRENCY, GW_POOL_SIZE,
// WEBHOOK_SECRET; GW_LOCAL_QUEUE (a size: graphile-worker 0.17's local queue and
// batched completions, its documented set-up for throughput); GW_POLL_INTERVAL
// (ms) is left at graphile-worker's default unless set.
import { run, type Logger as GwLogger } from 'graphile-worker';
import { Logger } from 'graphile-worker';
import { Sender } from '../src/dispatcher/sender.js';
import { deliveryAgent } from '../src/dispatcher/target-guard.js';
import { decodeSecrets } from '../src/signing/standard-webhooks.js';

const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const receiverUrl = env('RECEIVER_URL');
const concurrency = Number(env('GW_CONCURRENCY'));
const keys = decodeSecrets([env('WEBHOOK_SECRET')]);
const sender = new Sender(deliveryAgent(true, 15_000), 15_000);
const localQueue = Number(process.env.GW_LOCAL_QUEUE ?? 0);

interface Payload {
  id: string;
  event: string;
  body: string;
}

const quiet: GwLogger = new Logger(() => (level: string, message: string) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`graphile-worker ${level}: ${message}\n`);
});

const runner = await run({
  connectionString: env('DATABASE_URL'),
  concurrency,
  maxPoolSize: Number(env('GW_POOL_SIZE')),
  ...(process.env.GW_POLL_INTERVAL ? { pollInterval: Number(process.env.GW_POLL_INTERVAL) } : {}),
  // https://worker.graphile.org/docs/performance: jobs fetched in batches into a local queue,
  // and completions (and failures) written in batches.
  ...(localQueue > 0 ? { preset: { worker: { localQueue: { size: localQueue }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } } : {}),
  noHandleSignals: true,
  logger: quiet,
  taskList: {
    async send(raw) {
      const payload = raw as Payload;
      const result = await sender.send({ deliveryId: payload.id, event: payload.event, url: receiverUrl, body: payload.body, keys, headers: null });
      if (!result.ok) throw new Error(result.error);
    },
  },
});

process.send?.({ type: 'started', pid: process.pid });

const stop = () => {
  runner.stop().finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', () => process.exit(0));
await runner.promise;
