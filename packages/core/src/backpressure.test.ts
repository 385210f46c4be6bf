import { describe, expect, it } from 'vitest';
import {
  BackpressureController,
  DEFAULT_BACKPRESSURE_OPTIONS,
  type BackpressureStats,
} from './backpressure.js';
import { BackpressureError, ClosedError, ErrorCode } from './errors.js';
import { FakeClock } from './testing/fake-clock.js';
import { thrown } from './testing/thrown.js';

/** Follows a promise without leaving a rejection unhandled; read `state` after a microtask flush. */
function track(value: void | Promise<void>): {
  state: 'pending' | 'resolved' | 'rejected';
  error?: unknown;
} {
  expect(value).toBeInstanceOf(Promise);
  const tracked: { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } = {
    state: 'pending',
  };
  (value as Promise<void>).then(
    () => {
      tracked.state = 'resolved';
    },
    (error: unknown) => {
      tracked.state = 'rejected';
      tracked.error = error;
    },
  );
  return tracked;
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function fill(bp: BackpressureController<string>, ...items: string[]): void {
  for (const item of items) expect(bp.admit(item)).toBeUndefined();
}

describe('BackpressureController', () => {
  it('queues at once without a promise and announces the item as available', () => {
    const bp = new BackpressureController<string>({ maxQueueSize: 3, clock: new FakeClock() });
    let available = 0;
    bp.on('available', () => available++);
    expect(bp.admit('a')).toBeUndefined();
    expect(bp.admit('b')).toBeUndefined();
    expect(available).toBe(2);
    expect(bp.size).toBe(2);
  });

  it('hands out the oldest item and frees its slot at once', () => {
    const bp = new BackpressureController<string>({ maxQueueSize: 2, clock: new FakeClock() });
    fill(bp, 'a', 'b');
    expect(bp.take()).toBe('a');
    expect(bp.size).toBe(1);
    // The taken item's slot is free: a new item fits without any strategy acting.
    fill(bp, 'c');
    expect(bp.stats()).toMatchObject({ droppedEvents: 0, rejectedEvents: 0 });
    expect([bp.take(), bp.take(), bp.take()]).toEqual(['b', 'c', undefined]);
    expect(bp.size).toBe(0);
  });

  describe("strategy 'drop-newest'", () => {
    it('throws BACKPRESSURE_FULL synchronously when full and leaves the queue as it was', () => {
      const bp = new BackpressureController<string>({ maxQueueSize: 2, strategy: 'drop-newest' });
      fill(bp, 'a', 'b');
      const error = thrown(() => bp.admit('c'));
      expect(error).toBeInstanceOf(BackpressureError);
      expect(error).toMatchObject({ code: ErrorCode.BACKPRESSURE_FULL });
      expect(bp.take()).toBe('a');
      expect(bp.take()).toBe('b');
      expect(bp.stats()).toMatchObject({ rejectedEvents: 1, droppedEvents: 0 });
    });
  });

  describe("strategy 'drop-oldest'", () => {
    it('evicts the oldest waiting item, reports it via dropped with BACKPRESSURE_DROPPED, and queues the new one', () => {
      const bp = new BackpressureController<string>({ maxQueueSize: 2, strategy: 'drop-oldest' });
      const dropped: Array<[string, BackpressureError]> = [];
      bp.on('dropped', (item, error) => dropped.push([item, error]));
      fill(bp, 'a', 'b');
      expect(bp.admit('c')).toBeUndefined();

      expect(dropped).toHaveLength(1);
      expect(dropped[0]?.[0]).toBe('a');
      expect(dropped[0]?.[1]).toMatchObject({ code: ErrorCode.BACKPRESSURE_DROPPED });
      expect(bp.stats()).toMatchObject({ droppedEvents: 1, currentQueueSize: 2 });
      expect([bp.take(), bp.take()]).toEqual(['b', 'c']);
    });

    it('never evicts a taken item, and never refuses: a full queue always has one waiting to evict', () => {
      const bp = new BackpressureController<string>({ maxQueueSize: 1, strategy: 'drop-oldest' });
      const dropped: string[] = [];
      bp.on('dropped', (item) => dropped.push(item));
      fill(bp, 'a');
      expect(bp.take()).toBe('a'); // 'a' handed on: no longer the queue's
      fill(bp, 'b');
      expect(bp.admit('c')).toBeUndefined();
      expect(bp.admit('d')).toBeUndefined();

      expect(dropped).toEqual(['b', 'c']);
      expect(bp.take()).toBe('d');
      expect(bp.stats()).toMatchObject({ droppedEvents: 2, rejectedEvents: 0 });
    });
  });

  describe("strategy 'block'", () => {
    it('waits for room and proceeds on take(), first blocked first', async () => {
      const clock = new FakeClock();
      const bp = new BackpressureController<string>({ maxQueueSize: 2, strategy: 'block', clock });
      fill(bp, 'a', 'b');
      const c = track(bp.admit('c'));
      const d = track(bp.admit('d'));
      expect(bp.stats().blockedAdmits).toBe(2);

      await flush();
      expect(c.state).toBe('pending');

      expect(bp.take()).toBe('a');
      await flush();
      expect(c.state).toBe('resolved');
      expect(d.state).toBe('pending');
      expect(bp.size).toBe(2);
      // A newcomer does not overtake the one already blocked.
      const e = track(bp.admit('e'));

      expect(bp.take()).toBe('b');
      await flush();
      expect(d.state).toBe('resolved');
      expect(e.state).toBe('pending');
      expect(clock.pendingTimers()).toBe(1);
      expect([bp.take(), bp.take()]).toEqual(['c', 'd']);
      await flush();
      expect(e.state).toBe('resolved');
      expect(clock.pendingTimers()).toBe(0);
      expect(bp.take()).toBe('e');
    });

    it('rejects with BACKPRESSURE_FULL after blockTimeoutMs and frees its turn', async () => {
      const clock = new FakeClock();
      const bp = new BackpressureController<string>({
        maxQueueSize: 1,
        blockTimeoutMs: 1_000,
        clock,
      });
      fill(bp, 'a');
      const b = track(bp.admit('b'));
      clock.advance(999);
      await flush();
      expect(b.state).toBe('pending');
      const c = track(bp.admit('c'));

      clock.advance(1);
      await flush();
      expect(b.state).toBe('rejected');
      expect(b.error).toBeInstanceOf(BackpressureError);
      expect(b.error).toMatchObject({ code: ErrorCode.BACKPRESSURE_FULL });
      expect(bp.stats()).toMatchObject({ rejectedEvents: 1, blockedAdmits: 1 });

      bp.take();
      await flush();
      expect(c.state).toBe('resolved');
      expect(bp.take()).toBe('c');
      expect(clock.pendingTimers()).toBe(0);
    });

    it('waits without limit when blockTimeoutMs is 0', async () => {
      const clock = new FakeClock();
      const bp = new BackpressureController<string>({ maxQueueSize: 1, blockTimeoutMs: 0, clock });
      fill(bp, 'a');
      const b = track(bp.admit('b'));
      expect(clock.pendingTimers()).toBe(0);
      clock.advance(24 * 60 * 60 * 1000);
      await flush();
      expect(b.state).toBe('pending');
      bp.take();
      await flush();
      expect(b.state).toBe('resolved');
    });

    it("rejects with the signal's reason on abort, clears its timer, and the next blocked one gets the slot", async () => {
      const clock = new FakeClock();
      const bp = new BackpressureController<string>({ maxQueueSize: 1, clock });
      fill(bp, 'a');
      const controller = new AbortController();
      const b = track(bp.admit('b', controller.signal));
      const c = track(bp.admit('c'));
      expect(clock.pendingTimers()).toBe(2);

      const reason = new Error('caller gave up');
      controller.abort(reason);
      await flush();
      expect(b.state).toBe('rejected');
      expect(b.error).toBe(reason);
      expect(clock.pendingTimers()).toBe(1);
      expect(bp.stats()).toMatchObject({ blockedAdmits: 1, rejectedEvents: 0 });

      bp.take();
      await flush();
      expect(c.state).toBe('resolved');
      expect(bp.take()).toBe('c');
    });

    it("throws the signal's reason at once when the signal has already aborted", () => {
      const bp = new BackpressureController<string>({ maxQueueSize: 1 });
      const reason = new Error('already');
      expect(thrown(() => bp.admit('a', AbortSignal.abort(reason)))).toBe(reason);
      expect(bp.size).toBe(0);
    });

    it('keeps many timed-out admitters from piling up while nothing is taken', async () => {
      const clock = new FakeClock();
      const bp = new BackpressureController<number>({ maxQueueSize: 1, blockTimeoutMs: 10, clock });
      expect(bp.admit(0)).toBeUndefined();
      const tracked = [];
      for (let i = 1; i <= 500; i++) {
        tracked.push(track(bp.admit(i)));
        clock.advance(10);
      }
      await flush();
      expect(tracked.every((t) => t.state === 'rejected')).toBe(true);
      const last = track(bp.admit(501));
      bp.take();
      await flush();
      expect(last.state).toBe('resolved');
      expect(bp.stats()).toMatchObject({ blockedAdmits: 0, rejectedEvents: 500 });
    });
  });

  it('emits warning once per upward crossing of warningThreshold, and recovered when it falls back', () => {
    const bp = new BackpressureController<string>({
      maxQueueSize: 10,
      warningThreshold: 0.5,
      strategy: 'drop-oldest',
    });
    const events: string[] = [];
    let lastWarning: BackpressureStats | undefined;
    bp.on('warning', (stats) => {
      events.push(`warning@${stats.currentQueueSize}`);
      lastWarning = stats;
    });
    bp.on('recovered', (stats) => events.push(`recovered@${stats.currentQueueSize}`));

    fill(bp, '1', '2', '3', '4');
    expect(events).toEqual([]);
    fill(bp, '5', '6', '7', '8', '9', '10', '11');
    expect(events).toEqual(['warning@5']);
    expect(lastWarning?.fillRatio()).toBe(0.5);

    for (let i = 0; i < 6; i++) bp.take();
    expect(events).toEqual(['warning@5', 'recovered@4']);
    fill(bp, 'x');
    expect(events).toEqual(['warning@5', 'recovered@4', 'warning@5']);
  });

  it('reports stats as a snapshot with fillRatio()', () => {
    const bp = new BackpressureController<string>({ maxQueueSize: 4 });
    fill(bp, 'a', 'b', 'c');
    const stats = bp.stats();
    bp.take();
    expect(stats).toMatchObject({
      currentQueueSize: 3,
      maxQueueSize: 4,
      droppedEvents: 0,
      rejectedEvents: 0,
      blockedAdmits: 0,
    });
    expect(stats.fillRatio()).toBe(0.75);
    expect(bp.stats().fillRatio()).toBe(0.5);
  });

  it('stops calling a listener once it is removed', () => {
    const bp = new BackpressureController<string>({ maxQueueSize: 4 });
    let calls = 0;
    const remove = bp.on('available', () => calls++);
    fill(bp, 'a');
    remove();
    fill(bp, 'b');
    expect(calls).toBe(1);
  });

  it('close() rejects blocked admitters, returns the waiting items and refuses new ones with CLOSED', async () => {
    const clock = new FakeClock();
    const bp = new BackpressureController<string>({ maxQueueSize: 3, clock });
    fill(bp, 'a', 'b', 'c');
    expect(bp.take()).toBe('a');
    fill(bp, 'd');
    const e = track(bp.admit('e'));
    const reason = new ClosedError('bus closed');

    expect(bp.close(reason)).toEqual(['b', 'c', 'd']);
    await flush();
    expect(e.state).toBe('rejected');
    expect(e.error).toBe(reason);
    expect(clock.pendingTimers()).toBe(0);
    expect(thrown(() => bp.admit('f'))).toMatchObject({ code: ErrorCode.CLOSED });
    expect(bp.close(reason)).toEqual([]);
    expect(bp.size).toBe(0);
  });

  it('exports its defaults', () => {
    expect(DEFAULT_BACKPRESSURE_OPTIONS).toMatchObject({
      maxQueueSize: 1000,
      strategy: 'block',
      blockTimeoutMs: 30_000,
      warningThreshold: 0.8,
    });
  });

  it.each([
    ['maxQueueSize', { maxQueueSize: 0 }],
    ['maxQueueSize', { maxQueueSize: 2.5 }],
    ['maxQueueSize', { maxQueueSize: Number.POSITIVE_INFINITY }],
    ['strategy', { strategy: 'drop-random' as never }],
    ['blockTimeoutMs', { blockTimeoutMs: -1 }],
    ['blockTimeoutMs', { blockTimeoutMs: Number.NaN }],
    ['warningThreshold', { warningThreshold: 0 }],
    ['warningThreshold', { warningThreshold: 1.1 }],
    ['clock', { clock: { now: () => 0 } as never }],
  ] as const)('rejects a bad %s with a CONFIG error naming it', (field, options) => {
    const error = thrown(() => new BackpressureController(options));
    expect(error).toMatchObject({
      code: ErrorCode.CONFIG,
      message: expect.stringContaining(`\`${field}\``),
    });
  });
});
