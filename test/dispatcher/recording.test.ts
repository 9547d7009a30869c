// Recording outcomes: what a receiver answers is kept as PostgreSQL can store it,
// and one outcome the database refuses does not keep the rest of its batch from
// being recorded (they would stay SENDING and be sent again).
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { eventually, startReceiver, type Receiver } from '../helpers/receiver.js';
import { DELIVERY, TRIGGER_EVENT } from '../helpers/operations.js';

let hl: TestHookline;
let key: string;
const receivers: Receiver[] = [];

beforeAll(async () => {
  hl = await startTestHookline({ HOOKLINE_RETRY_SCHEDULE: '1m', HOOKLINE_DELIVERY_TIMEOUT: '5s' });
});
beforeEach(async () => {
  ({ apiKey: key } = await hl.createTenant());
});
afterAll(async () => {
  await hl?.stop();
  await Promise.all(receivers.map((r) => r.close()));
});

async function receiverWith(respond: Receiver['respond']) {
  const r = await startReceiver(respond);
  receivers.push(r);
  return r;
}

async function subscribe(url: string) {
  const res = await hl.gql(
    'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
    { input: { url, events: ['test.event'] } },
    key,
  );
  if (res.errors) throw new Error(JSON.stringify(res.errors));
}

async function trigger(n: number): Promise<string> {
  const res = await hl.gql(TRIGGER_EVENT, { input: { event: 'test.event', data: { n } } }, key);
  if (res.errors) throw new Error(JSON.stringify(res.errors));
  return res.data.triggerEvent.deliveries[0].id;
}

const deliveryOf = async (id: string) => (await hl.gql(DELIVERY, { id }, key)).data.delivery;

it('keeps an answer with NUL characters, each shown as U+FFFD', async () => {
  const receiver = await receiverWith(() => ({ status: 200, body: 'bin\u0000ary\u0000' }));
  await subscribe(receiver.url);
  const id = await trigger(1);
  const delivered = await eventually(async () => {
    const d = await deliveryOf(id);
    return d.status === 'DELIVERED' ? d : undefined;
  });
  expect(delivered.attemptLog).toEqual([expect.objectContaining({ number: 1, statusCode: 200, responseBody: 'bin\uFFFDary\uFFFD' })]);
});

it('records the rest of a batch when the database refuses one outcome of it', async () => {
  // The three answers leave together, so their outcomes are recorded in one statement.
  let release!: () => void;
  const together = new Promise<void>((resolve) => (release = resolve));
  const receiver = await receiverWith(async () => {
    await together;
    return { status: 204 };
  });
  await subscribe(receiver.url);
  const ids = [await trigger(1), await trigger(2), await trigger(3)];
  await receiver.waitFor(3);
  // One delivery is deleted while it is being sent (by hand, say): its attempt row's
  // foreign key makes the batch's statement fail.
  const admin = new pg.Client({ connectionString: hl.databaseUrl });
  await admin.connect();
  try {
    await admin.query('delete from webhook_deliveries where id = $1', [ids[1]]);
  } finally {
    await admin.end();
  }
  release();
  for (const id of [ids[0], ids[2]]) {
    const d = await eventually(async () => {
      const found = await deliveryOf(id!);
      return found.status === 'DELIVERED' ? found : undefined;
    }, 5_000);
    expect(d.attemptLog).toEqual([expect.objectContaining({ number: 1, statusCode: 204 })]);
  }
  expect(await deliveryOf(ids[1]!)).toBeNull();
});

it('keeps outcomes the database cannot take for longer than its retries last, and records them when it can', async () => {
  // Every attempt's record fails for 12 s (a database recovering, say: SQLSTATE 57P03), longer
  // than the ~9 s one flush retries for. The outcome must be kept, not dropped and the
  // delivery sent again once its lease ran out.
  const receiver = await receiverWith(() => ({ status: 204 }));
  await subscribe(receiver.url);
  const admin = new pg.Client({ connectionString: hl.databaseUrl });
  await admin.connect();
  try {
    await admin.query(`
      create table record_outage (until timestamptz not null);
      insert into record_outage values (now() + interval '12 seconds');
      create function record_outage() returns trigger language plpgsql as $$
      begin
        if exists (select from record_outage where until > clock_timestamp()) then
          raise exception 'the database is starting up' using errcode = '57P03';
        end if;
        return new;
      end $$;
      create trigger record_outage before insert on delivery_attempts for each row execute function record_outage();`);
    const id = await trigger(1);
    await receiver.waitFor(1);
    const d = await eventually(async () => {
      const found = await deliveryOf(id);
      return found.status === 'DELIVERED' ? found : undefined;
    }, 25_000);
    expect(d.attemptLog).toEqual([expect.objectContaining({ number: 1, statusCode: 204 })]);
    expect(receiver.received).toHaveLength(1);
  } finally {
    await admin.query('drop trigger if exists record_outage on delivery_attempts; drop function if exists record_outage(); drop table if exists record_outage');
    await admin.end();
  }
}, 40_000);

it("records the rest of a batch at once while a retry's subscription is held by another transaction, and the retry once it is let go", async () => {
  // A failed attempt going back to the queue reads its subscription's row, share-locked (a
  // deactivation under way must not be missed). Waited for, one row held (an operator's
  // transaction, a change of a subscription with a large backlog) kept every tenant's outcomes
  // of the batch unrecorded: past the lease, they were sent again.
  let release!: () => void;
  const together = new Promise<void>((resolve) => (release = resolve));
  const receiver = await receiverWith(async (request) => {
    await together;
    return { status: request.path === '/failing' ? 500 : 204 };
  });
  await subscribe(`${receiver.url}/failing`);
  const [{ id: held }] = await hl.dataSource.query(`select id from webhook_subscriptions where url = $1`, [`${receiver.url}/failing`]);
  const failing = await trigger(1);
  const other = await hl.createTenant('Other');
  key = other.apiKey;
  await subscribe(`${receiver.url}/fine`);
  const fine = await trigger(2);
  await receiver.waitFor(2);
  const admin = new pg.Client({ connectionString: hl.databaseUrl });
  await admin.connect();
  try {
    await admin.query('begin');
    await admin.query('select 1 from webhook_subscriptions where id = $1 for update', [held]);
    release(); // both answers come back together: one batch
    const delivered = await eventually(async () => {
      const found = await deliveryOf(fine);
      return found.status === 'DELIVERED' ? found : undefined;
    }, 5_000);
    expect(delivered.attemptLog).toEqual([expect.objectContaining({ number: 1, statusCode: 204 })]);
    const [waiting] = await hl.dataSource.query('select status, attempts from webhook_deliveries where id = $1', [failing]);
    expect(waiting).toEqual({ status: 'SENDING', attempts: 0 });
    await admin.query('commit');
  } finally {
    await admin.query('rollback').catch(() => {});
    await admin.end();
  }
  const [retry] = await eventually(async () => {
    const rows = await hl.dataSource.query('select status, attempts, paused from webhook_deliveries where id = $1', [failing]);
    return rows[0].status === 'PENDING' ? rows : undefined;
  }, 5_000);
  expect(retry).toEqual({ status: 'PENDING', attempts: 1, paused: false });
  expect(receiver.received.map((r) => r.path).sort()).toEqual(['/failing', '/fine']); // each sent once
});

/**
 * A subscription whose endpoint answers 500 and whose row another transaction holds (as an update
 * of it does: FOR UPDATE would hold up its deliveries' inserts too), its first delivery attempted
 * and that retry's outcome left waiting for the row; `run` lets the row go with `letGo()`.
 */
async function firstRetryWaiting(path: string, run: (held: { receiver: Receiver; first: string; letGo: () => Promise<unknown> }) => Promise<void>) {
  const receiver = await receiverWith(() => ({ status: 500 }));
  await subscribe(`${receiver.url}/${path}`);
  const [{ id: held }] = await hl.dataSource.query(`select id from webhook_subscriptions where url = $1`, [`${receiver.url}/${path}`]);
  const admin = new pg.Client({ connectionString: hl.databaseUrl });
  await admin.connect();
  try {
    await admin.query('begin');
    await admin.query('select 1 from webhook_subscriptions where id = $1 for no key update', [held]);
    const first = await trigger(1);
    await receiver.waitFor(1);
    await new Promise((r) => setTimeout(r, 300)); // its outcome deferred
    await run({ receiver, first, letGo: () => admin.query('commit') });
  } finally {
    await admin.query('rollback').catch(() => {});
    await admin.end();
  }
}

it("while a retry's outcome waits for its held subscription, that subscription's other deliveries start no attempts; once let go, they do", async () => {
  // Each would fail, and add an outcome to keep and try again every second, for as long as the
  // row is held (an idle transaction can hold it for hours).
  await firstRetryWaiting('held-retries', async ({ receiver, first, letGo }) => {
    const later = [await trigger(2), await trigger(3), await trigger(4)];
    await new Promise((r) => setTimeout(r, 1_500));
    expect(receiver.received, 'no attempt started while its first outcome waits').toHaveLength(1);
    const [waiting] = await hl.dataSource.query('select status, attempts from webhook_deliveries where id = $1', [first]);
    expect(waiting).toEqual({ status: 'SENDING', attempts: 0 });
    await letGo();
    await receiver.waitFor(4, 10_000);
    const rows = await eventually(async () => {
      const found = await hl.dataSource.query(`select id, status, attempts from webhook_deliveries where id = any($1) and status = 'PENDING' and attempts = 1`, [[first, ...later]]);
      return found.length === 4 ? found : undefined;
    }, 10_000);
    expect(rows).toHaveLength(4);
    expect(receiver.received).toHaveLength(4); // each once
  });
});

it('a subscription whose waiting outcome is given up on (the database refuses it) starts attempts again', async () => {
  try {
    await firstRetryWaiting('given-up', async ({ receiver, first, letGo }) => {
      // Once the row is let go, its outcome's record is refused (an operator's trigger, say).
      await hl.dataSource.query(`
        create function refuse_given_up() returns trigger language plpgsql as $$
        begin
          if new.delivery_id = '${first}' then raise exception 'refused by an operator''s trigger'; end if;
          return new;
        end $$;
        create trigger refuse_given_up before insert on delivery_attempts for each row execute function refuse_given_up();`);
      await letGo();
      await new Promise((r) => setTimeout(r, 1_500)); // tried again, refused, given up on
      await trigger(2);
      await receiver.waitFor(2, 5_000);
    });
  } finally {
    await hl.dataSource.query('drop trigger if exists refuse_given_up on delivery_attempts; drop function if exists refuse_given_up()');
  }
});

it('shows the attempt log oldest first, also when an attempt was recorded after a later one (its lease had expired)', async () => {
  // Such an attempt is numbered when it is recorded: after the attempt made under the claim that followed.
  const receiver = await receiverWith(() => ({ status: 204 }));
  await subscribe(`${receiver.url}/late`);
  const id = await trigger(1);
  const delivered = await eventually(async () => {
    const found = await deliveryOf(id);
    return found.status === 'DELIVERED' ? found : undefined;
  }, 5_000);
  const [{ tenant_id }] = await hl.dataSource.query('select tenant_id from webhook_deliveries where id = $1', [id]);
  const earlier = new Date(new Date(delivered.attemptLog[0].startedAt).getTime() - 5_000);
  await hl.dataSource.query(
    `insert into delivery_attempts (delivery_id, number, tenant_id, started_at, duration_ms, status_code, error) values ($1, 2, $2, $3, 7, 503, 'HTTP 503')`,
    [id, tenant_id, earlier],
  );
  await hl.dataSource.query('update webhook_deliveries set attempts = 2 where id = $1', [id]);
  const shown = await deliveryOf(id);
  expect(shown.attemptLog.map((a: { number: number; statusCode: number }) => [a.number, a.statusCode])).toEqual([[2, 503], [1, 204]]);
});
