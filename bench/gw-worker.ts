// The baseline: graphile-worker doing Hookline's job, in a process of its own
// (like Hookline's worker). Its one task signs and POSTs the webhook body
// carried in the job's payload with Hookline's own Sender (the same signing,
// undici keep-alive pool and timeout as Hookline's dispatcher), so the two
// differ only in their queues; a non-2xx answer throws, so graphile-worker
// retries it.
//
// Environment: DATABASE_URL, RECEIVER_URL, GW_CONCURRENCY, GW_POOL_SIZE,
// WEBHOOK_SECRET; GW_POLL_INTERVAL (ms) is left at graphile-worker's default
// unless set.
import { run, type Logger as GwLogger } from 'graphile-worker';
import { Logger } from 'graphile-worker';
import { Agent } from 'undici';
import { Sender } from '../src/dispatcher/sender.js';
import { decodeSecrets } from '../src/signing/standard-webhooks.js';

const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const receiverUrl = env('RECEIVER_URL');
const concurrency = Number(env('GW_CONCURRENCY'));
const keys = decodeSecrets([env('WEBHOOK_SECRET')]);
const agent = new Agent({ connections: 32, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 120_000 });
const sender = new Sender(agent, 15_000);

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
