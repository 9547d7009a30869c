// The benchmark's webhook receiver, in a process of its own (forked by
// bench/run.ts with an IPC channel): a plain node:http server on 127.0.0.1
// that answers 204 to every POST and records when each webhook-id first
// arrived. The parent asks it for counts and arrival times over IPC.
//
// Arrival time = when the request's headers were parsed (the 'request'
// event), on the clock shared by every benchmark process: performance.timeOrigin +
// performance.now() (wall-clock based, sub-millisecond).
import { createServer } from 'node:http';
import { StandardWebhookVerifier } from '../src/signing/standard-webhooks.js';
import type { ReceiverReply, ReceiverRequest } from './protocol.js';

// Every VERIFY_EVERY-th request's signature is checked (all senders sign with WEBHOOK_SECRET).
const VERIFY_EVERY = 50;
const verifier = process.env.WEBHOOK_SECRET ? new StandardWebhookVerifier(process.env.WEBHOOK_SECRET) : undefined;

const now = () => performance.timeOrigin + performance.now();

let count = 0; // requests
let duplicates = 0; // requests whose webhook-id had arrived before
let unsigned = 0; // requests without webhook-signature
let verified = 0; // sampled requests whose signature checked out
let badSignatures = 0; // sampled requests whose signature did not
let bytes = 0;
let first = 0;
let last = 0;
let arrivals = new Map<string, number>();

type Waiter = { check(): boolean };
const waiters = new Set<Waiter>();

const server = createServer((req, res) => {
  const t = now();
  count++;
  if (!first) first = t;
  last = t;
  const id = req.headers['webhook-id'];
  if (typeof id === 'string') {
    if (arrivals.has(id)) duplicates++;
    else arrivals.set(id, t);
  }
  if (!req.headers['webhook-signature']) unsigned++;
  // A receiver that takes the request and never answers (the isolation part's broken endpoint).
  if (req.url?.startsWith('/hang/')) {
    req.resume();
    if (waiters.size) for (const w of waiters) if (w.check()) waiters.delete(w);
    return;
  }
  const check = verifier && count % VERIFY_EVERY === 1;
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (check) chunks.push(chunk);
  });
  req.on('end', () => {
    if (check) {
      try {
        verifier.verifySignature(Buffer.concat(chunks), req.headers);
        verified++;
      } catch {
        badSignatures++;
      }
    }
    res.writeHead(204);
    res.end();
  });
  if (waiters.size) for (const w of waiters) if (w.check()) waiters.delete(w);
});
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
server.maxRequestsPerSocket = 0;

function stats() {
  return { count, distinct: arrivals.size, duplicates, unsigned, verified, badSignatures, bytes, first, last };
}

function send(reply: ReceiverReply): void {
  process.send?.(reply);
}

process.on('message', (message: ReceiverRequest) => {
  switch (message.type) {
    case 'reset':
      count = duplicates = unsigned = verified = badSignatures = bytes = first = last = 0;
      arrivals = new Map();
      send({ type: 'reply', seq: message.seq, stats: stats() });
      return;
    case 'stats':
      send({ type: 'reply', seq: message.seq, stats: stats() });
      return;
    case 'waitCount': {
      // Resolves when `count` distinct webhook-ids have arrived, or at the deadline.
      const deadline = now() + message.timeoutMs;
      const waiter: Waiter = {
        check() {
          if (arrivals.size >= message.count || now() >= deadline) {
            clearTimeout(timer);
            send({ type: 'reply', seq: message.seq, stats: stats(), timedOut: arrivals.size < message.count });
            return true;
          }
          return false;
        },
      };
      const timer = setTimeout(() => waiter.check() && waiters.delete(waiter), message.timeoutMs + 5);
      if (!waiter.check()) waiters.add(waiter);
      return;
    }
    case 'waitIds': {
      // Resolves with the arrival time of each id once all have arrived (NaN for those that did not in time).
      const deadline = now() + message.timeoutMs;
      const reply = (timedOut: boolean) =>
        send({ type: 'reply', seq: message.seq, stats: stats(), times: message.ids.map((id) => arrivals.get(id) ?? NaN), timedOut });
      const waiter: Waiter = {
        check() {
          const all = message.ids.every((id) => arrivals.has(id));
          if (all || now() >= deadline) {
            clearTimeout(timer);
            reply(!all);
            return true;
          }
          return false;
        },
      };
      const timer = setTimeout(() => waiter.check() && waiters.delete(waiter), message.timeoutMs + 5);
      if (!waiter.check()) waiters.add(waiter);
      return;
    }
  }
});

// The parent going away (even by SIGKILL) closes the IPC channel: leave with it.
process.on('disconnect', () => process.exit(0));

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  send({ type: 'listening', port, pid: process.pid });
});
