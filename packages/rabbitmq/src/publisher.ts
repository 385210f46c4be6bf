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
 */
import { ErrorCode, WatchtowerError, isWatchtowerError } from '@watchtower/core';
import { Fifo, abortError } from '@watchtower/core/transport-kit';
import type { ConfirmChannel, Message, Options } from 'amqplib';
import type { WriteCork } from './write-cork.js';

/** One message to publish. */
export interface Outgoing {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Options.Publish;
  /** Names the message in errors (`publish user.created`). */
  readonly what: string;
  readonly signal?: AbortSignal | undefined;
}

/** A publish sent or waiting: a class, so that every one has the same shape (one hidden class). */
class Pending {
  tag = 0;
  returned = false;
  done = false;
  onAbort: (() => void) | undefined = undefined;
  constructor(
    readonly message: Outgoing,
    readonly resolve: () => void,
    readonly reject: (error: unknown) => void,
  ) {}
}

/** Publishes, sent and waiting, over one confirm channel at a time. */
export class Publisher {
  readonly #window: number;
  readonly #waiting = new Fifo<Pending>();
  /** Sent on the current channel and not yet confirmed, by delivery tag (ascending). */
  #unconfirmed = new Map<number, Pending>();
  #channel: ConfirmChannel | undefined;
  #cork: WriteCork | undefined;
  #nextTag = 1;
  #writable = true;
  #failure: WatchtowerError | undefined;
  #idleWaiters: (() => void)[] = [];

  constructor(window: number) {
    this.#window = window;
  }

  /** Publishes sent and not confirmed, plus those waiting. */
  get outstanding(): number {
    return this.#unconfirmed.size + this.#waiting.size;
  }

  /**
   * Starts sending on `channel` (a new confirm channel): what waits, oldest first, the
   * unconfirmed of the previous channel included. `cork` batches the writes of a turn.
   */
  attach(channel: ConfirmChannel, cork: WriteCork): void {
    this.#channel = channel;
    this.#cork = cork;
    this.#nextTag = 1;
    this.#writable = true;
    this.#failure = undefined;
    channel.on('ack', (fields: { deliveryTag: number; multiple: boolean }) => {
      if (this.#channel === channel) this.#confirm(fields.deliveryTag, fields.multiple, false);
    });
    channel.on('nack', (fields: { deliveryTag: number; multiple: boolean }) => {
      if (this.#channel === channel) this.#confirm(fields.deliveryTag, fields.multiple, true);
    });
    channel.on('return', (message: Message) => {
      if (this.#channel === channel) this.#onReturn(message);
    });
    channel.on('drain', () => {
      if (this.#channel !== channel) return;
      this.#writable = true;
      this.#pump();
    });
    this.#pump();
  }

  /**
   * The channel is gone: what it had not confirmed goes back to the front of the wait, to be
   * sent again on the next channel.
   */
  detach(): void {
    if (this.#channel === undefined) return;
    this.#channel = undefined;
    const resend = [...this.#unconfirmed.values()].filter((entry) => !entry.done);
    this.#unconfirmed = new Map();
    if (resend.length === 0) return;
    const waiting = this.#waiting.drain();
    for (const entry of resend) {
      entry.returned = false;
      this.#waiting.push(entry);
    }
    for (const entry of waiting) this.#waiting.push(entry);
  }

  /**
   * Sends `message` (at once when the window has room and there is a channel, else in turn).
   * Resolves on the broker's ack.
   */
  publish(message: Outgoing): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise<void>((resolve, reject) => {
      const entry = new Pending(message, resolve, reject);
      const { signal } = message;
      if (signal !== undefined) {
        entry.onAbort = () => this.#abort(entry, signal);
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      if (this.#waiting.size === 0 && this.#canSend()) this.#send(entry);
      else this.#waiting.push(entry);
    });
  }

  /** Rejects everything outstanding with `error`, and every later publish until `attach`. */
  failAll(error: WatchtowerError): void {
    this.#failure = error;
    const all = [...this.#unconfirmed.values(), ...this.#waiting.drain()];
    this.#unconfirmed = new Map();
    for (const entry of all) this.#settle(entry, error);
  }

  /** Resolves when nothing is outstanding (everything confirmed, or rejected). */
  whenIdle(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #canSend(): boolean {
    return this.#channel !== undefined && this.#writable && this.#unconfirmed.size < this.#window;
  }

  #pump(): void {
    while (this.#waiting.size > 0 && this.#canSend()) {
      this.#send(this.#waiting.shift() as Pending);
    }
  }

  #send(entry: Pending): void {
    const channel = this.#channel as ConfirmChannel;
    entry.tag = this.#nextTag++;
    this.#unconfirmed.set(entry.tag, entry);
    try {
      const { message } = entry;
      this.#writable = channel.publish(
        message.exchange,
        message.routingKey,
        message.content,
        message.options,
      );
      this.#cork?.hold();
    } catch {
      // The channel closed under us (its close event follows and detaches): sent again then.
      this.#writable = false;
    }
  }

  #confirm(tag: number, multiple: boolean, nacked: boolean): void {
    if (multiple) {
      for (const [key, entry] of this.#unconfirmed) {
        if (key > tag) break;
        this.#unconfirmed.delete(key);
        this.#settleConfirmed(entry, nacked);
      }
    } else {
      const entry = this.#unconfirmed.get(tag);
      if (entry !== undefined) {
        this.#unconfirmed.delete(tag);
        this.#settleConfirmed(entry, nacked);
      }
    }
    this.#pump();
  }

  #settleConfirmed(entry: Pending, nacked: boolean): void {
    if (nacked) {
      // A full queue with `reject-publish`, or a broker that could not take it: may pass later.
      this.#settle(
        entry,
        new WatchtowerError(
          ErrorCode.TRANSPORT,
          `${entry.message.what}: the broker refused the message (nack)`,
          {
            retryable: true,
          },
        ),
      );
    } else if (entry.returned) {
      this.#settle(
        entry,
        new WatchtowerError(
          ErrorCode.TRANSPORT,
          `${entry.message.what}: unroutable, no queue is bound for routing key ${JSON.stringify(entry.message.routingKey)} on ${JSON.stringify(entry.message.exchange)} (mandatory)`,
          { retryable: false },
        ),
      );
    } else {
      this.#settle(entry, undefined);
    }
  }

  /** Returns come before the ack of the same message, in publish order. */
  #onReturn(message: Message): void {
    const id: unknown = message.properties.messageId;
    for (const entry of this.#unconfirmed.values()) {
      if (!entry.returned && entry.message.options.messageId === id) {
        entry.returned = true;
        return;
      }
    }
  }

  #abort(entry: Pending, signal: AbortSignal): void {
    if (entry.done) return;
    // Still waiting: it is never sent. Sent: the broker may have it; the caller stops waiting.
    this.#waiting.removeFirst((e) => e === entry);
    const reason: unknown = signal.reason;
    this.#settle(
      entry,
      isWatchtowerError(reason) ? reason : abortError(signal, entry.message.what),
    );
  }

  #settle(entry: Pending, error: unknown): void {
    if (!entry.done) {
      entry.done = true;
      if (entry.onAbort !== undefined)
        entry.message.signal?.removeEventListener('abort', entry.onAbort);
      if (error === undefined) entry.resolve();
      else entry.reject(error);
    }
    if (this.outstanding === 0 && this.#idleWaiters.length > 0) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }
}
