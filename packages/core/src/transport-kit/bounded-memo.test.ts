import { describe, expect, it } from 'vitest';
import { BoundedMemo } from './bounded-memo.js';

describe('BoundedMemo', () => {
  it('derives each key once while it is remembered', () => {
    const calls: string[] = [];
    const memo = new BoundedMemo((key) => {
      calls.push(key);
      return `p.${key}`;
    });
    expect(memo.get('a.b')).toBe('p.a.b');
    expect(memo.get('a.b')).toBe('p.a.b');
    expect(memo.get('c')).toBe('p.c');
    expect(calls).toEqual(['a.b', 'c']);
  });

  it('starts over at its limit and still answers right', () => {
    const calls: string[] = [];
    const memo = new BoundedMemo((key) => {
      calls.push(key);
      return key.toUpperCase();
    }, 2);
    for (const key of ['a', 'b', 'c', 'a', 'c']) expect(memo.get(key)).toBe(key.toUpperCase());
    // 'c' found it full and cleared it; 'a' came back; 'c' was still there.
    expect(calls).toEqual(['a', 'b', 'c', 'a']);
  });
});
