import { describe, expect, it } from 'vitest';
import {
  CircuitBreaker,
  DEFAULT_CIRCUIT_BREAKER_OPTIONS,
  isCircuitFailure,
  type CircuitBreakerOptions,
  type CircuitState,
} from './circuit-breaker.js';
import {
  BackpressureError,
  CircuitOpenError,
  ConnectionError,
  ErrorCode,
  NonRetryableError,
  SerializationError,
  ValidationError,
  configError,
} from './errors.js';
import { FakeClock } from './testing/fake-clock.js';
import { thrown } from './testing/thrown.js';

const boom = (): Promise<never> => Promise.reject(new Error('boom'));
const ok = (): Promise<string> => Promise.resolve('ok');

function deferred<T>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

async function failTimes(breaker: CircuitBreaker, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await expect(breaker.execute(boom)).rejects.toThrow('boom');
}

/** A breaker opened at clock time 1000 with the default thresholds. */
async function openBreaker(
  options: CircuitBreakerOptions = {},
): Promise<{ breaker: CircuitBreaker; clock: FakeClock }> {
  const clock = new FakeClock(1_000);
  const breaker = new CircuitBreaker({ clock, ...options });
  await failTimes(breaker, options.failureThreshold ?? 5);
  expect(breaker.state).toBe('open');
  return { breaker, clock };
}

describe('CircuitBreaker', () => {
  it('starts closed and passes results and errors through', async () => {
    const breaker = new CircuitBreaker({ clock: new FakeClock() });
    expect(breaker.state).toBe('closed');
    await expect(breaker.execute(ok)).resolves.toBe('ok');
    await expect(breaker.execute(boom)).rejects.toThrow('boom');
    expect(breaker.state).toBe('closed');
  });

  it('opens after 5 consecutive failures and rejects with CIRCUIT_OPEN without calling fn', async () => {
    const clock = new FakeClock();
    const breaker = new CircuitBreaker({ clock });
    await failTimes(breaker, 4);
    expect(breaker.state).toBe('closed');
    await failTimes(breaker, 1);
    expect(breaker.state).toBe('open');

    let called = false;
    const error = await breaker
      .execute(() => {
        called = true;
        return ok();
      })
      .catch((e: unknown) => e);
    expect(called).toBe(false);
    expect(error).toBeInstanceOf(CircuitOpenError);
    expect(error).toMatchObject({
      code: ErrorCode.CIRCUIT_OPEN,
      retryAfterMs: 60_000,
      retryable: false,
    });
  });

  it('counts only consecutive failures: a success in between starts the count again', async () => {
    const breaker = new CircuitBreaker({ clock: new FakeClock(), failureThreshold: 3 });
    await failTimes(breaker, 2);
    await breaker.execute(ok);
    await failTimes(breaker, 2);
    expect(breaker.state).toBe('closed');
    await failTimes(breaker, 1);
    expect(breaker.state).toBe('open');
  });

  it('reports retryAfterMs as the time left until half-open', async () => {
    const { breaker, clock } = await openBreaker();
    clock.advance(20_000);
    await expect(breaker.execute(ok)).rejects.toMatchObject({
      code: ErrorCode.CIRCUIT_OPEN,
      retryAfterMs: 40_000,
    });
    clock.advance(39_999);
    await expect(breaker.execute(ok)).rejects.toMatchObject({ retryAfterMs: 1 });
  });

  it('becomes half-open once resetTimeoutMs has passed, seen by state without any call', async () => {
    const { breaker, clock } = await openBreaker();
    clock.advance(59_999);
    expect(breaker.state).toBe('open');
    clock.advance(1);
    expect(breaker.state).toBe('half-open');
    expect(clock.pendingTimers()).toBe(0);
  });

  it('lets one trial call through when half-open and rejects concurrent ones with CIRCUIT_OPEN', async () => {
    const { breaker, clock } = await openBreaker();
    clock.advance(60_000);
    const trial = deferred<string>();
    const first = breaker.execute(() => trial.promise);

    await expect(breaker.execute(ok)).rejects.toMatchObject({
      code: ErrorCode.CIRCUIT_OPEN,
      retryAfterMs: 0,
    });

    trial.resolve('trial');
    await expect(first).resolves.toBe('trial');
    expect(breaker.state).toBe('half-open');
    // The slot is free again.
    await expect(breaker.execute(ok)).resolves.toBe('ok');
  });

  it('allows halfOpenMaxConcurrent trial calls at once', async () => {
    const { breaker, clock } = await openBreaker({ halfOpenMaxConcurrent: 2, successThreshold: 3 });
    clock.advance(60_000);
    const a = deferred<string>();
    const b = deferred<string>();
    const first = breaker.execute(() => a.promise);
    const second = breaker.execute(() => b.promise);
    await expect(breaker.execute(ok)).rejects.toBeInstanceOf(CircuitOpenError);
    a.resolve('a');
    b.resolve('b');
    await expect(Promise.all([first, second])).resolves.toEqual(['a', 'b']);
    expect(breaker.stats()).toMatchObject({ state: 'half-open', successCount: 2 });
  });

  it('closes after successThreshold (2) successes in half-open', async () => {
    const { breaker, clock } = await openBreaker();
    clock.advance(60_000);
    await breaker.execute(ok);
    expect(breaker.state).toBe('half-open');
    await breaker.execute(ok);
    expect(breaker.state).toBe('closed');
    expect(breaker.stats()).toMatchObject({ failureCount: 0, successCount: 0 });
    // Closed again means the full failure threshold applies afresh.
    await failTimes(breaker, 4);
    expect(breaker.state).toBe('closed');
  });

  it('reopens on a failure in half-open, with a fresh reset timeout', async () => {
    const { breaker, clock } = await openBreaker();
    clock.advance(60_000);
    await breaker.execute(ok);
    await expect(breaker.execute(boom)).rejects.toThrow('boom');
    expect(breaker.state).toBe('open');
    await expect(breaker.execute(ok)).rejects.toMatchObject({ retryAfterMs: 60_000 });
    clock.advance(60_000);
    expect(breaker.state).toBe('half-open');
  });

  it('ignores the outcome of a call that started before the circuit opened', async () => {
    const clock = new FakeClock();
    const breaker = new CircuitBreaker({ clock, failureThreshold: 1, successThreshold: 1 });
    const slow = deferred<string>();
    const slowCall = breaker.execute(() => slow.promise);
    await failTimes(breaker, 1);
    clock.advance(60_000);
    expect(breaker.state).toBe('half-open');

    slow.resolve('late');
    await expect(slowCall).resolves.toBe('late');
    expect(breaker.state).toBe('half-open');
  });

  it('does not count errors that isFailure rejects, by default CONFIG/VALIDATION/CIRCUIT_OPEN/BACKPRESSURE_*/CLOSED', async () => {
    const breaker = new CircuitBreaker({ clock: new FakeClock(), failureThreshold: 1 });
    await expect(
      breaker.execute(() => Promise.reject(new ValidationError('bad'))),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(breaker.state).toBe('closed');
    expect(isCircuitFailure(new BackpressureError(ErrorCode.BACKPRESSURE_FULL, 'full'))).toBe(
      false,
    );
    expect(isCircuitFailure(new CircuitOpenError('open', 5))).toBe(false);
    expect(isCircuitFailure(new ConnectionError('down'))).toBe(true);
    expect(isCircuitFailure('a string')).toBe(true);
    await expect(
      breaker.execute(() => Promise.reject(new ConnectionError('down'))),
    ).rejects.toThrow('down');
    expect(breaker.state).toBe('open');
  });

  it("counts none of the caller's own faults: SERIALIZATION, VALIDATION, CONFIG, NON_RETRYABLE", () => {
    expect(isCircuitFailure(new SerializationError('a BigInt in the payload'))).toBe(false);
    expect(isCircuitFailure(new ValidationError('bad'))).toBe(false);
    expect(isCircuitFailure(configError('x', 'bad'))).toBe(false);
    expect(isCircuitFailure(new NonRetryableError('no'))).toBe(false);
  });

  it("stays closed however many calls fail with the caller's own faults", async () => {
    const breaker = new CircuitBreaker({ clock: new FakeClock(), failureThreshold: 2 });
    for (const error of [
      new SerializationError('cycle'),
      new SerializationError('BigInt'),
      new NonRetryableError('no'),
      new NonRetryableError('no'),
    ]) {
      await expect(breaker.execute(() => Promise.reject(error))).rejects.toBe(error);
    }
    expect(breaker.stats()).toMatchObject({ state: 'closed', failureCount: 0 });
  });

  it('uses a custom isFailure, and a non-failure in half-open only frees the trial slot', async () => {
    const { breaker, clock } = await openBreaker({ isFailure: (e) => e !== 'ignored' });
    clock.advance(60_000);
    // A non-Error rejection on purpose: isFailure must see the value as it was thrown.
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
    await expect(breaker.execute(() => Promise.reject('ignored'))).rejects.toBe('ignored');
    expect(breaker.state).toBe('half-open');
    await expect(breaker.execute(ok)).resolves.toBe('ok');
  });

  it('counts a synchronous throw from fn as a failure', async () => {
    const breaker = new CircuitBreaker({ clock: new FakeClock(), failureThreshold: 1 });
    await expect(
      breaker.execute(() => {
        throw new Error('sync');
      }),
    ).rejects.toThrow('sync');
    expect(breaker.state).toBe('open');
  });

  it('reports stats as a plain snapshot', async () => {
    const clock = new FakeClock(500);
    const breaker = new CircuitBreaker({ clock, failureThreshold: 2 });
    expect(breaker.stats()).toEqual({
      state: 'closed',
      failureCount: 0,
      successCount: 0,
      totalRequests: 0,
      rejectedRequests: 0,
      lastFailureAt: undefined,
      lastStateChangeAt: 500,
    });
    await breaker.execute(ok);
    clock.advance(100);
    await failTimes(breaker, 1);
    const closed = breaker.stats();
    expect(closed).toMatchObject({
      state: 'closed',
      failureCount: 1,
      successCount: 0,
      lastFailureAt: 600,
    });

    clock.advance(100);
    await failTimes(breaker, 1);
    await expect(breaker.execute(ok)).rejects.toBeInstanceOf(CircuitOpenError);
    expect(breaker.stats()).toEqual({
      state: 'open',
      failureCount: 0,
      successCount: 0,
      totalRequests: 4,
      rejectedRequests: 1,
      lastFailureAt: 700,
      lastStateChangeAt: 700,
    });
    expect(closed.state).toBe('closed');
  });

  it('emits stateChange (to, from) for every transition until the listener is removed', async () => {
    const { breaker, clock } = await openBreaker({ successThreshold: 1 });
    const changes: Array<[CircuitState, CircuitState]> = [];
    const remove = breaker.on('stateChange', (to, from) => changes.push([to, from]));
    clock.advance(60_000);
    await breaker.execute(boom).catch(() => undefined);
    clock.advance(60_000);
    await breaker.execute(ok);
    expect(changes).toEqual([
      ['half-open', 'open'],
      ['open', 'half-open'],
      ['half-open', 'open'],
      ['closed', 'half-open'],
    ]);

    remove();
    await failTimes(breaker, 5);
    expect(breaker.state).toBe('open');
    expect(changes).toHaveLength(4);
  });

  it('shows the new state to a stateChange listener that reads it', async () => {
    const clock = new FakeClock(1_000);
    const breaker = new CircuitBreaker({ clock, failureThreshold: 1 });
    const seen: CircuitState[] = [];
    breaker.on('stateChange', () => seen.push(breaker.state));
    await failTimes(breaker, 1);
    expect(seen).toEqual(['open']);
  });

  it('reset() closes an open circuit and keeps the request totals', async () => {
    const { breaker } = await openBreaker();
    const changes: CircuitState[] = [];
    breaker.on('stateChange', (to) => changes.push(to));
    breaker.reset();
    expect(breaker.state).toBe('closed');
    expect(changes).toEqual(['closed']);
    expect(breaker.stats()).toMatchObject({ failureCount: 0, totalRequests: 5 });
    await expect(breaker.execute(ok)).resolves.toBe('ok');
  });

  it('offers acquire/recordSuccess/recordFailure for hot paths', () => {
    const clock = new FakeClock();
    const breaker = new CircuitBreaker({ clock, failureThreshold: 2, successThreshold: 1 });
    for (let i = 0; i < 2; i++) {
      breaker.acquire();
      breaker.recordFailure(new Error('x'));
    }
    const error = thrown(() => breaker.acquire());
    expect(error).toBeInstanceOf(CircuitOpenError);
    expect(error).toMatchObject({ retryAfterMs: 60_000 });

    clock.advance(60_000);
    breaker.acquire();
    expect(thrown(() => breaker.acquire())).toBeInstanceOf(CircuitOpenError);
    breaker.recordSuccess();
    expect(breaker.state).toBe('closed');
  });

  it('allows a resetTimeoutMs of 0: the circuit is half-open as soon as it opens', async () => {
    const breaker = new CircuitBreaker({
      clock: new FakeClock(),
      failureThreshold: 1,
      resetTimeoutMs: 0,
    });
    const changes: CircuitState[] = [];
    breaker.on('stateChange', (to) => changes.push(to));
    await failTimes(breaker, 1);
    expect(breaker.state).toBe('half-open');
    expect(changes).toEqual(['open', 'half-open']);
    await expect(breaker.execute(ok)).resolves.toBe('ok');
  });

  it('exports its defaults', () => {
    expect(DEFAULT_CIRCUIT_BREAKER_OPTIONS).toMatchObject({
      failureThreshold: 5,
      resetTimeoutMs: 60_000,
      halfOpenMaxConcurrent: 1,
      successThreshold: 2,
    });
  });

  it.each([
    ['failureThreshold', { failureThreshold: 0 }],
    ['failureThreshold', { failureThreshold: 1.5 }],
    ['halfOpenMaxConcurrent', { halfOpenMaxConcurrent: 0 }],
    ['successThreshold', { successThreshold: Number.NaN }],
    ['resetTimeoutMs', { resetTimeoutMs: -1 }],
    ['resetTimeoutMs', { resetTimeoutMs: Number.POSITIVE_INFINITY }],
    ['clock', { clock: {} as never }],
    ['isFailure', { isFailure: 'yes' as never }],
    ['name', { name: 42 as never }],
  ] as const)('rejects a bad %s with a CONFIG error naming it', (field, options) => {
    const error = thrown(() => new CircuitBreaker(options));
    expect(error).toMatchObject({
      code: ErrorCode.CONFIG,
      message: expect.stringContaining(`\`${field}\``),
    });
  });
});
