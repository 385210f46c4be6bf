import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { FakeClock, settlement } from '@watchtower/core/testing';
import { Semaphore, TokenBucket } from './limits.js';
import { isPrivateAddress } from './address-guard.js';
import { parseRetryAfter } from './http-attempt.js';

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('Semaphore', () => {
  it('lets `limit` holders in and the next waiter in as each releases, first come first served', async () => {
    const slots = new Semaphore(2);
    await slots.acquire();
    await slots.acquire();
    const order: number[] = [];
    const third = slots.acquire().then(() => order.push(3));
    const fourth = slots.acquire().then(() => order.push(4));
    await flush();
    expect({ held: slots.held, waiting: slots.waiting, order }).toEqual({
      held: 2,
      waiting: 2,
      order: [],
    });
    slots.release();
    await third;
    expect(order).toEqual([3]);
    slots.release();
    await fourth;
    expect(order).toEqual([3, 4]);
  });

  it('rejects a waiter whose signal aborts with ABORTED and skips it', async () => {
    const slots = new Semaphore(1);
    await slots.acquire();
    const controller = new AbortController();
    const waiting = settlement(slots.acquire(controller.signal));
    controller.abort();
    expect(await waiting).toMatchObject({ code: 'ABORTED' });
    expect(slots.waiting).toBe(0);
    slots.release();
    expect(slots.held).toBe(0);
  });

  it('hooks a signal shared by many waiters once, and its abort rejects only those waiters', async () => {
    const slots = new Semaphore(1);
    await slots.acquire();
    const shared = new AbortController();
    const own = new AbortController();
    const first = [
      settlement(slots.acquire(shared.signal)),
      settlement(slots.acquire(shared.signal)),
    ];
    const other = slots.acquire(own.signal);
    const last = settlement(slots.acquire(shared.signal));
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(1);
    shared.abort();
    for (const waiting of [...first, last])
      expect(await waiting).toMatchObject({ code: 'ABORTED' });
    expect(slots.waiting).toBe(1);
    slots.release();
    await other;
    expect(getEventListeners(own.signal, 'abort')).toHaveLength(0);
    expect(slots.held).toBe(1);
  });
});

describe('TokenBucket', () => {
  it('lets a burst through, then one request per 1/perSecond on the clock', async () => {
    const clock = new FakeClock(0);
    const bucket = new TokenBucket(clock, 10, 2);
    await bucket.take();
    await bucket.take();
    let third = false;
    const waiting = bucket.take().then(() => (third = true));
    await flush();
    expect(third).toBe(false);
    clock.advance(99);
    await flush();
    expect(third).toBe(false);
    clock.advance(1);
    await waiting;
    expect(third).toBe(true);
    bucket.stop();
  });
});

describe('isPrivateAddress', () => {
  it('knows the private, loopback, link-local and reserved ranges, IPv4-mapped ones too', () => {
    for (const address of [
      '10.0.0.1',
      '127.0.0.1',
      '169.254.169.254',
      '172.16.5.4',
      '192.168.1.1',
      '100.64.0.1',
      '0.0.0.0',
      '::1',
      'fd00::1',
      'fe80::1',
      '::ffff:127.0.0.1',
      '::ffff:10.1.1.1',
    ]) {
      expect({ address, private: isPrivateAddress(address) }).toEqual({ address, private: true });
    }
    for (const address of [
      '93.184.216.34',
      '8.8.8.8',
      '172.32.0.1',
      '2606:4700::1111',
      '::ffff:8.8.8.8',
    ]) {
      expect({ address, private: isPrivateAddress(address) }).toEqual({ address, private: false });
    }
  });
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds and HTTP dates, and nothing else', () => {
    const now = Date.parse('2026-12-01T10:00:00Z');
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('Tue, 01 Dec 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Tue, 01 Dec 2026 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});
