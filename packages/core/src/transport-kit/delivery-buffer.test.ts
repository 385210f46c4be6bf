import { describe, expect, it } from 'vitest';
import { DeliveryBuffer } from './delivery-buffer.js';

describe('DeliveryBuffer', () => {
  it('hands out buffered items in order, by next() and tryNext() alike', async () => {
    const buffer = new DeliveryBuffer<string>();
    buffer.push('a');
    buffer.push('b');
    buffer.push('c');
    expect(buffer.size).toBe(3);
    expect(buffer.tryNext()).toBe('a');
    await expect(buffer.next()).resolves.toEqual({ value: 'b', done: false });
    expect(buffer.tryNext()).toBe('c');
    expect(buffer.tryNext()).toBeUndefined();
    expect(buffer.handedOut).toBe(3);
  });

  it('gives a pushed item straight to a consumer that waits', async () => {
    const taken: string[] = [];
    const buffer = new DeliveryBuffer<string>({ onTake: (item) => taken.push(item) });
    const next = buffer.next();
    expect(buffer.push('x')).toBe(true);
    await expect(next).resolves.toEqual({ value: 'x', done: false });
    expect(buffer.size).toBe(0);
    expect(taken).toEqual(['x']);
  });

  it('tells buffered (unseen) items from handed-out ones, and hands back only the unseen on drain', () => {
    const buffer = new DeliveryBuffer<string>();
    for (const item of ['a', 'b', 'c']) buffer.push(item);
    buffer.tryNext();
    expect([...buffer.buffered()]).toEqual(['b', 'c']);
    expect(buffer.drain()).toEqual(['b', 'c']);
    expect(buffer.size).toBe(0);
    expect(buffer.handedOut).toBe(1);
  });

  it('counts an item settled once, and ignores items never handed out', () => {
    const buffer = new DeliveryBuffer<string>();
    buffer.push('a');
    buffer.push('b');
    buffer.tryNext();
    expect(buffer.settled('b')).toBe(false);
    expect(buffer.settled('a')).toBe(true);
    expect(buffer.settled('a')).toBe(false);
    expect(buffer.handedOut).toBe(0);
  });

  it('resolves whenIdle once every handed-out item is settled', async () => {
    const buffer = new DeliveryBuffer<string>();
    buffer.push('a');
    buffer.push('b');
    buffer.tryNext();
    buffer.tryNext();
    let idle = false;
    void buffer.whenIdle().then(() => (idle = true));
    buffer.settled('a');
    await Promise.resolve();
    expect(idle).toBe(false);
    buffer.settled('b');
    await Promise.resolve();
    expect(idle).toBe(true);
  });

  it('takeUnsettled returns the handed-out items not yet settled and forgets them', () => {
    const buffer = new DeliveryBuffer<string>();
    for (const item of ['a', 'b', 'c']) buffer.push(item);
    buffer.tryNext();
    buffer.tryNext();
    buffer.settled('a');
    expect(buffer.takeUnsettled()).toEqual(['b']);
    expect(buffer.handedOut).toBe(0);
    expect(buffer.settled('b')).toBe(false);
  });

  it('keeps no record of handed-out items when tracking is off', () => {
    const buffer = new DeliveryBuffer<string>({ track: false });
    buffer.push('a');
    buffer.tryNext();
    expect(buffer.handedOut).toBe(0);
    expect(buffer.settled('a')).toBe(false);
  });

  it('ends iteration after the buffered items, and refuses pushes once ended', async () => {
    const buffer = new DeliveryBuffer<string>();
    buffer.push('a');
    buffer.end();
    expect(buffer.push('b')).toBe(false);
    await expect(buffer.next()).resolves.toEqual({ value: 'a', done: false });
    await expect(buffer.next()).resolves.toEqual({ value: undefined, done: true });
  });

  it('fails a waiting consumer, and later ones, with the error', async () => {
    const buffer = new DeliveryBuffer<string>();
    const waiting = buffer.next();
    buffer.fail(new Error('connection lost'));
    await expect(waiting).rejects.toThrow('connection lost');
    await expect(buffer.next()).rejects.toThrow('connection lost');
  });

  it('ends a waiting consumer when ended', async () => {
    const buffer = new DeliveryBuffer<string>();
    const waiting = buffer.next();
    buffer.end();
    await expect(waiting).resolves.toEqual({ value: undefined, done: true });
  });

  it('refuses a second concurrent iterator', async () => {
    const buffer = new DeliveryBuffer<string>();
    void buffer.next();
    await expect(buffer.next()).rejects.toThrow('one iterator');
  });

  it('tells its owner when the consumer breaks out of for-await', async () => {
    let returned = 0;
    const buffer = new DeliveryBuffer<string>({ onReturn: () => returned++ });
    buffer.push('a');
    buffer.push('b');
    for await (const item of buffer) {
      expect(item).toBe('a');
      break;
    }
    expect(returned).toBe(1);
    expect(buffer.ended).toBe(true);
  });

  describe('receive', () => {
    /** A receiver that takes while `open`, recording what it took (and what was handed out then). */
    function receiver(buffer: DeliveryBuffer<string>) {
      const state = { open: true, took: [] as string[], handedOutAtTake: [] as number[] };
      buffer.receive({
        ready: () => state.open,
        take: (item) => {
          state.took.push(item);
          state.handedOutAtTake.push(buffer.handedOut);
        },
      });
      return state;
    }

    it('hands an item to the receiver synchronously, as taken, while the consumer waits', async () => {
      const buffer = new DeliveryBuffer<string>();
      const state = receiver(buffer);
      let resolved = false;
      const waiting = buffer.next();
      void waiting.then(() => (resolved = true));
      expect(buffer.push('a')).toBe(true);
      expect(state.took).toEqual(['a']);
      expect(state.handedOutAtTake).toEqual([1]);
      expect(buffer.settled('a')).toBe(true);
      await Promise.resolve();
      // next() goes on waiting: it gets the next item the receiver does not take.
      expect(resolved).toBe(false);
      state.open = false;
      buffer.push('b');
      await expect(waiting).resolves.toEqual({ value: 'b', done: false });
      expect(state.took).toEqual(['a']);
    });

    it('gives the waiting consumer what the receiver is not ready for, and buffers what follows', async () => {
      const buffer = new DeliveryBuffer<string>();
      const state = receiver(buffer);
      const waiting = buffer.next();
      state.open = false;
      buffer.push('a');
      state.open = true;
      // 'a' is on its way to the consumer: taking 'b' now would hand it out before 'a'.
      buffer.push('b');
      await expect(waiting).resolves.toEqual({ value: 'a', done: false });
      expect(state.took).toEqual([]);
      expect(buffer.tryNext()).toBe('b');
    });

    it('offers nothing while the consumer is not waiting', () => {
      const buffer = new DeliveryBuffer<string>();
      const state = receiver(buffer);
      buffer.push('a');
      expect(state.took).toEqual([]);
      expect(buffer.size).toBe(1);
    });

    it('offers nothing once cleared, nor after end()', async () => {
      const buffer = new DeliveryBuffer<string>();
      const state = receiver(buffer);
      const waiting = buffer.next();
      buffer.receive(undefined);
      buffer.push('a');
      await expect(waiting).resolves.toEqual({ value: 'a', done: false });
      receiver(buffer);
      void buffer.next();
      buffer.end();
      expect(buffer.push('b')).toBe(false);
      expect(state.took).toEqual([]);
    });
  });
});
