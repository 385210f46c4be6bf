/**
 * The acks written past amqplib (src/direct-acks.ts) against the real broker, with the amqplib
 * this package installs: they are used (not declined for an unexpected layout), and the broker
 * takes them as amqplib's own.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '@watchtower/core/testing';
import type { ConsumeMessage } from 'amqplib';
import { DirectAcks } from '../src/direct-acks.js';
import { rawConnection, uniqueName } from './helpers.js';

describe('acks written straight to the socket, on the real broker', () => {
  it('settles deliveries by ack, multiple ack and nack as amqplib would, and declines after close', async () => {
    const connection = await rawConnection();
    try {
      const channel = await connection.createChannel();
      const queue = uniqueName('direct-acks');
      await channel.assertQueue(queue, { exclusive: true });
      for (let n = 0; n < 5; n++) channel.sendToQueue(queue, Buffer.from(String(n)));
      const received: ConsumeMessage[] = [];
      await channel.consume(queue, (message) => {
        if (message !== null) received.push(message);
      });
      await waitFor(() => received.length === 5);
      const direct = new DirectAcks(channel);
      const tag = (i: number): number => (received[i] as ConsumeMessage).fields.deliveryTag;
      // 0 alone; 1 and 2 by one multiple ack; 3 back to the queue; 4 dropped.
      expect(direct.ack(tag(0), false)).toBe(true);
      expect(direct.ack(tag(2), true)).toBe(true);
      expect(direct.nack(tag(3), true)).toBe(true);
      expect(direct.nack(tag(4), false)).toBe(true);
      // The requeued one comes again, redelivered; nothing else does.
      await waitFor(() => received.length === 6);
      const again = received[5] as ConsumeMessage;
      expect(again.content.toString()).toBe('3');
      expect(again.fields.redelivered).toBe(true);
      expect(direct.ack(again.fields.deliveryTag, false)).toBe(true);
      // A round trip on the channel: it is still open, so no frame above was refused.
      expect((await channel.checkQueue(queue)).messageCount).toBe(0);
      await channel.close();
      expect(direct.ack(again.fields.deliveryTag, false)).toBe(false);
      expect(received).toHaveLength(6);
    } finally {
      await connection.close();
    }
  });
});
