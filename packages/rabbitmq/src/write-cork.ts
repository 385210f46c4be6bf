/**
 * One socket write per turn for the frames of a connection, instead of one per frame.
 *
 * Why: amqplib writes every frame (a publish, an ack) to the socket on its own, from one
 * `setImmediate` callback of its channel multiplexer, and a socket write that completes at
 * once is a system call each: at a publish window of 100 or a prefetch of 64 that is most of
 * the CPU a client spends per event. {@link WriteCork.hold} corks the socket for the rest of
 * the turn: the frames the multiplexer writes in that callback queue up and leave together,
 * in one `writev`, when the cork is released right after it. Nothing is delayed beyond the
 * multiplexer's own callback, nothing is reordered, and the cork is always released (it never
 * waits on anything but the event loop's next `setImmediate` round).
 *
 * A frame alone in its turn (an ack at prefetch 1, a publish awaited before the next) is not
 * corked: there is nothing to join it, and the cork's own round costs more than it saves
 * (measured at prefetch 1: about 7 µs of CPU per event, and a slower consumer). The socket is
 * corked from the second frame of a turn, which is still before the multiplexer writes the
 * first.
 *
 * A consumer's acks and nacks and a channel's publishes mostly do not go through the
 * multiplexer (`DirectAcks` and `DirectPublish` write them to the socket themselves): `hold`
 * is called before such a write, so a second frame of the turn is corked with the others.
 */
import type { ChannelModel } from 'amqplib';

/** The part of a socket this uses. */
interface Corkable {
  cork(): void;
  uncork(): void;
  prependListener(event: 'drain', listener: () => void): unknown;
}

/** Corks one connection's socket from a frame's write until amqplib's writes of that turn are done. */
export class WriteCork {
  readonly #socket: Corkable | undefined;
  #held = false;
  /** Frames handed over in this turn before the socket was corked. */
  #frames = 0;

  /** `socket`: the connection's stream; without one (it has none yet) `hold` does nothing. */
  constructor(socket: unknown) {
    this.#socket = isCorkable(socket) ? socket : undefined;
    // A full socket buffer (16 KiB) stops the multiplexer until `drain`, when it writes the
    // rest at once: corked too, ahead of its own listener.
    this.#socket?.prependListener('drain', () => this.#cork());
  }

  /**
   * Call right after handing a frame to amqplib, or right before writing one to the socket
   * directly. amqplib's multiplexer writes at a `setImmediate`
   * scheduled from a `process.nextTick` (the channel buffer's `readable` event); the release
   * is scheduled the same way, later, so it runs just after those writes.
   */
  hold(): void {
    if (this.#held || this.#socket === undefined) return;
    if (++this.#frames === 1) {
      process.nextTick(this.#endTurn);
      return;
    }
    this.#cork();
  }

  readonly #endTurn = (): void => {
    this.#frames = 0;
  };

  #cork(): void {
    if (this.#held || this.#socket === undefined) return;
    this.#held = true;
    this.#socket.cork();
    process.nextTick(this.#scheduleRelease);
  }

  readonly #scheduleRelease = (): void => {
    setImmediate(this.#release);
  };

  readonly #release = (): void => {
    this.#held = false;
    this.#socket?.uncork();
  };
}

function isCorkable(value: unknown): value is Corkable {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Corkable).cork === 'function' &&
    typeof (value as Corkable).uncork === 'function' &&
    typeof (value as Corkable).prependListener === 'function'
  );
}

const corks = new WeakMap<ChannelModel, WriteCork>();

/** The one {@link WriteCork} of `model`'s connection, shared by its channels. */
export function corkOf(model: ChannelModel): WriteCork {
  let cork = corks.get(model);
  if (cork === undefined) {
    cork = new WriteCork((model.connection as unknown as { stream?: unknown }).stream);
    corks.set(model, cork);
  }
  return cork;
}
