import { describe, expect, it } from 'vitest';
import { TurnBatcher } from './turn-batcher.js';

describe('TurnBatcher', () => {
  it('sends what is added in one run of promise work as one batch', async () => {
    const batches: number[][] = [];
    const batcher = new TurnBatcher<number>((items) => batches.push(items), 'tick');
    batcher.add(1);
    await Promise.resolve();
    batcher.add(2);
    await Promise.resolve().then(() => undefined);
    batcher.add(3);
    expect(batches).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(batches).toEqual([[1, 2, 3]]);
  });

  it('sends before the next I/O turn', async () => {
    const batches: number[][] = [];
    const batcher = new TurnBatcher<number>((items) => batches.push(items), 'tick');
    batcher.add(1);
    const seenAtImmediate = await new Promise<number>((resolve) =>
      setImmediate(() => resolve(batches.length)),
    );
    expect(seenAtImmediate).toBe(1);
  });

  it("with 'immediate', sends after this turn's I/O callbacks, not before", async () => {
    const order: string[] = [];
    const batcher = new TurnBatcher<number>(
      (items) => order.push(`batch ${items.join(',')}`),
      'immediate',
    );
    batcher.add(1);
    process.nextTick(() => order.push('tick'));
    await Promise.resolve();
    batcher.add(2);
    expect(order).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(order).toEqual(['tick', 'batch 1,2']);
  });

  it('flush() sends at once and the scheduled flush then finds nothing', async () => {
    const batches: number[][] = [];
    const batcher = new TurnBatcher<number>((items) => batches.push(items), 'tick');
    batcher.add(1);
    batcher.add(2);
    expect(batcher.size).toBe(2);
    batcher.flush();
    expect(batches).toEqual([[1, 2]]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(batches).toEqual([[1, 2]]);
    batcher.add(3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(batches).toEqual([[1, 2], [3]]);
  });
});
