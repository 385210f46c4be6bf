import { describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import { FakeClock } from '../testing/fake-clock.js';
import {
  AbortScope,
  Backoff,
  Deadline,
  Pause,
  TIMED_OUT,
  abortError,
  raceAbort,
  repeat,
  throwIfAborted,
  within,
  withTimeout,
} from './timing.js';

const never = (): Promise<never> => new Promise<never>(() => undefined);

describe('within', () => {
  it('resolves with the work when it finishes first and clears its timer', async () => {
    const clock = new FakeClock();
    await expect(within(clock, 100, Promise.resolve('done'))).resolves.toBe('done');
    expect(clock.pendingTimers()).toBe(0);
  });

  it('resolves with TIMED_OUT once the time has passed on the clock', async () => {
    const clock = new FakeClock();
    const result = within(clock, 100, never());
    await clock.advanceAsync(99);
    let settled = false;
    void result.then(() => (settled = true));
    await clock.advanceAsync(0);
    expect(settled).toBe(false);
    await clock.advanceAsync(1);
    await expect(result).resolves.toBe(TIMED_OUT);
  });

  it('rejects with the failure of the work', async () => {
    const clock = new FakeClock();
    await expect(within(clock, 100, Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe('withTimeout', () => {
  it('rejects with a TIMEOUT error naming what took too long', async () => {
    const clock = new FakeClock();
    const result = withTimeout(clock, never(), 50, 'the round trip').catch((e: unknown) => e);
    await clock.advanceAsync(50);
    const error = await result;
    expect(isWatchtowerError(error, ErrorCode.TIMEOUT)).toBe(true);
    expect((error as Error).message).toBe('the round trip took longer than 50 ms');
  });
});

describe('abort helpers', () => {
  it('abortError is ABORTED, not retryable, with the reason as cause', () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    controller.abort(reason);
    const error = abortError(controller.signal, 'the publish');
    expect(error.code).toBe(ErrorCode.ABORTED);
    expect(error.retryable).toBe(false);
    expect(error.cause).toBe(reason);
    expect(error.message).toBe('the publish was aborted');
  });

  it('throwIfAborted throws only for an aborted signal', () => {
    expect(() => throwIfAborted(undefined)).not.toThrow();
    const controller = new AbortController();
    expect(() => throwIfAborted(controller.signal)).not.toThrow();
    controller.abort();
    expect(() => throwIfAborted(controller.signal)).toThrow(/aborted/);
  });

  it('raceAbort rejects as soon as the signal aborts and passes results through otherwise', async () => {
    const controller = new AbortController();
    const raced = raceAbort(never(), controller.signal);
    controller.abort();
    await expect(raced).rejects.toSatisfy((e) => isWatchtowerError(e, ErrorCode.ABORTED));
    await expect(raceAbort(Promise.resolve(3), new AbortController().signal)).resolves.toBe(3);
  });
});

describe('Deadline', () => {
  it('shares what is left between steps', async () => {
    const clock = new FakeClock(1000);
    const deadline = new Deadline(clock, 300);
    expect(deadline.remaining()).toBe(300);
    clock.advance(120);
    expect(deadline.remaining()).toBe(180);
    const step = deadline.within(never());
    await clock.advanceAsync(180);
    await expect(step).resolves.toBe(TIMED_OUT);
    expect(deadline.expired).toBe(true);
    expect(deadline.remaining()).toBe(0);
  });
});

describe('Pause', () => {
  it('ends after its time, or at once when woken', async () => {
    const clock = new FakeClock();
    const pause = new Pause(clock);
    let ended = false;
    void pause.sleep(1000).then(() => (ended = true));
    expect(pause.waiting).toBe(true);
    await clock.advanceAsync(999);
    expect(ended).toBe(false);
    pause.wake();
    await clock.advanceAsync(0);
    expect(ended).toBe(true);
    expect(pause.waiting).toBe(false);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('waits without a time until woken', async () => {
    const clock = new FakeClock();
    const pause = new Pause(clock);
    let ended = false;
    void pause.sleep().then(() => (ended = true));
    expect(clock.pendingTimers()).toBe(0);
    await clock.advanceAsync(1_000_000);
    expect(ended).toBe(false);
    pause.wake();
    await clock.advanceAsync(0);
    expect(ended).toBe(true);
  });
});

describe('repeat', () => {
  it('runs the task every interval until stopped, never overlapping a run that is awaited', async () => {
    const clock = new FakeClock();
    const runs: number[] = [];
    let release: (() => void) | undefined;
    const stop = repeat(
      clock,
      100,
      () => {
        runs.push(clock.now());
        return new Promise<void>((resolve) => (release = resolve));
      },
      () => undefined,
    );
    await clock.advanceAsync(100);
    expect(runs).toEqual([100]);
    await clock.advanceAsync(500);
    expect(runs).toEqual([100]);
    release?.();
    await clock.advanceAsync(0);
    await clock.advanceAsync(100);
    expect(runs).toEqual([100, 700]);
    stop();
    release?.();
    await clock.advanceAsync(1000);
    expect(runs).toEqual([100, 700]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('reports a failing run and goes on', async () => {
    const clock = new FakeClock();
    const errors: unknown[] = [];
    let count = 0;
    const stop = repeat(
      clock,
      10,
      () => {
        count++;
        throw new Error(`run ${count}`);
      },
      (error) => errors.push(error),
    );
    await clock.advanceAsync(30);
    stop();
    expect(count).toBe(3);
    expect(errors.map((e) => (e as Error).message)).toEqual(['run 1', 'run 2', 'run 3']);
  });
});

describe('Backoff', () => {
  it('draws each wait from zero to a cap that doubles per failure up to maxMs', () => {
    const backoff = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0.999999 });
    expect([1, 2, 3, 4, 5, 6].map(() => backoff.next())).toEqual([99, 199, 399, 799, 999, 999]);
    expect(backoff.failures).toBe(6);
    backoff.reset();
    expect(backoff.next()).toBe(99);
  });

  it('spreads waits over the whole range (full jitter)', () => {
    const low = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0 });
    expect(low.next()).toBe(0);
    const waits = Array.from({ length: 200 }, () => {
      const b = new Backoff({ baseMs: 1000, maxMs: 1000 });
      return b.next();
    });
    expect(Math.min(...waits)).toBeLessThan(250);
    expect(Math.max(...waits)).toBeGreaterThan(750);
  });
});

describe('AbortScope', () => {
  it('aborts every open signal, and each one opened later, with the reason', () => {
    const scope = new AbortScope();
    const first = scope.open();
    const released = scope.open();
    scope.release(released);
    const reason = new Error('closing');
    scope.abort(reason);
    expect(first.signal.aborted).toBe(true);
    expect(first.signal.reason).toBe(reason);
    // Released: no longer the scope's.
    expect(released.signal.aborted).toBe(false);
    const later = scope.open();
    expect(later.signal.aborted).toBe(true);
    expect(later.signal.reason).toBe(reason);
  });

  it('runs work with a signal of its own and forgets it when the work settles', async () => {
    const scope = new AbortScope();
    const seen: AbortSignal[] = [];
    await scope.run(async (signal) => {
      seen.push(signal);
    });
    scope.abort(new Error('late'));
    expect(seen[0]?.aborted).toBe(false);
    await expect(scope.run(async (signal) => signal.aborted)).resolves.toBe(true);
  });
});
