/**
 * The browser build in a real headless Chromium (Debian's `chromium`, driven by
 * `playwright-core`): a page served on localhost loads `dist/browser.js`, connects to a hub that
 * bridges NATS, subscribes with a pattern, receives what a Node service publishes on NATS, and
 * publishes an event back that the service receives.
 *
 * Chromium is installed here when it is missing (`apt-get install -y chromium`); with
 * `CI=true` a browser still missing after that fails the run, it is never skipped.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { collectEvents, waitFor } from '@watchtower/core/testing';
import { NatsSubscriber, NatsTransport } from '@watchtower/nats';
import { WebSocketHub } from '../src/index.js';

const CHROMIUM = '/usr/bin/chromium';
const NATS_URL = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const bundlePath = join(packageDir, 'dist', 'browser.js');

/** Installs Chromium when it is missing; returns why it is still missing, or undefined. */
function ensureChromium(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  try {
    execFileSync('bash', ['-c', 'apt-get update && apt-get install -y chromium'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      timeout: 15 * 60_000,
    });
  } catch (error) {
    if (existsSync(CHROMIUM)) return undefined;
    return `apt-get install -y chromium failed: ${(error as Error).message}`;
  }
  return existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing after apt-get install`;
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** The browser bundle as published: built here when missing or older than the sources. */
function ensureBundle(): string {
  const stale =
    !existsSync(bundlePath) || statSync(bundlePath).mtimeMs < newestSource(join(packageDir, 'src'));
  if (stale) execFileSync('pnpm', ['run', 'build'], { cwd: packageDir, stdio: 'inherit' });
  return readFileSync(bundlePath, 'utf8');
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>watchtower browser client</title></head>
<body><script type="module">
import { WebSocketSubscriber } from '/watchtower-websocket.js';
const hub = new URLSearchParams(location.search).get('hub');
const bus = new WebSocketSubscriber({ url: hub, reconnectDelayMs: 50, pingIntervalMs: 200, pongTimeoutMs: 5000 });
window.received = [];
window.errors = [];
bus.on('error', (error) => window.errors.push(error.code + ': ' + error.message));
await bus.subscribe('order.*', async (event) => {
  window.received.push({ id: event.id, type: event.type, payload: event.payload });
  await bus.publish('browser.seen', { orderId: event.payload.id, from: navigator.userAgent.includes('Chrome') ? 'chromium' : 'other' });
});
window.ready = true;
</script></body></html>`;

let skipReason: string | undefined;
let bundle = '';
let browser: Browser | undefined;
let page: Page | undefined;
let server: Server | undefined;
let hub: WebSocketHub | undefined;
let bridge: NatsTransport | undefined;
let service: NatsSubscriber | undefined;
const pageErrors: string[] = [];
const subjectPrefix = `wt_${randomBytes(4).toString('hex')}.events`;

beforeAll(async () => {
  skipReason = ensureChromium();
  if (skipReason !== undefined) {
    if (process.env['CI'] === 'true') throw new Error(`CI=true and no Chromium: ${skipReason}`);
    return;
  }
  bundle = ensureBundle();
  server = createServer((request, response) => {
    if (request.url?.startsWith('/watchtower-websocket.js') === true) {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(bundle);
    } else if (request.url?.startsWith('/?') === true || request.url === '/') {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(PAGE);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  bridge = new NatsTransport({ servers: NATS_URL, mode: 'core', subjectPrefix });
  hub = new WebSocketHub({ server, bridge: { transport: bridge } });
  await hub.start();
  service = new NatsSubscriber({ servers: NATS_URL, mode: 'core', subjectPrefix });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
  });
  page = await browser.newPage();
  page.on('pageerror', (error) => pageErrors.push(error.message));
}, 20 * 60_000);

afterAll(async () => {
  await page?.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await service?.close({ timeoutMs: 2000 });
  await hub?.close({ timeoutMs: 2000 });
  await bridge?.close({ timeoutMs: 2000 });
  await new Promise<void>((resolve) =>
    server === undefined ? resolve() : server.close(() => resolve()),
  );
});

describe('the browser build in headless Chromium', () => {
  it('holds no ws and no Node built-in', (ctx) => {
    if (skipReason !== undefined) ctx.skip(skipReason);
    expect(bundle).not.toMatch(/\bfrom\s*["'](ws|node:[^"']*|buffer|crypto)["']/);
    expect(bundle).not.toMatch(/\brequire\(["']/);
    expect(bundle).not.toMatch(/\bimport\(["']/);
  });

  it('subscribes a page to the hub, receives what a Node service publishes on NATS, and publishes back', async (ctx) => {
    if (skipReason !== undefined) ctx.skip(skipReason);
    const livePage = page as Page;
    const backend = service as NatsSubscriber;
    const seenByService = collectEvents();
    await backend.subscribe('browser.seen', seenByService.handler);
    const { port } = (server as Server).address() as { port: number };
    const hubUrl = `ws://localhost:${port}/events`;
    await livePage.goto(`http://localhost:${port}/?hub=${encodeURIComponent(hubUrl)}`);
    await livePage.waitForFunction(
      () => (globalThis as { ready?: boolean }).ready === true,
      undefined,
      {
        timeout: 10_000,
      },
    );
    // Published on NATS by a service that knows nothing of WebSocket; the first type does not
    // match the page's pattern, so had the hub routed it the page would see it first.
    await backend.publish(createEvent('invoice.created', { id: 1 }));
    const order = createEvent('order.created', { id: 42, item: 'lamp' });
    await backend.publish(order);
    await livePage.waitForFunction(
      () => (globalThis as { received?: unknown[] }).received?.length === 1,
      undefined,
      { timeout: 10_000 },
    );
    const received = await livePage.evaluate(
      () => (globalThis as { received?: unknown[] }).received,
    );
    expect(received).toEqual([
      { id: order.id, type: 'order.created', payload: { id: 42, item: 'lamp' } },
    ]);
    const [reply] = await seenByService.waitForCount(1, { timeoutMs: 10_000 });
    expect((reply as Event).payload).toEqual({ orderId: 42, from: 'chromium' });
    expect(await livePage.evaluate(() => (globalThis as { errors?: string[] }).errors)).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('reconnects the page after the hub restarts, re-subscribes and receives again', async (ctx) => {
    if (skipReason !== undefined) ctx.skip(skipReason);
    const livePage = page as Page;
    const backend = service as NatsSubscriber;
    // The page of the previous case is connected; the hub goes away (1001) and comes back.
    await (hub as WebSocketHub).close({ timeoutMs: 2000 });
    hub = new WebSocketHub({
      server: server as Server,
      bridge: { transport: bridge as NatsTransport },
    });
    await hub.start();
    await waitFor(() => (hub as WebSocketHub).stats().subscriptions === 1, {
      timeoutMs: 10_000,
      message: 'the page re-subscribed',
    });
    const again = createEvent('order.created', { id: 43, item: 'chair' });
    await backend.publish(again);
    await livePage.waitForFunction(
      () => (globalThis as { received?: unknown[] }).received?.length === 2,
      undefined,
      { timeout: 10_000 },
    );
    const received = await livePage.evaluate(
      () => (globalThis as { received?: { id: string }[] }).received,
    );
    expect(received?.[1]?.id).toBe(again.id);
    expect(pageErrors).toEqual([]);
  });
});
