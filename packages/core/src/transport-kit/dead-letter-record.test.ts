import { describe, expect, it } from 'vitest';
import { ErrorCode, NonRetryableError, TimeoutError } from '../errors.js';
import { createEvent } from '../event.js';
import { FakeClock } from '../testing/fake-clock.js';
import {
  deadLetterReason,
  fallbackReason,
  originalTypeOf,
  rawBytesFromText,
  rawBytesToText,
  readDeadLetterReason,
} from './dead-letter-record.js';

describe('deadLetterReason', () => {
  it('takes the message and code of a Watchtower error, the time from the clock', () => {
    const clock = new FakeClock(Date.parse('2026-11-22T10:00:00.123Z'));
    const event = createEvent('order.placed', { id: 1 });
    const reason = deadLetterReason({
      failure: new TimeoutError('handler took too long', 50),
      attempts: 3,
      message: event,
      subscription: 'billing',
      clock,
    });
    expect(reason).toEqual({
      message: 'handler took too long',
      code: ErrorCode.TIMEOUT,
      attempts: 3,
      failedAt: '2026-11-22T10:00:00.123Z',
      originalType: 'order.placed',
      subscription: 'billing',
    });
  });

  it('codes a plain thrown value HANDLER_FAILED and files bytes under their origin', () => {
    const reason = deadLetterReason({
      failure: 'not an error',
      attempts: 1,
      message: { raw: new Uint8Array([1]), origin: 'watchtower.events.x' },
      clock: new FakeClock(0),
    });
    expect(reason.code).toBe(ErrorCode.HANDLER_FAILED);
    expect(reason.message).toBe('not an error');
    expect(reason.originalType).toBe('watchtower.events.x');
    expect('subscription' in reason).toBe(false);
  });

  it('keeps the code of a NonRetryableError', () => {
    const reason = deadLetterReason({
      failure: new NonRetryableError('bad order'),
      attempts: 1,
      message: createEvent('a.b', {}),
      clock: new FakeClock(0),
    });
    expect(reason.code).toBe(ErrorCode.NON_RETRYABLE);
  });
});

describe('readDeadLetterReason', () => {
  it('reads back what was written, through JSON', () => {
    const written = deadLetterReason({
      failure: new Error('boom'),
      attempts: 2,
      message: createEvent('a.b', {}),
      subscription: 'a.*',
      clock: new FakeClock(5),
    });
    expect(readDeadLetterReason(JSON.parse(JSON.stringify(written)))).toEqual(written);
  });

  it('is undefined for what is not a reason', () => {
    for (const value of [null, 'text', 3, {}, { message: 'm', code: 'C', attempts: '1' }]) {
      expect(readDeadLetterReason(value)).toBeUndefined();
    }
  });

  it('drops fields that are not part of a reason', () => {
    const read = readDeadLetterReason({
      message: 'm',
      code: 'C',
      attempts: 1,
      failedAt: '2026-01-01T00:00:00.000Z',
      originalType: 't',
      subscription: 7,
      extra: true,
    });
    expect(read).toEqual({
      message: 'm',
      code: 'C',
      attempts: 1,
      failedAt: '2026-01-01T00:00:00.000Z',
      originalType: 't',
    });
  });

  it('fallbackReason records no attempts and the record time', () => {
    expect(fallbackReason('gone', 'a.b', new Date(0))).toEqual({
      message: 'gone',
      code: ErrorCode.HANDLER_FAILED,
      attempts: 0,
      failedAt: '1970-01-01T00:00:00.000Z',
      originalType: 'a.b',
    });
  });
});

describe('raw bytes as text', () => {
  it('keeps UTF-8 as text and everything else as base64, once', () => {
    expect(rawBytesToText(new TextEncoder().encode('{"bad json é'))).toEqual({
      encoding: 'utf8',
      text: '{"bad json é',
    });
    const binary = new Uint8Array([0xff, 0xfe, 0x00, 0x41]);
    expect(rawBytesToText(binary)).toEqual({ encoding: 'base64', text: '//4AQQ==' });
  });

  it('round-trips any bytes', () => {
    for (const bytes of [
      new Uint8Array([]),
      new Uint8Array([0xc3, 0x28]),
      new TextEncoder().encode('ok ✓'),
    ]) {
      expect([...rawBytesFromText(rawBytesToText(bytes))]).toEqual([...bytes]);
    }
  });

  it('reads a slice of a larger buffer as just that slice', () => {
    const whole = new Uint8Array([0x41, 0xff, 0x42]);
    expect(rawBytesToText(whole.subarray(2))).toEqual({ encoding: 'utf8', text: 'B' });
  });

  it('originalTypeOf gives the event type or the origin of bytes', () => {
    expect(originalTypeOf(createEvent('x.y', {}))).toBe('x.y');
    expect(originalTypeOf({ raw: new Uint8Array(), origin: 'stream:1' })).toBe('stream:1');
  });
});
