import type { Channel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { DirectAcks } from './direct-acks.js';

/**
 * A method frame of class basic (60) as AMQP 0-9-1 lays it out: type 1, channel, payload size,
 * class, method, the 64-bit delivery tag, one octet of flags, frame end 0xCE.
 */
function basicFrame(channel: number, method: number, tag: number, flags: number): Buffer {
  const frame = Buffer.alloc(21);
  frame[0] = 1;
  frame.writeUInt16BE(channel, 1);
  frame.writeUInt32BE(13, 3);
  frame.writeUInt16BE(60, 7);
  frame.writeUInt16BE(method, 9);
  frame.writeBigUInt64BE(BigInt(tag), 11);
  frame[19] = flags;
  frame[20] = 0xce;
  return frame;
}
const ACK = 80;
const NACK = 120;

/** A channel and connection laid out as amqplib's, writing to `written`. */
function amqplibLike(ch: number) {
  const written: Buffer[] = [];
  const connection = {
    stream: { writable: true, write: (bytes: Buffer) => written.push(bytes) > 0 },
    channels: [] as ({ channel: unknown } | null)[],
    sentSinceLastCheck: false,
  };
  const channel = { ch, connection } as unknown as Channel & { ch: number };
  connection.channels[ch] = { channel };
  return { channel, connection, written };
}

describe('DirectAcks', () => {
  it('writes basic.ack and basic.nack frames as AMQP 0-9-1 lays them out', () => {
    const { channel, connection, written } = amqplibLike(7);
    const direct = new DirectAcks(channel);
    const tag = 2 ** 40 + 12345;
    expect(direct.ack(tag, true)).toBe(true);
    expect(direct.ack(3, false)).toBe(true);
    expect(direct.nack(9, true)).toBe(true);
    expect(direct.nack(10, false)).toBe(true);
    expect(written).toEqual([
      basicFrame(7, ACK, tag, 1), // multiple
      basicFrame(7, ACK, 3, 0),
      basicFrame(7, NACK, 9, 2), // requeue
      basicFrame(7, NACK, 10, 0),
    ]);
    expect(connection.sentSinceLastCheck).toBe(true);
  });

  it('writes nothing once amqplib closes the channel or the connection, or released it', () => {
    const closing = amqplibLike(1);
    // amqplib's invalidateSend: own send methods that throw.
    Object.assign(closing.channel, { sendImmediately: () => undefined });
    expect(new DirectAcks(closing.channel).ack(1, false)).toBe(false);

    const connectionClosing = amqplibLike(1);
    Object.assign(connectionClosing.connection, { sendMethod: () => undefined });
    expect(new DirectAcks(connectionClosing.channel).ack(1, false)).toBe(false);

    const released = amqplibLike(1);
    released.connection.channels[1] = null;
    expect(new DirectAcks(released.channel).nack(1, true)).toBe(false);

    for (const { written } of [closing, connectionClosing, released]) expect(written).toEqual([]);
  });

  it('declines a channel that is not laid out as amqplib lays it out', () => {
    const direct = new DirectAcks({ ack: () => undefined } as unknown as Channel);
    expect(direct.ack(1, false)).toBe(false);
  });
});
