/**
 * A consumer channel's acks and nacks written as frames straight to the connection's socket,
 * past amqplib's per-channel write stream and its multiplexer.
 *
 * Why: amqplib hands every frame to a stream of its channel, which its multiplexer reads in a
 * `setImmediate` callback and writes to the socket: for a lone ack (every delivery at
 * prefetch 1) that is an encoding, a stream write, a `readable` event, an immediate and a
 * stream read per frame, several µs of CPU per event, before the one system call. amqplib
 * writes its own heartbeats to the socket the same way (`sendBytes`), so a frame written here
 * lands between whole frames of the multiplexer; frames of different channels may interleave.
 *
 * Order: every ack and nack of the channel goes through here once it is used, so they reach
 * the broker in the order they were made; other frames of the channel (qos, consume, cancel,
 * close) are methods amqplib sends, and none of them must come before an ack made earlier
 * (a cancel or a close after an ack is what the consumer does anyway).
 *
 * It writes only while amqplib has the channel and the connection open (neither closing: then
 * amqplib itself refuses to send), and reports false otherwise, or when the amqplib in use
 * does not look as this expects: the caller then sends through amqplib as before.
 */
import type { Channel } from 'amqplib';
import { channelInternals, isOpen, type ChannelInternals } from './amqplib-internals.js';

/** Frame type METHOD, class basic (60), methods ack (80) and nack (120); frame end. */
const FRAME_METHOD = 1;
const BASIC_ACK = (60 << 16) | 80;
const BASIC_NACK = (60 << 16) | 120;
const FRAME_END = 0xce;
/** Method payload: class, method, delivery tag (64 bits), one octet of flags. */
const PAYLOAD_SIZE = 4 + 8 + 1;
const FRAME_SIZE = 7 + PAYLOAD_SIZE + 1;
const TWO_TO_32 = 2 ** 32;

export class DirectAcks {
  readonly #channel: Channel;
  readonly #internals: ChannelInternals | undefined;

  constructor(channel: Channel) {
    this.#channel = channel;
    this.#internals = channelInternals(channel);
  }

  /** Writes `basic.ack` of `tag`; false when it cannot be written here. */
  ack(tag: number, multiple: boolean): boolean {
    return this.#write(BASIC_ACK, tag, multiple ? 1 : 0);
  }

  /** Writes `basic.nack` of `tag` alone; false when it cannot be written here. */
  nack(tag: number, requeue: boolean): boolean {
    return this.#write(BASIC_NACK, tag, requeue ? 2 : 0);
  }

  #write(method: number, tag: number, flags: number): boolean {
    const internals = this.#internals;
    if (internals === undefined || !isOpen(this.#channel, internals)) return false;
    const { connection, ch } = internals;
    const frame = Buffer.allocUnsafe(FRAME_SIZE);
    frame[0] = FRAME_METHOD;
    frame.writeUInt16BE(ch, 1);
    frame.writeUInt32BE(PAYLOAD_SIZE, 3);
    frame.writeUInt32BE(method, 7);
    frame.writeUInt32BE(Math.floor(tag / TWO_TO_32), 11);
    frame.writeUInt32BE(tag >>> 0, 15);
    frame[19] = flags;
    frame[20] = FRAME_END;
    connection.sentSinceLastCheck = true;
    connection.stream.write(frame);
    return true;
  }
}
