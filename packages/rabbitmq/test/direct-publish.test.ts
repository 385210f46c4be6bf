/**
 * Publishes written past amqplib (src/direct-publish.ts) against the real broker, with the
 * amqplib this package installs: what a consumer receives is what amqplib's own publish of the
 * same arguments gives, byte for byte in content and equal in every property, and the broker's
 * confirms line up with amqplib's count of them.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '@watchtower/core/testing';
import type { ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { DirectPublish } from '../src/direct-publish.js';
import { rawConnection, uniqueName } from './helpers.js';

/** Publish options as the transport sets them, and others only amqplib encodes. */
const CASES: {
  readonly name: string;
  readonly options: Options.Publish;
  readonly size?: number;
}[] = [
  { name: 'no options', options: {} },
  {
    name: 'as the transport publishes an event',
    options: {
      persistent: true,
      mandatory: false,
      messageId: '0b8f4a0e-6c0e-4f7a-9d55-5f2a3c1e9b21',
      contentType: 'application/json',
    },
  },
  {
    name: 'headers of strings, non-ASCII included, and an expiration',
    options: {
      persistent: false,
      headers: { traceparent: '00-abc-def-01', 'x-wörd': 'grüße ✓', empty: '' },
      expiration: 60_000,
      contentType: 'application/json',
    },
  },
  {
    name: 'headers with numbers and nulls (encoded by amqplib)',
    options: { headers: { 'x-attempt': 3, 'x-big': 2 ** 40, 'x-none': null, s: 'v' } },
  },
  {
    name: 'other properties (encoded by amqplib)',
    options: {
      priority: 3,
      correlationId: 'c-1',
      replyTo: 'r',
      timestamp: 1_700_000_000,
      type: 't',
      appId: 'a',
      contentEncoding: 'gzip',
    },
  },
  { name: 'deliveryMode given as a number', options: { deliveryMode: 2 } },
  { name: 'an empty body', options: { persistent: true }, size: 0 },
  // Longer than the connection's frameMax (128 KiB from RabbitMQ): several body frames.
  { name: 'a body of several frames', options: { persistent: true }, size: 300_000 },
];

function body(name: string, size: number | undefined): Buffer {
  if (size === undefined) return Buffer.from(JSON.stringify({ name, text: 'é ✓ 𝄞' }), 'utf8');
  return Buffer.alloc(size, name);
}

/** What a consumer can tell about a message (the delivery tag and redelivery aside). */
function seen(message: ConsumeMessage): unknown {
  const { deliveryTag: _tag, consumerTag: _consumer, ...fields } = message.fields;
  return { fields, properties: message.properties, content: message.content };
}

describe('publishes written straight to the socket, on the real broker', () => {
  it('delivers what amqplib publishes for the same arguments, confirmed as amqplib counts', async () => {
    const connection = await rawConnection();
    try {
      const channel: ConfirmChannel = await connection.createConfirmChannel();
      const exchange = uniqueName('direct-publish');
      const queue = `${exchange}.q`;
      await channel.assertExchange(exchange, 'topic', { autoDelete: true });
      await channel.assertQueue(queue, { exclusive: true });
      await channel.bindQueue(queue, exchange, '#');
      const acks: number[] = [];
      channel.on('ack', (fields: { deliveryTag: number; multiple: boolean }) => {
        acks.push(fields.deliveryTag);
      });
      const direct = new DirectPublish(channel);
      let sent = 0;
      for (const { name, options, size } of CASES) {
        // amqplib's own first, then the same written here (its stream is empty by then).
        channel.publish(exchange, `case.${sent}`, body(name, size), options);
        await waitFor(() => acks.length > 0 && Math.max(...acks) >= sent + 1);
        expect(direct.publish(exchange, `case.${sent}`, body(name, size), options)).toBe(true);
        sent += 2;
        await waitFor(() => Math.max(...acks) >= sent);
      }
      // amqplib's count of unconfirmed publishes agrees: nothing is left waiting.
      await channel.waitForConfirms();

      const received: ConsumeMessage[] = [];
      await channel.consume(queue, (message) => {
        if (message !== null) received.push(message);
      });
      await waitFor(() => received.length === sent);
      for (let i = 0; i < sent; i += 2) {
        const viaAmqplib = received[i] as ConsumeMessage;
        const direct = received[i + 1] as ConsumeMessage;
        expect(seen(direct), CASES[i / 2]?.name).toEqual(seen(viaAmqplib));
      }
    } finally {
      await connection.close();
    }
  });

  it('routes each publish by its own exchange, key and mandatory flag, one after another', async () => {
    const connection = await rawConnection();
    try {
      const channel = await connection.createConfirmChannel();
      const exchange = uniqueName('direct-publish-keys');
      const queue = `${exchange}.q`;
      await channel.assertExchange(exchange, 'direct', { autoDelete: true });
      await channel.assertQueue(queue, { exclusive: true });
      await channel.bindQueue(queue, exchange, 'a');
      await channel.bindQueue(queue, exchange, 'b');
      const returned: string[] = [];
      channel.on('return', (message: ConsumeMessage) => returned.push(message.content.toString()));
      const direct = new DirectPublish(channel);
      const sends: [string, string, boolean][] = [
        [exchange, 'a', false],
        [exchange, 'a', false],
        [exchange, 'nowhere', true],
        [exchange, 'nowhere', false],
        [exchange, 'b', false],
        ['', queue, false],
        [exchange, 'a', true],
      ];
      sends.forEach(([to, key, mandatory], n) => {
        expect(direct.publish(to, key, Buffer.from(String(n)), { mandatory })).toBe(true);
      });
      await channel.waitForConfirms();
      const received: string[] = [];
      await channel.consume(queue, (message) => {
        if (message !== null)
          received.push(`${message.content.toString()}:${message.fields.routingKey}`);
      });
      await waitFor(() => received.length === 5);
      expect(received).toEqual(['0:a', '1:a', '4:b', `5:${queue}`, '6:a']);
      // Only the unroutable publish that asked for it came back.
      expect(returned).toEqual(['2']);
    } finally {
      await connection.close();
    }
  });

  it('declines while frames of the channel wait in amqplib, so none is overtaken', async () => {
    const connection = await rawConnection();
    try {
      const channel = await connection.createConfirmChannel();
      const queue = uniqueName('direct-publish-order');
      await channel.assertQueue(queue, { exclusive: true });
      const direct = new DirectPublish(channel);
      // amqplib's multiplexer writes a moment later (at a `setImmediate`): until then the
      // frame waits in the channel's stream, and a publish here would overtake it.
      channel.sendToQueue(queue, Buffer.from('first'));
      expect(direct.publish('', queue, Buffer.from('second'), {})).toBeUndefined();
      // Once amqplib has written it, the next publish goes (a declined one sent nothing).
      await waitFor(() => direct.publish('', queue, Buffer.from('second'), {}) === true);
      await channel.waitForConfirms();
      const contents: string[] = [];
      await channel.consume(queue, (message) => {
        if (message !== null) contents.push(message.content.toString());
      });
      await waitFor(() => contents.length === 2);
      expect(contents).toEqual(['first', 'second']);
    } finally {
      await connection.close();
    }
  });

  it('throws what amqplib throws for bad arguments, and declines once the channel closes', async () => {
    const connection = await rawConnection();
    try {
      const channel = await connection.createConfirmChannel();
      const direct = new DirectPublish(channel);
      expect(() =>
        direct.publish('', 'q', Buffer.from('x'), { messageId: 'x'.repeat(300) }),
      ).toThrow(/messageId/);
      expect(() => direct.publish('', 'q', 'text' as unknown as Buffer, {})).toThrow(/buffer/i);
      // Nothing was sent, and amqplib counts nothing unconfirmed.
      await channel.waitForConfirms();
      await channel.close();
      expect(direct.publish('', 'q', Buffer.from('x'), {})).toBeUndefined();
    } finally {
      await connection.close();
    }
  });
});
