import { EventEmitter } from 'node:events';
import type { ConfirmChannel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { DIRECT_HIGH_WATER_BYTES, DirectPublish } from './direct-publish.js';

/**
 * A confirm channel and connection laid out as amqplib's; its `publish` writes one frame to
 * whatever stands as the channel's stream, as amqplib's does. The socket keeps what it is given.
 */
function amqplibLike(ch: number) {
  const written: Buffer[] = [];
  const socket = Object.assign(new EventEmitter(), {
    writable: true,
    writableLength: 0,
    write: (bytes: Buffer) => written.push(bytes) > 0,
  });
  const stream = { readableLength: 0, writableLength: 0 };
  const confirms: unknown[] = [];
  const connection = {
    stream: socket,
    channels: [] as ({ channel: unknown; buffer: unknown } | null)[],
    sentSinceLastCheck: false,
    frameMax: 4096,
  };
  const channel = {
    ch,
    connection,
    pushConfirmCallback: (callback: unknown) => confirms.push(callback),
    publish(_exchange: string, routingKey: string) {
      const slot = connection.channels[ch] as { buffer: { write(b: Buffer): boolean } };
      this.pushConfirmCallback(undefined);
      return slot.buffer.write(Buffer.from(`amqplib:${routingKey}`));
    },
  };
  connection.channels[ch] = { channel, buffer: stream };
  return {
    channel: channel as unknown as ConfirmChannel,
    connection,
    socket,
    stream,
    written,
    confirms,
  };
}

describe('DirectPublish', () => {
  it('writes what amqplib encodes to the socket, and counts each publish for amqplib', () => {
    const { channel, connection, written, confirms, stream } = amqplibLike(3);
    const direct = new DirectPublish(channel);
    // Options only amqplib encodes (a priority): its bytes, taken from the stand-in stream.
    expect(direct.publish('x', 'k', Buffer.from('body'), { priority: 1 })).toBe(true);
    expect(written).toEqual([Buffer.from('amqplib:k')]);
    // Encoded here: method, header and body frames of channel 3 in one write.
    expect(direct.publish('x', 'k', Buffer.from('body'), { persistent: true })).toBe(true);
    const frames = written[1] as Buffer;
    expect([frames[0], frames.readUInt16BE(1)]).toEqual([1, 3]);
    expect(frames.subarray(frames.length - 5)).toEqual(Buffer.from([0x62, 0x6f, 0x64, 0x79, 0xce]));
    expect(confirms).toHaveLength(2);
    expect(connection.sentSinceLastCheck).toBe(true);
    // The channel's own stream is back in its place.
    expect(connection.channels[3]?.buffer).toBe(stream);
  });

  it('reports the socket full from its high-water mark, and calls back on its drain until stopped', () => {
    const { channel, socket } = amqplibLike(1);
    const direct = new DirectPublish(channel);
    let drains = 0;
    const stop = direct.onDrain(() => drains++);
    socket.writableLength = DIRECT_HIGH_WATER_BYTES - 1;
    expect(direct.publish('', 'q', Buffer.from('a'), {})).toBe(true);
    socket.writableLength = DIRECT_HIGH_WATER_BYTES;
    expect(direct.publish('', 'q', Buffer.from('a'), {})).toBe(false);
    socket.emit('drain');
    stop();
    socket.emit('drain');
    expect(drains).toBe(1);
  });

  it('declines while frames wait in the channel stream, once it closes, or for another layout', () => {
    const waiting = amqplibLike(1);
    waiting.stream.readableLength = 1;
    expect(
      new DirectPublish(waiting.channel).publish('', 'q', Buffer.from('a'), {}),
    ).toBeUndefined();

    const closing = amqplibLike(1);
    Object.assign(closing.channel, { sendImmediately: () => undefined });
    expect(
      new DirectPublish(closing.channel).publish('', 'q', Buffer.from('a'), {}),
    ).toBeUndefined();

    // A socket whose buffer cannot be read: a full one would never be seen to drain.
    const unreadable = amqplibLike(1);
    Object.assign(unreadable.socket, { writableLength: undefined });
    expect(
      new DirectPublish(unreadable.channel).publish('', 'q', Buffer.from('a'), {}),
    ).toBeUndefined();

    const other = new DirectPublish({ publish: () => true } as unknown as ConfirmChannel);
    expect(other.publish('', 'q', Buffer.from('a'), {})).toBeUndefined();
    for (const { written, confirms } of [waiting, closing, unreadable]) {
      expect(written).toEqual([]);
      expect(confirms).toEqual([]);
    }
  });
});
