import { describe, expect, it } from 'vitest';
import { BackpressureController } from './backpressure.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { InMemoryDeadLetterQueue } from './dead-letter-queue.js';
import { ErrorCode } from './errors.js';
import { EventBus, type EventBusOptions } from './event-bus.js';
import { MemoryBroker, MemoryTransport } from './memory-transport.js';
import {
  booleanOption,
  checkClock,
  checkInteger,
  checkNumber,
  checkOneOf,
  clockOption,
  describeValue,
  functionOption,
  integerOption,
  limitOption,
  numberOption,
  objectOption,
  oneOfOption,
  recordOption,
  rejectUnknownOptions,
  stringOption,
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

describe('validators', () => {
  it('return the value they accept', () => {
    const clock = { now: () => 0, setTimeout: () => 1, clearTimeout: () => undefined };
    const fn = (): number => 1;
    expect(integerOption('n', 3, 1)).toBe(3);
    expect(integerOption('n', 5, 1, { max: 5 })).toBe(5);
    expect(integerOption('n', Infinity, 0, { allowInfinity: true })).toBe(Infinity);
    expect(limitOption('n', -1)).toBe(-1);
    expect(limitOption('n', 1)).toBe(1);
    expect(limitOption('n', 0, 0)).toBe(0);
    expect(numberOption('x', 0, { min: 0 })).toBe(0);
    expect(numberOption('x', 0.5, { above: 0 })).toBe(0.5);
    expect(stringOption('s', 'a')).toBe('a');
    expect(stringOption('s', '', { allowEmpty: true })).toBe('');
    expect(stringOption('s', 'a.b', { pattern: /^[a-z.]+$/, hint: 'dotted words' })).toBe('a.b');
    expect(booleanOption('b', false)).toBe(false);
    expect(oneOfOption('o', 'auto', [true, false, 'auto'])).toBe('auto');
    expect(oneOfOption('o', false, [true, false, 'auto'])).toBe(false);
    expect(functionOption('f', fn)).toBe(fn);
    expect(clockOption('clock', clock)).toBe(clock);
    const tls = { ca: 'x' };
    expect(recordOption('tls', tls)).toBe(tls);
    expect(recordOption('tls', undefined)).toBeUndefined();
  });

  it.each<[string, () => unknown, string]>([
    ['an integer below min', () => integerOption('n', 0, 1), 'must be an integer >= 1, got 0'],
    ['a fraction', () => integerOption('n', 1.5, 1), 'must be an integer >= 1, got 1.5'],
    ['a string as integer', () => integerOption('n', '3', 1), 'must be an integer >= 1, got "3"'],
    [
      'an integer above max',
      () => integerOption('n', 7, 1, { max: 5 }),
      'must be an integer >= 1 and <= 5, got 7',
    ],
    [
      'Infinity where it is not allowed',
      () => integerOption('n', Infinity, 0),
      'must be an integer >= 0, got Infinity',
    ],
    ['a limit of 0', () => limitOption('n', 0), 'must be -1 (no limit) or an integer >= 1, got 0'],
    [
      'a limit below -1',
      () => limitOption('n', -2, 0),
      'must be -1 (no limit) or an integer >= 0, got -2',
    ],
    [
      'a negative number',
      () => numberOption('n', -1, { min: 0 }),
      'must be a finite number >= 0, got -1',
    ],
    [
      'zero where it must be positive',
      () => numberOption('n', 0, { above: 0 }),
      'must be a finite number > 0, got 0',
    ],
    [
      'an infinite number',
      () => numberOption('n', Infinity, { min: 0 }),
      'must be a finite number >= 0, got Infinity',
    ],
    ['an empty string', () => stringOption('n', ''), 'must be a non-empty string, got ""'],
    ['a number as string', () => stringOption('n', 42), 'must be a non-empty string, got 42'],
    [
      'a number as possibly empty string',
      () => stringOption('n', 42, { allowEmpty: true }),
      'must be a string, got 42',
    ],
    [
      'a string off the pattern',
      () => stringOption('n', 'a b', { pattern: /^\S+$/, hint: 'a name without spaces' }),
      'must be a name without spaces, got "a b"',
    ],
    [
      'a string off a pattern without hint',
      () => stringOption('n', 'a b', { pattern: /^\S+$/ }),
      'must be a string matching /^\\S+$/, got "a b"',
    ],
    ['a string as boolean', () => booleanOption('n', 'yes'), 'must be true or false, got "yes"'],
    [
      'a value not listed',
      () => oneOfOption('n', 'yes', [true, false, 'auto']),
      'must be true, false or "auto", got "yes"',
    ],
    ['a non-function', () => functionOption('n', loose({})), 'must be a function, got an object'],
    [
      'a non-clock',
      () => clockOption('n', { now: () => 0 }),
      'must be a Clock with now(), setTimeout() and clearTimeout(), got an object',
    ],
    ['an array as record', () => recordOption('n', []), 'must be an object, got an empty array'],
    [
      'null as record',
      () => recordOption('n', null as unknown as object, 'TLS options'),
      'must be TLS options, got null',
    ],
    [
      'a string as nested options',
      () => objectOption('n', 'x' as unknown as object, ['a']),
      'must be an options object, got "x"',
    ],
  ])('refuse %s with CONFIG naming the field, in the one style', (_name, fn, problem) => {
    const error = thrown(fn);
    expect(error).toMatchObject({ code: ErrorCode.CONFIG });
    expect((error as Error).message).toBe(`invalid option \`n\`: ${problem}`);
  });

  it('objectOption returns the defined fields of nested options', () => {
    const given = objectOption<{ a?: number; b?: number | undefined }>(
      'outer',
      { a: 1, b: undefined },
      ['a', 'b'],
    );
    expect(given).toEqual({ a: 1 });
    expect(Object.keys(given)).toEqual(['a']);
    expect(objectOption('outer', undefined, ['a'])).toEqual({});
  });

  it('objectOption names an unknown nested key by its dotted path', () => {
    const error = thrown(() =>
      objectOption('consumer', loose<{ ackWaitMs?: number }>({ ackWait: 5 }), ['ackWaitMs']),
    );
    expect(error).toMatchObject({ code: ErrorCode.CONFIG });
    expect((error as Error).message).toBe(
      'invalid option `consumer.ackWait`: is not an option of consumer (known: ackWaitMs)',
    );
  });

  it('describeValue quotes strings and names other objects by kind only', () => {
    expect(describeValue('a')).toBe('"a"');
    expect(describeValue(1.5)).toBe('1.5');
    expect(describeValue(Number.NaN)).toBe('NaN');
    expect(describeValue(true)).toBe('true');
    expect(describeValue(null)).toBe('null');
    expect(describeValue(undefined)).toBe('undefined');
    expect(describeValue([])).toBe('an empty array');
    expect(describeValue([1])).toBe('an array');
    expect(describeValue({ password: 'secret' })).toBe('an object');
    expect(describeValue(() => 1)).toBe('a function');
  });
});

describe('options objects given as something else are refused, not replaced by defaults', () => {
  const makers: [string, (options: unknown) => unknown][] = [
    ['CircuitBreaker', (options) => new CircuitBreaker(options as never)],
    ['BackpressureController', (options) => new BackpressureController(options as never)],
    ['RetryPolicy', (options) => new RetryPolicy(options as never)],
    ['InMemoryDeadLetterQueue', (options) => new InMemoryDeadLetterQueue(options as never)],
  ];
  const values: [string, unknown][] = [
    ['a number', 5],
    ['zero', 0],
    ['a string', 'defaults'],
    ['true', true],
    ['null', null],
    ['an array', []],
    ['a function', () => ({})],
  ];

  it.each(
    makers.flatMap(([name, make]) =>
      values.map(([what, value]) => [name, what, make, value] as const),
    ),
  )('%s refuses %s with CONFIG', (_name, _what, make, value) => {
    const error = thrown(() => make(value));
    expect(error).toMatchObject({ code: ErrorCode.CONFIG });
    expect((error as Error).message).toContain('must be an options object');
  });

  it.each(makers)('%s still takes no options at all', (_name, make) => {
    expect(() => make(undefined)).not.toThrow();
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
