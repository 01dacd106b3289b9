// The status page in a real browser (Debian's chromium, driven by playwright-core) against a
// real Breakwater and fake upstreams on loopback.
import http from 'node:http';
import { existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { request, type TestProxy } from '../support/proxy.js';
import { withProxy, type ProxyHarness } from '../support/with-proxy.js';

const SEND = '/twilio/2010-04-01/Accounts/AC1/Messages.json';
const form = { 'content-type': 'application/x-www-form-urlencoded' };
// The README's picture is rewritten only when asked (BREAKWATER_SCREENSHOT=1) or missing, so a
// test run leaves the tree clean.
const DOCS_SHOT = fileURLToPath(new URL('../../docs/status-page.png', import.meta.url));
const SCREENSHOT = process.env.BREAKWATER_SCREENSHOT === '1' || !existsSync(DOCS_SHOT) ? DOCS_SHOT : join(tmpdir(), `breakwater-status-${process.pid}.png`);

describe('status page in a browser', () => {
  let twilio: FakeUpstream, p: TestProxy, browser: Browser, page: Page, evil: http.Server, evilPort: number, harness: ProxyHarness | undefined;
  const consoleErrors: string[] = [];
  const base = () => `http://127.0.0.1:${p.adminPort}/`;
  const breakerState = async () =>
    ((await request(p.adminPort, 'GET', '/breakers')).json.breakers as { name: string; state: string; forced: boolean }[]).find((b) => b.name === 'twilio')!;

  beforeAll(async () => {
    ({ twilio, p } = harness = await withProxy({
      env: { CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_RECOVERY_TIMEOUT: '30', RATE_LIMIT_PER_MINUTE: '100000' },
    }));
    // Another origin (another port is another origin) serving an attacker's page.
    evil = http.createServer((req, res) => {
      const target = `http://127.0.0.1:${p.adminPort}/breakers/twilio/open`;
      const html =
        req.url === '/fetch'
          ? `<!doctype html><script>fetch(${JSON.stringify(target)},{method:'POST',headers:{'X-Breakwater-Admin':'1'}}).then(()=>document.title='sent',()=>document.title='blocked')</script>`
          : `<!doctype html><form id=f method=POST action="${target}" enctype="text/plain"><input name=a value=b></form><script>document.getElementById('f').submit()</script>`;
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(html);
    });
    evil.listen(0, '127.0.0.1');
    await once(evil, 'listening');
    evilPort = (evil.address() as { port: number }).port;
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(base());
  });
  afterAll(async () => {
    await browser?.close();
    evil?.close();
    await harness?.close();
  });

  it('shows the breaker open within 2 s of the upstream failing, and the countdown decreases', async () => {
    await page.locator('article[data-upstream="twilio"].closed').waitFor({ timeout: 5000 });
    for (let i = 0; i < 5; i++) await request(p.proxyPort, 'GET', '/vapi/call');
    twilio.mode = 'fail';
    for (let i = 0; i < 3; i++) await request(p.proxyPort, 'POST', SEND, { headers: form, body: 'To=x' });
    twilio.mode = 'ok';
    const t0 = Date.now();
    await page.locator('article[data-upstream="twilio"].open').waitFor({ timeout: 2000 });
    expect(Date.now() - t0).toBeLessThan(2000);
    await expect.poll(() => page.locator('article[data-upstream="twilio"] [data-field=state]').textContent(), { timeout: 2000 }).toBe('Open');
    const secs = async () => Number(/in (\d+) s/.exec((await page.locator('article[data-upstream="twilio"] [data-field=wait]').textContent()) ?? '')?.[1]);
    const first = await secs();
    expect(first).toBeGreaterThan(20);
    expect(first).toBeLessThanOrEqual(30);
    await expect.poll(secs, { timeout: 4000, interval: 250 }).toBeLessThan(first);
    await expect.poll(() => page.locator('article[data-upstream="twilio"] [data-field=trips]').textContent()).toBe('1');
  });

  it('lists recent proxy-made errors with their request ids', async () => {
    const r = await request(p.proxyPort, 'POST', SEND, { headers: { ...form, 'x-request-id': 'browser-test-req-42' }, body: 'To=x' });
    expect(r.headers['x-breakwater-error']).toBe('circuit_open');
    const row = page.locator('#errors tr', { hasText: 'browser-test-req-42' });
    await row.waitFor({ timeout: 3000 });
    expect(await row.textContent()).toContain('circuit_open');
    await expect.poll(() => page.locator('#traffic').textContent(), { timeout: 3000 }).toContain('vapi');
  });

  it('the force-open button (keyboard, confirmed) opens the breaker and the proxy then answers circuit_open', async () => {
    expect((await request(p.adminPort, 'POST', '/breakers/twilio/reset', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);
    await page.locator('article[data-upstream="twilio"].closed').waitFor({ timeout: 3000 });
    const dialogs: string[] = [];
    page.once('dialog', (d) => {
      dialogs.push(d.message());
      void d.accept();
    });
    await page.locator('article[data-upstream="twilio"] button[data-action=open]').focus();
    await page.keyboard.press('Enter');
    await expect.poll(async () => (await breakerState()).forced, { timeout: 3000 }).toBe(true);
    expect(dialogs[0]).toContain('OPEN');
    await page.locator('article[data-upstream="twilio"].open').waitFor({ timeout: 2000 });
    expect(await page.locator('article[data-upstream="twilio"] [data-field=state]').textContent()).toBe('Open (forced)');
    const a = await request(p.proxyPort, 'GET', SEND);
    expect(a.status).toBe(503);
    expect(a.headers['x-breakwater-error']).toBe('circuit_open');
  });

  it('a dismissed confirm sends nothing', async () => {
    page.once('dialog', (d) => void d.dismiss());
    await page.locator('article[data-upstream="twilio"] button[data-action=close]').click();
    await new Promise((r) => setTimeout(r, 300));
    expect((await breakerState()).forced).toBe(true);
  });

  it('saves a screenshot for the README, and reads at 360 px without sideways scrolling', async () => {
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
    await page.setViewportSize({ width: 360, height: 800 });
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(width).toBeLessThanOrEqual(360);
    await page.setViewportSize({ width: 1100, height: 900 });
  });

  it('a cross-site form POST and a cross-site fetch with the header are both refused', async () => {
    expect((await request(p.adminPort, 'POST', '/breakers/twilio/reset', { headers: { 'x-breakwater-admin': '1' } })).status).toBe(200);
    const attacker = await browser.newPage();
    const answers: number[] = [];
    attacker.on('response', (r) => {
      if (r.url().includes('/breakers/twilio/open')) answers.push(r.status());
    });
    await attacker.goto(`http://127.0.0.1:${evilPort}/form`);
    await expect.poll(() => answers.length, { timeout: 3000 }).toBe(1);
    expect(answers[0]).toBe(403);
    await attacker.goto(`http://127.0.0.1:${evilPort}/fetch`);
    await expect.poll(() => attacker.title(), { timeout: 3000 }).toBe('blocked');
    await attacker.close();
    expect(await breakerState()).toMatchObject({ state: 'closed', forced: false });
  });

  it('logged no console errors (CSP violations included)', () => {
    expect(consoleErrors).toEqual([]);
  });
});
