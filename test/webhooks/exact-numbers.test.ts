// Event data reaches the receiver exactly as sent, numbers included. JavaScript reads a JSON
// number as a double, so one it cannot hold (12345678901234567890, a 20-digit decimal, 1e-400)
// would be stored, signed and delivered as another number with a 202: it is refused instead,
// BAD_USER_INPUT naming where it is, on every way in (GraphQL's JSON body, form body and
// inline literals, graphql-ws, REST), and nothing is written. Long numbers a double does hold
// (0.30000000000000004, 1e+300, 2^53 - 1) are accepted and arrive as their value.
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { inexactNumber, keptExactly, pathAt } from '../../src/json-numbers.js';
import { hooklineAndReceiver } from '../helpers/live.js';
import { eventually } from '../helpers/receiver.js';
import { TRIGGER_EVENT as TRIGGER } from '../helpers/operations.js';

describe('which numbers a double keeps', () => {
  it('keeps a number whose value reads back, however it is written', () => {
    for (const kept of ['0', '-0', '1.10', '1E+2', '0.30000000000000004', '9007199254740991', '100000000000000000000', '1e+300', '5e-324', '0.000000000000000000001', '1e999']) {
      expect(keptExactly(kept), kept).toBe(true);
    }
  });
  it('does not keep more digits than a double holds, nor what underflows', () => {
    for (const lost of ['9007199254740993', '12345678901234567890', '12345678901234.5678', '0.12345678901234567891', '1e-400', '-1.2345678901234567891e200']) {
      expect(keptExactly(lost), lost).toBe(false);
    }
  });
  it('finds a number outside strings only, and its path', () => {
    expect(inexactNumber('{"id": "12345678901234567890", "n": 1}')).toBeUndefined();
    const json = '{"a": [1, {"b\\"c": 2}], "d": {"e": [3, 4, 12345678901234567890]}}';
    const found = inexactNumber(json)!;
    expect(found.text).toBe('12345678901234567890');
    expect(pathAt(json, found.offset, 'payload')).toBe('payload.d.e[2]');
    expect(pathAt('[0, 1, 12345678901234567890]', 7)).toBe('[2]');
    // Keys that would read as more than one step are quoted.
    const dotted = '{"a.b": [{"x[0]": 12345678901234567890}]}';
    expect(pathAt(dotted, inexactNumber(dotted)!.offset, 'data')).toBe('data["a.b"][0]["x[0]"]');
  });
  it('looks at text in one pass, however it is made: strings that never end, numbers by the thousand', () => {
    // A regular expression over strings took time in the square of the length on such text
    // (each quote a new scan to the end): 80 KB took 2 s, and one request held the process.
    expect(inexactNumber(`"${'\\"'.repeat(300_000)}1234567890123456789`)).toBeUndefined();
    expect(inexactNumber(`[${'0.30000000000000004,'.repeat(50_000)}1]`)).toBeUndefined();
    expect(inexactNumber(`[${'0.30000000000000004,'.repeat(50_000)}0.123456789012345678901]`)?.text).toBe('0.123456789012345678901');
    // Nor a run of zeros within a number (/0+$/ took time in the square of its length: 100 KB, 7 s).
    const zeros = `1.${'0'.repeat(300_000)}1`;
    expect(inexactNumber(`{"x": ${zeros}}`)?.text).toBe(zeros);
    expect(keptExactly(`0.${'0'.repeat(300_000)}1`)).toBe(false); // 1e-300001: 0
  });
});

describe('over the API', () => {
  const fixture = hooklineAndReceiver();
  let key: string;
  const headers = () => ({ authorization: `Bearer ${key}`, 'content-type': 'application/json' });
  const written = async () => {
    const [{ n }] = await fixture.hl.dataSource.query('select (select count(*) from webhook_events) + (select count(*) from webhook_deliveries) as n');
    return Number(n);
  };

  it('sets up a tenant and a subscription to every event', async () => {
    key = (await fixture.hl.createTenant()).apiKey;
    const res = await fixture.hl.gql(
      'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }',
      { input: { url: `${fixture.receiver.url}/hook`, events: ['*'] } },
      key,
    );
    expect(res.errors).toBeUndefined();
  });

  it('refuses a number it cannot keep, on every way in, naming where it is, and writes nothing', async () => {
    const data = '{"invoice": {"lines": [{"qty": 1}, {"account": 12345678901234567890}]}}';
    const before = await written();
    const refusals: Array<{ status?: number; error: any; where: string }> = [];

    const json = await fetch(`${fixture.hl.url}/graphql`, {
      method: 'POST',
      headers: headers(),
      body: `{"query": ${JSON.stringify(TRIGGER)}, "variables": {"input": {"event": "test.event", "data": ${data}}}}`,
    });
    refusals.push({ status: json.status, error: (await json.json()).errors?.[0], where: 'variables.input.data.invoice.lines[1].account' });

    const form = await fetch(`${fixture.hl.url}/graphql`, {
      method: 'POST',
      headers: { ...headers(), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: TRIGGER, variables: `{"input": {"event": "test.event", "data": ${data}}}` }).toString(),
    });
    refusals.push({ status: form.status, error: (await form.json()).errors?.[0], where: 'variables.input.data.invoice.lines[1].account' });

    // As Yoga also reads a JSON body.
    const graphqlJson = await fetch(`${fixture.hl.url}/graphql`, {
      method: 'POST',
      headers: { ...headers(), 'content-type': 'application/graphql+json' },
      body: `{"query": ${JSON.stringify(TRIGGER)}, "variables": {"input": {"event": "test.event", "data": ${data}}}}`,
    });
    refusals.push({ status: graphqlJson.status, error: (await graphqlJson.json()).errors?.[0], where: 'variables.input.data.invoice.lines[1].account' });

    // A form's key percent-encoded, as URLSearchParams reads it (`%76` is `v`).
    const escapedKey = await fetch(`${fixture.hl.url}/graphql`, {
      method: 'POST',
      headers: { ...headers(), 'content-type': 'application/x-www-form-urlencoded' },
      body: `query=${encodeURIComponent(TRIGGER)}&%76ariables=${encodeURIComponent(`{"input": {"event": "test.event", "data": ${data}}}`)}`,
    });
    refusals.push({ status: escapedKey.status, error: (await escapedKey.json()).errors?.[0], where: 'variables.input.data.invoice.lines[1].account' });

    const inline = await fixture.hl.gql('mutation { triggerEvent(input: { event: "test.event", data: { invoice: { lines: [{}, { account: 12345678901234567890 }] } } }) { event { id } } }', {}, key);
    // Where it is within the literal (graphql-js names the argument, with its text).
    refusals.push({ error: inline.errors?.[0], where: 'invoice.lines[1].account: the number 12345678901234567890' });

    // graphql-ws's client writes with JSON.stringify, which cannot write such a number: the
    // message is written as text, as any other client could write it.
    const socket = new WebSocket(`${fixture.hl.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
    const answer = await new Promise<any>((resolve, reject) => {
      socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } })));
      socket.on('message', (raw) => {
        const message = JSON.parse(String(raw));
        if (message.type === 'connection_ack') {
          socket.send(`{"id": "op-1", "type": "subscribe", "payload": {"query": ${JSON.stringify(TRIGGER)}, "variables": {"input": {"event": "test.event", "data": ${data}}}}}`);
        }
        if (message.id === 'op-1') resolve(message);
      });
      socket.on('error', reject);
    });
    socket.close();
    expect(answer.type).toBe('error');
    refusals.push({ error: answer.payload[0], where: 'variables.input.data.invoice.lines[1].account' });

    const rest = await fetch(`${fixture.hl.url}/api/v1/tenant/webhooks/deliveries`, {
      method: 'POST',
      headers: headers(),
      body: `{"event": "test.event", "payload": ${data}}`,
    });
    const restError = (await rest.json()).error;
    expect(rest.status).toBe(400);
    expect(restError).toMatchObject({ code: 'BAD_USER_INPUT', field: 'payload' });
    expect(restError.message).toContain('payload.invoice.lines[1].account: the number 12345678901234567890 cannot be kept exactly');
    expect(restError.message).toContain('12345678901234567000');

    for (const { status, error, where } of refusals) {
      if (status !== undefined) expect(status, where).toBe(400);
      expect(error?.extensions?.code, JSON.stringify(error)).toBe('BAD_USER_INPUT');
      expect(error.message).toContain(where);
      expect(error.message).toContain('cannot be kept exactly');
      expect(error.message).toContain('send it as a string');
    }
    expect(await written()).toBe(before);
  });

  it('accepts long numbers a double holds, and delivers each as its value', async () => {
    const data = '{"sum": 0.30000000000000004, "big": 1e+300, "safe": 9007199254740991, "round": 100000000000000000000, "id": "12345678901234567890"}';
    const res = await fetch(`${fixture.hl.url}/api/v1/tenant/webhooks/deliveries`, {
      method: 'POST',
      headers: headers(),
      body: `{"event": "test.event", "payload": ${data}}`,
    });
    expect(res.status).toBe(202);
    const { event_id: eventId } = await res.json();
    const received = await eventually(() => fixture.receiver.received.find((r) => r.headers['webhook-id'] && r.body.includes(eventId)));
    expect(received.body).toContain('"data":{"sum":0.30000000000000004,"big":1e+300,"safe":9007199254740991,"round":100000000000000000000,"id":"12345678901234567890"}');
  });
});
