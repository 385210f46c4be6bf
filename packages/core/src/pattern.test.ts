import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, ValidationError, isWatchtowerError } from './errors.js';
import {
  PatternIndex,
  assertPattern,
  compilePattern,
  isValidPattern,
  matchPattern,
  patternsOverlap,
  toAmqpBindingKey,
  toNatsSubject,
} from './pattern.js';

/** The reference: the definition of the syntax, written as plainly as possible. */
function reference(pattern: string, type: string): boolean {
  const go = (p: readonly string[], t: readonly string[]): boolean => {
    const [head, ...rest] = p;
    if (head === undefined) return t.length === 0;
    if (head === '>' || head === '#') return t.length >= 1;
    if (t.length === 0) return false;
    return (head === '*' || head === t[0]) && go(rest, t.slice(1));
  };
  return go(pattern.split('.'), type.split('.'));
}

const matchTable: Array<[pattern: string, type: string, expected: boolean]> = [
  ['user.*', 'user.created', true],
  ['user.*', 'user.profile.updated', false],
  ['user.*', 'user', false],
  ['user.*', 'users.created', false],
  ['user.>', 'user.created', true],
  ['user.>', 'user.profile.updated', true],
  ['user.>', 'user', false],
  ['user.>', 'usera.created', false],
  ['user.#', 'user.profile.updated', true],
  ['user.#', 'user', false],
  ['>', 'user', true],
  ['>', 'user.profile.updated', true],
  ['#', 'a.b.c.d.e', true],
  ['*', 'user', true],
  ['*', 'user.created', false],
  ['*.created', 'user.created', true],
  ['*.created', 'order.created', true],
  ['*.created', 'user.profile.created', false],
  ['*.created', 'created', false],
  ['*.created', 'user.created.', false],
  ['*.b', 'a.b.c', false],
  ['*.*', 'a.b', true],
  ['*.*', 'a.b.c', false],
  ['a.*.c.>', 'a.b.c.d', true],
  ['a.*.c.>', 'a.x.c.d.e.f', true],
  ['a.*.c.>', 'a.b.c', false],
  ['a.*.c.>', 'a.b.d.e', false],
  ['a.*.c.>', 'a.c.d', false],
  ['*.>', 'a', false],
  ['*.>', 'a.b', true],
  ['user.created', 'user.created', true],
  ['user.created', 'user.created.v2', false],
  ['user.created', 'user', false],
  ['User.Created', 'user.created', false],
  ['order_v2.paid-out', 'order_v2.paid-out', true],
  ['user.*', 'user.', false],
  ['user.>', 'user.a..b', false],
  ['user.>', 'user.a.', false],
  ['user.*', 'user.a b', false],
  ['*', '', false],
  ['>', '', false],
  ['>', '.', false],
];

describe('pattern syntax', () => {
  it.each([
    'user.created',
    'user.*',
    'user.>',
    'user.#',
    '*',
    '>',
    '#',
    '*.created',
    'a.*.c.>',
    '*.*.*',
    'Order_v2.paid-out',
  ])('accepts %j', (pattern) => {
    expect(isValidPattern(pattern)).toBe(true);
    expect(() => assertPattern(pattern)).not.toThrow();
  });

  it.each([
    ['the empty string', ''],
    ['a leading dot', '.user'],
    ['a trailing dot', 'user.'],
    ['an empty token', 'user..created'],
    ['a lone dot', '.'],
    ['`>` before the last token', 'user.>.created'],
    ['`#` before the last token', '#.created'],
    ['`>` alone before a token', '>.a'],
    ['a wildcard mixed into a token', '*x'],
    ['a wildcard suffix', 'user.created*'],
    ['`>` mixed into a token', 'user.a>'],
    ['a doubled wildcard', 'user.>>'],
    ['a space', 'user created'],
    ['a space inside a token', 'user.cre ated'],
    ['surrounding whitespace', ' user.created'],
    ['a tab', 'user.\tcreated'],
    ['a slash', 'user/created'],
    ['a non-ASCII letter', 'usér.created'],
  ])('rejects %s with a VALIDATION error that names the problem', (_name, pattern) => {
    expect(isValidPattern(pattern)).toBe(false);
    let thrown: unknown;
    try {
      assertPattern(pattern);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ValidationError);
    expect(isWatchtowerError(thrown, ErrorCode.VALIDATION)).toBe(true);
    expect((thrown as ValidationError).message).toContain(JSON.stringify(pattern));
    expect((thrown as ValidationError).issues[0]?.path).toEqual(['pattern']);
  });

  it('rejects a value that is not a string', () => {
    expect(isValidPattern(undefined)).toBe(false);
    expect(isValidPattern(42)).toBe(false);
    expect(() => assertPattern(null)).toThrow(ValidationError);
  });

  it('throws VALIDATION from compilePattern, matchPattern and PatternIndex.add for an invalid pattern', () => {
    expect(() => compilePattern('a..b')).toThrow(ValidationError);
    expect(() => matchPattern('a.>.b', 'a.x.b')).toThrow(ValidationError);
    expect(() => new PatternIndex<number>().add('', 1)).toThrow(ValidationError);
  });
});

describe('compilePattern and matchPattern', () => {
  it.each(matchTable)('%j against %j is %s', (pattern, type, expected) => {
    expect(compilePattern(pattern).matches(type)).toBe(expected);
    expect(matchPattern(pattern, type)).toBe(expected);
    // The table itself agrees with the reference definition for valid types.
    if (/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(type))
      expect(reference(pattern, type)).toBe(expected);
  });

  it('describes the pattern: source as given, tokens with # as >, and whether it is literal', () => {
    expect(compilePattern('user.#')).toMatchObject({
      source: 'user.#',
      tokens: ['user', '>'],
      literal: false,
    });
    expect(compilePattern('user.created')).toMatchObject({
      source: 'user.created',
      tokens: ['user', 'created'],
      literal: true,
    });
    expect(compilePattern('*').literal).toBe(false);
  });

  it('returns an immutable compiled pattern', () => {
    const compiled = compilePattern('a.*');
    expect(Object.isFrozen(compiled)).toBe(true);
    expect(Object.isFrozen(compiled.tokens)).toBe(true);
  });

  it('matches nothing that is not a string', () => {
    expect(compilePattern('>').matches(undefined as unknown as string)).toBe(false);
    expect(compilePattern('a').matches(1 as unknown as string)).toBe(false);
  });

  it('keeps answering correctly after more patterns than its cache holds', () => {
    for (let i = 0; i < 3000; i++) expect(matchPattern(`p${i}.*`, `p${i}.x`)).toBe(true);
    expect(matchPattern('p0.*', 'p1.x')).toBe(false);
  });
});

describe('transport mappings', () => {
  it.each([
    ['user.created', 'user.created', 'user.created'],
    ['user.*', 'user.*', 'user.*'],
    ['user.>', 'user.>', 'user.#'],
    ['user.#', 'user.>', 'user.#'],
    ['>', '>', '#'],
    ['#', '>', '#'],
    ['*.x.>', '*.x.>', '*.x.#'],
  ])('maps %j to NATS %j and to AMQP %j', (pattern, nats, amqp) => {
    expect(toNatsSubject(pattern)).toBe(nats);
    expect(toAmqpBindingKey(pattern)).toBe(amqp);
  });

  it('rejects invalid patterns instead of passing them to a broker', () => {
    expect(() => toNatsSubject('a.>.b')).toThrow(ValidationError);
    expect(() => toAmqpBindingKey('a b')).toThrow(ValidationError);
  });
});

describe('PatternIndex', () => {
  it('finds the values of every matching pattern', () => {
    const index = new PatternIndex<string>();
    index.add('user.*', 'star');
    index.add('user.>', 'tail');
    index.add('user.created', 'exact');
    index.add('*.created', 'any-created');
    index.add('order.>', 'orders');
    expect(new Set(index.match('user.created'))).toEqual(
      new Set(['star', 'tail', 'exact', 'any-created']),
    );
    expect(index.match('user.profile.updated')).toEqual(['tail']);
    expect(index.match('user')).toEqual([]);
    expect(index.match('order.created')).toEqual(expect.arrayContaining(['orders', 'any-created']));
    expect(index.match('invoice.paid')).toEqual([]);
  });

  it('returns a value once even when several of its patterns match', () => {
    const index = new PatternIndex<string>();
    const subscription = 'sub-1';
    index.add('user.*', subscription);
    index.add('user.>', subscription);
    index.add('>', subscription);
    index.add('user.created', subscription);
    expect(index.match('user.created')).toEqual([subscription]);
    expect(index.size).toBe(4);
  });

  it('stores a (pattern, value) pair once, treating # and > as the same pattern', () => {
    const index = new PatternIndex<number>();
    index.add('a.>', 1);
    index.add('a.>', 1);
    index.add('a.#', 1);
    expect(index.size).toBe(1);
    expect(index.remove('a.#', 1)).toBe(true);
    expect(index.size).toBe(0);
    expect(index.match('a.b')).toEqual([]);
  });

  it('compares values by identity', () => {
    const index = new PatternIndex<{ name: string }>();
    const first = { name: 'same' };
    const second = { name: 'same' };
    index.add('a', first);
    index.add('a', second);
    expect(index.match('a')).toEqual([first, second]);
    expect(index.remove('a', { name: 'same' })).toBe(false);
  });

  it('stops returning a value once it is removed, and reports whether it was there', () => {
    const index = new PatternIndex<string>();
    index.add('user.*', 'a');
    index.add('user.*', 'b');
    expect(index.match('user.created')).toEqual(['a', 'b']);
    expect(index.remove('user.*', 'a')).toBe(true);
    expect(index.match('user.created')).toEqual(['b']);
    expect(index.remove('user.*', 'a')).toBe(false);
    expect(index.remove('user.>', 'b')).toBe(false);
    expect(index.remove('nothing.here', 'b')).toBe(false);
    expect(index.remove('not valid..', 'b')).toBe(false);
    expect(index.size).toBe(1);
  });

  it('sees a pattern added after a type was already looked up (the cache is invalidated)', () => {
    const index = new PatternIndex<string>();
    expect(index.match('user.created')).toEqual([]);
    index.add('user.>', 'late');
    expect(index.match('user.created')).toEqual(['late']);
    index.clear();
    expect(index.match('user.created')).toEqual([]);
    expect(index.size).toBe(0);
  });

  it('returns the same frozen array for repeated lookups of a type', () => {
    const index = new PatternIndex<number>();
    index.add('a.*', 1);
    const first = index.match('a.b');
    expect(index.match('a.b')).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
  });

  it('matches nothing for an invalid event type', () => {
    const index = new PatternIndex<number>();
    index.add('>', 1);
    index.add('*', 2);
    for (const type of ['', '.', 'a..b', 'a.', '.a', 'a b', 'a.*', 'a.>']) {
      expect(index.match(type)).toEqual([]);
    }
  });

  it('works with the cache turned off', () => {
    const index = new PatternIndex<number>({ cacheSize: 0 });
    index.add('a.*', 1);
    expect(index.match('a.b')).toEqual([1]);
    expect(index.match('a.b')).toEqual([1]);
  });

  it('rejects a cacheSize that is not a non-negative integer with a CONFIG error naming it', () => {
    for (const cacheSize of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      let thrown: unknown;
      try {
        new PatternIndex({ cacheSize });
      } catch (error) {
        thrown = error;
      }
      expect(isWatchtowerError(thrown, ErrorCode.CONFIG)).toBe(true);
      expect((thrown as Error).message).toContain('cacheSize');
    }
  });

  it('stays correct when more types are looked up than the cache holds', () => {
    const index = new PatternIndex<number>({ cacheSize: 4 });
    index.add('t.*', 1);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 20; i++) expect(index.match(`t.${i}`)).toEqual([1]);
    }
  });
});

// Small alphabets so that random patterns and types actually match each other often.
const typeToken = fc.constantFrom('a', 'b', 'c');
const typeArb = fc.array(typeToken, { minLength: 1, maxLength: 5 }).map((t) => t.join('.'));
const patternArb = fc
  .tuple(
    fc.array(fc.constantFrom('a', 'b', 'c', '*'), { minLength: 0, maxLength: 4 }),
    fc.constantFrom(undefined, '>', '#'),
  )
  .filter(([tokens, tail]) => tokens.length > 0 || tail !== undefined)
  .map(([tokens, tail]) => (tail === undefined ? tokens : [...tokens, tail]).join('.'));

describe('properties against the reference matcher', () => {
  it('compilePattern(p).matches(t) agrees with the reference', () => {
    fc.assert(
      fc.property(patternArb, typeArb, (pattern, type) => {
        expect(compilePattern(pattern).matches(type)).toBe(reference(pattern, type));
      }),
      { numRuns: 5000 },
    );
  });

  it('PatternIndex.match(t) returns exactly the values of matching patterns, each once', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(patternArb, fc.integer({ min: 0, max: 5 })), { maxLength: 30 }),
        fc.array(typeArb, { minLength: 1, maxLength: 10 }),
        (entries, types) => {
          const index = new PatternIndex<number>();
          for (const [pattern, value] of entries) index.add(pattern, value);
          for (const type of types) {
            const result = index.match(type);
            const expected = new Set(
              entries.filter(([pattern]) => reference(pattern, type)).map(([, value]) => value),
            );
            expect(result.length).toBe(new Set(result).size);
            expect(new Set(result)).toEqual(expected);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  type Op =
    | { kind: 'add'; pattern: string; value: number }
    | { kind: 'remove'; pattern: string; value: number }
    | { kind: 'match'; type: string }
    | { kind: 'clear' };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('add' as const),
        pattern: patternArb,
        value: fc.integer({ min: 0, max: 4 }),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('remove' as const),
        pattern: patternArb,
        value: fc.integer({ min: 0, max: 4 }),
      }),
    },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('match' as const), type: typeArb }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
  );
  const normalise = (pattern: string): string =>
    pattern.endsWith('#') ? `${pattern.slice(0, -1)}>` : pattern;

  it('add, remove, clear and match stay consistent with a model, through the cache', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { maxLength: 60 }),
        fc.constantFrom(0, 2, 1024),
        (ops, cacheSize) => {
          const index = new PatternIndex<number>({ cacheSize });
          const model = new Set<string>(); // `${normalised pattern} ${value}`
          for (const op of ops) {
            switch (op.kind) {
              case 'add':
                index.add(op.pattern, op.value);
                model.add(`${normalise(op.pattern)} ${op.value}`);
                break;
              case 'remove': {
                const key = `${normalise(op.pattern)} ${op.value}`;
                expect(index.remove(op.pattern, op.value)).toBe(model.delete(key));
                break;
              }
              case 'clear':
                index.clear();
                model.clear();
                break;
              case 'match': {
                const expected = new Set<number>();
                for (const key of model) {
                  const [pattern, value] = key.split(' ') as [string, string];
                  if (reference(pattern, op.type)) expected.add(Number(value));
                }
                const result = index.match(op.type);
                expect(result.length).toBe(new Set(result).size);
                expect(new Set(result)).toEqual(expected);
                break;
              }
            }
            expect(index.size).toBe(model.size);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('patternsOverlap', () => {
  /** Every type of 1 to 5 tokens over the patterns' alphabet plus one token neither names. */
  const universe: string[] = [];
  const grow = (prefix: string[]): void => {
    if (prefix.length > 0) universe.push(prefix.join('.'));
    if (prefix.length === 5) return;
    for (const token of ['a', 'b', 'c', 'z']) grow([...prefix, token]);
  };
  grow([]);

  it.each<[string, string, boolean]>([
    ['user.*', '*.created', true],
    ['user.*', 'order.>', false],
    ['user.>', 'user.a.b', true],
    ['user.*', 'user.a.b', false],
    ['a.b', 'a.b', true],
    ['>', 'x', true],
    ['*.*', 'a.>', true],
    ['a', 'a.>', false],
  ])('%s and %s overlap: %s', (a, b, expected) => {
    expect(patternsOverlap(compilePattern(a), compilePattern(b))).toBe(expected);
    expect(patternsOverlap(compilePattern(b), compilePattern(a))).toBe(expected);
  });

  it('agrees with a search for a type both match', () => {
    fc.assert(
      fc.property(patternArb, patternArb, (a, b) => {
        const witness = universe.some((type) => reference(a, type) && reference(b, type));
        expect(patternsOverlap(compilePattern(a), compilePattern(b))).toBe(witness);
      }),
      { numRuns: 500 },
    );
  });
});
