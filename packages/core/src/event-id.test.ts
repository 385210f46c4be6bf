import { describe, expect, it } from 'vitest';
import { randomEventId } from './event-id.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('randomEventId', () => {
  it('gives lower-case version 4 UUIDs, across many batches', () => {
    for (let i = 0; i < 1000; i++) expect(randomEventId()).toMatch(UUID_V4);
  });

  it('never repeats an id in 200 000', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200_000; i++) seen.add(randomEventId());
    expect(seen.size).toBe(200_000);
  });

  it('draws every random digit: each position takes all its values', () => {
    const values = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 5000; i++) {
      const id = randomEventId();
      for (let at = 0; at < 36; at++) values[at]?.add(id.charAt(at));
    }
    const sizes = values.map((set) => set.size);
    // Dashes and the version digit are fixed; the variant digit is one of 8, 9, a, b.
    const expected = Array.from({ length: 36 }, (_, at) =>
      [8, 13, 18, 23].includes(at) || at === 14 ? 1 : at === 19 ? 4 : 16,
    );
    expect(sizes).toEqual(expected);
  });
});
