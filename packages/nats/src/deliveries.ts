/**
 * NATS messages as what the EventBus and the kit take: core and JetStream deliveries, the
 * dead-letter entries of `consumeDlq`, and the batch that writes JetStream acks. Also the
 * mapping between event headers and NATS headers.
 *
 * Separate from the transport because this is the per-message path: every delivery is made
 * and settled here. Nothing here may allocate a promise or a closure per ack, or wait for the
 * server: an ack is decided at once and written with the batch of its turn.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { headers as createHeaders, type Msg, type MsgHdrs } from '@nats-io/transport-node';
import {
  ClosedError,
  ErrorCode,
  SerializationError,
  WatchtowerError,
  decodeEvent,
  describeError,
  isWatchtowerError,
  type Clock,
  type DeadLetterReason,
  type Delivery,
  type Event,
  type EventDelivery,
  type MalformedDelivery,
  type MalformedMessage,
  type NackOptions,
} from '@watchtower/core';
import {
  RESOLVED,
  TurnBatcher,
  checkNackOptions,
  deadLetterReason,
  rejection,
  type DeadLetterEntry,
} from '@watchtower/core/transport-kit';
import { decodeDeadLetter } from './dead-letter-record.js';
import { mapNatsError } from './map-error.js';
import { typeFromSubject } from './subjects.js';

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
 * publishers may set `traceparent` only as a header; a Watchtower body without one has no
 * event headers, and its message none but the server's). A body with a headers map carries its
 * headers itself (and mirrors them into NATS headers), so these are not even parsed then.
 * `Nats-*` headers are the server's own; of a repeated header the last value counts.
 */
function eventHeadersOf(msg: {
  readonly headers?: MsgHdrs | undefined;
}): Record<string, string> | undefined {
  if (onlyServerHeaders(msg)) return undefined;
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

const CR = 0x0d;
const LF = 0x0a;

/**
 * True when the message's header block is known to hold no header but `Nats-*` ones (every
 * JetStream message of a Watchtower publisher carries `Nats-Msg-Id`), told from its bytes
 * without decoding it: the client parses a header block into a map on first access, which
 * costs a JetStream delivery more than the rest of its decoding. Reads the client's message
 * fields (`_msg.hdr`, `_rdata`, as @nats-io/nats-core 3 has them); where they are not there,
 * false, and the headers are read the documented way.
 */
function onlyServerHeaders(msg: object): boolean {
  const inner = ((msg as { msg?: unknown }).msg ?? msg) as {
    _msg?: { hdr?: unknown };
    _rdata?: unknown;
  };
  const length = inner._msg?.hdr;
  const bytes = inner._rdata;
  if (typeof length !== 'number' || !(bytes instanceof Uint8Array) || length > bytes.length) {
    return false;
  }
  // `NATS/1.0[ status]\r\n`, then `Name: value\r\n` lines, then an empty line.
  let at = 0;
  while (at < length && bytes[at] !== LF) at++;
  for (at++; at < length;) {
    if (bytes[at] === CR) return true; // the empty line: the end of the block
    if (!isNatsPrefix(bytes, at, length)) return false;
    while (at < length && bytes[at] !== LF) at++;
    at++;
  }
  return true;
}

/** True when `bytes` at `at` begin with `nats-`, in any case. */
function isNatsPrefix(bytes: Uint8Array, at: number, end: number): boolean {
  if (at + 5 > end) return false;
  return (
    ((bytes[at] as number) | 0x20) === 0x6e &&
    ((bytes[at + 1] as number) | 0x20) === 0x61 &&
    ((bytes[at + 2] as number) | 0x20) === 0x74 &&
    ((bytes[at + 3] as number) | 0x20) === 0x73 &&
    bytes[at + 4] === 0x2d
  );
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

/** What a core NATS nack does: nothing, once its options are good ones. */
function coreNack(options: NackOptions | undefined): Promise<void> {
  if (options === undefined) return RESOLVED;
  return rejection(() => checkNackOptions(options)) ?? RESOLVED;
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
    return RESOLVED;
  }
  /** Core NATS cannot deliver a message again; the capability `redelivery` is false. */
  nack(options?: NackOptions): Promise<void> {
    return coreNack(options);
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
    return RESOLVED;
  }
  nack(options?: NackOptions): Promise<void> {
    return coreNack(options);
  }
}

/** A settle decided and waiting for its batch: `write()` sends it to the server. */
export interface PendingSettle {
  write(): void;
}

/**
 * The batcher of JetStream acks, naks and terms: one socket write for the settles of a turn
 * (see `TurnBatcher` for when it flushes). The caller does not wait for the write, so one that
 * fails goes to `report`, once per batch: the server delivers those messages again after the
 * ack wait, as for any ack lost on the way (at least once).
 */
export function settleBatcher(
  report: (error: WatchtowerError) => void,
): TurnBatcher<PendingSettle> {
  return new TurnBatcher<PendingSettle>((batch) => {
    let failed = 0;
    let firstError: unknown;
    for (const settle of batch) {
      try {
        settle.write();
      } catch (error) {
        if (failed++ === 0) firstError = error;
      }
    }
    if (failed > 0) {
      report(
        mapNatsError(
          firstError,
          `write ${failed} of ${batch.length} acks/naks (their messages come again after the ack wait)`,
        ),
      );
    }
    // At the tick: a consumer at max_ack_pending gets no more messages until these arrive.
  }, 'tick');
}

/** What the JetStream deliveries of one subscription share. */
export interface JetStreamDeliveryContext {
  readonly batcher: TurnBatcher<PendingSettle>;
  /** True once the connection is closed: settling then fails with `CLOSED`. */
  readonly closed: () => boolean;
  /** A delivery was acked or nacked: its source forgets it (nothing to hand back at close). */
  readonly settled: (delivery: JsDeliveryBase) => void;
  /** The consumer's `max_deliver`; `-1` for no limit. */
  readonly maxDeliver: number;
  /** The pattern or group, for dead letters. */
  readonly subscription: string;
  /** `failedAt` of dead letters. */
  readonly clock: Clock;
  /** Writes a dead letter; resolves once it is stored. */
  readonly deadLetter: (
    message: Event | MalformedMessage,
    reason: DeadLetterReason,
  ) => Promise<void>;
}

/** A JetStream delivery of either kind; its source tracks it until it is settled. */
export type JsDelivery = JsEventDelivery | JsMalformedDelivery;

/** A JetStream message as a delivery: attempt from the server, ack/nak/term on the message. */
export function jetStreamDelivery(msg: JsMsg, context: JetStreamDeliveryContext): JsDelivery {
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

/** Where a JetStream delivery is in its life: what the batch writes for it, once decided. */
type SettleState = 'unsettled' | 'ack' | 'nak' | 'term' | 'dead-lettering';

/** What both kinds of JetStream delivery share. */
abstract class JsDeliveryBase implements PendingSettle {
  #state: SettleState = 'unsettled';
  #nakDelayMs: number | undefined;

  constructor(
    /** The message, for the source's keep-alive (`working()`). */
    readonly msg: JsMsg,
    protected readonly context: JetStreamDeliveryContext,
  ) {}

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
    return this.#settle('ack', undefined);
  }

  /**
   * `nak` with the delay (the server delivers it again after `delayMs`), or `term` when
   * `requeue` is false (the server never delivers it again). Sent like `ack`. Idempotent.
   */
  nack(options?: NackOptions): Promise<void> {
    if (options !== undefined) {
      const refused = rejection(() => checkNackOptions(options));
      if (refused !== undefined) return refused;
      if (options.requeue === false) return this.#settle('term', undefined);
    }
    const { maxDeliver } = this.context;
    if (maxDeliver > 0 && deliveryCountOf(this.msg) >= maxDeliver) return this.#deadLetter();
    const delay = options?.delayMs;
    return this.#settle('nak', delay !== undefined && delay > 0 ? Math.ceil(delay) : undefined);
  }

  /** Sends what was decided; called by the batch. */
  write(): void {
    const msg = this.msg;
    if (this.#state === 'ack') msg.ack();
    else if (this.#state === 'nak') msg.nak(this.#nakDelayMs);
    else if (this.#state === 'term') msg.term();
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
    if (this.#state !== 'unsettled') return;
    const { context, msg } = this;
    if (context.closed()) {
      throw new ClosedError(`nack of ${msg.subject}: the NATS connection is closed`);
    }
    this.#state = 'dead-lettering';
    context.settled(this);
    const attempts = deliveryCountOf(msg);
    const message = this.content;
    const failure = new WatchtowerError(
      ErrorCode.TRANSPORT,
      `delivery ${attempts} was nacked and the consumer allows at most ${context.maxDeliver} ` +
        '(consumer.maxDeliver): the server would not deliver it again',
    );
    await context.deadLetter(
      message,
      deadLetterReason({
        failure,
        attempts,
        message,
        subscription: context.subscription,
        clock: context.clock,
      }),
    );
    this.#state = 'ack';
    context.batcher.add(this);
  }

  #settle(state: 'ack' | 'nak' | 'term', nakDelayMs: number | undefined): Promise<void> {
    if (this.#state !== 'unsettled') return RESOLVED;
    const context = this.context;
    if (context.closed()) {
      return Promise.reject(
        new ClosedError(`${state} of ${this.msg.subject}: the NATS connection is closed`),
      );
    }
    this.#state = state;
    this.#nakDelayMs = nakDelayMs;
    context.settled(this);
    context.batcher.add(this);
    return RESOLVED;
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

/** A dead letter read from the durable DLQ stream. */
export interface JsDeadLetterEntry extends DeadLetterEntry {
  readonly msg: JsMsg;
}

/**
 * A message of the DLQ stream as a dead letter: acked when its handler returned, nakked with
 * the delay when it threw (JetStream delivers it again).
 */
export function jsDeadLetterEntry(msg: JsMsg, dlqPrefix: string): JsDeadLetterEntry {
  return {
    msg,
    letter: decodeDeadLetter(
      msg.data,
      typeFromSubject(dlqPrefix, msg.subject) ?? msg.subject,
      msg.time,
    ),
    attempt: msg.info.deliveryCount,
    origin: msg.subject,
    ack: () => msg.ack(),
    retryLater: (delayMs) => msg.nak(delayMs),
  };
}

/** A plain NATS dead letter: nothing to settle, and core NATS cannot deliver it again. */
export function coreDeadLetterEntry(msg: Msg, dlqPrefix: string, clock: Clock): DeadLetterEntry {
  return {
    letter: decodeDeadLetter(
      msg.data,
      typeFromSubject(dlqPrefix, msg.subject) ?? msg.subject,
      new Date(clock.now()),
    ),
    attempt: 1,
    origin: msg.subject,
    ack: () => undefined,
    retryLater: () => undefined,
  };
}
