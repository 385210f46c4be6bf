import { createEvent, type DeadLetterReason } from '@watchtower/core';
import { deadLetterRetryDelayMs } from '@watchtower/core/transport-kit';
import { describe, expect, it } from 'vitest';
import { decodeDeadLetter, encodeDeadLetter } from './dead-letter-record.js';

const reason: DeadLetterReason = {
  message: 'boom',
  code: 'HANDLER_FAILED',
  attempts: 3,
  failedAt: '2026-11-22T10:00:00.000Z',
  originalType: 'user.created',
  subscription: 'users',
};
const utf8 = new TextEncoder();
const at = new Date('2026-11-22T11:00:00.000Z');

describe('dead-letter records', () => {
  it('writes the Rust body {event, error, original_subject} plus reason, and reads it back', () => {
    const event = createEvent('user.created', { id: 1 }, { headers: { traceparent: 't' } });
    const body = encodeDeadLetter(event, reason, 'watchtower.events.user.created');
    const parsed = JSON.parse(body) as Record<string, unknown>;
    expect(parsed).toEqual({
      event: JSON.parse(
        JSON.stringify({
          metadata: {
            id: event.id,
            event_type: 'user.created',
            timestamp: event.timestamp,
            source: null,
            correlation_id: null,
            headers: { traceparent: 't' },
          },
          payload: { id: 1 },
        }),
      ),
      error: 'boom',
      original_subject: 'watchtower.events.user.created',
      reason,
    });
    expect(decodeDeadLetter(utf8.encode(body), 'user.created', at)).toEqual({ event, reason });
  });

  it('keeps malformed bytes as text, exactly (base64) when they are not UTF-8', () => {
    const text = encodeDeadLetter({ raw: utf8.encode('{oops'), origin: 'p.a' }, reason, 'p.a');
    expect(JSON.parse(text)).toMatchObject({ event: '{oops', original_subject: 'p.a' });
    expect(decodeDeadLetter(utf8.encode(text), 'a', at).raw).toEqual(utf8.encode('{oops'));

    const bytes = new Uint8Array([0xff, 0x00, 0xc3]);
    const binary = encodeDeadLetter({ raw: bytes, origin: 'p.b' }, reason, 'p.b');
    expect(JSON.parse(binary)).toHaveProperty('raw_base64');
    expect(Array.from(decodeDeadLetter(utf8.encode(binary), 'b', at).raw ?? [])).toEqual([
      0xff, 0x00, 0xc3,
    ]);
  });

  it('stores bytes that are not UTF-8 once, as raw_base64 without an event field', () => {
    const bytes = new Uint8Array([0xff, 0x00, 0xc3]);
    const body = JSON.parse(
      encodeDeadLetter({ raw: bytes, origin: 'p.b' }, reason, 'p.b'),
    ) as Record<string, unknown>;
    expect(body).not.toHaveProperty('event');
    expect(body).toMatchObject({
      raw_base64: '/wDD',
      error: 'boom',
      original_subject: 'p.b',
      reason,
    });
  });

  it('reads a record of an older writer that kept the bytes twice, exactly from raw_base64', () => {
    const old = JSON.stringify({
      event: '\ufffd\u0000\ufffd',
      raw_base64: '/wDD',
      error: 'boom',
      original_subject: 'p.b',
      reason,
    });
    expect(decodeDeadLetter(utf8.encode(old), 'b', at)).toEqual({
      raw: new Uint8Array([0xff, 0x00, 0xc3]),
      reason,
    });
  });

  it('reads a Rust dead letter without a reason, building one from error and subject', () => {
    const rust = JSON.stringify({
      event: {
        metadata: {
          id: 'e1',
          event_type: 'order.placed',
          timestamp: '2026-11-22T10:00:00Z',
          source: null,
          correlation_id: null,
        },
        payload: { n: 1 },
      },
      error: 'handler failed: timeout',
      original_subject: 'watchtower.events.order.placed',
    });
    const letter = decodeDeadLetter(utf8.encode(rust), 'order.placed', at);
    expect(letter.event?.id).toBe('e1');
    expect(letter.reason).toEqual({
      message: 'handler failed: timeout',
      code: 'HANDLER_FAILED',
      attempts: 0,
      failedAt: at.toISOString(),
      originalType: 'order.placed',
    });
  });

  it('hands over a body that is not a dead-letter record as raw bytes instead of throwing', () => {
    const junk = utf8.encode('not json at all');
    expect(decodeDeadLetter(junk, 'x', at)).toMatchObject({
      raw: junk,
      reason: { code: 'SERIALIZATION' },
    });
    const wrongShape = utf8.encode(JSON.stringify({ event: { nope: true }, error: 'e' }));
    expect(decodeDeadLetter(wrongShape, 'x', at)).toMatchObject({
      raw: wrongShape,
      reason: { message: 'e' },
    });
  });

  it('backs off a dead letter whose consumeDlq handler keeps throwing: 1 s, doubling, at most a minute', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(deadLetterRetryDelayMs)).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000,
    ]);
  });
});
