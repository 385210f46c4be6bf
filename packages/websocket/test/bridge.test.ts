/**
 * The hub as a bridge to NATS (the shared server, core NATS, a subject prefix of its own per
 * test): broker events reach WebSocket clients, client events reach the broker, and an event
 * does not come back to the clients twice.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { collectEvents, waitFor } from '@watchtower/core/testing';
import { NatsSubscriber, NatsTransport } from '@watchtower/nats';
import { WebSocketHub, WebSocketSubscriber } from '../src/index.js';
import { FAST_CLIENT } from './helpers.js';

const NATS_URL = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function later<T extends { close(options?: { timeoutMs?: number }): Promise<void> }>(thing: T): T {
  cleanups.push(() => thing.close({ timeoutMs: 2000 }));
  return thing;
}

async function bridgedHub(subjectPrefix: string, patterns?: string[]): Promise<WebSocketHub> {
  const nats = later(new NatsTransport({ servers: NATS_URL, mode: 'core', subjectPrefix }));
  const hub = later(
    new WebSocketHub({
      port: 0,
      bridge: { transport: nats, ...(patterns === undefined ? {} : { patterns }) },
    }),
  );
  await hub.start();
  return hub;
}

describe('bridge to NATS', () => {
  it('relays NATS events to WebSocket clients and client events to NATS, each once', async () => {
    const subjectPrefix = `wt_${randomBytes(4).toString('hex')}.events`;
    const hub = await bridgedHub(subjectPrefix);
    const browserLike = later(new WebSocketSubscriber({ url: hub.url, ...FAST_CLIENT }));
    const atTheEdge = collectEvents();
    await browserLike.subscribe('order.*', atTheEdge.handler);

    const service = later(new NatsSubscriber({ servers: NATS_URL, mode: 'core', subjectPrefix }));
    const inTheBackend = collectEvents();
    await service.subscribe('order.*', inTheBackend.handler);

    const fromBackend = createEvent('order.created', { id: 1 });
    await service.publish(fromBackend);
    await atTheEdge.waitForCount(1);
    expect(atTheEdge.events[0]?.id).toBe(fromBackend.id);

    const fromEdge = createEvent('order.paid', { id: 1 });
    await browserLike.publish(fromEdge);
    await inTheBackend.waitForCount(2);
    await atTheEdge.waitForCount(2);
    expect(inTheBackend.events.map((e: Event) => e.id)).toEqual([fromBackend.id, fromEdge.id]);
    // One more event through the whole path: had the client's event come back from NATS to
    // the clients again, it would arrive before this one.
    const marker = createEvent('order.marker', {});
    await service.publish(marker);
    await atTheEdge.waitForCount(3);
    expect(atTheEdge.events.map((e: Event) => e.id)).toEqual([
      fromBackend.id,
      fromEdge.id,
      marker.id,
    ]);
  });

  it('relays only what the bridge patterns cover from the broker', async () => {
    const subjectPrefix = `wt_${randomBytes(4).toString('hex')}.events`;
    const hub = await bridgedHub(subjectPrefix, ['public.>']);
    const client = later(new WebSocketSubscriber({ url: hub.url, ...FAST_CLIENT }));
    const seen = collectEvents();
    await client.subscribe('>', seen.handler);
    const service = later(new NatsSubscriber({ servers: NATS_URL, mode: 'core', subjectPrefix }));
    await service.publish('internal.secret', {});
    await service.publish('public.news', {});
    await seen.waitForCount(1);
    await waitFor(() => hub.stats().eventsIn >= 1);
    expect(seen.events.map((e: Event) => e.type)).toEqual(['public.news']);
  });
});
