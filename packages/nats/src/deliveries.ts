import type { JsMsg } from '@nats-io/jetstream';
import { headers as createHeaders, type Msg, type MsgHdrs } from '@nats-io/transport-node';
import {
  ClosedError,
  ErrorCode,
  SerializationError,
  decodeEvent,
  describeError,
  isWatchtowerError,
  type Delivery,
  type WatchtowerError,
  type Event,
  type DeadLetterReason,
  type EventDelivery,
  type MalformedDelivery,
  type MalformedMessage,
  type NackOptions,
} from '@watchtower/core';
import {
  TRANSPORT_OPTION_KEYS,
  rejectedForUnknownKeys,
} from '@watchtower/core/transport-kit';
import { mapNatsError } from './map-error.js';

const DONE: Promise<void> = Promise.resolve();

// A NATS header name is printable ASCII without `:`; values may not hold CR or LF.
const HEADER_NAME = /^[!-9;-~]+$/;
const HEADER_VALUE_BAD = /[\r\n]/;

function isServerHeader(name: string): boolean {
  return name.length >= 5 && name.slice(0, 5).toLowerCase() === 'nats-';
}

/**
 * Event headers as NATS headers, so tracing middleware and raw clients see them without
 * parsing the body. Names or values NATS cannot carry, and `Nats-*` names, are left out (they
 * still travel in the body). `undefined` when there is nothing to send.
 */
export function toNatsHeaders(headers: Record<string, string>): MsgHdrs | undefined {
  let out: MsgHdrs | undefined;
  for (const name in headers) {
    const value = headers[name];
    if (typeof value !== 'string' || !HEADER_NAME.test(name) || HEADER_VALUE_BAD.test(value))
      continue;
    // `Nats-*` headers steer the server (`Nats-Msg-Id`, `Nats-Expected-*`): never from user data.
    if (isServerHeader(name)) continue;
    out ??= createHeaders();
    out.set(name, value);
  }
  return out;
}

/**
 * The message's NATS headers as event headers, for a body without a headers map (Rust and raw
 * publishers may set `traceparent` only as a header). A Watchtower body carries its headers
 * itself (and mirrors them into NATS headers), so these are not even parsed then. `Nats-*`
 * headers are the server's own; of a repeated header the last value counts.
 */
function eventHeadersOf(msg: {
  readonly headers?: MsgHdrs | undefined;
}): Record<string, string> | undefined {
  const natsHeaders = msg.headers;
  if (natsHeaders === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [name, values] of natsHeaders) {
    if (isServerHeader(name)) continue;
    const last = values[values.length - 1];
    if (last !== undefined) out[name] = last;
  }
  return out;
}

/**
 * A message read back from the stream (by sequence) as what goes to the DLQ: its event, or its
 * bytes when they do not decode.
 */
export function storedContent(
  data: Uint8Array,
  subject: string,
  headers: MsgHdrs | undefined,
): Event | MalformedMessage {
  try {
    return decodeEvent(data, () => eventHeadersOf({ headers }));
  } catch {
    return { raw: data, origin: subject };
  }
}

function toSerializationError(error: unknown, data: Uint8Array): SerializationError {
  if (isWatchtowerError(error, ErrorCode.SERIALIZATION)) return error as SerializationError;
  return new SerializationError(describeError(error), data, { cause: error });
}

/** What a core NATS nack does: nothing, once its options are known ones. */
function checkedNack(options: NackOptions | undefined): Promise<void> {
  return rejectedForUnknownKeys(options, TRANSPORT_OPTION_KEYS.nack, 'nack options') ?? DONE;
}

/** A core NATS message as a delivery. Core NATS has no acks: both settle calls do nothing. */
export function coreDelivery(msg: Msg): Delivery {
  let event: Event;
  try {
    event = decodeEvent(msg.data, () => eventHeadersOf(msg));
  } catch (error) {
    return new CoreMalformedDelivery(msg.data, toSerializationError(error, msg.data), msg.subject);
  }
  return new CoreEventDelivery(event, msg);
}

class CoreEventDelivery implements EventDelivery {
  readonly kind = 'event' as const;
  readonly attempt = 1;
  constructor(
    readonly event: Event,
    private readonly msg: Msg,
  ) {}
  /** Read on demand: the client decodes the subject bytes on first access. */
  get origin(): string {
    return this.msg.subject;
  }
  ack(): Promise<void> {
    return DONE;
  }
  /** Core NATS cannot deliver a message again; the capability `redelivery` is false. */
  nack(options?: NackOptions): Promise<void> {
    return checkedNack(options);
  }
}

class CoreMalformedDelivery implements MalformedDelivery {
  readonly kind = 'malformed' as const;
  readonly attempt = 1;
  constructor(
    readonly raw: Uint8Array,
    readonly error: SerializationError,
    readonly origin: string,
  ) {}
  ack(): Promise<void> {
    return DONE;
  }
  nack(options?: NackOptions): Promise<void> {
    return checkedNack(options);
  }
}

/**
 * Acks, naks and terms of JetStream deliveries, written together once the current run of
 * promise work is over.
 *
 * The client flushes its outbound buffer on a microtask after the first write. A subscriber
 * that settles deliveries one by one across awaits (the EventBus does) would so cost a socket
 * write per ack; collected and sent in one go, they leave in one write. The flush is a
 * `process.nextTick`: queued from promise code it runs once the microtask queue is empty, i.e.
 * after every delivery already received has been handled, and before any I/O, so acks are not
 * held back by a turn of the event loop (a server at `max_ack_pending` waits for them). The
 * caller does not wait for the write, so one that fails goes to `onError` (once per batch,
 * mapped by `mapNatsError`).
 */
export class SettleBatcher {
  #pending: (() => void)[] = [];
  #scheduled = false;
  readonly #flush = (): void => {
    if (this.#scheduled) this.flush();
  };

  constructor(private readonly onError: (error: WatchtowerError) => void) {}

  /** Queues `action` for the next flush. */
  run(action: () => void): void {
    this.#pending.push(action);
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flush);
    }
  }

  /** Sends what is pending now (on close, before the connection drains). */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#pending;
    this.#pending = [];
    let failed = 0;
    let firstError: unknown;
    for (const settle of batch) {
      try {
        settle();
      } catch (error) {
        // The connection closed in between: the server delivers the message again after
        // the ack wait, as for any ack lost on the way (at least once).
        if (failed++ === 0) firstError = error;
      }
    }
    if (failed > 0) {
      this.onError(
        mapNatsError(
          firstError,
          `write ${failed} of ${batch.length} acks/naks (their messages come again after the ack wait)`,
        ),
      );
    }
  }
}

/** What JetStream deliveries share with their transport. */
export interface JetStreamDeliveryContext {
  /** Handed out and not yet acked or nacked; the transport nacks them on close. */
  readonly unsettled: Set<{ readonly origin: string; nack(): Promise<void> }>;
  readonly batcher: SettleBatcher;
  /** True once the connection is closed: settling then fails with `CLOSED`. */
  readonly closed: () => boolean;
  /** The consumer's `max_deliver`; `-1` for no limit. */
  readonly maxDeliver: number;
  /** Writes a dead letter; resolves once it is stored. */
  readonly deadLetter: (
    message: Event | MalformedMessage,
    reason: DeadLetterReason,
  ) => Promise<void>;
}

/**
 * A JetStream message as a delivery: attempt from the server, ack/nak/term on the message.
 * It stays in `context.unsettled` until it is acked or nacked.
 */
export function jetStreamDelivery(msg: JsMsg, context: JetStreamDeliveryContext): Delivery {
  let event: Event;
  try {
    event = decodeEvent(msg.data, () => eventHeadersOf(msg));
  } catch (error) {
    return new JsMalformedDelivery(msg, context, toSerializationError(error, msg.data));
  }
  return new JsEventDelivery(msg, context, event);
}

/**
 * The server's delivery count of a JetStream message, read from its ack subject without
 * parsing all of it: `msg.info` splits the subject and parses every number in it, which costs
 * several per cent of a consume loop that reads the attempt of every delivery. The subject is
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>` (9 tokens) or, from
 * servers with domains, `$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.…` (12);
 * anything else is left to `msg.info`.
 */
export function deliveryCountOf(msg: JsMsg): number {
  const reply = (msg as { readonly reply?: unknown }).reply;
  if (typeof reply === 'string' && reply.startsWith('$JS.ACK.')) {
    let dots = 0;
    for (let i = 0; i < reply.length; i++) if (reply.charCodeAt(i) === 0x2e) dots++;
    const index = dots === 8 ? 4 : dots === 11 ? 6 : -1;
    if (index > 0) {
      let start = 0;
      for (let token = 0; token < index; token++) start = reply.indexOf('.', start) + 1;
      const end = reply.indexOf('.', start);
      const count = Number(reply.slice(start, end));
      if (Number.isInteger(count) && count > 0) return count;
    }
  }
  return msg.info.deliveryCount;
}

abstract class JsDeliveryBase {
  #settled = false;
  constructor(
    protected readonly msg: JsMsg,
    protected readonly context: JetStreamDeliveryContext,
  ) {
    context.unsettled.add(this);
  }

  /** The server's delivery count, so it survives consumer restarts. */
  get attempt(): number {
    return deliveryCountOf(this.msg);
  }

  get origin(): string {
    return this.msg.subject;
  }

  /** The stream sequence of the message. */
  get sequence(): number {
    return this.msg.seq;
  }

  /**
   * Acks; resolves at once, the ack leaves with the others of this event-loop turn. Rejects
   * with `CLOSED` when the connection is closed. Idempotent.
   */
  ack(): Promise<void> {
    return this.#settle('ack', () => this.msg.ack());
  }

  /**
   * `nak` with the delay (the server delivers it again after `delayMs`), or `term` when
   * `requeue` is false (the server never delivers it again). Sent like `ack`. Idempotent.
   */
  nack(options?: NackOptions): Promise<void> {
    const refused = rejectedForUnknownKeys(options, TRANSPORT_OPTION_KEYS.nack, 'nack options');
    if (refused !== undefined) return refused;
    const msg = this.msg;
    if (options?.requeue === false) return this.#settle('term', () => msg.term());
    const { maxDeliver } = this.context;
    if (maxDeliver > 0 && deliveryCountOf(msg) >= maxDeliver) return this.#deadLetter();
    const delay = options?.delayMs;
    const millis =
      delay !== undefined && Number.isFinite(delay) && delay > 0 ? Math.ceil(delay) : undefined;
    return this.#settle('nak', () => msg.nak(millis));
  }

  /** What goes to the dead-letter queue for this delivery. */
  protected abstract readonly content: Event | MalformedMessage;

  /**
   * The server would not deliver it again (`max_deliver` reached): a nak would drop it, so it
   * is dead-lettered here and acked once the dead letter is stored. When the write fails the
   * delivery stays unacked and the failure rejects: the EventBus reports it, or, for a delivery
   * the transport hands back itself (never handed out, unsettled at close), the transport's
   * `error` listeners.
   */
  async #deadLetter(): Promise<void> {
    if (this.#settled) return;
    const { unsettled, closed, maxDeliver } = this.context;
    if (closed()) {
      throw new ClosedError(`nack of ${this.msg.subject}: the NATS connection is closed`);
    }
    this.#settled = true;
    unsettled.delete(this);
    const content = this.content;
    const attempts = deliveryCountOf(this.msg);
    await this.context.deadLetter(content, {
      message:
        `delivery ${attempts} was nacked and the consumer allows at most ${maxDeliver} ` +
        '(consumer.maxDeliver): the server would not deliver it again',
      code: ErrorCode.TRANSPORT,
      attempts,
      failedAt: new Date().toISOString(),
      originalType: 'raw' in content ? content.origin : content.type,
    });
    this.context.batcher.run(() => this.msg.ack());
  }

  #settle(what: string, action: () => void): Promise<void> {
    if (this.#settled) return DONE;
    const { unsettled, batcher, closed } = this.context;
    if (closed()) {
      return Promise.reject(
        new ClosedError(`${what} of ${this.msg.subject}: the NATS connection is closed`),
      );
    }
    this.#settled = true;
    unsettled.delete(this);
    batcher.run(action);
    return DONE;
  }
}

class JsEventDelivery extends JsDeliveryBase implements EventDelivery {
  readonly kind = 'event' as const;
  constructor(
    msg: JsMsg,
    context: JetStreamDeliveryContext,
    readonly event: Event,
  ) {
    super(msg, context);
  }
  protected get content(): Event {
    return this.event;
  }
}

class JsMalformedDelivery extends JsDeliveryBase implements MalformedDelivery {
  readonly kind = 'malformed' as const;
  readonly raw: Uint8Array;
  constructor(
    msg: JsMsg,
    context: JetStreamDeliveryContext,
    readonly error: SerializationError,
  ) {
    super(msg, context);
    this.raw = msg.data;
  }
  protected get content(): MalformedMessage {
    return { raw: this.raw, origin: this.msg.subject };
  }
}
