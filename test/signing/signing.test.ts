// The signature headers a receiver gets (CONTRACT.md, "What a receiver gets"),
// checked against independent verifiers: the npm packages `standardwebhooks`
// and `svix`, and plain node:crypto.
import { createHmac, randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, expect, it } from 'vitest';
import { Webhook as StdWebhook } from 'standardwebhooks';
import { Webhook as SvixWebhook } from 'svix';
import {
  buildSignedHeaders,
  decodeSecrets,
  signStandardWebhook,
  StandardWebhookVerifier,
  WebhookSignature,
  WebhookVerificationError,
} from '../../src/signing/index.js';

const WHSEC = `whsec_${randomBytes(32).toString('base64')}`;
const WHSEC_OLD = `whsec_${randomBytes(32).toString('base64')}`;
const PLAIN = 'my-webhook-secret';
const PLAIN_OLD = 'my-previous-webhook-secret';

const BODY = JSON.stringify({
  id: 'evt_1',
  event: 'invoice.created',
  resource_type: 'invoice',
  resource_id: 'inv-123',
  tenant_id: 't_1',
  timestamp: '2024-02-14T10:30:00.000Z',
  data: { invoice_id: 'inv-123', amount: 1500, customer: 'Acme Corp — Ñandú S.A. 🧾' },
});
const TAMPERED = BODY.replace('1500', '2000');

const nowSeconds = () => Math.floor(Date.now() / 1000);

function headersFor(secrets: string[], body = BODY, timestamp = nowSeconds()) {
  return buildSignedHeaders({
    deliveryId: 'dlv_1',
    eventName: 'invoice.created',
    webhookId: 'msg_2Xb3',
    timestamp,
    body,
    secrets,
  });
}

// The three Standard Webhooks headers only, as a receiver would pass them on.
function stdHeaders(h: Record<string, string>): Record<string, string> {
  return {
    'webhook-id': h['webhook-id']!,
    'webhook-timestamp': h['webhook-timestamp']!,
    'webhook-signature': h['webhook-signature']!,
  };
}

// The same under svix's own header names.
function svixHeaders(h: Record<string, string>): Record<string, string> {
  return {
    'svix-id': h['webhook-id']!,
    'svix-timestamp': h['webhook-timestamp']!,
    'svix-signature': h['webhook-signature']!,
  };
}

/**
 * standardwebhooks and svix decode any string secret as base64 (with or
 * without `whsec_`); a plain secret must be given as raw key bytes with
 * `{ format: 'raw' }`. Given as a string with format raw they take each char
 * code as a byte (Latin-1), which equals UTF-8 only for ASCII secrets, so the
 * UTF-8 bytes are passed here.
 */
function stdVerifier(secret: string): StdWebhook {
  return secret.startsWith('whsec_') ? new StdWebhook(secret) : new StdWebhook(Buffer.from(secret, 'utf8'), { format: 'raw' });
}
// svix 1.99 wraps standardwebhooks (its own copy, 1.0.0) and passes the
// options through, so plain secrets work with svix too, as raw bytes.
function svixVerifier(secret: string): SvixWebhook {
  return secret.startsWith('whsec_') ? new SvixWebhook(secret) : new SvixWebhook(Buffer.from(secret, 'utf8'), { format: 'raw' });
}

function keyOf(secret: string): Buffer {
  // Written out again here, not taken from the module under test.
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
}

describe('buildSignedHeaders', () => {
  for (const [label, secret] of [
    ['whsec_ secret', WHSEC],
    ['plain secret', PLAIN],
  ] as const) {
    describe(label, () => {
      const headers = headersFor([secret]);

      it('carries every outgoing header', () => {
        expect(Object.keys(headers).sort()).toEqual(
          ['X-Signature', 'X-Webhook-Delivery', 'X-Webhook-Event', 'content-type', 'webhook-id', 'webhook-signature', 'webhook-timestamp'].sort(),
        );
        expect(headers['content-type']).toBe('application/json');
        expect(headers['X-Webhook-Event']).toBe('invoice.created');
        expect(headers['X-Webhook-Delivery']).toBe('dlv_1');
        expect(headers['webhook-id']).toBe('msg_2Xb3');
        expect(headers['webhook-timestamp']).toMatch(/^\d+$/);
        expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
      });

      it('webhook-signature is the base64 HMAC of "<id>.<timestamp>.<body>"', () => {
        const expected = createHmac('sha256', keyOf(secret))
          .update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${BODY}`)
          .digest('base64');
        expect(headers['webhook-signature']).toBe(`v1,${expected}`);
      });

      it('verifies with standardwebhooks', () => {
        expect(stdVerifier(secret).verify(BODY, stdHeaders(headers))).toEqual(JSON.parse(BODY));
        // Also handed all headers as a Buffer body, as a server would.
        expect(stdVerifier(secret).verify(Buffer.from(BODY), headers)).toEqual(JSON.parse(BODY));
      });

      it('verifies with svix, under webhook-* and under svix-* names', () => {
        expect(svixVerifier(secret).verify(BODY, stdHeaders(headers))).toEqual(JSON.parse(BODY));
        expect(svixVerifier(secret).verify(BODY, svixHeaders(headers))).toEqual(JSON.parse(BODY));
      });

      it('verifies with StandardWebhookVerifier', () => {
        expect(new StandardWebhookVerifier(secret).verify(BODY, headers)).toEqual(JSON.parse(BODY));
      });

      it('X-Signature is the plain hex HMAC of the raw body, and verifyRaw accepts it', () => {
        const hex = createHmac('sha256', keyOf(secret)).update(BODY).digest('hex');
        expect(headers['X-Signature']).toBe(`sha256=${hex}`);
        expect(WebhookSignature.verifyRaw(secret, BODY, headers['X-Signature'])).toBe(true);
        expect(WebhookSignature.verifyRaw(secret, Buffer.from(BODY), headers['X-Signature'])).toBe(true);
        expect(WebhookSignature.verifyRaw(secret, new Uint8Array(Buffer.from(BODY)), hex)).toBe(true);
        expect(WebhookSignature.signRaw(secret, BODY)).toBe(headers['X-Signature']);
      });

      it('a tampered body fails every verifier', () => {
        expect(() => stdVerifier(secret).verify(TAMPERED, stdHeaders(headers))).toThrow(/No matching signature/);
        expect(() => svixVerifier(secret).verify(TAMPERED, stdHeaders(headers))).toThrow(/No matching signature/);
        expect(() => new StandardWebhookVerifier(secret).verify(TAMPERED, headers)).toThrow(WebhookVerificationError);
        expect(WebhookSignature.verifyRaw(secret, TAMPERED, headers['X-Signature'])).toBe(false);
      });

      it('a tampered webhook-id or webhook-timestamp fails', () => {
        const otherId = { ...stdHeaders(headers), 'webhook-id': 'msg_other' };
        const otherTs = { ...stdHeaders(headers), 'webhook-timestamp': String(Number(headers['webhook-timestamp']) - 1) };
        for (const h of [otherId, otherTs]) {
          expect(() => stdVerifier(secret).verify(BODY, h)).toThrow();
          expect(() => svixVerifier(secret).verify(BODY, h)).toThrow();
          expect(() => new StandardWebhookVerifier(secret).verify(BODY, h)).toThrow(WebhookVerificationError);
        }
      });

      it('another secret fails every verifier', () => {
        const other = secret.startsWith('whsec_') ? WHSEC_OLD : PLAIN_OLD;
        expect(() => stdVerifier(other).verify(BODY, stdHeaders(headers))).toThrow();
        expect(() => svixVerifier(other).verify(BODY, stdHeaders(headers))).toThrow();
        expect(() => new StandardWebhookVerifier(other).verify(BODY, headers)).toThrow(WebhookVerificationError);
        expect(WebhookSignature.verifyRaw(other, BODY, headers['X-Signature'])).toBe(false);
      });
    });
  }

  it('signs a non-ASCII plain secret by its UTF-8 bytes', () => {
    const secret = 'contraseña-secreta-ñandú';
    const headers = headersFor([secret]);
    expect(stdVerifier(secret).verify(BODY, stdHeaders(headers))).toEqual(JSON.parse(BODY));
    expect(svixVerifier(secret).verify(BODY, stdHeaders(headers))).toEqual(JSON.parse(BODY));
    expect(headers['X-Signature']).toBe(`sha256=${createHmac('sha256', Buffer.from(secret, 'utf8')).update(BODY).digest('hex')}`);
    // The pitfall for receivers: passed as a *string* with format raw, the
    // packages take char codes (Latin-1), not UTF-8, and reject it.
    expect(() => new StdWebhook(secret, { format: 'raw' }).verify(BODY, stdHeaders(headers))).toThrow();
  });

  it('during a rotation: one signature per secret, newest first; either secret alone verifies; X-Signature uses the newest', () => {
    for (const [newest, previous] of [
      [WHSEC, WHSEC_OLD],
      [PLAIN, PLAIN_OLD],
      [WHSEC, PLAIN_OLD],
    ] as const) {
      const headers = headersFor([newest, previous]);
      const sigs = headers['webhook-signature'].split(' ');
      expect(sigs).toHaveLength(2);
      const ts = headers['webhook-timestamp'];
      const expectOne = (secret: string) =>
        `v1,${createHmac('sha256', keyOf(secret)).update(`${headers['webhook-id']}.${ts}.${BODY}`).digest('base64')}`;
      expect(sigs).toEqual([expectOne(newest), expectOne(previous)]);

      for (const secret of [newest, previous]) {
        expect(stdVerifier(secret).verify(BODY, stdHeaders(headers))).toEqual(JSON.parse(BODY));
        expect(svixVerifier(secret).verify(BODY, stdHeaders(headers))).toEqual(JSON.parse(BODY));
        expect(new StandardWebhookVerifier(secret).verify(BODY, headers)).toEqual(JSON.parse(BODY));
        expect(() => stdVerifier(secret).verify(TAMPERED, stdHeaders(headers))).toThrow();
        expect(() => svixVerifier(secret).verify(TAMPERED, stdHeaders(headers))).toThrow();
        expect(() => new StandardWebhookVerifier(secret).verify(TAMPERED, headers)).toThrow(WebhookVerificationError);
      }

      expect(headers['X-Signature']).toBe(`sha256=${createHmac('sha256', keyOf(newest)).update(BODY).digest('hex')}`);
      expect(WebhookSignature.verifyRaw(newest, BODY, headers['X-Signature'])).toBe(true);
      expect(WebhookSignature.verifyRaw(previous, BODY, headers['X-Signature'])).toBe(false);
    }
  });

  it('gives the same headers from pre-decoded keys as from secrets', () => {
    const ts = nowSeconds();
    const fromSecrets = headersFor([WHSEC, PLAIN_OLD], BODY, ts);
    const fromKeys = buildSignedHeaders({
      deliveryId: 'dlv_1',
      eventName: 'invoice.created',
      webhookId: 'msg_2Xb3',
      timestamp: ts,
      body: BODY,
      keys: decodeSecrets([WHSEC, PLAIN_OLD]),
    });
    expect(fromKeys).toEqual(fromSecrets);
    expect(buildSignedHeaders({ deliveryId: 'd', eventName: 'e', webhookId: 'w', timestamp: ts, body: Buffer.from(BODY), secrets: [WHSEC] })['webhook-signature']).toBe(
      buildSignedHeaders({ deliveryId: 'd', eventName: 'e', webhookId: 'w', timestamp: ts, body: BODY, secrets: [WHSEC] })['webhook-signature'],
    );
  });

  it('refuses what no verifier could check', () => {
    const base = { deliveryId: 'd', eventName: 'e', webhookId: 'w', body: BODY };
    expect(() => buildSignedHeaders({ ...base, secrets: [] })).toThrow(TypeError);
    expect(() => buildSignedHeaders({ ...base, secrets: [''] })).toThrow(TypeError);
    expect(() => buildSignedHeaders({ ...base, secrets: ['whsec_'] })).toThrow(TypeError);
    expect(() => buildSignedHeaders({ ...base, secrets: ['whsec_not base64!'] })).toThrow(TypeError);
    expect(() => buildSignedHeaders({ ...base, timestamp: 1700000000.5, secrets: [WHSEC] })).toThrow(TypeError);
    expect(() => buildSignedHeaders({ ...base, webhookId: 'a\r\nb', secrets: [WHSEC] })).toThrow(TypeError);
  });
});

describe('signStandardWebhook', () => {
  it('matches the Standard Webhooks / svix reference vector', () => {
    // From svix's own test suite ("sign function works").
    const args = { id: 'msg_p5jXN8AQM9LWM0D4loKWxJek', timestamp: 1614265330, body: '{"test": 2432232314}' };
    const expected = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
    expect(signStandardWebhook({ ...args, secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'] })).toBe(expected);
    expect(signStandardWebhook({ ...args, keys: [Buffer.from('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'base64')] })).toBe(expected);
    expect(new StdWebhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw').sign(args.id, new Date(args.timestamp * 1000), args.body)).toBe(expected);
  });

  it('agrees with standardwebhooks sign() for several secrets, in order', () => {
    const ts = 1700000000;
    const got = signStandardWebhook({ id: 'msg_1', timestamp: ts, body: BODY, secrets: [WHSEC, PLAIN] });
    const want = [new StdWebhook(WHSEC), new StdWebhook(Buffer.from(PLAIN), { format: 'raw' })].map((w) => w.sign('msg_1', new Date(ts * 1000), BODY));
    expect(got).toBe(want.join(' '));
  });
});

describe('WebhookSignature (guide, Test 2)', () => {
  const payload = { invoice_id: 'inv-123', amount: 1500.0, customer: 'Acme Corp' };
  const secret = 'my-webhook-secret';

  it('signs a payload object and verifies it; a tampered payload fails', () => {
    const signature = WebhookSignature.sign(secret, payload);
    expect(signature).toMatch(/^sha256=[0-9a-f]{64}$/);
    expect(signature).toBe(`sha256=${createHmac('sha256', secret).update(JSON.stringify(payload)).digest('hex')}`);
    expect(WebhookSignature.verify(secret, payload, signature)).toBe(true);

    const tampered = { invoice_id: 'inv-123', amount: 2000.0, customer: 'Acme Corp' };
    expect(WebhookSignature.verify(secret, tampered, signature)).toBe(false);
    expect(WebhookSignature.verify('another-secret-value', payload, signature)).toBe(false);
  });

  it('signs strings and Buffers as they are', () => {
    const text = JSON.stringify(payload);
    expect(WebhookSignature.sign(secret, text)).toBe(WebhookSignature.sign(secret, payload));
    expect(WebhookSignature.sign(secret, Buffer.from(text))).toBe(WebhookSignature.sign(secret, payload));
    // A string is not JSON-encoded again.
    expect(WebhookSignature.sign(secret, 'hello')).toBe(`sha256=${createHmac('sha256', secret).update('hello').digest('hex')}`);
  });

  it('accepts the signature with or without the sha256= prefix', () => {
    const signature = WebhookSignature.sign(secret, payload);
    const hex = signature.slice('sha256='.length);
    expect(WebhookSignature.verify(secret, payload, hex)).toBe(true);
    expect(WebhookSignature.verify(secret, payload, hex.toUpperCase())).toBe(true);
    expect(WebhookSignature.verifyRaw(secret, JSON.stringify(payload), hex)).toBe(true);
  });

  it('is false, never throws, for malformed input', () => {
    const signature = WebhookSignature.sign(secret, payload);
    const bad: unknown[] = ['', 'sha256=', 'sha256=xyz', signature.slice(0, -2), `${signature}00`, 'md5=abc', undefined, null, 42, ['x']];
    for (const sig of bad) {
      expect(WebhookSignature.verify(secret, payload, sig as string)).toBe(false);
      expect(WebhookSignature.verifyRaw(secret, JSON.stringify(payload), sig as string)).toBe(false);
    }
    expect(WebhookSignature.verify('', payload, signature)).toBe(false);
    expect(WebhookSignature.verify('whsec_***', payload, signature)).toBe(false);
    expect(WebhookSignature.verify(secret, undefined, signature)).toBe(false);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(WebhookSignature.verify(secret, circular, signature)).toBe(false);
    expect(WebhookSignature.verifyRaw(secret, 123 as unknown as string, signature)).toBe(false);
  });

  it('decodes whsec_ secrets as base64 and other secrets as UTF-8', () => {
    const raw = randomBytes(32);
    expect(WebhookSignature.secretKey(`whsec_${raw.toString('base64')}`)).toEqual(raw);
    expect(WebhookSignature.secretKey('my-webhook-secret')).toEqual(Buffer.from('my-webhook-secret', 'utf8'));
    expect(WebhookSignature.secretKey('ñ')).toEqual(Buffer.from([0xc3, 0xb1]));
    expect(() => WebhookSignature.secretKey('whsec_a-b_')).toThrow(TypeError);
  });
});

describe('StandardWebhookVerifier', () => {
  const NOW_MS = 1_700_000_000_000;
  const NOW = NOW_MS / 1000;
  const at = (timestamp: number, secrets = [WHSEC]) => headersFor(secrets, BODY, timestamp);
  const verifier = (secret: string | string[] = WHSEC, toleranceSeconds?: number) =>
    new StandardWebhookVerifier(secret, { now: () => NOW_MS, ...(toleranceSeconds === undefined ? {} : { toleranceSeconds }) });

  function refusal(fn: () => unknown): WebhookVerificationError {
    try {
      fn();
    } catch (error) {
      expect(error).toBeInstanceOf(WebhookVerificationError);
      return error as WebhookVerificationError;
    }
    throw new Error('expected a WebhookVerificationError, nothing was thrown');
  }

  it('accepts a correct request and returns the parsed payload', () => {
    expect(verifier().verify(BODY, at(NOW))).toEqual(JSON.parse(BODY));
    expect(verifier().verify(Buffer.from(BODY), at(NOW))).toEqual(JSON.parse(BODY));
    expect(verifier().verify(new Uint8Array(Buffer.from(BODY)), at(NOW))).toEqual(JSON.parse(BODY));
  });

  it('looks headers up case-insensitively, in plain objects and fetch Headers', () => {
    const h = at(NOW);
    const upper = Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toUpperCase(), v]));
    expect(verifier().verify(BODY, upper)).toEqual(JSON.parse(BODY));
    expect(verifier().verify(BODY, new Headers(h))).toEqual(JSON.parse(BODY));
    // Node's req.headers shape: lower-case names, possibly arrays.
    const nodeHeaders: IncomingHttpHeaders = { ...stdHeaders(h), 'webhook-signature': [h['webhook-signature']], 'x-other': undefined };
    expect(verifier().verify(BODY, nodeHeaders)).toEqual(JSON.parse(BODY));
  });

  it('rejects missing headers, naming them', () => {
    const h = stdHeaders(at(NOW));
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const { [name]: _dropped, ...rest } = h;
      const error = refusal(() => verifier().verify(BODY, rest));
      expect(error.reason).toBe('MISSING_HEADERS');
      expect(error.message).toContain(name);
      expect(() => verifier().verify(BODY, { ...h, [name]: '' })).toThrow(/Missing required header/);
    }
    expect(refusal(() => verifier().verify(BODY, {})).message).toMatch(/webhook-id, webhook-timestamp, webhook-signature/);
  });

  it('rejects an unparseable timestamp', () => {
    const h = { ...stdHeaders(at(NOW)), 'webhook-timestamp': 'yesterday' };
    expect(refusal(() => verifier().verify(BODY, h)).reason).toBe('INVALID_TIMESTAMP');
  });

  it('rejects old timestamps beyond the tolerance, accepts the edge', () => {
    expect(verifier().verify(BODY, at(NOW - 300))).toEqual(JSON.parse(BODY));
    const error = refusal(() => verifier().verify(BODY, at(NOW - 301)));
    expect(error.reason).toBe('TIMESTAMP_TOO_OLD');
    expect(error.message).toMatch(/too old/);
    expect(refusal(() => verifier().verify(BODY, at(NOW - 3600))).reason).toBe('TIMESTAMP_TOO_OLD');
  });

  it('rejects future timestamps beyond the tolerance, accepts the edge', () => {
    expect(verifier().verify(BODY, at(NOW + 300))).toEqual(JSON.parse(BODY));
    const error = refusal(() => verifier().verify(BODY, at(NOW + 301)));
    expect(error.reason).toBe('TIMESTAMP_TOO_NEW');
    expect(error.message).toMatch(/future/);
  });

  it('honours a custom tolerance', () => {
    expect(refusal(() => verifier(WHSEC, 10).verify(BODY, at(NOW - 11))).reason).toBe('TIMESTAMP_TOO_OLD');
    expect(verifier(WHSEC, 10).verify(BODY, at(NOW - 10))).toEqual(JSON.parse(BODY));
    expect(verifier(WHSEC, 3600).verify(BODY, at(NOW - 3000))).toEqual(JSON.parse(BODY));
  });

  it('rejects a wrong secret, a tampered body and non-v1 signatures', () => {
    expect(refusal(() => verifier(WHSEC_OLD).verify(BODY, at(NOW))).reason).toBe('NO_MATCHING_SIGNATURE');
    expect(refusal(() => verifier(PLAIN).verify(BODY, at(NOW))).reason).toBe('NO_MATCHING_SIGNATURE');
    expect(refusal(() => verifier().verify(TAMPERED, at(NOW))).reason).toBe('NO_MATCHING_SIGNATURE');
    const h = at(NOW);
    const v2 = { ...h, 'webhook-signature': h['webhook-signature'].replace(/^v1,/, 'v2,') };
    expect(refusal(() => verifier().verify(BODY, v2)).reason).toBe('NO_MATCHING_SIGNATURE');
    const garbage = { ...h, 'webhook-signature': 'v1, v1,abc ,,, v1' };
    expect(refusal(() => verifier().verify(BODY, garbage)).reason).toBe('NO_MATCHING_SIGNATURE');
  });

  it('accepts when any listed signature matches any of its secrets', () => {
    const h = at(NOW, [PLAIN]);
    const mixed = { ...h, 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')} v2,zzz ${h['webhook-signature']}` };
    expect(verifier(PLAIN).verify(BODY, mixed)).toEqual(JSON.parse(BODY));
    expect(verifier([WHSEC, PLAIN]).verify(BODY, h)).toEqual(JSON.parse(BODY));
    expect(verifier([WHSEC_OLD, WHSEC]).verify(BODY, at(NOW))).toEqual(JSON.parse(BODY));
  });

  it('refuses unusable secrets when constructed', () => {
    expect(() => new StandardWebhookVerifier([])).toThrow(TypeError);
    expect(() => new StandardWebhookVerifier('')).toThrow(TypeError);
    expect(() => new StandardWebhookVerifier('whsec_***')).toThrow(TypeError);
  });

  it('reports a signed body that is not JSON', () => {
    const body = 'not json';
    const h = headersFor([WHSEC], body, NOW);
    expect(refusal(() => verifier().verify(body, h)).reason).toBe('INVALID_PAYLOAD');
    expect(() => verifier().verifySignature(body, h)).not.toThrow();
  });
});
