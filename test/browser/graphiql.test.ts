// GraphiQL at /graphql in a real browser (Debian's chromium, driven by
// playwright-core): it loads from the server alone, without a CDN, and a
// subscription started in it, with the Authorization header typed into its
// headers editor, shows the update that a trigger causes.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestHookline, type TestHookline } from '../helpers/hookline.js';
import { moreSubscribers } from '../helpers/live.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const CHROMIUM = '/usr/bin/chromium';
const OUTPUT = 'test-output';
const CREATE = 'mutation($input: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $input) { subscription { id } } }';
const TRIGGER = 'mutation($input: TriggerEventInput!) { triggerEvent(input: $input) { deliveries { id } } }';
const SUBSCRIPTION = 'subscription WatchDeliveries { deliveryUpdated { id status attempts event } }';

let hl: TestHookline;
let receiver: Receiver;
let tenant: { id: string; apiKey: string };
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)`);
  await mkdir(OUTPUT, { recursive: true });
  hl = await startTestHookline();
  receiver = await startReceiver();
  tenant = await hl.createTenant('Browser');
  const created = await hl.gql(CREATE, { input: { url: receiver.url, events: ['invoice.*'] } }, tenant.apiKey);
  if (created.errors) throw new Error(JSON.stringify(created.errors));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await hl?.stop();
  await receiver?.close();
});

/** Requests that went anywhere but this machine's loopback (blob: and data: URLs are local). */
function offHost(urls: string[]): string[] {
  return urls.filter((raw) => {
    const url = new URL(raw.startsWith('blob:') ? raw.slice('blob:'.length) : raw);
    return url.protocol !== 'data:' && url.hostname !== '127.0.0.1';
  });
}

/** Replaces the whole text of a Monaco editor: focus it, select all, insert. */
async function setEditor(page: Page, editor: string, text: string): Promise<void> {
  await page.locator(`${editor} .monaco-editor`).first().click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  // One line, inserted as one input event: Monaco adds no closing brackets or quotes to it
  // (it does to text with line breaks); the prettify button lays it out afterwards.
  if (text.includes('\n')) throw new Error('setEditor inserts a single line');
  await page.keyboard.insertText(text);
}

/** The text Monaco shows in an editor (its rendered lines; non-breaking spaces made plain). */
async function editorText(page: Page, editor: string): Promise<string> {
  const text = await page.locator(`${editor} .monaco-editor .view-lines`).first().innerText();
  return text.replace(/\u00a0/g, ' ');
}

describe('GraphiQL in a real browser', () => {
  it('loads from the server alone and runs a subscription with the typed Authorization header', async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const requests: string[] = [];
    const sseAuthorization: Array<string | undefined> = [];
    const browserErrors: string[] = [];
    page.on('request', (request) => {
      requests.push(request.url());
      if (process.env.DEBUG_BROWSER) console.log(request.method(), request.url(), JSON.stringify(request.headers()), request.postData()?.slice(0, 200));
      const headers = request.headers();
      // GraphiQL sends a subscription over SSE as a GET with the operation in the query string.
      if (/text\/event-stream/.test(headers.accept ?? '') && /deliveryUpdated/.test(`${request.url()} ${request.postData() ?? ''}`)) {
        sseAuthorization.push(headers.authorization);
      }
    });
    page.on('websocket', (ws) => requests.push(ws.url()));
    page.on('pageerror', (error) => browserErrors.push(String(error)));

    try {
      await page.goto(`${hl.url}/graphql`, { waitUntil: 'networkidle' });
      expect(await page.title()).toBe('Hookline GraphiQL');
      await page.locator('.graphiql-query-editor .monaco-editor').first().waitFor({ state: 'visible' });
      await page.locator('.graphiql-execute-button').waitFor({ state: 'visible' });
      expect(await page.locator('.graphiql-logo').innerText()).toContain('Hookline GraphiQL');

      // Everything GraphiQL needs comes from this server (its workers are blobs made from inline code).
      expect(requests.length).toBeGreaterThan(0);
      expect(offHost(requests)).toEqual([]);

      // The user's key, typed into the headers editor.
      await page.locator('.graphiql-editor-tools button', { hasText: 'Headers' }).click();
      const headersEditor = '.graphiql-editor-tool .graphiql-editor:not(.hidden)';
      await setEditor(page, headersEditor, JSON.stringify({ Authorization: `Bearer ${tenant.apiKey}` }));
      expect(await editorText(page, headersEditor)).toContain(tenant.apiKey);

      // The subscription, typed into the operation editor, then run.
      await setEditor(page, '.graphiql-query-editor', SUBSCRIPTION);
      await page.locator('.graphiql-toolbar button[aria-label^="Prettify"]').click();
      await expect.poll(() => editorText(page, '.graphiql-query-editor')).toMatch(/subscription WatchDeliveries \{\s*\n\s*deliveryUpdated \{/);
      expect(await editorText(page, headersEditor)).toContain(`"Authorization": "Bearer ${tenant.apiKey}"`);
      // GraphiQL has taken in the new operation (the tab is named after it) before it is run.
      await page.locator('.graphiql-tab-active', { hasText: 'WatchDeliveries' }).waitFor();
      const streaming = page.waitForResponse(
        (res) => /text\/event-stream/.test(res.headers()['content-type'] ?? '') && res.url().includes('deliveryUpdated'),
        { timeout: 10_000 },
      );
      const subscribed = moreSubscribers(hl);
      await page.locator('.graphiql-execute-button').click();
      // The subscription went out over SSE with the typed header, and the server answered with a stream.
      expect((await streaming).status()).toBe(200);
      expect(sseAuthorization).toEqual([`Bearer ${tenant.apiKey}`]);
      await subscribed(); // the server hears delivery changes for it before the trigger

      // A trigger, from outside the browser, with the same key.
      const triggered = await hl.gql(TRIGGER, { input: { event: 'invoice.created', data: { invoice_id: 'inv-7', amount: 42, customer: 'Acme' } } }, tenant.apiKey);
      if (triggered.errors) throw new Error(JSON.stringify(triggered.errors));
      const deliveryId: string = triggered.data.triggerEvent.deliveries[0].id;
      await receiver.waitFor(1);

      // GraphiQL's result pane shows the delivery with a status.
      const response = '.graphiql-response';
      await expect
        .poll(() => editorText(page, response), { timeout: 20_000 })
        .toMatch(new RegExp(`"id": "${deliveryId}"[\\s\\S]*"status": "(PENDING|SENDING|DELIVERED)"`));
      // Its last update is the delivered one.
      await expect.poll(() => editorText(page, response), { timeout: 20_000 }).toContain('"status": "DELIVERED"');
      const shown = await editorText(page, response);
      expect(shown).toContain(`"id": "${deliveryId}"`);
      expect(shown).toContain('"event": "invoice.created"');
      expect(shown).not.toContain('UNAUTHENTICATED');
      expect(browserErrors).toEqual([]);
      expect(offHost(requests)).toEqual([]);
      // The API key typed in the headers is not left in the browser's storage.
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
      expect(stored).not.toContain(tenant.apiKey);
    } finally {
      await page.screenshot({ path: `${OUTPUT}/graphiql-subscription.png` }).catch(() => {});
      await context.close();
    }
  });
});
