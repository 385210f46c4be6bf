/**
 * Cases about what arrives where: fan-out, routing by type and wildcard, order, replay, and
 * payloads and headers that must come back unchanged. Every case here publishes through a bus
 * and asserts only on what subscribers saw.
 */
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import type { ConformanceCase } from '../harness.js';

/** The baseline: 50 events from one bus reach a subscriber on another with id, type, timestamp and payload. */
export const publishesAndDeliversEachEventIntact: ConformanceCase = {
  name: 'publishes events and delivers each one to a subscriber, payload and ids intact',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const pub = await newBus();
    const seen: Event[] = [];
    await sub.bus.subscribe(type('basic'), (event) => {
      seen.push(event);
    });
    const sent: Event[] = [];
    for (let i = 0; i < 50; i++) {
      const event = createEvent(type('basic'), { n: i, name: `event ${i}` });
      sent.push(event);
      await pub.bus.publish(event);
    }
    await waitFor(() => seen.length >= 50, { timeoutMs, message: 'all 50 events' });
    const byId = new Map(seen.map((event) => [event.id, event]));
    expect(byId.size).toBe(50);
    for (const event of sent) {
      expect(byId.get(event.id)?.payload).toEqual(event.payload);
      expect(byId.get(event.id)?.type).toBe(event.type);
      expect(byId.get(event.id)?.timestamp).toBe(event.timestamp);
    }
    expectNoBusErrors(sub, pub);
  },
};

/** Fan-out: subscribers without a group do not compete; each one gets all of them. */
export const deliversEveryEventToEachIndependentSubscriber: ConformanceCase = {
  name: 'delivers every event to each of several independent subscribers',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const subscribers = await Promise.all([newBus(), newBus(), newBus()]);
    const seen = subscribers.map(() => new Set<string>());
    for (const [i, sub] of subscribers.entries()) {
      await sub.bus.subscribe(type('fanout'), (event) => {
        seen[i]?.add(event.id);
      });
    }
    const pub = await newBus();
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const event = createEvent(type('fanout'), { i });
      ids.push(event.id);
      await pub.bus.publish(event);
    }
    await waitFor(() => seen.every((set) => set.size >= 30), {
      timeoutMs,
      message: 'each subscriber got all 30',
    });
    for (const set of seen) expect([...set].sort()).toEqual([...ids].sort());
    expectNoBusErrors(pub, ...subscribers);
  },
};

/** Ten types on one bus: no subscription sees another type's events. */
export const routesEachTypeToItsOwnSubscriber: ConformanceCase = {
  name: 'routes many event types each to its own subscriber and nowhere else',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const pub = await newBus();
    const types = Array.from({ length: 10 }, (_, i) => type(`topic${i}.created`));
    const seen = new Map<string, string[]>(types.map((t) => [t, []]));
    for (const t of types) {
      await sub.bus.subscribe(t, (event) => {
        seen.get(t)?.push(event.type);
      });
    }
    for (let round = 0; round < 5; round++) {
      await Promise.all(types.map((t) => pub.bus.publish(t, { round })));
    }
    await waitFor(() => [...seen.values()].every((list) => list.length >= 5), { timeoutMs });
    for (const [t, list] of seen) expect(list).toEqual(Array<string>(5).fill(t));
    expectNoBusErrors(sub, pub);
  },
};

/** 200 events of one type, published one after another, arrive in exactly that order. */
export const deliversOneTypeInPublishOrder: ConformanceCase = {
  name: 'delivers the events of one type in publish order to one subscriber',
  requires: ['ordering'],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const order: number[] = [];
    await sub.bus.subscribe(type('order'), (event) => {
      order.push((event.payload as { n: number }).n);
    });
    const pub = await newBus();
    for (let n = 0; n < 200; n++) await pub.bus.publish(type('order'), { n });
    await waitFor(() => order.length >= 200, { timeoutMs });
    expect(order).toEqual(Array.from({ length: 200 }, (_, n) => n));
    expectNoBusErrors(sub, pub);
  },
};

/** `*` matches one segment, `>` one or more, and neither matches a sibling prefix. */
export const deliversDottedTypesThroughWildcards: ConformanceCase = {
  name: 'delivers dotted types through * and > wildcards, including types first published after subscribing',
  requires: ['wildcards'],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const star: string[] = [];
    const rest: string[] = [];
    await sub.bus.subscribe(type('wild.*'), (event) => {
      star.push(event.type);
    });
    await sub.bus.subscribe(type('wild.>'), (event) => {
      rest.push(event.type);
    });
    const pub = await newBus();
    const published = [
      type('wild.a'),
      type('wild.b.c'),
      type('wild.new.deep.type'),
      type('other.a'),
    ];
    for (const t of published) await pub.bus.publish(t, { t });
    await waitFor(() => star.length >= 1 && rest.length >= 3, { timeoutMs });
    // Give a wrongly routed event the chance to show up before asserting exact lists.
    await pub.bus.publish(type('wild.z'), {});
    await waitFor(() => star.includes(type('wild.z')) && rest.includes(type('wild.z')), {
      timeoutMs,
    });
    expect(star.sort()).toEqual([type('wild.a'), type('wild.z')]);
    expect(rest.sort()).toEqual(
      [type('wild.a'), type('wild.b.c'), type('wild.new.deep.type'), type('wild.z')].sort(),
    );
    expectNoBusErrors(sub, pub);
  },
};

/** `startFrom: 'earliest'` reads what was published before the subscription existed, in order. */
export const letsANewSubscriberReadEarlierEvents: ConformanceCase = {
  name: 'lets a new subscriber read events published before it subscribed',
  requires: ['replay'],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const pub = await newBus();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const event = createEvent(type('replay'), { i });
      ids.push(event.id);
      await pub.bus.publish(event);
    }
    const sub = await newBus();
    const seen: string[] = [];
    await sub.bus.subscribe(
      type('replay'),
      (event) => {
        seen.push(event.id);
      },
      { startFrom: 'earliest' },
    );
    await waitFor(() => seen.length >= 5, { timeoutMs });
    expect(seen).toEqual(ids);
    expectNoBusErrors(sub, pub);
  },
};

/** Multi-byte text, emoji, NUL and a payload over 512 KiB come back equal. */
export const roundTripsLargeAndUnicodePayloads: ConformanceCase = {
  name: 'round-trips large and unicode payloads',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const seen: Event[] = [];
    await sub.bus.subscribe(type('big'), (event) => {
      seen.push(event);
    });
    const pub = await newBus();
    const unicode = {
      text: 'héllo wörld ✓ 日本語 עברית 😀🚀',
      nested: { emoji: '👩‍👩‍👧‍👦', zero: '\u0000' },
    };
    const large = {
      blob: 'x'.repeat(512 * 1024),
      list: Array.from({ length: 1000 }, (_, i) => ({ i })),
    };
    await pub.bus.publish(type('big'), unicode);
    await pub.bus.publish(type('big'), large);
    await waitFor(() => seen.length >= 2, { timeoutMs });
    expect(seen.map((event) => event.payload)).toEqual([unicode, large]);
    expectNoBusErrors(sub, pub);
  },
};

/** The whole event, trace context and custom headers included, arrives equal to what was sent. */
export const roundTripsHeadersAndMetadata: ConformanceCase = {
  name: 'round-trips headers and metadata',
  requires: ['headers'],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const seen: Event[] = [];
    await sub.bus.subscribe(type('headers'), (event) => {
      seen.push(event);
    });
    const pub = await newBus();
    const event = createEvent(
      type('headers'),
      { a: 1 },
      {
        source: 'conformance',
        correlationId: randomUUID(),
        causationId: randomUUID(),
        headers: {
          traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
          tracestate: 'vendor=value',
          'x-custom': 'ünïcode',
        },
      },
    );
    await pub.bus.publish(event);
    await waitFor(() => seen.length >= 1, { timeoutMs });
    expect(seen[0]).toEqual(event);
    expectNoBusErrors(sub, pub);
  },
};
