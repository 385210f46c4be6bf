/**
 * W3C Trace Context in event headers: `traceparent` written from a span's context on publish,
 * read back on consume. Written here rather than through the global propagator so that the
 * headers are the same whatever propagator (or none) the application registered, and so that
 * a Rust service, which forwards headers as they are, keeps the trace.
 */
import type { Context, SpanContext } from '@opentelemetry/api';
import type { Event } from '../event.js';
import type { OtelApi } from './otel-api.js';

/** The header names of W3C Trace Context. */
export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';

const TRACEPARENT_FORMAT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The `traceparent` value of `context` (version 00). */
export function formatTraceparent(context: SpanContext): string {
  const flags = (context.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${context.traceId}-${context.spanId}-${flags}`;
}

/**
 * The span context a `traceparent` (and `tracestate`) header carries, marked remote; undefined
 * for a missing or malformed header, or an all-zero id (the event then starts a new trace).
 */
export function parseTraceparent(
  api: OtelApi,
  traceparent: string | undefined,
  tracestate: string | undefined,
): SpanContext | undefined {
  if (traceparent === undefined) return undefined;
  const match = TRACEPARENT_FORMAT.exec(traceparent.trim());
  if (match === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  // Version ff is invalid; version 00 has nothing after the flags.
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  const context: SpanContext = {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16),
    isRemote: true,
  };
  if (tracestate !== undefined && tracestate !== '') {
    context.traceState = api.createTraceState(tracestate);
  }
  return api.isSpanContextValid(context) ? context : undefined;
}

/** `base` with the producer's span context from the event's headers, or `base` alone. */
export function contextFromHeaders(api: OtelApi, event: Event, base: Context): Context {
  const headers = event.headers;
  const parent = parseTraceparent(api, headers[TRACEPARENT], headers[TRACESTATE]);
  return parent === undefined ? base : api.trace.setSpanContext(base, parent);
}

/**
 * A copy of `event` whose headers carry `context` (`traceparent`, and `tracestate` when it
 * has one; a stale `tracestate` is removed). The caller's event is left as it was.
 */
export function withTraceHeaders(event: Event, context: SpanContext): Event {
  const headers: Record<string, string> = { ...event.headers };
  headers[TRACEPARENT] = formatTraceparent(context);
  const state = context.traceState?.serialize();
  if (state === undefined || state === '') delete headers[TRACESTATE];
  else headers[TRACESTATE] = state;
  return { ...event, headers };
}
