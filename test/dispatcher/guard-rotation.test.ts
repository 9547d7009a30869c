// At delivery time: the target guard on the address actually connected, and
// the signatures during and after a secret rotation's 24-hour grace.
import { Webhook as StandardWebhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';

const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { secret subscription { id } } }';
const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { deliveries { id } } }';
const DELIVERY = 'query($id: ID!) { delivery(id: $id) { status attempts lastError attemptLog { error } } }';

describe('a target that became private after it was saved', () => {
  let hl: TestHookline;
  let receiver: Receiver;
  beforeAll(async () => {
    hl = await startTestHookline({ HOOKLINE_ALLOW_PRIVATE_TARGETS: 'false', HOOKLINE_RETRY_SCHEDULE: '100ms' });
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await hl?.stop();
    await receiver?.close();
  });

  it('is refused when saved, by literal address and by a name resolving to loopback', async () => {
    const { apiKey } = await hl.createTenant();
    for (const url of [receiver.url, `http://localhost:${receiver.port}/`]) {
      const res = await hl.gql(CREATE, { input: { url, events: ['*'] } }, apiKey);
      expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'url' });
    }
  });

  for (const host of ['127.0.0.1', 'localhost']) {
    it(`is refused at connect time (${host})`, async () => {
      const { apiKey } = await hl.createTenant();
      // Saved while public (a literal public address is not resolved and never contacted)...
      const created = await hl.gql(CREATE, { input: { url: 'http://93.184.216.34/hook', events: ['*'] } }, apiKey);
      const id = created.data.createWebhookSubscription.subscription.id;
      // ...then its address turns private, as a DNS change would make it.
      await hl.dataSource.query('update webhook_subscriptions set url = $1 where id = $2', [`http://${host}:${receiver.port}/hook`, id]);
      const { data } = await hl.gql(TRIGGER, { input: { event: 'test.event', data: { n: 1 } } }, apiKey);
      const deliveryId = data.triggerEvent.deliveries[0].id;
      const failed = await eventually(async () => {
        const res = await hl.gql(DELIVERY, { id: deliveryId }, apiKey);
        return res.data.delivery.status === 'FAILED' ? res.data.delivery : undefined;
      });
      expect(failed.lastError).toMatch(/refused/);
      expect(failed.attemptLog).toHaveLength(2);
      expect(receiver.received).toHaveLength(0);
    });
  }
});

describe('secret rotation at delivery time', () => {
  let hl: TestHookline;
  let receiver: Receiver;
  let now = Date.now();
  beforeAll(async () => {
    hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '100ms' }, { clock: { now: () => new Date(now) } });
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await hl?.stop();
    await receiver?.close();
  });

  it('signs with both secrets for 24 hours, then with the new one only', async () => {
    const { apiKey } = await hl.createTenant();
    const created = await hl.gql(CREATE, { input: { url: receiver.url, events: ['test.event'] } }, apiKey);
    const oldSecret = created.data.createWebhookSubscription.secret;
    const id = created.data.createWebhookSubscription.subscription.id;
    const rotated = await hl.gql('mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }', { id }, apiKey);
    const newSecret = rotated.data.rotateWebhookSecret.secret;

    const send = async (n: number) => {
      await hl.gql(TRIGGER, { input: { event: 'test.event', data: { n } } }, apiKey);
      const requests = await receiver.waitFor(n);
      return requests[n - 1]!;
    };
    const verifies = (secret: string, r: { body: string; headers: any }) => {
      try {
        new StandardWebhook(secret).verify(r.body, r.headers);
        return true;
      } catch {
        return false;
      }
    };

    now += 23 * 60 * 60 * 1000; // within the grace period
    const during = await send(1);
    expect(String(during.headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(verifies(oldSecret, during)).toBe(true);
    expect(verifies(newSecret, during)).toBe(true);
    const newKey = Buffer.from(newSecret.slice(6), 'base64');
    const { createHmac } = await import('node:crypto');
    expect(during.headers['x-signature']).toBe(`sha256=${createHmac('sha256', newKey).update(during.body).digest('hex')}`);

    now += 2 * 60 * 60 * 1000; // 25 hours after the rotation
    const after = await send(2);
    expect(String(after.headers['webhook-signature']).split(' ')).toHaveLength(1);
    expect(verifies(oldSecret, after)).toBe(false);
    expect(verifies(newSecret, after)).toBe(true);
  });

  it('keeps every secret replaced within 24 hours signing for its own 24 hours: a second rotation (a retried one) drops none', async () => {
    const { apiKey } = await hl.createTenant();
    const created = await hl.gql(CREATE, { input: { url: `${receiver.url}/twice`, events: ['test.event'], secret: 'secret-A-0123456789' } }, apiKey);
    const id = created.data.createWebhookSubscription.subscription.id;
    const rotate = async (secret?: string) => {
      const res = await hl.gql('mutation($id: ID!, $secret: String) { rotateWebhookSecret(id: $id, secret: $secret) { secret } }', { id, secret }, apiKey);
      expect(res.errors).toBeUndefined();
      return res.data.rotateWebhookSecret.secret as string;
    };
    const signers = async (n: number, attempt = 1) => {
      if (attempt === 1) await hl.gql(TRIGGER, { input: { event: 'test.event', data: { twice: n } } }, apiKey);
      const request = await eventually(() => receiver.received.filter((r) => r.path === '/twice' && JSON.parse(r.body).data.twice === n)[attempt - 1]);
      const signatures = String(request.headers['webhook-signature']).split(' ');
      return { signatures: signatures.length, verified: secrets.filter((secret) => verifiesRaw(secret, request)) };
    };
    // The first attempt of event 1 fails: its retry is claimed from the queue, not handed off.
    receiver.respond = (r) => (r.path === '/twice' && JSON.parse(r.body).data.twice === 1 && !retried++ ? { status: 500 } : { status: 204 });
    let retried = 0;
    const verifiesRaw = (secret: string, r: { body: string; headers: any }) => {
      try {
        new StandardWebhook(Buffer.from(secret, 'utf8'), { format: 'raw' }).verify(r.body, r.headers);
        return true;
      } catch {
        return false;
      }
    };
    const secrets = ['secret-A-0123456789', 'secret-B-0123456789', 'secret-C-0123456789'];
    const start = now;
    await rotate(secrets[1]); // A signs until start + 24h
    now = start + 60 * 60 * 1000;
    await rotate(secrets[2]); // B until start + 25h; A still until start + 24h
    expect(await signers(1)).toEqual({ signatures: 3, verified: secrets });
    expect(await signers(1, 2)).toEqual({ signatures: 3, verified: secrets });
    now = start + 24.5 * 60 * 60 * 1000;
    expect(await signers(2)).toEqual({ signatures: 2, verified: [secrets[1], secrets[2]] });
    now = start + 25.5 * 60 * 60 * 1000;
    expect(await signers(3)).toEqual({ signatures: 1, verified: [secrets[2]] });

    // Back to a secret replaced within the day: it signs once, as the newest, and the one it
    // replaces signs beside it.
    await rotate(secrets[0]);
    await rotate(secrets[1]);
    await rotate(secrets[0]);
    const back = await signers(4);
    expect(back.signatures).toBe(3);
    expect(back.verified).toEqual(secrets);
  });
});
