/**
 * A confirm channel's publishes written straight to the connection's socket, past amqplib's
 * per-channel write stream and its multiplexer.
 *
 * Why: amqplib encodes a publish into four buffers (method, properties, body, then all three
 * copied into one) and hands it to a stream of its channel, which its multiplexer reads in a
 * `setImmediate` callback and writes to the socket: a stream write, a `readable` event, an
 * immediate and a stream read per publish, before the one system call. Measured on a windowed
 * confirmed publish, that is several µs of CPU per event more than the bytes need.
 *
 * How: a publish whose options are the ones the transport sets (content type, persistence,
 * message id, expiration, `mandatory`, headers of strings) and whose body fits one frame is
 * encoded here, as amqplib encodes it (the same frames, byte for byte), into one buffer. Any
 * other publish is encoded by amqplib's own `publish`, with a stand-in for the channel's
 * stream for the length of that synchronous call, so its checks and errors stay amqplib's.
 * Either way the frames of a publish go to the socket at once and whole, so they land between
 * whole frames of the multiplexer, and amqplib's count of unconfirmed publishes (which its
 * `ack` and `nack` events are read against) takes each one, as its `publish` would.
 *
 * Order: the broker confirms in the order it receives, so a publish must never overtake one
 * handed to amqplib before it. A publish goes past amqplib only while the channel's stream is
 * empty; otherwise `publish` declines and the caller publishes through amqplib, behind what
 * waits there. Backpressure is the socket's: see {@link DIRECT_HIGH_WATER_BYTES}.
 *
 * It must never write on a channel or connection that amqplib is closing (amqplib itself
 * refuses to send then): `publish` declines.
 */
import { Buffer } from 'node:buffer';
import type { ConfirmChannel, Options } from 'amqplib';
import { channelInternals, isOpen, type ChannelInternals } from './amqplib-internals.js';

/**
 * Bytes waiting in the socket's buffer from which `publish` reports it full (false), so the
 * publisher waits for its `drain`. Above the socket's own 16 KiB: a corked turn of a publish
 * window holds more than that, and is written a moment later in one system call.
 */
export const DIRECT_HIGH_WATER_BYTES = 1024 * 1024;

const FRAME_METHOD = 1;
const FRAME_HEADER = 2;
const FRAME_BODY = 3;
const FRAME_END = 0xce;
/** Type, channel, payload size; then the frame-end octet. */
const FRAME_OVERHEAD = 8;
/** basic.publish: class 60, method 40. */
const BASIC_PUBLISH = (60 << 16) | 40;
/** The content header's class (basic, 60) and weight (0). */
const BASIC_CLASS_AND_WEIGHT = 60 << 16;
const TWO_TO_32 = 2 ** 32;

const FLAG_CONTENT_TYPE = 0x8000;
const FLAG_HEADERS = 0x2000;
const FLAG_DELIVERY_MODE = 0x1000;
const FLAG_EXPIRATION = 0x0100;
const FLAG_MESSAGE_ID = 0x0080;

/** Stands in for a channel's write stream during one amqplib `publish`: keeps what it writes. */
class Capture {
  readonly frames: Buffer[] = [];
  write(frame: Buffer): boolean {
    this.frames.push(frame);
    return true;
  }
}

/** The parts of amqplib's confirm channel and connection a publish written here uses. */
interface PublishInternals extends ChannelInternals {
  pushConfirmCallback(callback: undefined): void;
  readonly connection: ChannelInternals['connection'] & { readonly frameMax: number };
}

export class DirectPublish {
  readonly #channel: ConfirmChannel;
  readonly #internals: ChannelInternals | undefined;
  /** Set when publishes can also be encoded here, not only by amqplib. */
  readonly #encodable: PublishInternals | undefined;
  /** The method frame of the last publish encoded here, and what it was written for. */
  #method: { exchange: string; routingKey: string; mandatory: boolean; frame: Buffer } | undefined;

  constructor(channel: ConfirmChannel) {
    this.#channel = channel;
    const internals = channelInternals(channel);
    // Backpressure is read from the socket's buffer and ends on its `drain`: without those,
    // a full socket would stop publishing for good, so nothing is written here.
    const socket = internals?.connection.stream;
    this.#internals =
      typeof socket?.writableLength === 'number' && typeof socket.on === 'function'
        ? internals
        : undefined;
    const candidate = this.#internals as Partial<PublishInternals> | undefined;
    this.#encodable =
      typeof candidate?.pushConfirmCallback === 'function' &&
      typeof candidate.connection?.frameMax === 'number'
        ? (candidate as PublishInternals)
        : undefined;
  }

  /**
   * Publishes as `channel.publish` does, with the frames written to the socket here. Returns
   * false once the socket holds {@link DIRECT_HIGH_WATER_BYTES} (wait for {@link onDrain}),
   * else true; or undefined when it cannot be written here (the channel or the connection
   * closing, frames of the channel waiting in amqplib, an amqplib laid out otherwise): then
   * publish through amqplib. Throws what amqplib's `publish` throws for bad arguments.
   */
  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): boolean | undefined {
    const internals = this.#internals;
    if (internals === undefined || !isOpen(this.#channel, internals)) return undefined;
    const { connection, ch } = internals;
    const slot = connection.channels[ch];
    const stream = slot?.buffer;
    if (stream === undefined || stream.readableLength !== 0 || stream.writableLength !== 0) {
      return undefined;
    }
    const bytes =
      this.#encode(exchange, routingKey, content, options) ??
      this.#captured(slot as { buffer: unknown }, exchange, routingKey, content, options);
    connection.sentSinceLastCheck = true;
    const socket = connection.stream;
    socket.write(bytes);
    return socket.writableLength < DIRECT_HIGH_WATER_BYTES;
  }

  /** Calls `listener` on each `drain` of the socket; returns a function that stops that. */
  onDrain(listener: () => void): () => void {
    const socket = this.#internals?.connection.stream;
    if (socket === undefined) return () => undefined;
    socket.on('drain', listener);
    return () => socket.off('drain', listener);
  }

  /** The frames amqplib's `publish` writes, taken from a stand-in for the channel's stream. */
  #captured(
    slot: { buffer: unknown },
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): Buffer {
    const stream = slot.buffer;
    const capture = new Capture();
    slot.buffer = capture;
    try {
      this.#channel.publish(exchange, routingKey, content, options);
    } finally {
      slot.buffer = stream;
    }
    const { frames } = capture;
    return frames.length === 1 ? (frames[0] as Buffer) : Buffer.concat(frames);
  }

  /**
   * The `basic.publish` frame for `exchange` and `routingKey`: kept from the last publish when
   * it went to the same (a stream of one type, as a publisher mostly sends), else written
   * anew; undefined when a name is longer than a short string, for amqplib to refuse.
   */
  #methodFrame(
    ch: number,
    exchange: string,
    routingKey: string,
    mandatory: boolean,
  ): Buffer | undefined {
    const last = this.#method;
    if (
      last !== undefined &&
      last.routingKey === routingKey &&
      last.exchange === exchange &&
      last.mandatory === mandatory
    ) {
      return last.frame;
    }
    const exchangeLength = shortLength(exchange);
    const routingKeyLength = shortLength(routingKey);
    if (exchangeLength < 0 || routingKeyLength < 0) return undefined;
    const payload = 4 + 2 + 1 + exchangeLength + 1 + routingKeyLength + 1;
    // Its own memory, not a slice of Node's pool: it is kept.
    const frame = Buffer.alloc(payload + FRAME_OVERHEAD);
    // basic.publish: reserved short 0, exchange, routing key, bits (mandatory; immediate off).
    let at = frameStart(frame, 0, FRAME_METHOD, ch, payload);
    at = u32(frame, at, BASIC_PUBLISH);
    at = u16(frame, at, 0);
    at = writeShort(frame, at, exchange, exchangeLength);
    at = writeShort(frame, at, routingKey, routingKeyLength);
    frame[at++] = mandatory ? 1 : 0;
    frame[at] = FRAME_END;
    this.#method = { exchange, routingKey, mandatory, frame };
    return frame;
  }

  /**
   * The frames of a publish with only the options this encodes, as amqplib lays them out
   * (method, content header with a headers table always present, one body frame); undefined
   * for any other publish, or a body longer than a frame, for amqplib to encode.
   */
  #encode(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): Buffer | undefined {
    const internals = this.#encodable;
    if (internals === undefined || !Buffer.isBuffer(content) || !isPlain(options)) return undefined;
    const { ch, connection } = internals;
    if (content.length > connection.frameMax - FRAME_OVERHEAD) return undefined;
    const headers = options.headers as Record<string, unknown> | undefined;
    // A table is always written, as amqplib writes it: an empty one is its size field alone.
    const headersSize = headers === undefined ? 4 : tableSize(headers);
    if (headersSize < 0) return undefined;
    const method = this.#methodFrame(ch, exchange, routingKey, Boolean(options.mandatory));
    if (method === undefined) return undefined;
    const { contentType, messageId } = options;
    const expiration = options.expiration === undefined ? undefined : String(options.expiration);
    const contentTypeLength = contentType === undefined ? 0 : shortLength(contentType);
    const messageIdLength = messageId === undefined ? 0 : shortLength(messageId);
    const expirationLength = expiration === undefined ? 0 : shortLength(expiration);
    if (contentTypeLength < 0 || messageIdLength < 0 || expirationLength < 0) {
      return undefined;
    }
    const deliveryMode = deliveryModeOf(options);
    if (deliveryMode !== undefined && deliveryMode !== 1 && deliveryMode !== 2) return undefined;

    let propertiesSize = headersSize;
    if (contentType !== undefined) propertiesSize += 1 + contentTypeLength;
    if (deliveryMode !== undefined) propertiesSize += 1;
    if (expiration !== undefined) propertiesSize += 1 + expirationLength;
    if (messageId !== undefined) propertiesSize += 1 + messageIdLength;
    const headerPayload = 4 + 8 + 2 + propertiesSize;
    const bodyFrame = content.length > 0 ? content.length + FRAME_OVERHEAD : 0;
    const bytes = Buffer.allocUnsafe(method.length + headerPayload + FRAME_OVERHEAD + bodyFrame);
    bytes.set(method, 0);
    let at = method.length;

    // Content header: class, weight, body size (64 bits), property flags, then the properties
    // in flag order: content type, headers, delivery mode, expiration, message id.
    at = frameStart(bytes, at, FRAME_HEADER, ch, headerPayload);
    at = u32(bytes, at, BASIC_CLASS_AND_WEIGHT);
    at = u32(bytes, at, Math.floor(content.length / TWO_TO_32));
    at = u32(bytes, at, content.length >>> 0);
    let flags = FLAG_HEADERS;
    if (contentType !== undefined) flags |= FLAG_CONTENT_TYPE;
    if (deliveryMode !== undefined) flags |= FLAG_DELIVERY_MODE;
    if (expiration !== undefined) flags |= FLAG_EXPIRATION;
    if (messageId !== undefined) flags |= FLAG_MESSAGE_ID;
    at = u16(bytes, at, flags);
    if (contentType !== undefined) at = writeShort(bytes, at, contentType, contentTypeLength);
    at = writeTable(bytes, at, headers, headersSize);
    if (deliveryMode !== undefined) bytes[at++] = deliveryMode;
    if (expiration !== undefined) at = writeShort(bytes, at, expiration, expirationLength);
    if (messageId !== undefined) at = writeShort(bytes, at, messageId, messageIdLength);
    bytes[at++] = FRAME_END;

    if (bodyFrame > 0) {
      at = frameStart(bytes, at, FRAME_BODY, ch, content.length);
      at += content.copy(bytes, at);
      bytes[at] = FRAME_END;
    }
    internals.pushConfirmCallback(undefined);
    return bytes;
  }
}

/**
 * Options with none but the fields {@link DirectPublish} encodes set: amqplib's other publish
 * options (what `Args.publish` reads) are all absent.
 */
function isPlain(options: Options.Publish): boolean {
  return (
    options.CC === undefined &&
    options.BCC === undefined &&
    options.contentEncoding === undefined &&
    options.priority === undefined &&
    options.correlationId === undefined &&
    options.replyTo === undefined &&
    options.timestamp === undefined &&
    options.type === undefined &&
    options.userId === undefined &&
    options.appId === undefined &&
    (options.contentType === undefined || typeof options.contentType === 'string') &&
    (options.messageId === undefined || typeof options.messageId === 'string') &&
    (options.headers === undefined ||
      (typeof options.headers === 'object' && options.headers !== null))
  );
}

/** amqplib's delivery mode: `persistent` first, then a numeric or truthy `deliveryMode`. */
function deliveryModeOf(options: Options.Publish): number | undefined {
  if (options.persistent !== undefined) return options.persistent ? 2 : 1;
  const { deliveryMode } = options as { deliveryMode?: unknown };
  if (typeof deliveryMode === 'number') return deliveryMode;
  return deliveryMode ? 2 : undefined;
}

/** The UTF-8 length of a short string, or -1 when it is longer than one (255 bytes). */
function shortLength(value: string): number {
  const length = value.length < 86 ? byteLength(value) : Buffer.byteLength(value, 'utf8');
  return length > 255 ? -1 : length;
}

/** UTF-8 length: a string of ASCII is its length, told without a call into Node. */
function byteLength(value: string): number {
  for (let i = 0; i < value.length; i++) {
    if (value.charCodeAt(i) > 0x7f) return Buffer.byteLength(value, 'utf8');
  }
  return value.length;
}

/**
 * The encoded size of a headers table of strings (the size field included), as amqplib writes
 * it (every enumerable key, `undefined` values left out); -1 when a value is not a string or a
 * key is too long, for amqplib to encode.
 */
function tableSize(headers: Record<string, unknown>): number {
  let size = 4;
  for (const key in headers) {
    const value = headers[key];
    if (value === undefined) continue;
    if (typeof value !== 'string') return -1;
    const keyLength = shortLength(key);
    if (keyLength < 0) return -1;
    size += 1 + keyLength + 1 + 4 + byteLength(value);
  }
  return size;
}

function writeTable(
  bytes: Buffer,
  at: number,
  headers: Record<string, unknown> | undefined,
  size: number,
): number {
  if (headers === undefined) return u32(bytes, at, 0);
  at = u32(bytes, at, size - 4);
  for (const key in headers) {
    const value = headers[key];
    if (typeof value !== 'string') continue;
    at = writeShort(bytes, at, key, byteLength(key));
    bytes[at++] = 0x53; // 'S': a long string
    const length = byteLength(value);
    at = u32(bytes, at, length);
    at += bytes.write(value, at, length, 'utf8');
  }
  return at;
}

function frameStart(
  bytes: Buffer,
  at: number,
  type: number,
  channel: number,
  size: number,
): number {
  bytes[at] = type;
  u16(bytes, at + 1, channel);
  return u32(bytes, at + 3, size);
}

/**
 * A short string: its length octet, then its bytes. ASCII (a UTF-8 length equal to the string's
 * length) is copied a character at a time, cheaper for names and ids than `Buffer.write`.
 */
function writeShort(bytes: Buffer, at: number, value: string, length: number): number {
  bytes[at++] = length;
  if (length !== value.length) return at + bytes.write(value, at, length, 'utf8');
  for (let i = 0; i < length; i++) bytes[at + i] = value.charCodeAt(i);
  return at + length;
}

/** Writes `value` as 16 bits, big-endian, at `at`; returns the offset after it. */
function u16(bytes: Buffer, at: number, value: number): number {
  bytes[at] = value >>> 8;
  bytes[at + 1] = value;
  return at + 2;
}

/** Writes `value` (0 to 2^32 - 1) as 32 bits, big-endian, at `at`; returns the offset after it. */
function u32(bytes: Buffer, at: number, value: number): number {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
  return at + 4;
}
