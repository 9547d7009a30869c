// Everything the integration guide shows runs against a real Hookline and real
// receivers: the Test 1 script, the invoice module, the receiver, and the
// Python verifier.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAppDataSource } from '../../examples/invoice-module/data-source.js';
import { Invoice } from '../../examples/invoice-module/invoice.js';
import { InvoiceService } from '../../examples/invoice-module/invoice-service.js';
import { createReceiver, type ReceivedEvent } from '../../examples/receiver/receiver.js';
import { runMigrations } from '../../src/index.js';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Received, type Receiver } from '../helpers/receiver.js';
import { GUIDE_INVOICE_CREATED, GUIDE_PAYMENT_RECEIVED } from '../helpers/guide.js';
import { ROTATE_WEBHOOK_SECRET as ROTATE } from '../helpers/operations.js';

const run = promisify(execFile);
/** How a command that should fail failed (undefined if it did not). */
const failureOf = (command: Promise<unknown>) =>
  command.then(
    () => undefined,
    (error: { code?: number; stderr?: string }) => error,
  );
const ROOT = resolve(import.meta.dirname, '../..');
const TSX = join(ROOT, 'node_modules/.bin/tsx');

const INVOICE_DATA = GUIDE_INVOICE_CREATED;
const PAYMENT_DATA = GUIDE_PAYMENT_RECEIVED;

let hl: TestHookline;
let key: string;
let tenantId: string;
let tmp: string;
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  hl = await startTestHookline();
  tmp = await mkdtemp(join(tmpdir(), 'hookline-examples-'));
});
beforeEach(async () => {
  ({ apiKey: key, id: tenantId } = await hl.createTenant());
});
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => {});
  await hl?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function receiverWith(respond?: Receiver['respond']) {
  const r = await startReceiver(respond);
  closers.push(() => r.close());
  return r;
}

async function rest(method: string, path: string, body?: unknown) {
  const res = await fetch(`${hl.url}/api/v1/tenant/webhooks/${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as any;
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function delivered(deliveryId: string) {
  return eventually(async () => {
    const d = await rest('GET', `deliveries/${deliveryId}`);
    return d.status === 'DELIVERED' ? d : undefined;
  });
}

describe('examples/test-webhooks.sh (the guide\'s Test 1)', () => {
  it('creates the subscription, triggers the event and prints status DELIVERED, attempts 1, last_error null', async () => {
    const target = await receiverWith(() => ({ status: 200, body: 'ok' }));
    const { stdout } = await run('bash', [join(ROOT, 'examples/test-webhooks.sh')], {
      env: { ...process.env, HOOKLINE_URL: hl.url, HOOKLINE_TOKEN: key, TARGET_URL: `${target.url}/webhooks/test1` },
      timeout: 20_000,
    });
    const created = /^Subscription created: "([0-9a-f-]{36})"$/m.exec(stdout);
    expect(created, stdout).not.toBeNull();
    expect(stdout).toContain('"event_id":');
    expect(stdout).toMatch(/"status": "(PENDING|SENDING)"/);
    const last = JSON.parse(stdout.slice(stdout.lastIndexOf('{\n  "status"')));
    expect(last).toEqual({ status: 'DELIVERED', attempts: 1, last_error: null });

    // What the target got: the guide's payload as data, signed with the script's secret.
    const [got] = target.received;
    expect(got!.path).toBe('/webhooks/test1');
    expect(JSON.parse(got!.body).data).toEqual({ invoice_id: 'inv-123', amount: 1500, customer: 'Acme Corp' });
    const subs = await rest('GET', 'subscriptions');
    expect(subs.map((s: any) => s.id)).toEqual([created![1]]);
  });

  it('stops with Hookline\'s reason when the subscription is refused, and triggers nothing', async () => {
    const before = (await rest('GET', 'deliveries')).length;
    const failed = await failureOf(
      run('bash', [join(ROOT, 'examples/test-webhooks.sh')], {
        env: { ...process.env, HOOKLINE_URL: hl.url, HOOKLINE_TOKEN: key, TARGET_URL: 'ftp://example.com/hook' },
        timeout: 20_000,
      }),
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/Subscription not created: \{"code":"BAD_USER_INPUT".*"field":"url"/);
    expect((await rest('GET', 'deliveries')).length).toBe(before);
  });

  it('takes an address written with a trailing slash, and stops when what answers there is not Hookline\'s API', async () => {
    const target = await receiverWith(() => ({ status: 200, body: 'ok' }));
    const env = { ...process.env, HOOKLINE_TOKEN: key, TARGET_URL: `${target.url}/webhooks/test1` };
    const { stdout } = await run('bash', [join(ROOT, 'examples/test-webhooks.sh')], { env: { ...env, HOOKLINE_URL: `${hl.url}/` }, timeout: 20_000 });
    expect(stdout).toMatch(/^Subscription created: "[0-9a-f-]{36}"$/m);
    expect(JSON.parse(stdout.slice(stdout.lastIndexOf('{\n  "status"')))).toEqual({ status: 'DELIVERED', attempts: 1, last_error: null });

    const before = (await rest('GET', 'deliveries')).length;
    const elsewhere = await receiverWith(() => ({ status: 404, body: '' }));
    for (const [base, reason] of [
      [`${hl.url}/hookline`, /Subscription not created: \{"code":"NOT_FOUND","message":"no such endpoint: \/hookline\/api\/v1\/tenant\/webhooks\/subscriptions/],
      [elsewhere.url, /Subscription not created: an empty answer from http:\/\/127\.0\.0\.1:\d+\/api\/v1\/tenant\/webhooks\/subscriptions/],
    ] as const) {
      const failed = await run('bash', [join(ROOT, 'examples/test-webhooks.sh')], { env: { ...env, HOOKLINE_URL: base }, timeout: 20_000 }).then(
        () => undefined,
        (error: { code?: number; stderr?: string }) => error,
      );
      expect(failed?.code, base).toBe(1);
      expect(failed?.stderr).toMatch(reason);
    }
    expect((await rest('GET', 'deliveries')).length).toBe(before);
  });

  it('says so when Hookline cannot be reached', async () => {
    const closed = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const failed = await run('bash', [join(ROOT, 'examples/test-webhooks.sh')], {
      env: { ...process.env, HOOKLINE_URL: `http://127.0.0.1:${closed}`, HOOKLINE_TOKEN: key, TARGET_URL: 'https://example.com/hook' },
      timeout: 20_000,
    }).then(
      () => undefined,
      (error: { code?: number; stderr?: string }) => error,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toContain(`Hookline not reachable at http://127.0.0.1:${closed}`);
  });
});

describe('examples/invoice-module', () => {
  let dataSource: DataSource;

  beforeAll(async () => {
    dataSource = await createAppDataSource(hl.databaseUrl).initialize();
    closers.push(() => dataSource.destroy());
    // Hookline's migrations are already applied (shared hookline_migrations table): only the app's runs.
    expect(await runMigrations(dataSource)).toEqual(['CreateInvoices1764400000001']);
  });

  const invoiceData = (number: string) => ({ number, total: '1500.00', currency: 'USD', customer_name: 'Acme Corp' });
  const count = async (table: string) =>
    (await dataSource.query(`select count(*)::int as n from ${table} where tenant_id = $1`, [tenantId]))[0].n as number;

  it('rolls back the invoice and its webhook together when the transaction fails after the trigger', async () => {
    const target = await receiverWith();
    await rest('POST', 'subscriptions', { event: 'invoice.created', url: target.url });
    const service = new InvoiceService(dataSource);
    await expect(
      dataSource.transaction(async (manager) => {
        const invoice = await service.createInvoice(invoiceData('001-001-000000010'), tenantId, manager);
        // Inside the transaction, the event is there with the invoice...
        expect(await manager.count(Invoice, { where: { id: invoice.id } })).toBe(1);
        throw new Error('the ERP failed after the trigger');
      }),
    ).rejects.toThrow('the ERP failed after the trigger');
    // ...and after the rollback neither is.
    expect(await count('invoices')).toBe(0);
    expect(await count('webhook_events')).toBe(0);
    expect(await count('webhook_deliveries')).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(target.received).toHaveLength(0);
  });

  it('commits the invoice with its invoice.created delivery, which Hookline sends (run with tsx, as a user would)', async () => {
    const target = await receiverWith(() => ({ status: 200 }));
    const sub = await rest('POST', 'subscriptions', { event: 'invoice.created', url: `${target.url}/erp`, secret: 'invoice-module-secret' });
    const demo = () =>
      run(TSX, [join(ROOT, 'examples/invoice-module/demo.ts')], {
        cwd: ROOT,
        env: { ...process.env, DATABASE_URL: hl.databaseUrl, TENANT_ID: tenantId, INVOICE_NUMBER: '001-001-000000042' },
        timeout: 30_000,
      });
    const { stdout } = await demo();
    const invoice = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(invoice).toMatchObject({ tenantId, number: '001-001-000000042', total: '1500.00', customerName: 'Acme Corp', status: 'draft' });

    const [got] = await target.waitFor(1);
    const envelope = JSON.parse(got!.body);
    expect(envelope).toMatchObject({
      event: 'invoice.created',
      resource_type: 'invoice',
      resource_id: invoice.id,
      tenant_id: tenantId,
      data: {
        invoice_id: invoice.id,
        invoice_number: '001-001-000000042',
        amount: '1500.00',
        currency: 'USD',
        customer: 'Acme Corp',
        status: 'draft',
      },
    });
    const [delivery] = await rest('GET', `deliveries?subscription_id=${sub.id}`);
    expect((await delivered(delivery.id)).attempts).toBe(1);
    expect(await count('invoices')).toBe(1);

    // Run again with the same number: refused by the app's unique number, said in a line, nothing written.
    const again = await failureOf(demo());
    expect(again?.code).toBe(1);
    expect(again?.stderr).toMatch(/^demo: duplicate key value violates unique constraint .*\[23505\]\n$/);
    expect(await count('invoices')).toBe(1);
  });

  it('refuses the invoice when the webhook cannot be recorded (an unknown tenant): nothing is written', async () => {
    const service = new InvoiceService(dataSource);
    const stranger = '00000000-0000-4000-8000-000000000000';
    const error = await service.createInvoice(invoiceData('001-001-000000099'), stranger).catch((e) => e);
    // Hookline's own error, naming the field, reaches the caller (not a later "current transaction is aborted").
    expect(error).toMatchObject({ code: 'BAD_USER_INPUT', field: 'tenantId' });
    const [{ n }] = await dataSource.query('select count(*)::int as n from invoices where tenant_id = $1', [stranger]);
    expect(n).toBe(0);
  });
});

/** A real delivery's request, captured as a receiver would get it. */
async function captureDelivery(event: string, data: object, secret?: string): Promise<{ request: Received; secret: string }> {
  const capture = await receiverWith(() => ({ status: 200 }));
  const sub = await rest('POST', 'subscriptions', { event, url: `${capture.url}/capture`, ...(secret ? { secret } : {}) });
  await rest('POST', 'deliveries', { event, payload: data });
  const [request] = await capture.waitFor(1);
  return { request: request!, secret: sub.secret };
}

describe('examples/receiver (the guide\'s Ejemplo 3)', () => {
  let server: Server;
  let url: string;
  let secret: string;
  const handled: ReceivedEvent[] = [];
  const lines: string[] = [];

  beforeAll(async () => {
    // The secret is a generated whsec_ one, so the base64-decoded key is what both schemes use.
    secret = 'whsec_' + Buffer.alloc(32, 7).toString('base64');
    server = createReceiver({ secret, onEvent: (e) => void handled.push(e), log: (line) => void lines.push(line) });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/gestiqcloud`;
  });

  async function post(body: string, headers: Record<string, string>) {
    const res = await fetch(url, { method: 'POST', headers, body });
    return { status: res.status, body: (await res.json()) as any };
  }

  function forwarded(request: Received, changes: Record<string, string | undefined> = {}) {
    const headers: Record<string, string> = {};
    for (const name of ['content-type', 'x-signature', 'webhook-id', 'webhook-timestamp', 'webhook-signature', 'x-webhook-event']) {
      const value = name in changes ? changes[name] : (request.headers[name] as string);
      if (value !== undefined) headers[name] = value;
    }
    return headers;
  }

  it('is the target of real deliveries: verifies them and handles invoice.created and payment.received once each', async () => {
    await rest('POST', 'subscriptions', { events: ['invoice.created', 'payment.received'], url, secret });
    const invoice = await rest('POST', 'deliveries', { event: 'invoice.created', payload: INVOICE_DATA });
    const payment = await rest('POST', 'deliveries', { event: 'payment.received', payload: PAYMENT_DATA });
    const done = [await delivered(invoice.deliveries[0].id), await delivered(payment.deliveries[0].id)];
    expect(done.map((d) => [d.attempts, d.last_status_code])).toEqual([
      [1, 200],
      [1, 200],
    ]);
    expect(handled.map((e) => [e.webhookId, e.envelope.event, e.envelope.id])).toEqual([
      [invoice.deliveries[0].id, 'invoice.created', invoice.event_id],
      [payment.deliveries[0].id, 'payment.received', payment.event_id],
    ]);
    expect(lines).toEqual(['Invoice created: 001-001-000000001', 'Payment received: 1500.00']);
    // The catalog asks only for amount and customer: an invoice with neither number nor id.
    const bare = await rest('POST', 'deliveries', { event: 'invoice.created', payload: { amount: '2.00', customer: 'Acme Corp' } });
    await delivered(bare.deliveries[0].id);
    expect(lines.at(-1)).toBe('Invoice created: (no number) for Acme Corp');
  });

  it('answers 400 without X-Signature and 401 for a tampered body, a wrong secret or a stale timestamp', async () => {
    const { request } = await captureDelivery('invoice.created', INVOICE_DATA, secret);
    const before = handled.length;

    const unsigned = await post(request.body, forwarded(request, { 'x-signature': undefined }));
    expect(unsigned).toEqual({ status: 400, body: { detail: 'Missing X-Signature header' } });

    const tampered = request.body.replace('"1500.00"', '"1.00"');
    expect(tampered).not.toBe(request.body);
    expect(await post(tampered, forwarded(request))).toEqual({ status: 401, body: { detail: 'Invalid signature' } });

    // X-Signature alone is right, but the Standard Webhooks headers are missing or stale.
    const noStandard = await post(request.body, forwarded(request, { 'webhook-signature': undefined }));
    expect(noStandard.status).toBe(400);
    const stale = await post(request.body, forwarded(request, { 'webhook-timestamp': String(Math.floor(Date.now() / 1000) - 3600) }));
    expect(stale.status).toBe(401);
    expect(stale.body.detail).toMatch(/too old/);

    const other = createReceiver({ secret: 'some-other-secret-0123', log: () => {} });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const res = await fetch(`http://127.0.0.1:${(other.address() as AddressInfo).port}/webhooks/gestiqcloud`, {
      method: 'POST',
      headers: forwarded(request),
      body: request.body,
    });
    expect(res.status).toBe(401);
    await new Promise<void>((resolve) => other.close(() => resolve()));

    expect(handled.length).toBe(before);
  });

  it('handles a replayed webhook-id once', async () => {
    const { request } = await captureDelivery('payment.received', PAYMENT_DATA, secret);
    const before = handled.length;
    const first = await post(request.body, forwarded(request));
    const replay = await post(request.body, forwarded(request));
    expect(first).toEqual({ status: 200, body: { status: 'ok' } });
    expect(replay).toEqual({ status: 200, body: { status: 'ok', duplicate: true } });
    expect(handled.slice(before).map((e) => e.webhookId)).toEqual([request.headers['webhook-id']]);
  });

  it('answers 503 with Retry-After to a retry that comes while the first attempt is still handled, so a failed handling is retried', async () => {
    const { request } = await captureDelivery('payment.received', PAYMENT_DATA, secret);
    let fail: ((error: Error) => void) | undefined;
    let handledOk = 0;
    let handle = () => new Promise<void>((_, reject) => (fail = reject));
    const slow = createReceiver({ secret, log: () => {}, onEvent: () => handle() });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => slow.close(() => resolve())));
    const slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/webhooks/gestiqcloud`;
    const send = () => fetch(slowUrl, { method: 'POST', headers: forwarded(request), body: request.body });
    const first = send();
    await expect.poll(() => fail, { timeout: 5_000 }).toBeTypeOf('function');
    const retry = await send();
    expect(retry.status).toBe(503);
    expect(retry.headers.get('retry-after')).toBe('5');
    fail!(new Error('the database is down'));
    expect((await first).status).toBe(500);
    // Not handled, so not remembered: the next retry is handled again (and now succeeds).
    handle = async () => void handledOk++;
    const third = await send();
    expect({ status: third.status, body: await third.json() }).toEqual({ status: 200, body: { status: 'ok' } });
    expect(handledOk).toBe(1);
  });
  it('keeps receiving through a secret rotation when given the new secret beside the old, and refuses with the old alone', async () => {
    const oldSecret = 'the-receiver-old-secret-0123';
    const newSecret = 'whsec_' + Buffer.alloc(32, 9).toString('base64');
    const got: string[] = [];
    const start = async (secrets: string | string[]) => {
      const r = createReceiver({ secret: secrets, log: () => {}, onEvent: (e) => void got.push(e.envelope.event) });
      await new Promise<void>((resolve) => r.listen(0, '127.0.0.1', resolve));
      closers.push(() => new Promise<void>((resolve) => r.close(() => resolve())));
      return `http://127.0.0.1:${(r.address() as AddressInfo).port}/webhooks/gestiqcloud`;
    };
    // Given both before the rotation (the procedure of its README), and one that knows only the old.
    const both = await start([newSecret, oldSecret]);
    const oldOnly = await start(oldSecret);
    const subBoth = await rest('POST', 'subscriptions', { event: 'payment.received', url: both, secret: oldSecret });
    const subOld = await rest('POST', 'subscriptions', { event: 'payment.received', url: oldOnly, secret: oldSecret });
    const before = await rest('POST', 'deliveries', { event: 'payment.received', payload: PAYMENT_DATA });
    for (const d of before.deliveries) expect((await delivered(d.id)).last_status_code).toBe(200);

    for (const sub of [subBoth, subOld]) {
      const rotated = await hl.gql(ROTATE, { id: sub.id, secret: newSecret }, key);
      expect(rotated.errors).toBeUndefined();
    }
    const after = await rest('POST', 'deliveries', { event: 'payment.received', payload: PAYMENT_DATA });
    const bySub = new Map(after.deliveries.map((d: any) => [d.subscription_id, d.id]));
    expect((await delivered(bySub.get(subBoth.id) as string)).last_status_code).toBe(200);
    // X-Signature is made with the newest secret only: the old one alone no longer verifies it.
    const refused = await eventually(async () => {
      const d = await rest('GET', `deliveries/${bySub.get(subOld.id)}`);
      return d.attempts >= 1 ? d : undefined;
    });
    expect(refused).toMatchObject({ status: expect.stringMatching(/PENDING|FAILED/), last_status_code: 401 });
    expect(got).toEqual(['payment.received', 'payment.received', 'payment.received']);
    expect(() => createReceiver({ secret: [] })).toThrow(/secret/);
  });
});

describe('examples/python/verify_webhook.py', () => {
  const script = join(ROOT, 'examples/python/verify_webhook.py');

  async function verify(secret: string, body: string, headers: object, previousSecret?: string) {
    const name = Math.random().toString(36).slice(2);
    const bodyFile = join(tmp, `${name}.body`);
    const headersFile = join(tmp, `${name}.json`);
    await writeFile(bodyFile, body);
    await writeFile(headersFile, JSON.stringify(headers));
    try {
      const { stdout } = await run('python3', [script, secret, bodyFile, headersFile, ...(previousSecret === undefined ? [] : [previousSecret])]);
      return stdout.trim();
    } catch (error) {
      return String((error as { stdout?: string }).stdout).trim();
    }
  }

  it('says valid for a real delivery (whsec_ and plain secrets) and invalid when the body or secret is wrong', async () => {
    for (const given of [undefined, 'my-webhook-secret']) {
      const { request, secret } = await captureDelivery('invoice.created', INVOICE_DATA, given);
      expect(secret.startsWith('whsec_')).toBe(given === undefined);
      expect(await verify(secret, request.body, request.headers)).toBe('valid');
      const tampered = request.body.replace('Acme Corp', 'Evil Corp');
      expect(await verify(secret, tampered, request.headers)).toMatch(/^invalid/);
      expect(await verify(`${secret}x`.replace('=x', 'x'), request.body, request.headers)).toMatch(/^invalid/);
      const { 'webhook-signature': _, ...withoutStandard } = request.headers;
      expect(await verify(secret, request.body, withoutStandard)).toMatch(/^invalid/);
    }
  });

  it('verifies a delivery made after a rotation with the new secret, alone or beside the old, and not with the old alone', async () => {
    const oldSecret = 'python-old-secret-0123456';
    const newSecret = 'python-new-secret-6543210';
    const capture = await receiverWith(() => ({ status: 200 }));
    const sub = await rest('POST', 'subscriptions', { event: 'invoice.created', url: `${capture.url}/capture`, secret: oldSecret });
    expect((await hl.gql(ROTATE, { id: sub.id, secret: newSecret }, key)).errors).toBeUndefined();
    await rest('POST', 'deliveries', { event: 'invoice.created', payload: INVOICE_DATA });
    const [request] = await capture.waitFor(1);
    // webhook-signature carries both (the old one for its 24 hours); X-Signature the new one only.
    expect(String(request!.headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(await verify(oldSecret, request!.body, request!.headers)).toMatch(/^invalid/);
    expect(await verify(newSecret, request!.body, request!.headers)).toBe('valid');
    expect(await verify(newSecret, request!.body, request!.headers, oldSecret)).toBe('valid');
    expect(await verify(oldSecret, request!.body, request!.headers, newSecret)).toBe('valid');
    // As a library, with a list: a secret that fails to decode (a whsec_ one that is no base64) does not stop the next.
    const bodyFile = join(tmp, 'rotation.body');
    await writeFile(bodyFile, request!.body);
    const env = { ...process.env, PYTHONPATH: join(ROOT, 'examples/python') };
    const check = `import json, sys\nfrom verify_webhook import verify_webhook\nbody = open(sys.argv[1], "rb").read()\nheaders = json.loads(sys.argv[2])\nprint(verify_webhook(["whsec_!!", ${JSON.stringify(newSecret)}], body, headers), verify_webhook([${JSON.stringify(oldSecret)}], body, headers))`;
    const { stdout } = await run('python3', ['-c', check, bodyFile, JSON.stringify(request!.headers)], { env });
    expect(stdout.trim()).toBe('True False');
  });

  it("gives the guide's WebhookSignature: its Test 2 runs as written, and verify_raw takes real deliveries (whsec_ and plain secrets)", async () => {
    // The guide's "Test 2: Test Signature Verification (Python)", as written but for its import.
    const test2 = `from verify_webhook import WebhookSignature
import json

# Payload
payload = {
    "invoice_id": "inv-123",
    "amount": 1500.00,
    "customer": "Acme Corp",
}

# Secret
secret = "my-webhook-secret"

# Sign
signature = WebhookSignature.sign(secret, payload)
print(f"Signature: {signature}")

# Verify
is_valid = WebhookSignature.verify(secret, payload, signature)
print(f"Valid: {is_valid}")

# Test tampered payload
tampered = {
    "invoice_id": "inv-123",
    "amount": 2000.00,  # Changed
    "customer": "Acme Corp",
}
is_valid = WebhookSignature.verify(secret, tampered, signature)
print(f"Valid (tampered): {is_valid}")  # Should be False
`;
    const env = { ...process.env, PYTHONPATH: join(ROOT, 'examples/python') };
    const { stdout } = await run('python3', ['-c', test2], { env });
    // Never raising, on what a receiver may be sent: a lone surrogate (\\ud800 in JSON), data JSON cannot hold.
    const odd = await run('python3', ['-c', `from verify_webhook import WebhookSignature as W\nprint(W.verify("s", {"a": "\\ud800"}, "sha256=00"), W.verify_raw("s", "\\ud800", "sha256=00"), W.verify("s", {"x": object()}, "x"))`], { env });
    expect(odd.stdout.trim()).toBe('False False False');
    // Nor on forged Standard Webhooks headers (README: rotation receivers call verify_standard_webhook
    // alone): each of these is a mismatch, not an exception.
    const forgedHeaders = [
      '{"webhook-id": "a", "webhook-timestamp": now, "webhook-signature": "v1,\\u00e9"}', // non-ASCII signature
      '{"webhook-id": "a", "webhook-timestamp": "\\u00b2", "webhook-signature": "v1,x"}', // a digit int() refuses
      '{"webhook-id": "a", "webhook-timestamp": "1" + "0" * 400, "webhook-signature": "v1,x"}', // overflows a float
      '{"webhook-id": "\\ud800", "webhook-timestamp": now, "webhook-signature": "v1,x"}', // a lone surrogate
      '{"webhook-id": "a", "webhook-timestamp": now, "webhook-signature": "v1,\\ud800"}',
      '{"webhook-id": "a", "webhook-timestamp": int(now), "webhook-signature": "v1,x"}', // not text
      '[["webhook-id", "a"]]', // no mapping of names
    ];
    const forged = await run(
      'python3',
      ['-c', `import time\nfrom verify_webhook import verify_standard_webhook as v\nnow = str(int(time.time()))\nprint(${forgedHeaders.map((h) => `v("s", b"{}", ${h})`).join(', ')})`],
      { env },
    );
    expect(forged.stdout.trim()).toBe('False False False False False False False');
    expect(stdout).toMatch(/^Signature: sha256=[0-9a-f]{64}\nValid: True\nValid \(tampered\): False\n$/);
    // The guide's receiver: WebhookSignature.verify_raw(WEBHOOK_SECRET, body, signature) on the raw body.
    const receiver = 'import sys\nfrom verify_webhook import WebhookSignature\nbody = open(sys.argv[2], "rb").read()\nprint(WebhookSignature.verify_raw(sys.argv[1], body, sys.argv[3]))';
    for (const given of [undefined, 'my-webhook-secret']) {
      const { request, secret } = await captureDelivery('invoice.created', INVOICE_DATA, given);
      const bodyFile = join(tmp, `${Math.random().toString(36).slice(2)}.body`);
      await writeFile(bodyFile, request.body);
      const verifyRaw = async (key: string, signature: string) => (await run('python3', ['-c', receiver, key, bodyFile, signature], { env })).stdout.trim();
      expect(await verifyRaw(secret, String(request.headers['x-signature']))).toBe('True');
      expect(await verifyRaw(`${secret}x`, String(request.headers['x-signature']))).toBe('False');
      expect(await verifyRaw(secret, 'sha256=zz')).toBe('False');
      // And what it signs is what Hookline's TypeScript helper signs.
      expect((await run('python3', ['-c', `from verify_webhook import WebhookSignature\nprint(WebhookSignature.sign_raw(${JSON.stringify(secret)}, open(${JSON.stringify(bodyFile)}, "rb").read()))`], { env })).stdout.trim()).toBe(
        request.headers['x-signature'],
      );
    }
  });

  it('is the code the README shows', async () => {
    const python = await readFile(script, 'utf8');
    const functions = python.slice(python.indexOf('import base64'), python.indexOf('\n\nif __name__'));
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(functions);
  });
});

describe('examples/python/webhook_service.py (the guide\'s Método 2, for a Python app)', () => {
  // The guide's create_invoice, with sqlite3 as the app's database: the invoice and its event in
  // one transaction, then relay() sends what the outbox holds.
  const APP = `
import json, os, sqlite3, sys
sys.path.insert(0, os.environ["EXAMPLES"])
from webhook_service import RelayError, WebhookService, create_outbox, relay

db = sqlite3.connect(os.environ["APP_DB"])
create_outbox(db)
db.execute("create table if not exists invoices (id integer primary key, number text unique, total text)")
db.commit()
service = WebhookService(db)
tenant_id = os.environ["TENANT_ID"]
token = lambda tenant: os.environ["TOKEN"] if tenant == tenant_id else None
url = os.environ["HOOKLINE"]

def create_invoice(number, total, fail=False):
    with db:
        invoice_id = db.execute("insert into invoices (number, total) values (?, ?)", (number, total)).lastrowid
        service.trigger_event(tenant_id=tenant_id, event="invoice.created", resource_type="invoice", resource_id=invoice_id,
                              data={"invoice_number": number, "amount": total, "currency": "USD", "customer": "Acme Corp", "status": "issued"})
        if fail:
            raise RuntimeError("the invoice's own write failed")

step = sys.argv[1]
if step == "create":
    create_invoice("001-001-000000001", "1500.00")
    try:
        create_invoice("001-001-000000002", "99.00", fail=True)
    except RuntimeError:
        pass
    with db:
        service.trigger_event(tenant_id=tenant_id, event="invoice.exploded", data={})
    print(json.dumps([relay(db, url, token), relay(db, url, token)]))
elif step == "crash-after-send":
    with db:
        db.execute("update hookline_outbox set sent_at = null where refused is null")
    print(json.dumps(relay(db, url, token)))
elif step == "hookline-down":
    create_invoice("001-001-000000003", "20.00")
    for wrong in ("http://127.0.0.1:9", url + "/not-hookline"):
        try:
            relay(db, wrong, token)
        except RelayError as error:
            print(json.dumps({"error": str(error)[:40]}))
elif step == "another-tenant":
    with db:  # older than the waiting invoice's row; this app has no token for that tenant
        db.execute("update hookline_outbox set created_at = '2000-01-01' where resource_id = '2'")
        service.trigger_event(tenant_id="another-tenant", event="invoice.created", data={"invoice_number": "X"})
        db.execute("update hookline_outbox set created_at = '1999-01-01' where tenant_id = 'another-tenant'")
    print(json.dumps(relay(db, url, token, limit=1)))
print(json.dumps({"outbox": db.execute("select event, resource_id, sent_at is not null, event_id, refused is not null from hookline_outbox order by created_at").fetchall()}))
`;

  async function app(step: string, appDb: string) {
    const { stdout } = await run('python3', ['-c', APP, step], {
      env: { ...process.env, EXAMPLES: join(ROOT, 'examples/python'), APP_DB: appDb, TENANT_ID: tenantId, TOKEN: key, HOOKLINE: hl.url },
      timeout: 20_000,
    });
    return stdout.trim().split('\n').map((line) => JSON.parse(line));
  }

  it('sends the committed invoice\'s event once, nothing for the rolled-back one, and keeps what Hookline refuses', async () => {
    const target = await receiverWith();
    await rest('POST', 'subscriptions', { event: 'invoice.created', url: `${target.url}/erp` });
    const appDb = join(tmp, `app-${tenantId}.sqlite`);

    const [[first, second], { outbox }] = await app('create', appDb);
    expect(first).toEqual({ sent: 1, duplicates: 0, refused: 1, held: {} });
    expect(second).toEqual({ sent: 0, duplicates: 0, refused: 0, held: {} });
    expect(outbox).toEqual([
      ['invoice.created', '1', 1, expect.stringMatching(/^[0-9a-f-]{36}$/), 0],
      ['invoice.exploded', null, 0, null, 1],
    ]);
    const [arrived] = await target.waitFor(1);
    const envelope = JSON.parse(arrived!.body);
    expect(envelope).toMatchObject({ id: outbox[0][3], event: 'invoice.created', resource_type: 'invoice', resource_id: '1', tenant_id: tenantId });
    expect(envelope.data).toEqual({ invoice_number: '001-001-000000001', amount: '1500.00', currency: 'USD', customer: 'Acme Corp', status: 'issued' });
    await delivered(arrived!.headers['webhook-id'] as string);

    // A crash after Hookline's 202 and before the row was marked: sent again, still one event.
    const [again, after] = await app('crash-after-send', appDb);
    expect(again).toEqual({ sent: 0, duplicates: 1, refused: 0, held: {} });
    expect(after.outbox[0][3]).toBe(outbox[0][3]);
    expect((await rest('GET', 'deliveries?event=invoice.created')).length).toBe(1);

    // Hookline out of reach, or a wrong address (a 404 for every row): the new row waits.
    const [down, wrongUrl, { outbox: waiting }] = await app('hookline-down', appDb);
    expect(down.error).toMatch(/^Hookline could not be reached/);
    expect(wrongUrl.error).toMatch(/^Hookline answered 404/);
    expect(waiting[2]).toEqual(['invoice.created', '2', 0, null, 0]);
    expect(target.received).toHaveLength(1);

    // A tenant Hookline will not take rows of now (401: no token for it here) holds up no other.
    const [run, { outbox: last }] = await app('another-tenant', appDb);
    expect(run).toMatchObject({ sent: 1, duplicates: 0, refused: 0, held: { 'another-tenant': expect.stringMatching(/^401 /) } });
    expect(last.find((row: unknown[]) => row[1] === '2')).toEqual(['invoice.created', '2', 1, expect.any(String), 0]);
    expect(last.filter((row: unknown[]) => row[2] === 0 && row[4] === 0)).toHaveLength(1); // the other tenant's, waiting
    await target.waitFor(2);
  });
});
