/**
 * The hub protocol: the JSON control frames a client and a `WebSocketHub` exchange beside the
 * events themselves, and the one parser of a frame's text. Shared by the Node client, the
 * browser client and the hub, so it must never import `ws` or a Node built-in.
 *
 * An event travels as its Rust-format JSON (core's codec) with no envelope: a frame with a
 * top-level `metadata` object is an event. Everything else is a control frame with an `op`.
 * The README documents the frames; this file is what they are.
 */
import { decodeEventFromValue, type Event } from '@watchtower/core';

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
export type HubControlFrame = SubscribedFrame | AckFrame | ErrorFrame | PongFrame;

/** Error codes of the hub beside core's. */
export const HUB_ERROR_CODES = {
  /** `authorize` said no. */
  forbidden: 'FORBIDDEN',
  /** The connection publishes faster than `publishRate` allows. */
  rateLimited: 'RATE_LIMITED',
} as const;

/** What one frame's text is. Never throws. */
export type ParsedFrame =
  | { readonly kind: 'event'; readonly event: Event }
  | { readonly kind: 'control'; readonly op: string; readonly frame: Record<string, unknown> }
  | { readonly kind: 'malformed'; readonly problem: string; readonly value: unknown };

/**
 * Reads a frame's text once: an event in the wire format, a control frame (an object with a
 * string `op`), or malformed (not JSON, or an object that is neither). An event that fails
 * the codec's checks is malformed with the codec's message.
 */
export function parseFrame(text: string): ParsedFrame {
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
    return { kind: 'event', event: decodeEventFromValue(value, text) };
  } catch (error) {
    return { kind: 'malformed', problem: (error as Error).message, value };
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
