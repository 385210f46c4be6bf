import { describe, expect, it } from 'vitest';
import { DEFAULT_DEAD_LETTER_QUEUE_OPTIONS, InMemoryDeadLetterQueue } from './dead-letter-queue.js';
import { ErrorCode } from './errors.js';
import { createEvent } from './event.js';
import type { DeadLetter } from './transport.js';
import { thrown } from './testing/thrown.js';

function letter(n: number): DeadLetter {
  return {
    event: createEvent('order.created', { n }),
    reason: {
      message: `failed ${n}`,
      code: ErrorCode.HANDLER_FAILED,
      attempts: 3,
      failedAt: new Date(0).toISOString(),
      originalType: 'order.created',
    },
  };
}

const ns = (letters: DeadLetter[]): unknown[] =>
  letters.map((l) => (l.event?.payload as { n: number }).n);

describe('InMemoryDeadLetterQueue', () => {
  it('stores letters oldest first and announces each through added', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    const added: DeadLetter[] = [];
    dlq.on('added', (l) => added.push(l));
    const first = letter(1);
    await dlq.add(first);
    await dlq.add(letter(2));
    expect(dlq.size).toBe(2);
    expect(ns(dlq.list())).toEqual([1, 2]);
    expect(added[0]).toBe(first);
    expect(added).toHaveLength(2);
  });

  it('stops calling a listener once it is removed', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    let calls = 0;
    const remove = dlq.on('added', () => calls++);
    await dlq.add(letter(1));
    remove();
    await dlq.add(letter(2));
    expect(calls).toBe(1);
  });

  it('stores a malformed message given as raw bytes', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    const raw = new Uint8Array([1, 2, 3]);
    await dlq.add({ raw, reason: { ...letter(0).reason, code: ErrorCode.SERIALIZATION } });
    expect(dlq.list()[0]?.raw).toBe(raw);
  });

  it('drops the oldest letter when full and counts it', async () => {
    const dlq = new InMemoryDeadLetterQueue({ capacity: 3 });
    for (let n = 1; n <= 5; n++) await dlq.add(letter(n));
    expect(ns(dlq.list())).toEqual([3, 4, 5]);
    expect(dlq.stats()).toEqual({ size: 3, capacity: 3, added: 5, dropped: 2 });
  });

  it('take(max) removes up to max letters oldest first; take() removes all', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    for (let n = 1; n <= 5; n++) await dlq.add(letter(n));
    expect(ns(dlq.take(2))).toEqual([1, 2]);
    expect(dlq.take(0)).toEqual([]);
    expect(ns(dlq.take())).toEqual([3, 4, 5]);
    expect(dlq.take(10)).toEqual([]);
    expect(dlq.size).toBe(0);
  });

  it('rejects a take count that is negative or fractional', () => {
    const dlq = new InMemoryDeadLetterQueue();
    expect(thrown(() => dlq.take(-1))).toMatchObject({ code: ErrorCode.CONFIG });
    expect(thrown(() => dlq.take(1.5))).toMatchObject({ code: ErrorCode.CONFIG });
  });

  it('remove() takes out one letter by identity', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    const letters = [letter(1), letter(2), letter(3)];
    for (const l of letters) await dlq.add(l);
    expect(dlq.remove(letters[1] as DeadLetter)).toBe(true);
    expect(dlq.remove(letters[1] as DeadLetter)).toBe(false);
    expect(ns(dlq.list())).toEqual([1, 3]);
  });

  it('list() returns a copy that does not change the queue', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    await dlq.add(letter(1));
    dlq.list().length = 0;
    expect(dlq.size).toBe(1);
    await dlq.add(letter(2));
    expect(ns(dlq.list())).toEqual([1, 2]);
  });

  it('clear() empties the queue and keeps the lifetime counters', async () => {
    const dlq = new InMemoryDeadLetterQueue({ capacity: 1 });
    await dlq.add(letter(1));
    await dlq.add(letter(2));
    dlq.clear();
    expect(dlq.list()).toEqual([]);
    expect(dlq.stats()).toEqual({ size: 0, capacity: 1, added: 2, dropped: 1 });
  });

  it('rejects a letter with neither or both of event and raw as VALIDATION', async () => {
    const dlq = new InMemoryDeadLetterQueue();
    const { reason, event } = letter(1);
    await expect(dlq.add({ reason })).rejects.toMatchObject({ code: ErrorCode.VALIDATION });
    await expect(
      dlq.add({ reason, event: event as NonNullable<DeadLetter['event']>, raw: new Uint8Array() }),
    ).rejects.toMatchObject({
      code: ErrorCode.VALIDATION,
    });
    expect(dlq.stats()).toMatchObject({ size: 0, added: 0 });
  });

  it('holds 10 000 letters by default', () => {
    expect(DEFAULT_DEAD_LETTER_QUEUE_OPTIONS.capacity).toBe(10_000);
    expect(new InMemoryDeadLetterQueue().stats().capacity).toBe(10_000);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])(
    'rejects capacity %s with a CONFIG error naming it',
    (capacity) => {
      const error = thrown(() => new InMemoryDeadLetterQueue({ capacity }));
      expect(error).toMatchObject({
        code: ErrorCode.CONFIG,
        message: expect.stringContaining('`capacity`'),
      });
    },
  );
});
