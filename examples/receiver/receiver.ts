// The guide's "Ejemplo 3: Verificar Webhooks en Cliente" in TypeScript, with
// node:http and no framework:
//   1. X-Signature over the raw body (WebhookSignature.verifyRaw): 400 when
//      missing, 401 when wrong, as in the guide;
//   2. the Standard Webhooks headers (StandardWebhookVerifier), whose
//      timestamp tolerance refuses old captured requests;
//   3. de-duplication by webhook-id, which is the same on every attempt of one
//      delivery (Hookline delivers at least once): an id is remembered once handled,
//      and a retry that comes while it is still being handled gets 503 with Retry-After;
//   4. invoice.created and payment.received handled, other events accepted.
// Each check passes with any of the secrets it is given: during a rotation, the new one and the
// old (X-Signature is made with the newest secret only, so a receiver knowing only the old one
// refuses every delivery from the rotation on).
//
//   WEBHOOK_SECRET=my-webhook-secret PORT=8080 npx tsx examples/receiver/receiver.ts
//   WEBHOOK_SECRET=the-new-secret WEBHOOK_PREVIOUS_SECRET=my-webhook-secret ... (a rotation)
//   → POST http://localhost:8080/webhooks/gestiqcloud
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { pathToFileURL } from 'node:url';
// In an app: import { StandardWebhookVerifier, WebhookSignature, WebhookVerificationError } from 'hookline';
import { StandardWebhookVerifier, WebhookSignature, WebhookVerificationError, type EventEnvelope } from '../../src/index.js';

export interface ReceivedEvent {
  webhookId: string;
  envelope: EventEnvelope;
}

export interface ReceiverOptions {
  /**
   * The subscription's secret (`whsec_...` or the one you chose); during a rotation, the secrets
   * to accept, e.g. `[newSecret, oldSecret]`: a request passes when each check passes with one of them.
   */
  secret: string | readonly string[];
  /** Called once per webhook-id after it was verified (a retry that comes while it runs gets 503); a throw answers 500, so Hookline retries. */
  onEvent?: (event: ReceivedEvent) => void | Promise<void>;
  /** Where lines like "Invoice created: ..." go; console.log by default. */
  log?: (line: string) => void;
  /** How far webhook-timestamp may be from now; 300 s by default. */
  toleranceSeconds?: number;
  /** How many webhook-ids to remember for de-duplication; 10 000 by default. */
  rememberIds?: number;
  path?: string;
}

const MAX_BODY_BYTES = 1024 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** webhook-ids already handled, forgetting the oldest beyond `cap` (a Set keeps insertion order). */
class SeenIds {
  private readonly ids = new Set<string>();
  constructor(private readonly cap: number) {}
  has(id: string) {
    return this.ids.has(id);
  }
  add(id: string) {
    this.ids.add(id);
    if (this.ids.size > this.cap) this.ids.delete(this.ids.values().next().value!);
  }
  delete(id: string) {
    this.ids.delete(id);
  }
}

async function rawBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'Body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The envelope, once the Standard Webhooks headers verify with one of the secrets; else the refusal (400 or 401). */
function verifyStandard(verifiers: StandardWebhookVerifier[], body: Buffer, headers: IncomingMessage['headers']): EventEnvelope {
  let refusal: WebhookVerificationError | undefined;
  for (const verifier of verifiers) {
    try {
      return verifier.verify<EventEnvelope>(body, headers);
    } catch (error) {
      if (!(error instanceof WebhookVerificationError)) throw error;
      refusal = error;
      // Missing headers, a bad timestamp or a body that is no JSON fail with every secret alike.
      if (error.reason !== 'NO_MATCHING_SIGNATURE') break;
    }
  }
  throw new HttpError(refusal!.reason === 'MISSING_HEADERS' || refusal!.reason === 'INVALID_PAYLOAD' ? 400 : 401, refusal!.message);
}

export function createReceiver(options: ReceiverOptions): Server {
  const { onEvent, log = console.log, path = '/webhooks/gestiqcloud' } = options;
  const secrets = typeof options.secret === 'string' ? [options.secret] : [...options.secret];
  if (!secrets.length || secrets.some((s) => typeof s !== 'string' || !s)) throw new Error('secret: give the subscription\'s secret (or, during a rotation, the new one and the old)');
  const verifiers = secrets.map((s) => new StandardWebhookVerifier(s, { toleranceSeconds: options.toleranceSeconds ?? 300 }));
  const seen = new SeenIds(options.rememberIds ?? 10_000);
  const handling = new Set<string>();

  const handlers: Record<string, (data: Record<string, any>) => void | Promise<void>> = {
    // The catalog requires only amount and customer: an invoice may come with neither number nor id.
    'invoice.created': (data) => log(`Invoice created: ${data.invoice_number ?? data.invoice_id ?? `(no number) for ${data.customer}`}`),
    'payment.received': (data) => log(`Payment received: ${data.amount}`),
  };

  async function receiveWebhook(req: IncomingMessage): Promise<{ status: string; duplicate?: true }> {
    // Get signature from header
    const signature = req.headers['x-signature'];
    if (typeof signature !== 'string' || !signature) throw new HttpError(400, 'Missing X-Signature header');

    // Get raw body: the exact bytes that were signed, never a re-serialised parse
    const body = await rawBody(req);

    // Verify signature (with any of the secrets: the old and the new during a rotation)
    if (!secrets.some((s) => WebhookSignature.verifyRaw(s, body, signature))) throw new HttpError(401, 'Invalid signature');

    // Verify the Standard Webhooks headers: same keys, plus the id and a timestamp within the tolerance
    const envelope = verifyStandard(verifiers, body, req.headers);

    // De-duplicate: a retried delivery carries the same webhook-id
    const webhookId = req.headers['webhook-id'] as string;
    if (seen.has(webhookId)) return { status: 'ok', duplicate: true };
    // A retry can come while the first attempt is still being handled (it timed out on Hookline's
    // side): it is not done yet, and may still fail, so the retry is answered with a non-2xx and
    // Hookline tries again later. An id is remembered as seen only once it was handled.
    // 503 and Retry-After, which Hookline reads (as it reads a 429's): the next attempt comes after it.
    if (handling.has(webhookId)) throw new HttpError(503, 'Still handling this webhook-id', { 'retry-after': '5' });
    handling.add(webhookId);
    try {
      // Handle event
      await handlers[envelope.event]?.(envelope.data);
      await onEvent?.({ webhookId, envelope });
    } finally {
      handling.delete(webhookId);
    }
    seen.add(webhookId);
    return { status: 'ok' };
  }

  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== path) return reply(res, 404, { detail: 'Not found' });
    if (req.method !== 'POST') return reply(res, 405, { detail: 'Method not allowed' });
    receiveWebhook(req).then(
      (answer) => reply(res, 200, answer),
      (error: unknown) => {
        if (error instanceof HttpError) return reply(res, error.status, { detail: error.message }, error.headers);
        console.error('webhook handling failed', error);
        reply(res, 500, { detail: 'Internal error' });
      },
    );
  });
}

function main() {
  const secret = process.env.WEBHOOK_SECRET;
  if (!secret) throw new Error('set WEBHOOK_SECRET to the subscription\'s secret');
  // During a rotation: the secret being replaced, accepted beside WEBHOOK_SECRET (see the README).
  const previous = process.env.WEBHOOK_PREVIOUS_SECRET;
  const port = Number(process.env.PORT ?? 8080);
  const server = createReceiver({ secret: previous ? [secret, previous] : secret });
  server.listen(port, () => console.log(`Receiving webhooks on http://localhost:${port}/webhooks/gestiqcloud`));
  const stop = () => server.close(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
