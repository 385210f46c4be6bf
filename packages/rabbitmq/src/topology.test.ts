import { describe, expect, it } from 'vitest';
import { configErrorField } from '@watchtower/core/testing';
import { bindingFor, delayStepMs, groupQueueName } from './topology.js';

describe('delayStepMs', () => {
  it('rounds a delay up to the next R10 step, never down and at most 26% up', () => {
    for (const ms of [1, 2, 7, 10, 11, 99, 100, 101, 333, 1000, 1001, 4321, 59_999, 123_456]) {
      const step = delayStepMs(ms);
      expect(step).toBeGreaterThanOrEqual(ms);
      expect(step).toBeLessThanOrEqual(Math.ceil(ms * 1.26) + 1);
    }
    expect([100, 125, 160, 200, 250].map(delayStepMs)).toEqual([100, 125, 160, 200, 250]);
    expect(delayStepMs(0)).toBe(1);
    // Within the 32-bit bound of x-message-ttl and x-expires, expiry included.
    expect(delayStepMs(2 ** 40) + 60_000).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(delayStepMs(2 ** 31 - 70_000) + 60_000).toBeLessThanOrEqual(2 ** 31 - 1);
  });

  it('gives few distinct queues for the delays of exponential backoff', () => {
    const steps = new Set<number>();
    for (let ms = 10; ms <= 60_000; ms = Math.ceil(ms * 1.07)) steps.add(delayStepMs(ms));
    expect(steps.size).toBeLessThanOrEqual(40);
  });
});

describe('bindingFor', () => {
  it('binds a topic exchange with > as # and filters only what # matches beyond >', () => {
    expect(bindingFor('a.*.c', 'topic')).toMatchObject({ routingKey: 'a.*.c', filter: false });
    const tail = bindingFor('a.>', 'topic');
    expect(tail).toMatchObject({ routingKey: 'a.#', filter: true });
    expect(tail.pattern.matches('a')).toBe(false);
  });

  it('binds headers by the type header for a literal, everything for a wildcard', () => {
    expect(bindingFor('a.b', 'headers')).toMatchObject({
      args: { 'x-match': 'all', 'x-watchtower-type': 'a.b' },
      filter: false,
    });
    expect(bindingFor('a.*', 'headers')).toMatchObject({
      args: { 'x-match': 'all' },
      filter: true,
    });
    expect(bindingFor('a.*', 'fanout')).toMatchObject({ routingKey: '', filter: true });
  });

  it('refuses a wildcard on a direct exchange with CONFIG', () => {
    expect(configErrorField(() => bindingFor('a.*', 'direct'))).toBe('pattern');
    expect(bindingFor('a.b', 'direct')).toMatchObject({ routingKey: 'a.b', filter: false });
  });
});

describe('groupQueueName', () => {
  it('gives different groups and patterns different queues, dots in group names included', () => {
    expect(groupQueueName('ex', 'a', 'b.c')).not.toBe(groupQueueName('ex', 'a.b', 'c'));
    expect(groupQueueName('ex', 'billing', 'order.*')).toBe('ex.group.billing:order.*');
  });
});
