// Sends one attempt of one delivery: sign, POST, keep at most 4 KiB of the
// answer (and read no more than 64 KiB of it). Redirects are not followed; the target guard is applied to the
// address actually connected (see target-guard.ts).
//
// It speaks undici's dispatch API directly: an attempt is one handler object
// and one timer, with no response stream, promise chain or AbortSignal in
// between. Measured against `request()` with `AbortSignal.timeout` in a loop
// of POSTs on the benchmark machine, that takes a POST from about 65 to 46 µs
// of CPU, and sending is about half of a worker's own work per delivery.
import type { Dispatcher } from 'undici';
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

/** Why an attempt was cut short by us rather than by the network. */
class AttemptTimeout extends Error {}
class AnswerTooLong extends Error {}

interface Target {
  origin: string;
  path: string;
}

export class Sender {
  /** Parsed target URLs (a subscription's URL is parsed once, not per attempt). */
  private readonly targets = new Map<string, Target>();

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly timeoutMs: number,
  ) {}

  private target(url: string): Target {
    let target = this.targets.get(url);
    if (!target) {
      const parsed = new URL(url);
      // A bare `?` ends the URL with an empty query, which URL's `search` leaves out: sent as written.
      const search = parsed.search || (url.includes('?') ? '?' : '');
      target = { origin: parsed.origin, path: `${parsed.pathname}${search}` };
      if (this.targets.size >= 10_000) this.targets.clear();
      this.targets.set(url, target);
    }
    return target;
  }

  send(input: SendInput): Promise<SendResult> {
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
    let target: Target;
    try {
      target = this.target(input.url);
    } catch (error) {
      return Promise.resolve({ ok: false, statusCode: null, responseBody: null, durationMs: 0, error: describeError(error, this.timeoutMs) });
    }
    const timeoutMs = this.timeoutMs;

    return new Promise<SendResult>((resolve) => {
      let controller: Dispatcher.DispatchController | undefined;
      let settled = false;
      let statusCode = 0;
      let retryAfter: string | undefined;
      const chunks: Buffer[] = [];
      let kept = 0;
      let seen = 0;
      let ended = false; // the whole answer came (else it was cut by the timeout, or lost)

      const answered = (): SendResult => {
        const responseBody = kept ? storable(excerptText(Buffer.concat(chunks, kept), seen > kept || !ended)) : null;
        if (statusCode >= 200 && statusCode < 300) return { ok: true, statusCode, responseBody, durationMs: elapsed() };
        return {
          ok: false,
          statusCode,
          responseBody,
          durationMs: elapsed(),
          error: statusCode >= 300 && statusCode < 400 ? `HTTP ${statusCode} (redirects are not followed)` : `HTTP ${statusCode}`,
          retryAfter,
        };
      };
      const settle = (result: SendResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(result);
      };
      // The whole attempt, connection included, within the timeout.
      // Settled here whatever undici does next, so a slot can never wait on a request forever.
      // (Settled before the abort: undici reports an abort to onResponseError at once.)
      // A receiver that has given its status is answered, whatever its body still does:
      // a 2xx whose body is slow is a delivery made, not one to send again.
      // The timeout waits one turn of the event loop, for I/O: a process that stood still past
      // it (stopped, or starved of CPU) runs its expired timers before it reads its sockets,
      // and would take an answer that came meanwhile for a timeout.
      let expired = false; // the timeout has passed, its outcome judged a turn later
      const expire = () => {
        if (settled) return;
        settle(
          statusCode
            ? answered()
            : { ok: false, statusCode: null, responseBody: null, durationMs: elapsed(), error: `timeout after ${timeoutMs} ms` },
        );
        controller?.abort(new AttemptTimeout());
      };
      const timer = setTimeout(() => {
        expired = true;
        setImmediate(expire);
      }, timeoutMs);

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(ctl) {
          controller = ctl;
          // Timed out while connecting (or waiting for a connection): never send.
          if (settled) ctl.abort(new AttemptTimeout());
          else if (expired) expire();
        },
        onResponseStart(_ctl, code, responseHeaders) {
          if (code < 200) return; // 1xx: the final answer follows
          statusCode = code;
          const value = responseHeaders['retry-after'];
          retryAfter = Array.isArray(value) ? value[0] : value;
        },
        onResponseData(ctl, chunk) {
          seen += chunk.length;
          if (kept < RESPONSE_EXCERPT_BYTES) {
            const part = chunk.subarray(0, RESPONSE_EXCERPT_BYTES - kept);
            chunks.push(part);
            kept += part.length;
          }
          if (seen > DRAIN_LIMIT_BYTES) ctl.abort(new AnswerTooLong());
        },
        onResponseEnd() {
          ended = true;
          settle(answered());
        },
        onResponseError(_ctl, error) {
          // Once the receiver has given its status, that is its answer, whatever becomes of the
          // body (cut short by us, stalled, or the connection lost); before, a network error is
          // a failed attempt (a timeout has settled the attempt already).
          if (statusCode) return settle(answered());
          settle({ ok: false, statusCode: null, responseBody: null, durationMs: elapsed(), error: describeError(error, timeoutMs) });
        },
      };
      try {
        this.dispatcher.dispatch(
          {
            origin: target.origin,
            path: target.path,
            method: 'POST',
            headers,
            body: input.body,
            // Backstops under the attempt's own timer.
            headersTimeout: timeoutMs,
            bodyTimeout: timeoutMs,
          },
          handler,
        );
      } catch (error) {
        settle({ ok: false, statusCode: null, responseBody: null, durationMs: elapsed(), error: describeError(error, timeoutMs) });
      }
    });
  }
}

/**
 * The answer's first bytes as text. Cut (at RESPONSE_EXCERPT_BYTES, or by the timeout or a lost
 * connection), the cut may fall inside a character: its first bytes are left out (a streaming
 * decoder holds them back), not shown as U+FFFD, which the receiver never sent. Bytes that are
 * not UTF-8 elsewhere are U+FFFD; a byte order mark is kept, as in an answer read whole.
 */
function excerptText(bytes: Buffer, cut: boolean): string {
  return cut ? new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes, { stream: true }) : bytes.toString('utf8');
}

/**
 * Text as PostgreSQL can store it: a receiver's answer (or an error quoting one) may hold
 * NUL characters, which a text column refuses, and one refused value fails the whole
 * statement that records a batch of attempts.
 */
export function storable(text: string): string {
  return text.includes('\0') ? text.replaceAll('\0', '\uFFFD') : text;
}

function describeError(error: unknown, timeoutMs: number): string {
  return storable(describe(error, timeoutMs));
}

function describe(error: unknown, timeoutMs: number): string {
  const cause = (error as { cause?: unknown })?.cause;
  for (const candidate of [error, cause]) {
    if (candidate instanceof TargetRefusedError) return `refused: ${candidate.message}`;
  }
  const err = error as { code?: string; message?: string };
  if (err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') return `timeout after ${timeoutMs} ms`;
  const causeCode = (cause as { code?: string } | undefined)?.code;
  const code = err.code && err.code !== 'UND_ERR_SOCKET' ? err.code : (causeCode ?? err.code);
  const message = readable(err.message ?? String(error));
  return code ? `${code}: ${message}` : message;
}

/**
 * OpenSSL's error strings (`80CC…:error:0A00010B:SSL routines:ssl3_get_record:wrong version
 * number:../deps/openssl/…/ssl3_record.c:350:` and a line break) name its source files; the
 * reason is what the tenant can act on. Any message is trimmed.
 */
function readable(message: string): string {
  const openSsl = /^[0-9A-F]+:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):/.exec(message);
  return (openSsl ? openSsl[1]! : message).trim();
}
