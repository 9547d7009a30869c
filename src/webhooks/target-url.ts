// Syntax rules for a subscription's target URL. Whether the host it names is
// an acceptable place to send webhooks (public address) is the job of
// src/dispatcher/target-guard.ts; this module only checks the shape.
import { badInput, longerThan } from '../errors.js';

export const MAX_TARGET_URL_LENGTH = 2048;

const ALLOWED_PROTOCOLS = new Set(['http:', 'https:']);

/**
 * Parses `url` as a webhook target and returns the parsed URL.
 * Throws BAD_USER_INPUT (naming `field`) unless it is an absolute http(s) URL
 * of at most 2048 characters, with a host and without credentials.
 */
export function validateTargetUrl(url: string, field = 'url'): URL {
  if (typeof url !== 'string' || url.trim() === '') {
    throw badInput(field, 'a target URL is required, like https://example.com/webhooks');
  }
  if (longerThan(url, MAX_TARGET_URL_LENGTH)) {
    throw badInput(field, `the target URL must be at most ${MAX_TARGET_URL_LENGTH} characters`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw badInput(field, 'is not a valid absolute URL, like https://example.com/webhooks');
  }
  if (!ALLOWED_PROTOCOLS.has(parsed.protocol)) {
    throw badInput(field, `scheme "${parsed.protocol.replace(/:$/, '')}" is not allowed: use http or https`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw badInput(field, 'must not contain a username or password; authenticate receivers with the signing secret instead');
  }
  if (parsed.hostname === '') {
    throw badInput(field, 'must name a host');
  }
  // Normalisation (punycode, percent-encoding) can make the href longer than the input.
  if (parsed.href.length > MAX_TARGET_URL_LENGTH) {
    throw badInput(field, `the normalised target URL is ${parsed.href.length} characters long; at most ${MAX_TARGET_URL_LENGTH} are allowed`);
  }
  return parsed;
}
