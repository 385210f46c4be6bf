import { describe, expect, it } from 'vitest';
import type { ConsumeMessage } from 'amqplib';
import { attemptOf, originOf } from './queue-consumer.js';

function message(
  headers: Record<string, unknown> | undefined,
  redelivered = false,
): ConsumeMessage {
  return {
    content: Buffer.from('{}'),
    fields: {
      deliveryTag: 1,
      redelivered,
      exchange: 'x',
      routingKey: 'q.delay.100',
      consumerTag: 'c',
    },
    properties: { headers } as ConsumeMessage['properties'],
  };
}

describe('attemptOf', () => {
  it('is 1 for a first delivery and counts a classic redelivery once', () => {
    expect(attemptOf(message(undefined))).toBe(1);
    expect(attemptOf(message({}, true))).toBe(2);
  });

  it('adds the attempt written on a retry to the quorum delivery count', () => {
    expect(attemptOf(message({ 'x-watchtower-attempt': 3 }))).toBe(3);
    expect(attemptOf(message({ 'x-watchtower-attempt': 3, 'x-delivery-count': 2 }, true))).toBe(5);
  });

  it('ignores an attempt header that is not a positive integer', () => {
    expect(attemptOf(message({ 'x-watchtower-attempt': 'x' }))).toBe(1);
    expect(attemptOf(message({ 'x-watchtower-attempt': 0 }))).toBe(1);
  });
});

describe('originOf', () => {
  it('keeps the routing key of the first publish through retries', () => {
    expect(originOf(message({ 'x-watchtower-routing-key': 'order.created' }))).toBe(
      'order.created',
    );
    expect(originOf(message(undefined))).toBe('q.delay.100');
  });
});
