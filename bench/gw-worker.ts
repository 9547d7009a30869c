// The baseline: graphile-worker doing Hookline's job, in a process of its own
// (like Hookline's worker). Its one task signs the webhook body carried in the
// job's payload with buildSignedHeaders (Standard Webhooks + X-Signature, the
// same function Hookline uses) and POSTs it with undici over a keep-alive pool
// to the receiver; a non-2xx answer throws, so graphile-worker retries it.
//
// Environment: DATABASE_URL, RECEIVER_URL, GW_CONCURRENCY, GW_POOL_SIZE,
// WEBHOOK_SECRET; GW_POLL_INTERVAL (ms) is left at graphile-worker's default
// unless set.
import { run, type Logger as GwLogger } from 'graphile-worker';
import { Logger } from 'graphile-worker';
import { Agent, request } from 'undici';
import { buildSignedHeaders, decodeSecrets } from '../src/signing/standard-webhooks.js';

const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const receiverUrl = env('RECEIVER_URL');
const concurrency = Number(env('GW_CONCURRENCY'));
const keys = decodeSecrets([env('WEBHOOK_SECRET')]);
const agent = new Agent({ connections: 32, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 120_000 });

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
      const headers = buildSignedHeaders({
        deliveryId: payload.id,
        eventName: payload.event,
        webhookId: payload.id,
        timestamp: Math.floor(Date.now() / 1000),
        body: payload.body,
        keys,
      });
      const response = await request(receiverUrl, {
        method: 'POST',
        headers: { ...headers, 'user-agent': 'graphile-bench/1' },
        body: payload.body,
        dispatcher: agent,
        signal: AbortSignal.timeout(15_000),
      });
      await response.body.dump();
      if (response.statusCode < 200 || response.statusCode >= 300) throw new Error(`HTTP ${response.statusCode}`);
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
