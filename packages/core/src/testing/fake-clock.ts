/**
 * `FakeClock`: a `Clock` whose time moves only when a test advances it, so that timers,
 * backoffs and deadlines on the injected clock can be stepped without waiting.
 */
import type { Clock, TimerHandle } from '../clock.js';

interface FakeTimer {
  readonly id: number;
  readonly at: number;
  /** Breaks ties between timers due at the same time: earlier scheduled runs first, as in Node. */
  readonly seq: number;
  readonly callback: () => void;
}

/**
 * Captured at load so that `advanceAsync` still reaches the real event loop when a test has
 * installed fake global timers.
 */
const realSetImmediate = globalThis.setImmediate;

/**
 * A single `advance` that runs more timers than this is almost certainly a callback that keeps
 * rescheduling itself at the same instant; failing beats hanging the test run.
 */
const MAX_TIMERS_PER_ADVANCE = 100_000;

/**
 * A {@link Clock} whose time only moves when a test says so. Timers run inside
 * {@link FakeClock.advance} / {@link FakeClock.advanceAsync}, in due-time order.
 *
 * @example
 * ```ts
 * const clock = new FakeClock();
 * const breaker = new CircuitBreaker({ clock });
 * clock.advance(60_000);
 * ```
 */
export class FakeClock implements Clock {
  #now: number;
  #nextId = 1;
  #seq = 0;
  readonly #timers = new Map<number, FakeTimer>();

  /**
   * @param startMs - the initial value of {@link FakeClock.now}, in epoch milliseconds.
   * @defaultValue 0
   */
  constructor(startMs = 0) {
    if (!Number.isFinite(startMs))
      throw new RangeError(`FakeClock start time must be finite, got ${startMs}`);
    this.#now = startMs;
  }

  /** The fake current time in milliseconds; changes only through `advance`/`advanceAsync`. */
  now(): number {
    return this.#now;
  }

  /**
   * Schedules `callback` at `now() + ms`. Like Node, a negative or non-numeric delay means
   * "as soon as possible", i.e. at the current fake time (it runs on the next advance, even
   * `advance(0)`).
   */
  setTimeout(callback: () => void, ms: number): TimerHandle {
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const id = this.#nextId++;
    this.#timers.set(id, { id, at: this.#now + delay, seq: this.#seq++, callback });
    return id;
  }

  /** Cancels a timer; unknown or already-run handles are ignored, as with the real clock. */
  clearTimeout(handle: TimerHandle): void {
    if (typeof handle === 'number') this.#timers.delete(handle);
  }

  /**
   * Moves time forward by `ms`, running every timer due by then in time order. Timers that
   * callbacks schedule within the window run too. Promise continuations do not get a chance to
   * run between timers: use {@link FakeClock.advanceAsync} for code that awaits.
   *
   * A throwing callback propagates out of `advance`; time then stays at that timer's due time
   * and later timers stay pending.
   */
  advance(ms: number): void {
    const target = this.#target(ms);
    for (let ran = 0; ; ran++) {
      const timer = this.#nextDue(target);
      if (timer === undefined) break;
      this.#guard(ran);
      this.#run(timer);
    }
    this.#now = target;
  }

  /**
   * Like {@link FakeClock.advance}, but lets pending promise continuations run before the
   * first timer, after every timer and at the end, so code awaiting `sleep()` resumes and can
   * schedule its next timer inside the same window.
   */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.#target(ms);
    await flushMicrotasks();
    for (let ran = 0; ; ran++) {
      const timer = this.#nextDue(target);
      if (timer === undefined) break;
      this.#guard(ran);
      this.#run(timer);
      await flushMicrotasks();
    }
    this.#now = target;
    await flushMicrotasks();
  }

  /** How many timers are scheduled and not yet run or cleared. */
  pendingTimers(): number {
    return this.#timers.size;
  }

  #target(ms: number): number {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new RangeError(
        `FakeClock can only advance by a finite, non-negative amount, got ${ms}`,
      );
    }
    return this.#now + ms;
  }

  #nextDue(target: number): FakeTimer | undefined {
    let next: FakeTimer | undefined;
    for (const timer of this.#timers.values()) {
      if (timer.at > target) continue;
      if (
        next === undefined ||
        timer.at < next.at ||
        (timer.at === next.at && timer.seq < next.seq)
      ) {
        next = timer;
      }
    }
    return next;
  }

  #run(timer: FakeTimer): void {
    this.#timers.delete(timer.id);
    this.#now = timer.at;
    timer.callback();
  }

  #guard(ran: number): void {
    if (ran >= MAX_TIMERS_PER_ADVANCE) {
      throw new Error(
        `FakeClock ran ${MAX_TIMERS_PER_ADVANCE} timers in one advance; a callback probably reschedules itself with no delay`,
      );
    }
  }
}

/** One real event-loop turn: Node drains the whole microtask queue before `setImmediate` fires. */
function flushMicrotasks(): Promise<void> {
  return new Promise((resolve) => {
    realSetImmediate(resolve);
  });
}
