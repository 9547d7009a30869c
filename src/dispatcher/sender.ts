// Sends one attempt of one delivery: sign, POST, read at most 4 KiB of the
// answer. Redirects are not followed; the target guard is applied to the
// address actually connected (see target-guard.ts).
import type { Dispatcher } from 'undici';
import { request } from 'undici';
import { buildSignedHeaders } from '../signing/standard-webhooks.js';
import { TargetRefusedError } from './target-guard.js';

export const RESPONSE_EXCERPT_BYTES = 4096;
/** Beyond this much answer we stop reading and drop the connection. */
const DRAIN_LIMIT_BYTES = 64 * 1024;

export interface SendInput {
  deliveryId: string;
  event: string;
  url: string;
  body: string;
  keys: readonly Buffer[];
  headers: Record<string, string> | null;
}

export type SendResult =
  | { ok: true; statusCode: number; responseBody: string | null; durationMs: number }
  | {
      ok: false;
      statusCode: number | null;
      responseBody: string | null;
      durationMs: number;
      error: string;
      retryAfter?: string;
    };

export class Sender {
  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly timeoutMs: number,
  ) {}

  async send(input: SendInput): Promise<SendResult> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    const signed = buildSignedHeaders({
      deliveryId: input.deliveryId,
      eventName: input.event,
      webhookId: input.deliveryId,
      timestamp: Math.floor(Date.now() / 1000),
      body: input.body,
      keys: input.keys,
    });
    const headers = input.headers ? { ...input.headers, ...signed, 'user-agent': 'Hookline/1' } : { ...signed, 'user-agent': 'Hookline/1' };
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      const response = await request(input.url, {
        method: 'POST',
        headers,
        body: input.body,
        dispatcher: this.dispatcher,
        signal, // undici's request() never follows redirects: a 3xx is a failed attempt
      });
      const responseBody = await readExcerpt(response.body);
      const statusCode = response.statusCode;
      if (statusCode >= 200 && statusCode < 300) return { ok: true, statusCode, responseBody, durationMs: elapsed() };
      const retryAfter = response.headers['retry-after'];
      return {
        ok: false,
        statusCode,
        responseBody,
        durationMs: elapsed(),
        error: statusCode >= 300 && statusCode < 400 ? `HTTP ${statusCode} (redirects are not followed)` : `HTTP ${statusCode}`,
        retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
      };
    } catch (error) {
      return { ok: false, statusCode: null, responseBody: null, durationMs: elapsed(), error: describeError(error, signal, this.timeoutMs) };
    }
  }
}

async function readExcerpt(body: Dispatcher.ResponseData['body']): Promise<string | null> {
  const chunks: Buffer[] = [];
  let kept = 0;
  let seen = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    seen += buffer.length;
    if (kept < RESPONSE_EXCERPT_BYTES) {
      const part = buffer.subarray(0, RESPONSE_EXCERPT_BYTES - kept);
      chunks.push(part);
      kept += part.length;
    }
    if (seen > DRAIN_LIMIT_BYTES) {
      body.destroy();
      break;
    }
  }
  if (!kept) return null;
  return Buffer.concat(chunks, kept).toString('utf8');
}

function describeError(error: unknown, signal: AbortSignal, timeoutMs: number): string {
  if (signal.aborted) return `timeout after ${timeoutMs} ms`;
  const cause = (error as { cause?: unknown })?.cause;
  for (const candidate of [error, cause]) {
    if (candidate instanceof TargetRefusedError) return `refused: ${candidate.message}`;
  }
  const err = error as { code?: string; message?: string };
  const causeCode = (cause as { code?: string } | undefined)?.code;
  const code = err.code && err.code !== 'UND_ERR_SOCKET' ? err.code : (causeCode ?? err.code);
  return code ? `${code}: ${err.message ?? String(error)}` : (err.message ?? String(error));
}
