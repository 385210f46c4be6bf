/**
 * The hub protocol: the JSON control frames a client and a `WebSocketHub` exchange beside the
 * events themselves, and the one parser of a frame's text. Shared by the Node client, the
 * browser client and the hub, so it must never import `ws` or a Node built-in.
 *
 * An event travels as its Rust-format JSON (core's codec) with no envelope: a frame with a
 * top-level `metadata` object is an event. Everything else is a control frame with an `op`.
 * The README documents the frames; this file is what they are.
 */
import { decodeEvent, decodeEventFromValue, type Event } from '@watchtower/core';

/**
 * The subprotocol a Watchtower client asks for on upgrade, and the hub agrees to: the client
 * speaks the hub protocol and sends its own subscriptions, so the hub's
 * `defaultSubscriptions` (for clients that never subscribe, as the Rust client) are not for it.
 */
export const HUB_SUBPROTOCOL = 'watchtower.v1';

/** Close codes the client and the hub use (RFC 6455 section 7.4). */
export const CLOSE_CODES = {
  /** Closed on purpose: `close()`. */
  normal: 1000,
  /** The hub is shutting down. */
  goingAway: 1001,
  /** A policy was broken: a slow consumer cut off, a publish rate far over its limit. */
  policyViolation: 1008,
  /** A frame larger than `maxMessageSize` / `maxPayload`. */
  messageTooBig: 1009,
} as const;

/** A client asks for the events matching `pattern`; `id` names the subscription on this connection. */
export interface SubscribeFrame {
  readonly op: 'subscribe';
  readonly id: string;
  readonly pattern: string;
}

/** A client ends one of its subscriptions. */
export interface UnsubscribeFrame {
  readonly op: 'unsubscribe';
  readonly id: string;
}

/**
 * A client publishes an event and asks for an answer: `ack` (cumulative) or `error` with the
 * same `ref`. Refs of one connection increase. A frame that is an event with no envelope is
 * a publish too, without an answer unless it is refused.
 */
export interface PublishFrame {
  readonly op: 'publish';
  readonly ref: number;
  readonly event: unknown;
}

/** A keepalive probe of a peer that cannot send protocol pings (a browser). */
export interface PingFrame {
  readonly op: 'ping';
}

/** The hub confirmed a subscription. */
export interface SubscribedFrame {
  readonly op: 'subscribed';
  readonly id: string;
}

/** The hub ended a subscription: nothing more comes for it. */
export interface UnsubscribedFrame {
  readonly op: 'unsubscribed';
  readonly id: string;
}

/** The hub took every publish of this connection up to and including `ref` that got no `error`. */
export interface AckFrame {
  readonly op: 'ack';
  readonly ref: number;
}

/**
 * The hub refused something: a publish (`ref`), a subscription (`id`), or a frame it could not
 * read (neither). `code` is a Watchtower error code or `FORBIDDEN` / `RATE_LIMITED`.
 */
export interface ErrorFrame {
  readonly op: 'error';
  readonly code: string;
  readonly message: string;
  readonly ref?: number;
  readonly id?: string;
  /** Whether the same request may succeed later (a rate limit, the bridge's broker down). */
  readonly retryable?: boolean;
}

/** The answer to a {@link PingFrame}. */
export interface PongFrame {
  readonly op: 'pong';
}

export type ClientControlFrame = SubscribeFrame | UnsubscribeFrame | PublishFrame | PingFrame;
export type HubControlFrame =
  SubscribedFrame | UnsubscribedFrame | AckFrame | ErrorFrame | PongFrame;

/** Error codes of the hub beside core's. */
export const HUB_ERROR_CODES = {
  /** `authorize` said no. */
  forbidden: 'FORBIDDEN',
  /** The connection publishes faster than `publishRate` allows. */
  rateLimited: 'RATE_LIMITED',
} as const;

/** What one frame's text is. Never throws. */
export type ParsedFrame =
  /** An event; `text` is its JSON as it arrived, to be sent on as it is. */
  | { readonly kind: 'event'; readonly event: Event; readonly text: string }
  /** A publish frame in the layout this package writes, read without parsing the envelope. */
  | { readonly kind: 'publish'; readonly ref: number; readonly event: Event; readonly text: string }
  | { readonly kind: 'control'; readonly op: string; readonly frame: Record<string, unknown> }
  | { readonly kind: 'malformed'; readonly problem: string; readonly value: unknown };

const EVENT_START = '{"metadata":';
/** The start of a publish frame as {@link publishFrameText} writes it. */
const PUBLISH_START = /^\{"op":"publish","ref":(\d{1,15}),"event":/;

/**
 * Reads a frame's text once: an event in the wire format, a control frame (an object with a
 * string `op`), or malformed (not JSON, or an object that is neither). An event that fails
 * the codec's checks is malformed with the codec's message.
 *
 * The two frames that carry events have fast paths: a bare event goes straight to core's
 * decoder (which scans the envelope as writers lay it out), and a publish frame in the layout
 * of {@link publishFrameText} has its event cut out and decoded the same way, so the hub
 * forwards the event's text without writing it again. Any other layout takes the general path.
 */
export function parseFrame(text: string): ParsedFrame {
  if (text.startsWith(EVENT_START)) {
    try {
      return { kind: 'event', event: decodeEvent(text), text };
    } catch (error) {
      return { kind: 'malformed', problem: (error as Error).message, value: parsed(text) };
    }
  }
  const publish = PUBLISH_START.exec(text);
  if (publish !== null && text.endsWith('}')) {
    const eventText = text.slice(publish[0].length, -1);
    try {
      return {
        kind: 'publish',
        ref: Number(publish[1]),
        event: decodeEvent(eventText),
        text: eventText,
      };
    } catch {
      // Not the layout it looked like, or a bad event: the general path says which.
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'malformed', problem: 'the frame is not JSON', value: undefined };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { kind: 'malformed', problem: 'the frame is not a JSON object', value };
  }
  const op = (value as { op?: unknown }).op;
  if (typeof op === 'string') {
    return { kind: 'control', op, frame: value as Record<string, unknown> };
  }
  try {
    return { kind: 'event', event: decodeEventFromValue(value, text), text };
  } catch (error) {
    return { kind: 'malformed', problem: (error as Error).message, value };
  }
}

function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The event type a malformed frame claims (`metadata.event_type`), if it is a string. */
export function claimedType(value: unknown): string | undefined {
  const metadata = (value as { metadata?: { event_type?: unknown } } | null)?.metadata;
  const type = metadata?.event_type;
  return typeof type === 'string' ? type : undefined;
}

/** The text of a publish frame around an event's encoded JSON, without parsing it again. */
export function publishFrameText(ref: number, eventJson: string): string {
  return `{"op":"publish","ref":${ref},"event":${eventJson}}`;
}

/** The text of a control frame. */
export function frameText(frame: ClientControlFrame | HubControlFrame): string {
  return JSON.stringify(frame);
}

/** Whether `frame` is an integer ref (publish) >= 0. */
export function isRef(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A subscription id: a non-empty string of at most 128 characters. */
export function isSubscriptionId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 128;
}

const encoder = new TextEncoder();

/**
 * The UTF-8 size of `text` in bytes, counted only when it could exceed `limit` (a string of
 * n UTF-16 units is at most 3n bytes), so the common small frame costs nothing.
 */
export function exceedsSize(text: string, limit: number): number | undefined {
  if (text.length * 3 <= limit) return undefined;
  const size = byteLength(text);
  return size > limit ? size : undefined;
}

function byteLength(text: string): number {
  return encoder.encode(text).byteLength;
}
