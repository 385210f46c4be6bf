/**
 * The memory transport under an `EventBus`: what a service tested on it sees is what it would
 * see on a broker, because payloads travel through the codec (or, with `copy: 'reference'`,
 * knowingly do not).
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ErrorCode, isWatchtowerError } from './errors.js';
import { EventBus } from './event-bus.js';
import type { Event } from './event.js';
import { MemoryTransport, type MemoryTransportOptions } from './memory-transport.js';
import { defineEvents } from './schema.js';
import { collectEvents } from './testing/collect.js';
import { waitFor } from './testing/wait-for.js';

const quiet = { warn: () => undefined, error: () => undefined };

const events = defineEvents({
  'meeting.booked': z.object({ room: z.string(), at: z.date() }),
});

function busOn(options: MemoryTransportOptions = {}): {
  bus: EventBus<typeof events>;
  transport: MemoryTransport;
} {
  const transport = new MemoryTransport(options);
  return { bus: new EventBus({ transport, events, logger: quiet }), transport };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('MemoryTransport under an EventBus', () => {
  it('dead-letters a z.date() payload on consume as a VALIDATION failure, as a broker does', async () => {
    const { bus, transport } = busOn();
    const got = collectEvents();
    await bus.subscribe('meeting.booked', got.handler);

    // The publisher's Date passes the schema; what travels is its JSON form, a string.
    await bus.publish('meeting.booked', { room: 'A', at: new Date() });
    await waitFor(() => transport.deadLetterQueue.size === 1);

    expect(got.events).toEqual([]);
    expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
      code: ErrorCode.VALIDATION,
    });
    await bus.close();
  });

  it('rejects the publish of a BigInt payload with SERIALIZATION, as a broker does', async () => {
    const transport = new MemoryTransport();
    const bus = new EventBus({ transport, logger: quiet });
    const got = collectEvents();
    await bus.subscribe('invoice.issued', got.handler);

    const error = await rejection(bus.publish('invoice.issued', { cents: 1999n }));

    expect(isWatchtowerError(error, ErrorCode.SERIALIZATION)).toBe(true);
    await bus.publish('invoice.issued', { cents: 1999 });
    await got.waitForCount(1);
    expect(got.events.map((event) => event.payload)).toEqual([{ cents: 1999 }]);
    await bus.close();
  });

  it('keeps a handler’s change of its payload from the publisher and from other handlers', async () => {
    const transport = new MemoryTransport();
    const bus = new EventBus({ transport, logger: quiet });
    const seen: unknown[] = [];
    await bus.subscribe('cart.updated', (event: Event) => {
      (event.payload as { items: string[] }).items.push('stolen');
    });
    await bus.subscribe('cart.updated', (event: Event) => {
      seen.push(structuredClone(event.payload));
    });
    const payload = { items: ['book'] };

    await bus.publish('cart.updated', payload);
    await waitFor(() => seen.length === 1);
    await bus.close();

    expect(seen).toEqual([{ items: ['book'] }]);
    expect(payload).toEqual({ items: ['book'] });
  });

  it("with copy: 'reference', hands the handler the publisher's Date itself", async () => {
    const { bus, transport } = busOn({ copy: 'reference' });
    const got = collectEvents<Event<{ room: string; at: Date }>>();
    await bus.subscribe('meeting.booked', got.handler);
    const at = new Date();

    await bus.publish('meeting.booked', { room: 'A', at });
    await got.waitForCount(1);

    expect(got.events[0]?.payload.at).toBe(at);
    expect(transport.deadLetterQueue.size).toBe(0);
    await bus.close();
  });
  it("with copy: 'reference', the bus encodes nothing either: the transport says it does not encode", async () => {
    const transport = new MemoryTransport({ copy: 'reference' });
    const bus = new EventBus({ transport, logger: quiet });
    expect(transport.info.encodes).toBe(false);
    const got = collectEvents();
    await bus.subscribe('ledger.posted', got.handler);
    let encoded = 0;
    const probe = {
      toJSON(): string {
        encoded++;
        return 'probe';
      },
    };

    await bus.publish('ledger.posted', { big: 10n, probe });
    await got.waitForCount(1);

    expect((got.events[0]?.payload as { big: bigint }).big).toBe(10n);
    expect(encoded).toBe(0);
    // Through the codec the same payload is refused before it is queued.
    const codec = new EventBus({ transport: new MemoryTransport(), logger: quiet });
    expect(
      isWatchtowerError(
        await rejection(codec.publish('ledger.posted', { big: 10n })),
        ErrorCode.SERIALIZATION,
      ),
    ).toBe(true);
    await codec.close();
    await bus.close();
  });
});
