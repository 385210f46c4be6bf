import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeEvent, decodeEventFromValue, encodeEvent, encodeEventBytes } from './codec.js';
import { ErrorCode, SerializationError, isWatchtowerError } from './errors.js';
import { createEvent, type Event } from './event.js';

const utf8 = new TextEncoder();

function full(): Event {
  return {
    id: '0b6b2d5e-8f1a-4c3e-9d2b-5a7c1e4f6a80',
    type: 'user.created',
    timestamp: '2026-11-22T10:00:00.123Z',
    source: 'accounts-service',
    correlationId: '6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b',
    causationId: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d',
    headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'x-k': 'v' },
    payload: { userId: 42, email: 'a@example.com', tags: ['a', 'b'], nested: { ok: true } },
  };
}

/** Calls `decode` and returns the `SerializationError` it throws. */
function rejection(decode: () => unknown): SerializationError {
  try {
    decode();
  } catch (error) {
    expect(isWatchtowerError(error, ErrorCode.SERIALIZATION)).toBe(true);
    expect(error).toBeInstanceOf(SerializationError);
    return error as SerializationError;
  }
  throw new Error('expected decoding to throw');
}

describe('encodeEvent', () => {
  it('writes the Rust fields as Rust does (null for an absent source and correlation_id) and leaves out causation_id and headers the event does not have', () => {
    const event = createEvent(
      'user.created',
      { userId: 42 },
      { id: '0b6b2d5e-8f1a-4c3e-9d2b-5a7c1e4f6a80', timestamp: '2026-11-22T10:00:00.123Z' },
    );
    expect(encodeEvent(event)).toBe(
      '{"metadata":{"id":"0b6b2d5e-8f1a-4c3e-9d2b-5a7c1e4f6a80","event_type":"user.created",' +
        '"timestamp":"2026-11-22T10:00:00.123Z","source":null,"correlation_id":null},' +
        '"payload":{"userId":42}}',
    );
  });

  it('writes causation_id and headers each only when it has a value', () => {
    const base = { id: 'e-1', timestamp: '2026-11-22T10:00:00Z' };
    const keysOf = (event: Event): string[] =>
      Object.keys((JSON.parse(encodeEvent(event)) as { metadata: object }).metadata);
    const keys = (metadata: Parameters<typeof createEvent>[2]): string[] =>
      keysOf(createEvent('a', 1, metadata));
    const rust = ['id', 'event_type', 'timestamp', 'source', 'correlation_id'];
    expect(keys({ ...base, causationId: 'c-1' })).toEqual([...rust, 'causation_id']);
    expect(keys({ ...base, headers: { k: 'v' } })).toEqual([...rust, 'headers']);
    expect(keys({ ...base, headers: {} })).toEqual(rust);
    // Headers without a plain prototype that hold nothing are left out as well.
    const bare = Object.create(null) as Record<string, string>;
    expect(keysOf({ ...createEvent('a', 1, base), headers: bare })).toEqual(rust);
  });

  it('writes every optional field and the headers when present', () => {
    const parsed = JSON.parse(encodeEvent(full())) as { metadata: Record<string, unknown> };
    expect(Object.keys(parsed)).toEqual(['metadata', 'payload']);
    expect(Object.keys(parsed.metadata)).toEqual([
      'id',
      'event_type',
      'timestamp',
      'source',
      'correlation_id',
      'causation_id',
      'headers',
    ]);
    expect(parsed.metadata).toMatchObject({
      source: 'accounts-service',
      correlation_id: '6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b',
      causation_id: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d',
      headers: { 'x-k': 'v' },
    });
  });

  it('writes an undefined payload as null, which decodes as null', () => {
    const event = createEvent('tick', undefined);
    expect(encodeEvent(event)).toMatch(/"payload":null}$/);
    expect(decodeEvent(encodeEvent(event)).payload).toBeNull();
  });

  it('escapes strings, so a hand-built event with quotes in its fields still yields valid JSON', () => {
    const event: Event = { ...full(), id: 'a"b\\c', source: 'line\nbreak "quoted"' };
    expect(decodeEvent(encodeEvent(event))).toEqual(event);
  });

  it('rejects a payload that JSON cannot hold with a SERIALIZATION error', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    const cycle = rejection(() => encodeEvent(createEvent('a', cyclic)));
    expect(cycle.cause).toBeInstanceOf(TypeError);
    const bigint = rejection(() => encodeEvent(createEvent('a', { n: 1n })));
    expect(bigint.raw).toBeUndefined();
  });

  it('writes each event of a run with its own type, timestamp, source and correlation id', () => {
    const base = createEvent('user.created', 1);
    const variants: Event[] = [
      base,
      { ...base, id: 'second' },
      { ...base, type: 'user.deleted' },
      { ...base, timestamp: '2026-11-22T10:00:00.124Z' },
      { ...base, source: 'billing' },
      { ...base, source: 'billing', correlationId: 'c-1' },
      { ...base, correlationId: 'c-2' },
      base,
    ];
    for (const event of variants) {
      expect(JSON.parse(encodeEvent(event))).toEqual({
        metadata: {
          id: event.id,
          event_type: event.type,
          timestamp: event.timestamp,
          source: event.source ?? null,
          correlation_id: event.correlationId ?? null,
        },
        payload: 1,
      });
    }
  });

  it('writes a plain event right after one with a causation id, headers or an id to escape', () => {
    const base = createEvent('user.created', 1);
    const run: Event[] = [
      { ...base, causationId: 'k-1' },
      { ...base, type: 'user.renamed' },
      { ...base, headers: { tenant: 't-1' }, source: 'crm' },
      { ...base, source: 'crm' },
      { ...base, id: 'quote"d', timestamp: '2026-11-22T10:00:00.125Z' },
      base,
    ];
    for (const event of run) {
      const written = JSON.parse(encodeEvent(event)) as { metadata: Record<string, unknown> };
      expect(written.metadata).toMatchObject({
        id: event.id,
        event_type: event.type,
        timestamp: event.timestamp,
        source: event.source ?? null,
      });
      expect(decodeEvent(encodeEvent(event))).toEqual(event);
    }
  });

  it('encodes to UTF-8 bytes equal to the JSON text', () => {
    const event: Event = { ...full(), payload: { text: 'héllo wörld ✓ 日本語 🎉' } };
    const bytes = encodeEventBytes(event);
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect(Array.from(bytes)).toEqual(Array.from(utf8.encode(encodeEvent(event))));
  });
});

describe('decodeEvent round trip', () => {
  it('returns an equal event from text and from bytes, with all optional fields', () => {
    const event = full();
    expect(decodeEvent(encodeEvent(event))).toEqual(event);
    expect(decodeEvent(encodeEventBytes(event))).toEqual(event);
  });

  it('leaves absent optional fields absent, not undefined', () => {
    const decoded = decodeEvent(encodeEvent(createEvent('user.created', 1)));
    expect('source' in decoded).toBe(false);
    expect('correlationId' in decoded).toBe(false);
    expect('causationId' in decoded).toBe(false);
    expect(decoded.headers).toEqual({});
  });

  it('keeps unicode in payload, headers and source, including astral characters and lone surrogates', () => {
    const event: Event = {
      ...full(),
      source: 'サービス',
      headers: { 'x-emoji': '🚀✨', 'x-ключ': 'значение', 'x-lone': '\ud800' },
      payload: { text: 'Ünïcödé 中文 العربية 🎉👩‍👩‍👧', lone: '\udfff', zero: '\u0000' },
    };
    expect(decodeEvent(encodeEvent(event))).toEqual(event);
    expect(decodeEvent(encodeEventBytes(event))).toEqual(event);
  });

  it('round trips a payload of about 1 MB', () => {
    const big = 'x'.repeat(512 * 1024) + '€'.repeat((512 * 1024) / 3);
    const items = Array.from({ length: 1000 }, (_, i) => ({
      i,
      name: `item-${i}`,
      ok: i % 2 === 0,
    }));
    const event = createEvent('blob.stored', { big, items });
    const bytes = encodeEventBytes(event);
    expect(bytes.byteLength).toBeGreaterThan(1024 * 1024);
    expect(decodeEvent(bytes)).toEqual(event);
  });

  it('keeps a __proto__ key in headers and payload as plain data', () => {
    const text =
      '{"metadata":{"id":"x","event_type":"a","timestamp":"2026-01-01T00:00:00Z",' +
      '"headers":{"__proto__":"h"}},"payload":{"__proto__":{"polluted":true}}}';
    const decoded = decodeEvent(text);
    expect(Object.getOwnPropertyDescriptor(decoded.headers, '__proto__')?.value).toBe('h');
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(decodeEvent(encodeEvent(decoded))).toEqual(decoded);
  });

  const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/);
  const eventType = fc
    .array(token, { minLength: 1, maxLength: 5 })
    .map((tokens) => tokens.join('.'));
  const anyString = fc.string({ unit: 'binary', maxLength: 40 });
  // JSON has no -0 (it is written as 0), so payloads are taken as JSON would give them back.
  const payload = fc
    .jsonValue({ stringUnit: 'binary', maxDepth: 4 })
    .map((value) => JSON.parse(JSON.stringify(value)) as unknown);
  const arbitraryEvent: fc.Arbitrary<Event> = fc
    .record(
      {
        id: fc.oneof(fc.uuid({ version: 4 }), anyString),
        type: eventType,
        timestamp: fc.oneof(
          fc
            .date({ min: new Date('1970-01-01'), max: new Date('2999-12-31'), noInvalidDate: true })
            .map((date) => date.toISOString()),
          fc.constantFrom('2024-01-15T10:30:00.123456789Z', '2024-01-15T10:30:00+00:00'),
        ),
        source: anyString,
        correlationId: fc.uuid(),
        causationId: anyString,
        headers: fc.dictionary(anyString, anyString, { maxKeys: 5 }),
        payload,
      },
      { requiredKeys: ['id', 'type', 'timestamp', 'headers', 'payload'] },
    )
    .map((event) => event as Event);

  it('decode(encode(e)) equals e for arbitrary valid events, from text and from bytes', () => {
    fc.assert(
      fc.property(arbitraryEvent, (event) => {
        expect(decodeEvent(encodeEvent(event))).toEqual(event);
        expect(decodeEvent(encodeEventBytes(event))).toEqual(event);
      }),
      { numRuns: 500 },
    );
  });
});

describe('decodeEvent reads the envelope by its layout and agrees with a full parse', () => {
  /** What the general path gives: the event of the parsed JSON, or that it is refused. */
  function generic(text: string): Event | 'refused' {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return 'refused';
    }
    try {
      return decodeEventFromValue(value);
    } catch {
      return 'refused';
    }
  }

  function decoded(text: string): Event | 'refused' {
    try {
      return decodeEvent(text);
    } catch (error) {
      expect(isWatchtowerError(error, ErrorCode.SERIALIZATION)).toBe(true);
      return 'refused';
    }
  }

  const written = [
    encodeEvent(full()),
    encodeEvent(createEvent('user.created', { id: 'u-1', tags: ['a'] })),
    encodeEvent(createEvent('a', null, { causationId: 'c', headers: { 'x-a': '1', 'x-b': '' } })),
    '{"metadata":{"id":"550e8400-e29b-41d4-a716-446655440000","event_type":"order.placed",' +
      '"timestamp":"2024-01-15T10:30:00.123456789Z","source":null,"correlation_id":null},' +
      '"payload":{"order_id":"o-1","amount":129.5}}',
  ];
  // Characters that change the structure where they land: quotes, escapes, braces, separators,
  // whitespace, the letters of null, digits, a control character.
  const inserted = fc.constantFrom(...'"\\{}[],: \nnul1x\u0001'.split(''), '\\"', '\\u0041');
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: inserted }),
    fc.record({
      kind: fc.constant('delete' as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 3 }),
    }),
  );

  it('gives the same event or the same refusal as a full parse, for texts written by Watchtower and Rust and for every small change to them', () => {
    let refused = 0;
    let changedAndRead = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...written),
        fc.array(mutation, { minLength: 0, maxLength: 3 }),
        (base, changes) => {
          let text = base;
          for (const change of changes) {
            const at = change.at % (text.length + 1);
            text =
              change.kind === 'insert'
                ? text.slice(0, at) + change.text + text.slice(at)
                : text.slice(0, at) + text.slice(at + change.length);
          }
          const outcome = decoded(text);
          expect(outcome).toEqual(generic(text));
          if (outcome === 'refused') refused++;
          else if (text !== base) changedAndRead++;
        },
      ),
      { numRuns: 5000 },
    );
    // Changes reach both outcomes: refused, and still an event (whitespace, a key added ...).
    expect(refused).toBeGreaterThan(500);
    expect(changedAndRead).toBeGreaterThan(500);
  });

  it('reads an escaped string, pretty-printed JSON and keys in another order like a full parse', () => {
    for (const text of [
      '{"metadata":{"id":"a\\"b","event_type":"a","timestamp":"2026-01-01T00:00:00Z","source":null,"correlation_id":null},"payload":1}',
      '{ "metadata": {"id":"a","event_type":"a","timestamp":"2026-01-01T00:00:00Z","source":null,"correlation_id":null},"payload":1}',
      '{"metadata":{"event_type":"a","id":"a","timestamp":"2026-01-01T00:00:00Z"},"payload":1}',
      '{"metadata":{"id":"a","event_type":"a","timestamp":"2026-01-01T00:00:00Z","source":null,"correlation_id":null},"payload":{"a":1},"extra":{"b":2}}',
      '{"metadata":{"id":"a","event_type":"a","timestamp":"2026-01-01T00:00:00Z","source":null,"correlation_id":null,"headers":{"k":"v\\n"}},"payload":1}',
    ]) {
      expect(decodeEvent(text)).toEqual(generic(text));
    }
  });

  it('takes the NATS-style headers only when the body has no headers map', () => {
    const fromTransport = (): Record<string, string> => ({ traceparent: 't' });
    const without = encodeEvent(createEvent('a', 1));
    const withHeaders = encodeEvent(createEvent('a', 1, { headers: { k: 'v' } }));
    expect(decodeEvent(without, fromTransport).headers).toEqual({ traceparent: 't' });
    expect(decodeEvent(withHeaders, fromTransport).headers).toEqual({ k: 'v' });
  });

  it('reads RFC 3339 UTC timestamps by their layout and gives any other date form to Date.parse', () => {
    const at = (timestamp: string): string =>
      `{"metadata":{"id":"a","event_type":"a","timestamp":${JSON.stringify(timestamp)},"source":null,"correlation_id":null},"payload":1}`;
    for (const timestamp of [
      '2026-01-01T00:00:00Z',
      '2026-01-01T00:00:00.123456789+00:00',
      '2026-01-01T01:00:00+01:00',
      'Thu, 01 Jan 2026 00:00:00 GMT',
      '2026-01-01',
    ]) {
      expect(decodeEvent(at(timestamp)).timestamp).toBe(timestamp);
    }
    for (const timestamp of ['', 'yesterday', '2026-13-45T99:99:99Z']) {
      rejection(() => decodeEvent(at(timestamp)));
    }
  });
});

describe('what createEvent accepts, every consumer decodes', () => {
  // Metadata as a caller without a type checker might give it: right and wrong types, RFC 3339
  // and other date forms, Dates in and out of range.
  const anyString = fc.string({ unit: 'binary', maxLength: 30 });
  const anyValue = fc.oneof(
    anyString,
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.array(anyString, { maxLength: 2 }),
    fc.dictionary(anyString, anyString, { maxKeys: 2 }),
  );
  const digits = (length: number): fc.Arbitrary<string> =>
    fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: length, maxLength: length });
  const timestampLike = fc
    .tuple(
      digits(4),
      digits(2),
      digits(2),
      fc.constantFrom('T', 't', ' '),
      digits(2),
      digits(2),
      digits(2),
      fc
        .oneof(fc.constant(''), digits(1), digits(3), digits(9), digits(12))
        .map((f) => (f === '' ? '' : `.${f}`)),
      fc.constantFrom('Z', 'z', '+00:00', '-00:00', '+01:00', ''),
    )
    .map(([y, mo, d, t, h, mi, s, f, zone]) => `${y}-${mo}-${d}${t}${h}:${mi}:${s}${f}${zone}`);
  const timestamp = fc.oneof(
    timestampLike,
    fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
    fc.date({ noInvalidDate: false }),
    fc.constantFrom('Nov 7, 2025', '2025-11-07', 'hello', '1700000000000'),
    anyValue,
  );
  const headers = fc.oneof(
    fc.dictionary(anyString, anyString, { maxKeys: 4 }),
    fc.dictionary(anyString, anyValue, { maxKeys: 3 }),
    anyValue,
  );
  const metadata = fc.record(
    {
      id: fc.oneof(fc.uuid(), anyValue),
      timestamp,
      source: fc.oneof(anyString, anyValue),
      correlationId: fc.oneof(fc.uuid(), anyValue),
      causationId: fc.oneof(anyString, anyValue),
      headers,
    },
    { requiredKeys: [] },
  );
  // JSON has no -0 (it is written as 0), so payloads are taken as JSON would give them back.
  const payload = fc
    .jsonValue({ maxDepth: 3 })
    .map((value) => JSON.parse(JSON.stringify(value)) as unknown);

  it('round-trips through encode and decode, from text and from bytes, or is refused with VALIDATION', () => {
    let accepted = 0;
    fc.assert(
      fc.property(metadata, payload, (given, body) => {
        let event: Event;
        try {
          event = createEvent('order.placed', body, given as never);
        } catch (error) {
          expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
          return;
        }
        accepted++;
        expect(decodeEvent(encodeEvent(event))).toEqual(event);
        expect(decodeEvent(encodeEventBytes(event))).toEqual(event);
        // What decodes is what a Rust service reads: an RFC 3339 UTC timestamp.
        expect(event.timestamp).toMatch(
          /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$/,
        );
      }),
      { numRuns: 2000 },
    );
    // The generators reach both sides of the check.
    expect(accepted).toBeGreaterThan(20);
  });
});

describe('decodeEvent of JSON written by the Rust library', () => {
  it('decodes nulls as absent fields', () => {
    const rust =
      '{"metadata":{"id":"550e8400-e29b-41d4-a716-446655440000","event_type":"order.placed",' +
      '"timestamp":"2024-01-15T10:30:00.123456789Z","source":null,"correlation_id":null},' +
      '"payload":{"order_id":"o-1","amount":129.5,"items":[1,2,3]}}';
    const event = decodeEvent(rust);
    expect(event).toEqual({
      id: '550e8400-e29b-41d4-a716-446655440000',
      type: 'order.placed',
      timestamp: '2024-01-15T10:30:00.123456789Z',
      headers: {},
      payload: { order_id: 'o-1', amount: 129.5, items: [1, 2, 3] },
    });
    expect(Object.keys(event)).toEqual(['id', 'type', 'timestamp', 'headers', 'payload']);
  });

  it('keeps chrono timestamps as written: nanoseconds, microseconds and +00:00 offsets', () => {
    for (const timestamp of [
      '2024-01-15T10:30:00.123456789Z',
      '2024-01-15T10:30:00.123456Z',
      '2024-01-15T10:30:00+00:00',
      '2024-01-15T10:30:00.5+02:00',
      '2024-01-15T10:30:00Z',
    ]) {
      const rust = `{"metadata":{"id":"550e8400-e29b-41d4-a716-446655440000","event_type":"a.b","timestamp":"${timestamp}","source":null,"correlation_id":null},"payload":null}`;
      expect(decodeEvent(rust).timestamp).toBe(timestamp);
    }
  });

  it('decodes set source and correlation_id', () => {
    const rust =
      '{"metadata":{"id":"550e8400-e29b-41d4-a716-446655440000","event_type":"user.profile.updated",' +
      '"timestamp":"2024-01-15T10:30:00.000000001+00:00","source":"rust-service",' +
      '"correlation_id":"7d444840-9dc0-11d1-b245-5ffdce74fad2"},"payload":{"name":"Zoë"}}';
    expect(decodeEvent(utf8.encode(rust))).toEqual({
      id: '550e8400-e29b-41d4-a716-446655440000',
      type: 'user.profile.updated',
      timestamp: '2024-01-15T10:30:00.000000001+00:00',
      source: 'rust-service',
      correlationId: '7d444840-9dc0-11d1-b245-5ffdce74fad2',
      headers: {},
      payload: { name: 'Zoë' },
    });
  });

  it('ignores unknown fields at every level', () => {
    const rust =
      '{"version":2,"metadata":{"id":"550e8400-e29b-41d4-a716-446655440000","event_type":"a",' +
      '"timestamp":"2024-01-15T10:30:00Z","source":null,"correlation_id":null,"causation_id":null,' +
      '"headers":{"k":"v"},"schema_version":"1.2","tenant":{"id":7}},"payload":[true,false],"extra":null}';
    expect(decodeEvent(rust)).toEqual({
      id: '550e8400-e29b-41d4-a716-446655440000',
      type: 'a',
      timestamp: '2024-01-15T10:30:00Z',
      headers: { k: 'v' },
      payload: [true, false],
    });
  });

  it('accepts pretty-printed JSON and a null or scalar payload', () => {
    const rust = `{
  "metadata": {
    "id": "550e8400-e29b-41d4-a716-446655440000",
    "event_type": "counter.incremented",
    "timestamp": "2024-01-15T10:30:00.123456789Z",
    "source": null,
    "correlation_id": null
  },
  "payload": 3
}`;
    expect(decodeEvent(rust).payload).toBe(3);
    expect(decodeEvent(rust.replace('"payload": 3', '"payload": null')).payload).toBeNull();
  });
});

describe('decodeEvent with headers carried beside the body', () => {
  const rustBody =
    '{"metadata":{"id":"550e8400-e29b-41d4-a716-446655440000","event_type":"order.placed",' +
    '"timestamp":"2024-01-15T10:30:00Z","source":null,"correlation_id":null},"payload":1}';

  it('takes the headers a transport supplies when the body has no headers map', () => {
    const event = decodeEvent(rustBody, () => ({ traceparent: '00-abc-01' }));
    expect(event.headers).toEqual({ traceparent: '00-abc-01' });
    expect(Object.keys(event)).toEqual(['id', 'type', 'timestamp', 'headers', 'payload']);
  });

  it('takes them for a null headers map too, and gives {} when the transport has none', () => {
    const withNull = rustBody.replace(
      '"correlation_id":null}',
      '"correlation_id":null,"headers":null}',
    );
    expect(decodeEvent(withNull, () => ({ a: 'b' })).headers).toEqual({ a: 'b' });
    expect(decodeEvent(rustBody, () => undefined).headers).toEqual({});
  });

  it('keeps a body headers map as it is and never asks the transport', () => {
    const event = createEvent('user.created', 1, { headers: { traceparent: '00-body-01' } });
    let asked = 0;
    const decoded = decodeEvent(encodeEventBytes(event), () => {
      asked++;
      return { traceparent: '00-beside-01' };
    });
    expect(decoded.headers).toEqual({ traceparent: '00-body-01' });
    expect(asked).toBe(0);
  });
});

describe('decodeEvent rejects malformed input', () => {
  const valid = {
    metadata: {
      id: '550e8400-e29b-41d4-a716-446655440000',
      event_type: 'user.created',
      timestamp: '2024-01-15T10:30:00Z',
      source: null,
      correlation_id: null,
      causation_id: null,
      headers: {},
    },
    payload: {},
  };
  const withMetadata = (changes: Record<string, unknown>): string =>
    JSON.stringify({ ...valid, metadata: { ...valid.metadata, ...changes } });
  const without = (key: string): string => {
    const metadata: Record<string, unknown> = { ...valid.metadata };
    delete metadata[key];
    return JSON.stringify({ ...valid, metadata });
  };

  const cases: Array<[string, string]> = [
    ['text that is not JSON', 'not json at all'],
    ['truncated JSON', '{"metadata":{"id":"x"'],
    ['an empty input', ''],
    ['a JSON array', '[1,2,3]'],
    ['a JSON string', '"user.created"'],
    ['JSON null', 'null'],
    ['an object without metadata', '{"payload":{}}'],
    ['metadata that is not an object', '{"metadata":"x","payload":{}}'],
    ['metadata that is an array', '{"metadata":[],"payload":{}}'],
    ['a missing metadata.id', without('id')],
    ['a numeric metadata.id', withMetadata({ id: 42 })],
    ['a null metadata.id', withMetadata({ id: null })],
    ['a missing metadata.event_type', without('event_type')],
    ['a non-string metadata.event_type', withMetadata({ event_type: ['user', 'created'] })],
    ['an empty event_type', withMetadata({ event_type: '' })],
    ['an event_type with an empty token', withMetadata({ event_type: 'user..created' })],
    ['an event_type with a space', withMetadata({ event_type: 'user created' })],
    ['an event_type with a wildcard', withMetadata({ event_type: 'user.*' })],
    ['a missing timestamp', without('timestamp')],
    ['a numeric timestamp', withMetadata({ timestamp: 1705314600 })],
    ['a null timestamp', withMetadata({ timestamp: null })],
    ['a timestamp that is not a date', withMetadata({ timestamp: 'yesterday-ish' })],
    ['a numeric source', withMetadata({ source: 1 })],
    ['an object correlation_id', withMetadata({ correlation_id: {} })],
    ['a boolean causation_id', withMetadata({ causation_id: false })],
    ['headers that are a string', withMetadata({ headers: 'k=v' })],
    ['headers that are an array', withMetadata({ headers: [['k', 'v']] })],
    ['a header value that is a number', withMetadata({ headers: { retries: 3 } })],
    ['a header value that is null', withMetadata({ headers: { k: null } })],
    ['a missing payload', JSON.stringify({ metadata: valid.metadata })],
  ];

  it.each(cases)('rejects %s with SERIALIZATION, carrying the raw bytes', (_name, text) => {
    const fromText = rejection(() => decodeEvent(text));
    expect(fromText.raw).toBeInstanceOf(Uint8Array);
    expect(Array.from(fromText.raw ?? [])).toEqual(Array.from(utf8.encode(text)));

    const bytes = utf8.encode(text);
    const fromBytes = rejection(() => decodeEvent(bytes));
    expect(fromBytes.raw).toBe(bytes);
  });

  it('gives the JSON.parse error as the cause of a not-JSON error', () => {
    const error = rejection(() => decodeEvent('{oops'));
    expect(error.cause).toBeInstanceOf(SyntaxError);
    expect(error.retryable).toBe(false);
  });

  it('rejects bytes that are not valid UTF-8', () => {
    const bytes = new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]);
    const error = rejection(() => decodeEvent(bytes));
    expect(error.raw).toBe(bytes);
  });

  it('rejects an event whose payload holds bytes that are not valid UTF-8, even beside a real U+FFFD', () => {
    const text = encodeEvent({ ...full(), payload: 'X\ufffdX' });
    const bytes = Buffer.from(text, 'utf8');
    const broken = Buffer.from(bytes);
    broken[broken.indexOf(0x58)] = 0xc3; // a lead byte with no continuation
    expect(decodeEvent(bytes).payload).toBe('X\ufffdX');
    expect(rejection(() => decodeEvent(broken)).raw).toBe(broken);
  });

  it('rejects input that is neither text nor bytes', () => {
    rejection(() => decodeEvent(42 as unknown as string));
  });

  it('accepts the valid base document, so each case above fails for its stated reason only', () => {
    expect(decodeEvent(JSON.stringify(valid)).type).toBe('user.created');
    expect(decodeEvent(withMetadata({ headers: null })).headers).toEqual({});
    expect(decodeEvent(without('headers')).headers).toEqual({});
    expect('causationId' in decodeEvent(without('causation_id'))).toBe(false);
  });
});

describe('decodeEventFromValue', () => {
  it('decodes a value already parsed, e.g. the event inside a dead-letter body', () => {
    const body = JSON.parse(
      JSON.stringify({
        event: JSON.parse(encodeEvent(full())),
        error: 'boom',
        original_subject: 's',
      }),
    ) as { event: unknown };
    expect(decodeEventFromValue(body.event)).toEqual(full());
  });

  it('carries the given raw bytes when the value is malformed', () => {
    const raw = utf8.encode('{"event":{"metadata":{}}}');
    const error = rejection(() => decodeEventFromValue({ metadata: {} }, raw));
    expect(error.raw).toBe(raw);
  });

  it('carries the JSON of the value as raw bytes when none are given', () => {
    const value = { metadata: { id: 1 }, payload: {} };
    const error = rejection(() => decodeEventFromValue(value));
    expect(new TextDecoder().decode(error.raw)).toBe(JSON.stringify(value));
  });

  it('rejects a value whose payload is undefined', () => {
    const value = {
      metadata: { id: 'x', event_type: 'a', timestamp: '2024-01-15T10:30:00Z' },
      payload: undefined,
    };
    rejection(() => decodeEventFromValue(value));
  });
});
