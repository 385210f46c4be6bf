import { describe, expect, it } from 'vitest';
import { ErrorCode, ValidationError, isWatchtowerError } from './errors.js';
import { assertEvent, assertEventType, createEvent, isValidEventType } from './event.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

const validTypes = [
  'user',
  'user.created',
  'user.profile.updated',
  'Order_v2.paid-out',
  'a.b.c.d.e.f',
  '0.1',
];
const invalidTypes: unknown[] = [
  '',
  '.',
  'a..b',
  '.user',
  'user.',
  'a b',
  ' user',
  'user.created\n',
  'user\t.created',
  'user.*',
  'user.>',
  'user.#',
  '*',
  '>',
  'user/created',
  'usér.created',
  'user:created',
  undefined,
  null,
  42,
  ['user', 'created'],
];

function validationError(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a VALIDATION error');
}

describe('isValidEventType and assertEventType', () => {
  it.each(validTypes)('accept %j', (type) => {
    expect(isValidEventType(type)).toBe(true);
    expect(() => assertEventType(type)).not.toThrow();
  });

  it.each(invalidTypes)('reject %j with a VALIDATION error on the type', (type) => {
    expect(isValidEventType(type)).toBe(false);
    const error = validationError(() => assertEventType(type));
    expect(error.retryable).toBe(false);
    expect(error.issues[0]?.path).toEqual(['type']);
  });
});

describe('createEvent', () => {
  it('builds an event with a fresh UUID v4 id, a current UTC RFC 3339 timestamp and empty headers', () => {
    const before = Date.now();
    const event = createEvent('user.created', { userId: 1 });
    const after = Date.now();
    expect(event.id).toMatch(UUID_V4);
    expect(event.timestamp).toMatch(RFC3339_UTC);
    const time = Date.parse(event.timestamp);
    expect(time).toBeGreaterThanOrEqual(before);
    expect(time).toBeLessThanOrEqual(after);
    expect(event).toEqual({
      id: event.id,
      type: 'user.created',
      timestamp: event.timestamp,
      headers: {},
      payload: { userId: 1 },
    });
  });

  it('gives every event its own id', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => createEvent('a', null).id));
    expect(ids.size).toBe(1000);
  });

  it('leaves unset optional fields absent rather than undefined', () => {
    const event = createEvent('a', null, {});
    expect(Object.keys(event)).toEqual(['id', 'type', 'timestamp', 'headers', 'payload']);
  });

  it('passes the given metadata through', () => {
    const event = createEvent(
      'order.placed',
      { amount: 10 },
      {
        id: 'custom-id',
        timestamp: '2024-01-15T10:30:00.123456789Z',
        source: 'orders',
        correlationId: '6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b',
        causationId: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d',
        headers: { traceparent: '00-abc-def-01' },
      },
    );
    expect(event).toEqual({
      id: 'custom-id',
      type: 'order.placed',
      timestamp: '2024-01-15T10:30:00.123456789Z',
      source: 'orders',
      correlationId: '6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b',
      causationId: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d',
      headers: { traceparent: '00-abc-def-01' },
      payload: { amount: 10 },
    });
  });

  it('writes a Date timestamp as RFC 3339 in UTC', () => {
    const event = createEvent('a', null, {
      timestamp: new Date(Date.UTC(2026, 10, 22, 10, 0, 0, 123)),
    });
    expect(event.timestamp).toBe('2026-11-22T10:00:00.123Z');
  });

  it('copies the headers, so changing the input later does not change the event', () => {
    const headers = { a: '1' };
    const event = createEvent('a', null, { headers });
    headers.a = '2';
    expect(event.headers).toEqual({ a: '1' });
  });

  it('keeps the payload by reference (no copy on the hot path)', () => {
    const payload = { big: [1, 2, 3] };
    expect(createEvent('a', payload).payload).toBe(payload);
  });

  it('refuses a metadata field it does not know with CONFIG naming it, instead of dropping it', () => {
    expect(() => createEvent('a', null, { sourceId: 'svc' } as never)).toThrow(
      expect.objectContaining({
        code: ErrorCode.CONFIG,
        message: expect.stringContaining('`sourceId`'),
      }),
    );
  });

  it('rejects an invalid Date timestamp with a VALIDATION error on the timestamp', () => {
    const error = validationError(() =>
      createEvent('a', null, { timestamp: new Date(Number.NaN) }),
    );
    expect(error.issues[0]?.path).toEqual(['timestamp']);
  });

  it.each(['', 'a..b', 'a b', 'user.*', 'user.>'])(
    'rejects the type %j with VALIDATION before looking at anything else',
    (type) => {
      const error = validationError(() =>
        createEvent(type, null, { timestamp: new Date(Number.NaN) }),
      );
      expect(error.issues[0]?.path).toEqual(['type']);
    },
  );
});

describe('event metadata types', () => {
  const bad: [string, Record<string, unknown>, string][] = [
    ['a numeric id', { id: 5 }, 'id'],
    ['an empty id', { id: '' }, 'id'],
    ['a numeric source', { source: 5 }, 'source'],
    ['a null source', { source: null }, 'source'],
    ['an object correlationId', { correlationId: {} }, 'correlationId'],
    ['a numeric causationId', { causationId: 1 }, 'causationId'],
    ['headers that are a string', { headers: 'x=1' }, 'headers'],
    ['headers that are an array', { headers: ['a'] }, 'headers'],
    ['headers that are a Map', { headers: new Map([['a', '1']]) }, 'headers'],
    ['headers null', { headers: null }, 'headers'],
    ['a numeric header', { headers: { n: 1 } }, 'headers'],
    ['a null header', { headers: { ok: 'yes', n: null } }, 'headers'],
    ['a numeric timestamp', { timestamp: 1_700_000_000_000 }, 'timestamp'],
    ['a timestamp that is no date', { timestamp: 'hello' }, 'timestamp'],
    [
      'a timestamp Date.parse reads but RFC 3339 does not',
      { timestamp: 'Nov 7, 2025' },
      'timestamp',
    ],
    ['a date without a time', { timestamp: '2025-11-07' }, 'timestamp'],
    ['a timestamp without a zone', { timestamp: '2025-11-07T10:00:00' }, 'timestamp'],
    ['a timestamp in another zone', { timestamp: '2025-11-07T10:00:00+01:00' }, 'timestamp'],
    ['a space for the T', { timestamp: '2025-11-07 10:00:00Z' }, 'timestamp'],
    ['February 30', { timestamp: '2025-02-30T10:00:00Z' }, 'timestamp'],
    ['February 29 of a common year', { timestamp: '2025-02-29T10:00:00Z' }, 'timestamp'],
    ['hour 24', { timestamp: '2025-11-07T24:00:00Z' }, 'timestamp'],
    ['a leap second', { timestamp: '2016-12-31T23:59:60Z' }, 'timestamp'],
    ['an extended year', { timestamp: '+010000-01-01T00:00:00.000Z' }, 'timestamp'],
    ['a Date past year 9999', { timestamp: new Date(Date.UTC(10_000, 0, 1)) }, 'timestamp'],
    ['a Date before year 0', { timestamp: new Date(Date.UTC(-1, 0, 1)) }, 'timestamp'],
  ];

  it.each(bad)('createEvent refuses %s with VALIDATION on that field', (_, metadata, field) => {
    const error = validationError(() => createEvent('a.b', null, metadata as never));
    expect(error.issues[0]?.path?.[0]).toBe(field);
    expect(error.message).toContain(field);
  });

  it.each(bad)(
    'assertEvent refuses an event with %s with VALIDATION on that field',
    (_, metadata, field) => {
      const event = { ...createEvent('a.b', null), ...metadata };
      const error = validationError(() => assertEvent(event));
      expect(error.issues[0]?.path?.[0]).toBe(field);
    },
  );

  it.each([
    '2025-11-07T10:00:00Z',
    '2025-11-07T10:00:00.1Z',
    '2024-01-15T10:30:00.123456789Z',
    '2024-01-15T10:30:00+00:00',
    '2024-02-29T23:59:59.999Z',
    '0000-01-01T00:00:00Z',
    '9999-12-31T23:59:59.999999999Z',
  ])('accepts the RFC 3339 UTC timestamp %s as written', (timestamp) => {
    expect(createEvent('a.b', null, { timestamp }).timestamp).toBe(timestamp);
    expect(() => assertEvent({ ...createEvent('a.b', null), timestamp })).not.toThrow();
  });

  it('accepts string headers, empty ones included, and absent optional fields', () => {
    const event = createEvent('a.b', null, {
      source: '',
      headers: { traceparent: '00-abc-def-01', empty: '' },
    });
    expect(event.headers).toEqual({ traceparent: '00-abc-def-01', empty: '' });
    expect(() => assertEvent(event)).not.toThrow();
    expect(() =>
      assertEvent({ ...createEvent('a.b', null), source: undefined, causationId: undefined }),
    ).not.toThrow();
  });

  it('assertEvent refuses what is not an event, and a bad type, with VALIDATION', () => {
    validationError(() => assertEvent(null));
    validationError(() => assertEvent('user.created'));
    const error = validationError(() => assertEvent({ ...createEvent('a.b', null), type: 'a..b' }));
    expect(error.issues[0]?.path).toEqual(['type']);
  });
});
