import { describe, expect, it } from 'vitest';
import { FakeClock, configErrorField } from '../testing.js';
import { MemoryIdempotencyStore } from './idempotency.js';

describe('MemoryIdempotencyStore', () => {
  it('remembers a key for its TTL on the clock, then forgets it', () => {
    const clock = new FakeClock();
    const store = new MemoryIdempotencyStore({ clock });
    store.mark('a', 1000);
    clock.advance(999);
    expect(store.seen('a')).toBe(true);
    clock.advance(1);
    expect(store.seen('a')).toBe(false);
    expect(store.size).toBe(0);
  });

  it('forgets the oldest key past maxKeys', () => {
    const store = new MemoryIdempotencyStore({ maxKeys: 2, clock: new FakeClock() });
    store.mark('a', 1000);
    store.mark('b', 1000);
    store.mark('c', 1000);
    expect([store.seen('a'), store.seen('b'), store.seen('c')]).toEqual([false, true, true]);
  });

  it('refuses a bad maxKeys or an unknown option', () => {
    expect(configErrorField(() => new MemoryIdempotencyStore({ maxKeys: 0 }))).toBe('maxKeys');
    expect(configErrorField(() => new MemoryIdempotencyStore({ ttl: 5 } as never))).toBe('ttl');
  });
});
