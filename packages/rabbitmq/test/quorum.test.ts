import { expect, it } from 'vitest';
import { createEvent, type Delivery } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { RabbitMQSubscriber, RabbitMQTransport } from '../src/index.js';
import { AMQP_URL, messageCount, perTest, takeMessages } from './helpers.js';

/*
 * Quorum queues and their `x-delivery-limit` beside the bus's `maxAttempts`. Which wins: the
 * bus. A retry is a new message (through a delay queue), so the broker's delivery count starts
 * again for each attempt and the limit never cuts the bus's retries short; it counts only the
 * times a message was handed back unacked (consumers that closed or crashed holding it), and
 * when it is reached the broker dead-letters the message to the DLQ: it is never dropped.
 */

const { newExchange, closers } = perTest('qq');

it('lets the bus run all maxAttempts of a failing handler on a quorum queue whose delivery limit is 1', async () => {
  const exchange = newExchange();
  const bus = new RabbitMQSubscriber({
    url: AMQP_URL,
    exchange,
    queueType: 'quorum',
    deliveryLimit: 1,
    logger: { warn: () => undefined, error: () => undefined },
  });
  closers.push(() => bus.close({ timeoutMs: 2000 }));
  const attempts: number[] = [];
  await bus.subscribe(
    'quorum.fail',
    (_event, { attempt }) => {
      attempts.push(attempt);
      throw new Error('always');
    },
    { group: 'workers', retry: { maxAttempts: 5, minDelayMs: 10, maxDelayMs: 40 } },
  );
  await bus.publish('quorum.fail', {});
  await waitFor(() => bus.stats().deadLettered === 1, { message: 'dead-lettered by the bus' });
  expect(attempts).toEqual([1, 2, 3, 4, 5]);
  const [letter] = await takeMessages(`${exchange}.dlq`);
  // The bus's dead letter (with x-error), not the broker's (x-death).
  expect(letter?.properties.headers?.['x-error']).toBe('always');
  expect(letter?.properties.headers?.['x-death']).toBeUndefined();
});

it('counts hand-backs with x-delivery-count and dead-letters, never drops, a message past the delivery limit', async () => {
  const exchange = newExchange();
  const config = { url: AMQP_URL, exchange, queueType: 'quorum', deliveryLimit: 1 } as const;
  const event = createEvent('quorum.held', { n: 1 });
  const publisher = new RabbitMQTransport(config);
  closers.push(() => publisher.close({ timeoutMs: 2000 }));
  const attempts: number[] = [];
  // Each round a consumer takes the message and closes without settling it: handed back.
  for (let round = 0; round < 2; round++) {
    const holder = new RabbitMQTransport(config);
    const sub = await holder.subscribe('quorum.held', { group: 'workers' });
    if (round === 0) await publisher.publish(event);
    const taken = (await sub[Symbol.asyncIterator]().next()).value as Delivery;
    expect(taken.kind === 'event' && taken.event.id).toBe(event.id);
    attempts.push(taken.attempt);
    await holder.close({ timeoutMs: 100 });
  }
  expect(attempts).toEqual([1, 2]);
  // Handed back twice with a limit of 1: the broker dead-letters it to the DLQ.
  await waitFor(async () => (await messageCount(`${exchange}.dlq`)) === 1, {
    message: 'the message in the DLQ',
  });
  const [letter] = await takeMessages(`${exchange}.dlq`);
  expect(letter?.properties.messageId).toBe(event.id);
  expect(letter?.properties.headers?.['x-death']?.[0]?.reason).toBe('delivery_limit');
  expect(await messageCount(`${exchange}.group.workers:quorum.held`)).toBe(0);
});
