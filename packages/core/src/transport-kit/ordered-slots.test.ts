import { describe, expect, it } from 'vitest';
import { OrderedSlots } from './ordered-slots.js';

interface Entry {
  readonly tag: number;
}

const entry = (tag: number): Entry => ({ tag });
const tagAtMost = (item: Entry, tag: number): boolean => item.tag <= tag;
const tagIs = (item: Entry, tag: number): boolean => item.tag === tag;
const tags = (slots: OrderedSlots<Entry>): number[] => [...slots.values()].map((e) => e.tag);

describe('OrderedSlots', () => {
  it('holds entries in the order added and removes them in any order', () => {
    const slots = new OrderedSlots<Entry>();
    const entries = [1, 2, 3, 4].map(entry);
    for (const e of entries) slots.add(e);
    expect(slots.size).toBe(4);
    expect(slots.delete(entries[2] as Entry)).toBe(true);
    expect(slots.delete(entries[0] as Entry)).toBe(true);
    expect(tags(slots)).toEqual([2, 4]);
    expect(slots.size).toBe(2);
  });

  it('answers false for an entry removed before or never added', () => {
    const slots = new OrderedSlots<Entry>();
    const a = entry(1);
    slots.add(a);
    expect(slots.delete(a)).toBe(true);
    expect(slots.delete(a)).toBe(false);
    expect(slots.delete(entry(1))).toBe(false);
    expect(slots.size).toBe(0);
  });

  it('removes the oldest entry that matches a key', () => {
    const slots = new OrderedSlots<Entry>();
    for (const tag of [5, 6, 7]) slots.add(entry(tag));
    expect(slots.deleteFirst(tagIs, 6)?.tag).toBe(6);
    expect(slots.deleteFirst(tagIs, 6)).toBeUndefined();
    expect(tags(slots)).toEqual([5, 7]);
  });

  it('takes from the front while entries match, past the holes of earlier removals', () => {
    const slots = new OrderedSlots<Entry>();
    const entries = [1, 2, 3, 4, 5].map(entry);
    for (const e of entries) slots.add(e);
    slots.delete(entries[1] as Entry);
    expect(slots.takeWhile(tagAtMost, 3).map((e) => e.tag)).toEqual([1, 3]);
    expect(slots.takeWhile(tagAtMost, 3)).toEqual([]);
    expect(tags(slots)).toEqual([4, 5]);
    expect(slots.size).toBe(2);
  });

  it('takes every entry, oldest first, and is empty after', () => {
    const slots = new OrderedSlots<Entry>();
    for (const tag of [1, 2, 3]) slots.add(entry(tag));
    slots.deleteFirst(tagIs, 2);
    expect(slots.takeAll().map((e) => e.tag)).toEqual([1, 3]);
    expect(slots.size).toBe(0);
    expect(tags(slots)).toEqual([]);
    slots.add(entry(9));
    expect(tags(slots)).toEqual([9]);
  });

  it('keeps an entry that stays while a hundred thousand others come and go', () => {
    const slots = new OrderedSlots<Entry>();
    const stuck = entry(0);
    slots.add(stuck);
    const window: Entry[] = [];
    for (let tag = 1; tag <= 100_000; tag++) {
      const e = entry(tag);
      slots.add(e);
      window.push(e);
      // Out of order within a window of eight, like handlers of different lengths.
      if (window.length === 8) {
        for (const i of [3, 0, 7, 1, 6, 2, 5, 4])
          expect(slots.delete(window[i] as Entry)).toBe(true);
        window.length = 0;
      }
    }
    expect(slots.size).toBe(1);
    expect(tags(slots)).toEqual([0]);
    expect(slots.delete(stuck)).toBe(true);
    expect(slots.size).toBe(0);
  });

  it('agrees with an ordered list under random adds and removals', () => {
    let seed = 42;
    const random = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const slots = new OrderedSlots<Entry>();
    let model: Entry[] = [];
    let next = 0;
    for (let step = 0; step < 20_000; step++) {
      const roll = random();
      if (roll < 0.5 || model.length === 0) {
        const e = entry(next++);
        slots.add(e);
        model.push(e);
      } else if (roll < 0.85) {
        const victim = model[Math.floor(random() * model.length)] as Entry;
        expect(slots.delete(victim)).toBe(true);
        model = model.filter((e) => e !== victim);
      } else {
        const upTo = (model[Math.floor(random() * model.length)] as Entry).tag;
        const expected = [];
        while (model.length > 0 && (model[0] as Entry).tag <= upTo) expected.push(model.shift());
        expect(slots.takeWhile(tagAtMost, upTo)).toEqual(expected);
      }
      expect(slots.size).toBe(model.length);
      if (step % 97 === 0) expect([...slots.values()]).toEqual(model);
    }
    expect(slots.takeAll()).toEqual(model);
  });
});
