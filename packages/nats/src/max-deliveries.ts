/*
 * When a consumer has `max_deliver` and an event's last allowed delivery is never settled (the
 * process stopped, or its handler ran past the ack wait), the server stops delivering it and
 * says so only in a "max deliveries" advisory. The transport listens for it and dead-letters
 * the event, which would otherwise stay unhandled in the stream for good.
 */

/** The subject of the server's max-deliveries advisories for one consumer. */
export function maxDeliveriesSubject(stream: string, consumer: string): string {
  return `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.${consumer}`;
}

/** What a max-deliveries advisory says: which message, after how many deliveries. */
export interface MaxDeliveries {
  readonly streamSeq: number;
  readonly deliveries: number;
}

/**
 * Reads an advisory body (`{"type":"io.nats.jetstream.advisory.v1.max_deliver",
 * "stream_seq":…,"deliveries":…,…}`); `undefined` when it is not one.
 */
export function parseMaxDeliveries(body: string): MaxDeliveries | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { stream_seq: streamSeq, deliveries } = value as Record<string, unknown>;
  if (!isPositiveInteger(streamSeq) || !isPositiveInteger(deliveries)) return undefined;
  return { streamSeq, deliveries };
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}
