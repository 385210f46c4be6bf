import { describe, expect, it } from 'vitest';
import { BackpressureController } from './backpressure.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { InMemoryDeadLetterQueue } from './dead-letter-queue.js';
import { ErrorCode } from './errors.js';
import { EventBus, type EventBusOptions } from './event-bus.js';
import { MemoryBroker, MemoryTransport } from './memory-transport.js';
import {
  checkClock,
  checkInteger,
  checkNumber,
  checkOneOf,
  rejectUnknownOptions,
  withDefaults,
} from './options.js';
import { RetryPolicy } from './retry-policy.js';
import { thrown } from './testing/thrown.js';

/** Options objects as a JavaScript caller (no type checker) might write them. */
const loose = <T>(value: Record<string, unknown>): T => value as T;

describe('withDefaults', () => {
  it('fills left-out and undefined fields from the defaults and keeps given ones', () => {
    const merged = withDefaults<{ a?: number | undefined; b?: string }>(
      { a: 1, b: 'x' },
      { a: undefined, b: 'y' },
      'thing',
    );
    expect(merged).toEqual({ a: 1, b: 'y' });
  });

  it('rejects a field the defaults do not have, naming it and the options object', () => {
    const error = thrown(() => withDefaults({ a: 1 }, loose<{ a?: number }>({ aa: 2 }), 'thing'));
    expect(error).toMatchObject({ code: ErrorCode.CONFIG });
    expect((error as Error).message).toMatch(/`aa`.*thing/);
  });
});

describe('checks', () => {
  it('accept valid values and reject the rest with CONFIG naming the field', () => {
    expect(() => checkInteger('n', 3, 1)).not.toThrow();
    expect(() => checkInteger('n', Infinity, 0, { allowInfinity: true })).not.toThrow();
    expect(() => checkNumber('x', 0.5, { above: 0, max: 1 })).not.toThrow();
    expect(() => checkOneOf('s', 'a', ['a', 'b'])).not.toThrow();
    for (const [fn, field] of [
      [() => checkInteger('n', 1.5, 1), 'n'],
      [() => checkInteger('n', Infinity, 0), 'n'],
      [() => checkNumber('x', 0, { above: 0 }), 'x'],
      [() => checkNumber('x', Number.NaN, { min: 0 }), 'x'],
      [() => checkOneOf('s', 'c', ['a', 'b']), 's'],
      [() => checkClock('clock', {}), 'clock'],
      [() => rejectUnknownOptions(loose<object>({ extra: 1 }), ['known'], 'thing'), 'extra'],
    ] as const) {
      const error = thrown(fn);
      expect(error).toMatchObject({ code: ErrorCode.CONFIG });
      expect((error as Error).message).toContain(`\`${field}\``);
    }
  });
});

describe('misspelt options are refused, not ignored', () => {
  const transport = (): MemoryTransport => new MemoryTransport();

  it.each<[string, () => unknown, string]>([
    [
      'EventBus',
      () => new EventBus(loose<EventBusOptions>({ transport: transport(), closeTimeout: 5 })),
      'closeTimeout',
    ],
    [
      'EventBus circuitBreaker',
      () => new EventBus({ transport: transport(), circuitBreaker: loose({ failureTreshold: 3 }) }),
      'failureTreshold',
    ],
    [
      'EventBus subscriptionDefaults',
      () =>
        new EventBus({ transport: transport(), subscriptionDefaults: loose({ concurency: 2 }) }),
      'concurency',
    ],
    ['CircuitBreaker', () => new CircuitBreaker(loose({ resetTimeout: 1 })), 'resetTimeout'],
    ['BackpressureController', () => new BackpressureController(loose({ maxSize: 1 })), 'maxSize'],
    ['RetryPolicy', () => new RetryPolicy(loose({ retries: 1 })), 'retries'],
    ['InMemoryDeadLetterQueue', () => new InMemoryDeadLetterQueue(loose({ size: 1 })), 'size'],
    ['MemoryTransport', () => new MemoryTransport(loose({ prefetch: 1 })), 'prefetch'],
    ['MemoryBroker', () => new MemoryBroker(loose({ maxInFlight: 1 })), 'maxInFlight'],
  ])('%s', (_name, make, field) => {
    const error = thrown(make);
    expect(error).toMatchObject({ code: ErrorCode.CONFIG });
    expect((error as Error).message).toContain(`\`${field}\``);
  });

  it('subscribe() refuses an unknown option before subscribing', async () => {
    const bus = new EventBus({ transport: transport() });
    await expect(
      bus.subscribe('a.b', () => undefined, loose({ concurency: 4 })),
    ).rejects.toMatchObject({ code: ErrorCode.CONFIG });
    expect(bus.stats().subscriptions).toBe(0);
    await bus.close();
  });
});
