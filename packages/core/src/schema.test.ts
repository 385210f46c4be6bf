import { describe, expect, expectTypeOf, it, vi, type Mock } from 'vitest';
import { z } from 'zod';
import { ErrorCode, isWatchtowerError, type ValidationError } from './errors.js';
import { createEvent, type Event } from './event.js';
import type { LogMethod } from './logger.js';
import { EventBus, type EventBusOptions, type Logger, type ValidationMode } from './event-bus.js';
import { MemoryBroker, MemoryTransport } from './memory-transport.js';
import { defineEvents, runSchema, type MatchesPattern, type TypesMatching } from './schema.js';
import { collectEvents } from './testing/collect.js';
import { waitFor } from './testing/wait-for.js';

const events = defineEvents({
  'user.created': z.object({ id: z.string(), email: z.email() }),
  'user.deleted': z.object({ id: z.string(), hard: z.boolean().default(false) }),
  'user.profile.updated': z.object({ id: z.string(), name: z.string() }),
  'order.placed': z.object({ orderId: z.string(), total: z.number().positive() }),
  'clock.ticked': z.object({ at: z.iso.datetime().transform((text) => new Date(text)) }),
});
type Catalog = typeof events;

interface UserCreated {
  id: string;
  email: string;
}
interface UserDeleted {
  id: string;
  hard: boolean;
}
interface ProfileUpdated {
  id: string;
  name: string;
}
interface OrderPlaced {
  orderId: string;
  total: number;
}

type LogMock = Mock<LogMethod>;

function quietLogger(): Logger & { warn: LogMock; error: LogMock } {
  return { warn: vi.fn<Logger['warn']>(), error: vi.fn<Logger['error']>() };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

/**
 * A bus with the catalog, plus a plain transport on the same broker that publishes without
 * any validation (another service, say) and a subscription that sees what really travels.
 */
async function setup(
  validation?: ValidationMode,
  options: Partial<EventBusOptions<Catalog>> = {},
): Promise<{
  bus: EventBus<Catalog>;
  raw: MemoryTransport;
  wire: Event[];
  logger: ReturnType<typeof quietLogger>;
}> {
  const broker = new MemoryBroker();
  const logger = quietLogger();
  const bus = new EventBus({
    transport: new MemoryTransport({ broker }),
    events,
    logger,
    ...(validation === undefined ? {} : { validation }),
    ...options,
  });
  const raw = new MemoryTransport({ broker });
  const wire: Event[] = [];
  const tap = await raw.subscribe('>');
  void (async () => {
    for await (const delivery of tap) {
      if (delivery.kind === 'event') wire.push(delivery.event);
      await delivery.ack();
    }
  })();
  return { bus, raw, wire, logger };
}

async function teardown(context: { bus: EventBus<Catalog>; raw: MemoryTransport }): Promise<void> {
  await context.bus.close();
  await context.raw.close();
}

// ---- types ------------------------------------------------------------------------------

describe('typed catalog (types)', () => {
  it('infers the payload of publish from the event type', async () => {
    const context = await setup();
    const { bus } = context;

    expectTypeOf(bus.publish<'user.created'>)
      .parameter(1)
      .toEqualTypeOf<UserCreated>();
    // The publisher gives the schema's input: defaults may be left out.
    expectTypeOf(bus.publish<'user.deleted'>)
      .parameter(1)
      .toEqualTypeOf<z.input<Catalog['user.deleted']>>();
    expectTypeOf<{ id: string }>().toExtend<z.input<Catalog['user.deleted']>>();
    expectTypeOf(bus.publish<'clock.ticked'>)
      .parameter(1)
      .toEqualTypeOf<{ at: string }>();

    await bus.publish('user.created', { id: 'u1', email: 'a@example.com' });
    await bus.publish('user.deleted', { id: 'u1' });
    await bus.publish('clock.ticked', { at: '2026-11-22T10:00:00Z' });
    await teardown(context);
  });

  it('makes a wrong payload or an unknown event type a type error (and a VALIDATION error at run time)', async () => {
    const context = await setup();
    const { bus } = context;

    const wrongField = rejection(
      // @ts-expect-error -- `id` must be a string
      bus.publish('user.created', { id: 1, email: 'a@example.com' }),
    );
    const missingField = rejection(
      // @ts-expect-error -- `email` is required
      bus.publish('user.created', { id: 'u1' }),
    );
    const wrongPayload = rejection(
      // @ts-expect-error -- the payload of order.placed has no `email`
      bus.publish('order.placed', { id: 'u1', email: 'a@example.com' }),
    );
    const unknownType = rejection(
      // @ts-expect-error -- not in the catalog
      bus.publish('user.unknown', {}),
    );

    for (const error of await Promise.all([wrongField, missingField, wrongPayload, unknownType])) {
      expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    }
    await teardown(context);
  });

  it('narrows a subscribe handler’s event to the catalog events its pattern matches', async () => {
    const context = await setup();
    const { bus } = context;
    const seen: string[] = [];

    await bus.subscribe('user.*', (event) => {
      expectTypeOf(event).toEqualTypeOf<
        Event<UserCreated, 'user.created'> | Event<UserDeleted, 'user.deleted'>
      >();
      if (event.type === 'user.created') {
        expectTypeOf(event.payload).toEqualTypeOf<UserCreated>();
        seen.push(event.payload.email);
      } else {
        expectTypeOf(event.payload.hard).toEqualTypeOf<boolean>();
        seen.push(`hard=${event.payload.hard}`);
      }
    });
    await bus.subscribe('user.>', (event) => {
      expectTypeOf(event.type).toEqualTypeOf<
        'user.created' | 'user.deleted' | 'user.profile.updated'
      >();
    });
    await bus.subscribe(['user.created', 'order.*'], (event) => {
      expectTypeOf(event).toEqualTypeOf<
        Event<UserCreated, 'user.created'> | Event<OrderPlaced, 'order.placed'>
      >();
    });
    await bus.subscribe('user.profile.updated', (event) => {
      expectTypeOf(event).toEqualTypeOf<Event<ProfileUpdated, 'user.profile.updated'>>();
    });
    // The handler gets the schema's output.
    await bus.subscribe('clock.ticked', (event) => {
      expectTypeOf(event.payload.at).toEqualTypeOf<Date>();
    });
    // A pattern matching nothing in the catalog gets untyped events.
    await bus.subscribe('billing.*', (event) => {
      expectTypeOf(event).toEqualTypeOf<Event>();
    });

    await bus.publish('user.created', { id: 'u1', email: 'a@example.com' });
    await bus.publish('user.deleted', { id: 'u1' });
    await waitFor(() => seen.length === 2);
    expect(seen.sort()).toEqual(['a@example.com', 'hard=false']);
    await teardown(context);
  });

  it('evaluates patterns token by token at the type level', () => {
    expectTypeOf<MatchesPattern<'user.created', 'user.*'>>().toEqualTypeOf<true>();
    expectTypeOf<MatchesPattern<'user.profile.updated', 'user.*'>>().toEqualTypeOf<false>();
    expectTypeOf<MatchesPattern<'user.profile.updated', 'user.>'>>().toEqualTypeOf<true>();
    expectTypeOf<MatchesPattern<'user.profile.updated', 'user.#'>>().toEqualTypeOf<true>();
    expectTypeOf<MatchesPattern<'user', 'user.>'>>().toEqualTypeOf<false>();
    expectTypeOf<MatchesPattern<'a.b.c', '*.b.*'>>().toEqualTypeOf<true>();
    expectTypeOf<MatchesPattern<'a.b.c', '>'>>().toEqualTypeOf<true>();
    expectTypeOf<MatchesPattern<'order', '*'>>().toEqualTypeOf<true>();
    expectTypeOf<MatchesPattern<'order.placed', '*'>>().toEqualTypeOf<false>();
    expectTypeOf<TypesMatching<Catalog, '*.placed'>>().toEqualTypeOf<'order.placed'>();
  });

  it('leaves a bus without a catalog untyped', async () => {
    const bus = new EventBus({ transport: new MemoryTransport(), logger: quietLogger() });
    await bus.subscribe('anything.*', (event) => {
      expectTypeOf(event).toEqualTypeOf<Event>();
    });
    await bus.publish('anything.at.all', { free: 'form' });
    await bus.publish('anything.else', 42);
    await bus.close();
  });
});

// ---- runtime ----------------------------------------------------------------------------

describe('typed catalog (validation on publish)', () => {
  it('strict: rejects a payload that fails its schema with VALIDATION and the issues, sending nothing', async () => {
    const context = await setup('strict');
    const { bus, wire } = context;
    const witness = collectEvents();
    await bus.subscribe('order.placed', witness.handler);

    const error = await rejection(bus.publish('order.placed', { orderId: 'o1', total: -5 }));
    await bus.publish('order.placed', { orderId: 'o2', total: 5 });
    await witness.waitForCount(1);

    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect((error as ValidationError).issues[0]?.path).toEqual(['total']);
    expect((error as Error).message).toContain('order.placed');
    expect(wire.map((e) => e.payload)).toEqual([{ orderId: 'o2', total: 5 }]);
    expect(bus.stats()).toMatchObject({ validationFailures: 1, published: 1, publishFailed: 0 });
    await teardown(context);
  });

  it('strict: rejects an event type the catalog does not list, also as a whole event', async () => {
    const context = await setup('strict');
    const { bus, wire } = context;

    const error = await rejection(bus.publish(createEvent('user.unknown', {})));

    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect((error as Error).message).toContain('user.unknown');
    expect(wire).toHaveLength(0);
    await teardown(context);
  });

  it('is strict by default', async () => {
    const context = await setup();
    const error = await rejection(context.bus.publish('order.placed', { orderId: 'o1', total: 0 }));
    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    await teardown(context);
  });

  it('warn: logs a payload that fails its schema and sends it anyway, unknown types too', async () => {
    const context = await setup('warn');
    const { bus, wire, logger } = context;

    await bus.publish('order.placed', { orderId: 'o1', total: -5 });
    await bus.publish(createEvent('user.unknown', { x: 1 }));
    await waitFor(() => wire.length === 2);

    expect(wire.map((e) => e.payload)).toEqual([{ orderId: 'o1', total: -5 }, { x: 1 }]);
    expect(logger.warn).toHaveBeenCalledTimes(1);
    expect(String(logger.warn.mock.calls[0]?.[1])).toContain('order.placed');
    expect(bus.stats().validationFailures).toBe(1);
    await teardown(context);
  });

  it('ignore: runs no schema at all', async () => {
    const context = await setup('ignore');
    const { bus, wire, logger } = context;

    await bus.publish('order.placed', { orderId: 'o1', total: -5 });
    await bus.publish(createEvent('user.unknown', {}));
    await waitFor(() => wire.length === 2);

    expect(logger.warn).not.toHaveBeenCalled();
    expect(bus.stats().validationFailures).toBe(0);
    await teardown(context);
  });

  it('sends the payload as given, so that a transforming schema’s handler gets its output', async () => {
    const context = await setup('strict');
    const { bus, wire } = context;
    const got = collectEvents<Event<{ at: Date }, 'clock.ticked'>>();
    await bus.subscribe('clock.ticked', got.handler);

    await bus.publish('clock.ticked', { at: '2026-11-22T10:00:00Z' });
    const [event] = await got.waitForCount(1);

    expect(wire[0]?.payload).toEqual({ at: '2026-11-22T10:00:00Z' });
    expect(event?.payload.at).toBeInstanceOf(Date);
    expect(event?.payload.at.toISOString()).toBe('2026-11-22T10:00:00.000Z');
    expect(context.raw.deadLetterQueue.size).toBe(0);
    await teardown(context);
  });

  it('waits for an async schema before sending', async () => {
    const checked = defineEvents({
      'doc.saved': z.object({
        id: z.string().refine(async (id) => id.startsWith('d'), 'must start with d'),
      }),
    });
    const bus = new EventBus({
      transport: new MemoryTransport(),
      events: checked,
      logger: quietLogger(),
    });
    const got = collectEvents();
    await bus.subscribe('doc.saved', got.handler);

    const error = await rejection(bus.publish('doc.saved', { id: 'x1' }));
    await bus.publish('doc.saved', { id: 'd1' });
    await got.waitForCount(1);

    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect(got.events.map((e) => e.payload)).toEqual([{ id: 'd1' }]);
    await bus.close();
  });

  it('rejects with VALIDATION, never throws, when a schema itself throws', async () => {
    const broken = defineEvents({
      'doc.saved': z.object({
        id: z.string().refine(() => {
          throw new Error('bug in a refinement');
        }),
      }),
    });
    const bus = new EventBus({
      transport: new MemoryTransport(),
      events: broken,
      logger: quietLogger(),
    });

    let published: Promise<void> | undefined;
    expect(() => {
      published = bus.publish('doc.saved', { id: 'd1' });
    }).not.toThrow();
    const error = await rejection(published as Promise<void>);

    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect((error as Error).message).toContain('bug in a refinement');
    await bus.close();
  });
});

describe('typed catalog (validation on consume)', () => {
  it('strict: dead-letters a consumed payload that fails its schema, without calling the handler or retrying', async () => {
    const context = await setup('strict');
    const { bus, raw } = context;
    const got = collectEvents();
    await bus.subscribe('order.*', got.handler, {
      retry: { maxAttempts: 4, minDelayMs: 1 },
      name: 'orders',
    });

    const bad = createEvent('order.placed', { orderId: 'o1', total: 'a lot' });
    await raw.publish(bad);
    await raw.publish(createEvent('order.placed', { orderId: 'o2', total: 2 }));
    await got.waitForCount(1);
    await waitFor(() => raw.deadLetterQueue.size === 1);

    const [letter] = raw.deadLetterQueue.list();
    expect(letter?.event?.id).toBe(bad.id);
    expect(letter?.reason).toMatchObject({
      code: ErrorCode.VALIDATION,
      attempts: 1,
      originalType: 'order.placed',
      subscription: 'orders',
    });
    expect(got.events.map((e) => (e.payload as { orderId: string }).orderId)).toEqual(['o2']);
    expect(bus.stats()).toMatchObject({
      validationFailures: 1,
      deadLettered: 1,
      retried: 0,
      handlerFailures: 0,
    });
    await teardown(context);
  });

  it('strict: dead-letters a consumed event whose type the catalog does not list', async () => {
    const context = await setup('strict');
    const { bus, raw } = context;
    const got = collectEvents();
    await bus.subscribe('>', got.handler);

    await raw.publish(createEvent('user.unknown', {}));
    await waitFor(() => raw.deadLetterQueue.size === 1);

    expect(raw.deadLetterQueue.list()[0]?.reason.code).toBe(ErrorCode.VALIDATION);
    expect(got.events).toHaveLength(0);
    await teardown(context);
  });

  it('hands the handler the schema’s output, defaults applied', async () => {
    const context = await setup('strict');
    const { bus, raw } = context;
    const got = collectEvents();
    await bus.subscribe('user.deleted', got.handler);

    await raw.publish(createEvent('user.deleted', { id: 'u1' }));
    await got.waitForCount(1);

    expect(got.events[0]?.payload).toEqual({ id: 'u1', hard: false });
    await teardown(context);
  });

  it('warn: logs a consumed payload that fails its schema and handles it as it came', async () => {
    const context = await setup('warn');
    const { bus, raw, logger } = context;
    const got = collectEvents();
    await bus.subscribe('>', got.handler);

    await raw.publish(createEvent('order.placed', { orderId: 'o1', total: 'a lot' }));
    await raw.publish(createEvent('user.unknown', { x: 1 }));
    await got.waitForCount(2);

    expect(got.events.map((e) => e.payload)).toEqual([{ orderId: 'o1', total: 'a lot' }, { x: 1 }]);
    expect(logger.warn).toHaveBeenCalledTimes(1);
    expect(raw.deadLetterQueue.size).toBe(0);
    await teardown(context);
  });

  it('ignore: hands every consumed payload to the handler unchecked', async () => {
    const context = await setup('ignore');
    const { bus, raw, logger } = context;
    const got = collectEvents();
    await bus.subscribe('>', got.handler);

    await raw.publish(createEvent('order.placed', { orderId: 'o1', total: 'a lot' }));
    await raw.publish(createEvent('user.deleted', { id: 'u1' }));
    await got.waitForCount(2);

    // Without validation no defaults are applied either.
    expect(got.events.map((e) => e.payload)).toEqual([
      { orderId: 'o1', total: 'a lot' },
      { id: 'u1' },
    ]);
    expect(logger.warn).not.toHaveBeenCalled();
    await teardown(context);
  });

  it('dead-letters a consumed event whose schema throws instead of leaving it unsettled', async () => {
    const broken = defineEvents({
      'doc.saved': z.object({
        id: z.string().refine(() => {
          throw new Error('bug in a refinement');
        }),
      }),
    });
    const transport = new MemoryTransport();
    const bus = new EventBus({ transport, events: broken, logger: quietLogger() });
    await bus.subscribe('doc.saved', () => undefined);

    await transport.publish(createEvent('doc.saved', { id: 'd1' }));
    await waitFor(() => transport.deadLetterQueue.size === 1);

    expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
      code: ErrorCode.VALIDATION,
    });
    expect(transport.deadLetterQueue.list()[0]?.reason.message).toContain('bug in a refinement');
    // Nothing is left in flight: close does not wait for its timeout.
    await bus.close({ timeoutMs: 60_000 });
  });
});

describe('defineEvents and runSchema', () => {
  it('returns the catalog as given', () => {
    expect(events['user.created']).toBeDefined();
    expect(Object.keys(events)).toHaveLength(5);
  });

  it('rejects an invalid event type or a value that is not a Standard Schema with VALIDATION', () => {
    for (const catalog of [
      { 'user.*': z.object({}) },
      { '': z.object({}) },
      { 'a..b': z.object({}) },
      { 'a.b': {} },
    ]) {
      let error: unknown;
      try {
        defineEvents(catalog as never);
      } catch (caught) {
        error = caught;
      }
      expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    }
  });

  it('answers a synchronous schema without a promise and lists the issues with their paths', () => {
    const outcome = runSchema(events['user.created'], { id: 1, email: 'nope' }, 'payload');
    expect(outcome).not.toBeInstanceOf(Promise);
    if (outcome instanceof Promise || outcome.ok) throw new Error('expected a failed outcome');
    expect(outcome.error.issues.map((issue) => issue.path)).toEqual([['id'], ['email']]);
    expect(outcome.error.message).toMatch(/^payload failed schema validation: id: .*; email: /);
  });
});
