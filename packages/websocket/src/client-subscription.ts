/**
 * A client subscription's side of the WebSocket transport: the buffer its consumer iterates,
 * bounded by `pendingLimit` / `maxInFlight`, and the deliveries in it. At most once: settling a
 * delivery tells nobody, and `nack()` cannot bring an event back.
 */
import {
  ErrorCode,
  WatchtowerError,
  type Event,
  type NackOptions,
  type SerializationError,
} from '@watchtower/core';
import {
  DeliveryBuffer,
  RESOLVED,
  checkNackOptions,
  rejection,
} from '@watchtower/core/transport-kit';

/** One local subscription: its pattern and the buffer its consumer iterates. */
export class ClientSubscription {
  readonly buffer = new DeliveryBuffer<ClientDelivery>();
  /** The socket generation this subscription was last sent on (hub mode). */
  sentOn = -1;

  constructor(
    readonly id: string,
    readonly pattern: string,
    readonly limit: number,
  ) {}

  /** Buffers a delivery unless the consumer is `limit` behind; false when dropped. */
  offer(delivery: ClientDelivery): boolean {
    if (this.buffer.size >= this.limit) return false;
    return this.buffer.push(delivery);
  }

  droppedError(type: string): WatchtowerError {
    return new WatchtowerError(
      ErrorCode.BACKPRESSURE_DROPPED,
      `dropped an event of ${type} for subscription ${this.pattern}: ${this.buffer.size} deliveries wait for its consumer (pendingLimit / maxInFlight ${this.limit})`,
      { retryable: false },
    );
  }
}

/** A delivered event (or malformed frame). At most once: nack cannot bring it back. */
export class ClientDelivery {
  readonly kind: 'event' | 'malformed';
  readonly attempt = 1;
  readonly origin: string;
  readonly event: Event;
  readonly raw: Uint8Array;
  readonly error: SerializationError;

  constructor(
    event: Event | undefined,
    malformed: SerializationError | undefined,
    private readonly subscription: ClientSubscription,
  ) {
    if (event !== undefined) {
      this.kind = 'event';
      this.event = event;
      this.origin = event.type;
      this.raw = undefined as unknown as Uint8Array;
      this.error = undefined as unknown as SerializationError;
    } else {
      const error = malformed as SerializationError;
      this.kind = 'malformed';
      this.event = undefined as unknown as Event;
      this.origin = `websocket subscription ${subscription.pattern}`;
      this.raw = error.raw ?? new Uint8Array();
      this.error = error;
    }
  }

  ack(): Promise<void> {
    this.subscription.buffer.settled(this);
    return RESOLVED;
  }

  /** Settles the delivery; the event is not delivered again (the transport declares `redelivery: false`). */
  nack(options?: NackOptions): Promise<void> {
    if (options !== undefined) {
      const refused = rejection(() => checkNackOptions(options));
      if (refused !== undefined) return refused;
    }
    this.subscription.buffer.settled(this);
    return RESOLVED;
  }
}
