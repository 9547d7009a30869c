// The sender on its own, against real HTTP servers on loopback: what an
// attempt records for each kind of answer, and that its timeout covers the
// whole attempt, connection included.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Sender, RESPONSE_EXCERPT_BYTES } from '../../src/dispatcher/sender.js';
import { IDLE_CONNECTION_MS, createGuardedAgent, deliveryAgent } from '../../src/dispatcher/target-guard.js';
import { StandardWebhookVerifier, decodeSecrets } from '../../src/signing/standard-webhooks.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const KEYS = decodeSecrets([SECRET]);
const BODY = JSON.stringify({ id: 'evt_1', event: 'invoice.created', data: { amount: '10.00' } });

const servers: http.Server[] = [];
const agent = createGuardedAgent({ allowPrivate: true, connections: 4 });

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((done) => s.close(done))));
});
afterAll(() => agent.close());

interface Seen {
  headers: http.IncomingHttpHeaders;
  body: string;
  path: string | undefined;
}

async function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      seen.push({ headers: req.headers, body, path: req.url });
      handler(req, res);
    });
  });
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

const send = (sender: Sender, url: string, headers: Record<string, string> | null = null) =>
  sender.send({ deliveryId: 'dlv_1', event: 'invoice.created', url, body: BODY, keys: KEYS, headers });

/**
 * A receiver in a thread of its own, so that it answers while the test's thread is blocked:
 * 204 `delayMs` after each request, each request told in `requests` as it comes.
 */
async function threadReceiver(delayMs: number): Promise<{ url: string; requests: unknown[]; next: () => Promise<unknown>; stop: () => Promise<number> }> {
  const thread = new Worker(
    `const http = require('node:http');
     const { parentPort } = require('node:worker_threads');
     const server = http.createServer((req, res) => {
       req.resume();
       req.on('end', () => { parentPort.postMessage('request'); setTimeout(() => { res.writeHead(204); res.end(); }, ${delayMs}); });
     });
     server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));`,
    { eval: true },
  );
  const port = await new Promise<number>((resolve) => thread.once('message', resolve));
  const requests: unknown[] = [];
  thread.on('message', (message) => requests.push(message));
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    next: () => new Promise((resolve) => thread.once('message', resolve)),
    stop: () => thread.terminate(),
  };
}

describe('Sender', () => {
  it('POSTs the exact body, signed, to the path and query of the URL, with the subscription headers', async () => {
    const { url, seen } = await serve((_req, res) => res.writeHead(204).end());
    const result = await send(new Sender(agent, 5_000), `${url}/hooks/in?tenant=a&x=1`, { 'x-custom': 'yes' });
    expect(result).toMatchObject({ ok: true, statusCode: 204, responseBody: null });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.path).toBe('/hooks/in?tenant=a&x=1');
    expect(seen[0]!.body).toBe(BODY);
    expect(seen[0]!.headers).toMatchObject({
      'x-custom': 'yes',
      'user-agent': 'Hookline/1',
      'webhook-id': 'dlv_1',
      'x-webhook-event': 'invoice.created',
      'x-webhook-delivery': 'dlv_1',
    });
    expect(() => new StandardWebhookVerifier(SECRET).verifySignature(seen[0]!.body, seen[0]!.headers)).not.toThrow();
  });

  it('records a failed answer with its status, its body and Retry-After', async () => {
    const { url } = await serve((_req, res) => res.writeHead(503, { 'retry-after': '7' }).end('busy'));
    const result = await send(new Sender(agent, 5_000), url);
    expect(result).toMatchObject({ ok: false, statusCode: 503, responseBody: 'busy', error: 'HTTP 503', retryAfter: '7' });
  });

  it('waits past an informational 1xx answer for the final one', async () => {
    const { url } = await serve((_req, res) => {
      res.writeProcessing();
      setTimeout(() => res.writeHead(200).end('ok'), 20);
    });
    expect(await send(new Sender(agent, 5_000), url)).toMatchObject({ ok: true, statusCode: 200, responseBody: 'ok' });
  });

  it('keeps 4 KiB of a long answer and stops reading a huge one without waiting for its end', async () => {
    let finished = false;
    const { url } = await serve((_req, res) => {
      res.writeHead(500);
      // 1 MiB in 16 KiB pieces, slowly: reading it all would take about 3 s.
      let sent = 0;
      const timer = setInterval(() => {
        if (res.destroyed || sent >= 1024 * 1024) {
          clearInterval(timer);
          finished = sent >= 1024 * 1024;
          return res.end();
        }
        res.write('x'.repeat(16 * 1024));
        sent += 16 * 1024;
      }, 50);
      res.on('close', () => clearInterval(timer));
    });
    const started = Date.now();
    const result = await send(new Sender(agent, 10_000), url);
    expect(result).toMatchObject({ ok: false, statusCode: 500, error: 'HTTP 500' });
    expect(Buffer.byteLength(result.responseBody!)).toBe(RESPONSE_EXCERPT_BYTES);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(finished).toBe(false);
  });

  it('keeps whole characters of a long answer: one the 4 KiB cut falls inside is left out, not made U+FFFD', async () => {
    // "é" is 2 bytes, "€" 3: after 4095 bytes of "x", the cut falls inside the next character.
    for (const [character, fits] of [['é', 0], ['€', 0], ['a', 1]] as const) {
      const { url } = await serve((_req, res) => res.writeHead(500).end(`${'x'.repeat(RESPONSE_EXCERPT_BYTES - 1)}${character.repeat(10)}`));
      const result = await send(new Sender(agent, 5_000), url);
      expect(result.responseBody, character).toBe(`${'x'.repeat(RESPONSE_EXCERPT_BYTES - 1)}${character.repeat(fits)}`);
    }
    // A byte order mark is kept in a cut answer, as in a whole one.
    const bom = await serve((_req, res) => res.writeHead(500).end(`\uFEFF${'x'.repeat(RESPONSE_EXCERPT_BYTES)}`));
    expect((await send(new Sender(agent, 5_000), bom.url)).responseBody).toBe(`\uFEFF${'x'.repeat(RESPONSE_EXCERPT_BYTES - 3)}`);
    // Cut by the timeout inside a character: the bytes of it that came are left out too.
    const stalled = await serve((_req, res) => {
      res.writeHead(500);
      res.write(Buffer.concat([Buffer.from('ab'), Buffer.from('€').subarray(0, 2)]));
    });
    expect(await send(new Sender(agent, 500), stalled.url)).toMatchObject({ statusCode: 500, responseBody: 'ab' });
    // A short answer that is not UTF-8 is kept as it was read: its bad bytes are U+FFFD.
    const { url } = await serve((_req, res) => res.writeHead(500).end(Buffer.from([0x6f, 0x6b, 0xe2, 0x82])));
    expect((await send(new Sender(agent, 5_000), url)).responseBody).toBe('ok\uFFFD');
  });

  it('does not follow a redirect', async () => {
    const target = await serve((_req, res) => res.writeHead(204).end());
    const { url } = await serve((_req, res) => res.writeHead(301, { location: `${target.url}/moved` }).end());
    const result = await send(new Sender(agent, 5_000), url);
    expect(result).toMatchObject({ ok: false, statusCode: 301, error: 'HTTP 301 (redirects are not followed)' });
    expect(target.seen).toHaveLength(0);
  });

  it('gives up at the timeout while waiting for the answer', async () => {
    const { url } = await serve(() => {
      // never answers
    });
    const result = await send(new Sender(agent, 300), url);
    expect(result).toMatchObject({ ok: false, statusCode: null, error: 'timeout after 300 ms' });
    expect(result.durationMs).toBeGreaterThanOrEqual(290);
    expect(result.durationMs).toBeLessThan(2_000);
  });

  it('takes an answer that came while the process stood still past the timeout, rather than the timeout', async () => {
    const receiver = await threadReceiver(50);
    try {
      const sending = send(new Sender(agent, 1_000), receiver.url);
      await receiver.next(); // the request is there
      // This thread stands still past the timeout, as a process stopped (SIGSTOP) or starved of
      // CPU does, while the receiver answers (50 ms after the request).
      const until = Date.now() + 1_500;
      while (Date.now() < until);
      const result = await sending;
      expect(result).toMatchObject({ ok: true, statusCode: 204 });
      expect(result.durationMs).toBeGreaterThanOrEqual(1_500);
    } finally {
      await receiver.stop();
    }
  });

  it('never sends an attempt whose connection opens only after the process stood still past its timeout', async () => {
    const receiver = await threadReceiver(0);
    try {
      const sending = send(new Sender(agent, 300), receiver.url);
      // Stands still before the connection has opened: when the thread runs again, the timer
      // has expired, and the connection is ready in the same turn.
      const until = Date.now() + 800;
      while (Date.now() < until);
      expect(await sending).toMatchObject({ ok: false, statusCode: null, error: 'timeout after 300 ms' });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(receiver.requests).toEqual([]);
    } finally {
      await receiver.stop();
    }
  });

  it('takes a status given before the timeout as the answer, however slow its body', async () => {
    for (const status of [200, 503]) {
      const { url } = await serve((_req, res) => {
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.write('accepted, ');
        const timer = setInterval(() => res.write('.'), 50); // a body that never ends
        res.on('close', () => clearInterval(timer));
      });
      const result = await send(new Sender(agent, 300), url);
      expect(result).toMatchObject(status === 200 ? { ok: true, statusCode: 200 } : { ok: false, statusCode: 503, error: 'HTTP 503' });
      expect(result.responseBody).toMatch(/^accepted, \.*/);
      expect(result.durationMs).toBeLessThan(2_000);
    }
    // The same when the connection is lost in the middle of the body.
    const { url } = await serve((_req, res) => {
      res.writeHead(200);
      res.write('accepted, then gone');
      setTimeout(() => res.socket?.destroy(), 50);
    });
    expect(await send(new Sender(agent, 5_000), url)).toMatchObject({ ok: true, statusCode: 200, responseBody: 'accepted, then gone' });
  });

  it('counts the connection in the timeout, and never sends once the attempt has timed out', async () => {
    const { url, seen } = await serve((_req, res) => res.writeHead(204).end());
    // A resolver that answers only after 800 ms: the connection cannot start before then.
    const slow = createGuardedAgent({
      allowPrivate: true,
      lookup: (_host, _options, callback) => setTimeout(() => callback(null, [{ address: '127.0.0.1', family: 4 }]), 800),
    });
    try {
      const result = await send(new Sender(slow, 200), url.replace('127.0.0.1', 'slow.test'));
      expect(result).toMatchObject({ ok: false, statusCode: null, error: 'timeout after 200 ms' });
      expect(result.durationMs).toBeLessThan(700);
      await new Promise((done) => setTimeout(done, 1_000)); // the connection completes meanwhile
      expect(seen).toHaveLength(0);
    } finally {
      await slow.close();
    }
  });

  it('sends a URL ending in a bare ? as written (its empty query kept)', async () => {
    const { url, seen } = await serve((_req, res) => res.writeHead(204).end());
    expect(await send(new Sender(agent, 5_000), `${url}/hooks?`)).toMatchObject({ ok: true });
    expect(seen.map((s) => s.path)).toEqual(['/hooks?']);
  });

  it("records a TLS failure by OpenSSL's reason, not its source file and line", async () => {
    const { url, seen } = await serve((_req, res) => res.writeHead(204).end());
    const result = await send(new Sender(agent, 5_000), `${url.replace('http:', 'https:')}/hooks`); // a plain HTTP port
    expect(result).toMatchObject({ ok: false, statusCode: null, error: 'ERR_SSL_WRONG_VERSION_NUMBER: wrong version number' });
    expect(seen).toHaveLength(0);
  });

  it('records a refused connection and a malformed URL as failed attempts', async () => {
    const { url } = await serve((_req, res) => res.writeHead(204).end());
    const closed = servers.pop()!;
    await new Promise((done) => closed.close(done));
    const refused = await send(new Sender(agent, 5_000), url);
    expect(refused).toMatchObject({ ok: false, statusCode: null });
    expect(refused.ok || refused.error).toMatch(/ECONNREFUSED/);
    const malformed = await send(new Sender(agent, 5_000), 'not a url');
    expect(malformed).toMatchObject({ ok: false, statusCode: null });
  });
});

describe("the dispatcher's agent", () => {
  it('takes a 2xx with large headers (40 KiB of cookies) as delivered, not as a failed attempt', async () => {
    const { url } = await serve((_req, res) => {
      res.setHeader('set-cookie', Array.from({ length: 400 }, (_, i) => `c${i}=${'x'.repeat(90)}`));
      res.writeHead(200).end('ok');
    });
    const dispatcherAgent = deliveryAgent(true, 5_000);
    try {
      expect(await send(new Sender(dispatcherAgent, 5_000), url)).toMatchObject({ ok: true, statusCode: 200, responseBody: 'ok' });
      // Node's own limit (what undici reads by default) would have refused it.
      expect(await send(new Sender(agent, 5_000), url)).toMatchObject({ ok: false, error: expect.stringMatching(/HEADERS_OVERFLOW/) });
    } finally {
      await dispatcherAgent.close();
    }
  });

  it('lets an idle connection go before a receiver that names no keep-alive timeout closes it at 5 s (uvicorn)', async () => {
    // A delivery written on a connection just as the receiver closes it fails, to an endpoint that is up.
    let closedAfter: number | undefined;
    const server = net.createServer((socket) => {
      let request = '';
      socket.on('data', (chunk) => {
        request += chunk.toString('latin1');
        const head = request.indexOf('\r\n\r\n');
        const length = Number(/content-length: *(\d+)/i.exec(request)?.[1] ?? 0);
        if (head < 0 || request.length < head + 4 + length) return;
        socket.write('HTTP/1.1 204 No Content\r\n\r\n'); // no Keep-Alive hint
        const answered = performance.now();
        socket.on('end', () => (closedAfter = performance.now() - answered));
      });
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const dispatcherAgent = deliveryAgent(true, 5_000);
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      expect(await send(new Sender(dispatcherAgent, 5_000), url)).toMatchObject({ ok: true, statusCode: 204 });
      await new Promise((done) => setTimeout(done, 5_000));
      expect(closedAfter).toBeDefined();
      expect(closedAfter!).toBeGreaterThanOrEqual(IDLE_CONNECTION_MS - 100);
    } finally {
      await dispatcherAgent.close();
      await new Promise((done) => server.close(done));
    }
  });
});
