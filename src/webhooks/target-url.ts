// Syntax rules for a subscription's target URL. Whether the host it names is
// an acceptable place to send webhooks (public address) is the job of
// src/dispatcher/target-guard.ts; this module only checks the shape.
import { CONTROL_CHARACTERS, badInput, longerThan } from '../errors.js';

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
  // The URL parser drops tabs and line breaks anywhere (a paste gone wrong) and mends forms like
  // http:///path (the path taken for the host) or http:example.com: a target is written out.
  if (CONTROL_CHARACTERS.test(url)) {
    throw badInput(field, 'must not contain control characters (a tab or a line break, say)');
  }
  // Invisible characters in the host (a soft hyphen, a zero-width space, a variation selector,
  // bidi controls: Unicode's format and default-ignorable ones), which the URL parser drops from
  // it, also percent-encoded: the host connected to would not be the one seen. Joiners (ZWJ,
  // ZWNJ) aside, which Persian or Indic names need. In a path or a query they are
  // percent-encoded as they are, and sent.
  const host = url.replace(/^\s*https?:\/\//i, '').split(/[/?#\\]/)[0]!;
  let decodedHost = host;
  try {
    decodedHost = decodeURIComponent(host);
  } catch {
    // Not UTF-8 once decoded: the URL parser refuses it below.
  }
  if (/(?![\u200c\u200d])[\p{Cf}\p{Default_Ignorable_Code_Point}]/u.test(decodedHost)) {
    throw badInput(field, 'must not have invisible characters in its host (a soft hyphen, a zero-width space, a variation selector or a bidi control, say)');
  }
  if (/^\s*https?:/i.test(url) && !/^\s*https?:\/\/[^/\\?#\s]/i.test(url)) {
    throw badInput(field, 'must start with http:// or https:// and a host, like https://example.com/webhooks');
  }
  // The URL parser reads a backslash before the query as a slash (https://a.com\\@b.com/ is
  // https://a.com/@b.com/): the address kept would not be the one written.
  if (url.split(/[?#]/)[0]!.includes('\\')) {
    throw badInput(field, 'must not contain a backslash (\\) before its query: URL parsers read it as a slash; write / where one is meant');
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    const port = /^\s*https?:\/\/[^/?#]*:(\d+)(?:[/?#]|\s*$)/i.exec(url)?.[1];
    if (port !== undefined && Number(port) > 65535) throw badInput(field, `port ${port.length > 12 ? `${port.slice(0, 12)}…` : port} is out of range: a port is from 1 to 65535`);
    throw badInput(field, 'is not a valid absolute URL, like https://example.com/webhooks');
  }
  if (!ALLOWED_PROTOCOLS.has(parsed.protocol)) {
    throw badInput(field, `scheme "${parsed.protocol.replace(/:$/, '')}" is not allowed: use http or https`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw badInput(field, 'must not contain a username or password; authenticate receivers with the signing secret instead');
  }
  if (url.includes('#')) {
    // Never sent (a fragment is the client's own): a token put there would be lost unseen.
    throw badInput(field, 'must not have a fragment (#…): it is never sent to the receiver; put what it carries in the path or the query');
  }
  if (parsed.hostname === '') {
    throw badInput(field, 'must name a host');
  }
  if (parsed.port === '0') {
    throw badInput(field, 'port 0 cannot be connected to: name the port the receiver listens on, or none for the scheme\'s');
  }
  const problem = hostNameProblem(parsed.hostname);
  if (problem) throw badInput(field, `host "${parsed.hostname}" ${problem}`);
  // Normalisation (punycode, percent-encoding) can make the href longer than the input.
  if (parsed.href.length > MAX_TARGET_URL_LENGTH) {
    throw badInput(field, `the normalised target URL is ${parsed.href.length} characters long; at most ${MAX_TARGET_URL_LENGTH} are allowed`);
  }
  return parsed;
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/**
 * Why a host name (as the URL parser leaves it: lower case, international names in punycode) is
 * no name DNS can look up, or undefined: `a..b`, `.com`, `-a.com` or a label of 64 characters
 * would fail every attempt (EBADNAME). Address literals (IPv4, [IPv6]) pass; underscores pass,
 * as some internal names have them.
 */
function hostNameProblem(hostname: string): string | undefined {
  if (hostname.startsWith('[') || /^[0-9.]+$/.test(hostname)) return undefined; // the URL parser checked the address
  const name = hostname.endsWith('.') ? hostname.slice(0, -1) : hostname;
  if (name.length > 253) return 'is longer than the 253 characters of a DNS name';
  for (const label of name.split('.')) {
    if (label === '') return 'has an empty label (two dots in a row, or a dot at the start)';
    if (label.length > 63) return `has a label of ${label.length} characters; DNS allows 63`;
    if (!LABEL.test(label)) return `has a label, "${label}", that is no DNS name: letters, digits and hyphens, not at its start or end`;
  }
  return undefined;
}
