import { describe, expect, it } from 'vitest';
import { ErrorCode, WatchtowerError, isWatchtowerError } from '../errors.js';
import { FakeClock } from '../testing/fake-clock.js';
import { CLOSE_MARGIN_MS, TransportLifecycle } from './lifecycle.js';

function lifecycle(clock = new FakeClock()): TransportLifecycle {
  return new TransportLifecycle({
    name: 'the test transport',
    clock,
    closeTimeoutMs: 1000,
    mapError: (error, operation) =>
      new WatchtowerError(ErrorCode.TRANSPORT, `${operation}: ${String(error)}`),
  });
}

const never = (): Promise<never> => new Promise<never>(() => undefined);

describe('TransportLifecycle.connect', () => {
  it('runs open once for concurrent callers and is open afterwards', async () => {
    const life = lifecycle();
    let opens = 0;
    const open = async (): Promise<void> => {
      opens++;
      await Promise.resolve();
    };
    const a = life.connect(open);
    const b = life.connect(open);
    expect(life.phase).toBe('connecting');
    await Promise.all([a, b]);
    await life.connect(open);
    expect(opens).toBe(1);
    expect(life.phase).toBe('open');
  });

  it('tries again after a failed attempt', async () => {
    const life = lifecycle();
    let opens = 0;
    const open = async (): Promise<void> => {
      opens++;
      if (opens === 1) throw new Error('refused');
    };
    await expect(life.connect(open)).rejects.toThrow('refused');
    expect(life.phase).toBe('idle');
    await life.connect(open);
    expect(opens).toBe(2);
  });

  it('refuses to connect after close with CLOSED', async () => {
    const life = lifecycle();
    await life.close(
      undefined,
      async () => undefined,
      () => undefined,
    );
    await expect(life.connect(async () => undefined)).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.CLOSED),
    );
  });

  it('rejects a connect that close() overtook', async () => {
    const life = lifecycle();
    let finish: (() => void) | undefined;
    const connecting = life.connect(() => new Promise<void>((resolve) => (finish = resolve)));
    const closing = life.close(
      undefined,
      async () => undefined,
      () => undefined,
    );
    finish?.();
    await expect(connecting).rejects.toSatisfy((e) => isWatchtowerError(e, ErrorCode.CLOSED));
    await closing;
    expect(life.phase).toBe('closed');
  });

  it('connects afresh after the connection was lost', async () => {
    const life = lifecycle();
    let opens = 0;
    await life.connect(async () => void opens++);
    life.lost();
    expect(life.phase).toBe('idle');
    await life.connect(async () => void opens++);
    expect(opens).toBe(2);
  });
});

describe('TransportLifecycle connection reports', () => {
  it('reports a failed reconnect only while the connection is lost', async () => {
    const life = lifecycle();
    const changes: string[] = [];
    life.on('connection', (change) => changes.push(change.state));
    const error = new WatchtowerError(ErrorCode.CONNECTION, 'refused');
    await life.connect(async () => undefined);
    life.reconnectFailed(error);
    life.connectionLost(error);
    life.reconnectFailed(error);
    life.reconnectFailed(error);
    life.connectionRestored();
    life.reconnectFailed(error);
    expect(changes).toEqual(['lost', 'reconnect-failed', 'reconnect-failed', 'restored']);
  });
});

describe('TransportLifecycle.close', () => {
  it('runs its steps once; later calls get the same promise', async () => {
    const life = lifecycle();
    let runs = 0;
    const first = life.close(
      undefined,
      async () => void runs++,
      () => undefined,
    );
    const second = life.close(
      { timeoutMs: 5 },
      async () => void runs++,
      () => undefined,
    );
    expect(second).toBe(first);
    await first;
    expect(runs).toBe(1);
    expect(life.phase).toBe('closed');
    expect(life.closed).toBe(true);
  });

  it('refuses an unknown option or a bad timeoutMs with CONFIG, and stays open', async () => {
    const life = lifecycle();
    await expect(
      life.close(
        { timeout: 5 } as never,
        async () => undefined,
        () => undefined,
      ),
    ).rejects.toSatisfy((e) => isWatchtowerError(e, ErrorCode.CONFIG));
    await expect(
      life.close(
        { timeoutMs: -1 },
        async () => undefined,
        () => undefined,
      ),
    ).rejects.toSatisfy((e) => isWatchtowerError(e, ErrorCode.CONFIG));
    await expect(
      life.close(
        { timeoutMs: 'soon' as never },
        async () => undefined,
        () => undefined,
      ),
    ).rejects.toSatisfy((e) => isWatchtowerError(e, ErrorCode.CONFIG));
    expect(life.closed).toBe(false);
  });

  it('gives the steps a deadline of timeoutMs, defaulting to closeTimeoutMs', async () => {
    const clock = new FakeClock();
    const life = lifecycle(clock);
    let remaining = -1;
    await life.close(
      undefined,
      async (deadline) => void (remaining = deadline.remaining()),
      () => undefined,
    );
    expect(remaining).toBe(1000);
    const other = lifecycle(clock);
    await other.close(
      { timeoutMs: 300 },
      async (deadline) => void (remaining = deadline.remaining()),
      () => undefined,
    );
    expect(remaining).toBe(300);
  });

  it('forces the connections closed at the deadline and resolves within the margin when the steps hang', async () => {
    const clock = new FakeClock();
    const life = lifecycle(clock);
    let forced = false;
    let settled = false;
    const closing = life
      .close(
        { timeoutMs: 300 },
        () => never(),
        () => void (forced = true),
      )
      .then(() => (settled = true));
    await clock.advanceAsync(299);
    expect(forced).toBe(false);
    expect(life.phase).toBe('closing');
    await clock.advanceAsync(1);
    expect(forced).toBe(true);
    expect(settled).toBe(false);
    await clock.advanceAsync(CLOSE_MARGIN_MS);
    await closing;
    expect(settled).toBe(true);
    expect(life.phase).toBe('closed');
  });

  it('resolves as soon as forced steps end, even before the margin', async () => {
    const clock = new FakeClock();
    const life = lifecycle(clock);
    let end: (() => void) | undefined;
    const steps = (): Promise<void> => new Promise<void>((resolve) => (end = resolve));
    const closing = life.close({ timeoutMs: 10 }, steps, () => end?.());
    await clock.advanceAsync(10);
    await closing;
    expect(life.phase).toBe('closed');
  });

  it('rejects with what its steps rejected with when they ended by themselves', async () => {
    const life = lifecycle();
    await expect(
      life.close(
        undefined,
        async () => {
          throw new Error('drain failed');
        },
        () => undefined,
      ),
    ).rejects.toThrow('drain failed');
    expect(life.phase).toBe('closed');
  });

  it('aborts its signal when close starts', async () => {
    const life = lifecycle();
    expect(life.signal.aborted).toBe(false);
    const closing = life.close(
      undefined,
      async () => undefined,
      () => undefined,
    );
    expect(life.signal.aborted).toBe(true);
    expect(isWatchtowerError(life.signal.reason, ErrorCode.CLOSED)).toBe(true);
    await closing;
  });
});

describe('TransportLifecycle errors and background work', () => {
  it('reports failures of tracked work, mapped, to the error listeners', async () => {
    const life = lifecycle();
    const errors: WatchtowerError[] = [];
    const off = life.on('error', (error) => errors.push(error));
    life.track(Promise.reject(new Error('reset')), 'read the stream');
    life.track(Promise.resolve(), 'nothing');
    await new Promise((resolve) => setImmediate(resolve));
    expect(errors.map((e) => e.message)).toEqual(['read the stream: Error: reset']);
    expect(life.backgroundSize).toBe(0);
    off();
    life.report(new WatchtowerError(ErrorCode.TRANSPORT, 'unheard'));
    expect(errors).toHaveLength(1);
  });

  it('is silent after close', async () => {
    const life = lifecycle();
    const errors: WatchtowerError[] = [];
    life.on('error', (error) => errors.push(error));
    await life.close(
      undefined,
      async () => undefined,
      () => undefined,
    );
    life.report(new WatchtowerError(ErrorCode.TRANSPORT, 'after close'));
    life.track(Promise.reject(new Error('late')), 'late work');
    await new Promise((resolve) => setImmediate(resolve));
    expect(errors).toEqual([]);
  });

  it('settleBackground waits for tracked work, and no longer than the deadline', async () => {
    const clock = new FakeClock();
    const life = lifecycle(clock);
    let finish: (() => void) | undefined;
    life.track(new Promise<void>((resolve) => (finish = resolve)), 'slow');
    life.track(never(), 'stuck');
    const closing = life.close(
      { timeoutMs: 100 },
      (deadline) => life.settleBackground(deadline),
      () => undefined,
    );
    finish?.();
    await clock.advanceAsync(0);
    expect(life.backgroundSize).toBe(1);
    await clock.advanceAsync(100);
    await closing;
    expect(life.phase).toBe('closed');
  });
});
