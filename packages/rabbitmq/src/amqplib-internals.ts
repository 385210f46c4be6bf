/**
 * The parts of amqplib's channel and connection that frames written past amqplib rely on
 * (`DirectAcks`, `DirectPublish`), read as amqplib 0.10 to 2.x lays them out. Each use checks
 * the layout once per channel ({@link channelInternals}) and, when it differs, leaves the
 * channel to amqplib's own methods.
 */
import type { Channel } from 'amqplib';

/** What amqplib keeps per channel number: the channel, and the stream its frames go through. */
export interface ChannelSlot {
  readonly channel: unknown;
  readonly buffer?: { readonly readableLength: number; readonly writableLength: number };
}

export interface ConnectionInternals {
  readonly stream: {
    readonly writable: boolean;
    readonly writableLength: number;
    write(bytes: Buffer): boolean;
    on(event: 'drain', listener: () => void): unknown;
    off(event: 'drain', listener: () => void): unknown;
  };
  readonly channels: readonly (ChannelSlot | null | undefined)[];
  /** Read by amqplib's heartbeat: set by every frame sent. */
  sentSinceLastCheck: boolean;
}

export interface ChannelInternals {
  readonly ch: number;
  readonly connection: ConnectionInternals;
}

/** `channel`'s number and connection, or undefined when amqplib lays them out otherwise. */
export function channelInternals(channel: Channel): ChannelInternals | undefined {
  const candidate = channel as unknown as Partial<ChannelInternals>;
  const connection = candidate.connection as Partial<ConnectionInternals> | undefined;
  if (
    typeof candidate.ch !== 'number' ||
    connection === undefined ||
    !Array.isArray(connection.channels) ||
    typeof connection.stream?.write !== 'function' ||
    typeof connection.sentSinceLastCheck !== 'boolean'
  ) {
    return undefined;
  }
  return candidate as ChannelInternals;
}

/**
 * Open as amqplib sees it: the connection still has the channel, and neither is closing
 * (amqplib then replaces their send methods with ones that throw, as own properties).
 */
export function isOpen(channel: Channel, { ch, connection }: ChannelInternals): boolean {
  return (
    connection.channels[ch]?.channel === channel &&
    !Object.hasOwn(channel, 'sendImmediately') &&
    !Object.hasOwn(connection, 'sendMethod') &&
    connection.stream.writable
  );
}
