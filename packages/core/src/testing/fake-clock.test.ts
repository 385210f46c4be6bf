import { describe, expect, it } from 'vitest';
import { sleep } from '../clock.js';
import { FakeClock } from './fake-clock.js';

describe('FakeClock', () => {
  it('starts at the given time, or 0, and only moves when advanced', () => {
    expect(new FakeClock().now()).toBe(0);
    const clock = new FakeClock(1_000);
    expect(clock.now()).toBe(1_000);
    clock.advance(250);
    expect(clock.now()).toBe(1_250);
  });

  it('runs due timers in time order, ties in scheduling order, and leaves later ones pending', () => {
    const clock = new FakeClock();
    const ran: string[] = [];
    clock.setTimeout(() => ran.push(`c@${clock.now()}`), 30);
    clock.setTimeout(() => ran.push(`a@${clock.now()}`), 10);
    clock.setTimeout(() => ran.push(`b@${clock.now()}`), 10);
    clock.setTimeout(() => ran.push(`d@${clock.now()}`), 31);

    clock.advance(30);

    expect(ran).toEqual(['a@10', 'b@10', 'c@30']);
    expect(clock.now()).toBe(30);
    expect(clock.pendingTimers()).toBe(1);
  });

  it('runs timers that callbacks schedule inside the window, but not beyond it', () => {
    const clock = new FakeClock();
    const ran: number[] = [];
    clock.setTimeout(() => {
      ran.push(clock.now());
      clock.setTimeout(() => ran.push(clock.now()), 5);
      clock.setTimeout(() => ran.push(clock.now()), 50);
    }, 10);

    clock.advance(20);

    expect(ran).toEqual([10, 15]);
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(40);
    expect(ran).toEqual([10, 15, 60]);
  });

  it('runs a zero-delay timer on advance(0)', () => {
    const clock = new FakeClock();
    let ran = false;
    clock.setTimeout(() => {
      ran = true;
    }, 0);
    clock.advance(0);
    expect(ran).toBe(true);
  });

  it('does not run a cleared timer', () => {
    const clock = new FakeClock();
    let ran = false;
    const handle = clock.setTimeout(() => {
      ran = true;
    }, 10);
    expect(clock.pendingTimers()).toBe(1);

    clock.clearTimeout(handle);
    clock.clearTimeout(handle);
    clock.advance(100);

    expect(ran).toBe(false);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('advanceAsync resumes code that awaits sleep(), so chained sleeps finish in one window', async () => {
    const clock = new FakeClock();
    const woke: number[] = [];
    const done = (async () => {
      for (let i = 0; i < 3; i++) {
        await sleep(clock, 100);
        woke.push(clock.now());
      }
    })();

    await clock.advanceAsync(250);
    expect(woke).toEqual([100, 200]);
    await clock.advanceAsync(50);
    expect(woke).toEqual([100, 200, 300]);
    await done;
  });

  it('advance without flushing leaves an awaiting sleeper behind its own timer', async () => {
    const clock = new FakeClock();
    const woke: number[] = [];
    const done = (async () => {
      await sleep(clock, 100);
      woke.push(clock.now());
      await sleep(clock, 100);
      woke.push(clock.now());
    })();

    clock.advance(300);
    // The continuation after the first sleep had no chance to run inside advance().
    await Promise.resolve();
    expect(woke).toEqual([300]);
    await clock.advanceAsync(100);
    expect(woke).toEqual([300, 400]);
    await done;
  });

  it('rejects a negative or non-finite advance and a non-finite start time', () => {
    const clock = new FakeClock();
    expect(() => clock.advance(-1)).toThrow(RangeError);
    expect(() => clock.advance(Number.NaN)).toThrow(RangeError);
    expect(() => new FakeClock(Number.POSITIVE_INFINITY)).toThrow(RangeError);
  });

  it('propagates a throwing callback and keeps later timers pending', () => {
    const clock = new FakeClock();
    let later = false;
    clock.setTimeout(() => {
      throw new Error('boom');
    }, 10);
    clock.setTimeout(() => {
      later = true;
    }, 20);

    expect(() => clock.advance(30)).toThrow('boom');
    expect(clock.now()).toBe(10);
    expect(later).toBe(false);
    clock.advance(10);
    expect(later).toBe(true);
  });
});
