import type { IncomingMessage } from 'node:http';
import { ErrorCode, HooklineError } from '../errors.js';

export const MAX_BODY_BYTES = 1024 * 1024; // 1 MiB, as in the contract

export class BodyTooLargeError extends Error {
  constructor() {
    super(`request body is larger than ${MAX_BODY_BYTES} bytes`);
  }
}

/**
 * Reads a request body, refusing more than MAX_BODY_BYTES whatever the headers claim.
 * With listeners rather than the stream's async iterator: this is on every request.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const encoding = req.headers['content-encoding']?.trim().toLowerCase();
  if (encoding && encoding !== 'identity') return Promise.reject(new BodyEncodedError(encoding));
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLargeError());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done();
        reject(new BodyTooLargeError());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      done();
      reject(error);
    };
    const onClose = () => {
      done();
      reject(Object.assign(new Error('the client went away before the request body ended'), { code: 'ECONNRESET' }));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * A body sent compressed (Content-Encoding): refused with 415, where it was read as it came, so
 * gzip's bytes were "not valid UTF-8" and a plain body labelled gzip was taken as it was.
 */
export class BodyEncodedError extends HooklineError {
  constructor(encoding: string) {
    super(ErrorCode.BAD_USER_INPUT, `Content-Encoding ${encoding.slice(0, 100)} is not supported: send the request body uncompressed`);
  }
}

/** A body whose bytes are not UTF-8: refused (BAD_USER_INPUT), where decoding would put U+FFFD in their place. */
export class BodyNotUtf8Error extends HooklineError {
  constructor(message = 'the request body is not valid UTF-8') {
    super(ErrorCode.BAD_USER_INPUT, message);
  }
}

// Fatal: a lenient decoder (Buffer#toString) turns invalid bytes into U+FFFD, which was then
// stored, signed and delivered as if the client had sent it. Reused: without `stream`, each
// decode() starts afresh. A leading byte order mark is dropped, as RFC 8259 allows.
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A request body's text. JSON is UTF-8 (RFC 8259 defines no charset parameter for it), so a
 * content type's `charset` changes nothing: the bytes are UTF-8 or the body is refused.
 */
export function bodyText(body: Buffer): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new BodyNotUtf8Error();
  }
}

/**
 * Refuses a form body (`application/x-www-form-urlencoded`, which GraphQL over HTTP takes too)
 * whose percent-encoded bytes are not UTF-8: its text is ASCII, so bodyText() passes it, and
 * the parser's URLSearchParams would put U+FFFD in their place (`secret=...%FF...`).
 */
export function checkFormUtf8(text: string, what = "the request body's"): void {
  if (!text.includes('%')) return;
  // Each run of escapes on its own: what lies between is whole characters (the text is UTF-8),
  // so a character split across a run's end is invalid either way. A `%` not followed by two
  // hex digits stays as it is, as URLSearchParams leaves it ("50% off").
  for (const [run] of text.matchAll(PERCENT_ESCAPES)) {
    try {
      utf8.decode(Buffer.from(run.replaceAll('%', ''), 'hex'));
    } catch {
      throw new BodyNotUtf8Error(`${what} percent-encoded bytes are not valid UTF-8`);
    }
  }
}

const PERCENT_ESCAPES = /(?:%[0-9A-Fa-f]{2})+/g;
