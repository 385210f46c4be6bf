import { Buffer } from 'node:buffer';
import { describe, expect, it, vi } from 'vitest';
import { ErrorCode, createEvent, encodeEvent } from '@watchtower/core';
import { toDeadLetter, toDelivery } from './deliveries.js';
import type { EntryHandle } from './group-consumer.js';

const handle: EntryHandle = {
  ack: vi.fn(async () => {}),
  nack: vi.fn(async () => {}),
  leave: vi.fn(),
};
const b = (text: string | Uint8Array): Buffer => Buffer.from(text);

describe('toDelivery', () => {
  it('decodes the event field into an event delivery', () => {
    const event = createEvent('user.created', { a: 1 });
    const delivery = toDelivery(
      { key: 'p:user.created', id: '1-0', attempt: 2, fields: [b('event'), b(encodeEvent(event))] },
      handle,
    );
    expect(delivery).toMatchObject({ kind: 'event', event, attempt: 2, origin: 'p:user.created' });
  });

  it('turns bytes that do not decode into a malformed delivery carrying the bytes', () => {
    const delivery = toDelivery(
      {
        key: 'p:user.created',
        id: '1-0',
        attempt: 1,
        fields: [b('event'), Buffer.from([0xc3, 0x28])],
      },
      handle,
    );
    expect(delivery?.kind).toBe('malformed');
    if (delivery?.kind !== 'malformed') return;
    expect([...delivery.raw]).toEqual([0xc3, 0x28]);
    expect(delivery.error.code).toBe(ErrorCode.SERIALIZATION);
  });

  it('turns an entry without an event field into a malformed delivery', () => {
    const delivery = toDelivery(
      { key: 'p:user.created', id: '1-0', attempt: 1, fields: [b('data'), b('x')] },
      handle,
    );
    expect(delivery?.kind).toBe('malformed');
    expect(delivery?.kind === 'malformed' && delivery.error.message).toMatch(/no `event` field/);
  });

  it('delivers an event found in the stream of another type, for the bus to dead-letter', () => {
    const event = createEvent('order.created', {});
    const delivery = toDelivery(
      {
        key: 'p:user.created',
        id: '1-0',
        attempt: 1,
        fields: [b('event'), b(encodeEvent(event))],
      },
      handle,
    );
    expect(delivery.kind === 'event' && delivery.event.type).toBe('order.created');
    expect(delivery.origin).toBe('p:user.created');
  });
});

describe('toDeadLetter', () => {
  it('reads a letter written by Watchtower, reason from the reason field', () => {
    const event = createEvent('a.b', { x: 1 });
    const reason = {
      message: 'm',
      code: 'HANDLER_FAILED',
      attempts: 3,
      failedAt: '2026-01-01T00:00:00.000Z',
      originalType: 'a.b',
    };
    const fields = [
      b('event'),
      b(encodeEvent(event)),
      b('error'),
      b('m'),
      b('original_type'),
      b('a.b'),
      b('reason'),
      b(JSON.stringify(reason)),
    ];
    expect(toDeadLetter({ key: 'p:dlq', id: '1700000000000-0', attempt: 1, fields })).toEqual({
      event,
      reason,
    });
  });

  it('rebuilds the reason of a letter written by Rust Watchtower from error and original_type', () => {
    const event = createEvent('a.b', { x: 1 });
    const fields = [
      b('event'),
      b(encodeEvent(event)),
      b('error'),
      b('handler failed'),
      b('original_type'),
      b('a.b'),
    ];
    expect(toDeadLetter({ key: 'p:dlq', id: '1700000000000-0', attempt: 1, fields })).toEqual({
      event,
      reason: {
        message: 'handler failed',
        code: ErrorCode.HANDLER_FAILED,
        attempts: 0,
        failedAt: new Date(1_700_000_000_000).toISOString(),
        originalType: 'a.b',
      },
    });
  });

  it('keeps bytes that are not an event as raw', () => {
    const letter = toDeadLetter({
      key: 'p:dlq',
      id: '1-0',
      attempt: 1,
      fields: [b('event'), b('garbage'), b('error'), b('e')],
    });
    expect(letter.event).toBeUndefined();
    expect(Buffer.from(letter.raw ?? []).toString()).toBe('garbage');
  });
});
