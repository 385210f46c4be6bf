import { describe, expect, it } from 'vitest';
import { encodeEventBytes } from '../codec.js';
import { createEvent } from '../event.js';
import { FakeClock } from '../testing/fake-clock.js';
import { deadLetterReason } from './dead-letter-record.js';
import { REDUCED_BODY_BYTES, reduceDeadLetter } from './reduced-dead-letter.js';
import { readDeadLetterReason } from './dead-letter-record.js';

const clock = new FakeClock(Date.parse('2026-01-01T00:00:00Z'));

describe('reduceDeadLetter', () => {
  it('keeps the reason, the ids, the sizes and the first KiB of an event as bytes', () => {
    const event = createEvent('big.one', { blob: 'x'.repeat(5000) }, { correlationId: 'c-9' });
    const reason = deadLetterReason({
      failure: new Error('boom'),
      attempts: 3,
      message: event,
      clock,
    });
    const { message, reason: reduced } = reduceDeadLetter({
      subject: event,
      reason,
      origin: 'events.big.one',
      refusal: new Error('max_payload size exceeded'),
    });
    expect(message.origin).toBe('events.big.one');
    expect(message.raw.byteLength).toBe(REDUCED_BODY_BYTES);
    expect(message.raw).toEqual(encodeEventBytes(event).subarray(0, REDUCED_BODY_BYTES));
    expect(reduced).toMatchObject({ message: 'boom', attempts: 3, originalType: 'big.one' });
    expect(reduced.reduced).toEqual({
      why: 'max_payload size exceeded',
      originalBytes: encodeEventBytes(event).byteLength,
      keptBytes: REDUCED_BODY_BYTES,
      origin: 'events.big.one',
      eventId: event.id,
      correlationId: 'c-9',
    });
  });

  it('never cuts a UTF-8 character in two', () => {
    // 1023 one-byte characters then a three-byte one: the cut falls inside it.
    const raw = new TextEncoder().encode('a'.repeat(1023) + '€'.repeat(10));
    const reason = deadLetterReason({
      failure: new Error('x'),
      attempts: 1,
      message: { raw, origin: 'q' },
      clock,
    });
    const { message } = reduceDeadLetter({
      subject: { raw, origin: 'q' },
      reason,
      origin: 'q',
      refusal: 'no',
    });
    expect(message.raw.byteLength).toBe(1023);
    expect(new TextDecoder('utf-8', { fatal: true }).decode(message.raw)).toBe('a'.repeat(1023));
  });

  it('is read back by readDeadLetterReason, reduced part included', () => {
    const raw = new Uint8Array(2000);
    const reason = deadLetterReason({
      failure: new Error('x'),
      attempts: 1,
      message: { raw, origin: 'q' },
      clock,
    });
    const { reason: reduced } = reduceDeadLetter({
      subject: { raw, origin: 'q' },
      reason,
      origin: 'q',
      refusal: 'too big',
    });
    expect(readDeadLetterReason(JSON.parse(JSON.stringify(reduced)))).toEqual(reduced);
  });
});
