/**
 * Publishing on a confirm channel, with a bounded window of unconfirmed messages: a publish
 * resolves when the broker acks it and rejects on its nack, or, with `mandatory`, when the
 * broker returns it as unroutable.
 *
 * Why it is separate: what was sent and not yet confirmed when the channel or the connection
 * goes is not known to be lost or kept, so it is sent again on the next channel (at least
 * once, never silently lost), and publishes made while there is no channel wait here, in
 * order, until there is one (or their signal aborts, or the transport closes or gives up).
 * Confirms are read from the channel's own `ack`/`nack` events by delivery tag, counted here,
 * so a closing channel is never mistaken for a nack. Nothing here reconnects.
 *
 * A channel that keeps nacking ({@link NACKS_BEFORE_REPLACEMENT} in a row, no ack between) is
 * replaced on the same connection: RabbitMQ 3.10 can nack every publish of a channel opened
 * while a quorum queue elected its leader, until the old leader's node is back, while a channel
 * opened later is acked. The publisher asks for a new channel, sends on it from then on, and
 * lets the old one confirm what it was sent (its nacks are sent again on the new channel during
 * the ride-out below, else reject, and the bus retries them there) before closing it; what it
 * has not confirmed by {@link RETIRE_TIMEOUT_MS} is sent again on the new one. A full queue
 * with `reject-publish` nacks every publish too, so replacements have a floor:
 * {@link FIRST_REPLACEMENT_FLOOR_MS} after one, doubling while no ack comes, to one per
 * {@link REPLACEMENT_FLOOR_MS}. The short first floors are for the election: a channel
 * replaced 0.13 s after the node's kill was still nacked, and the bus's default retries of a
 * publish span 0.56-0.7 s.
 *
 * Those retries are not always enough: a surviving node can nack the channels opened in the
 * first seconds, and the bus's retries run out on them. So, unless nacks are expected (a queue
 * with `reject-publish`: {@link PublisherOptions.nackRideOutMs} 0), a channel found stuck
 * starts a ride-out of {@link NACK_RIDE_OUT_MS}: what is nacked meanwhile is neither rejected
 * nor sent back to the channel that nacked it, but held for the next channel (a replacement
 * is asked for as soon as the floor allows), and what a replaced channel nacks is sent again
 * on the current one. The first ack ends the ride-out; when it runs out without one, what is
 * held rejects with the nack, and nacks reject at once until an ack or a new connection.
 */
import {
  ErrorCode,
  WatchtowerError,
  isWatchtowerError,
  type Clock,
  type PublishReceipt,
  type TimerHandle,
} from '@watchtower/core';
import { Fifo, OrderedSlots, abortError } from '@watchtower/core/transport-kit';
import type { ConfirmChannel, Message, Options } from 'amqplib';
import { DirectPublish } from './direct-publish.js';
import type { WriteCork } from './write-cork.js';

/** One message to publish. */
export interface Outgoing {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Options.Publish;
  /** Names the message in errors; `publish {routingKey}` (`publish user.created`) when absent. */
  readonly what?: string;
  readonly signal?: AbortSignal | undefined;
}

/**
 * A nack's rejection: a full queue with `reject-publish`, or a broker that could not take the
 * message (a quorum queue without a leader); it may pass later. `heldMs`: how long a ride-out
 * held it, nacked on every channel it was sent on.
 */
function nackError(entry: Pending, heldMs?: number): WatchtowerError {
  const held =
    heldMs === undefined ? '' : `, on every publish channel it was sent on for ${heldMs} ms`;
  return new WatchtowerError(
    ErrorCode.TRANSPORT,
    `${whatOf(entry.message)}: the broker refused the message (nack)${held}`,
    { retryable: true },
  );
}

/** What errors call `message`: made only for an error, not for every publish. */
function whatOf(message: Outgoing): string {
  return message.what ?? `publish ${message.routingKey}`;
}

/** A publish sent or waiting: a class, so that every one has the same shape (one hidden class). */
class Pending {
  tag = 0;
  returned = false;
  done = false;
  onAbort: (() => void) | undefined = undefined;
  constructor(
    readonly message: Outgoing,
    readonly receipt: PublishReceipt,
  ) {}
}

/**
 * Nacks in a row, with no ack between, after which a channel is taken for stuck: the attempts
 * of one publish with the bus's default retry.
 */
export const NACKS_BEFORE_REPLACEMENT = 4;

/** The least time between two replacements of the publish channel, at first (no ack since). */
export const FIRST_REPLACEMENT_FLOOR_MS = 250;

/**
 * How long, from a channel found stuck, nacks are ridden out (see {@link Publisher}): longer
 * than the channels of a surviving RabbitMQ 3.10 node nacked during a quorum queue's election
 * in our runs (up to 4 s), shorter than the bus's `publishTimeoutMs` (30 s by default).
 */
export const NACK_RIDE_OUT_MS = 10_000;

/** The least time between two replacements once nacks go on: the first floor doubles up to this. */
export const REPLACEMENT_FLOOR_MS = 1000;

/** How long a replaced channel has to confirm what it was sent before it is closed. */
export const RETIRE_TIMEOUT_MS = 5000;

/** What a {@link Publisher} needs. */
export interface PublisherOptions {
  /** Most messages sent on a channel and not yet confirmed. */
  readonly window: number;
  readonly clock: Clock;
  /**
   * The channel keeps nacking: open a new confirm channel on the same connection and
   * {@link Publisher.attach} it. Asked at most once per {@link REPLACEMENT_FLOOR_MS} while
   * nacks go on (the first times sooner); when no channel can be opened, the current one stays.
   */
  readonly replaceChannel: () => void;
  /**
   * How long nacks are ridden out once a channel is found stuck; 0 when a nack is expected and
   * must reject at once (a queue with `reject-publish`).
   * @defaultValue {@link NACK_RIDE_OUT_MS}
   */
  readonly nackRideOutMs?: number;
}

const tagAtMost = (entry: Pending, tag: number): boolean => entry.tag <= tag;
const tagIs = (entry: Pending, tag: number): boolean => entry.tag === tag;

/**
 * One confirm channel and what it was sent and has not confirmed, in delivery-tag order (the
 * order sent). Not a `Map` by tag: see {@link OrderedSlots}.
 */
class Sending {
  readonly unconfirmed = new OrderedSlots<Pending>();
  nextTag = 1;
  nacksInRow = 0;
  closed = false;
  retireTimer: TimerHandle | undefined = undefined;
  readonly direct: DirectPublish;
  constructor(readonly channel: ConfirmChannel) {
    this.direct = new DirectPublish(channel);
  }
}

/** Publishes, sent and waiting, over one confirm channel at a time. */
export class Publisher {
  readonly #options: PublisherOptions;
  readonly #waiting = new Fifo<Pending>();
  #current: Sending | undefined;
  /** Replaced channels still confirming what they were sent, oldest first. */
  readonly #retiring = new Set<Sending>();
  readonly #replaced = new WeakSet<ConfirmChannel>();
  #replacedAt = Number.NEGATIVE_INFINITY;
  /** The floor before the next replacement: doubles with each, back to the first on an ack. */
  #floorMs = FIRST_REPLACEMENT_FLOOR_MS;
  #replacements = 0;
  /** A replacement asked for once the floor allows it, while nacked publishes are held. */
  #replaceTimer: TimerHandle | undefined;
  readonly #rideOutMs: number;
  /** Nacked during the ride-out by the current channel: sent on the next one. */
  readonly #held = new Fifo<Pending>();
  /** Ends the ride-out under way (undefined when none is). */
  #rideOutTimer: TimerHandle | undefined;
  /** A ride-out ran out without an ack: none starts again until an ack or a new connection. */
  #rideOutSpent = false;
  #cork: WriteCork | undefined;
  #writable = true;
  #failure: WatchtowerError | undefined;
  #idleWaiters: (() => void)[] = [];

  constructor(options: PublisherOptions) {
    this.#options = options;
    this.#rideOutMs = options.nackRideOutMs ?? NACK_RIDE_OUT_MS;
  }

  /** Publishes sent and not confirmed (on the current and on replaced channels), and waiting. */
  get outstanding(): number {
    let count = this.#waiting.size + this.#held.size + (this.#current?.unconfirmed.size ?? 0);
    for (const sending of this.#retiring) count += sending.unconfirmed.size;
    return count;
  }

  /** How often a channel that kept nacking was replaced. */
  get replacements(): number {
    return this.#replacements;
  }

  /** True for a channel this replaced (and closes itself): its close loses no connection. */
  replaced(channel: ConfirmChannel): boolean {
    return this.#replaced.has(channel);
  }

  /**
   * Starts sending on `channel` (a new confirm channel): what waits, oldest first, the
   * unconfirmed of a lost channel included. A channel still attached is replaced: it keeps
   * confirming what it was sent, then is closed. `cork` batches the writes of a turn.
   */
  attach(channel: ConfirmChannel, cork: WriteCork): void {
    const previous = this.#current;
    const sending = new Sending(channel);
    this.#current = sending;
    this.#cork = cork;
    this.#writable = true;
    this.#failure = undefined;
    // A replacement asked for on the floor's end is for the channel it replaces.
    this.#clearReplaceTimer();
    if (previous !== undefined) this.#retire(previous);
    // A new connection: its channels may be stuck anew.
    else this.#rideOutSpent = false;
    // What the previous channel nacked during a ride-out goes first.
    this.#resend(this.#held.drain());
    channel.on('ack', (fields: { deliveryTag: number; multiple: boolean }) => {
      this.#confirm(sending, fields.deliveryTag, fields.multiple, false);
    });
    channel.on('nack', (fields: { deliveryTag: number; multiple: boolean }) => {
      this.#confirm(sending, fields.deliveryTag, fields.multiple, true);
    });
    channel.on('return', (message: Message) => {
      if (this.#current === sending || this.#retiring.has(sending))
        this.#onReturn(sending, message);
    });
    const drained = (): void => {
      if (this.#current !== sending) return;
      this.#writable = true;
      this.#pump();
    };
    channel.on('drain', drained);
    // Publishes written past amqplib fill the socket, not the channel's stream.
    const stopDrain = sending.direct.onDrain(drained);
    // A replaced channel that closes before it has confirmed everything.
    channel.on('close', () => {
      stopDrain();
      sending.closed = true;
      this.#closeRetired(sending);
    });
    this.#pump();
  }

  /**
   * The connection is gone: what its channels had not confirmed goes back to the front of the
   * wait, to be sent again on the next channel.
   */
  detach(): void {
    const current = this.#current;
    if (current === undefined) return;
    this.#current = undefined;
    this.#clearReplaceTimer();
    const resend = this.#held.drain();
    resend.push(...this.#takeRetiring(), ...current.unconfirmed.takeAll());
    this.#resend(resend);
  }

  /**
   * Sends `message` (at once when the window has room and there is a channel, else in turn).
   * Resolves on the broker's ack.
   */
  publish(message: Outgoing): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise<void>((resolve, reject) => {
      this.send(message, { published: resolve, failed: reject });
    });
  }

  /** {@link publish} that tells `receipt` the outcome, once, instead of returning a promise. */
  send(message: Outgoing, receipt: PublishReceipt): void {
    if (this.#failure !== undefined) {
      receipt.failed(this.#failure);
      return;
    }
    const entry = new Pending(message, receipt);
    const { signal } = message;
    if (signal !== undefined) {
      entry.onAbort = () => this.#abort(entry, signal);
      signal.addEventListener('abort', entry.onAbort, { once: true });
    }
    if (this.#waiting.size === 0 && this.#canSend()) this.#send(entry);
    else this.#waiting.push(entry);
  }

  /** Rejects everything outstanding with `error`, and every later publish until `attach`. */
  failAll(error: WatchtowerError): void {
    this.#failure = error;
    this.#endRideOut();
    this.#clearReplaceTimer();
    const all = this.#held.drain();
    all.push(...this.#takeRetiring());
    if (this.#current !== undefined) all.push(...this.#current.unconfirmed.takeAll());
    all.push(...this.#waiting.drain());
    for (const entry of all) this.#settle(entry, error);
  }

  /** Resolves when nothing is outstanding (everything confirmed, or rejected). */
  whenIdle(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #canSend(): boolean {
    const current = this.#current;
    return (
      current !== undefined && this.#writable && current.unconfirmed.size < this.#options.window
    );
  }

  #pump(): void {
    while (this.#waiting.size > 0 && this.#canSend()) {
      this.#send(this.#waiting.shift() as Pending);
    }
  }

  #send(entry: Pending): void {
    const sending = this.#current as Sending;
    entry.tag = sending.nextTag++;
    sending.unconfirmed.add(entry);
    try {
      const { message } = entry;
      this.#cork?.hold();
      this.#writable =
        sending.direct.publish(
          message.exchange,
          message.routingKey,
          message.content,
          message.options,
        ) ??
        sending.channel.publish(
          message.exchange,
          message.routingKey,
          message.content,
          message.options,
        );
    } catch {
      // The channel closed under us (its close event follows and detaches): sent again then.
      this.#writable = false;
    }
  }

  #confirm(sending: Sending, tag: number, multiple: boolean, nacked: boolean): void {
    if (nacked) {
      this.#nacked(sending, tag, multiple);
      return;
    }
    const { unconfirmed } = sending;
    if (multiple) {
      for (const entry of unconfirmed.takeWhile(tagAtMost, tag)) this.#settleConfirmed(entry);
    } else {
      const entry = unconfirmed.deleteFirst(tagIs, tag);
      if (entry !== undefined) this.#settleConfirmed(entry);
    }
    sending.nacksInRow = 0;
    this.#rideOutSpent = false;
    if (this.#rideOutTimer !== undefined) {
      // A channel takes publishes again: what was held goes on the current one.
      this.#endRideOut();
      this.#clearReplaceTimer();
      this.#resend(this.#held.drain());
    }
    if (sending === this.#current) this.#floorMs = FIRST_REPLACEMENT_FLOOR_MS;
    else if (unconfirmed.size === 0 && this.#retiring.has(sending)) this.#closeRetired(sending);
    this.#pump();
  }

  /**
   * The broker nacked `tag` (and before it, when `multiple`) on `sending`: rejected, or held
   * during a ride-out (see {@link Publisher}); a channel that keeps nacking is replaced.
   */
  #nacked(sending: Sending, tag: number, multiple: boolean): void {
    const { unconfirmed } = sending;
    const entries = multiple
      ? [...unconfirmed.takeWhile(tagAtMost, tag)]
      : [unconfirmed.deleteFirst(tagIs, tag)].filter((e): e is Pending => e !== undefined);
    sending.nacksInRow += entries.length;
    const current = sending === this.#current;
    if (current && sending.nacksInRow >= NACKS_BEFORE_REPLACEMENT) this.#startRideOut();
    if (this.#rideOutTimer === undefined) {
      for (const entry of entries) this.#settle(entry, nackError(entry));
    } else if (current) {
      for (const entry of entries) if (!entry.done) this.#held.push(entry);
    } else {
      this.#resend(entries);
    }
    if (current) this.#replaceIfStuck(sending);
    else if (unconfirmed.size === 0 && this.#retiring.has(sending)) this.#closeRetired(sending);
    this.#pump();
  }

  /** A channel was found stuck: nacks are ridden out from now, unless spent or not wanted. */
  #startRideOut(): void {
    if (this.#rideOutMs <= 0 || this.#rideOutSpent || this.#rideOutTimer !== undefined) return;
    this.#rideOutTimer = this.#options.clock.setTimeout(() => {
      this.#rideOutTimer = undefined;
      this.#rideOutSpent = true;
      this.#clearReplaceTimer();
      for (const entry of this.#held.drain()) {
        this.#settle(entry, nackError(entry, this.#rideOutMs));
      }
    }, this.#rideOutMs);
  }

  #endRideOut(): void {
    if (this.#rideOutTimer === undefined) return;
    this.#options.clock.clearTimeout(this.#rideOutTimer);
    this.#rideOutTimer = undefined;
  }

  #clearReplaceTimer(): void {
    if (this.#replaceTimer === undefined) return;
    this.#options.clock.clearTimeout(this.#replaceTimer);
    this.#replaceTimer = undefined;
  }

  /**
   * Asks for a new channel when `sending` keeps nacking (or nacks at all during a ride-out),
   * at most once per floor. While nacked publishes are held (no nack will come for them to
   * ask again), the floor's end asks.
   */
  #replaceIfStuck(sending: Sending): void {
    // During a ride-out any nack is the stuck kind: the channel that sent it is replaced.
    if (sending.nacksInRow < NACKS_BEFORE_REPLACEMENT && this.#rideOutTimer === undefined) return;
    const { clock } = this.#options;
    const now = clock.now();
    const wait = this.#replacedAt + this.#floorMs - now;
    if (wait > 0) {
      if (this.#held.size > 0 && this.#replaceTimer === undefined) {
        this.#replaceTimer = clock.setTimeout(() => {
          this.#replaceTimer = undefined;
          const current = this.#current;
          if (current !== undefined) this.#replaceIfStuck(current);
        }, wait);
      }
      return;
    }
    this.#clearReplaceTimer();
    if (Number.isFinite(this.#replacedAt)) {
      this.#floorMs = Math.min(this.#floorMs * 2, REPLACEMENT_FLOOR_MS);
    }
    this.#replacedAt = now;
    this.#options.replaceChannel();
  }

  /** `sending` was replaced: it confirms what it was sent, and is closed then (or at the limit). */
  #retire(sending: Sending): void {
    this.#replaced.add(sending.channel);
    this.#replacements++;
    this.#retiring.add(sending);
    if (sending.unconfirmed.size === 0) {
      this.#closeRetired(sending);
      return;
    }
    sending.retireTimer = this.#options.clock.setTimeout(
      () => this.#closeRetired(sending),
      RETIRE_TIMEOUT_MS,
    );
  }

  /**
   * Closes a replaced channel; what it has not confirmed is sent again on the current one (it
   * may have been taken: at least once). Nothing for a channel no longer retiring.
   */
  #closeRetired(sending: Sending): void {
    if (!this.#retiring.delete(sending)) return;
    if (sending.retireTimer !== undefined) this.#options.clock.clearTimeout(sending.retireTimer);
    const left = sending.unconfirmed.takeAll();
    if (!sending.closed) sending.channel.close().catch(() => undefined);
    if (left.length === 0) return;
    this.#resend(left);
    this.#pump();
  }

  /**
   * What the retiring channels have not confirmed, oldest first; they are no longer retiring
   * (their timers cleared, they are not closed here: their connection is gone or going).
   */
  #takeRetiring(): Pending[] {
    const entries: Pending[] = [];
    for (const sending of this.#retiring) {
      if (sending.retireTimer !== undefined) this.#options.clock.clearTimeout(sending.retireTimer);
      entries.push(...sending.unconfirmed.takeAll());
    }
    this.#retiring.clear();
    return entries;
  }

  /** Puts `entries` (sent, not confirmed) at the front of the wait, in their order. */
  #resend(entries: readonly Pending[]): void {
    const resend = entries.filter((entry) => !entry.done);
    if (resend.length === 0) return;
    const waiting = this.#waiting.drain();
    for (const entry of resend) {
      entry.returned = false;
      this.#waiting.push(entry);
    }
    for (const entry of waiting) this.#waiting.push(entry);
  }

  /** The broker acked `entry`: published, or refused when it was returned first. */
  #settleConfirmed(entry: Pending): void {
    if (entry.returned) {
      this.#settle(
        entry,
        new WatchtowerError(
          ErrorCode.TRANSPORT,
          `${whatOf(entry.message)}: unroutable, no queue is bound for routing key ${JSON.stringify(entry.message.routingKey)} on ${JSON.stringify(entry.message.exchange)} (mandatory)`,
          { retryable: false },
        ),
      );
    } else {
      this.#settle(entry, undefined);
    }
  }

  /** Returns come before the ack of the same message, in publish order. */
  #onReturn(sending: Sending, message: Message): void {
    const id: unknown = message.properties.messageId;
    for (const entry of sending.unconfirmed.values()) {
      if (!entry.returned && entry.message.options.messageId === id) {
        entry.returned = true;
        return;
      }
    }
  }

  #abort(entry: Pending, signal: AbortSignal): void {
    if (entry.done) return;
    // Still waiting: it is never sent. Sent: the broker may have it; the caller stops waiting.
    if (this.#waiting.removeFirst((e) => e === entry) === undefined) {
      this.#held.removeFirst((e) => e === entry);
    }
    const reason: unknown = signal.reason;
    this.#settle(
      entry,
      isWatchtowerError(reason) ? reason : abortError(signal, whatOf(entry.message)),
    );
  }

  #settle(entry: Pending, error: unknown): void {
    if (!entry.done) {
      entry.done = true;
      if (entry.onAbort !== undefined)
        entry.message.signal?.removeEventListener('abort', entry.onAbort);
      if (error === undefined) entry.receipt.published();
      else entry.receipt.failed(error);
    }
    if (this.#idleWaiters.length > 0 && this.outstanding === 0) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }
}
